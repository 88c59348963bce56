//! Approvers signing in with OIDC JWTs (ES256, JWKS file) instead of static tokens.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use base64::Engine;
use common::*;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

struct Idp {
    key: ES256KeyPair,
}

impl Idp {
    fn new() -> Idp {
        Idp { key: ES256KeyPair::generate().with_key_id("idp-1") }
    }

    fn jwks(&self) -> String {
        let p = self.key.public_key().public_key().to_bytes_uncompressed();
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "idp-1", "use": "sig", "alg": "ES256",
                         "x": enc(&p[1..33]), "y": enc(&p[33..])}]})
        .to_string()
    }

    fn token(&self, email: &str, groups: &[&str], minutes: i64) -> String {
        let mut c = Claims::with_custom_claims(json!({"email": email, "groups": groups}), Duration::from_mins(5))
            .with_issuer("https://idp.example")
            .with_audience("airlock-console");
        let now = Clock::now_since_epoch();
        c.expires_at = Some(if minutes >= 0 {
            now + Duration::from_mins(minutes as u64)
        } else {
            now - Duration::from_mins((-minutes) as u64)
        });
        self.key.sign(c).unwrap()
    }
}

fn start(idp: &Idp) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, idp.jwks()).unwrap();
    let s = Server::start_with(ServerOptions {
        extra_config: format!(
            "[oidc]\nissuer = \"https://idp.example\"\naudience = \"airlock-console\"\njwks_file = \"{}\"\nname_claim \
                = \"email\"\nauditor_groups = [\"audit\"]\n",
            jwks.display()
        ),
        ..ServerOptions::default()
    });
    // The JWKS file is read at start; the directory may go now.
    drop(dir);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_sign_in_with_oidc_jwts() {
    let idp = Idp::new();
    let s = start(&idp);
    let id = s.create_approval(&approval_request("olga@example.com", 1, 300, "hold")).await;

    // The requester's own JWT cannot approve; another dba member's can.
    let olga = idp.token("olga@example.com", &["dba"], 10);
    let (status, v) = s.decide(&olga, &id, "approve", "mine").await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("self_approval")));
    let ops = idp.token("oscar@example.com", &["ops"], 10);
    let (status, v) = s.decide(&ops, &id, "approve", "ops").await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("not_an_approver")));
    let expired = idp.token("dan@example.com", &["dba"], -10);
    let (status, _) = s.decide(&expired, &id, "approve", "late").await;
    assert_eq!(status, 401);
    let forged = Idp::new().token("dan@example.com", &["dba"], 10);
    let (status, _) = s.decide(&forged, &id, "approve", "forged").await;
    assert_eq!(status, 401);

    let dan = idp.token("dan@example.com", &["dba"], 10);
    let (status, v): (u16, Value) = s.decide(&dan, &id, "approve", "checked").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decisions"][0]["approver"], "dan@example.com");

    // Auditor role comes from the configured auditor groups.
    let (status, _) = call("GET", &s.at("/v1/audit/verify"), Some(&dan), None).await;
    assert_eq!(status, 403);
    let auditor = idp.token("ava@example.com", &["audit"], 10);
    let (status, v) = call("GET", &s.at("/v1/audit/verify"), Some(&auditor), None).await;
    assert_eq!((status, v["ok"].as_bool()), (200, Some(true)));
    // Static tokens keep working beside OIDC.
    let (status, _) = call("GET", &s.at("/v1/approvals?status=all"), Some(ALICE), None).await;
    assert_eq!(status, 200);
    assert!(!s.log().contains(&dan), "JWTs must not be logged");
}
