//! End-to-end tests of the token check: config → keys → verifier.

use std::time::Instant;

use jwt_simple::prelude::*;
use serde_json::{json, Value};

use super::test_support::*;
use super::*;

fn rs256(kid: &str, payload: Value) -> String {
    rsa_a().clone().with_key_id(kid).sign(claims(payload)).unwrap()
}

fn rsa_a_keys() -> KeySet {
    key_set(vec![rsa_jwk(rsa_a(), "rsa-a")])
}

// ---- algorithms ----

#[test]
fn every_supported_algorithm_family_verifies() {
    let der = rsa_a().to_der().unwrap();
    let es256 = ES256KeyPair::generate().with_key_id("es256");
    let es384 = ES384KeyPair::generate().with_key_id("es384");
    let ed = Ed25519KeyPair::generate().with_key_id("ed");
    let secret = [7u8; 64];
    let keys = key_set(vec![
        rsa_jwk(rsa_a(), "rsa"),
        es256_jwk(&es256, "es256"),
        es384_jwk(&es384, "es384"),
        ed25519_jwk(&ed, "ed"),
        oct_jwk(&secret, "oct"),
    ]);
    let c = || claims(payload());
    let tokens = [
        ("RS256", rsa_a().clone().with_key_id("rsa").sign(c()).unwrap()),
        ("RS384", RS384KeyPair::from_der(&der).unwrap().with_key_id("rsa").sign(c()).unwrap()),
        ("RS512", RS512KeyPair::from_der(&der).unwrap().with_key_id("rsa").sign(c()).unwrap()),
        ("PS256", PS256KeyPair::from_der(&der).unwrap().with_key_id("rsa").sign(c()).unwrap()),
        ("PS384", PS384KeyPair::from_der(&der).unwrap().with_key_id("rsa").sign(c()).unwrap()),
        ("PS512", PS512KeyPair::from_der(&der).unwrap().with_key_id("rsa").sign(c()).unwrap()),
        ("ES256", es256.sign(c()).unwrap()),
        ("ES384", es384.sign(c()).unwrap()),
        ("EdDSA", ed.sign(c()).unwrap()),
        ("HS256", HS256Key::from_bytes(&secret).with_key_id("oct").authenticate(c()).unwrap()),
        ("HS384", HS384Key::from_bytes(&secret).with_key_id("oct").authenticate(c()).unwrap()),
        ("HS512", HS512Key::from_bytes(&secret).with_key_id("oct").authenticate(c()).unwrap()),
    ];
    for (alg, token) in tokens {
        let mut v = verifier(json!({}));
        let id = v.verify(&token, &keys, NOW).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(id.subject, "agent-7", "{alg}");
        assert_eq!(id.expires_at, NOW + 600, "{alg}");
    }
}

#[test]
fn token_without_kid_is_tried_against_keys_of_its_algorithm() {
    let es = ES256KeyPair::generate();
    let keys = key_set(vec![rsa_jwk(rsa_a(), "a"), rsa_jwk(rsa_b(), "b"), es256_jwk(&es, "e")]);
    let token = rsa_b().sign(claims(payload())).unwrap();
    assert_eq!(verifier(json!({})).verify(&token, &keys, NOW).unwrap().subject, "agent-7");
}

#[test]
fn without_kid_at_most_eight_candidate_keys_are_tried() {
    let secrets: Vec<[u8; 32]> = (0..9u8).map(|i| [i + 1; 32]).collect();
    let keys = key_set(secrets.iter().enumerate().map(|(i, s)| oct_jwk(s, &format!("k{i}"))).collect());
    let ninth = HS256Key::from_bytes(&secrets[8]).authenticate(claims(payload())).unwrap();
    assert_eq!(verifier(json!({})).verify(&ninth, &keys, NOW), Err(AuthError::BadSignature));
    let eighth = HS256Key::from_bytes(&secrets[7]).authenticate(claims(payload())).unwrap();
    assert!(verifier(json!({})).verify(&eighth, &keys, NOW).is_ok());
}

#[test]
fn algorithm_outside_the_allow_list_is_rejected_before_key_work() {
    let token = rs256("rsa-a", payload());
    let mut v = verifier(json!({"algorithms": ["ES256", "EdDSA"]}));
    assert_eq!(v.verify(&token, &rsa_a_keys(), NOW), Err(AuthError::AlgorithmNotAllowed));
    // Not even the key set is consulted.
    assert_eq!(v.verify(&token, &KeySet::empty(), NOW), Err(AuthError::AlgorithmNotAllowed));
}

