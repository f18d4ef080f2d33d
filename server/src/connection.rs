//! One WebSocket session: reads the member's frames, writes its outbox, keeps the peer
//! alive with pings, and closes with the close code that says why it ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tracing::{debug, info};

use crate::Shared;
use crate::metrics::Disconnect;
use crate::room::{Member, Outbox};

pub type Socket = WebSocketStream<TcpStream>;
type Sink = SplitSink<Socket, Message>;
type Stream = SplitStream<Socket>;

/// Entries of the batch buffer a connection keeps between batches; more is freed.
const BATCH_CAPACITY_KEPT: usize = 16;

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

/// Runs a member's session until the client goes, misbehaves, goes silent, or the
/// server shuts down.
///
/// The span is at debug level so that, at the default info level, a connection pays no
/// span's memory; info events carry the client id and peer address themselves.
#[tracing::instrument(
    name = "session", level = "debug", skip_all, fields(client = %member.id(), peer = %peer)
)]
pub async fn serve(socket: Socket, member: Member, peer: SocketAddr, shared: Arc<Shared>) {
    let client = member.id().clone();
    info!(%client, %peer, "joined");
    shared.metrics.connected();
    let (mut sink, mut stream) = socket.split();
    let heard = LastHeard::new();
    let ending = tokio::select! {
        ending = receive(&mut stream, &member, &heard, &shared) => ending,
        ending = transmit(&mut sink, member.outbox(), shared.config.ping_interval) => ending,
        () = heard.silent_for(shared.config.ping_timeout) => Disconnect::PingTimeout,
        () = member.outbox().evicted() => Disconnect::SlowConsumer,
        () = shared.shutdown.cancelled() => Disconnect::ShuttingDown,
        () = shared.broker_lost() => Disconnect::BrokerLost,
    };
    if matches!(ending, Disconnect::ShuttingDown | Disconnect::ClientClosed) {
        // Flush what the room already queued before saying goodbye: a client that closes
        // still gets the messages sent before its close, its own last one included.
        let mut batch = Vec::new();
        if member.outbox().take_queued(&mut batch) {
            let flush = write_batch(&mut sink, &mut batch);
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, flush).await;
        }
    }
    // Leaving the room before closing means nothing more is queued for a closing socket.
    drop(member);
    shared.metrics.disconnected(ending);
    info!(%client, %peer, reason = ending.label(), "left");
    close(sink, stream, ending).await;
}

/// Reads frames until the session must end, relaying each text message to the room.
///
/// With a rate limit, it waits for a token before reading on: the flood stays in the
/// socket buffers and TCP slows the sender down, and nothing is dropped.
async fn receive(
    stream: &mut Stream,
    member: &Member,
    heard: &LastHeard,
    shared: &Shared,
) -> Disconnect {
    let mut limit = shared.config.rate_limit.map(TokenBucket::new);
    loop {
        if let Some(limit) = &mut limit {
            limit.ready().await;
        }
        let frame = stream.next().await;
        heard.now();
        match frame {
            Some(Ok(Message::Text(text))) => {
                debug!(bytes = text.len(), "message");
                shared.metrics.received(text.len());
                member.say(&text);
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

/// Writes the outbox to the socket, a whole batch per flush, and pings the peer every
/// `ping_interval` so that a dead one is noticed.
async fn transmit(sink: &mut Sink, outbox: &Outbox, ping_interval: Duration) -> Disconnect {
    let mut batch = Vec::new();
    let mut pings = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let written = tokio::select! {
            () = outbox.next_batch(&mut batch) => write_batch(sink, &mut batch).await,
            _ = pings.tick() => sink.send(Message::Ping(Bytes::new())).await,
        };
        if let Err(error) = written {
            debug!(%error, "write failed");
            return Disconnect::Dropped;
        }
    }
}

async fn write_batch(sink: &mut Sink, batch: &mut Vec<Utf8Bytes>) -> Result<(), WsError> {
    for frame in batch.drain(..) {
        sink.feed(Message::Text(frame)).await?;
    }
    // A burst (a join storm, say) can grow the batch to thousands of entries; an idle
    // connection should not keep that much room, as there may be tens of thousands.
    if batch.capacity() > BATCH_CAPACITY_KEPT {
        *batch = Vec::new();
    }
    sink.flush().await
}

/// Sends the close frame `ending` calls for, then closes the TCP connection politely.
async fn close(mut sink: Sink, stream: Stream, ending: Disconnect) {
    if ending == Disconnect::Dropped {
        return;
    }
    let goodbye = async {
        match ending.close_frame() {
            Some((code, reason)) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                sink.send(Message::Close(Some(frame))).await
            }
            None => sink.flush().await,
        }
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, goodbye).await;
    let Ok(socket) = sink.reunite(stream) else {
        return;
    };
    linger(socket.into_inner()).await;
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
/// sent, through the same WebSocket configuration and limits as a chat session.
#[tracing::instrument(name = "echo", level = "debug", skip_all, fields(peer = %peer))]
pub async fn echo(mut socket: Socket, peer: SocketAddr) {
    let ending = loop {
        match socket.next().await {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if socket.send(message).await.is_err() {
                    break Disconnect::Dropped;
                }
            }
            Some(Ok(Message::Close(_))) => break Disconnect::ClientClosed,
            Some(Ok(_)) => {}
            Some(Err(error)) => break Disconnect::from_error(&error),
            None => break Disconnect::Dropped,
        }
    };
    debug!(reason = ending.label(), "echo ended");
    let (sink, stream) = socket.split();
    close(sink, stream, ending).await;
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
