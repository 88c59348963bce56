//! Bounded memory, fail-closed errors, and incremental release.

use super::*;

fn limits(buffered: usize, held: usize, texts: usize) -> StreamLimits {
    StreamLimits { max_buffered_bytes: buffered, max_held_bytes: held, max_texts: texts }
}

#[test]
fn an_event_over_the_buffer_limit_fails_and_the_masker_stays_failed() {
    let p = all();
    let mut m = StreamMasker::new(StreamKind::Sse, limits(100, 1000, 8));
    let mut out = Vec::new();
    m.push(&p, b"data: fine\n\n", &mut out).unwrap();
    let before = out.clone();
    let big = format!("data: {}", "x".repeat(60));
    m.push(&p, big.as_bytes(), &mut out).unwrap();
    let err = m.push(&p, format!("\ndata: {}\n", "y".repeat(60)).as_bytes(), &mut out).unwrap_err();
    assert_eq!(err, StreamError::EventTooLarge { limit: 100 });
    assert_eq!(err.code(), crate::reply::Code::ResponseTooLarge);
    assert_eq!(out, before, "a failing push appends nothing");
    assert_eq!(m.push(&p, b"\n", &mut out), Err(err));
    assert_eq!(m.finish(&p, &mut out), Err(err));
    assert_eq!(out, before);
}

#[test]
fn a_single_line_longer_than_the_limit_fails_even_in_one_chunk() {
    let p = all();
    let line = format!("data: {}\n\n", "z".repeat(200));
    assert_eq!(
        run_with(StreamKind::Sse, limits(100, 1000, 8), &p, &[line.as_bytes()]).unwrap_err(),
        StreamError::EventTooLarge { limit: 100 }
    );
    let ndjson = format!("{{\"a\":\"{}\"}}", "z".repeat(200));
    assert_eq!(
        run_with(StreamKind::Ndjson, limits(100, 1000, 8), &p, &[ndjson.as_bytes()]).unwrap_err(),
        StreamError::EventTooLarge { limit: 100 }
    );
}

/// Found by `tests/parser_props.rs`: a long line that ended inside its chunk was never
/// measured, so the same stream passed or failed depending on where it was cut.
#[test]
fn a_long_line_that_ends_inside_its_chunk_fails_as_it_does_when_cut() {
    let p = all();
    let sse = format!("data: {}\n\ndata: ok\n\n", "z".repeat(200));
    let ndjson = format!("{{\"a\":\"{}\"}}\n{{\"b\":1}}\n", "z".repeat(200));
    for (kind, body) in [(StreamKind::Sse, sse), (StreamKind::Ndjson, ndjson)] {
        let whole = run_with(kind, limits(100, 1000, 8), &p, &[body.as_bytes()]);
        let (a, b) = body.as_bytes().split_at(50);
        let cut = run_with(kind, limits(100, 1000, 8), &p, &[a, b]);
        assert_eq!(whole.unwrap_err(), StreamError::EventTooLarge { limit: 100 }, "{kind:?}");
        assert_eq!(cut.unwrap_err(), StreamError::EventTooLarge { limit: 100 }, "{kind:?}");
    }
}

#[test]
fn text_that_cannot_be_released_fails_past_the_held_limit() {
    let p = all();
    // One endless token: it could be an API key, so none of it can go out.
    let chunks: Vec<String> = (0..50).map(|_| chat_chunk(0, "sk-Ab3dEf6hIj9kLm2nOp5q")).collect();
    let chunks: Vec<&[u8]> = chunks.iter().map(|c| c.as_bytes()).collect();
    let err = run_with(StreamKind::Sse, limits(1 << 20, 512, 8), &p, &chunks).unwrap_err();
    assert_eq!(err, StreamError::HeldTooLarge { limit: 512 });
    let text = "4".repeat(600);
    let err = run_with(StreamKind::Text, limits(1 << 20, 512, 8), &p, &[text.as_bytes()]).unwrap_err();
    assert_eq!(err, StreamError::HeldTooLarge { limit: 512 });
}

#[test]
fn too_many_interleaved_texts_fail() {
    let p = all();
    let chunks: Vec<String> = (0..10).map(|i| chat_chunk(i, "word")).collect();
    let chunks: Vec<&[u8]> = chunks.iter().map(|c| c.as_bytes()).collect();
    assert_eq!(
        run_with(StreamKind::Sse, limits(1 << 20, 1 << 16, 8), &p, &chunks).unwrap_err(),
        StreamError::TooManyTexts { limit: 8 }
    );
    // Texts that end free their place.
    let mut seq = String::new();
    for i in 0..20 {
        seq += &chat_chunk(i, "word");
        seq += &chat_stop(i);
    }
    let chunks: Vec<&[u8]> = seq.split_inclusive("\n\n").map(str::as_bytes).collect();
    assert!(run_with(StreamKind::Sse, limits(1 << 20, 1 << 16, 8), &p, &chunks).is_ok());
}

