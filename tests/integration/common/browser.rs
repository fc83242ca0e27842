//! Headless Chromium driven through chromedriver (WebDriver), for the
//! dashboard's tests. Each [`Browser`] runs its own chromedriver on a free
//! loopback port; dropping it ends that chromedriver and its browser.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasmvisor::cli::client::Client as Http;

/// How long anything the page should do may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Browsers take turns: a 2-core machine runs one at a time far more
/// predictably than several (and the tests stay independent).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver process and a session in the Chromium it started.
pub struct Browser {
    pub client: Client,
    driver: Child,
    http: Http,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// `name`'s path if an executable of that name is on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (with the
    /// reason on stderr) when either is not installed, the one case the
    /// browser tests skip.
    pub async fn start() -> Option<Browser> {
        let Some(driver_bin) = on_path("chromedriver") else {
            eprintln!("skipped: chromedriver is not on PATH (apt install chromium-driver)");
            return None;
        };
        let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| on_path(n))
        else {
            eprintln!("skipped: no chromium, chromium-browser or google-chrome on PATH");
            return None;
        };
        let turn = TURN.lock().await;
        let port = free_port();
        let mut command = Command::new(driver_bin);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that drop can end it and the browser
        // it started together even when a test panics mid-session.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().expect("chromedriver starts");
        let http = Http::new(&format!("127.0.0.1:{port}"), None);
        let mut guard = DriverGuard(Some(driver));
        let deadline = Instant::now() + LIMIT;
        loop {
            let ready = http
                .json(hyper::Method::GET, "/status", None)
                .await
                .is_ok_and(|s| s["value"]["ready"] == json!(true));
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer /status within {LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,900",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver opens a Chromium session");
        Some(Browser {
            client,
            driver: guard.0.take().expect("the driver is still guarded"),
            http,
            _turn: turn,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("the browser opens {url}: {e}"));
    }

    /// The browser's console and network log entries since the last read,
    /// as chromedriver reports them (`level`, `message`, `source`).
    pub async fn log(&self) -> Vec<Value> {
        let session = self
            .client
            .session_id()
            .await
            .expect("the session has an id")
            .expect("the session is open");
        let answer = self
            .http
            .json(
                hyper::Method::POST,
                &format!("/session/{session}/se/log"),
                Some(&json!({"type": "browser"})),
            )
            .await
            .expect("chromedriver returns the browser log");
        answer["value"]
            .as_array()
            .cloned()
            .expect("the log is a list")
    }

    /// The log entries at level SEVERE (console errors, failed loads).
    pub async fn severe(&self) -> Vec<Value> {
        self.log()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .collect()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("the page runs {script:?}: {e}"))
    }

    /// Polls `script` until it returns something truthy (not null, false,
    /// "" or 0) and returns that; panics with `what` after [`LIMIT`].
    pub async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let last = match self.client.execute(script, args.clone()).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => v,
                Err(e) => json!(format!("error: {e}")),
            };
            assert!(
                Instant::now() < deadline,
                "timed out after {LIMIT:?} waiting for {what}; last result {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the first element matching `css`, or null.
    pub async fn text(&self, css: &str) -> Value {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        )
        .await
    }

    /// Waits until the element matching `css` shows text containing `want`.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let got = self
            .wait_js(
                &format!("{css} to show {want:?}"),
                "const e = document.querySelector(arguments[0]);
                 return e && e.textContent.includes(arguments[1]) ? e.textContent : null;",
                vec![json!(css), json!(want)],
            )
            .await;
        got.as_str().unwrap_or_default().to_string()
    }

    /// Waits until an element matching `css` exists and is displayed.
    pub async fn wait_visible(&self, css: &str) {
        self.wait_js(
            &format!("{css} to be visible"),
            "const e = document.querySelector(arguments[0]);
             return !!e && e.getClientRects().length > 0;",
            vec![json!(css)],
        )
        .await;
    }

    /// Clicks the element matching `css` (found with a wait).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let found = self.client.find(Locator::Css(css)).await;
            match found {
                Ok(e) => match e.click().await {
                    Ok(()) => return,
                    Err(err) => assert!(Instant::now() < deadline, "cannot click {css}: {err}"),
                },
                Err(err) => assert!(Instant::now() < deadline, "no {css} to click: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the (empty) input matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self
            .client
            .wait()
            .at_most(LIMIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} to type into: {e}"));
        input
            .clear()
            .await
            .unwrap_or_else(|e| panic!("cannot clear {css}: {e}"));
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Ends the session (the browser quits) and chromedriver.
    pub async fn close(self) {
        // Quitting the session lets Chromium exit cleanly; drop then ends
        // chromedriver.
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        end(&mut self.driver);
    }
}

/// Ends a chromedriver whose session setup failed part-way.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(mut d) = self.0.take() {
            end(&mut d);
        }
    }
}

/// Kills chromedriver's process group (it and the browser it started),
/// then reaps chromedriver.
fn end(driver: &mut Child) {
    if let Ok(Some(_)) = driver.try_wait() {
        return;
    }
    let group = format!("-{}", driver.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}
