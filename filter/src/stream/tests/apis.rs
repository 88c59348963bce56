//! The streaming APIs: OpenAI chat completions and Responses, Anthropic Messages, Ollama,
//! MCP Streamable HTTP; where the held-back text goes when a text ends; structure masks.

use super::*;

fn sse_chunks(stream: &str) -> Vec<&[u8]> {
    stream.split_inclusive("\n\n").map(str::as_bytes).collect()
}

fn mask_sse(p: &MaskProfile, stream: &str) -> String {
    concat(&run(StreamKind::Sse, p, &sse_chunks(stream)).unwrap())
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An Anthropic Messages stream of one text block made of `deltas`.
pub(super) fn anthropic_stream(deltas: &[&str]) -> String {
    let mut s = event(
        "message_start",
        &json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],
            "model":"claude-test","stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}}),
    );
    s += &event(
        "content_block_start",
        &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    s += &event("ping", &json!({"type":"ping"}));
    for d in deltas {
        s += &event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":d}}),
        );
    }
    s += &event("content_block_stop", &json!({"type":"content_block_stop","index":0}));
    s += &event(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
            "usage":{"output_tokens":15}}),
    );
    s += &event("message_stop", &json!({"type":"message_stop"}));
    s
}

/// The text of block 0 as the Anthropic SDK assembles it; no delta may follow the
/// block's stop, and the SSE event name must agree with the JSON type.
pub(super) fn anthropic_text(stream: &str) -> String {
    let mut text = String::new();
    let mut stopped = false;
    for e in client_events(stream) {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"].as_str(), Some(e.event.as_str()), "event name and type differ: {stream}");
        match v["type"].as_str().unwrap() {
            "content_block_start" => text.push_str(v["content_block"]["text"].as_str().unwrap()),
            "content_block_delta" => {
                assert!(!stopped, "delta after content_block_stop: {stream}");
                assert_eq!(v["delta"]["type"], "text_delta");
                text.push_str(v["delta"]["text"].as_str().unwrap());
            }
            "content_block_stop" => stopped = true,
            _ => {}
        }
    }
    text
}

/// A Responses API stream of one output text made of `deltas`.
pub(super) fn responses_stream(deltas: &[&str]) -> String {
    let full: String = deltas.concat();
    let ids = json!({"item_id":"msg_1","output_index":0,"content_index":0});
    let with = |mut v: Value, extra: &Value| {
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let mut s = event(
        "response.created",
        &json!({"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress",
            "output":[]}}),
    );
    s += &event(
        "response.content_part.added",
        &with(
            json!({"type":"response.content_part.added","sequence_number":1,"part":{"type":"output_text","text":"",
                "annotations":[]}}),
            &ids,
        ),
    );
    for (n, d) in deltas.iter().enumerate() {
        s += &event(
            "response.output_text.delta",
            &with(json!({"type":"response.output_text.delta","sequence_number":n + 2,"delta":d,"logprobs":[]}), &ids),
        );
    }
    s += &event(
        "response.output_text.done",
        &with(json!({"type":"response.output_text.done","sequence_number":99,"text":full,"logprobs":[]}), &ids),
    );
    s += &event(
        "response.completed",
        &json!({"type":"response.completed","sequence_number":100,"response":{"id":"resp_1","status":"completed",
            "output":[{"type":"message","id":"msg_1","content":[{"type":"output_text","text":full}]}]}}),
    );
    s
}

/// The joined deltas; none may follow the text's `done` event, whose `text` must equal them.
pub(super) fn responses_text(stream: &str) -> String {
    let mut text = String::new();
    let mut done = false;
    for e in client_events(stream) {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"].as_str(), Some(e.event.as_str()));
        match v["type"].as_str().unwrap() {
            "response.output_text.delta" => {
                assert!(!done, "delta after done: {stream}");
                assert_eq!(v["item_id"], "msg_1");
                text.push_str(v["delta"].as_str().unwrap());
            }
            "response.output_text.done" => {
                done = true;
                assert_eq!(v["text"].as_str().unwrap(), text, "the done text is the whole text, masked alike");
            }
            _ => {}
        }
    }
    text
}

