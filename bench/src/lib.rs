//! `chat-bench`: drives any server that speaks `/ws/<id>` (ours, or the tutorial's) and
//! measures what a chat server is for: fan-out.
//!
//! Layout:
//! - `fanout`: N clients, S of them sending M messages each, paced by a window of
//!   unacknowledged messages or by a fixed rate; counts every delivery and its latency.
//! - `idle`: N idle clients held open, for the server's memory per connection, and
//!   churn rounds that open and drop them.
//! - `resume`: N `chat.v1.json` clients drop at once and come back asking to resume.
//! - `probe`: the server's CPU time and RSS, read from `/proc/<pid>`.
//! - here: where clients connect, and how a room of them is made ready.
//!
//! A room is ready when every client has seen its own join and then a sentinel's join:
//! the server's total order means every earlier join has been delivered by then.

mod fanout;
mod idle;
mod probe;
mod resume;

pub use fanout::{FanoutPlan, FanoutReport, Latency, Pace, fanout};
pub use idle::{IdlePlan, IdleReport, idle};
pub use probe::{ServerProbe, Usage};
pub use resume::{ResumePlan, ResumeReport, resume};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The first id the bench uses; ids are `ID_BASE + n`, the sentinel `ID_BASE - 1`.
pub(crate) const ID_BASE: u64 = 7_000_000_000;

/// Where the clients connect, and how they speak: client `n` uses `urls[n % len]`, so a
/// room spread over several nodes can be driven too.
#[derive(Debug, Clone)]
pub struct Servers {
    pub urls: Vec<Url>,
    /// The room, or the default one.
    pub room: Option<String>,
    /// Whether clients ask for `chat.v1.json`.
    pub v1: bool,
}

impl Servers {
    /// Plain clients in the default room.
    pub fn new(urls: Vec<Url>) -> Self {
        Self {
            urls,
            room: None,
            v1: false,
        }
    }

    pub(crate) fn endpoint(&self, client: usize, id: u64) -> String {
        let base = &self.urls[client % self.urls.len()];
        let room = self
            .room
            .as_ref()
            .map_or(String::new(), |room| format!("?room={room}"));
        format!("{}/ws/{id}{room}", base.as_str().trim_end_matches('/'))
    }

    /// Opens one client's connection to `url`, with Nagle off.
    pub(crate) async fn connect(&self, url: &str) -> anyhow::Result<Socket> {
        // tungstenite zero-fills the free part of its read buffer before every read,
        // the one that finds nothing included: with 16 KiB that was a tenth of the load
        // generator's CPU (by `perf`) in the aligned scenario, CPU the server under test
        // did not get. 4 KiB still holds about fifty of the benchmark's frames.
        let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
        let mut request = url
            .into_client_request()
            .with_context(|| format!("{url} is not a WebSocket URL"))?;
        if self.v1 {
            let protocol = HeaderValue::from_static(chat::v1::SUBPROTOCOL);
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", protocol);
        }
        let (socket, response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .with_context(|| format!("connecting to {url}"))?;
        if self.v1 && response.headers().get("Sec-WebSocket-Protocol").is_none() {
            bail!("{url} does not offer {}", chat::v1::SUBPROTOCOL);
        }
        Ok(socket)
    }

    /// What a client sends to say `text`.
    pub(crate) fn message(&self, text: String) -> Message {
        if self.v1 {
            let request = chat::v1::Request::Message { text, nonce: None };
            Message::text(request.to_json())
        } else {
            Message::text(text)
        }
    }
}

/// The offset, id and text of a v1 message event as the server writes it (fields in
/// this order, a text without escapes); `None` for anything else.
fn quick_message(frame: &str) -> Option<(u64, &str, &str)> {
    // Single-character splits and fixed prefixes only: they cost a `memchr` or a
    // comparison, where a string pattern sets up a searcher for every message.
    let rest = frame.strip_prefix(r#"{"offset":"#)?;
    let (offset, rest) = rest.split_once(',')?;
    let rest = rest.strip_prefix(r#""ts":"#)?;
    let (_, rest) = rest.split_once(',')?;
    let rest = rest.strip_prefix(r#""id":""#)?;
    let (id, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(r#","type":"message","text":""#)?;
    let (text, _) = rest.split_once('"')?;
    if text.contains('\\') {
        return None;
    }
    Some((offset.parse().ok()?, id, text))
}

/// Reads one connection's frames as the tutorial's protocol says them, so that every
/// scenario reads one format: v1 live events are turned back into their plain text,
/// and the welcome and the history replayed after it are skipped.
pub(crate) struct PlainReader {
    v1: bool,
    /// Events up to this offset are history.
    replayed_until: u64,
    /// The last v1 message as plain text, its buffer reused from message to message.
    line: String,
}

impl PlainReader {
    pub(crate) fn new(servers: &Servers) -> Self {
        Self {
            v1: servers.v1,
            replayed_until: 0,
            line: String::new(),
        }
    }

    pub(crate) fn read<'a>(&'a mut self, text: &'a str) -> Option<&'a str> {
        if !self.v1 {
            return Some(text);
        }
        // The load generator must not be what limits a run: the server's messages are
        // read without a JSON parser, which a full parse of every delivery made the
        // bottleneck (a third of the deliveries per second).
        self.line.clear();
        if let Some((offset, id, said)) = quick_message(text) {
            if offset <= self.replayed_until {
                return None;
            }
            for part in ["Client #", id, ": ", said] {
                self.line.push_str(part);
            }
            return Some(&self.line);
        }
        match chat::v1::ServerFrame::parse(text) {
            Ok(chat::v1::ServerFrame::Event(event)) if event.offset > self.replayed_until => {
                self.line = event.plain()?;
                Some(&self.line)
            }
            Ok(chat::v1::ServerFrame::Welcome(welcome)) => {
                self.replayed_until = welcome.welcome.offset;
                None
            }
            _ => None,
        }
    }
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
        let servers = servers.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let socket = servers.connect(&url).await?;
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
    let sentinel = servers.connect(&servers.endpoint(0, ID_BASE - 1)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use chat::v1::{Event, EventKind};

    #[test]
    fn the_quick_reader_reads_what_the_server_writes() {
        let event = |text: &str| Event {
            offset: 12,
            ts: 1_700_000_000_000,
            id: "7000000001".into(),
            name: None,
            kind: EventKind::said(text, None),
        };
        assert_eq!(
            quick_message(&event("b 3 99").to_json()),
            Some((12, "7000000001", "b 3 99"))
        );
        assert_eq!(quick_message(&event("say \"hi\"").to_json()), None);
        let join = Event {
            kind: EventKind::Join,
            ..event("")
        };
        assert_eq!(quick_message(&join.to_json()), None);
    }
}
