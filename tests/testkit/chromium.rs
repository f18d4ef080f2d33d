//! Helpers for the tests that drive real Chromium through chromedriver: pages, their
//! messages and input, screenshots, and the binaries they run beside.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::{PATIENCE, TestServer, repository, within};

pub use fantoccini::Client as Page;

/// A chromedriver process on a free port, and every browser it starts: all of them
/// end when this is dropped, also when the test fails (dropped while unwinding).
pub struct ChromeDriver {
    port: u16,
    process: Child,
    /// The profile directories of the browsers opened, removed at the end.
    profiles: Mutex<Vec<PathBuf>>,
}

impl Drop for ChromeDriver {
    /// chromedriver does not end the browsers it started when it is killed, nor when a
    /// test fails before closing its session: they would stay for ever, 9 processes a
    /// browser. chromedriver leads a process group of its own, which its browsers
    /// join, so one signal to the group ends them all; a browser process that left the
    /// group would still name its profile on its command line. (Chromium's crash
    /// reporter, in a session of its own, exits by itself once its browser is gone.)
    fn drop(&mut self) {
        if let Some(leader) = self.process.id() {
            signal_kill(&format!("-{leader}"));
        }
        let profiles = std::mem::take(
            &mut *self
                .profiles
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if profiles.is_empty() {
            return;
        }
        for pid in processes_naming(&profiles) {
            signal_kill(&pid.to_string());
        }
        for profile in profiles {
            // Best effort: a browser still writing as it dies may leave a file behind.
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// Sends SIGKILL to a process, or with a leading `-` to a process group, with kill(1):
/// the workspace forbids the `unsafe` a direct call would take.
fn signal_kill(target: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The processes whose command line names one of `profiles`, from /proc.
fn processes_naming(profiles: &[PathBuf]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                profiles
                    .iter()
                    .any(|profile| cmdline.contains(&*profile.to_string_lossy()))
            })
        })
        .collect()
}

impl ChromeDriver {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, which the browsers it starts join: see `Drop`.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium-driver)");
        within("chromedriver to listen", async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        Self {
            port,
            process,
            profiles: Mutex::new(Vec::new()),
        }
    }

    /// A fresh headless Chromium with its own profile, `width` by `height`.
    pub async fn open(&self, width: u32, height: u32) -> Page {
        self.open_with(width, height, json!({}), Theme::Light, &[])
            .await
    }

    /// A desktop window that trusts the TLS certificate whose key has this SHA-256
    /// SPKI hash (base64), and no other that the system does not: how a test's
    /// private certificate passes without turning certificate checks off.
    pub async fn open_trusting(&self, width: u32, height: u32, spki_sha256: &str) -> Page {
        let trust = format!("--ignore-certificate-errors-spki-list={spki_sha256}");
        self.open_with(width, height, json!({}), Theme::Light, &[trust])
            .await
    }

    /// A phone: Chromium's mobile emulation, since a desktop window cannot be narrower
    /// than 500 pixels.
    pub async fn open_phone(&self, width: u32, height: u32) -> Page {
        self.open_with(width, height, phone(width, height), Theme::Light, &[])
            .await
    }

    /// A desktop window or, with `phone`, a phone, in `theme`.
    pub async fn open_themed(&self, width: u32, height: u32, phone: bool, theme: Theme) -> Page {
        let emulation = if phone {
            self::phone(width, height)
        } else {
            json!({})
        };
        self.open_with(width, height, emulation, theme, &[]).await
    }

