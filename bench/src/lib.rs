//! `chat-bench`: drives any server that speaks `/ws/<id>` (ours, or the tutorial's) and
//! measures what a chat server is for: fan-out.
//!
//! Layout:
//! - `fanout`: N clients, S of them sending M messages each, paced by a window of
//!   unacknowledged messages or by a fixed rate; counts every delivery and its latency.
//! - `idle`: N idle clients held open, for the server's memory per connection, and
//!   churn rounds that open and drop them.
//! - `resume`: N `chat.v1.json` clients drop at once and come back asking to resume.
//! - `growth`: for each size N, a fresh server, N clients joining one room at once,
//!   one message to all, and all N reconnecting with resume: how a room's costs grow.
//! - `history`: a room filled with N messages, written to at a fixed rate while
//!   `chat.v2.json` readers page back through it and search it.
//! - here: where clients connect, in which protocol (plain, `chat.v1.json` or
//!   `chat.v2.json`), and how a room of them is made ready.
//! - `probe`: the server's CPU time and RSS, read from `/proc/<pid>`.
//! - `lean`: a client that only reads, lighter than tokio-tungstenite, for the growth
//!   scenario's thousands of readers.
//! - `readers`: the threads that read those clients, an epoll each, no task per client.
//!
//! A room is ready when every client has seen its own join and then a sentinel's join:
//! the server's total order means every earlier join has been delivered by then.

mod fanout;
mod growth;
mod history;
mod idle;
mod lean;
mod probe;
mod readers;
mod resume;

pub use fanout::{FanoutPlan, FanoutReport, Latency, MixReport, Pace, TYPING_PERIOD, fanout};
pub use growth::{GrowthPlan, GrowthReport, growth};
pub use history::{FILL_WINDOW, HistoryPlan, HistoryReport, RequestReport, history};
pub use idle::{IdlePlan, IdleReport, idle};
pub use probe::{ServerProbe, Usage};
pub use readers::EventWait;
pub use resume::{ResumePlan, ResumeReport, resume};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
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

/// What the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The tutorial's plain lines: no subprotocol asked for.
    #[default]
    Plain,
    /// `chat.v1.json`.
    V1,
    /// `chat.v2.json`: v1's events and more (typing, reactions, edits).
    V2,
}

impl Protocol {
    /// The subprotocol the clients ask for, if any.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::V1 => Some(chat::v1::SUBPROTOCOL),
            Self::V2 => Some(chat::v2::SUBPROTOCOL),
        }
    }
}

/// Where the clients connect, and how they speak: client `n` uses `urls[n % len]`, so a
/// room spread over several nodes can be driven too.
#[derive(Debug, Clone)]
pub struct Servers {
    pub urls: Vec<Url>,
    /// The room, or the default one.
    pub room: Option<String>,
    pub protocol: Protocol,
}

