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

/// A principal with the approver role.
#[derive(Debug, Clone)]
pub struct Approver(pub Arc<Principal>);

/// A principal with the auditor role.
#[derive(Debug, Clone)]
pub struct Auditor(pub Arc<Principal>);

impl FromRequestParts<SharedState> for FilterCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        state.filter_key.check(&parts.headers)?;
        Ok(FilterCaller)
    }
}

impl FromRequestParts<SharedState> for Approver {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let who = state
            .approvers
            .authenticate(&parts.headers, Role::Approver)?;
        Ok(Approver(who))
    }
}

impl FromRequestParts<SharedState> for Auditor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let who = state
            .approvers
            .authenticate(&parts.headers, Role::Auditor)?;
        Ok(Auditor(who))
    }
}
