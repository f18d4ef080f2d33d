//! The only part that touches the socket: the server address, connecting (ws or wss),
//! and the reconnect loop with backoff that keeps the client going through outages.
//! It asks for `chat.v2.json` and `chat.v1.json` and speaks the richer the server
//! selects, reconnecting where it left off (`?since=&epoch=`); with a server that
//! offers neither (the tutorial's), the plain protocol.
//! What cannot fix itself (a wrong path or host, TLS to a plain server) is said in
//! words and not retried until the user asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chat::ClientId;
use chat::backoff::Backoff;
use chat::v1::{self, DisplayName, RoomName, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::event::{Beside, Event, NetEvent, Protocol};

/// A connection attempt that has not finished by then has failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which server certificates are trusted over `wss://`.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// Those the web's public certificate authorities issued.
    #[default]
    WebPki,
    /// Only those a private CA issued (`--ca-cert`).
    Ca(Arc<rustls::ClientConfig>),
    /// Any at all (`--insecure`).
    Any,
}

impl Trust {
    /// Trusts the CA certificates in the PEM file at `path`, and no other.
    pub fn ca_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let shown = path.display();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read the CA certificate {shown}"))?
        {
            let cert = cert.with_context(|| format!("cannot read the CA certificate {shown}"))?;
            roots
                .add(cert)
                .with_context(|| format!("{shown} holds a certificate that cannot be a CA"))?;
        }
        if roots.is_empty() {
            bail!("{shown} holds no certificate (a PEM file with BEGIN CERTIFICATE is expected)");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::Ca(Arc::new(config)))
    }

    /// tungstenite's TLS set-up for this trust; `None` is its own, the web's CAs.
    fn connector(&self) -> Option<Connector> {
        match self {
            Self::WebPki => None,
            Self::Ca(config) => Some(Connector::Rustls(config.clone())),
            Self::Any => Some(insecure_connector()),
        }
    }
}

/// Who the client says it is, beyond its id.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// A token proving the id, for a server with `--jwt-secret`; sent in the
    /// `Authorization` header, so that it stays out of URLs and their logs.
    pub token: Option<String>,
    /// The name to go by (`?name=`); a server that checks tokens takes the token's.
    pub name: Option<DisplayName>,
}

/// Where to connect, and how.
#[derive(Debug, Clone)]
pub struct Target {
    /// The full endpoint: the server's base URL with `/ws/<id>` appended, and the
    /// room and name in its query.
    pub url: Url,
    pub trust: Trust,
    pub credentials: Credentials,
    /// The richest protocol to ask for (the full-screen client asks for `chat.v2.json`,
    /// and takes `chat.v1.json` too; pipe mode speaks plain).
    pub offer: Protocol,
}

/// Where a `chat.v1.json` client left off: the last event it saw, in which history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub room: RoomName,
    pub epoch: String,
    pub offset: u64,
}

