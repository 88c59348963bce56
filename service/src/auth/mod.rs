//! Who is calling the service: the filter with its shared key, or an approver or auditor
//! with a static token or an OIDC JWT.
//!
//! This file only names the parts; none of them imports it.

mod approvers;
mod bearer;
mod filter_key;
pub mod oidc;
mod principal;

pub use approvers::{hash_token, validate_approvers, ApproverEntry, Approvers};
pub use bearer::bearer;
pub use filter_key::{FilterKey, KeyError, MIN_FILTER_KEY_LEN};
pub use principal::{Principal, Role};
