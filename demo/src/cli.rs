//! Command line of `airlock-demo` (hand-rolled: three subcommands do not justify a
//! parser dependency in a crate the e2e build compiles).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::idp::{IdpOptions, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use crate::render::{render, FilterMode};
use crate::upstream::UpstreamOptions;

pub const HELP: &str = "\
airlock-demo — demo services for trying and testing Airlock. NOT for production.

USAGE:
  airlock-demo upstream --listen 127.0.0.1:PORT --db PATH [--threads N]
      A service an AI agent would call, full of (synthetic) personal data:
        GET  /customers, /customers/{id}   customers with email, phone, card, SSN, IBAN
        POST /sql {\"sql\": \"...\"}           executes the SQL for real (yes, DROP TABLE too)
        GET  /tables                       table names
        ANY  /echo/...                     reflects method, path, headers and body as JSON
        GET  /text                         text/plain with PII and secret-looking strings
        GET  /gzip                         gzip-encoded JSON, whatever the client accepts
        GET  /escaped?type=html|text|none  contacts written with \\u0040, &#64;, &commat;, %40 escapes
        GET  /customers/encoded?encoding=E[,E...]&as=json|sse|ndjson&delay_ms=D
                                           customers (JSON), 5 SSE events or 10 NDJSON rows
                                           encoded with gzip, deflate (zlib), br, zstd or
                                           identity, whatever the client accepts; several
                                           codings apply in list order (JSON only); another
                                           token (compress, x-foo) is named, body left as is
        GET  /customers/bomb?encoding=E&bytes=N
                                           decompression bomb: {\"customers\":[],\"pad\":\"xx..\"}
                                           of N bytes (default 1 GiB) once decoded, encoded
                                           (gzip, deflate, br, zstd) on the fly as it streams
        GET  /large?bytes=N                JSON of exactly N bytes dense with PII
        GET  /stream?events=N&delay_ms=D   chunked text/event-stream, PII split across chunks
        POST /v1/chat/completions          OpenAI-compatible; with \"stream\": true, SSE chunks
                                           whose content (PII) is cut every chunk_size characters
                                           or at split_at offsets, delay_ms apart (body or query)
        GET  /ndjson?rows=N&delay_ms=D     application/x-ndjson customer rows, lines split mid-email
        GET  /jsonl?rows=N&delay_ms=D      the same rows as application/jsonl
        GET  /ranged                       customers JSON honouring Range (206, multipart/byteranges)
        GET  /odd/VARIANT                  customers in awkward forms: utf16, utf16-bom, utf16-text,
                                           utf16-ndjson, latin1, utf8-bom, not-json, not-utf8,
                                           sse-tail (text events ending in an email, no [DONE])
        GET  /slow?delay_ms=D              {\"slept_ms\": D} after D ms (default 1000, at most 60000)
        GET  /health
      Port 0 picks a free port; the address is printed as
      `airlock-demo upstream listening on ADDR`.

  airlock-demo idp --listen 127.0.0.1:PORT [--issuer URL] [--audience AUD]
      A DEMO identity provider: it hands a signed token to anyone who asks, so it only
      listens on loopback. A fresh ES256 key at every start.
        GET /.well-known/jwks.json, /.well-known/openid-configuration
        GET /token?sub=alice&groups=support,dba&ttl=600   → the JWT as text
      Defaults: --issuer https://idp.airlock.test --audience airlock-demo

  airlock-demo render-envoy --template envoy/envoy.yaml [--plugin-config FILE]
                            [--set NAME=VALUE]... [--bare]
      Prints the Envoy bootstrap with every {{NAME}} placeholder filled in. The plugin
      config file must be JSON; it becomes PLUGIN_CONFIG. --bare drops the Airlock
      filter section (then --plugin-config and WASM_PATH are not needed).
";

/// What went wrong on the command line or in a subcommand.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage: the message plus a pointer to `--help`.
    Usage(String),
    /// The command ran and failed.
    Failed(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m} (see `airlock-demo --help`)"),
            CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl CliError {
    /// Process exit code: 2 for usage errors, 1 for failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

/// Runs the command line (without the program name). `render-envoy` writes to `out`.
pub fn run(args: &[String], out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(usage("missing subcommand: upstream, idp or render-envoy"));
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => out.write_all(HELP.as_bytes()).map_err(|e| CliError::Failed(e.to_string())),
        "upstream" => {
            let opts = parse(rest, &["--listen", "--db", "--threads"], &[])?;
            let listen = addr(opts.one("--listen")?.ok_or_else(|| usage("upstream needs --listen ADDR"))?)?;
            let db = PathBuf::from(opts.one("--db")?.ok_or_else(|| usage("upstream needs --db PATH"))?);
            let threads = match opts.one("--threads")? {
                Some(t) => Some(t.parse::<usize>().map_err(|_| usage("--threads must be a number"))?),
                None => None,
            };
            crate::upstream::run(UpstreamOptions { listen, db, threads }).map_err(CliError::Failed)
        }
        "idp" => {
            let opts = parse(rest, &["--listen", "--issuer", "--audience"], &[])?;
            let listen = addr(opts.one("--listen")?.ok_or_else(|| usage("idp needs --listen ADDR"))?)?;
            let issuer = opts.one("--issuer")?.unwrap_or(DEFAULT_ISSUER).to_string();
            let audience = opts.one("--audience")?.unwrap_or(DEFAULT_AUDIENCE).to_string();
            crate::idp::run(IdpOptions { listen, issuer, audience }).map_err(CliError::Failed)
        }
        "render-envoy" => {
            let opts = parse(rest, &["--template", "--plugin-config", "--set"], &["--bare"])?;
            let rendered = render_envoy(&opts)?;
            out.write_all(rendered.as_bytes()).map_err(|e| CliError::Failed(e.to_string()))
        }
        other => Err(usage(format!("unknown subcommand {other:?}"))),
    }
}

fn render_envoy(opts: &Opts) -> Result<String, CliError> {
    let template_path = opts.one("--template")?.ok_or_else(|| usage("render-envoy needs --template FILE"))?;
    let template = std::fs::read_to_string(template_path)
        .map_err(|e| CliError::Failed(format!("cannot read template {template_path}: {e}")))?;
    let mode = if opts.flags.contains(&"--bare") { FilterMode::Bare } else { FilterMode::WithFilter };
    let mut values = BTreeMap::new();
    for set in opts.all("--set") {
        let (name, value) = set.split_once('=').ok_or_else(|| usage(format!("--set {set:?} is not NAME=VALUE")))?;
        if values.insert(name.to_string(), value.to_string()).is_some() {
            return Err(usage(format!("--set {name} given twice")));
        }
    }
    if let Some(path) = opts.one("--plugin-config")? {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Failed(format!("cannot read plugin config {path}: {e}")))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| CliError::Failed(format!("plugin config {path} is not valid JSON: {e}")))?;
        if values.insert("PLUGIN_CONFIG".to_string(), text).is_some() {
            return Err(usage("give the plugin config either with --plugin-config or --set PLUGIN_CONFIG=, not both"));
        }
    }
    render(&template, &values, mode).map_err(|e| CliError::Failed(format!("cannot render {template_path}: {e}")))
}

fn addr(s: &str) -> Result<SocketAddr, CliError> {
    s.parse().map_err(|_| usage(format!("{s:?} is not an IP:PORT address, e.g. 127.0.0.1:8080")))
}

/// Parsed `--name value` options (repeatable) and bare flags.
struct Opts<'a> {
    values: Vec<(&'a str, &'a str)>,
    flags: Vec<&'a str>,
}