impl Target {
    /// The endpoint for `id` on the server at `base`: `ws` and `wss` are taken as they
    /// are, `http` and `https` mean the same, and a base path is kept, so
    /// `wss://host/chat` gives `wss://host/chat/ws/<id>`.
    pub fn new(
        base: &str,
        id: &ClientId,
        trust: Trust,
        credentials: Credentials,
    ) -> anyhow::Result<Self> {
        let mut url = Url::parse(base).with_context(|| format!("invalid server URL {base:?}"))?;
        let scheme = match url.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            other => bail!("invalid server URL {base:?}: use ws:// or wss://, not {other}://"),
        };
        if url.host_str().is_none() {
            bail!("invalid server URL {base:?}: it has no host");
        }
        url.set_scheme(scheme)
            .map_err(|()| anyhow::anyhow!("invalid server URL {base:?}"))?;
        let path = format!("{}/ws/{id}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        let target = Self {
            url,
            trust,
            credentials,
            offer: Protocol::Plain,
        };
        Ok(target.in_room(&RoomName::default()))
    }

    /// The same endpoint in `room` (`?room=`, left out for the default room).
    pub fn in_room(&self, room: &RoomName) -> Self {
        let mut url = self.url.clone();
        url.set_query(None);
        if *room != RoomName::default() {
            url.query_pairs_mut().append_pair("room", room.as_str());
        }
        if let Some(name) = &self.credentials.name {
            url.query_pairs_mut().append_pair("name", name.as_str());
        }
        Self {
            url,
            ..self.clone()
        }
    }

    /// The endpoint as people are shown it: without the query, whose name, room and
    /// place in the history are said elsewhere.
    pub fn shown(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.to_string()
    }

    /// The same endpoint, asking to resume after `resume`'s last event.
    fn resuming(&self, resume: &Resume) -> Self {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("since", &resume.offset.to_string())
            .append_pair("epoch", &resume.epoch);
        Self {
            url,
            ..self.clone()
        }
    }

    /// Opens the WebSocket, failing after 10 s (`CONNECT_TIMEOUT`); says which protocol
    /// the server selected.
    pub async fn connect(&self) -> Result<(Socket, Protocol), Failure> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.attempt()).await {
            Err(_) => Err(Failure::Passing(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
            Ok(result) => result,
        }
    }

    async fn attempt(&self) -> Result<(Socket, Protocol), Failure> {
        let port = self
            .url
            .port_or_known_default()
            .expect("ws and wss have default ports");
        // The name is looked up here rather than inside tungstenite, so that a host that
        // does not exist is told apart from one that does not answer.
        let addresses: Vec<SocketAddr> = match self.url.host() {
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|error| {
                    Failure::Lasting(format!(
                        "cannot find the host {name} ({error}): check the name in --server"
                    ))
                })?
                .collect(),
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            None => return Err(Failure::Lasting("the server URL has no host".into())),
        };
        let stream = TcpStream::connect(&addresses[..])
            .await
            .map_err(|error| Failure::Passing(error.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|error| Failure::Lasting(error.to_string()))?;
        // Both at once: the server selects the richest it speaks (an older one, v1),
        // and one that speaks neither answers without any (plain).
        let offered = match self.offer {
            Protocol::Plain => None,
            Protocol::V1 => Some(HeaderValue::from_static(v1::SUBPROTOCOL)),
            Protocol::V2 => Some(HeaderValue::from_static(OFFER_V2)),
        };
        if let Some(offered) = offered {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", offered);
        }
        if let Some(token) = &self.credentials.token {
            let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Failure::Lasting("the token has characters a header cannot carry".into())
            })?;
            request.headers_mut().insert("Authorization", bearer);
        }
        let connector = self.trust.connector();
        let (socket, response) =
            tokio_tungstenite::client_async_tls_with_config(request, stream, None, connector)
                .await
                .map_err(|error| Failure::of(error, &self.url))?;
        let selected = response.headers().get("Sec-WebSocket-Protocol");
        let protocol = if selected.is_some_and(|protocol| protocol == chat::v2::SUBPROTOCOL) {
            Protocol::V2
        } else if selected.is_some_and(|protocol| protocol == v1::SUBPROTOCOL) {
            Protocol::V1
        } else {
            Protocol::Plain
        };
        Ok((socket, protocol))
    }
}

/// The `Sec-WebSocket-Protocol` offer of a client that speaks both JSON protocols.
const OFFER_V2: &str = "chat.v2.json, chat.v1.json";

/// Why a connection attempt failed, in words for the person at the keyboard, and
/// whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The server may be restarting, or the network coming back: worth retrying.
    #[error("{0}")]
    Passing(String),
    /// The address or the set-up is wrong, and retrying will not change that.
    #[error("{0}")]
    Lasting(String),
    /// The server does not speak `chat.v1.json`: the plain protocol it is.
    #[error("the server does not offer chat.v1.json")]
    PlainOnly,
}

