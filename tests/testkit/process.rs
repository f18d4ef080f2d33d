//! `chat-server` as a process of its own, for what only a real process shows: SIGKILL,
//! restarts on the same data, exit codes and what it prints.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::chromium::chat_server_binary;
use crate::{HEALTH_REQUEST, eventually, raw_http, wait_for_health, within};

/// A running `chat-server` binary on a free loopback port, killed when dropped.
pub struct ServerProcess {
    pub address: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Starts the binary with `args` and `--port 0`, reads the port it took from the
    /// address it announces, and waits until `/healthz` is 200. (A port found free
    /// beforehand can be taken by another test in the meantime: in one CI run the
    /// health check here had its connection reset, most likely by another test's
    /// server on that port.)
    pub async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(chat_server_binary())
            .args(args)
            .args(["--port", "0"])
            // At info, where it announces its address, whatever RUST_LOG says.
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chat-server");
        let mut log = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let port = within("the address chat-server announces", async {
            loop {
                let line = log
                    .next_line()
                    .await
                    .expect("read chat-server's log")
                    .expect("chat-server announces its address before it exits");
                if let Some(port) = announced_port(&line) {
                    break port;
                }
            }
        })
        .await;
        // The rest of the log is read and dropped, so that the server never waits on a
        // full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_health(address, 200).await;
        Self { address, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }

    /// SIGKILL: the process gets no chance to tidy up.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill chat-server");
    }
}

/// The status of `GET /healthz` at `address`, if anything answers there.
pub async fn health(address: SocketAddr) -> Option<u16> {
    TcpStream::connect(address).await.ok()?;
    Some(raw_http(address, HEALTH_REQUEST).await.status)
}

/// Waits until something accepts connections on the loopback `port`: `what` has started.
pub async fn wait_until_listening(port: u16, what: &str) {
    eventually(&format!("{what} to listen on port {port}"), async || {
        TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
}

/// The port in chat-server's "chat page: http://127.0.0.1:<port>/" log line.
fn announced_port(line: &str) -> Option<u16> {
    let (_, url) = line.split_once("chat page:")?;
    let (_, port) = url.trim().trim_end_matches('/').rsplit_once(':')?;
    port.parse().ok()
}

/// Where [`free_port`] looks: below the kernel's default range for the local ports of
/// outgoing connections (32768–60999). A port the kernel picked for us from that range
/// could be given to another test's client connection before the process we start
/// binds it.
const TEST_PORTS: Range<u16> = 20_000..32_000;

/// A port that was free a moment ago, for a process a test starts itself (Redis,
/// haproxy, a server given its port). `ServerProcess` needs none: it asks for port 0.
pub fn free_port() -> u16 {
    // Each test process starts at its own place, as the suites run side by side in CI,
    // and moves on with every port it hands out.
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + HANDED_OUT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = TEST_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// A new empty folder under the system's temporary folder, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("chat-{name}-{}-{made}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("make a scratch folder");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
