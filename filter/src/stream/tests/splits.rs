//! Every detector kind, its value split at every offset: across two and three deltas
//! (events), and across two and three chunks of bytes. What the client assembles must be
//! exactly the whole text masked at once: no raw value, nothing lost or repeated.

use super::*;

/// Cut positions around the value in `text` (a few characters either side), where a
/// split can matter; for three-way splits, which are quadratic.
fn around_value(text: &str, value: &str) -> Vec<usize> {
    let start = text.find(value).unwrap();
    let (lo, hi) = (start.saturating_sub(3), (start + value.len() + 3).min(text.len()));
    inner_boundaries(text).into_iter().filter(|&i| i >= lo && i <= hi).collect()
}

fn pairs(cuts: &[usize]) -> impl Iterator<Item = [usize; 2]> + '_ {
    cuts.iter().enumerate().flat_map(move |(n, &i)| cuts[n + 1..].iter().map(move |&j| [i, j]))
}

/// Streams `deltas` as OpenAI chunks, one push per event, and checks the client's text.
fn check_chat(p: &MaskProfile, text: &str, deltas: &[&str]) {
    let stream = chat_stream(deltas);
    let events: Vec<String> = client_events(&stream).iter().map(|e| format!("data: {}\n\n", e.data)).collect();
    let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let out = concat(&run(StreamKind::Sse, p, &chunks).unwrap());
    let got = chat_content(&out);
    let ctx = || format!("deltas {deltas:?}");
    assert_no_raw(&got, &ctx);
    assert_eq!(got, whole(p, text), "{}", ctx());
}

#[test]
fn chat_deltas_split_in_two_at_every_offset() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        for cut in inner_boundaries(&text) {
            check_chat(&p, &text, &pieces(&text, &[cut]));
        }
    }
}

#[test]
fn chat_deltas_split_in_three_at_every_pair_of_offsets_around_the_value() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        for cuts in pairs(&around_value(&text, value)) {
            check_chat(&p, &text, &pieces(&text, &cuts));
        }
    }
}

#[test]
fn chat_deltas_of_one_character_each() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        let cuts = inner_boundaries(&text);
        check_chat(&p, &text, &pieces(&text, &cuts));
    }
}

/// The bytes of an OpenAI stream whose value is split across two deltas, cut into
/// chunks at `cuts`.
fn check_chat_bytes(p: &MaskProfile, text: &str, stream: &str, cuts: &[usize]) {
    let chunks = split_at(stream.as_bytes(), cuts);
    let out = concat(&run(StreamKind::Sse, p, &chunks).unwrap());
    let got = chat_content(&out);
    let ctx = || format!("chunks {:?}", chunks.iter().map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>());
    assert_no_raw(&got, &ctx);
    assert_eq!(got, whole(p, text), "{}", ctx());
    assert_eq!(client_events(&out).last().map(|e| e.data.as_str()), Some("[DONE]"));
}

fn value_split_stream(value: &str) -> (String, String) {
    let text = sentence(value);
    let mid = text.find(value).unwrap() + value.len() / 2;
    let mid = (mid..).find(|&i| text.is_char_boundary(i)).unwrap();
    let stream = chat_stream(&[&text[..mid], &text[mid..]]);
    (text, stream)
}

#[test]
fn chat_stream_bytes_split_in_two_at_every_offset() {
    let p = all();
    for (_, value) in VALUES {
        let (text, stream) = value_split_stream(value);
        for cut in 1..stream.len() {
            check_chat_bytes(&p, &text, &stream, &[cut]);
        }
    }
}

#[test]
fn chat_stream_bytes_split_in_three_at_every_pair_of_offsets_in_the_value() {
    let p = all();
    for (_, value) in VALUES {
        let (text, stream) = value_split_stream(value);
        // The value's bytes in the stream: its two halves, in two events.
        let mid = value.len() / 2;
        let mid = (mid..).find(|&i| value.is_char_boundary(i)).unwrap();
        let (a, b) = value.split_at(mid);
        let json = |s: &str| serde_json::to_string(s).unwrap();
        let (ja, jb) = (json(a), json(b));
        let (ja, jb) = (&ja[1..ja.len() - 1], &jb[1..jb.len() - 1]);
        let at_a = stream.find(ja).unwrap();
        let at_b = stream[at_a + ja.len()..].find(jb).unwrap() + at_a + ja.len();
        let cuts: Vec<usize> = (at_a..=at_a + ja.len()).chain(at_b..=at_b + jb.len()).collect();
        for c in pairs(&cuts) {
            check_chat_bytes(&p, &text, &stream, &c);
        }
    }
}