/// An Ollama `/api/chat` NDJSON body of `deltas`.
pub(super) fn ollama_stream(deltas: &[&str]) -> String {
    let line = |content: &str, done: bool| {
        let mut v = json!({"model":"llama3","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant",
            "content":content},"done":done});
        if done {
            v["done_reason"] = json!("stop");
            v["total_duration"] = json!(12345);
        }
        format!("{v}\n")
    };
    let mut s: String = deltas.iter().map(|d| line(d, false)).collect();
    s.push_str(&line("", true));
    s
}

pub(super) fn ollama_text(body: &str) -> String {
    let mut text = String::new();
    let mut done = false;
    for l in body.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}"));
        assert!(!done, "a line after done: {body}");
        text.push_str(v["message"]["content"].as_str().unwrap());
        done = v["done"] == json!(true);
    }
    assert!(done);
    text
}

#[test]
fn openai_text_ending_mid_value_is_flushed_before_the_stop_chunk_and_done() {
    let p = all();
    let stream = chat_stream(&["Write to alice@exa", "mple.com"]);
    let out = mask_sse(&p, &stream);
    let events = client_events(&out);
    // The held `alice@example.com` goes out in a made chunk right before the stop chunk.
    let datas: Vec<Value> =
        events.iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let stop = datas.iter().position(|v| v["choices"][0]["finish_reason"] == "stop").unwrap();
    let made = &datas[stop - 1];
    assert_eq!(made["choices"][0]["delta"], json!({"content": "[REDACTED:email]"}));
    assert_eq!(made["choices"][0]["finish_reason"], Value::Null);
    assert_eq!((made["id"].as_str(), made["model"].as_str()), (Some("chatcmpl-1"), Some("gpt-test")));
    assert_eq!(made["object"], "chat.completion.chunk");
    assert_eq!(chat_content(&out), "Write to [REDACTED:email]");
}

#[test]
fn content_in_the_chunk_that_finishes_is_flushed_into_that_chunk() {
    let p = all();
    let last = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":{"content":"mple.com"},"finish_reason":"stop"}]});
    let stream = format!("{}data: {last}\n\ndata: [DONE]\n\n", chat_chunk(0, "mail alice@exa"));
    let out = mask_sse(&p, &stream);
    assert_eq!(client_events(&out).len(), 3, "no made chunk: {out}");
    assert_eq!(chat_content(&out), "mail [REDACTED:email]");
}

#[test]
fn stream_cut_without_finish_or_done_is_flushed_at_the_end() {
    let p = all();
    let stream = format!("{}{}", chat_chunk(0, "call +1 415 "), chat_chunk(0, "555 0134"));
    let outs = run(StreamKind::Sse, &p, &sse_chunks(&stream)).unwrap();
    assert_eq!(chat_content(&String::from_utf8(outs[0].clone()).unwrap()), "call ");
    assert_eq!(chat_content(&concat(&outs)), "call [REDACTED:phone]");
}

#[test]
fn choices_are_separate_texts() {
    let p = all();
    let stream = [
        chat_chunk(0, "a: alice@exa"),
        chat_chunk(1, "b: 4111 1111 "),
        chat_chunk(0, "mple.com"),
        chat_chunk(1, "1111 1111"),
        chat_stop(0),
        chat_stop(1),
    ]
    .concat()
        + "data: [DONE]\n\n";
    let out = mask_sse(&p, &stream);
    let texts = chat_texts(&out);
    assert_eq!(texts["0.content"], "a: [REDACTED:email]");
    assert_eq!(texts["1.content"], "b: [REDACTED:credit_card]");
}

#[test]
fn reasoning_and_content_are_separate_texts() {
    let p = all();
    let ch = |field: &str, s: &str| {
        format!(
            "data: {}\n\n",
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,
                "delta":{field: s},"finish_reason":null}]})
        )
    };
    let stream = [
        ch("reasoning_content", "user is bob@exa"),
        ch("content", "Hi bob"),
        ch("reasoning_content", "mple.org"),
        chat_stop(0),
    ]
    .concat();
    let out = mask_sse(&p, &stream);
    let texts = chat_texts(&out);
    assert_eq!(texts["0.reasoning_content"], "user is [REDACTED:email]");
    assert_eq!(texts["0.content"], "Hi bob");
}

