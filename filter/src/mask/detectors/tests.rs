//! Each detector on its own: what it finds, and the look-alikes it leaves alone.

use super::*;

fn all() -> Detectors {
    Detectors::new(&Builtin::ALL)
}

/// Every detection in `s`, as (kind name, matched text).
fn hits(s: &str) -> Vec<(&'static str, String)> {
    let d = all();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(h) = d.find(s, from) {
        out.push((h.kind.name(), s[h.start..h.end].to_string()));
        from = h.end;
    }
    out
}

fn only(s: &str) -> (&'static str, String) {
    let h = hits(s);
    assert_eq!(h.len(), 1, "expected exactly one detection in {s:?}, got {h:?}");
    h.into_iter().next().unwrap()
}

#[test]
fn detects_plain_and_tagged_emails() {
    assert_eq!(only("mail alice@example.com now"), ("email", "alice@example.com".into()));
    assert_eq!(only("<bob.smith+tag@mail.example.co.uk>."), ("email", "bob.smith+tag@mail.example.co.uk".into()));
    assert_eq!(only("x:j_doe-1@sub-domain.example.org"), ("email", "j_doe-1@sub-domain.example.org".into()));
    assert_eq!(only("an zoë@bücher.de"), ("email", "zoë@bücher.de".into()));
}

#[test]
fn rejects_email_lookalikes() {
    assert!(hits("@handle and user@localhost and a@b.c and me@host.123").is_empty());
    assert!(hits("npm i @scope/pkg@1.2.3").is_empty());
    let long_local = format!("{}@example.com", "a".repeat(65));
    assert!(hits(&long_local).is_empty(), "local parts over 64 characters are not emails");
}

#[test]
fn detects_luhn_valid_cards_in_common_layouts() {
    for card in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "378282246310005",
        "3782 822463 10005",
        "6011000990139424",
    ] {
        assert_eq!(only(&format!("card: {card}.")), ("credit_card", card.to_string()));
    }
}

#[test]
fn detects_fourteen_digit_diners_card_written_with_a_short_last_group() {
    assert_eq!(only("card 3852 0000 0232 37."), ("credit_card", "3852 0000 0232 37".into()));
    assert_eq!(only("card 3852-0000-0232-37"), ("credit_card", "3852-0000-0232-37".into()));
    assert!(hits("3852 0000 0232 38").is_empty(), "Luhn still applies");
    assert!(hits("4111 1111 12").is_empty(), "too few digits");
}

#[test]
fn card_followed_by_expiry_group_is_cut_at_the_group_boundary() {
    assert_eq!(only("4111 1111 1111 1111 2029"), ("credit_card", "4111 1111 1111 1111".into()));
}

#[test]
fn sixteen_digits_failing_luhn_are_not_a_card() {
    assert!(hits("4111111111111112").is_empty());
    assert!(hits("4111 1111 1111 1112").is_empty());
}

#[test]
fn long_digit_runs_and_timestamps_are_not_cards() {
    // 20 digits (too long), a 13-digit millisecond timestamp, mixed separators.
    assert!(hits("41111111111111111111").is_empty());
    assert!(hits("ts 1718000000000").is_empty());
    assert!(hits("4111-1111 1111-1111").is_empty());
    assert!(hits("x41111111111111111111").is_empty(), "too long after a letter too");
}

#[test]
fn detects_ssn_with_dashes_or_spaces() {
    assert_eq!(only("SSN: 123-45-6789"), ("us_ssn", "123-45-6789".into()));
    assert_eq!(only("ssn 123 45 6789,"), ("us_ssn", "123 45 6789".into()));
}

#[test]
fn ssn_with_never_issued_parts_is_not_masked() {
    for bad in ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"] {
        assert!(hits(bad).is_empty(), "{bad} must not be an SSN");
    }
}

#[test]
fn bare_nine_digits_and_longer_dashed_runs_are_not_ssns() {
    assert!(hits("123456789").is_empty());
    assert!(hits("123-45-6789-1").is_empty());
    assert!(hits("1-123-45-6789").is_empty());
    assert!(hits("123-45-67891").is_empty());
}

#[test]
fn detects_nanp_and_e164_phones() {
    for phone in [
        "(415) 555-0134",
        "415-555-0134",
        "415.555.0134",
        "1-415-555-0134",
        "(415)555-0134",
        "+1 415 555 0134",
        "+14155550134",
        "+44 20 7946 0958",
        "+1 (415) 555-0134",
        "+44 (0)20 7946 0958",
    ] {
        assert_eq!(only(&format!("call {phone} today")), ("phone", phone.to_string()));
    }
}

