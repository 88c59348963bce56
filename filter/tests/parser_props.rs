//! Property-based tests of every parser that reads what an agent, an upstream or an
//! operator sends (issue 13, "hostile input at scale"), through the public API.
//!
//! Invariants, not only "no panic":
//! - request targets: whatever the bytes, a normalised path starts with `/` and holds no
//!   empty, `.` or `..` segment, no backslash and no control character; normalising it
//!   again (re-encoded, so it reads as a path) changes nothing; and every classic way of
//!   writing the same path (percent-encoding once to thrice, `./`, `x/../`, doubled
//!   slashes, backslashes, `..;param`) normalises to the plain form;
//! - SQL text: normalising is idempotent and gives trimmed, lowercased, single-spaced
//!   text; keywords separated by comments and odd whitespace read as the plain statement;
//! - JWTs: any change to a signed token's header or payload is refused; a token signed
//!   with the right key is accepted only when its issuer, audience and times are right,
//!   whatever else its header and claims hold; arbitrary text is refused;
//! - the plugin config: the shipped config with any one value deleted or replaced by
//!   another JSON value either loads or fails with an error, never echoing a secret;
//!   arbitrary bytes fail cleanly;
//! - SSE and NDJSON framing: arbitrary bytes cut into random chunks give exactly what the
//!   same bytes give at once (the same output, or an error), and the masked JSON of any
//!   generated document keeps its shape.
//!
//! Bounded for CI: 128 cases per property unless `PROPTEST_CASES` says otherwise
//! (`scripts/fuzz/props.sh` runs long).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use airlock_filter::config::Config;
use airlock_filter::jwt::{compile, AuthSpec, KeySet, Verifier};
use airlock_filter::mask::{compile_profile, MaskProfile, MaskProfileSpec};
use airlock_filter::normalize::{normalize_sql, normalize_target};
use airlock_filter::stream::{StreamKind, StreamLimits, StreamMasker};
use base64::Engine as _;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Value};

#[path = "support/proptest_config.rs"]
mod proptest_config;
use proptest_config::config;

// ---- request targets ----

/// A path segment a client could mean: letters, digits and the punctuation paths carry,
/// never a bare `.` or `..` (those are what the variants add).
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_~;=:@!$'()*+,-]{1,8}(\\.[a-z]{1,3})?"
}

/// One way of writing a segment that every server reads as the segment itself.
#[derive(Debug, Clone)]
enum Disguise {
    Plain,
    /// Percent-encode the bytes at these indices, `rounds` times over (1–3).
    Encoded(Vec<Index>, u8),
    /// `./seg`
    CurrentDir,
    /// `junk/../seg`
    Climb(String),
    /// `junk/..;v=1/seg`, as Java servlet containers read it.
    ClimbWithParam(String),
    /// `//seg`
    DoubleSlash,
    /// `\seg`
    Backslash,
}

fn disguise() -> impl Strategy<Value = Disguise> {
    prop_oneof![
        2 => Just(Disguise::Plain),
        3 => (vec(any::<Index>(), 1..4), 1u8..=3).prop_map(|(at, r)| Disguise::Encoded(at, r)),
        1 => Just(Disguise::CurrentDir),
        1 => segment().prop_map(Disguise::Climb),
        1 => segment().prop_map(Disguise::ClimbWithParam),
        1 => Just(Disguise::DoubleSlash),
        1 => Just(Disguise::Backslash),
    ]
}

fn percent_encode_byte(b: u8, rounds: u8) -> String {
    let mut s = format!("%{b:02X}");
    for _ in 1..rounds {
        s = s.replace('%', "%25");
    }
    s
}

/// `seg` written as `how`, with its separator in front.
fn disguised(seg: &str, how: &Disguise) -> String {
    match how {
        Disguise::Plain => format!("/{seg}"),
        Disguise::Encoded(at, rounds) => {
            let bytes = seg.as_bytes();
            let picked: Vec<usize> = at.iter().map(|i| i.index(bytes.len())).collect();
            let body: String = bytes
                .iter()
                .enumerate()
                .map(
                    |(i, &b)| {
                        if picked.contains(&i) {
                            percent_encode_byte(b, *rounds)
                        } else {
                            (b as char).to_string()
                        }
                    },
                )
                .collect();
            format!("/{body}")
        }
        Disguise::CurrentDir => format!("/./{seg}"),
        Disguise::Climb(junk) => format!("/{junk}/../{seg}"),
        Disguise::ClimbWithParam(junk) => format!("/{junk}/..;v=1/{seg}"),
        Disguise::DoubleSlash => format!("//{seg}"),
        Disguise::Backslash => format!("\\{seg}"),
    }
}