#[test]
fn chat_stream_bytes_split_in_three_anywhere() {
    let p = all();
    for value in ["alice@example.com", "4111 1111 1111 1111", VALUES[VALUES.len() - 1].1] {
        let (text, stream) = value_split_stream(value);
        let cuts: Vec<usize> = (1..stream.len()).step_by(5).collect();
        for c in pairs(&cuts) {
            check_chat_bytes(&p, &text, &stream, &c);
        }
    }
}

#[test]
fn text_without_spaces_in_non_latin_script_streams_and_masks_nearby_values() {
    // Rule 3: long runs without ASCII separators are cut after non-ASCII characters
    // away from any `@`, so they stream; a value amid them is still masked whole.
    let p = all();
    let cjk = "这是一个没有空格的很长的中文句子用来测试流式脱敏是否会持续输出文本".repeat(3);
    let text = format!("{cjk}，邮箱 alice@example.com 和卡号 4111 1111 1111 1111，{cjk}");
    for cut in inner_boundaries(&text).into_iter().step_by(2) {
        check_chat(&p, &text, &pieces(&text, &[cut]));
    }
    let deltas: Vec<&str> = pieces(&text, &inner_boundaries(&text).into_iter().step_by(4).collect::<Vec<_>>());
    let mut m = StreamMasker::new(StreamKind::Sse, StreamLimits::default());
    let mut out = Vec::new();
    let mut most = 0;
    for d in &deltas {
        m.push(&p, chat_chunk(0, d).as_bytes(), &mut out).unwrap();
        most = most.max(m.held_bytes());
    }
    assert!(most < 400, "held up to {most} bytes");
    m.finish(&p, &mut out).unwrap();
    assert_eq!(chat_content(&String::from_utf8(out).unwrap()), whole(&p, &text));
}

/// Plain (non-JSON) SSE data: the client joins the data of the events.
fn check_plain(p: &MaskProfile, text: &str, datas: &[&str]) {
    let stream: String =
        datas.iter().map(|d| d.split('\n').map(|l| format!("data: {l}\n")).collect::<String>() + "\n").collect();
    let events: Vec<&[u8]> = stream.split_inclusive("\n\n").map(str::as_bytes).collect();
    let out = concat(&run(StreamKind::Sse, p, &events).unwrap());
    let got: String = client_events(&out).iter().map(|e| e.data.as_str()).collect();
    let ctx = || format!("datas {datas:?}");
    assert_no_raw(&got, &ctx);
    assert_eq!(got, whole(p, text), "{}", ctx());
}

#[test]
fn plain_sse_data_split_in_two_and_three() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        for cut in inner_boundaries(&text) {
            check_plain(&p, &text, &pieces(&text, &[cut]));
        }
        for cuts in pairs(&around_value(&text, value)) {
            check_plain(&p, &text, &pieces(&text, &cuts));
        }
    }
}

/// A text body cut into chunks of bytes (a character may be split).
fn check_text(p: &MaskProfile, text: &str, cuts: &[usize]) {
    let chunks = split_at(text.as_bytes(), cuts);
    let outs = run(StreamKind::Text, p, &chunks).unwrap();
    let got = concat(&outs);
    let ctx = || format!("cuts {cuts:?}");
    assert_no_raw(&got, &ctx);
    assert_eq!(got, whole(p, text), "{}", ctx());
}

#[test]
fn text_body_split_at_every_byte_in_two_and_three() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        for cut in 1..text.len() {
            check_text(&p, &text, &[cut]);
        }
        let start = text.find(value).unwrap();
        let cuts: Vec<usize> =
            (start.saturating_sub(2)..(start + value.len() + 2).min(text.len())).filter(|&c| c > 0).collect();
        for c in pairs(&cuts) {
            check_text(&p, &text, &c);
        }
    }
}