#[test]
fn order_ids_and_digit_runs_are_not_phones() {
    assert!(hits("order 4155550134 shipped").is_empty());
    assert!(hits("order #41555501341234").is_empty());
    assert!(hits("+123").is_empty(), "too short for E.164");
    assert!(hits("+1234567890123456").is_empty(), "too long for E.164");
    assert!(hits("911-555-0134").is_empty(), "N11 area code");
    assert!(hits("415-155-0134").is_empty(), "exchange must start 2-9");
    assert!(hits("2+14155550134").is_empty(), "arithmetic, not a phone");
}

#[test]
fn e164_numbers_in_a_row_are_masked_whole() {
    assert_eq!(only("+1 415 555 0134 415 555 0135."), ("phone", "+1 415 555 0134 415 555 0135".into()));
}

#[test]
fn detects_valid_ibans_compact_and_grouped() {
    assert_eq!(only("IBAN DE89370400440532013000."), ("iban", "DE89370400440532013000".into()));
    assert_eq!(only("to GB82 WEST 1234 5698 7654 32 please"), ("iban", "GB82 WEST 1234 5698 7654 32".into()));
}

#[test]
fn iban_with_wrong_checksum_is_not_masked() {
    assert!(hits("DE88370400440532013000").is_empty());
    assert!(hits("GB82 WEST 1234 5698 7654 33").is_empty());
}

#[test]
fn detects_jwts_including_unsecured_ones() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    assert_eq!(only(&format!("Bearer {jwt}")), ("jwt", jwt.to_string()));
    let unsecured = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.";
    assert_eq!(only(unsecured), ("jwt", unsecured.to_string()));
}

#[test]
fn base64_json_without_dots_is_not_a_jwt() {
    assert!(hits("eyJhbGciOiJIUzI1NiJ9").is_empty());
    assert!(hits("xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig").is_empty());
}