#[test]
fn legacy_completions_text_is_joined() {
    let p = all();
    let ch = |s: &str, fin: Value| {
        format!(
            "data: {}\n\n",
            json!({"id":"c","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":s,
                "finish_reason":fin}]})
        )
    };
    let stream = [ch("ssn 123-4", Value::Null), ch("5-6789", json!("stop"))].concat() + "data: [DONE]\n\n";
    let out = mask_sse(&p, &stream);
    let joined: String = client_events(&out)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(joined, "ssn [REDACTED:us_ssn]");
}

#[test]
fn anthropic_block_end_gets_a_made_delta_before_content_block_stop() {
    let p = all();
    let out = mask_sse(&p, &anthropic_stream(&["My key is AKIAIOSFODNN7", "EXAMPLE"]));
    assert_eq!(anthropic_text(&out), "My key is [REDACTED:api_key]");
    let deltas = client_events(&out).into_iter().filter(|e| e.event == "content_block_delta").collect::<Vec<_>>();
    assert_eq!(deltas.len(), 3, "the two deltas and a made one: {out}");
    let made: Value = serde_json::from_str(&deltas[2].data).unwrap();
    assert_eq!(
        made,
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"[REDACTED:api_key]"}})
    );
}

#[test]
fn anthropic_tool_input_json_is_joined() {
    let p = all();
    let d = |s: &str| {
        event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":s}}),
        )
    };
    let stream = event(
        "content_block_start",
        &json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"send",
            "input":{}}}),
    ) + &d("{\"to\": \"carol@exa")
        + &d("mple.com\"}")
        + &event("content_block_stop", &json!({"type":"content_block_stop","index":1}));
    let out = mask_sse(&p, &stream);
    let joined: String = client_events(&out)
        .iter()
        .filter_map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["delta"]["partial_json"].as_str().map(str::to_string)
        })
        .collect();
    assert_eq!(joined, "{\"to\": \"[REDACTED:email]\"}");
}

#[test]
fn responses_api_text_and_its_done_event_agree() {
    let p = all();
    let out = mask_sse(&p, &responses_stream(&["Card: 4111 1111", " 1111 1111 ok"]));
    assert_eq!(responses_text(&out), "Card: [REDACTED:credit_card] ok");
    assert_no_raw(&out, &|| String::new());
}

#[test]
fn mcp_json_rpc_messages_are_masked_one_by_one() {
    let p = all();
    let result = json!({"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text",
        "text":"Customer alice@example.com, SSN 123-45-6789"}],"isError":false}});
    let note = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1,
        "message":"4111 1111 1111 1111","delta":"x"}});
    let stream = format!("id: ev-1\nevent: message\ndata: {note}\n\nid: ev-2\nevent: message\ndata: {result}\n\n");
    let out = mask_sse(&p, &stream);
    let events = client_events(&out);
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].id.as_str(), events[1].id.as_str()), ("ev-1", "ev-2"));
    let r: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(r["result"]["content"][0]["text"], "Customer [REDACTED:email], SSN [REDACTED:us_ssn]");
    assert_eq!(r["id"], 7);
    let n: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(n["params"]["message"], "[REDACTED:credit_card]");
    assert_eq!(n["params"]["delta"], "x");
}

#[test]
fn structure_masks_replace_the_delta_member_in_every_chunk() {
    for spec in [
        json!({"detectors":["all"],"fields":["content"]}),
        json!({"detectors":["email"],"pointers":["/choices/*/delta/content"]}),
    ] {
        let p = profile(spec);
        let out = mask_sse(&p, &chat_stream(&["Hello alice", "@example.com and more"]));
        let events = client_events(&out);
        assert_eq!(events.len(), 4, "no made chunk for a masked member: {out}");
        for e in &events[..2] {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["choices"][0]["delta"]["content"], "[REDACTED:field]");
        }
    }
}

#[test]
fn other_members_of_a_delta_chunk_are_masked_structure_aware() {
    let p = profile(json!({"detectors":["all"],"fields":["user"]}));
    let chunk = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","user":"x",
        "system_fingerprint":"bob@example.com","choices":[{"index":0,"delta":{"content":"hi "},"finish_reason":null}]});
    let out = mask_sse(&p, &format!("data: {chunk}\n\n"));
    let v: Value = serde_json::from_str(&client_events(&out)[0].data).unwrap();
    assert_eq!(v["user"], "[REDACTED:field]");
    assert_eq!(v["system_fingerprint"], "[REDACTED:email]");
    assert_eq!(v["choices"][0]["delta"]["content"], "hi ");
}

