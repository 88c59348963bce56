//! Property-style checks with a fixed seed: random texts of words, PII values,
//! punctuation, line breaks and non-ASCII runs, cut into random deltas and the stream
//! bytes into random chunks. The client's text must be exactly the whole text masked at
//! once, and masking the output again must agree with masking its text at once.

use super::*;

/// Small deterministic generator (same sequence on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the", "Account", "NOTE", "I", "OK", "id", "x", "4111", "2024", "555", "AB12", "user", "sk", "AKIA", "eyJ",
    "-----", "ß", "名前", "连接", "émile", "ACME", "a.b", "e-mail", "+1", "(415)", "--", "@", "foo@", "@bar", "1-",
    "GB82", "CC", "ssn", "\u{200b}", "\u{ad}",
];
const SEPARATORS: &[&str] = &[
    " ",
    " ",
    " ",
    ", ",
    ". ",
    "\n",
    ": ",
    " (",
    ") ",
    "-",
    ".",
    "",
    "\t",
    "、",
    "；",
    "  ",
    "/",
    "—",
    "–",
    "…",
    "»",
    "«",
    "\u{200b}",
    "--",
    "_",
    "\u{feff}",
    " \u{200b}",
    "\u{200b} ",
];

fn random_text(r: &mut Lcg) -> String {
    let mut s = String::new();
    for _ in 0..r.below(40) + 5 {
        if r.below(5) == 0 {
            s.push_str(VALUES[r.below(VALUES.len())].1);
        } else {
            s.push_str(r.pick(WORDS));
        }
        s.push_str(r.pick(SEPARATORS));
    }
    s
}

fn random_cuts(r: &mut Lcg, s: &str, max: usize) -> Vec<usize> {
    let bounds = inner_boundaries(s);
    if bounds.is_empty() {
        return Vec::new();
    }
    let mut cuts: Vec<usize> = (0..r.below(max) + 1).map(|_| bounds[r.below(bounds.len())]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

#[test]
fn random_chat_streams_give_the_client_the_whole_text_masked() {
    let p = all();
    let mut r = Lcg(0x5eed_2024);
    for round in 0..1500 {
        let text = random_text(&mut r);
        let deltas = pieces(&text, &random_cuts(&mut r, &text, 12));
        let stream = chat_stream(&deltas);
        let byte_cuts: Vec<usize> = {
            let mut c: Vec<usize> = (0..r.below(20)).map(|_| r.below(stream.len() - 1) + 1).collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        let chunks = split_at(stream.as_bytes(), &byte_cuts);
        let out = concat(&run(StreamKind::Sse, &p, &chunks).unwrap());
        let got = chat_content(&out);
        let expected = whole(&p, &text);
        assert_eq!(got, expected, "round {round}: deltas {deltas:?}");
        // Masking the output stream again agrees with masking its text at once (not
        // always a no-op: a replacement can end a word, `]xoxb-…` then starts a key).
        let again = concat(&run(StreamKind::Sse, &p, &[out.as_bytes()]).unwrap());
        assert_eq!(chat_content(&again), whole(&p, &got), "round {round}: masking the output again");
    }
}

#[test]
fn random_text_bodies_and_plain_events_give_the_whole_text_masked() {
    let p = all();
    let mut r = Lcg(42);
    for round in 0..1500 {
        let text = random_text(&mut r);
        let expected = whole(&p, &text);
        let cuts = {
            let mut c: Vec<usize> = (0..r.below(10)).map(|_| r.below(text.len() - 1) + 1).collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        let got = concat(&run(StreamKind::Text, &p, &split_at(text.as_bytes(), &cuts)).unwrap());
        assert_eq!(got, expected, "round {round}: text body cut at {cuts:?} of {text:?}");
        let datas = pieces(&text, &random_cuts(&mut r, &text, 8));
        let stream: String =
            datas.iter().map(|d| d.split('\n').map(|l| format!("data: {l}\n")).collect::<String>() + "\n").collect();
        let out = concat(&run(StreamKind::Sse, &p, &[stream.as_bytes()]).unwrap());
        let got: String = client_events(&out).iter().map(|e| e.data.as_str()).collect();
        assert_eq!(got, expected, "round {round}: plain events {datas:?}");
    }
}
