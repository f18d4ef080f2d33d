//! `chat-bench`: drives any server that speaks `/ws/<id>` (ours, or the tutorial's) and
//! measures what a chat server is for: fan-out.
//!
//! Layout:
//! - `fanout`: N clients, S of them sending M messages each, paced by a window of
//!   unacknowledged messages or by a fixed rate; counts every delivery and its latency.
//! - `idle`: N idle clients held open, for the server's memory per connection, and
//!   churn rounds that open and drop them.
//! - `probe`: the server's CPU time and RSS, read from `/proc/<pid>`.
//! - here: where clients connect, and how a room of them is made ready.
//!
//! A room is ready when every client has seen its own join and then a sentinel's join:
//! the server's total order means every earlier join has been delivered by then.

mod fanout;
mod idle;
mod probe;

pub use fanout::{FanoutPlan, FanoutReport, Latency, Pace, fanout};
pub use idle::{IdlePlan, IdleReport, idle};
pub use probe::{ServerProbe, Usage};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The first id the bench uses; ids are `ID_BASE + n`, the sentinel `ID_BASE - 1`.
pub(crate) const ID_BASE: u64 = 7_000_000_000;

/// Where the clients connect: client `n` uses `servers[n % len]`, so a room spread over
/// several nodes can be driven too.
#[derive(Debug, Clone)]
pub struct Servers(pub Vec<Url>);

impl Servers {
    pub(crate) fn endpoint(&self, client: usize, id: u64) -> String {
        let base = &self.0[client % self.0.len()];
        format!("{}/ws/{id}", base.as_str().trim_end_matches('/'))
    }
}

/// Opens one client's connection, with Nagle off.
async fn connect(url: &str) -> anyhow::Result<Socket> {
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(socket)
}

/// Connects `count` clients, at most `concurrency` handshakes at a time, each of which
/// has seen its own join when this returns. `setup` turns each socket into a running
/// reader and returns the writing half.
pub(crate) async fn connect_all<T: Send + 'static>(
    servers: &Servers,
    count: usize,
    concurrency: usize,
    setup: impl Fn(usize, u64, Socket, Arc<Notify>) -> T + Send + Sync + 'static,
) -> anyhow::Result<Vec<T>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let setup = Arc::new(setup);
    let connected = Arc::new(AtomicUsize::new(0));
    let progress = tokio::spawn(report_progress("connected", connected.clone(), count));
    let mut tasks = Vec::with_capacity(count);
    for client in 0..count {
        let gate = gate.clone();
        let setup = setup.clone();
        let connected = connected.clone();
        let url = servers.endpoint(client, ID_BASE + client as u64);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let socket = connect(&url).await?;
            let joined = Arc::new(Notify::new());
            let handle = setup(client, ID_BASE + client as u64, socket, joined.clone());
            tokio::time::timeout(Duration::from_secs(60), joined.notified())
                .await
                .with_context(|| format!("{url}: no join announced within 60 s"))?;
            connected.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(handle)
        }));
    }
    let mut handles = Vec::with_capacity(count);
    for task in tasks {
        handles.push(task.await??);
    }
    progress.abort();
    Ok(handles)
}

/// Prints `label done/total` to stderr every second until aborted.
pub(crate) async fn report_progress(label: &'static str, done: Arc<AtomicUsize>, total: usize) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        eprintln!("{label} {}/{total}", done.load(Ordering::Relaxed));
    }
}

/// Joins the sentinel and waits until `clients` readers have seen it.
pub(crate) async fn wait_for_sentinel(
    servers: &Servers,
    clients: usize,
    seen: impl Fn() -> usize,
    ready: &Notify,
    timeout: Duration,
) -> anyhow::Result<Socket> {
    let sentinel = connect(&servers.endpoint(0, ID_BASE - 1)).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    while seen() < clients {
        if tokio::time::timeout_at(deadline, ready.notified())
            .await
            .is_err()
        {
            bail!(
                "only {} of {clients} clients saw the sentinel's join within {timeout:?}",
                seen()
            );
        }
    }
    Ok(sentinel)
}
