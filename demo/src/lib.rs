//! Demo services for trying and testing Airlock, and the Envoy bootstrap renderer.
//!
//! - [`upstream`]: the service an agent calls (PII-rich customers, real SQL execution,
//!   echo, gzip / large / streamed bodies).
//! - [`encoded`]: answers under any `content-encoding` (gzip, deflate, br, zstd, stacked,
//!   unknown) and decompression bombs compressed on the fly.
//! - [`llm`]: an OpenAI-compatible chat completion endpoint streaming PII split across
//!   chunks, and an NDJSON endpoint (for streaming-masking tests).
//! - [`idp`]: a loopback-only demo identity provider (ES256 JWKS + token minting);
//!   [`idp_login`] is its login page (OpenID Connect authorization code flow with PKCE),
//!   [`oauth`] its OAuth token endpoint (client credentials grant).
//! - [`render`]: fills `envoy/envoy.yaml`, optionally without the Airlock filter.
//!
//! None of this is production code: it exists so the filter can be exercised for real.

pub mod cli;
pub mod db;
pub mod encoded;
pub mod idp;
pub mod idp_login;
pub mod llm;
pub mod oauth;
pub mod pii;
pub mod render;
pub mod upstream;