    async fn open_with(
        &self,
        width: u32,
        height: u32,
        mobile_emulation: Value,
        theme: Theme,
        extra_args: &[String],
    ) -> Page {
        let profile = std::env::temp_dir().join(format!(
            "chat-browser-test-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        self.profiles
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(profile.clone());
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
        ];
        args.extend_from_slice(extra_args);
        if theme == Theme::Dark {
            // Chromium answers `prefers-color-scheme: dark` with this.
            args.push("--force-dark-mode".to_owned());
        }
        let capabilities = json!({
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "mobileEmulation": mobile_emulation,
                "args": args,
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        // chromedriver may take connections a moment before it serves them.
        let mut attempts = 0;
        loop {
            let session = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await;
            match session {
                Ok(page) => return page,
                Err(error) if attempts < 5 => {
                    attempts += 1;
                    eprintln!("no chromium session yet ({error}); retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => panic!("no chromium session: {error}"),
            }
        }
    }
}

/// A chromedriver command of its own, outside the W3C protocol fantoccini speaks:
/// `POST /session/<id>/<path>` with `body`.
#[derive(Debug)]
struct ChromeCommand {
    path: &'static str,
    body: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for ChromeCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

/// Runs one command of the Chrome DevTools Protocol on the page (`Network.enable`,
/// `Emulation.setEmulatedMedia`, …) and returns its result.
pub async fn devtools(page: &Page, command: &str, params: Value) -> Value {
    page.issue_cmd(ChromeCommand {
        path: "goog/cdp/execute",
        body: json!({ "cmd": command, "params": params }),
    })
    .await
    .unwrap_or_else(|error| panic!("{command}: {error}"))
}

/// Makes the page see `forced-colors: active`, as with Windows' high-contrast themes.
pub async fn emulate_forced_colours(page: &Page) {
    let features = json!({ "features": [{ "name": "forced-colors", "value": "active" }] });
    devtools(page, "Emulation.setEmulatedMedia", features).await;
}

/// What the page wrote to the browser's console since the last call (errors such as
/// Content-Security-Policy violations among them).
pub async fn console(page: &Page) -> Vec<String> {
    let entries = page
        .issue_cmd(ChromeCommand {
            path: "se/log",
            body: json!({ "type": "browser" }),
        })
        .await
        .expect("read the browser's log");
    entries
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The colour scheme the browser prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Theme {
    Light,
    Dark,
}

fn phone(width: u32, height: u32) -> Value {
    json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2 } })
}

/// What axe-core (the file `CHAT_AXE_JS` names; `.ci/run` installs it from npm) finds
/// wrong with the page as it is now: one line per rule and element.
pub async fn accessibility_violations(page: &Page) -> Vec<String> {
    let path = std::env::var("CHAT_AXE_JS")
        .expect("CHAT_AXE_JS names axe.min.js (npm install axe-core; .ci/run does)");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    page.execute(&source, vec![]).await.expect("load axe-core");
    let found = page
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               axe.run(document, { resultTypes: ["violations"] })
                 .then(result => done(result.violations.flatMap(rule => rule.nodes.map(node =>
                    rule.id + " (" + rule.impact + ") at " + node.target.join(" ") + ": " +
                    node.failureSummary.replace(/\s+/g, " ")))))
                 .catch(error => done(["axe failed: " + error]));"#,
            vec![],
        )
        .await
        .expect("run axe-core");
    serde_json::from_value(found).expect("a list of violations")
}

/// Nanoseconds since 1970: a profile directory name no other run uses.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}

/// A message's text without what the page adds around it (times, buttons), as a
/// function for the page's scripts: `Client #7: hello`, as the tutorial's page shows it.
const MESSAGE_TEXT: &str = "const messageText = li => { \
       const text = li.cloneNode(true); \
       text.querySelectorAll('.meta').forEach(extra => extra.remove()); \
       return text.textContent; };";

/// Loads the page `server` serves and waits until it shows its own join.
pub async fn load_the_chat(page: &Page, server: &TestServer) {
    page.goto(&format!("http://{}/", server.address))
        .await
        .expect("load the page");
    let id = client_id(page).await;
    wait_for_message(page, &format!("Client #{id} has entered the chat")).await;
}

/// The texts of the page's messages, in order.
pub async fn messages(page: &Page) -> Vec<String> {
    let texts = page
        .execute(
            &format!(
                "{MESSAGE_TEXT} \
                 return Array.from(document.querySelectorAll('#messages li'), messageText);"
            ),
            vec![],
        )
        .await
        .expect("read the messages");
    serde_json::from_value(texts).expect("a list of strings")
}

/// The text of the page's first or last message (`first_or_last`), if it has any.
pub async fn message_at(page: &Page, first_or_last: &str) -> Value {
    eval(
        page,
        &format!(
            "{MESSAGE_TEXT} \
             const li = document.querySelector('#messages li:{first_or_last}-child'); \
             return li && messageText(li);"
        ),
    )
    .await
}

pub async fn eval(page: &Page, script: &str) -> Value {
    page.execute(script, vec![]).await.expect(script)
}

/// Waits until `condition` holds for the page's messages.
pub async fn wait_until(page: &Page, what: &str, condition: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let shown = messages(page).await;
        if condition(&shown) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; it shows {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_for_message(page: &Page, text: &str) {
    wait_until(page, text, |shown| shown.iter().any(|shown| shown == text)).await;
}

pub async fn wait_for_status(page: &Page, text: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = text_of(page, "status").await;
        if status.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never said {text:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn client_id(page: &Page) -> String {
    text_of(page, "ws-id").await
}

/// The element with this `id`, which must be there.
async fn element(page: &Page, id: &str) -> fantoccini::elements::Element {
    page.find(Locator::Id(id))
        .await
        .unwrap_or_else(|error| panic!("#{id}: {error}"))
}

/// The text the element with this `id` shows.
pub async fn text_of(page: &Page, id: &str) -> String {
    element(page, id)
        .await
        .text()
        .await
        .unwrap_or_else(|error| panic!("the text of #{id}: {error}"))
}

/// Whether the element with this `id` is shown.
pub async fn is_shown(page: &Page, id: &str) -> bool {
    element(page, id)
        .await
        .is_displayed()
        .await
        .unwrap_or_else(|error| panic!("whether #{id} is shown: {error}"))
}

/// Clicks the element with this id.
pub async fn click(page: &Page, id: &str) {
    element(page, id)
        .await
        .click()
        .await
        .unwrap_or_else(|error| panic!("clicking #{id}: {error}"));
}

/// Waits until `script` returns `expected`.
pub async fn wait_for_value(page: &Page, what: &str, script: &str, expected: Value) {
    within(what, async {
        while eval(page, script).await != expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Puts `text` in the input and presses Enter. The value is set by script because
/// chromedriver cannot type characters outside the Basic Multilingual Plane (emoji).
pub async fn say(page: &Page, text: &str) {
    page.execute(
        "document.getElementById('messageText').value = arguments[0];",
        vec![json!(text)],
    )
    .await
    .expect("set the input");
    press_enter(page).await;
}

pub async fn press_enter(page: &Page) {
    type_keys(page, "\u{E007}").await;
}

/// Types `keys` into the input, as key presses (WebDriver's codes for Enter, Shift...).
pub async fn type_keys(page: &Page, keys: &str) {
    type_keys_into(page, "messageText", keys).await;
}

/// Types `keys` into the element with this `id`, as key presses (WebDriver's codes
/// for Enter, Escape...).
pub async fn type_keys_into(page: &Page, id: &str, keys: &str) {
    element(page, id)
        .await
        .send_keys(keys)
        .await
        .unwrap_or_else(|error| panic!("typing into #{id}: {error}"));
}

pub async fn input_value(page: &Page) -> String {
    eval(page, "return document.getElementById('messageText').value;")
        .await
        .as_str()
        .expect("a string")
        .to_owned()
}

pub fn artifacts() -> PathBuf {
    let directory = repository().join("target/browser");
    std::fs::create_dir_all(&directory).expect("target/browser");
    directory
}

pub async fn screenshot(page: &Page, name: &str) {
    let png = page.screenshot().await.expect("a screenshot");
    std::fs::write(artifacts().join(name), png).expect("save the screenshot");
}

/// The `chat-tui` binary that `cargo test --workspace` built beside this test.
pub fn chat_tui_binary() -> PathBuf {
    let deps = std::env::current_exe().expect("the test binary");
    let binary = deps
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("chat-tui");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with --workspace",
        binary.display()
    );
    binary
}

/// The `chat-server` binary that `cargo test --workspace` built beside this test.
pub fn chat_server_binary() -> PathBuf {
    let binary = chat_tui_binary().with_file_name("chat-server");
    assert!(binary.exists(), "{} is missing", binary.display());
    binary
}

/// How long a test waits for port 8000, which another test (or test binary) may hold.
const PORT_8000_PATIENCE: Duration = Duration::from_secs(240);

/// Waits until port 8000 is free, then holds it. The pages opened from disk talk to
/// `ws://localhost:8000`, so the tests that open them take turns for the port.
pub async fn port_8000() -> TcpListener {
    let deadline = Instant::now() + PORT_8000_PATIENCE;
    loop {
        match TcpListener::bind("127.0.0.1:8000").await {
            Ok(listener) => return listener,
            Err(error) if Instant::now() < deadline => {
                eprintln!("port 8000 is busy ({error}); waiting for it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => panic!("port 8000 never became free: {error}"),
        }
    }
}