#[test]
fn alg_none_is_rejected_in_any_spelling() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        let unsigned = hand_token(header.clone(), payload(), |_| Vec::new());
        assert!(unsigned.ends_with('.'));
        let with_junk_sig = hand_token(header, payload(), |_| b"junk".to_vec());
        for token in [unsigned, with_junk_sig] {
            let mut v = verifier(json!({}));
            assert_eq!(v.verify(&token, &rsa_a_keys(), NOW), Err(AuthError::AlgorithmNotAllowed), "{alg}");
        }
    }
}

#[test]
fn hs256_token_keyed_with_the_rsa_public_key_is_rejected() {
    let public = rsa_a().public_key();
    let pem = public.to_pem().unwrap();
    let der = public.to_der().unwrap();
    let keys = rsa_a_keys();
    for secret in [pem.as_bytes(), der.as_slice()] {
        // Naming the RSA key: the key type does not admit HS256.
        let named = hand_token(json!({"alg": "HS256", "kid": "rsa-a"}), payload(), hs256(secret));
        assert_eq!(verifier(json!({})).verify(&named, &keys, NOW), Err(AuthError::KeyAlgorithmMismatch));
        // Without kid: no key of the HMAC family exists at all.
        let anonymous = hand_token(json!({"alg": "HS256"}), payload(), hs256(secret));
        assert_eq!(verifier(json!({})).verify(&anonymous, &keys, NOW), Err(AuthError::UnknownKey));
    }
}

#[test]
fn jwk_alg_pins_the_key_to_one_algorithm() {
    let mut jwk = rsa_jwk(rsa_a(), "rsa-a");
    jwk["alg"] = json!("RS256");
    let keys = key_set(vec![jwk]);
    let der = rsa_a().to_der().unwrap();
    let ps = PS256KeyPair::from_der(&der).unwrap().with_key_id("rsa-a").sign(claims(payload())).unwrap();
    assert_eq!(verifier(json!({})).verify(&ps, &keys, NOW), Err(AuthError::KeyAlgorithmMismatch));
    assert!(verifier(json!({})).verify(&rs256("rsa-a", payload()), &keys, NOW).is_ok());
}

#[test]
fn crit_header_is_rejected() {
    let secret = [9u8; 32];
    let keys = key_set(vec![oct_jwk(&secret, "h")]);
    let token = hand_token(json!({"alg": "HS256", "kid": "h", "crit": ["exp"], "exp": 1}), payload(), hs256(&secret));
    assert_eq!(verifier(json!({})).verify(&token, &keys, NOW), Err(AuthError::UnsupportedCriticalHeader));
    // The same token without `crit` is fine, so `crit` alone made the difference.
    let plain = hand_token(json!({"alg": "HS256", "kid": "h"}), payload(), hs256(&secret));
    assert!(verifier(json!({})).verify(&plain, &keys, NOW).is_ok());
}

// ---- keys ----

#[test]
fn unknown_kid_is_unknown_key() {
    let token = rs256("rotated-away", payload());
    assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::UnknownKey));
}

#[test]
fn right_kid_with_another_keys_signature_is_bad_signature() {
    let forged = rsa_b().clone().with_key_id("rsa-a").sign(claims(payload())).unwrap();
    assert_eq!(verifier(json!({})).verify(&forged, &rsa_a_keys(), NOW), Err(AuthError::BadSignature));
}

#[test]
fn tampered_payload_fails_the_signature() {
    let token = rs256("rsa-a", payload());
    let parts: Vec<&str> = token.split('.').collect();
    let admin = b64(with(payload(), json!({"sub": "admin"})).to_string().as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], admin, parts[2]);
    assert_eq!(verifier(json!({})).verify(&tampered, &rsa_a_keys(), NOW), Err(AuthError::BadSignature));
}

#[test]
fn empty_key_set_reports_keys_unavailable() {
    let token = rs256("rsa-a", payload());
    assert_eq!(verifier(json!({})).verify(&token, &KeySet::empty(), NOW), Err(AuthError::NoKeys));
}

// ---- time ----

#[test]
fn expired_token_is_rejected() {
    let token = rs256("rsa-a", with(payload(), json!({"iat": NOW - 7200, "exp": NOW - 3600})));
    assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::Expired));
}

