//! Airlock filter: host-independent logic in plain modules (unit-tested natively), and a
//! thin proxy-wasm adapter in `glue` that is only compiled for wasm32.

pub mod approval;
pub mod audit;
pub mod authenticate;
pub mod config;
pub mod config_check;
pub mod config_error;
pub mod control;
pub mod credentials;
pub mod decompress;
pub mod flow;
pub mod headers;
pub mod hold;
pub mod host;
pub mod identity;
pub mod jwt;
pub mod limit;
pub mod mask;
pub mod mcp;
pub mod normalize;
pub mod pins;
pub mod policy;
pub mod reply;
pub mod sql;
pub mod stats;
pub mod stream;
pub mod vm_state;

#[cfg(target_arch = "wasm32")]
mod glue;