/// The normalised path written so that it reads back as a path: the characters that
/// would start a query, a fragment or an escape are encoded.
fn reencoded(path: &str) -> String {
    path.replace('%', "%25").replace('?', "%3F").replace('#', "%23")
}

fn assert_normal_path(path: &str) -> Result<(), TestCaseError> {
    prop_assert!(path.starts_with('/'), "{:?}", path);
    prop_assert!(!path.contains('\\'), "{:?}", path);
    prop_assert!(!path.chars().any(char::is_control), "{:?}", path);
    let inner = path.strip_prefix('/').unwrap();
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for seg in inner.split('/') {
            let bare = seg.split(';').next().unwrap();
            prop_assert!(!seg.is_empty() && bare != "." && bare != "..", "segment {:?} in {:?}", seg, path);
        }
    }
    Ok(())
}

/// Text that looks like a request target: slashes, dots, escapes (valid and broken),
/// backslashes, semicolons, query and fragment marks, control and non-ASCII characters.
fn target_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("\\".to_string()),
        Just(";".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("&".to_string()),
        Just("=".to_string()),
        Just("+".to_string()),
        Just("%".to_string()),
        "%[0-9A-Fa-f]{2}",
        "%25[0-9A-Fa-f]{2}",
        "%[g-z]{2}",
        "[a-z]{1,4}",
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_target_normalises_to_a_clean_path_or_a_clear_error_and_normalising_again_changes_nothing(
        raw in target_text(),
    ) {
        let Ok(target) = normalize_target(&raw) else { return Ok(()) };
        assert_normal_path(&target.path)?;
        let again = normalize_target(&reencoded(&target.path)).unwrap();
        prop_assert_eq!(&again.path, &target.path);
        prop_assert!(again.query.is_empty());
    }

    #[test]
    fn every_disguise_of_a_path_normalises_to_the_plain_path(
        parts in vec((segment(), disguise()), 1..6),
        trailing_slash in any::<bool>(),
    ) {
        let slash = if trailing_slash { "/" } else { "" };
        let plain: String = parts.iter().map(|(s, _)| format!("/{s}")).collect::<String>() + slash;
        let written: String = parts.iter().map(|(s, how)| disguised(s, how)).collect::<String>() + slash;
        let plain_target = normalize_target(&plain).unwrap();
        let written_target = normalize_target(&written)
            .map_err(|e| TestCaseError::fail(format!("{written:?} refused: {e}")))?;
        prop_assert_eq!(written_target.path, plain_target.path, "written as {:?}", written);
    }
}

// ---- SQL text ----

fn sql_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[A-Za-z_]{1,8}",
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("\n".to_string()),
        Just("\u{a0}".to_string()),
        Just("\u{2003}".to_string()),
        Just("--".to_string()),
        Just("-".to_string()),
        Just("#".to_string()),
        Just("/*".to_string()),
        Just("*/".to_string()),
        Just("/*!".to_string()),
        Just("/*+".to_string()),
        Just("*".to_string()),
        Just("/".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("`".to_string()),
        Just("$$".to_string()),
        Just(";".to_string()),
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 0..32).prop_map(|p| p.concat())
}

/// What may stand between two keywords and still leave them two keywords.
fn sql_gap() -> impl Strategy<Value = String> {
    let one = prop_oneof![
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("\r\n".to_string()),
        Just("\u{a0}".to_string()),
        Just("\u{3000}".to_string()),
        "/\\*[a-z ]{0,6}\\*/",
        "-- [a-z ]{0,6}\n",
    ];
    vec(one, 1..4).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn normalising_sql_twice_gives_the_same_trimmed_lowercased_single_spaced_text(text in sql_text()) {
        let once = normalize_sql(&text);
        prop_assert_eq!(normalize_sql(&once), once.clone(), "from {:?}", text);
        prop_assert_eq!(once.trim(), once.as_str());
        prop_assert!(!once.contains("  "), "{:?}", once);
        prop_assert_eq!(once.to_lowercase(), once.clone());
    }

    #[test]
    fn keywords_apart_by_comments_and_odd_whitespace_read_as_the_plain_statement(
        words in vec(select(&["DROP", "Table", "delete", "FROM", "users", "where", "1", "TRUNCATE"][..]), 1..8),
        gaps in vec(sql_gap(), 8),
    ) {
        let written: String = words.iter().zip(&gaps).map(|(w, g)| format!("{w}{g}")).collect();
        let plain = words.join(" ").to_lowercase();
        prop_assert_eq!(normalize_sql(&written), plain, "written as {:?}", written);
    }
}