impl Servers {
    /// Plain clients in the default room.
    pub fn new(urls: Vec<Url>) -> Self {
        Self {
            urls,
            room: None,
            protocol: Protocol::Plain,
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
        let asked = self.protocol.subprotocol();
        if let Some(protocol) = asked {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        }
        let (socket, response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .with_context(|| format!("connecting to {url}"))?;
        if let Some(protocol) = asked {
            let selected = response.headers().get("Sec-WebSocket-Protocol");
            if selected.and_then(|selected| selected.to_str().ok()) != Some(protocol) {
                bail!("{url} does not offer {protocol} (it selected {selected:?})");
            }
        }
        Ok(socket)
    }

    /// What a client sends to say `text`.
    pub(crate) fn message(&self, text: String) -> Message {
        match self.protocol {
            Protocol::Plain => Message::text(text),
            Protocol::V1 => {
                let request = chat::v1::Request::Message { text, nonce: None };
                Message::text(request.to_json())
            }
            Protocol::V2 => {
                let request = chat::v2::Request::Message {
                    text,
                    nonce: None,
                    reply_to: None,
                    kind: None,
                };
                Message::text(request.to_json())
            }
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

/// What v2 sends besides join, leave and message, counted by [`PlainReader`]: live
/// frames only, never the history replayed after the welcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extras {
    /// Ephemeral `typing` frames.
    pub(crate) typing: u64,
    /// `react` events.
    pub(crate) reactions: u64,
    /// `error` frames (a refused reaction, say): a run that has any is suspect.
    pub(crate) errors: u64,
}

/// A v2 frame's `type` and `offset`, all that is read of the frames the bench does not
/// turn into text.
#[derive(Deserialize)]
struct Tagged<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    offset: Option<u64>,
}

/// Reads one connection's frames as the tutorial's protocol says them, so that every
/// scenario reads one format: v1 and v2 live events are turned back into their plain
/// text, and the welcome and the history replayed after it are skipped. What else v2
/// sends is counted in [`Extras`].
pub(crate) struct PlainReader {
    protocol: Protocol,
    /// Events up to this offset are history.
    replayed_until: u64,
    /// The last message as plain text, its buffer reused from message to message.
    line: String,
    /// The offset of the last live message read, something to react to.
    pub(crate) last_message: u64,
    pub(crate) extras: Extras,
}

impl PlainReader {
    pub(crate) fn new(servers: &Servers) -> Self {
        Self {
            protocol: servers.protocol,
            replayed_until: 0,
            line: String::new(),
            last_message: 0,
            extras: Extras::default(),
        }
    }

    pub(crate) fn read<'a>(&'a mut self, text: &'a str) -> Option<&'a str> {
        if self.protocol == Protocol::Plain {
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
            self.last_message = offset;
            for part in ["Client #", id, ": ", said] {
                self.line.push_str(part);
            }
            return Some(&self.line);
        }
        if self.protocol == Protocol::V2 {
            let tagged: Tagged = serde_json::from_str(text).ok()?;
            let live = tagged
                .offset
                .is_none_or(|offset| offset > self.replayed_until);
            match tagged.kind {
                "welcome" | "join" | "leave" | "message" => {}
                "typing" => {
                    self.extras.typing += 1;
                    return None;
                }
                "react" => {
                    self.extras.reactions += u64::from(live);
                    return None;
                }
                "error" => {
                    self.extras.errors += 1;
                    return None;
                }
                _ => return None,
            }
        }
        match chat::v1::ServerFrame::parse(text) {
            Ok(chat::v1::ServerFrame::Event(event)) if event.offset > self.replayed_until => {
                if matches!(event.kind, chat::v1::EventKind::Message { .. }) {
                    self.last_message = event.offset;
                }
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
            kind: EventKind::join(),
            ..event("")
        };
        assert_eq!(quick_message(&join.to_json()), None);
    }

    #[test]
    fn a_v2_reader_counts_typing_reactions_and_errors_apart_from_messages() {
        let servers = Servers {
            protocol: Protocol::V2,
            ..Servers::new(Vec::new())
        };
        let mut reader = PlainReader::new(&servers);
        let welcome = r#"{"type":"welcome","id":"7","room":"main","epoch":"e","offset":3,"members":[],"recovered":false,"verified":false,"limits":{"max_message_bytes":4096,"max_nonce_chars":64,"history":100},"read":0}"#;
        assert_eq!(reader.read(welcome), None);
        // History: a replayed reaction is not a live one.
        let replayed = r#"{"offset":3,"ts":1,"id":"8","type":"react","target":2,"emoji":"x"}"#;
        assert_eq!(reader.read(replayed), None);
        let join = r#"{"offset":4,"ts":1,"id":"7","type":"join"}"#;
        assert_eq!(reader.read(join), Some("Client #7 has entered the chat"));
        let message = r#"{"offset":5,"ts":1,"id":"8","type":"message","text":"b 0 1"}"#;
        assert_eq!(reader.read(message), Some("Client #8: b 0 1"));
        assert_eq!(reader.last_message, 5);
        let react = r#"{"offset":6,"ts":1,"id":"8","type":"react","target":5,"emoji":"x"}"#;
        assert_eq!(reader.read(react), None);
        assert_eq!(reader.read(r#"{"type":"typing","id":"9"}"#), None);
        assert_eq!(
            reader.read(r#"{"type":"typing","id":"9","name":"Ada"}"#),
            None
        );
        let error = r#"{"type":"error","code":"invalid","message":"no"}"#;
        assert_eq!(reader.read(error), None);
        let edit = r#"{"offset":7,"ts":1,"id":"8","type":"edit","target":5,"text":"b"}"#;
        assert_eq!(reader.read(edit), None);
        assert_eq!(
            reader.extras,
            Extras {
                typing: 2,
                reactions: 1,
                errors: 1
            }
        );
        assert_eq!(reader.last_message, 5);
    }
}
