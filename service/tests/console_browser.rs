//! The approver console driven in real headless Chromium through ChromeDriver (W3C
//! WebDriver over HTTP): paste a token, list pending approvals, open one, see exactly
//! what will run (rendered as text, not HTML), approve with a reason; and sign in through
//! the demo IdP's login page, watch a held request appear without reloading, approve it,
//! search sessions, open a timeline and check the audit chain. Screenshots of each page go
//! to the test's target dir (and, with AIRLOCK_UPDATE_SCREENSHOTS=1, to docs/console/).
//! Needs Debian's `chromium` and `chromium-driver` (service/scripts/install-chromium.sh);
//! without them the test prints SKIPPED and passes, unless AIRLOCK_REQUIRE_BROWSER=1.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;
mod signin_support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    /// Ends chromedriver and the browser it started, even when the test panicked: both
    /// run in the process group created for chromedriver, which is killed as a whole.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Driver {
    async fn start() -> Option<Driver> {
        let found =
            |bin: &str| Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !(found("chromium") && found("chromedriver")) {
            if std::env::var("AIRLOCK_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("chromium/chromedriver missing: run service/scripts/install-chromium.sh");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED console browser test: chromium or chromedriver not installed");
            return None;
        }
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/status")).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync",
                         "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let mut d = Driver { child, base, session: String::new(), _profile: profile };
        let v = d.cmd("POST", "/session", Some(caps)).await;
        d.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Some(d)
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if self.session.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut req = http().request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Finds an element by CSS selector, retrying while the page updates.
    async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let v = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
            if let Some(id) = v[ELEMENT_KEY].as_str() {
                return id.to_string();
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no element {css}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        let v = self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().map_or(0, Vec::len)
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({}))).await;
    }

    async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd("GET", &format!("/element/{el}/text"), None).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the text of `css` contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let t = self.text(css).await;
            if t.contains(needle) {
                return t;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{css} never showed {needle:?}; last: {t:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's URL contains `needle`.
    async fn wait_url(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.cmd("GET", "/url", None).await.as_str().unwrap_or_default().to_string();
            if url.contains(needle) {
                return url;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never reached {needle:?}; at {url:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot as `name` in the test's target dir, and under docs/console/ when
    /// AIRLOCK_UPDATE_SCREENSHOTS=1.
    async fn snapshot(&self, name: &str) {
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        self.screenshot(&shot).await;
        println!("screenshot: {}", shot.display());
        if std::env::var("AIRLOCK_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&shot, docs.join(name)).unwrap();
        }
    }

    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_approves_in_the_web_console() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = Server::start();
    let mut req = approval_request("agent-9", 1, 600, "hold");
    req["body"] = json!("{\"query\":\"DELETE FROM orders\",\"note\":\"<img src=x onerror=alert(1)>\"}");
    let id = s.create_approval(&req).await;

    driver.goto(&s.at(&format!("/console#/approvals/{id}"))).await;
    driver.type_into("#token", ALICE).await;
    driver.click("#load").await;
    driver.wait_text("#list", "POST /v1/sql").await;
    driver.click(&format!("li[data-id='{id}']")).await;
    driver.wait_text("#d-title", &id).await;

    let shown = driver.text("#d-request").await;
    assert!(shown.contains("POST /v1/sql"), "{shown}");
    assert!(shown.contains("<img src=x onerror=alert(1)>"), "the body is shown literally: {shown}");
    assert_eq!(driver.count("#d-request img").await, 0, "the body must not be rendered as HTML");
    assert_eq!(driver.text("#d-subject").await, "agent-9 (agents)");
    assert_eq!(driver.text("#d-reason").await, "cleanup of a duplicate order");
    assert!(driver.text("#d-quorum").await.contains("0 of 1"));

    driver.type_into("#reason", "verified with the order owner").await;
    driver.click("#approve").await;
    driver.wait_text("#message", "Status is now approved").await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-approved.png");
    driver.screenshot(&shot).await;
    println!("screenshot: {}", shot.display());

    let (_, w) = s.wait(&id, 0).await;
    assert_eq!(w["status"], "approved");
    assert_eq!(w["decisions"][0]["approver"], "alice");
    assert_eq!(w["decisions"][0]["reason"], "verified with the order owner");
    driver.cmd("DELETE", "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_signs_in_with_the_idp_sees_a_held_request_live_approves_and_audits() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let idp = signin_support::DemoIdp::start().await;
    // Staging answers 500 where production answered 200: the replay shows the difference.
    let staging = Receiver::start(|_, _, _| 500).await;
    let s = idp.server_with(&format!("[replay]\ntarget = \"{}\"\n", staging.url));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let records = [
        record("r1", "sess-7", now - 3000, ALLOW, 200),
        record("r2", "sess-7", now - 2000, DENIED_BY_RULE, 403),
        record("r3", "sess-8", now - 1000, ALLOW, 200),
    ];
    assert_eq!(s.ingest(&records).await.0, 200);

    // Sign in through the IdP's login page: code flow with PKCE, back to the console.
    driver.goto(&s.at("/console")).await;
    driver.click("#signin").await;
    driver.wait_url("/login/authorize").await;
    driver.type_into("#username", "dana").await;
    let groups = driver.find("#groups").await;
    driver.cmd("POST", &format!("/element/{groups}/clear"), Some(json!({}))).await;
    driver.type_into("#groups", "dba,audit").await;
    driver.click("#signin").await;
    driver.wait_url("/console").await;
    driver.wait_text("#who-name", "dana (dba, audit)").await;
    driver.wait_text("#live", "live").await;

    // A request held now shows up without a reload.
    let id = s.create_approval(&approval_request("agent-9", 1, 600, "hold")).await;
    driver.wait_text("#list", "POST /v1/sql").await;
    let item = driver.text(&format!("li[data-id='{id}']")).await;
    assert!(item.contains("agent-9") && item.contains("prod-db-writes") && item.contains("0 of 1"), "{item}");
    assert!(item.contains("left"), "a countdown: {item}");
    driver.click(&format!("li[data-id='{id}']")).await;
    driver.wait_text("#d-title", &id).await;
    assert!(driver.text("#d-request").await.contains("[EMAIL]"), "the masked body is shown");
    driver.type_into("#reason", "checked with the order owner").await;
    driver.snapshot("approvals.png").await;
    driver.click("#approve").await;
    driver.wait_text("#message", "Status is now approved").await;
    let (_, w) = s.wait(&id, 0).await;
    assert_eq!(w["status"], "approved");
    assert_eq!(w["decisions"][0]["approver"], "dana", "the name comes from the ID token's claims");

    // Sessions: search by subject and rule, open a timeline.
    driver.goto(&s.at("/console#/sessions")).await;
    driver.wait_text("#s-list", "sess-8").await;
    driver.type_into("#s-subject", "agent-1").await;
    driver.type_into("#s-rule", "no-deletes").await;
    driver.click("#s-search").await;
    let started = Instant::now();
    while driver.count("#s-list li").await != 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", driver.text("#s-list").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(driver.text("#s-list").await.contains("sess-7"));
    driver.snapshot("sessions.png").await;
    driver.click("li[data-id='sess-7']").await;
    driver.wait_text("#t-title", "sess-7").await;
    let rows = driver.wait_text("#t-rows", "denied_by_rule").await;
    assert!(rows.contains("/v1/items/r1") && rows.contains("no-deletes") && rows.contains("403"), "{rows}");
    driver.wait_text("#t-request", "\"n\":\"r1\"").await;
    driver.click("#t-replay").await;
    driver.wait_text("#t-replay-summary", "1 replayed against").await;
    let replayed = driver.text("#t-replay-result").await;
    assert!(replayed.contains("#1 POST /v1/items/r1: recorded 200, replay 500 · DIFFERS"), "{replayed}");
    let seen = staging.seen();
    assert_eq!(seen.len(), 1, "the rule-denied record is not replayed");
    assert_eq!((seen[0].path.as_str(), seen[0].body.as_str()), ("/v1/items/r1", "{\"n\":\"r1\"}"));
    driver.snapshot("timeline.png").await;

    // Audit integrity.
    driver.goto(&s.at("/console#/integrity")).await;
    driver.wait_text("#i-result", "Chain intact").await;
    assert_eq!(driver.text("#i-records").await, "3");
    assert_eq!(driver.text("#i-first-bad").await, "none");
    driver.snapshot("integrity.png").await;

    // Signing out ends the session: the console asks to sign in again.
    driver.click("#logout").await;
    let started = Instant::now();
    while driver.count("#signin:not([hidden])").await != 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "no sign-in link after logout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver.cmd("DELETE", "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_is_served_with_a_strict_content_security_policy() {
    let s = Server::start();
    let resp = http().get(s.at("/console")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "no inline script: {csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Airlock approvals"));
    assert!(!html.contains("<script>") && html.contains("<script src=\"/console/app.js\""), "scripts are files");
    for file in ["app.js", "approvals.js", "sessions.js", "integrity.js"] {
        let resp = http().get(s.at(&format!("/console/{file}"))).send().await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/javascript; charset=utf-8");
        let js = resp.text().await.unwrap();
        assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML"), "{file} renders data as text only");
    }
    assert_eq!(http().get(s.at("/console/../Cargo.toml")).send().await.unwrap().status().as_u16(), 404);
}