// ---- JWTs ----

const ISS: &str = "https://idp.example.com";
const AUD: &str = "airlock";
const NOW: u64 = 1_700_000_000;

struct Keys {
    es256: p256::ecdsa::SigningKey,
    ed25519: ed25519_compact::KeyPair,
    set: KeySet,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Fixed keys: the properties must not depend on a random number generator.
fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let es256 = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let ed25519 = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([9; 32]));
        let point = es256.verifying_key().to_sec1_point(false);
        let point = &point.as_bytes()[1..];
        let jwks = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&point[..32]), "y": b64(&point[32..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed25519.pk.as_ref())},
        ]});
        let set = KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap();
        Keys { es256, ed25519, set }
    })
}

fn verifier() -> Verifier {
    let spec: AuthSpec = serde_json::from_value(json!({
        "issuers": [ISS],
        "audiences": [AUD],
        "groups_claim": "groups",
        "jwks": {"remote": {"cluster": "idp", "authority": "idp.example.com", "path": "/jwks.json"}}
    }))
    .unwrap();
    Verifier::new(&compile(spec, "auth").unwrap())
}

/// A compact JWS with exactly this header and payload JSON, signed by the EC or Ed25519 key.
fn signed(header: &Value, payload: &str, ed25519: bool) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.as_bytes()));
    let signature = if ed25519 {
        keys().ed25519.sk.sign(input.as_bytes(), None).to_vec()
    } else {
        use p256::ecdsa::signature::Signer as _;
        let signature: p256::ecdsa::Signature = keys().es256.sign(input.as_bytes());
        signature.to_bytes().to_vec()
    };
    format!("{input}.{}", b64(&signature))
}

fn good_payload(sub: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "iat": NOW, "exp": NOW + 600, "groups": ["agents"]})
}

fn header(ed25519: bool) -> Value {
    if ed25519 {
        json!({"alg": "EdDSA", "kid": "ed", "typ": "JWT"})
    } else {
        json!({"alg": "ES256", "kid": "ec", "typ": "JWT"})
    }
}

/// Any JSON value, small, for claims and header members.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        (NOW - 1000..NOW + 1000).prop_map(Value::from),
        select(&[ISS, AUD, "", "none", "HS256", "ES256", "EdDSA", "RS256", "ec", "ed", "JWT", "x"][..])
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec(("[a-z]{1,4}", inner), 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const MEMBER_NAMES: [&str; 13] =
    ["iss", "aud", "sub", "exp", "nbf", "iat", "groups", "alg", "kid", "typ", "crit", "jku", "x5u"];

/// A claim or header member name, mostly the ones verifiers care about.
fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&MEMBER_NAMES[..]).prop_map(String::from),
        1 => "[a-z]{1,6}",
    ]
}

fn edited(mut base: Value, edits: &[(String, Option<Value>)]) -> Value {
    let obj = base.as_object_mut().unwrap();
    for (name, value) in edits {
        match value {
            Some(v) => obj.insert(name.clone(), v.clone()),
            None => obj.remove(name),
        };
    }
    base
}

