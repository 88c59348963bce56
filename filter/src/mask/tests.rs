//! Profile compilation, JSON and text masking, counts and errors.

use super::*;
use serde_json::{json, Value};

fn profile(spec: Value) -> MaskProfile {
    let spec: MaskProfileSpec = serde_json::from_value(spec).unwrap();
    compile_profile(spec, "mask_profiles.pii").unwrap()
}

fn compile_err(spec: Value) -> ConfigError {
    let spec: MaskProfileSpec = serde_json::from_value(spec).unwrap();
    compile_profile(spec, "mask_profiles.pii").unwrap_err()
}

fn all() -> MaskProfile {
    profile(json!({ "detectors": ["all"] }))
}

/// Masks `body` and returns the output as a string (asserting it parses) and the counts.
fn mask(p: &MaskProfile, body: &str) -> (String, MaskCounts) {
    let (out, counts) = p.mask_json(body.as_bytes()).unwrap();
    let out = String::from_utf8(out).unwrap();
    serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("output is not JSON ({e}): {out}"));
    (out, counts)
}

fn count_of(p: &MaskProfile, counts: &MaskCounts, kind: &str) -> u64 {
    let slot = p.kinds().iter().position(|k| k == kind).unwrap();
    counts.get(slot)
}

// ---- configuration ----

#[test]
fn kinds_list_builtins_then_custom_then_field_and_column() {
    let p = profile(json!({
        "detectors": ["phone", "email"],
        "custom": [{ "name": "employee_id", "regex": "EMP-[0-9]{6}" }],
    }));
    assert_eq!(p.kinds(), ["email", "phone", "employee_id", "field", "column"]);
    assert_eq!(all().kinds().len(), 10);
}

#[test]
fn unknown_detector_is_named_with_its_index() {
    let e = compile_err(json!({ "detectors": ["email", "passport"] }));
    assert_eq!(e.field, "mask_profiles.pii.detectors[1]");
    assert!(e.problem.contains("passport") && e.problem.contains("credit_card"), "{}", e.problem);
}

#[test]
fn unknown_spec_members_are_rejected() {
    let r: Result<MaskProfileSpec, _> = serde_json::from_value(json!({ "detectors": ["all"], "detector": [] }));
    assert!(r.is_err());
}

#[test]
fn profile_that_masks_nothing_is_rejected() {
    let e = compile_err(json!({}));
    assert_eq!(e.field, "mask_profiles.pii");
    assert!(e.problem.contains("masks nothing"));
}

#[test]
fn bad_custom_detectors_are_rejected_with_their_path() {
    let e = compile_err(json!({ "custom": [{ "name": "ok", "regex": "a" }, { "name": "bad", "regex": "(" }] }));
    assert_eq!(e.field, "mask_profiles.pii.custom[1].regex");
    let e = compile_err(json!({ "custom": [{ "name": "opt", "regex": "x*" }] }));
    assert!(e.problem.contains("empty string"), "{}", e.problem);
    let e = compile_err(json!({ "custom": [{ "name": "email", "regex": "x" }] }));
    assert_eq!(e.field, "mask_profiles.pii.custom[0].name");
    let e = compile_err(json!({ "custom": [{ "name": "Bad Name", "regex": "x" }] }));
    assert_eq!(e.field, "mask_profiles.pii.custom[0].name");
    let e = compile_err(json!({ "custom": [{ "name": "a", "regex": "x" }, { "name": "a", "regex": "y" }] }));
    assert_eq!(e.field, "mask_profiles.pii.custom[1].name");
}

#[test]
fn replacement_with_unknown_placeholder_is_rejected() {
    let e = compile_err(json!({ "detectors": ["email"], "replacement": "<{type}>" }));
    assert_eq!(e.field, "mask_profiles.pii.replacement");
}

