//! One WebSocket session: reads the member's frames, writes its outbox, keeps the peer
//! alive with pings, and closes with the close code that says why it ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info};

use crate::Shared;
use crate::metrics::Disconnect;
use crate::room::{Member, Outbox};
use crate::socket::{Inbound, Writer};
use crate::wire;

type Socket = WebSocketStream<Inbound>;

/// How long a closing connection may take to flush its last frames and close frame.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long we keep reading after our close frame, so that unread input does not make
/// the kernel answer with a reset that could destroy the close frame in flight.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

impl Disconnect {
    fn from_error(error: &WsError) -> Self {
        match error {
            WsError::Capacity(_) => Self::TooBig,
            WsError::Utf8(_) => Self::InvalidUtf8,
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Self::Dropped,
            WsError::Protocol(_) => Self::ProtocolViolation,
            _ => Self::Dropped,
        }
    }

    /// The close frame we send, if any: none when the peer is gone, and when the peer
    /// closed first, since tungstenite has already queued the echo of its close frame.
    fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        match self {
            Self::ClientClosed | Self::Dropped => None,
            Self::Binary => Some((CloseCode::Unsupported, "binary frames are not supported")),
            Self::TooBig => Some((CloseCode::Size, "message too big")),
            Self::InvalidUtf8 => Some((CloseCode::Invalid, "text is not valid UTF-8")),
            Self::ProtocolViolation => Some((CloseCode::Protocol, "protocol violation")),
            Self::SlowConsumer => Some((CloseCode::Policy, "slow consumer")),
            Self::PingTimeout => Some((CloseCode::Policy, "ping timeout")),
            Self::ShuttingDown => Some((CloseCode::Away, "server shutting down")),
            Self::BrokerLost => Some((CloseCode::Again, "chat unavailable, try again later")),
        }
    }
}

/// When the peer was last heard from, in milliseconds since the session began.
///
/// An atomic rather than a `Cell` because the reading and the watching futures of one
/// session share it, and the session's future must be `Send` to be spawned.
struct LastHeard {
    start: Instant,
    millis: AtomicU64,
}

impl LastHeard {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let elapsed = self.start.elapsed().as_millis() as u64;
        self.millis.store(elapsed, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.start + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }

    /// Completes once nothing has been heard for `timeout`.
    async fn silent_for(&self, timeout: Duration) {
        loop {
            let deadline = self.at() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Opens the WebSocket over an upgraded connection: tungstenite reads it, and what it
/// writes goes through `outbox` to the returned writer.
async fn open(
    tcp: TcpStream,
    already_read: Vec<u8>,
    outbox: Arc<Outbox>,
    shared: &Shared,
) -> (Socket, Writer) {
    let (read, write) = tcp.into_split();
    let inbound = Inbound { read, outbox };
    let config = shared.websocket_config();
    let socket =
        WebSocketStream::from_partially_read(inbound, already_read, Role::Server, Some(config))
            .await;
    (socket, Writer::new(write))
}

/// Runs a member's session until the client goes, misbehaves, goes silent, or the
/// server shuts down.
///
/// The span is at debug level so that, at the default info level, a connection pays no
/// span's memory; info events carry the client id and peer address themselves.
#[tracing::instrument(
    name = "session", level = "debug", skip_all, fields(client = %member.id(), peer = %peer)
)]
pub async fn serve(
    tcp: TcpStream,
    already_read: Vec<u8>,
    member: Member,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let client = member.id().clone();
    info!(%client, %peer, "joined");
    shared.metrics.connected();
    let outbox = member.outbox().clone();
    let epoch = member.epoch();
    let (mut socket, mut writer) = open(tcp, already_read, outbox.clone(), &shared).await;
    let heard = LastHeard::new();
    let ending = tokio::select! {
        ending = receive(&mut socket, &heard, &shared, |text| member.say(text)) => ending,
        ending = transmit(&mut writer, &outbox, shared.config.ping_interval) => ending,
        () = heard.silent_for(shared.config.ping_timeout) => Disconnect::PingTimeout,
        () = outbox.evicted() => Disconnect::SlowConsumer,
        () = shared.shutdown.cancelled() => Disconnect::ShuttingDown,
        () = shared.broker_lost(epoch) => Disconnect::BrokerLost,
    };
    // Leaving the room before closing means nothing more is queued for a closing socket.
    drop(member);
    shared.metrics.disconnected(ending);
    info!(%client, %peer, reason = ending.label(), "left");
    close(socket, writer, &outbox, ending).await;
}

/// Reads frames until the session must end, relaying each text message to the room.
///
/// With a rate limit, it waits for a token before reading on: the flood stays in the
/// socket buffers and TCP slows the sender down, and nothing is dropped.
async fn receive(
    socket: &mut Socket,
    heard: &LastHeard,
    shared: &Shared,
    relay: impl Fn(&str),
) -> Disconnect {
    let mut limit = shared.config.rate_limit.map(TokenBucket::new);
    loop {
        if let Some(limit) = &mut limit {
            limit.ready().await;
        }
        let frame = socket.next().await;
        heard.now();
        match frame {
            Some(Ok(Message::Text(text))) => {
                debug!(bytes = text.len(), "message");
                shared.metrics.received(text.len());
                relay(&text);
                if let Some(limit) = &mut limit {
                    limit.take();
                }
            }
            // tungstenite answers pings itself, on the next read or write.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Binary(_))) => return Disconnect::Binary,
            Some(Ok(Message::Close(_))) => return Disconnect::ClientClosed,
            Some(Err(error)) => {
                debug!(%error, "read failed");
                return Disconnect::from_error(&error);
            }
            None => return Disconnect::Dropped,
        }
    }
}

/// Writes the outbox to the socket, a whole batch per `writev`, and pings the peer every
/// `ping_interval` so that a dead one is noticed.
async fn transmit(writer: &mut Writer, outbox: &Outbox, ping_interval: Duration) -> Disconnect {
    let mut pings = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = outbox.next_batch(&mut writer.frames) => {}
            _ = pings.tick() => writer.frames.push(wire::ping()),
        }
        if let Err(error) = writer.flush().await {
            debug!(%error, "write failed");
            return Disconnect::Dropped;
        }
    }
}