/// Whether the claims are ones the config accepts at `NOW` (issuer, audience, a string
/// subject, expiry in the future, not-before in the past, within the 30 s default skew).
fn acceptable(claims: &Value) -> bool {
    let time = |name: &str| claims.get(name).and_then(Value::as_f64);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUD,
        Some(Value::Array(a)) => a.iter().any(|a| a == AUD),
        _ => false,
    };
    claims.get("iss") == Some(&json!(ISS))
        && aud_ok
        && claims.get("sub").is_some_and(Value::is_string)
        && time("exp").is_some_and(|e| e + 30.0 > NOW as f64)
        && claims.get("nbf").is_none_or(|_| time("nbf").is_some_and(|n| n <= (NOW + 30) as f64))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_change_to_a_signed_tokens_header_or_payload_is_refused(
        ed25519 in any::<bool>(),
        at in any::<Index>(),
        replacement in select(&b"AZaz09-_.=+/ "[..]),
    ) {
        let token = signed(&header(ed25519), &good_payload("agent-7").to_string(), ed25519);
        prop_assert!(verifier().verify(&token, &keys().set, NOW).is_ok());
        let signing_input_len = token.rfind('.').unwrap();
        let i = at.index(signing_input_len);
        prop_assume!(token.as_bytes()[i] != replacement);
        let mut bytes = token.into_bytes();
        bytes[i] = replacement;
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert!(verifier().verify(&tampered, &keys().set, NOW).is_err(), "accepted {}", tampered);
    }

    #[test]
    fn a_token_whose_signature_is_changed_is_refused_or_names_the_same_agent(
        ed25519 in any::<bool>(),
        at in any::<Index>(),
        replacement in select(&b"AZaz09-_.="[..]),
        cut in any::<bool>(),
    ) {
        let token = signed(&header(ed25519), &good_payload("agent-7").to_string(), ed25519);
        let dot = token.rfind('.').unwrap();
        let tampered = if cut {
            token[..dot + 1 + at.index(token.len() - dot)].to_string()
        } else {
            let mut bytes = token.clone().into_bytes();
            let i = dot + 1 + at.index(token.len() - dot - 1);
            bytes[i] = replacement;
            String::from_utf8(bytes).unwrap()
        };
        prop_assume!(tampered != token);
        // A base64 decoder may ignore the unused low bits of the last character; then the
        // signature is the same bytes and may verify, but only as the same agent.
        if let Ok(identity) = verifier().verify(&tampered, &keys().set, NOW) {
            prop_assert_eq!(identity.subject.as_str(), "agent-7");
            prop_assert_eq!(&tampered[..dot], &token[..dot]);
        }
    }

    #[test]
    fn a_correctly_signed_token_is_accepted_only_with_the_right_issuer_audience_and_times(
        ed25519 in any::<bool>(),
        claim_edits in vec((member_name(), proptest::option::weighted(0.8, json_value())), 0..5),
        header_edits in vec((member_name(), proptest::option::weighted(0.8, json_value())), 0..3),
    ) {
        let claims = edited(good_payload("agent-7"), &claim_edits);
        let head = edited(header(ed25519), &header_edits);
        let token = signed(&head, &claims.to_string(), ed25519);
        if let Ok(identity) = verifier().verify(&token, &keys().set, NOW) {
            prop_assert!(acceptable(&claims), "accepted {} with header {}", claims, head);
            prop_assert_eq!(Some(identity.subject.as_str()), claims["sub"].as_str());
            // Only the algorithm of the key that signed it, never `none` or an HMAC trick.
            prop_assert_eq!(&head["alg"], &json!(if ed25519 { "EdDSA" } else { "ES256" }));
        }
    }

    #[test]
    fn arbitrary_text_as_a_token_is_refused(
        text in prop_oneof!["\\PC{0,200}", "[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_=-]{0,60}"],
    ) {
        prop_assert!(verifier().verify(&text, &keys().set, NOW).is_err());
    }
}

// ---- the plugin config ----

const SHIPPED_CONFIG: &str = include_str!("../../envoy/plugin-config.json");

/// Secrets the environment gives the config: no error message may quote them.
const ENV_SECRETS: &[(&str, &str)] =
    &[("AIRLOCK_DEMO_UPSTREAM_TOKEN", "upstream-secret-Zq81xW"), ("AIRLOCK_FILTER_KEY", "filter-key-secret-Vb27pL")];

fn env(name: &str) -> Option<String> {
    ENV_SECRETS.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
}

