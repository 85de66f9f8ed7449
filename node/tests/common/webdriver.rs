//! A WebDriver client, just enough for the page tests: Debian's
//! chromedriver driving Debian's headless Chromium (no browser download).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A chromedriver process on a free port, killed on drop.
#[derive(Debug)]
pub struct Driver {
    addr: SocketAddr,
    _child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let stream = TcpStream::connect(addr).await.expect("chromedriver");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("webdriver call");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&bytes)))
}

impl Driver {
    pub async fn start() -> Driver {
        let bin = quantrac_testkit::env::var("QUANTRAC_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin}: {e} (deploy/services.sh start browser installs it)")
            });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_ok() {
                return Driver {
                    addr,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not listen on {addr}");
    }

    /// A new headless browser session.
    pub async fn session(&self) -> Session {
        let chromium = quantrac_testkit::env::var("QUANTRAC_CHROMIUM", "/usr/bin/chromium");
        let r = call(
            self.addr,
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1000"]
                }
            }}})),
        )
        .await;
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        Session {
            addr: self.addr,
            id,
        }
    }
}

/// One browser.
#[derive(Debug)]
pub struct Session {
    addr: SocketAddr,
    id: String,
}

impl Session {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.id),
            body,
        )
        .await;
        if r["value"]["error"].is_string() {
            panic!("webdriver {method} {path}: {r}");
        }
        r["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element `css` selects; panics if none.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// How many elements `css` selects.
    pub async fn count(&self, css: &str) -> usize {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    /// Clicks something that loads a new page, and waits until it has.
    pub async fn click_and_wait(&self, css: &str) {
        self.script("window.__before_click = true; return true;")
            .await;
        self.click(css).await;
        let loaded = self
            .wait_for(
                "return window.__before_click !== true && document.readyState === 'complete';",
                Duration::from_secs(10),
            )
            .await;
        assert!(loaded, "clicking {css} loaded no new page");
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn script(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Runs an async `script` whose last argument is the callback.
    pub async fn script_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Polls `script` until it returns true, at most `within`; whether it did.
    pub async fn wait_for(&self, script: &str, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        loop {
            if self.script(script).await == Value::Bool(true) {
                return true;
            }
            if tokio::time::Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (up to 10 s) until the page's address ends with `suffix`: a
    /// click starts a navigation that may not have finished.
    pub async fn wait_url(&self, suffix: &str) {
        let script = format!(
            "return document.readyState === 'complete' && window.location.href.endsWith({});",
            serde_json::Value::from(suffix)
        );
        if !self.wait_for(&script, Duration::from_secs(10)).await {
            panic!("the page is {}, not …{suffix}", self.url().await);
        }
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    pub async fn close(self) {
        let _ = call(self.addr, "DELETE", &format!("/session/{}", self.id), None).await;
    }
}
