//! Event framing as the WHATWG standard defines it.

use super::*;

/// The data of every event, joined as a client joins plain text.
fn joined(stream: &str) -> String {
    client_events(stream).iter().map(|e| e.data.as_str()).collect()
}

fn mask_all(stream: &[u8]) -> String {
    concat(&run(StreamKind::Sse, &all(), &[stream]).unwrap())
}

#[test]
fn crlf_cr_and_lf_line_ends_are_all_understood() {
    for stream in [
        "data: {\"a\":\"alice@example.com\"}\r\n\r\ndata: x\r\n\r\n",
        "data: {\"a\":\"alice@example.com\"}\r\rdata: x\r\r",
        "data: {\"a\":\"alice@example.com\"}\n\ndata: x\n\n",
        "data: {\"a\":\"alice@example.com\"}\r\n\rdata: x\n\r\n",
    ] {
        let out = mask_all(stream.as_bytes());
        let events = client_events(&out);
        assert_eq!(events.len(), 2, "{stream:?} → {out:?}");
        assert_eq!(events[0].data, "{\"a\":\"[REDACTED:email]\"}");
        assert_eq!(events[1].data, "x");
    }
}

#[test]
fn output_does_not_depend_on_where_chunks_are_cut() {
    let stream = "\u{feff}: hello bob@example.com\r\nretry: 3000\r\nid: 7\r\nevent: update\r\ndata: first \
        line\r\ndata: second alice@example.com line\r\n\r\n\
        data:{\"x\":\"4111 1111 1111 1111\"}\r\rfoo: bar\ndata\ndata\n\nid: only-id\n\n:\n\ndata: [DONE]\r\n\r\n";
    let p = all();
    let whole = concat(&run(StreamKind::Sse, &p, &[stream.as_bytes()]).unwrap());
    let bytes = stream.as_bytes();
    for cut in 1..bytes.len() {
        assert_eq!(concat(&run(StreamKind::Sse, &p, &split_at(bytes, &[cut])).unwrap()), whole, "cut at {cut}");
    }
    let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(concat(&run(StreamKind::Sse, &p, &one_by_one).unwrap()), whole);
    // And what the client gets:
    // (Plain text is one text across events: the held-back `line` moves to the next
    // plain event, after the JSON one.)
    let events = client_events(&whole);
    let summary: Vec<(&str, &str, &str)> =
        events.iter().map(|e| (e.event.as_str(), e.data.as_str(), e.id.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("update", "first line\nsecond [REDACTED:email] ", "7"),
            ("message", "{\"x\":\"[REDACTED:credit_card]\"}", "7"),
            ("message", "line\n", "7"),
            ("message", "[DONE]", "only-id"),
        ]
    );
    assert!(whole.starts_with(": hello [REDACTED:email]\n"), "comments are masked and kept: {whole}");
    assert!(whole.contains("retry: 3000\n") && whole.contains("id: only-id\n\n"), "{whole}");
    assert!(!whole.contains("foo"), "unknown fields are dropped");
}

#[test]
fn a_cr_at_the_end_of_a_chunk_and_a_lf_at_the_start_of_the_next_are_one_line_end() {
    let p = all();
    let outs = run(StreamKind::Sse, &p, &[b"data: {\"a\":\r", b"\ndata: 1}\r", b"\n\r", b"\n"]).unwrap();
    assert_eq!(
        client_events(&concat(&outs)),
        vec![Event { event: "message".into(), data: "{\"a\":1}".into(), id: String::new() }]
    );
}

#[test]
fn an_event_the_stream_ends_in_is_discarded_like_clients_do() {
    let out = mask_all(b"data: {\"a\":1}\n\ndata: alice@example.com");
    assert_eq!(client_events(&out).len(), 1);
    assert!(!out.contains("alice") && !out.contains("REDACTED"), "{out}");
}

#[test]
fn bytes_that_are_not_utf8_become_replacement_characters() {
    let out = mask_all(b"data: caf\xe9 alice@example.com\n\n");
    assert_eq!(joined(&out), "caf\u{FFFD} [REDACTED:email]");
}

#[test]
fn a_value_across_data_lines_of_one_event_is_masked() {
    // The joined data of one event is one text: a key split over lines is masked whole.
    let out =
        mask_all(b"data: -----BEGIN PRIVATE KEY-----\ndata: MIIEvQIBADANBgkq\ndata: -----END PRIVATE KEY-----\n\n");
    assert_eq!(client_events(&out)[0].data, "[REDACTED:private_key]");
}

#[test]
fn private_key_split_over_events_is_held_until_its_end_line() {
    let p = all();
    let events = [
        "data: key:\n\n",
        "data: -----BEGIN PRIVATE KEY-----\ndata: MIIE\n\n",
        "data: abcd\ndata: -----END PRIV\n\n",
        "data: ATE KEY-----\ndata: done\n\n",
    ];
    let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let outs = run(StreamKind::Sse, &p, &chunks).unwrap();
    let texts: Vec<String> = outs
        .iter()
        .map(|o| client_events(&String::from_utf8(o.clone()).unwrap()).iter().map(|e| e.data.clone()).collect())
        .collect();
    assert_eq!(texts, ["key:", "", "", "[REDACTED:private_key]\n", "done"]);
}

#[test]
fn single_line_fields_are_masked_on_their_own() {
    let out =
        mask_all(b"id: alice@example.com\nevent: 123-45-6789\nretry: 4111111111111111\ndata: {}\n\nretry: 1500\n\n");
    assert!(!out.contains("alice@") && !out.contains("4111") && !out.contains("6789"), "{out}");
    let e = &client_events(&out)[0];
    assert_eq!((e.id.as_str(), e.event.as_str()), ("[REDACTED:email]", "[REDACTED:us_ssn]"));
    assert!(out.ends_with("retry: 1500\n\n"), "{out}");
}