impl Failure {
    fn of(error: tungstenite::Error, url: &Url) -> Self {
        match error {
            tungstenite::Error::Http(response) => {
                let status = response.status();
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let said = body.lines().next().unwrap_or("").trim();
                let refusal = match said {
                    "" => format!("the server refused: HTTP {status}"),
                    said => format!("the server refused: HTTP {status}: {said}"),
                };
                match status.as_u16() {
                    404 => Self::Lasting(format!(
                        "nothing is served at {} on this server (HTTP 404): check the server URL and its path",
                        url.path()
                    )),
                    // Busy, rate-limited, restarting or behind a failing proxy: it passes.
                    408 | 429 | 500..=599 => Self::Passing(refusal),
                    _ => Self::Lasting(refusal),
                }
            }
            tungstenite::Error::Io(error) => {
                let tls = error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                match tls {
                    Some(rustls::Error::InvalidMessage(_)) => Self::Lasting(
                        "the server did not answer in TLS: use ws:// for a server without TLS"
                            .into(),
                    ),
                    Some(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. },
                    )) => Self::Lasting(format!(
                        "the server's certificate is not for the host {}: check the name in --server",
                        url.host_str().unwrap_or("")
                    )),
                    Some(rustls::Error::InvalidCertificate(why)) => Self::Lasting(format!(
                        "the server's certificate is not trusted ({why:?}); give the CA that issued it with --ca-cert FILE (or, for a throwaway test server only, --insecure)"
                    )),
                    _ => Self::Passing(error.to_string()),
                }
            }
            tungstenite::Error::Url(error) => Self::Lasting(error.to_string()),
            tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(
                SubProtocolError::NoSubProtocol,
            )) => Self::PlainOnly,
            other => Self::Passing(other.to_string()),
        }
    }
}

/// A line for the server, and the connection it was meant for: connections are counted
/// from 1, in the order of [`NetEvent::Connected`], as the client counts them.
#[derive(Debug)]
pub struct Outgoing {
    pub connection: u64,
    pub line: String,
}

/// What the user asks of the connection besides sending lines.
pub struct Steering {
    /// Connect now: cuts a countdown short, tries again after a failure that is not
    /// retried by itself, or drops the connection and makes a new one.
    now: Notify,
    /// The room to connect to, read at each attempt.
    room: std::sync::Mutex<RoomName>,
}

impl Steering {
    pub fn new(room: RoomName) -> Arc<Self> {
        Arc::new(Self {
            now: Notify::new(),
            room: std::sync::Mutex::new(room),
        })
    }

    /// Connects again now.
    pub fn reconnect(&self) {
        self.now.notify_one();
    }

    /// Moves to `room`: connects again, there.
    pub fn join(&self, room: RoomName) {
        *self
            .room
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = room;
        self.reconnect();
    }

