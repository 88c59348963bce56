//! Who may call an endpoint, as extractors: a handler that takes a [`FilterCaller`],
//! [`Approver`] or [`Auditor`] argument only runs for such a caller. Credentials are
//! checked before the body is read, and a refusal is the same JSON error as any other
//! (`401 unauthorized`, or `403 missing_role` for a principal without the role).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::state::SharedState;
use crate::auth::{Principal, Role};
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
                state.approvers.authenticate(&parts.headers, $role).map($name)
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