#[test]
fn token_with_nbf_in_the_future_is_rejected() {
    let token = rs256("rsa-a", with(payload(), json!({"nbf": NOW + 3600, "exp": NOW + 7200})));
    assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::NotYetValid));
}

#[test]
fn token_without_exp_is_rejected() {
    let token = rs256("rsa-a", with(payload(), json!({"exp": null})));
    assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::MissingExpiry));
}

#[test]
fn clock_skew_boundary_holds_on_both_sides() {
    let skew = 45;
    let keys = rsa_a_keys();
    let check = |changes: Value| {
        let token = rs256("rsa-a", with(payload(), changes));
        verifier(json!({"clock_skew_seconds": skew})).verify(&token, &keys, NOW).map(|_| ())
    };
    assert_eq!(check(json!({"exp": NOW - skew + 1})), Ok(()));
    assert_eq!(check(json!({"exp": NOW - skew})), Err(AuthError::Expired));
    assert_eq!(check(json!({"nbf": NOW + skew})), Ok(()));
    assert_eq!(check(json!({"nbf": NOW + skew + 1})), Err(AuthError::NotYetValid));
}

#[test]
fn time_comes_only_from_the_caller() {
    // exp decades before the real clock: accepted because the caller says it is 1990.
    let then = 631_152_000;
    let token = rs256("rsa-a", with(payload(), json!({"iat": then, "exp": then + 60})));
    assert!(verifier(json!({})).verify(&token, &rsa_a_keys(), then).is_ok());
    assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::Expired));
}

// ---- issuer, audience ----

#[test]
fn wrong_or_missing_issuer_is_rejected() {
    for changes in [json!({"iss": "https://evil.example.com"}), json!({"iss": null})] {
        let token = rs256("rsa-a", with(payload(), changes));
        assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::WrongIssuer));
    }
}

#[test]
fn any_configured_issuer_is_accepted() {
    let token = rs256("rsa-a", with(payload(), json!({"iss": "https://second.example.com"})));
    let mut v = verifier(json!({"issuers": [ISS, "https://second.example.com"]}));
    assert!(v.verify(&token, &rsa_a_keys(), NOW).is_ok());
}

#[test]
fn wrong_or_missing_audience_is_rejected() {
    for changes in [json!({"aud": "other-service"}), json!({"aud": ["x", "y"]}), json!({"aud": null})] {
        let token = rs256("rsa-a", with(payload(), changes));
        assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::WrongAudience));
    }
}

#[test]
fn audience_array_needs_one_configured_member() {
    let token = rs256("rsa-a", with(payload(), json!({"aud": ["billing", AUD, "search"]})));
    assert!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW).is_ok());
}

// ---- subject, groups ----

#[test]
fn groups_come_from_a_nested_claim() {
    let token = rs256("rsa-a", with(payload(), json!({"realm_access": {"roles": ["db-admin", "oncall"]}})));
    let id = verifier(json!({"groups_claim": "realm_access.roles"})).verify(&token, &rsa_a_keys(), NOW).unwrap();
    assert_eq!(id.groups, vec!["db-admin", "oncall"]);
    assert!(id.in_group("oncall"));
}

#[test]
fn groups_come_from_a_space_separated_string() {
    let token = rs256("rsa-a", with(payload(), json!({"scope": "read:db write:db"})));
    let id = verifier(json!({"groups_claim": "scope"})).verify(&token, &rsa_a_keys(), NOW).unwrap();
    assert_eq!(id.groups, vec!["read:db", "write:db"]);
}

#[test]
fn missing_groups_claim_means_no_groups() {
    let token = rs256("rsa-a", payload());
    let id = verifier(json!({"groups_claim": "groups"})).verify(&token, &rsa_a_keys(), NOW).unwrap();
    assert!(id.groups.is_empty());
}

#[test]
fn missing_or_empty_subject_is_rejected() {
    for changes in [json!({"sub": null}), json!({"sub": ""})] {
        let token = rs256("rsa-a", with(payload(), changes));
        assert_eq!(verifier(json!({})).verify(&token, &rsa_a_keys(), NOW), Err(AuthError::MissingSubject));
    }
}