impl<'a> Opts<'a> {
    fn all(&self, name: &str) -> impl Iterator<Item = &'a str> + '_ {
        let name = name.to_string();
        self.values.iter().filter(move |(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn one(&self, name: &str) -> Result<Option<&'a str>, CliError> {
        let mut it = self.all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(usage(format!("{name} given more than once")));
        }
        Ok(first)
    }
}

fn parse<'a>(args: &'a [String], valued: &[&'static str], flags: &[&'static str]) -> Result<Opts<'a>, CliError> {
    let mut opts = Opts { values: Vec::new(), flags: Vec::new() };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (arg.as_str(), None),
        };
        if let Some(known) = valued.iter().find(|v| **v == name) {
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or_else(|| usage(format!("{name} needs a value")))?.as_str(),
            };
            opts.values.push((known, value));
        } else if let Some(flag) = flags.iter().find(|f| **f == arg.as_str()) {
            opts.flags.push(flag);
        } else {
            return Err(usage(format!("unexpected argument {arg:?}")));
        }
    }
    Ok(opts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn render_envoy_fills_ports_and_drops_the_filter_in_bare_mode() {
        let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml");
        let mut out = Vec::new();
        run(
            &args(&[
                "render-envoy",
                "--template",
                template,
                "--bare",
                "--set",
                "ADMIN_PORT=9901",
                "--set=LISTEN_PORT=10000",
                "--set",
                "UPSTREAM_PORT=8080",
                "--set",
                "JWKS_PORT=8081",
                "--set",
                "CONTROL_PORT=8082",
            ]),
            &mut out,
        )
        .unwrap();
        let yaml = String::from_utf8(out).unwrap();
        assert!(yaml.contains("port_value: 10000") && yaml.contains("port_value: 8082"));
        assert!(!yaml.contains("{{") && !yaml.contains("envoy.extensions.filters.http.wasm"));
    }

    #[test]
    fn render_envoy_names_the_missing_placeholders() {
        let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml");
        let err = run(&args(&["render-envoy", "--template", template, "--set", "ADMIN_PORT=1"]), &mut Vec::new())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("LISTEN_PORT") && msg.contains("PLUGIN_CONFIG") && msg.contains("WASM_PATH"), "{msg}");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn rejects_unknown_arguments_and_non_loopback_idp() {
        let err = run(&args(&["upstream", "--listen", "127.0.0.1:0", "--bogus"]), &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--bogus"));
        let err = run(&args(&["idp", "--listen", "0.0.0.0:0"]), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