    fn room(&self) -> RoomName {
        self.room
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// How relaying one connection ended.
enum Ended {
    Lost(String),
    /// A moderator closed it (kicked, 4001, or banned, 4003; `reason` in words): not
    /// tried again until the user asks, so that a kick is not undone by a reconnect.
    Removed(String),
    /// The user asked for a new connection (`/reconnect`, `/join`).
    Asked,
    /// The client is quitting.
    Quit,
}

/// The close code a moderator's kick ends a connection with (chat.v2.json).
pub const KICKED: u16 = 4001;
/// The close code of a ban.
pub const BANNED: u16 = 4003;

/// What a kick or a ban (close `code`, with the moderator's `reason`, raw) says to the
/// person it happened to; `None` for any other close.
fn removed(code: u16, reason: &str) -> Option<String> {
    let why = match reason.trim() {
        "" | "kicked" | "banned" => String::new(),
        said => format!(" (“{said}”)"),
    };
    match code {
        KICKED => Some(format!(
            "a moderator removed you from this room{why}; you may come back"
        )),
        BANNED => Some(format!(
            "you were banned{why}, from this room or the whole server; joining again is refused while the ban lasts (F5 says until when)"
        )),
        _ => None,
    }
}

/// Connects, relays frames both ways, and reconnects with backoff whenever the
/// connection fails or is lost, telling `events` what happens; a failure that cannot
/// fix itself waits for `steering`, which also cuts a countdown short and moves rooms.
/// Returns when `outgoing` closes, which is how the client says it is quitting.
pub async fn run(
    target: Target,
    mut outgoing: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<Event>,
    steering: Arc<Steering>,
) {
    let news = |news| events.send(Event::Net(news));
    let reconnect = &steering.now;
    let mut failures: u32 = 0;
    let mut connections: u64 = 0;
    let mut offer = target.offer;
    let mut resume: Option<Resume> = None;
    loop {
        if news(NetEvent::Connecting).await.is_err() {
            return;
        }
        let room = steering.room();
        let mut attempt = target.in_room(&room);
        attempt.offer = offer;
        if let Some(resume) = resume
            .as_ref()
            .filter(|resume| resume.room == room && offer > Protocol::Plain)
        {
            attempt = attempt.resuming(resume);
        }
        let reason = match attempt.connect().await {
            Ok((socket, protocol)) => {
                failures = 0;
                connections += 1;
                if news(NetEvent::Connected { protocol }).await.is_err() {
                    return;
                }
                let resume = (protocol > Protocol::Plain).then_some((&room, &mut resume));
                let this = Connection {
                    number: connections,
                    resume,
                    v2: protocol == Protocol::V2,
                };
                match relay(socket, &mut outgoing, &events, reconnect, this).await {
                    Ended::Lost(reason) => reason,
                    Ended::Removed(reason) => {
                        if news(NetEvent::GaveUp { reason }).await.is_err() {
                            return;
                        }
                        reconnect.notified().await;
                        failures = 0;
                        continue;
                    }
                    Ended::Asked => continue,
                    Ended::Quit => return,
                }
            }
            Err(Failure::PlainOnly) => {
                // Asked again at once, without the protocol the server ignored. (The
                // server saw that first attempt come and go.)
                offer = Protocol::Plain;
                continue;
            }
            Err(Failure::Passing(reason)) => {
                format!("cannot connect to {}: {reason}", attempt.shown())
            }
            Err(Failure::Lasting(reason)) => {
                let reason = format!("cannot connect to {}: {reason}", attempt.shown());
                if news(NetEvent::GaveUp { reason }).await.is_err() {
                    return;
                }
                reconnect.notified().await;
                failures = 0;
                continue;
            }
        };
        failures += 1;
        if news(NetEvent::Disconnected { reason }).await.is_err() {
            return;
        }
        if count_down(Backoff::CLIENT.wait(failures), &events, reconnect)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The client has quit: nobody reads the network's news any more.
#[derive(Debug, PartialEq, Eq)]
struct Quit;

/// Waits `wait` before the next attempt, telling `events` each whole second left
/// ([`NetEvent::Retrying`]); ends early when the user asks to reconnect now.
async fn count_down(
    mut wait: Duration,
    events: &mpsc::Sender<Event>,
    reconnect: &Notify,
) -> Result<(), Quit> {
    while !wait.is_zero() {
        let seconds = wait.as_secs_f64().ceil() as u64;
        events
            .send(Event::Net(NetEvent::Retrying { seconds }))
            .await
            .map_err(|_| Quit)?;
        // Sleep to the next whole second of the countdown, or stop counting when the
        // user asks to reconnect now.
        let step = wait - Duration::from_secs(seconds - 1);
        tokio::select! {
            () = tokio::time::sleep(step) => wait -= step,
            () = reconnect.notified() => break,
        }
    }
    Ok(())
}

/// The connection [`relay`] relays for: its number, and over `chat.v1.json` the room
/// and where the client is in its history, kept for the next connection.
struct Connection<'a> {
    number: u64,
    resume: Option<(&'a RoomName, &'a mut Option<Resume>)>,
    /// Speaking `chat.v2.json`: frames beside the log come too.
    v2: bool,
}

/// Relays until the connection ends, and says how. Over `chat.v1.json` (`resume` is
/// given), each frame is read as the protocol's, and where the client is in the room's
/// history is kept in `resume` for the next connection.
async fn relay(
    mut socket: Socket,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    events: &mpsc::Sender<Event>,
    reconnect: &Notify,
    this: Connection<'_>,
) -> Ended {
    let Connection {
        number,
        mut resume,
        v2,
    } = this;
    let polite_close = |mut socket: Socket| async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
    };
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let beside = if v2 && resume.is_some() { read_beside(&text) } else { None };
                    let news = match (&mut resume, beside) {
                        (Some(_), Some(beside)) => NetEvent::Beside(beside),
                        (Some((room, resume)), None) => read_v1(&text, room, resume),
                        (None, _) => NetEvent::Received { text: text.to_string() },
                    };
                    // A v2 welcome says, besides, how far this id has read here, and
                    // the room's moderation.
                    let (read, rules) = match &news {
                        NetEvent::Frame(ServerFrame::Welcome(_)) if v2 => {
                            (welcome_read(&text), welcome_rules(&text))
                        }
                        _ => (None, None),
                    };
                    if events.send(Event::Net(news)).await.is_err() {
                        return Ended::Quit;
                    }
                    if let Some(rules) = rules {
                        let rules = NetEvent::Beside(Beside::Rules(rules));
                        if events.send(Event::Net(rules)).await.is_err() {
                            return Ended::Quit;
                        }
                    }
                    if let Some(offset) = read {
                        let read = NetEvent::Beside(Beside::Read { offset });
                        if events.send(Event::Net(read)).await.is_err() {
                            return Ended::Quit;
                        }
                    }
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    let code = u16::from(frame.code);
                    return match removed(code, &frame.reason) {
                        Some(words) => Ended::Removed(words),
                        None => Ended::Lost(format!("the server closed the connection: {code} {}", frame.reason)),
                    };
                }
                Some(Ok(Message::Close(None))) | None => {
                    return Ended::Lost("the server closed the connection".to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Ended::Lost(format!("connection lost: {error}")),
            },
            line = outgoing.recv() => match line {
                // Over chat.v1.json, a line meant for a connection that is gone is the
                // client's to send again: at its own join it resends whatever did not
                // come back in the resumed history. Sent here as well, it would reach
                // the room twice.
                Some(Outgoing { connection, .. }) if resume.is_some() && connection < number => {}
                Some(Outgoing { line, .. }) => {
                    if let Err(error) = socket.send(Message::text(line)).await {
                        return Ended::Lost(format!("connection lost: {error}"));
                    }
                }
                None => {
                    polite_close(socket).await;
                    return Ended::Quit;
                }
            },
            () = reconnect.notified() => {
                polite_close(socket).await;
                return Ended::Asked;
            }
        }
    }
}