#[test]
fn subject_can_come_from_a_custom_claim() {
    let token = rs256("rsa-a", with(payload(), json!({"client_id": "ci-bot"})));
    let id = verifier(json!({"subject_claim": "client_id"})).verify(&token, &rsa_a_keys(), NOW).unwrap();
    assert_eq!(id.subject, "ci-bot");
    let without = rs256("rsa-a", payload());
    assert_eq!(
        verifier(json!({"subject_claim": "client_id"})).verify(&without, &rsa_a_keys(), NOW),
        Err(AuthError::MissingSubject)
    );
}

// ---- malformed input ----

#[test]
fn malformed_tokens_are_rejected_without_panicking() {
    let good = rs256("rsa-a", payload());
    let parts: Vec<&str> = good.split('.').collect();
    let non_json_header = format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]);
    let header_without_alg = format!("{}.{}.{}", b64(br#"{"kid":"rsa-a"}"#), parts[1], parts[2]);
    let kid_not_string = format!("{}.{}.{}", b64(br#"{"alg":"RS256","kid":7}"#), parts[1], parts[2]);
    let cases = [
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{good}.x")),
        ("bad base64 in header", format!("{}*.{}.{}", parts[0], parts[1], parts[2])),
        ("bad base64 in payload", format!("{}.{}!.{}", parts[0], parts[1], parts[2])),
        ("padding", format!("{}=.{}.{}", parts[0], parts[1], parts[2])),
        ("impossible base64 length", format!("{}A.{}.{}", parts[0], parts[1], parts[2])),
        ("empty header", format!(".{}.{}", parts[1], parts[2])),
        ("non-JSON header", non_json_header),
        ("header without alg", header_without_alg),
        ("kid not a string", kid_not_string),
        ("20 KiB token", format!("{}.{}.{}", parts[0], "A".repeat(20 * 1024), parts[2])),
        ("dots only", "..".to_string()),
        ("not even a JWT", "hello".to_string()),
    ];
    for (what, token) in cases {
        let got = verifier(json!({})).verify(&token, &rsa_a_keys(), NOW);
        assert_eq!(got, Err(AuthError::MalformedToken), "{what}");
    }
    assert_eq!(verifier(json!({})).verify("", &rsa_a_keys(), NOW), Err(AuthError::MissingToken));
}

#[test]
fn signed_claims_of_the_wrong_type_are_malformed() {
    let secret = [3u8; 32];
    let keys = key_set(vec![oct_jwk(&secret, "h")]);
    let token = hand_token(json!({"alg": "HS256"}), with(payload(), json!({"exp": "tomorrow"})), hs256(&secret));
    assert_eq!(verifier(json!({})).verify(&token, &keys, NOW), Err(AuthError::MalformedToken));
}

#[test]
fn truncated_fixed_size_signature_is_bad_signature() {
    let es = ES256KeyPair::generate().with_key_id("e");
    let keys = key_set(vec![es256_jwk(&es, "e")]);
    let token = es.sign(claims(payload())).unwrap();
    let truncated = &token[..token.len() - 4];
    assert_eq!(verifier(json!({})).verify(truncated, &keys, NOW), Err(AuthError::BadSignature));
}

// ---- bearer header ----

#[test]
fn bearer_scheme_is_case_insensitive_and_blank_tolerant() {
    assert_eq!(bearer_token("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
    assert_eq!(bearer_token("bearer abc"), Ok("abc"));
    assert_eq!(bearer_token("  BEARER \t abc  "), Ok("abc"));
}

#[test]
fn non_bearer_or_empty_authorization_is_missing_token() {
    for value in ["", "Bearer", "Bearer   ", "Basic dXNlcjpwdw==", "Token abc", "abc.def.ghi"] {
        assert_eq!(bearer_token(value), Err(AuthError::MissingToken), "{value:?}");
    }
    assert_eq!(bearer_token("Bearer abc def"), Err(AuthError::MalformedToken));
    assert_eq!(bearer_token("Bearer abc,Bearer def"), Err(AuthError::MalformedToken));
}

// ---- cache ----

#[test]
fn cache_hit_needs_no_keys() {
    let token = rs256("rsa-a", payload());
    let mut v = verifier(json!({}));
    let first = v.verify(&token, &rsa_a_keys(), NOW).unwrap();
    let second = v.verify(&token, &KeySet::empty(), NOW + 10).unwrap();
    assert!(std::rc::Rc::ptr_eq(&first, &second), "a hit shares the cached identity");
    assert_eq!(v.cached_tokens(), 1);
}

#[test]
fn cached_token_is_rejected_once_expired() {
    let token = rs256("rsa-a", payload());
    let mut v = verifier(json!({"clock_skew_seconds": 30}));
    v.verify(&token, &rsa_a_keys(), NOW).unwrap();
    assert!(v.verify(&token, &KeySet::empty(), NOW + 600 + 29).is_ok());
    assert_eq!(v.verify(&token, &KeySet::empty(), NOW + 600 + 30), Err(AuthError::Expired));
    assert_eq!(v.cached_tokens(), 0, "expired entry is dropped");
}

#[test]
fn cached_token_is_still_judged_against_nbf() {
    let token = rs256("rsa-a", with(payload(), json!({"nbf": NOW})));
    let mut v = verifier(json!({"clock_skew_seconds": 0}));
    v.verify(&token, &rsa_a_keys(), NOW).unwrap();
    assert_eq!(v.verify(&token, &KeySet::empty(), NOW - 1), Err(AuthError::NotYetValid));
}

#[test]
fn cache_is_keyed_by_the_whole_token() {
    let token = rs256("rsa-a", payload());
    let mut v = verifier(json!({}));
    v.verify(&token, &rsa_a_keys(), NOW).unwrap();
    // Same header and claims, another signature: not a hit, and it fails verification.
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signing_input}.{}", b64(&[0u8; 256]));
    assert_eq!(v.verify(&forged, &rsa_a_keys(), NOW), Err(AuthError::BadSignature));
}

#[test]
fn clear_cache_forces_reverification() {
    let token = rs256("rsa-a", payload());
    let mut v = verifier(json!({}));
    v.verify(&token, &rsa_a_keys(), NOW).unwrap();
    v.clear_cache();
    assert_eq!(v.cached_tokens(), 0);
    // The key was removed from the set: the token no longer works.
    assert_eq!(v.verify(&token, &key_set(vec![rsa_jwk(rsa_b(), "rsa-b")]), NOW), Err(AuthError::UnknownKey));
}

#[test]
fn cache_stays_bounded() {
    let secret = [5u8; 32];
    let keys = key_set(vec![oct_jwk(&secret, "h")]);
    let mut v = verifier(json!({"cache_entries": 16}));
    let key = HS256Key::from_bytes(&secret).with_key_id("h");
    for i in 0..200 {
        let token = key.authenticate(claims(with(payload(), json!({"sub": format!("agent-{i}")})))).unwrap();
        assert_eq!(v.verify(&token, &keys, NOW).unwrap().subject, format!("agent-{i}"));
        assert!(v.cached_tokens() <= 16, "{} entries after {i}", v.cached_tokens());
    }
    assert!(v.cached_tokens() >= 8, "eviction keeps the newer half");
}

#[test]
fn cache_hit_costs_microseconds_not_a_signature_check() {
    let token = rs256("rsa-a", with(payload(), json!({"groups": ["a", "b"]})));
    let keys = rsa_a_keys();
    let mut v = verifier(json!({"groups_claim": "groups"}));

    let start = Instant::now();
    v.verify(&token, &keys, NOW).unwrap();
    let miss = start.elapsed();

    let rounds: u32 = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        assert!(v.verify(&token, &keys, NOW).is_ok());
    }
    let hit = start.elapsed() / rounds;
    eprintln!("RS256 token of {} bytes: miss {miss:?}, hit {hit:?}", token.len());
    // Generous bound for unoptimised test builds on a shared machine; release is well below.
    assert!(hit.as_micros() < 20, "cache hit took {hit:?}");
    assert!(hit * 10 < miss, "hit {hit:?} is not much cheaper than miss {miss:?}");
}

// ---- JWKS parsing ----

fn inline_error(keys: Value) -> crate::config_error::ConfigError {
    let inline = json!({"jwks": {"inline": {"keys": keys}}});
    compile(spec(inline), "auth").unwrap_err()
}

#[test]
fn inline_jwks_errors_name_the_key_and_member() {
    let good = rsa_jwk(rsa_a(), "a");
    let cases = [
        (json!([good, {"kty": "RSA", "n": "!!!", "e": "AQAB"}]), "auth.jwks.inline.keys[1].n"),
        (json!([{"kty": "RSA", "e": "AQAB"}]), "auth.jwks.inline.keys[0].n"),
        (json!([{"kty": "RSA", "n": b64(&[0xff; 128]), "e": "AQAB"}]), "auth.jwks.inline.keys[0].n"),
        (json!([{"kty": "RSA", "n": rsa_jwk(rsa_a(), "a")["n"], "e": "Aw"}]), "auth.jwks.inline.keys[0].e"),
        (json!([{"kty": "EC", "x": b64(&[1; 32]), "y": b64(&[1; 32])}]), "auth.jwks.inline.keys[0].crv"),
        (json!([{"kty": "EC", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[1; 32])}]), "auth.jwks.inline.keys[0].x"),
        (json!([{"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[1; 32])}]), "auth.jwks.inline.keys[0].x"),
        (json!([{"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 16])}]), "auth.jwks.inline.keys[0].x"),
        (json!([{"kty": "oct", "k": b64(b"short")}]), "auth.jwks.inline.keys[0].k"),
        (json!([{"kty": "oct", "alg": "HS512", "k": b64(&[1; 32])}]), "auth.jwks.inline.keys[0].k"),
        (json!([{"kty": "oct", "alg": "RS256", "k": b64(&[1; 32])}]), "auth.jwks.inline.keys[0].alg"),
        (json!([{"n": "AQAB"}]), "auth.jwks.inline.keys[0].kty"),
        (json!([{"kty": "RSA", "kid": 5, "n": "AQAB", "e": "AQAB"}]), "auth.jwks.inline.keys[0].kid"),
        (json!(["not an object"]), "auth.jwks.inline.keys[0]"),
        (json!([]), "auth.jwks.inline.keys"),
    ];
    for (keys, field) in cases {
        let err = inline_error(keys.clone());
        assert_eq!(err.field, field, "{keys}: {}", err.problem);
        assert!(!err.problem.is_empty());
    }
}

#[test]
fn inline_jwks_must_be_a_key_set() {
    let err = compile(spec(json!({"jwks": {"inline": {"kty": "RSA"}}})), "auth").unwrap_err();
    assert_eq!(err.field, "auth.jwks.inline.keys");
    let err = compile(spec(json!({"jwks": {"inline": "{not json"}})), "auth").unwrap_err();
    assert_eq!(err.field, "auth.jwks.inline");
}

#[test]
fn inline_jwks_may_be_given_as_a_json_string() {
    let doc = json!({"keys": [rsa_jwk(rsa_a(), "rsa-a")]}).to_string();
    let config = compile(spec(json!({"jwks": {"inline": doc}})), "auth").unwrap();
    let keys = config.inline_keys.as_ref().unwrap();
    assert_eq!(keys.len(), 1);
    let token = rs256("rsa-a", payload());
    assert!(Verifier::new(&config).verify(&token, keys, NOW).is_ok());
}

#[test]
fn inline_jwks_skips_unsupported_keys_but_needs_one_usable_for_the_allow_list() {
    let enc = json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"});
    let p521 = json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
    let inline = json!({"jwks": {"inline": {"keys": [enc, p521, rsa_jwk(rsa_a(), "a")]}}});
    let config = compile(spec(inline.clone()), "auth").unwrap();
    let keys = config.inline_keys.as_ref().unwrap();
    assert_eq!((keys.len(), keys.skipped().len()), (1, 2));

    let err = compile(spec(with(inline, json!({"algorithms": ["ES256"]}))), "auth").unwrap_err();
    assert_eq!(err.field, "auth.jwks.inline");
}

#[test]
fn fetched_jwks_skips_malformed_and_unsupported_keys() {
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"},
        {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
        {"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
        rsa_jwk(rsa_a(), "rsa-a"),
    ]});
    let keys = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.skipped().len(), 3);
    assert_eq!(keys.skipped()[0].path(), "keys[0].n");
    assert!(verifier(json!({})).verify(&rs256("rsa-a", payload()), &keys, NOW).is_ok());
}

#[test]
fn fetched_jwks_without_a_usable_key_is_an_error() {
    let doc = json!({"keys": [{"kty": "RSA", "n": "!!!", "e": "AQAB"}, {"kty": "EC", "crv": "P-521"}]});
    assert_eq!(KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap_err(), JwksError::NoUsableKey { skipped: 2 });
    assert_eq!(KeySet::from_jwks_json(b"<html>").unwrap_err(), JwksError::NotJson);
    assert_eq!(KeySet::from_jwks_json(b"{\"keys\": 3}").unwrap_err(), JwksError::MissingKeys);
    let huge = vec![b' '; MAX_JWKS_BYTES + 1];
    assert_eq!(KeySet::from_jwks_json(&huge).unwrap_err(), JwksError::TooLarge { limit: MAX_JWKS_BYTES });
    let many = json!({"keys": vec![oct_jwk(&[1; 32], "k"); MAX_KEYS + 1]});
    assert_eq!(
        KeySet::from_jwks_json(many.to_string().as_bytes()).unwrap_err(),
        JwksError::TooManyKeys { limit: MAX_KEYS }
    );
}

#[test]
fn key_set_debug_shows_no_key_material() {
    let secret = [0x41u8; 32];
    let keys = key_set(vec![oct_jwk(&secret, "h"), rsa_jwk(rsa_a(), "rsa-a")]);
    let shown = format!("{keys:?}");
    assert!(shown.contains("oct:h") && shown.contains("RSA:rsa-a"), "{shown}");
    assert!(!shown.contains(&b64(&secret)) && !shown.contains("AAAA"), "{shown}");
}

// ---- config ----

#[test]
fn defaults_are_applied() {
    let config = config(json!({"header": "X-Agent-Token"}));
    assert_eq!(config.header, "x-agent-token");
    assert_eq!(config.clock_skew_seconds, 30);
    assert_eq!(config.cache_entries, 10_000);
    assert_eq!(config.algorithms, AlgorithmSet::all());
    let remote = config.remote.unwrap();
    assert_eq!((remote.refresh_seconds, remote.timeout_ms, remote.min_refresh_interval_seconds), (300, 2000, 10));
    assert!(config.inline_keys.is_none());
}

#[test]
fn invalid_auth_settings_name_their_field() {
    let remote = |changes: Value| {
        let base = json!({"cluster": "idp", "authority": "idp.example.com", "path": "/jwks.json"});
        json!({"jwks": {"remote": with(base, changes)}})
    };
    let cases = [
        (json!({"issuers": []}), "auth.issuers"),
        (json!({"issuers": [ISS, ""]}), "auth.issuers[1]"),
        (json!({"audiences": []}), "auth.audiences"),
        (json!({"clock_skew_seconds": 301}), "auth.clock_skew_seconds"),
        (json!({"header": "bad header"}), "auth.header"),
        (json!({"subject_claim": "exp"}), "auth.subject_claim"),
        (json!({"groups_claim": "a..b"}), "auth.groups_claim"),
        (json!({"algorithms": []}), "auth.algorithms"),
        (json!({"algorithms": ["RS256", "none"]}), "auth.algorithms[1]"),
        (json!({"algorithms": ["ES512"]}), "auth.algorithms[0]"),
        (json!({"cache_entries": 0}), "auth.cache_entries"),
        (json!({"cache_entries": 100_001}), "auth.cache_entries"),
        (remote(json!({"cluster": ""})), "auth.jwks.remote.cluster"),
        (remote(json!({"path": "jwks.json"})), "auth.jwks.remote.path"),
        (remote(json!({"timeout_ms": 0})), "auth.jwks.remote.timeout_ms"),
        (
            remote(json!({"refresh_seconds": 5, "min_refresh_interval_seconds": 10})),
            "auth.jwks.remote.min_refresh_interval_seconds",
        ),
    ];
    for (changes, field) in cases {
        let err = compile(spec(changes.clone()), "auth").unwrap_err();
        assert_eq!(err.field, field, "{changes}: {}", err.problem);
    }
    assert_eq!(compile(spec(json!({"clock_skew_seconds": 300})), "auth").map(|c| c.clock_skew_seconds).unwrap(), 300);
}

#[test]
fn unknown_fields_and_ambiguous_jwks_are_rejected_by_serde() {
    let base = json!({"issuers": [ISS], "audiences": [AUD], "jwks": {"inline": {"keys": []}}});
    assert!(serde_json::from_value::<AuthSpec>(with(base.clone(), json!({"issuer": ISS}))).is_err());
    let both = json!({"inline": {"keys": []}, "remote": {"cluster": "c", "authority": "a", "path": "/"}});
    assert!(serde_json::from_value::<AuthSpec>(with(base.clone(), json!({"jwks": both}))).is_err());
    let typo = json!({"remote": {"cluster": "c", "authority": "a", "path": "/", "refresh": 5}});
    assert!(serde_json::from_value::<AuthSpec>(with(base, json!({"jwks": typo}))).is_err());
}