/// Says goodbye as `ending` calls for, then closes the TCP connection politely.
async fn close(mut socket: Socket, mut writer: Writer, outbox: &Outbox, ending: Disconnect) {
    if ending == Disconnect::Dropped {
        return;
    }
    let goodbye = async {
        if ending == Disconnect::ClientClosed {
            // tungstenite queues its echo of the client's close frame on a flush.
            let _ = socket.flush().await;
        }
        // What was queued before the end still goes out (after a slow consumer's
        // eviction, nothing is): a client's own last message included. Then our close
        // frame, if we owe one.
        let mut queued = Vec::new();
        outbox.take_queued(&mut queued);
        writer.frames.append(&mut queued);
        if let Some((code, reason)) = ending.close_frame() {
            writer.frames.push(wire::close(code.into(), reason));
        }
        writer.flush().await
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, goodbye).await;
    let read = socket.into_inner().read;
    if let Ok(tcp) = read.reunite(writer.socket) {
        linger(tcp).await;
    }
}

/// Half-closes `tcp` and reads what the peer still sends for a moment, discarding it.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    // On the heap, not in the session's future, which every idle connection carries.
    let mut discard = vec![0u8; 1024];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while matches!(tcp.read(&mut discard).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// `/echo`, for the Autobahn conformance cases: every message comes back as it was
/// sent, through the same reading, writing, configuration and limits as a chat session.
#[tracing::instrument(name = "echo", level = "debug", skip_all, fields(peer = %peer))]
pub async fn echo(tcp: TcpStream, already_read: Vec<u8>, peer: SocketAddr, shared: Arc<Shared>) {
    let outbox = Arc::new(Outbox::new(shared.config.queue_bytes()));
    let (mut socket, mut writer) = open(tcp, already_read, outbox.clone(), &shared).await;
    let heard = LastHeard::new();
    let ending = tokio::select! {
        ending = echo_messages(&mut socket, &heard, &outbox) => ending,
        ending = transmit(&mut writer, &outbox, shared.config.ping_interval) => ending,
        () = outbox.evicted() => Disconnect::SlowConsumer,
        () = shared.shutdown.cancelled() => Disconnect::ShuttingDown,
    };
    debug!(reason = ending.label(), "echo ended");
    close(socket, writer, &outbox, ending).await;
}

async fn echo_messages(socket: &mut Socket, heard: &LastHeard, outbox: &Outbox) -> Disconnect {
    loop {
        let frame = socket.next().await;
        heard.now();
        match frame {
            Some(Ok(Message::Text(text))) => outbox.push(&wire::text(&text)),
            Some(Ok(Message::Binary(data))) => outbox.push(&wire::binary(&data)),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) => return Disconnect::ClientClosed,
            Some(Err(error)) => return Disconnect::from_error(&error),
            None => return Disconnect::Dropped,
        }
    }
}

/// A token bucket: `rate` messages a second on average, up to `burst` at once.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

/// A per-connection message rate limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Messages per second, on average.
    pub per_second: f64,
    /// Messages that may come at once after a quiet spell.
    pub burst: u32,
}

impl TokenBucket {
    fn new(limit: RateLimit) -> Self {
        let burst = f64::from(limit.burst.max(1));
        Self {
            rate: limit.per_second,
            burst,
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
    }

    /// Waits until a whole token is there.
    async fn ready(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.refill();
        }
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}