/// A `chat.v1.json` frame as news, noting where the client now is in `room`'s history.
fn read_v1(text: &str, room: &RoomName, resume: &mut Option<Resume>) -> NetEvent {
    let Ok(frame) = ServerFrame::parse(text) else {
        // Read only when the frame is not a v1 one: events stay one parse each.
        if let Some(batch) = read_presence(text) {
            if let (Some(resume), Beside::Presence { offset, .. }) = (resume, &batch) {
                resume.offset = resume.offset.max(*offset);
            }
            return NetEvent::Beside(batch);
        }
        return NetEvent::Unreadable {
            text: text.to_owned(),
        };
    };
    match &frame {
        ServerFrame::Welcome(welcome) => {
            let welcome = &welcome.welcome;
            let same_history = resume
                .as_ref()
                .is_some_and(|resume| resume.room == *room && resume.epoch == welcome.epoch);
            if !same_history {
                *resume = Some(Resume {
                    room: room.clone(),
                    epoch: welcome.epoch.clone(),
                    offset: 0,
                });
            }
        }
        ServerFrame::Event(event) => {
            if let Some(resume) = resume {
                resume.offset = resume.offset.max(event.offset);
            }
        }
    }
    NetEvent::Frame(frame)
}

/// A `chat.v2.json` frame beside the log, as the client reads it; field names are the
/// protocol's (docs/PROTOCOL.md).
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BesideFrame {
    Read {
        offset: u64,
    },
    Typing {
        id: String,
        #[serde(default)]
        name: Option<chat::v1::DisplayName>,
    },
    History {
        #[serde(default)]
        nonce: Option<String>,
        events: Vec<chat::v1::Event>,
        more: bool,
    },
    Search {
        #[serde(default)]
        nonce: Option<String>,
        events: Vec<chat::v1::Event>,
        more: bool,
    },
    Error {
        #[serde(default)]
        nonce: Option<String>,
        code: chat::v2::ErrorCode,
        message: String,
    },
    Dms {
        rooms: Vec<chat::v2::DirectRoom>,
    },
    Dm {
        room: String,
        with: String,
    },
    Members {
        #[serde(default)]
        nonce: Option<String>,
        count: usize,
        members: Vec<chat::v1::Present>,
        more: bool,
    },
}

