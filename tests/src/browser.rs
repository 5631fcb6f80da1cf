//! A real browser for the console's tests: Debian's `chromium`, headless,
//! driven through its `chromedriver` (started here, one per test, on a free
//! port, and killed when the [`Browser`] is dropped). `scripts/test.sh`
//! installs both when they are missing; without them a test fails and
//! says so.
//!
//! Waiting is on conditions, never on sleeps: [`Browser::wait_text`] polls
//! the page until an element's text satisfies a predicate, and fails with
//! what it last saw.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventstore::testing::free_port;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long a page may take to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// The browser binary: `CHROMIUM`, or Debian's `/usr/bin/chromium`.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// The WebDriver binary: `CHROMEDRIVER`, or `chromedriver` on the PATH.
fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

/// A headless chromium session and its chromedriver.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    /// The console server's base URL, `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Browser {
    /// Starts chromedriver and a 1280×800 headless chromium session for the
    /// server at `base`.
    pub async fn start(base: &str) -> Browser {
        let port = free_port();
        // In a process group of its own, so that dropping the Browser kills
        // chromedriver and every chromium process it started, even after a
        // failed test.
        let driver_binary = chromedriver();
        let driver = Command::new(&driver_binary)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "could not start {driver_binary} ({error}): the console tests need Debian's \
                     chromium and chromium-driver; scripts/ensure-browser.sh installs them"
                )
            });
        let mut browser_args = vec![
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,800",
        ];
        // Chromium refuses to run as root with its sandbox on.
        if is_root() {
            browser_args.push("--no-sandbox");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium(), "args": browser_args}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // chromedriver takes a moment to listen.
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session from {driver_binary}: {error}"),
            }
        };
        Browser {
            client,
            driver,
            base: base.to_owned(),
        }
    }

    /// Opens the console at `fragment` (e.g. `#/sagas`).
    pub async fn open(&self, fragment: &str) {
        self.client
            .goto(&format!("{}/console{fragment}", self.base))
            .await
            .expect("the console page loads");
    }

    /// Signs in on the console's sign-in page by pasting `token`.
    pub async fn sign_in(&self, token: &str) {
        self.open("#/overview").await;
        let field = self.find("#token").await;
        field.send_keys(token).await.expect("typing the token");
        self.click("#token-sign-in").await;
    }

    /// Waits for the element at `css`, and answers it.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(error) if Instant::now() > deadline => {
                    self.shoot("failed-find").await;
                    panic!("no element {css} on the page: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Clicks the element at `css` once it is there.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("clicking {css}: {error}"));
    }

    /// Waits until the text of the element at `css` satisfies `ok`; answers
    /// that text. The element may be replaced meanwhile (the console
    /// re-renders on every poll).
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::from("(no such element)");
        while Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if ok(&text) {
                        return text;
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shoot("failed-wait").await;
        panic!("{css} never showed {what}; last text: {last:?}");
    }

    /// Waits until `script` (a function body) returns `true` in the page.
    pub async fn wait_eval(&self, what: &str, script: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Value::Bool(true)) = self.client.execute(script, vec![]).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shoot("failed-wait").await;
        panic!("never {what}: {script}");
    }

    /// Runs `script` in the page and answers its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|error| panic!("running {script:?}: {error}"))
    }

    /// Saves a PNG of the page as `target/console-screenshots/<name>.png`.
    pub async fn shoot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("the screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }

    /// Resizes the window (the viewport follows).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resizing the window");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/console-screenshots/` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("console-screenshots")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}
