//! A real browser for the portal tests: Debian's `chromium` driven by `chromedriver`
//! over the W3C WebDriver protocol (plain JSON over HTTP with reqwest, no WebDriver
//! crate), shared by every browser scenario (`portal_browser.rs`,
//! `portal_integrations.rs`) so the protocol details live once.
//!
//! `deploy/local/test.sh` installs `chromium` and `chromium-driver` when missing. A test
//! starts with [`driver_path`], which says loudly when the driver is absent so the test
//! can pass without running, then [`Browser::start`], and ends with [`Browser::quit`].
//! Screenshots go to `target/<profile>/portal-screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{TestApp, wait_for};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52f-4ae735e5f1f3";

/// How long [`Browser::wait_text`] waits for a page to show the expected text.
const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver process and one headless chromium session on it. Dropping it kills
/// the driver (and with it the browser); [`Browser::quit`] also ends the session
/// cleanly first.
pub struct Browser {
    driver: tokio::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver (at `driver_path`, from [`driver_path`]) on a free loopback
    /// port, only reachable from loopback, and opens a headless chromium session
    /// (`PORTICO_CHROMIUM`, default `/usr/bin/chromium`) with a 1200x1000 window.
    pub async fn start(driver_path: &str) -> anyhow::Result<Self> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let driver = tokio::process::Command::new(driver_path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {driver_path}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status_url = format!("{base}/status");
        wait_for(Duration::from_secs(20), || {
            let http = http.clone();
            let url = status_url.clone();
            async move {
                match http.get(url).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await
        .context("chromedriver did not become ready")?;
        let binary =
            std::env::var("PORTICO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1000",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = res["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {res}"))?
            .to_owned();
        Ok(Self {
            driver,
            base,
            session,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// One WebDriver command on this session (`path` after `/session/{id}`); returns
    /// its `value`, or an error with the driver's answer when it is not 200.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status();
        let value: Value = res.json().await?;
        if status != StatusCode::OK {
            bail!("WebDriver {method} {path}: {status} {value}");
        }
        Ok(value["value"].clone())
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await
            .map(|_| ())
    }

    /// Reloads the current page (the browser's own reload, as a user pressing F5).
    pub async fn refresh(&self) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/refresh", json!({}))
            .await
            .map(|_| ())
    }

    /// The URL the browser is at now (after redirects).
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let v = self.call(reqwest::Method::GET, "/url", json!({})).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The page's current HTML (as the browser has it, scripts' changes included).
    pub async fn source(&self) -> anyhow::Result<String> {
        let v = self
            .call(reqwest::Method::GET, "/source", json!({}))
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The WebDriver reference of the first element matching the CSS selector, or an
    /// error when there is none.
    pub async fn find(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        let id = v[ELEMENT]
            .as_str()
            .or_else(|| {
                v.as_object()
                    .and_then(|o| o.values().find_map(Value::as_str))
            })
            .with_context(|| format!("{css}: no element reference in {v}"))?;
        Ok(id.to_owned())
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let id = self.find(css).await?;
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/text"),
                json!({}),
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Clicks the first element matching `css` (as a user would: it must be visible).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await
        .map(|_| ())
    }

    /// Waits until the element's text satisfies `ok` (the page may be reloading or
    /// updating live); on timeout the error carries the URL and the start of the page.
    pub async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let last = match self.text(css).await {
                Ok(t) if ok(&t) => return Ok(t),
                Ok(t) => format!("text {t:?}"),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() > until {
                let url = self.current_url().await.unwrap_or_default();
                let source = self.source().await.unwrap_or_default();
                bail!(
                    "{css} never showed the expected text ({last}) at {url}: {}",
                    source.chars().take(2000).collect::<String>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the browser's URL satisfies `ok`: after a click that submits a form,
    /// the old page (and its elements) can still be there for a moment. On timeout the
    /// error carries the last URL.
    pub async fn wait_url(&self, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let url = self.current_url().await?;
            if ok(&url) {
                return Ok(url);
            }
            if tokio::time::Instant::now() > until {
                bail!("the browser never reached the expected page; it is at {url}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into an element (for a file input: the file's path).
    pub async fn send_keys(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await
        .map(|_| ())
    }

    /// Runs `script` in the page and returns its value.
    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Saves a PNG of the window as `portal-screenshots/<name>.png` next to the test
    /// binaries and returns its path (the docs' screenshots are copies of these).
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", json!({}))
            .await?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
        let dir = crate::bin_dir().join("portal-screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Ends the browser session and stops the driver. Errors are ignored: this runs
    /// after the scenario, whose own result is what the test reports.
    pub async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}

/// The driver to use (`PORTICO_CHROMEDRIVER`, default `/usr/bin/chromedriver`), or
/// `None`, with a loud message, when it is not installed: a browser test then returns
/// early and passes, so a machine without chromium still runs the rest of the suite.
pub fn driver_path() -> Option<String> {
    let path = std::env::var("PORTICO_CHROMEDRIVER")
        .unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
    if std::path::Path::new(&path).exists() {
        Some(path)
    } else {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPED: the portal browser test needs chromium and chromedriver     !!\n\
             !! ({path} not found). Install: apt-get install chromium chromium-driver !!\n\
             !! (deploy/local/test.sh does this when it can).                         !!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        None
    }
}

/// An absolute one-time portal login URL for `user`, asked of the API with the user's
/// token (`POST /api/portal/sessions`), ready for [`Browser::goto`].
pub async fn login_url(app: &TestApp, user: &str) -> anyhow::Result<String> {
    let res = app
        .http
        .post(app.api("/portal/sessions"))
        .bearer_auth(app.user_token(user))
        .send()
        .await?;
    if res.status() != StatusCode::CREATED {
        bail!("POST /portal/sessions: {}", res.status());
    }
    let link: Value = res.json().await?;
    let path = link["loginUrl"]
        .as_str()
        .with_context(|| format!("no loginUrl in {link}"))?;
    Ok(format!("{}{path}", app.base_url()))
}
