//! Who may call an endpoint, as extractors: a handler that takes a [`FilterCaller`],
//! [`Approver`] or [`Auditor`] argument only runs for such a caller. Credentials are
//! checked before the body is read (a bearer token, or the console's session cookie), and
//! a refusal is the same JSON error as any other (`401 unauthorized`, or
//! `403 missing_role` for a principal without the role).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::state::SharedState;
use crate::auth::{bearer, require_role, Principal, Role};
use crate::error::ApiError;

/// The filter, proven by the shared filter key.
#[derive(Debug, Clone, Copy)]
pub struct FilterCaller;

impl FromRequestParts<SharedState> for FilterCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        state.filter_key.check(&parts.headers)?;
        Ok(FilterCaller)
    }
}

/// A bearer token when there is one (a bearer request is never cookie-authenticated);
/// else the console session cookie, with its CSRF token on state-changing calls.
fn principal(state: &SharedState, parts: &Parts, role: Role) -> Result<Arc<Principal>, ApiError> {
    if let (None, Some(login)) = (bearer(&parts.headers), &state.login) {
        if let Some(p) = login.principal(&parts.headers, &parts.method)? {
            return require_role(p, role);
        }
    }
    state.approvers.authenticate(&parts.headers, role)
}

/// An extractor for the principals that hold one role: `$name(pub Arc<Principal>)`.
macro_rules! principal_with_role {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Arc<Principal>);

        impl FromRequestParts<SharedState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &SharedState,
            ) -> Result<Self, Self::Rejection> {
                principal(state, parts, $role).map($name)
            }
        }
    };
}

principal_with_role!(
    /// A principal with the approver role.
    Approver,
    Role::Approver
);
principal_with_role!(
    /// A principal with the auditor role.
    Auditor,
    Role::Auditor
);