#[test]
fn anthropic_text_deltas_split_in_two_at_every_offset() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        for cut in inner_boundaries(&text) {
            let stream = apis::anthropic_stream(&pieces(&text, &[cut]));
            let chunks: Vec<&[u8]> = stream.split_inclusive("\n\n").map(str::as_bytes).collect();
            let out = concat(&run(StreamKind::Sse, &p, &chunks).unwrap());
            let got = apis::anthropic_text(&out);
            assert_no_raw(&got, &|| format!("cut {cut}"));
            assert_eq!(got, whole(&p, &text));
        }
    }
}

#[test]
fn responses_api_deltas_split_in_two_at_every_offset() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        for cut in inner_boundaries(&text) {
            let stream = apis::responses_stream(&pieces(&text, &[cut]));
            let chunks: Vec<&[u8]> = stream.split_inclusive("\n\n").map(str::as_bytes).collect();
            let out = concat(&run(StreamKind::Sse, &p, &chunks).unwrap());
            let got = apis::responses_text(&out);
            assert_no_raw(&got, &|| format!("cut {cut}"));
            assert_eq!(got, whole(&p, &text));
        }
    }
}

#[test]
fn ollama_ndjson_deltas_split_in_two_at_every_offset() {
    let p = all();
    for (_, value) in VALUES {
        let text = sentence(value);
        for cut in inner_boundaries(&text) {
            let body = apis::ollama_stream(&pieces(&text, &[cut]));
            let lines: Vec<&[u8]> = body.split_inclusive('\n').map(str::as_bytes).collect();
            let out = concat(&run(StreamKind::Ndjson, &p, &lines).unwrap());
            let got = apis::ollama_text(&out);
            assert_no_raw(&got, &|| format!("cut {cut}"));
            assert_eq!(got, whole(&p, &text));
        }
    }
}

#[test]
fn tool_call_arguments_are_joined_per_call() {
    let p = all();
    let args = r#"{"to":"alice@example.com","card":"4111 1111 1111 1111"}"#;
    for cut in inner_boundaries(args) {
        let (a, b) = args.split_at(cut);
        let mut stream = String::new();
        for part in [a, b] {
            let chunk = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
                "choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":part}}]},
                    "finish_reason":null}]});
            stream.push_str(&format!("data: {chunk}\n\n"));
        }
        stream.push_str(&format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},
                "finish_reason":"tool_calls"}]})
        ));
        let chunks: Vec<&[u8]> = stream.split_inclusive("\n\n").map(str::as_bytes).collect();
        let out = concat(&run(StreamKind::Sse, &p, &chunks).unwrap());
        let got = chat_texts(&out).remove("0.tool0").unwrap();
        assert_no_raw(&got, &|| format!("cut {cut}"));
        assert_eq!(got, whole(&p, args));
    }
}

#[test]
fn ndjson_bytes_split_in_two_at_every_offset() {
    let p = all();
    // Rows masked whole, and an Ollama stream whose value is split across two lines.
    let rows = "{\"email\":\"alice@example.com\",\"card\":\"4111 1111 1111 1111\"}\r\n\n[\"+1 415 555 \
        0134\",4111111111111111]\n";
    let expected_rows = concat!(
        "{\"email\":\"[REDACTED:email]\",\"card\":\"[REDACTED:credit_card]\"}\n\n",
        "[\"[REDACTED:phone]\",\"[REDACTED:credit_card]\"]\n"
    );
    for cut in 1..rows.len() {
        assert_eq!(
            concat(&run(StreamKind::Ndjson, &p, &split_at(rows.as_bytes(), &[cut])).unwrap()),
            expected_rows,
            "cut {cut}"
        );
    }
    for (_, value) in VALUES {
        let text = sentence(value);
        let mid = text.find(value).unwrap() + value.len() / 2;
        let mid = (mid..).find(|&i| text.is_char_boundary(i)).unwrap();
        let body = apis::ollama_stream(&[&text[..mid], &text[mid..]]);
        for cut in 1..body.len() {
            let out = concat(&run(StreamKind::Ndjson, &p, &split_at(body.as_bytes(), &[cut])).unwrap());
            let got = apis::ollama_text(&out);
            assert_no_raw(&got, &|| format!("cut {cut}"));
            assert_eq!(got, whole(&p, &text), "cut {cut}");
        }
    }
}