#[test]
fn detects_each_api_key_family() {
    let keys = [
        "AKIAIOSFODNN7EXAMPLE".to_string(),
        "ASIAY34FZKBOKMUTVV7A".to_string(),
        format!("ghp_{}", "a1B2c3D4e5".repeat(4).get(..36).unwrap()),
        format!("github_pat_11ABCDEFG0{}", "x_Y9".repeat(10)),
        "xoxb-123456789012-abcdefABCDEF".to_string(),
        format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc"),
        format!("rk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc"),
        format!("AIza{}", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
        format!("sk-{}", "proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
    ];
    for key in keys {
        assert_eq!(only(&format!("key={key} end")), ("api_key", key.clone()));
    }
}

#[test]
fn uuids_git_shas_and_slugs_are_not_api_keys() {
    assert!(hits("123e4567-e89b-12d3-a456-426614174000").is_empty());
    assert!(hits("commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904").is_empty());
    assert!(hits("e83c5163316f89bfbde7d9ab23ca2e25604af290").is_empty());
    assert!(hits("see sk-learn-preprocessing-standard-scaler-docs").is_empty());
    assert!(hits("AKIAIOSFODNN7EXAMPL").is_empty(), "one character short");
    assert!(hits("sk_test_4eC39HqLyjWDarjtT1zdp7dc").is_empty(), "test keys are not live secrets");
}

#[test]
fn detects_multiline_private_keys_of_every_label() {
    for label in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "PRIVATE KEY"] {
        let pem = format!("-----BEGIN {label}-----\nMIIEpAIBAAKCAQEA\nabc123==\n-----END {label}-----");
        assert_eq!(only(&format!("key:\n{pem}\ntrailing")), ("private_key", pem.clone()));
    }
}

#[test]
fn truncated_private_key_is_masked_to_the_end() {
    let s = "x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
    let (kind, text) = only(s);
    assert_eq!(kind, "private_key");
    assert!(text.starts_with("-----BEGIN") && s.ends_with(&text));
}

#[test]
fn certificates_and_public_keys_are_not_private_keys() {
    assert!(hits("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_empty());
    assert!(hits("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----").is_empty());
}

#[test]
fn only_enabled_detectors_fire() {
    let d = Detectors::new(&[Builtin::Email]);
    assert_eq!(d.find("4111111111111111 alice@example.com", 0).map(|h| h.kind), Some(Builtin::Email));
    assert_eq!(Detectors::new(&[]).find("alice@example.com", 0), None);
}

#[test]
fn integers_are_classified_as_whole_values() {
    let d = all();
    assert_eq!(d.classify_integer(b"4111111111111111"), Some(Builtin::CreditCard));
    assert_eq!(d.classify_integer(b"4111111111111112"), None);
    assert_eq!(d.classify_integer(b"123456789"), Some(Builtin::UsSsn));
    assert_eq!(d.classify_integer(b"666456789"), None);
    assert_eq!(d.classify_integer(b"4155550134"), Some(Builtin::Phone));
    assert_eq!(d.classify_integer(b"14155550134"), Some(Builtin::Phone));
    assert_eq!(d.classify_integer(b"1718000000"), None, "unix timestamps start with 1");
    assert_eq!(d.classify_integer(b"42"), None);
}

#[test]
fn hostile_repetitions_do_not_match_and_stay_fast() {
    let parts = ["@a.", "a@", "sk-", "1-", "eyJ.", "+1 ", "ghp_", "-----BEGIN ", "(1"];
    for p in parts {
        let junk = format!(" {}", p.repeat(20_000));
        assert!(hits(&junk).is_empty(), "{p}");
    }
}

#[test]
fn an_email_is_found_whatever_punctuation_follows_it() {
    for after in ["—", "-", "–", "…", "»", "\u{200b}", "\u{feff}", "\u{ad}", "’", "→", "。", "😀", "_", "--x"]
    {
        let s = format!("mail alice@example.com{after} next");
        assert_eq!(only(&s), ("email", "alice@example.com".into()), "followed by {after:?}");
    }
}

#[test]
fn an_email_is_found_whatever_punctuation_precedes_it() {
    for before in ["—", "«", "\u{200b}", "…", "“", "–"] {
        let s = format!("mail {before}alice@example.com");
        assert_eq!(only(&s), ("email", "alice@example.com".into()), "preceded by {before:?}");
    }
}

#[test]
fn a_multi_label_domain_followed_by_double_hyphen_is_masked_through_its_top_level_domain() {
    assert_eq!(only("alice@example.co.uk--x"), ("email", "alice@example.co.uk".into()));
    assert_eq!(only("alice@mail.my-company.com-ok"), ("email", "alice@mail.my-company.com".into()));
}

#[test]
fn emails_next_to_each_other_across_an_em_dash_are_both_found() {
    let h = hits("alice@example.com—bob@example.org");
    assert_eq!(h, vec![("email", "alice@example.com".into()), ("email", "bob@example.org".into())]);
}

#[test]
fn an_email_in_another_script_ends_at_that_scripts_punctuation() {
    assert_eq!(only("почта: zoë@bücher.de。次"), ("email", "zoë@bücher.de".into()));
}

#[test]
fn phones_written_with_spaces_are_phones() {
    assert_eq!(only("call 415 555 0132 now"), ("phone", "415 555 0132".into()));
    assert_eq!(only("call 1 415 555 0132."), ("phone", "1 415 555 0132".into()));
    assert_eq!(only("call +44 20 7946 0958 now"), ("phone", "+44 20 7946 0958".into()));
}

#[test]
fn numbers_are_found_whatever_unicode_punctuation_surrounds_them() {
    for (v, kind) in [("4111111111111111", "credit_card"), ("123-45-6789", "us_ssn"), ("415-555-0132", "phone")] {
        for (a, b) in [("—", "—"), ("«", "»"), ("\u{200b}", "\u{200b}"), ("…", "…"), ("¿", "¡")] {
            assert_eq!(only(&format!("x {a}{v}{b} y")), (kind, v.to_string()), "{a}{v}{b}");
        }
    }
}

#[test]
fn cards_grouped_with_dots_or_underscores_are_cards() {
    assert_eq!(only("card 4111.1111.1111.1111."), ("credit_card", "4111.1111.1111.1111".into()));
    assert_eq!(only("card 4111_1111_1111_1111 ok"), ("credit_card", "4111_1111_1111_1111".into()));
    assert!(hits("card 4111.1111_1111-1111").is_empty(), "one separator kind per number");
}

#[test]
fn card_and_ssn_digits_glued_to_letters_are_found() {
    assert_eq!(only("CC4111111111111111"), ("credit_card", "4111111111111111".into()));
    assert_eq!(only("x4111111111111111end"), ("credit_card", "4111111111111111".into()));
    assert_eq!(only("cardno4111-1111-1111-1111"), ("credit_card", "4111-1111-1111-1111".into()));
    assert_eq!(only("ssn123-45-6789x"), ("us_ssn", "123-45-6789".into()));
}

#[test]
fn digits_glued_to_more_digits_are_still_part_of_a_longer_number() {
    assert!(hits("94111111111111111 and 41111111111111119x").is_empty());
    assert!(hits("CC0123-45-67890").is_empty());
}

#[test]
fn phones_and_keys_glued_to_letters_are_left_alone() {
    assert!(hits("ref415-555-0132 and id4155550132 and xAKIAIOSFODNN7EXAMPLE").is_empty());
}

#[test]
fn a_letter_prefixed_id_that_passes_luhn_without_an_issuer_prefix_is_not_a_card() {
    assert!(hits("INV2024010112345605").is_empty(), "20… is no network's prefix");
    assert_eq!(only("ref 2024010112345605"), ("credit_card", "2024010112345605".into()), "unglued: Luhn decides");
    assert_eq!(only("AMEX378282246310005"), ("credit_card", "378282246310005".into()));
}