/// A `presence` event of a big room (docs/PROTOCOL.md, "Big rooms").
#[derive(serde::Deserialize)]
struct PresenceFrame {
    offset: u64,
    #[serde(rename = "type")]
    kind: String,
    count: usize,
    #[serde(default)]
    truncated: bool,
    joined: Vec<chat::v1::Present>,
    left: Vec<chat::v2::Gone>,
}

/// A big room's presence batch, if `text` is one.
fn read_presence(text: &str) -> Option<Beside> {
    let frame: PresenceFrame = serde_json::from_str(text).ok()?;
    (frame.kind == "presence").then_some(Beside::Presence {
        offset: frame.offset,
        count: frame.count,
        truncated: frame.truncated,
        joined: frame.joined,
        left: frame.left,
    })
}

/// A frame beside the log, if `text` is one (a welcome or an event is not).
fn read_beside(text: &str) -> Option<Beside> {
    // Events and welcomes are far the most frames: a look at the start of the text
    // spares them a second parse.
    if text.starts_with("{\"offset\"") || text.starts_with("{\"type\":\"welcome\"") {
        return None;
    }
    Some(match serde_json::from_str(text).ok()? {
        BesideFrame::Read { offset } => Beside::Read { offset },
        BesideFrame::Typing { id, name } => Beside::Typing { id, name },
        BesideFrame::History {
            nonce,
            events,
            more,
        } => Beside::Page {
            search: false,
            nonce,
            events,
            more,
        },
        BesideFrame::Search {
            nonce,
            events,
            more,
        } => Beside::Page {
            search: true,
            nonce,
            events,
            more,
        },
        BesideFrame::Dms { rooms } => Beside::DirectRooms { rooms },
        BesideFrame::Dm { room, with } => Beside::DirectMessage { room, with },
        BesideFrame::Members {
            nonce,
            count,
            members,
            more,
        } => Beside::Members {
            nonce,
            count,
            members,
            more,
        },
        BesideFrame::Error {
            nonce,
            code,
            message,
        } => Beside::Refused {
            nonce,
            code,
            message,
        },
    })
}

/// The `read` of a v2 welcome: this id's read position in the room.
fn welcome_read(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Read {
        read: Option<u64>,
    }
    serde_json::from_str::<Read>(text).ok()?.read
}

/// The room's moderation in a v2 welcome.
fn welcome_rules(text: &str) -> Option<crate::event::RoomRules> {
    serde_json::from_str(text).ok()
}

/// A TLS connector that accepts any certificate, for `--insecure` only.
fn insecure_connector() -> Connector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Connector::Rustls(Arc::new(config))
}

