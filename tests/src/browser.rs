//! Real headless Chromium driven through ChromeDriver (W3C WebDriver over HTTP), for the
//! console tests of the service and the end-to-end tests. Needs Debian's `chromium` and
//! `chromium-driver` (scripts/setup.sh installs them); without them [`Driver::start`]
//! prints SKIPPED and gives `None`, unless AIRLOCK_REQUIRE_BROWSER=1.
#![allow(clippy::unwrap_used, clippy::panic)] // a test harness fails the test by panicking

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    child: Child,
    base: String,
    session: String,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    /// Ends chromedriver and the browser it started, even when the test panicked: both
    /// run in the process group created for chromedriver, which is killed as a whole.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Driver {
    pub async fn start() -> Option<Driver> {
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
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let profile = std::env::temp_dir().join(format!("airlock-chromium-{}-{nanos}", std::process::id()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync",
                         "--window-size=1280,900", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut d = Driver { child, base, session: String::new(), profile };
        let v = d.cmd("POST", "/session", Some(caps)).await;
        d.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Some(d)
    }

    pub async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if self.session.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut req = reqwest::Client::new().request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Finds an element by CSS selector, retrying while the page updates.
    pub async fn find(&self, css: &str) -> String {
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

    pub async fn count(&self, css: &str) -> usize {
        let v = self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().map_or(0, Vec::len)
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/value"), Some(json!({"text": text}))).await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({}))).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd("GET", &format!("/element/{el}/text"), None).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the text of `css` contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
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
    pub async fn wait_url(&self, needle: &str) -> String {
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

    /// Saves a screenshot as `name` in `dir` (a test's target dir), and under
    /// docs/console/ of the repository when AIRLOCK_UPDATE_SCREENSHOTS=1.
    pub async fn snapshot(&self, dir: &str, name: &str) {
        let shot = std::path::Path::new(dir).join(name);
        self.screenshot(&shot).await;
        println!("screenshot: {}", shot.display());
        if std::env::var("AIRLOCK_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&shot, docs.join(name)).unwrap();
        }
    }

    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}