#[test]
fn bad_pointer_and_empty_field_are_rejected() {
    let e = compile_err(json!({ "pointers": ["/ok", "nope"] }));
    assert_eq!(e.field, "mask_profiles.pii.pointers[1]");
    let e = compile_err(json!({ "fields": ["password", ""] }));
    assert_eq!(e.field, "mask_profiles.pii.fields[1]");
}

// ---- JSON masking ----

#[test]
fn json_stays_parseable_and_non_pii_values_are_unchanged() {
    let body = r#"{ "id": 42, "name": "Alice", "email": "alice@example.com", "ratio": -1.5e3,
        "ok": true, "none": null, "tags": ["a", "b"], "note": "call 415-555-0134 or \"x\"" }"#;
    let (out, counts) = mask(&all(), body);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], 42);
    assert_eq!(v["name"], "Alice");
    assert_eq!(v["email"], "[REDACTED:email]");
    assert_eq!(v["ratio"], -1.5e3);
    assert_eq!(v["ok"], true);
    assert_eq!(v["none"], Value::Null);
    assert_eq!(v["tags"], json!(["a", "b"]));
    assert_eq!(v["note"], "call [REDACTED:phone] or \"x\"");
    assert_eq!(counts.total(), 2);
}

#[test]
fn output_is_compact_and_keeps_member_order_and_number_text() {
    let body = "{ \"z\" : 1,\n \"a\" : [ 1.50 , 12345678901234567890123 ],\t\"m\": \"x\\u00e9\" }";
    let (out, counts) = mask(&all(), body);
    assert_eq!(out, r#"{"z":1,"a":[1.50,12345678901234567890123],"m":"x\u00e9"}"#);
    assert_eq!(counts.total(), 0);
}

#[test]
fn unicode_escaped_email_is_masked() {
    let (out, counts) = mask(&all(), r#"{"contact":"\u0061lice@example.com"}"#);
    assert_eq!(out, r#"{"contact":"[REDACTED:email]"}"#);
    assert_eq!(counts.total(), 1);
}

#[test]
fn escaped_text_around_a_detection_is_re_escaped() {
    let (out, _) = mask(&all(), r#"["line1\nmail: \"bob@example.org\"\ttab \\ done"]"#);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0], "line1\nmail: \"[REDACTED:email]\"\ttab \\ done");
}

#[test]
fn pii_in_member_names_is_masked() {
    let (out, counts) = mask(&all(), r#"{"by_email":{"carol@example.com":{"n":1}}}"#);
    assert_eq!(out, r#"{"by_email":{"[REDACTED:email]":{"n":1}}}"#);
    assert_eq!(counts.total(), 1);
}

#[test]
fn nested_arrays_are_walked() {
    let (out, counts) = mask(&all(), r#"[[["4111 1111 1111 1111"], [["123-45-6789", "ok"]]], []]"#);
    assert_eq!(out, r#"[[["[REDACTED:credit_card]"],[["[REDACTED:us_ssn]","ok"]]],[]]"#);
    assert_eq!(counts.total(), 2);
}

#[test]
fn numbers_that_are_cards_ssns_or_phones_become_masked_strings() {
    let p = all();
    let (out, counts) = mask(
        &p,
        concat!(
            r#"{"card":4111111111111111,"ssn":123456789,"tel":4155550134,"qty":3,"ts":1718000000000,"#,
            r#""neg":-4111111111111111,"f":4111111111111111.0}"#
        ),
    );
    assert_eq!(
        out,
        concat!(
            r#"{"card":"[REDACTED:credit_card]","ssn":"[REDACTED:us_ssn]","tel":"[REDACTED:phone]","qty":3,"#,
            r#""ts":1718000000000,"neg":-4111111111111111,"f":4111111111111111.0}"#
        )
    );
    assert_eq!(count_of(&p, &counts, "credit_card"), 1);
    assert_eq!(count_of(&p, &counts, "us_ssn"), 1);
    assert_eq!(count_of(&p, &counts, "phone"), 1);
}

#[test]
fn number_masking_can_be_turned_off() {
    let p = profile(json!({ "detectors": ["all"], "mask_numbers": false }));
    let (out, _) = mask(&p, r#"{"id":123456789,"card":"4111111111111111"}"#);
    assert_eq!(out, r#"{"id":123456789,"card":"[REDACTED:credit_card]"}"#);
}

#[test]
fn fields_replace_whole_values_anywhere_case_insensitively() {
    let p = profile(json!({ "fields": ["password", "SSN", "Straße"] }));
    let body = concat!(
        r#"{"user":{"Password":"hunter2","profile":{"ssn":{"a":1,"b":[2,3]}},"name":"x"},"#,
        r#""list":[{"PASSWORD":null}],"STRASSE":"kept","straße":"gone","STRAßE":7}"#
    );
    let (out, counts) = mask(&p, body);
    assert_eq!(
        out,
        concat!(
            r#"{"user":{"Password":"[REDACTED:field]","profile":{"ssn":"[REDACTED:field]"},"name":"x"},"#,
            concat!(
                r#""list":[{"PASSWORD":"[REDACTED:field]"}],"STRASSE":"kept","straße":"[REDACTED:field]","#,
                r#""STRAßE":"[REDACTED:field]"}"#
            )
        )
    );
    assert_eq!(count_of(&p, &counts, "field"), 5);
}

#[test]
fn pointers_with_wildcards_replace_only_addressed_values() {
    let p = profile(json!({ "pointers": ["/customers/*/dob", "/meta/0", "/a~1b"] }));
    let body = concat!(
        r#"{"customers":[{"dob":"1990-01-01","name":"A"},{"dob":"1985-05-05"}],"dob":"top","meta":["x","#,
        r#""y"],"a/b":{"deep":1}}"#
    );
    let (out, counts) = mask(&p, body);
    assert_eq!(
        out,
        concat!(
            r#"{"customers":[{"dob":"[REDACTED:field]","name":"A"},{"dob":"[REDACTED:field]"}],"dob":"top","#,
            r#""meta":["[REDACTED:field]","y"],"a/b":"[REDACTED:field]"}"#
        )
    );
    assert_eq!(counts.total(), 4);
}

#[test]
fn field_matched_by_name_and_pointer_is_counted_once() {
    let p = profile(json!({ "fields": ["dob"], "pointers": ["/dob"] }));
    let (out, counts) = mask(&p, r#"{"dob":"1990-01-01"}"#);
    assert_eq!(out, r#"{"dob":"[REDACTED:field]"}"#);
    assert_eq!(counts.total(), 1);
}

#[test]
fn replacement_template_is_applied_and_escaped() {
    let p = profile(json!({ "detectors": ["email"], "fields": ["pw"], "replacement": "\"<{kind}>\"" }));
    let (out, _) = mask(&p, r#"{"e":"to a@example.com","pw":"x"}"#);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["e"], "to \"<email>\"");
    assert_eq!(v["pw"], "\"<field>\"");
    let stars = profile(json!({ "detectors": ["email"], "replacement": "***" }));
    assert_eq!(stars.mask_text("a@example.com!").0, "***!");
}

#[test]
fn custom_regex_masks_and_counts_under_its_name() {
    let p = profile(json!({ "detectors": ["email"], "custom": [{ "name": "employee_id", "regex": "EMP-[0-9]{6}" }] }));
    let (out, counts) = mask(&p, r#"{"who":"EMP-123456 (emp@example.com), EMP-654321"}"#);
    assert_eq!(out, r#"{"who":"[REDACTED:employee_id] ([REDACTED:email]), [REDACTED:employee_id]"}"#);
    assert_eq!(count_of(&p, &counts, "employee_id"), 2);
    assert_eq!(count_of(&p, &counts, "email"), 1);
}

#[test]
fn overlapping_custom_and_builtin_detections_take_leftmost_then_longest() {
    let p = profile(
        json!({ "detectors": ["email"], "custom": [{ "name": "corp_mail", "regex": "[a-z]+@corp\\.example\\.com" },
            { "name": "tail", "regex": "example\\.com" }] }),
    );
    let (text, counts) = p.mask_text("x dan@corp.example.com y");
    assert_eq!(text, "x [REDACTED:email] y", "same start and length: built-in wins");
    assert_eq!(counts.total(), 1);
    let (text, _) = p.mask_text("see example.com and ann@example.com");
    assert_eq!(text, "see [REDACTED:tail] and [REDACTED:email]");
}

#[test]
fn counts_are_per_kind_and_aligned_with_kinds() {
    let p = all();
    let body = r#"{"a":"x@example.com y@example.com","b":"123-45-6789","c":"AKIAIOSFODNN7EXAMPLE","pw":"z"}"#;
    let (_, counts) = mask(&p, body);
    let got: Vec<(&str, u64)> = counts.iter().map(|(i, n)| (p.kinds()[i].as_str(), n)).collect();
    assert_eq!(got, [("email", 2), ("us_ssn", 1), ("api_key", 1)]);
    assert_eq!(counts.total(), 4);
}

#[test]
fn unicode_text_and_lone_surrogates_survive() {
    let (out, counts) = mask(&all(), r#"{"k":"héllo 😀 \ud83d\ude00 \ud800 zoë@example.com"}"#);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["k"], "héllo 😀 😀 \u{FFFD} [REDACTED:email]");
    assert_eq!(counts.total(), 1);
}

#[test]
fn private_key_with_escaped_newlines_is_masked_whole() {
    let body = r#"{"key":"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n","ok":1}"#;
    let (out, _) = mask(&all(), body);
    assert_eq!(out, r#"{"key":"[REDACTED:private_key]\n","ok":1}"#);
}

#[test]
fn byte_order_mark_is_dropped() {
    let mut body = "\u{feff}".as_bytes().to_vec();
    body.extend_from_slice(br#"{"a":"b@example.com"}"#);
    let (out, _) = all().mask_json(&body).unwrap();
    assert_eq!(out, br#"{"a":"[REDACTED:email]"}"#);
}

// ---- errors ----

#[test]
fn depth_limit_is_enforced_without_overflowing_the_stack() {
    let p = all();
    let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    assert!(p.mask_json(nested(MAX_DEPTH).as_bytes()).is_ok());
    assert_eq!(p.mask_json(nested(MAX_DEPTH + 1).as_bytes()), Err(MaskError::TooDeep));
    assert_eq!(p.mask_json("[".repeat(1_000_000).as_bytes()), Err(MaskError::TooDeep));
    let deep_obj = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
    assert_eq!(p.mask_json(deep_obj.as_bytes()), Err(MaskError::TooDeep));
}

#[test]
fn depth_limit_applies_inside_masked_fields() {
    let p = profile(json!({ "fields": ["secret"] }));
    let body = format!("{{\"secret\":{}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert_eq!(p.mask_json(body.as_bytes()), Err(MaskError::TooDeep));
}

#[test]
fn invalid_json_is_an_error_that_names_no_content() {
    let p = all();
    let cases = [
        "",
        "{",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"["alice@example.com""#,
        r#"["bad \x escape"]"#,
        "[\"raw\ncontrol\"]",
        r#"[01]"#,
        r#"[1.]"#,
        r#"[tru]"#,
        r#"{"secret@example.com":1} trailing"#,
        r#"{"pw":[1,}"#,
        "[\"\\u12G4\"]",
    ];
    for body in cases {
        match p.mask_json(body.as_bytes()) {
            Err(e @ MaskError::InvalidJson(_)) => {
                let msg = e.to_string();
                assert!(!msg.contains("example") && !msg.contains("escape\"") && !msg.contains("trailing"), "{msg}");
            }
            other => panic!("{body:?} gave {other:?}"),
        }
    }
}

#[test]
fn invalid_json_inside_masked_field_is_still_an_error() {
    let p = profile(json!({ "fields": ["pw"] }));
    assert!(matches!(p.mask_json(br#"{"pw":{"a":}}"#), Err(MaskError::InvalidJson(_))));
}

#[test]
fn syntax_error_reports_the_byte_offset() {
    match all().mask_json(br#"{"a":1,,}"#) {
        Err(MaskError::InvalidJson(e)) => assert_eq!(e.offset, 7),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_is_an_error() {
    assert_eq!(all().mask_json(b"{\"a\":\"\xff\xfe\"}"), Err(MaskError::InvalidUtf8));
}

// ---- text masking ----

#[test]
fn text_masking_replaces_matches_in_place() {
    let p = all();
    let (out, counts) =
        p.mask_text("Dear Bob, card 4111-1111-1111-1111 and token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln end");
    assert_eq!(out, "Dear Bob, card [REDACTED:credit_card] and token [REDACTED:jwt] end");
    assert_eq!(counts.total(), 2);
}

#[test]
fn text_without_matches_is_borrowed() {
    let (out, counts) =
        all().mask_text("nothing to see: order 4155550134, sha 4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    assert!(matches!(out, Cow::Borrowed(_)));
    assert_eq!(counts.total(), 0);
    assert_eq!(counts.iter().count(), 0);
}

#[test]
fn text_values_written_with_escapes_are_masked_whole() {
    let p = all();
    let cases = [
        ("mail carol\\u0040example.com now", "email"),
        ("mail carol\\x40example.com now", "email"),
        ("mail carol&#64;example.com now", "email"),
        ("mail carol&#x40;example&#46;com now", "email"),
        ("mail carol&commat;example&period;com now", "email"),
        ("link mailto:carol%40example.com now", "email"),
        ("card &#52;111 1111 1111 1111 now", "credit_card"),
        ("ssn 123\\u002d45\\u002d6789 now", "us_ssn"),
        ("call (415)&#32;555-0134 now", "phone"),
    ];
    for (text, kind) in cases {
        let (out, counts) = p.mask_text(text);
        assert_eq!(count_of(&p, &counts, kind), 1, "{text} -> {out}");
        assert_eq!(counts.total(), 1, "{text} -> {out}");
        assert!(out.ends_with(" now") && out.contains(&format!("[REDACTED:{kind}] now")), "{text} -> {out}");
        assert!(!out.contains("carol") && !out.contains("1111") && !out.contains("6789"), "{text} -> {out}");
    }
}

#[test]
fn a_value_seen_both_raw_and_decoded_is_masked_and_counted_once() {
    let p = all();
    let (out, counts) = p.mask_text("alice@example.com, bob\\u0040example.com and alice@example.com%2C");
    assert_eq!(out, "[REDACTED:email], [REDACTED:email] and [REDACTED:email]%2C");
    assert_eq!(counts.total(), 3);
}

#[test]
fn text_with_undecodable_sequences_is_left_as_it_is() {
    let text = "a=1&b=2, 100% sure, \\d+ and &#xZZ; or &unknown; %4";
    let (out, counts) = all().mask_text(text);
    assert!(matches!(out, Cow::Borrowed(_)));
    assert_eq!(counts.total(), 0);
}

#[test]
fn json_strings_carrying_escaped_text_are_masked() {
    // An MCP tool result: JSON text inside a JSON string, as a model reads it.
    let p = all();
    let body = concat!(
        r#"{"content":[{"type":"text","text":"{\"email\":\"carol\\u0040example.com\"}"}],"#,
        r#""link":"https://x.example/?to=dave%40example.org&a=1","html":"<b>erin&#64;example.net</b>"}"#
    );
    let (out, counts) = mask(&p, body);
    assert_eq!(count_of(&p, &counts, "email"), 3, "{out}");
    for leaked in ["carol", "dave", "erin"] {
        assert!(!out.contains(leaked), "{leaked}: {out}");
    }
    assert!(out.contains("https://x.example/?to=[REDACTED:email]&a=1"), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["content"][0]["text"], "{\"email\":\"[REDACTED:email]\"}");
}

#[test]
fn masking_escaped_values_twice_changes_nothing_more() {
    let p = all();
    let text = "x carol&#64;example.com, &#52;111 1111 1111 1111 and dave%40example.org.";
    let (once, _) = p.mask_text(text);
    let (twice, counts) = p.mask_text(&once);
    assert_eq!(once, twice);
    assert_eq!(counts.total(), 0);
    let body = r#"{"a":"carol\\u0040example.com","b":"x%40example.org"}"#;
    let (once, _) = mask(&p, body);
    let (twice, counts) = mask(&p, &once);
    assert_eq!((once, counts.total()), (twice, 0));
}

#[test]
fn custom_regex_with_empty_lookaround_matches_does_not_loop() {
    let p = profile(json!({ "custom": [{ "name": "word", "regex": "\\bsecret\\b|\\b" }] }));
    let (out, counts) = p.mask_text("a secret b");
    assert_eq!(out, "a [REDACTED:word] b");
    assert_eq!(counts.total(), 1);
}

#[test]
fn custom_regex_finds_matches_hidden_by_escapes_and_anchored_to_whole_strings() {
    let p = profile(json!({ "custom": [
        { "name": "emp", "regex": "EMP-[0-9]{6}" },
        { "name": "whole", "regex": "^X-[0-9]{3}$" },
    ] }));
    // The raw body never contains `EMP-…`: only the decoded string does.
    let (out, counts) = mask(&p, r#"{"a":"\u0045MP-123456","b":"X-123","c":"not X-123"}"#);
    assert_eq!(out, r#"{"a":"[REDACTED:emp]","b":"[REDACTED:whole]","c":"not X-123"}"#);
    assert_eq!(counts.total(), 2);
}

/// Deterministic mutation fuzzing against serde_json as the reference parser: whatever
/// serde_json accepts must mask to valid JSON, whatever the masker accepts must be
/// valid JSON, and nothing panics.
#[test]
fn mutated_bodies_never_panic_and_agree_with_serde_json_on_validity() {
    let p = profile(json!({ "detectors": ["all"], "fields": ["pw"], "pointers": ["/a/*/b"],
        "custom": [{ "name": "emp", "regex": "EMP-[0-9]{3}" }] }));
    let seeds = [
        r#"{"a":[{"b":"x@example.com","c":4111111111111111}],"pw":{"k":[1,2]},"t":"EMP-123 \u0041 \ud83d\ude00"}"#,
        r#"[1,-2.5e3,true,false,null,"123-45-6789",{"(415) 555-0134":"DE89370400440532013000"}]"#,
        concat!(
            r#"{"k":"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----","#,
            r#""j":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}"#
        ),
    ];
    let alphabet = b"{}[]:,\"\\/ u0123456789abcdefABCDEF-+.eE@tnrl\x01\x7f";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    for round in 0..20_000 {
        let mut body = seeds[round % seeds.len()].as_bytes().to_vec();
        for _ in 0..1 + next(4) {
            let at = next(body.len() + 1);
            let c = alphabet[next(alphabet.len())];
            match next(3) {
                0 if at < body.len() => body[at] = c,
                1 if at < body.len() => {
                    body.remove(at);
                }
                _ => body.insert(at, c),
            }
        }
        let reference = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        match p.mask_json(&body) {
            Ok((out, _)) => {
                assert!(reference, "accepted what serde_json rejects: {}", String::from_utf8_lossy(&body));
                assert!(
                    serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok(),
                    "invalid output {} for {}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&body)
                );
            }
            Err(MaskError::TooDeep) => panic!("shallow input reported too deep"),
            Err(_) => assert!(!reference, "rejected valid JSON: {}", String::from_utf8_lossy(&body)),
        }
    }
}

// ---- boundaries (issue 14) ----

/// `SELECT email || '<suffix>'` shapes: the value, then a dash, an ellipsis, a guillemet or
/// an invisible character, raw or JSON-escaped.
const EMAIL_NEIGHBOURS: [&str; 9] = ["—", "-", "–", "…", "»", "\u{200b}", "\\u2014", "\\u200b", "--x"];

#[test]
fn an_email_followed_by_a_dash_ellipsis_guillemet_or_zero_width_space_is_masked_in_json() {
    let p = all();
    for after in EMAIL_NEIGHBOURS {
        let (out, _) = mask(&p, &format!(r#"{{"rows":[["alice@example.co.uk{after}"]]}}"#));
        assert!(!out.contains("alice") && !out.contains("example"), "{after:?}: {out}");
        assert!(out.contains("[REDACTED:email]"), "{after:?}: {out}");
    }
}

#[test]
fn an_email_followed_by_a_dash_ellipsis_guillemet_or_zero_width_space_is_masked_in_text() {
    let p = all();
    for after in EMAIL_NEIGHBOURS {
        let text = format!("write to alice@example.co.uk{after} today");
        let (out, _) = p.mask_text(&text);
        assert_eq!(out.matches("[REDACTED:email]").count(), 1, "{after:?}: {out}");
        assert!(!out.contains("alice") && !out.contains("example"), "{after:?}: {out}");
    }
}

#[test]
fn invisible_characters_inside_a_value_do_not_hide_it_and_the_whole_span_is_masked() {
    let p = all();
    for (raw, kind) in [
        ("ali\u{200b}ce@exam\u{ad}ple.com", "email"),
        ("4111\u{200b}1111\u{200d}1111\u{2060}1111", "credit_card"),
        ("123-45\u{feff}-6789", "us_ssn"),
        ("415\u{200c}-555-0132", "phone"),
    ] {
        let text = format!("x {raw} y");
        let (out, _) = p.mask_text(&text);
        assert_eq!(out, format!("x [REDACTED:{kind}] y"), "{raw:?}");
        let (json_out, counts) = mask(&p, &format!(r#"{{"v":"{raw}"}}"#));
        assert_eq!(json_out, format!(r#"{{"v":"[REDACTED:{kind}]"}}"#), "{raw:?}");
        assert_eq!(count_of(&p, &counts, kind), 1);
    }
    let (out, _) = mask(&p, r#"{"v":"4111\u200b1111\u00ad1111&#x200b;1111"}"#);
    assert_eq!(out, r#"{"v":"[REDACTED:credit_card]"}"#);
}

#[test]
fn spaced_phones_dotted_cards_and_letter_glued_cards_are_masked() {
    let p = all();
    let (out, _) =
        p.mask_text("415 555 0132; +44 20 7946 0958; 4111.1111.1111.1111; 4111_1111_1111_1111; CC4111111111111111");
    assert_eq!(
        out,
        "[REDACTED:phone]; [REDACTED:phone]; [REDACTED:credit_card]; [REDACTED:credit_card]; CC[REDACTED:credit_card]"
    );
}

#[test]
fn masking_the_masked_output_of_every_new_shape_changes_nothing() {
    let p = all();
    let text = "a alice@example.co.uk--x b—bob@example.org— c ali\u{200b}ce@example.com d 415 555 0132 \
                e CC4111111111111111x f 4111_1111_1111_1111 g ssn123-45-6789 h zoë@bücher.de。";
    let (once, _) = p.mask_text(text);
    let (twice, counts) = p.mask_text(&once);
    assert_eq!(once, twice);
    assert_eq!(counts.total(), 0);
    let body = serde_json::to_string(&json!({ "t": text })).unwrap();
    let (once, _) = mask(&p, &body);
    let (twice, _) = mask(&p, &once);
    assert_eq!(once, twice);
}

// ---- shapes found by the property tests (filter/tests/mask_props.rs) ----

#[test]
fn values_followed_by_an_at_sign_are_masked_and_a_following_domain_goes_with_them() {
    let p = all();
    let cases = [
        ("4000000000006@", "[REDACTED:credit_card]@"),
        ("123-45-6789@ x", "[REDACTED:us_ssn]@ x"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc@", "[REDACTED:api_key]@"),
        ("415-555-0134@example.com", "[REDACTED:email]"),
        ("дом@a.aa@b.bb", "[REDACTED:email]"),
        ("-@eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl!", "-@[REDACTED:jwt]!"),
        // Segments of letters only read as labels and a TLD: the address runs on to the token's end.
        ("-@eyJAAAAAAAAAAAA.eyJBBBBBBBBBBBB.CCCCCCCCCCCC0CCC!", "[REDACTED:email]!"),
    ];
    for (text, masked) in cases {
        assert_eq!(p.mask_text(text).0, masked, "{text:?}");
    }
}

#[test]
fn keys_after_a_dash_underscore_or_dot_and_google_keys_followed_by_one_are_masked() {
    let p = all();
    let ghp = "ghp_a1B2c3D4e5a1B2c3D4e5a1B2c3D4e5a1B2c3";
    let google = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";
    for text in [format!("-{ghp}"), format!("_{ghp}"), format!(".{ghp}"), format!("{google}_"), format!("{google}-x")] {
        let (out, _) = p.mask_text(&text);
        assert!(!out.contains("a1B2c3") && !out.contains("SyD"), "{text:?}: {out}");
        assert!(out.contains("[REDACTED:api_key]"), "{text:?}: {out}");
    }
}

#[test]
fn an_international_phone_after_a_plus_and_an_address_with_non_ascii_labels_are_masked() {
    let p = all();
    assert_eq!(p.mask_text("++44 20 7946 0958").0, "+[REDACTED:phone]");
    assert_eq!(p.mask_text("почта@пример.рф.com").0, "[REDACTED:email]");
    assert_eq!(p.mask_text("alice@пример.рф.com!").0, "[REDACTED:email]!");
}

#[test]
fn an_escape_lead_next_to_a_value_with_an_invisible_character_inside_does_not_hide_it() {
    let p = all();
    // `%0a` reads as a line feed in the decoded view, which then loses the local part.
    assert_eq!(p.mask_text("%0a\u{200b}@a.aa").0, "[REDACTED:email]", "`%` is a local-part character");
}

#[test]
fn a_value_written_with_escapes_of_two_syntaxes_is_found_by_the_reader_of_each() {
    let p = all();
    // The all-syntaxes view reads `%40` as `@`; a JSON reader reads `%4000000000006`.
    assert_eq!(p.mask_text("%40\\u00300000000006").0, "%[REDACTED:credit_card]");
    // And a private key with an escape in its label is found by the view, not run to the end.
    let key = "-----BEGIN RSA PRIV&#65;TE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
    assert_eq!(p.mask_text(&format!("{key} after")).0, "[REDACTED:private_key] after");
}

#[test]
fn a_private_key_with_an_invisible_character_in_its_end_line_ends_there() {
    let p = all();
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-\u{200b}----END RSA PRIVATE KEY-----";
    let clean = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
    let text = format!("{key}, after, {clean} end");
    assert_eq!(
        p.mask_text(&text).0,
        "[REDACTED:private_key], after, [REDACTED:private_key] end",
        "neither the text between the keys nor after the second is taken"
    );
    let truncated = "-----BEGIN RSA PRIVATE KEY-----\nMII\u{200b}EpAIBAAKCAQEA\nrest";
    assert_eq!(p.mask_text(truncated).0, "[REDACTED:private_key]", "a truncated key is still masked to the end");
}