#[test]
fn json_shaped_data_that_is_not_json_is_text_unless_the_profile_masks_by_structure() {
    let stream = "data: {not json alice@example.com\n\ndata: [1, 2\n\n";
    let p = all();
    assert!(!p.masks_by_structure());
    let out = mask_sse(&p, stream);
    assert_eq!(
        client_events(&out).iter().map(|e| e.data.as_str()).collect::<String>(),
        "{not json [REDACTED:email][1, 2"
    );
    let p = profile(json!({"detectors":["all"],"fields":["password"]}));
    assert_eq!(run(StreamKind::Sse, &p, &[stream.as_bytes()]).unwrap_err(), StreamError::InvalidJson);
}

#[test]
fn json_escapes_in_deltas_are_decoded_before_masking() {
    let p = all();
    let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x alice\\u0040exa\"}}]}\n\ndata: \
        {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"mple.com\"},\"finish_reason\":\"stop\"}]}\n\n";
    let out = mask_sse(&p, stream);
    assert_eq!(chat_content(&out), "x [REDACTED:email]");
}

#[test]
fn ollama_generate_response_is_joined_and_other_ndjson_rows_are_masked_whole() {
    let p = all();
    let l = |r: &str, done: bool| format!("{}\n", json!({"model":"m","created_at":"t","response":r,"done":done}));
    let body = l("phone 415-5", false) + &l("55-0134.", false) + &l("", true);
    let out = concat(&run(StreamKind::Ndjson, &p, &[body.as_bytes()]).unwrap());
    let joined: String = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["response"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(joined, "phone [REDACTED:phone].");
    let rows = "{\"email\":\"a@example.com\",\"response\":\"x\",\"done\":false}\n[\"4111111111111111\"]\n";
    let out = concat(&run(StreamKind::Ndjson, &p, &[rows.as_bytes()]).unwrap());
    assert_eq!(
        out,
        "{\"email\":\"[REDACTED:email]\",\"response\":\"x\",\"done\":false}\n[\"[REDACTED:credit_card]\"]\n"
    );
}

#[test]
fn custom_detectors_hold_text_until_a_line_ends() {
    let p = profile(json!({"detectors":["email"],"custom":[{"name":"employee_id","regex":"EMP: ?[0-9]{6}"}]}));
    let stream = chat_stream(&["id is EMP:", " 123", "456, next\nline"]);
    let chunks = sse_chunks(&stream);
    let outs = run(StreamKind::Sse, &p, &chunks).unwrap();
    // Nothing before the line feed can go out until it arrives.
    assert_eq!(chat_content(&concat(&outs[..2])), "");
    assert_eq!(chat_content(&concat(&outs[..3])), "id is [REDACTED:employee_id], next\n");
    assert_eq!(chat_content(&concat(&outs)), "id is [REDACTED:employee_id], next\nline");
}

#[test]
fn counts_add_up_over_deltas_and_whole_messages() {
    let p = all();
    let mut m = StreamMasker::new(StreamKind::Sse, StreamLimits::default());
    let mut out = Vec::new();
    m.push(&p, chat_chunk(0, "a alice@exa").as_bytes(), &mut out).unwrap();
    assert_eq!(m.take_counts().total(), 0);
    m.push(&p, chat_chunk(0, "mple.com b 123-45-6789 ").as_bytes(), &mut out).unwrap();
    m.push(&p, b"data: {\"jsonrpc\":\"2.0\",\"result\":\"bob@example.org\"}\n\n", &mut out).unwrap();
    m.finish(&p, &mut out).unwrap();
    let counts = m.take_counts();
    let slot = |k: &str| p.kinds().iter().position(|x| x == k).unwrap();
    assert_eq!((counts.get(slot("email")), counts.get(slot("us_ssn")), counts.total()), (2, 1, 3));
    assert_eq!(m.take_counts().total(), 0, "taken");
}
