//! The contract between the Airlock filter and its control service, written once.
//!
//! Both crates use these types, so a name the filter writes and the service does not
//! know is a compile error rather than a silent mismatch (the "request denied" alert once
//! listened for `deny` while the filter wrote `denied_by_rule`). Borrowed fields are
//! `Cow`s: the filter serialises from what it already holds without copying, the service
//! deserialises into owned values.

pub mod approval;
pub mod audit;
pub mod code;
pub mod credentials;
pub mod tools;

pub use approval::{
    ApprovalErrorCode, ApprovalState, ApprovalStatus, Approvers, CreateApproval, ErrorEnvelope, Mode, RedeemApproval,
};
pub use audit::{AuditBatch, AuditRecord, Decision};
pub use code::{Code, Retry};
pub use credentials::{CredentialUse, SecretValue};
pub use tools::{PendingChange, ToolChangeStatus, ToolObservation, ToolObservations, ToolPin, ToolPins};
