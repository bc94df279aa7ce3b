//! A real browser for console tests: Debian's headless Chromium driven by its chromedriver over
//! the W3C WebDriver protocol (plain HTTP on loopback), with screenshots kept for a person.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use crate::managed::Managed;

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: ureq::Agent,
    base: String,
    session: String,
    shots: PathBuf,
    _driver: Managed,
}

/// A found element.
#[derive(Debug, Clone)]
pub struct El(String);

impl Browser {
    /// Start chromedriver on a free port and a headless Chromium session that trusts
    /// `ca_pem`'s collector by accepting its certificate (the CA is the test's own).
    pub fn start(work: &Path, shots: &Path) -> Result<Browser> {
        let driver_bin = ["chromedriver", "/usr/bin/chromedriver"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .ok_or_else(|| anyhow!("chromedriver not found: apt-get install chromium-driver (cargo xtask test installs it)"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"));
        let driver = Managed::spawn("chromedriver", cmd, &work.join("chromedriver.log"))?;
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http.get(&format!("{base}/status")).call().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::create_dir_all(shots)?;
        let profile = work.join("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--disable-component-update",
                format!("--user-data-dir={}", profile.display()),
            ]}
        }}});
        let r = call(&http, "POST", &format!("{base}/session"), Some(caps))?;
        let session = r["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session from chromedriver: {r}"))?
            .to_string();
        Ok(Browser {
            http,
            base,
            session,
            shots: shots.to_path_buf(),
            _driver: driver,
        })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        call(
            &self.http,
            method,
            &format!("{}/session/{}{path}", self.base, self.session),
            body,
        )
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    pub fn url(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/url", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub fn source(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/source", None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub fn find_all(&self, css: &str) -> Result<Vec<El>> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|s| El(s.to_string())))
            .collect())
    }

    /// The first element matching `css`, waiting up to `timeout` for it to appear.
    pub fn wait(&self, css: &str, timeout: Duration) -> Result<El> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_all(css)?.into_iter().next() {
                return Ok(e);
            }
            if Instant::now() > deadline {
                bail!(
                    "no element {css:?} on {} within {timeout:?}",
                    self.url().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn find(&self, css: &str) -> Result<El> {
        self.wait(css, Duration::from_secs(10))
    }

    pub fn click(&self, e: &El) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})))?;
        Ok(())
    }

    /// Click with Alt held (a facet's exclude).
    pub fn alt_click(&self, e: &El) -> Result<()> {
        let origin = json!({ ELEMENT: e.0 });
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [
                {"type": "key", "id": "kb", "actions": [{"type": "keyDown", "value": "\u{E00A}"}, {"type": "pause", "duration": 0}, {"type": "pause", "duration": 0}, {"type": "keyUp", "value": "\u{E00A}"}]},
                {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
                    {"type": "pointerMove", "origin": origin, "x": 0, "y": 0},
                    {"type": "pointerDown", "button": 0},
                    {"type": "pointerUp", "button": 0},
                    {"type": "pause", "duration": 0}]}
            ]})),
        )?;
        self.cmd("DELETE", "/actions", None)?;
        Ok(())
    }

    pub fn type_into(&self, e: &El, text: &str) -> Result<()> {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    pub fn clear(&self, e: &El) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/clear", e.0), Some(json!({})))?;
        Ok(())
    }

    pub fn text(&self, e: &El) -> Result<String> {
        Ok(self
            .cmd("GET", &format!("/element/{}/text", e.0), None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// Run a script in the page (for reading state, never to drive the page around the UI).
    pub fn script(&self, js: &str) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Save the page as `NAME.png` in the screenshot directory.
    pub fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let v = self.cmd("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .context("screenshot is not base64")?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Wait until the page's text contains `needle`, reloading between looks.
    pub fn wait_text(&self, needle: &str, timeout: Duration, reload: bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self
                .script("return document.body ? document.body.innerText : ''")?
                .as_str()
                .unwrap_or("")
                .to_string();
            if body.contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{needle:?} not on {} within {timeout:?}; the page says:\n{}",
                    self.url().unwrap_or_default(),
                    body.chars().take(2000).collect::<String>()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
            if reload {
                self.cmd("POST", "/refresh", Some(json!({})))?;
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(
            &self.http,
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        );
    }
}

fn call(http: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> Result<Value> {
    let req = http.request(method, url);
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let v: Value = match r {
        Ok(resp) => resp.into_json()?,
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            bail!(
                "webdriver {method} {url}: HTTP {code}: {}",
                body.chars().take(1500).collect::<String>()
            )
        }
        Err(e) => bail!("webdriver {method} {url}: {e}"),
    };
    Ok(v["value"].clone())
}