/// Every path to a value in `doc`, as object member names and array indices.
fn value_paths(doc: &Value, here: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(here.clone());
    match doc {
        Value::Object(m) => {
            for (k, v) in m {
                here.push(PathStep::Member(k.clone()));
                value_paths(v, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                here.push(PathStep::Index(i));
                value_paths(v, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Member(String),
    Index(usize),
}

#[derive(Debug, Clone)]
enum Edit {
    Delete,
    Replace(Value),
    /// A number at the edge of what JSON readers hold.
    Huge(bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => Just(Edit::Delete),
        4 => json_value().prop_map(Edit::Replace),
        1 => any::<bool>().prop_map(Edit::Huge),
    ]
}

fn apply(doc: &mut Value, path: &[PathStep], edit: &Edit) {
    let Some((last, parents)) = path.split_last() else {
        if let Edit::Replace(v) = edit {
            *doc = v.clone();
        }
        return;
    };
    let mut at = doc;
    for step in parents {
        at = match step {
            PathStep::Member(k) => &mut at[k.as_str()],
            PathStep::Index(i) => &mut at[*i],
        };
    }
    match (edit, last, at) {
        (Edit::Delete, PathStep::Member(k), Value::Object(m)) => {
            m.remove(k);
        }
        (Edit::Delete, PathStep::Index(i), Value::Array(a)) => {
            a.remove(*i);
        }
        (Edit::Replace(v), PathStep::Member(k), at) => at[k.as_str()] = v.clone(),
        (Edit::Replace(v), PathStep::Index(i), at) => at[*i] = v.clone(),
        (Edit::Huge(negative), step, at) => {
            let n = if *negative { "-1e400" } else { "18446744073709551616" };
            let v: Value = serde_json::from_str(n).unwrap_or(Value::from(u64::MAX));
            match step {
                PathStep::Member(k) => at[k.as_str()] = v,
                PathStep::Index(i) => at[*i] = v,
            }
        }
        _ => {}
    }
}

fn assert_error_quotes_no_secret(err: &dyn std::fmt::Display) -> Result<(), TestCaseError> {
    let message = err.to_string();
    prop_assert!(!message.is_empty());
    for (_, secret) in ENV_SECRETS {
        prop_assert!(!message.contains(secret), "the error quotes a secret: {}", message);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_shipped_config_with_any_value_changed_loads_or_fails_naming_no_secret(
        edits in vec((any::<Index>(), edit()), 1..3),
    ) {
        let mut doc: Value = serde_json::from_str(SHIPPED_CONFIG).unwrap();
        for (at, edit) in &edits {
            let mut paths = Vec::new();
            value_paths(&doc, &mut Vec::new(), &mut paths);
            let path = paths[at.index(paths.len())].clone();
            apply(&mut doc, &path, edit);
        }
        if let Err(e) = Config::from_json(doc.to_string().as_bytes(), &env) {
            assert_error_quotes_no_secret(&e)?;
        }
    }

    #[test]
    fn arbitrary_bytes_as_the_config_fail_cleanly(bytes in vec(any::<u8>(), 0..256)) {
        if let Err(e) = Config::from_json(&bytes, &env) {
            assert_error_quotes_no_secret(&e)?;
        }
    }
}

#[test]
fn the_shipped_config_loads() {
    Config::from_json(SHIPPED_CONFIG.as_bytes(), &env).unwrap();
}

// ---- SSE and NDJSON framing, and the JSON walker ----

fn profile() -> MaskProfile {
    let spec: MaskProfileSpec = serde_json::from_str(r#"{"detectors":["all"]}"#).unwrap();
    compile_profile(spec, "mask_profiles.props").unwrap()
}

/// Bytes that look like a stream: SSE field names, line breaks of every kind, JSON
/// fragments of chat deltas, PII, broken UTF-8 and raw bytes.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: message\n".to_vec()),
        Just(b"id: 7\n".to_vec()),
        Just(b": keep-alive\n".to_vec()),
        Just(b"retry: 10\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(br#"{"choices":[{"index":0,"delta":{"content":""#.to_vec()),
        Just(br#""}}]}"#.to_vec()),
        Just(br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""#.to_vec()),
        Just(br#""}}"#.to_vec()),
        Just(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""#.to_vec()),
        Just(b"alice@example.com".to_vec()),
        Just(b"4111 1111 1111 1111".to_vec()),
        Just(b"123-45-6789".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(b"\\u00e9\\\"".to_vec()),
        Just(vec![0xE2, 0x82]),
        Just(vec![0xAC]),
        Just(vec![0xFF]),
        "[a-z ]{1,6}".prop_map(String::into_bytes),
        vec(any::<u8>(), 1..4),
    ];
    vec(piece, 0..40).prop_map(|p| p.concat())
}

/// Small limits, so generated streams also reach them.
fn limits() -> StreamLimits {
    StreamLimits { max_buffered_bytes: 512, max_held_bytes: 256, max_texts: 4 }
}

/// The whole output of `bytes` cut at `cuts`, or the first error.
fn run_stream(kind: StreamKind, bytes: &[u8], cuts: &[Index]) -> Result<Vec<u8>, String> {
    let p = profile();
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    let mut masker = StreamMasker::new(kind, limits());
    let mut out = Vec::new();
    for pair in at.windows(2) {
        masker.push(&p, &bytes[pair[0]..pair[1]], &mut out).map_err(|e| e.to_string())?;
    }
    masker.finish(&p, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Whether `masked` is `original` with only string values changed and numbers that are
/// PII turned into replacement strings; the generated member names are never PII, so they
/// stay as they are.
fn same_shape(masked: &Value, original: &Value) -> bool {
    match (masked, original) {
        (Value::Object(m), Value::Object(o)) => {
            m.keys().eq(o.keys()) && m.values().zip(o.values()).all(|(m, o)| same_shape(m, o))
        }
        (Value::Array(m), Value::Array(o)) => m.len() == o.len() && m.iter().zip(o).all(|(m, o)| same_shape(m, o)),
        (Value::String(_), Value::String(_)) => true,
        (Value::String(s), Value::Number(_)) => s.starts_with("[REDACTED:"),
        (m, o) => m == o,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_hostile_sse_stream_in_random_chunks_gives_what_it_gives_at_once(
        bytes in stream_bytes(),
        cuts in vec(any::<Index>(), 0..16),
    ) {
        prop_assert_eq!(run_stream(StreamKind::Sse, &bytes, &cuts), run_stream(StreamKind::Sse, &bytes, &[]));
    }

    #[test]
    fn a_hostile_ndjson_stream_in_random_chunks_gives_what_it_gives_at_once(
        bytes in stream_bytes(),
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let whole = run_stream(StreamKind::Ndjson, &bytes, &[]);
        prop_assert_eq!(run_stream(StreamKind::Ndjson, &bytes, &cuts), whole.clone());
        // What NDJSON lets through is JSON, line by line.
        if let Ok(out) = whole {
            for line in out.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
                let text = String::from_utf8_lossy(line);
                prop_assert!(serde_json::from_slice::<Value>(line).is_ok(), "not JSON: {:?}", text);
            }
        }
    }

    #[test]
    fn masked_json_of_any_document_is_json_of_the_same_shape_and_masking_again_changes_nothing(
        doc in json_value(),
    ) {
        let p = profile();
        let body = doc.to_string();
        let (out, _) = p.mask_json(body.as_bytes()).unwrap();
        let masked: Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", String::from_utf8_lossy(&out))))?;
        // Compared with the body as read back, not `doc`: serde_json's float reading is not
        // exact to the last bit, and the masker copies numbers as they are written.
        let original: Value = serde_json::from_str(&body).unwrap();
        prop_assert!(same_shape(&masked, &original), "{} masked as {}", body, masked);
        let (again, _) = p.mask_json(&out).unwrap();
        prop_assert_eq!(again, out);
    }

    #[test]
    fn arbitrary_bytes_as_a_json_body_are_masked_as_json_or_refused(bytes in stream_bytes()) {
        let p = profile();
        let is_json = serde_json::from_slice::<Value>(&bytes).is_ok();
        match p.mask_json(&bytes) {
            Ok((out, _)) => {
                prop_assert!(is_json, "masked what is not JSON: {:?}", String::from_utf8_lossy(&bytes));
                prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
            }
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                prop_assert!(!is_json || nesting(&bytes) > 64, "refused JSON: {:?}", text);
            }
        }
    }
}

/// How deeply brackets nest (a bound for refusals of valid JSON).
fn nesting(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for &b in bytes {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[test]
fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    let p = profile();
    for depth in [200, 10_000, 100_000] {
        let body = "[".repeat(depth) + &"]".repeat(depth);
        assert!(p.mask_json(body.as_bytes()).is_err(), "depth {depth}");
        let mut masker = StreamMasker::new(StreamKind::Ndjson, StreamLimits::default());
        let mut out = Vec::new();
        let r = masker.push(&p, format!("{body}\n").as_bytes(), &mut out);
        assert!(r.is_err() || masker.finish(&p, &mut out).is_err(), "ndjson depth {depth}");
    }
}

/// The verifier caches identities by token: two hundred agents, each seen three times,
/// must each get their own identity back every time.
#[test]
fn many_agents_verified_through_one_cache_are_never_mixed_up() {
    let mut v = verifier();
    let tokens: Vec<(String, String)> = (0..200)
        .map(|i| {
            let sub = format!("agent-{i}");
            let token = signed(&header(i % 2 == 0), &good_payload(&sub).to_string(), i % 2 == 0);
            (sub, token)
        })
        .collect();
    for round in 0..3 {
        for (sub, token) in &tokens {
            let identity = v.verify(token, &keys().set, NOW).unwrap();
            assert_eq!(&identity.subject, sub, "round {round}");
        }
    }
}