#[test]
fn ndjson_lines_that_are_not_json_or_not_utf8_fail_closed() {
    let p = all();
    assert_eq!(
        run(StreamKind::Ndjson, &p, &[b"{\"a\":1}\n{\"b\":\"alice\\u0040example.com\"\n"]).unwrap_err(),
        StreamError::InvalidJson
    );
    assert_eq!(run(StreamKind::Ndjson, &p, &[b"plain alice@example.com\n"]).unwrap_err(), StreamError::InvalidJson);
    assert_eq!(
        run(StreamKind::Ndjson, &p, &[b"{\"a\":\"\xff\"}\n"]).unwrap_err(),
        StreamError::NotMaskable(crate::mask::MaskError::InvalidUtf8)
    );
    let deep = format!("{}{}\n", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        run(StreamKind::Ndjson, &p, &[deep.as_bytes()]).unwrap_err(),
        StreamError::NotMaskable(crate::mask::MaskError::TooDeep)
    );
}

#[test]
fn text_bodies_put_split_characters_together_and_refuse_invalid_utf8() {
    let p = all();
    let text = "zoë@bücher.de und ünd";
    for cut in 1..text.len() {
        let out = concat(&run(StreamKind::Text, &p, &split_at(text.as_bytes(), &[cut])).unwrap());
        assert_eq!(out, "[REDACTED:email] und ünd");
    }
    let invalid = StreamError::NotMaskable(crate::mask::MaskError::InvalidUtf8);
    assert_eq!(run(StreamKind::Text, &p, &[b"ab\xffcd"]).unwrap_err(), invalid);
    assert_eq!(run(StreamKind::Text, &p, &[b"ab\xc3"]).unwrap_err(), invalid, "cut short at the end");
}

#[test]
fn calls_after_finish_are_refused() {
    let p = all();
    let mut m = StreamMasker::new(StreamKind::Text, StreamLimits::default());
    let mut out = Vec::new();
    m.push(&p, b"a b", &mut out).unwrap();
    m.finish(&p, &mut out).unwrap();
    assert_eq!(m.push(&p, b"c", &mut out), Err(StreamError::Finished));
    assert_eq!(out, b"a b");
}

#[test]
fn a_delta_without_a_pii_capable_tail_is_released_in_the_same_push() {
    let p = all();
    let mut m = StreamMasker::new(StreamKind::Sse, StreamLimits::default());
    for (delta, now) in [
        ("Hello world, ", "Hello world, "),
        ("how are you?\n", "how are you?\n"),
        ("Mail me at ", "Mail me at "),
        ("alice", ""),
        ("@example.com. Or call", "[REDACTED:email]. Or "),
        (" (415) 555-0134 ", "call "),
        ("now.", "[REDACTED:phone] "),
    ] {
        let mut out = Vec::new();
        m.push(&p, chat_chunk(0, delta).as_bytes(), &mut out).unwrap();
        let got = chat_content(&String::from_utf8(out).unwrap());
        assert_eq!(got, now, "after {delta:?}");
        assert_eq!(m.buffered_bytes(), 0);
    }
    assert_eq!(m.held_bytes(), 4);
    let mut out = Vec::new();
    m.finish(&p, &mut out).unwrap();
    assert_eq!(chat_content(&String::from_utf8(out).unwrap()), "now.");
}

#[test]
fn a_long_stream_keeps_memory_flat() {
    let p = all();
    let mut m = StreamMasker::new(StreamKind::Sse, StreamLimits::default());
    let mut out = Vec::new();
    for i in 0..5000 {
        out.clear();
        let delta = if i % 7 == 0 { "user42@example.com " } else { "lorem ipsum " };
        m.push(&p, chat_chunk(0, delta).as_bytes(), &mut out).unwrap();
        assert!(m.held_bytes() <= 20 && m.buffered_bytes() == 0);
    }
    assert_eq!(m.take_counts().total(), 715);
}

#[test]
fn a_tail_growing_byte_by_byte_costs_linear_time() {
    // 40 000 one-byte deltas of one endless token: each push must look at the new bytes
    // only (a rescan of the whole tail each time would take minutes in a debug build).
    let p = all();
    let mut m = StreamMasker::new(StreamKind::Text, StreamLimits::default());
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..40_000 {
        m.push(&p, b"a", &mut out).unwrap();
    }
    assert!(out.is_empty());
    m.push(&p, b" ", &mut out).unwrap();
    assert_eq!(out.len(), 40_001);
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

#[test]
fn a_message_with_more_deltas_than_open_texts_allowed_fails_before_any_work() {
    let p = all();
    let choices: Vec<Value> = (0..100).map(|i| json!({"index": i, "delta": {"content": "x"}})).collect();
    let msg = format!("data: {}\n\n", json!({ "choices": choices }));
    assert_eq!(run(StreamKind::Sse, &p, &[msg.as_bytes()]).unwrap_err(), StreamError::TooManyTexts { limit: 64 });
}

#[test]
fn content_types_name_their_framing() {
    assert_eq!(StreamKind::from_content_type("text/event-stream"), Some(StreamKind::Sse));
    assert_eq!(StreamKind::from_content_type("Text/Event-Stream; charset=utf-8"), Some(StreamKind::Sse));
    assert_eq!(StreamKind::from_content_type("application/x-ndjson"), Some(StreamKind::Ndjson));
    assert_eq!(StreamKind::from_content_type("application/jsonl"), Some(StreamKind::Ndjson));
    assert_eq!(StreamKind::from_content_type("application/json"), None);
    assert_eq!(StreamKind::from_content_type("text/plain"), None);
}
