//! The approver console driven in real headless Chromium through ChromeDriver (W3C
//! WebDriver over HTTP): paste a token, list pending approvals, open one, see exactly
//! what will run (rendered as text, not HTML), approve with a reason.
//! Needs Debian's `chromium` and `chromium-driver` (service/scripts/install-chromium.sh);
//! without them the test prints SKIPPED and passes, unless AIRLOCK_REQUIRE_BROWSER=1.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

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
async fn console_page_is_served_with_a_strict_content_security_policy() {
    let s = Server::start();
    let resp = http().get(s.at("/console")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Airlock approvals"));
    assert!(!html.contains("innerHTML"), "the console renders data as text only");
}
