//! Who is calling the service: the filter with its shared key, or an approver or auditor
//! with a static token, an OIDC JWT or a console session cookie from an OIDC sign-in.
//!
//! This file only names the parts; none of them imports it.

mod approvers;
mod bearer;
mod filter_key;
pub mod login;
pub mod oidc;
mod principal;

pub use approvers::{hash_token, require_role, validate_approvers, ApproverEntry, Approvers};
pub use bearer::bearer;
pub use filter_key::{FilterKey, KeyError, MIN_FILTER_KEY_LEN};
pub use principal::{Principal, Role};