/// Accepts every server certificate, while still checking the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presence_batch_is_read_and_moves_the_resume_offset() {
        let room = RoomName::parse("main").unwrap();
        let mut resume = Some(Resume {
            room: room.clone(),
            epoch: "e".into(),
            offset: 3,
        });
        let text = r#"{"offset":53,"ts":1,"type":"presence","count":2,"joined":[{"id":"1304","name":"Ada","ref":148,"since":1}],"left":[{"ref":85,"id":"1139"}]}"#;
        let NetEvent::Beside(Beside::Presence {
            offset,
            count,
            truncated,
            joined,
            left,
        }) = read_v1(text, &room, &mut resume)
        else {
            panic!("not read as a presence batch");
        };
        assert_eq!((offset, count, truncated), (53, 2, false));
        assert_eq!(joined.len(), 1);
        assert_eq!((joined[0].id.as_str(), joined[0].key), ("1304", Some(148)));
        assert_eq!(
            joined[0].name.as_ref().map(ToString::to_string).as_deref(),
            Some("Ada")
        );
        assert_eq!(
            left,
            [chat::v2::Gone {
                key: 85,
                id: "1139".into()
            }]
        );
        assert_eq!(resume.map(|resume| resume.offset), Some(53));
        let truncated = r#"{"offset":54,"ts":2,"type":"presence","count":900,"joined":[],"left":[],"truncated":true}"#;
        let NetEvent::Beside(Beside::Presence {
            count, truncated, ..
        }) = read_v1(truncated, &room, &mut None)
        else {
            panic!("not read as a presence batch");
        };
        assert_eq!((count, truncated), (900, true));
    }

    #[test]
    fn a_members_page_is_read_beside_the_log() {
        let text = r#"{"type":"members","nonce":"42-m1","offset":9,"count":3,"members":[{"id":"7","since":1,"ref":4}],"more":true}"#;
        let Some(Beside::Members {
            nonce,
            count,
            members,
            more,
        }) = read_beside(text)
        else {
            panic!("not read as a page of members");
        };
        assert_eq!(
            (nonce.as_deref(), count, members.len(), more),
            (Some("42-m1"), 3, 1, true)
        );
        assert_eq!(members[0].key, Some(4));
    }

    fn endpoint(base: &str) -> String {
        let id = ClientId::parse("42").unwrap();
        Target::new(base, &id, Trust::WebPki, Credentials::default())
            .expect(base)
            .url
            .to_string()
    }

    #[test]
    fn the_endpoint_keeps_the_base_path() {
        assert_eq!(endpoint("ws://localhost:8000"), "ws://localhost:8000/ws/42");
        assert_eq!(
            endpoint("ws://localhost:8000/"),
            "ws://localhost:8000/ws/42"
        );
        assert_eq!(
            endpoint("wss://example.org/chat"),
            "wss://example.org/chat/ws/42"
        );
        assert_eq!(
            endpoint("wss://example.org/chat/"),
            "wss://example.org/chat/ws/42"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9000"),
            "ws://127.0.0.1:9000/ws/42"
        );
        assert_eq!(endpoint("https://example.org"), "wss://example.org/ws/42");
    }

    /// What [`count_down`] tells over a wait of `wait`, and the time it took; the user
    /// asks to reconnect after `asked_after` events, if given.
    async fn counted(wait: Duration, asked_after: Option<usize>) -> (Vec<u64>, Duration) {
        let (events_in, mut events) = mpsc::channel(16);
        let reconnect = Arc::new(Notify::new());
        let started = tokio::time::Instant::now();
        let counting = {
            let reconnect = reconnect.clone();
            tokio::spawn(async move { count_down(wait, &events_in, &reconnect).await })
        };
        let mut told = Vec::new();
        while let Some(event) = events.recv().await {
            let Event::Net(NetEvent::Retrying { seconds }) = event else {
                panic!("{event:?}");
            };
            told.push(seconds);
            if Some(told.len()) == asked_after {
                reconnect.notify_one();
            }
        }
        assert_eq!(counting.await.expect("the countdown"), Ok(()));
        (told, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn the_countdown_tells_each_second_left_and_takes_the_whole_wait() {
        let (told, took) = counted(Duration::from_millis(2500), None).await;
        assert_eq!(told, [3, 2, 1]);
        assert_eq!(took, Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_now_ends_the_countdown() {
        let (told, took) = counted(Duration::from_secs(15), Some(2)).await;
        assert_eq!(told, [15, 14]);
        assert_eq!(
            took,
            Duration::from_secs(1),
            "one second counted, then asked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_countdown_stops_once_the_client_has_quit() {
        let (events_in, events) = mpsc::channel(1);
        drop(events);
        let reconnect = Notify::new();
        let result = count_down(Duration::from_secs(5), &events_in, &reconnect).await;
        assert_eq!(result, Err(Quit));
    }

    #[test]
    fn frames_beside_the_log_are_read_and_events_are_left_alone() {
        let page = r#"{"type":"history","nonce":"c-1","events":[{"offset":5,"ts":1796367204348,"id":"7","name":"Ada","type":"message","text":"hello, typo fixed","nonce":"a-1","edited":true,"reactions":[{"emoji":"👍","ids":["8"]}]},{"offset":6,"ts":1796367204349,"id":"7","name":"Ada","type":"edit","target":5,"text":"hello, typo fixed","nonce":"a-2"}],"more":true}"#;
        let Some(Beside::Page {
            search: false,
            nonce: Some(nonce),
            events,
            more: true,
        }) = read_beside(page)
        else {
            panic!("{:?}", read_beside(page));
        };
        assert_eq!((nonce.as_str(), events.len()), ("c-1", 2));
        assert_eq!(
            read_beside(r#"{"type":"typing","id":"7","name":"Ada"}"#),
            Some(Beside::Typing {
                id: "7".into(),
                name: chat::v1::DisplayName::parse("Ada").ok()
            })
        );
        assert!(matches!(
            read_beside(r#"{"type":"error","nonce":"b-2","code":"not_yours","message":"no"}"#),
            Some(Beside::Refused { .. })
        ));
        assert!(matches!(
            read_beside(
                r#"{"type":"dms","rooms":[{"room":"dm.7.8","with":"7","offset":2,"read":0,"unread":1}]}"#
            ),
            Some(Beside::DirectRooms { rooms }) if rooms.len() == 1 && rooms[0].unread == 1
        ));
        assert_eq!(
            read_beside(r#"{"type":"dm","room":"dm.7.8","with":"7","id":"7","at":3,"ts":1}"#),
            Some(Beside::DirectMessage {
                room: "dm.7.8".into(),
                with: "7".into()
            })
        );
        assert_eq!(
            read_beside(r#"{"offset":6,"ts":1,"id":"7","type":"message","text":"x"}"#),
            None
        );
        assert_eq!(
            welcome_read(r#"{"type":"welcome","id":"2","read":7}"#),
            Some(7)
        );
    }

    #[test]
    fn a_kick_or_a_ban_is_said_in_words_and_other_closes_are_not() {
        assert_eq!(
            removed(KICKED, "calm down").as_deref(),
            Some("a moderator removed you from this room (“calm down”); you may come back")
        );
        assert_eq!(
            removed(BANNED, "banned").as_deref(),
            Some(
                "you were banned, from this room or the whole server; joining again is refused while the ban lasts (F5 says until when)"
            )
        );
        assert_eq!(removed(1001, "going away"), None);
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        let id = ClientId::parse("1").unwrap();
        for bad in ["ftp://x", "localhost:8000", "not a url", "ws://", ""] {
            let target = Target::new(bad, &id, Trust::WebPki, Credentials::default());
            assert!(target.is_err(), "{bad}");
        }
    }
}
