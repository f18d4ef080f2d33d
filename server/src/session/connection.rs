//! One WebSocket session: reads the member's frames, writes its outbox, keeps the peer
//! alive with pings, and closes with the close code that says why it ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info};

use crate::config::DELIVERY_GRACE;
use crate::metrics::Disconnect;
use crate::room::backlog;
use crate::room::outbox::{Outbox, Wakes, drained_by};
use crate::room::wire;
use crate::room::{BANNED, KICKED, Member, Protocol};
use crate::session::history::{self, Query};
use crate::session::keepalive::Keepalive;
use crate::session::meter::{TokenBucket, UnfinishedMessage, WireLimits, WireMeter};
use crate::session::socket::{FrameWriter, Inbound, Transport};
use crate::shared::Shared;
use chat::{v1, v2};

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
            WsError::Io(error)
                if error
                    .get_ref()
                    .is_some_and(|inner| inner.is::<UnfinishedMessage>()) =>
            {
                Self::UnfinishedMessage
            }
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
            Self::UnfinishedMessage => Some((CloseCode::Policy, "message not finished in time")),
            Self::InvalidRequest => Some((
                CloseCode::Policy,
                r#"invalid request: send {"type":"message","text":"..."} with an optional "nonce""#,
            )),
            Self::InvalidV2Request => Some((
                CloseCode::Policy,
                "invalid request: not a chat.v2.json request (see docs/PROTOCOL.md)",
            )),
            Self::ShuttingDown => Some((CloseCode::Away, "server shutting down")),
            Self::BrokerLost => Some((CloseCode::Again, "chat unavailable, try again later")),
            Self::HistoryUnavailable => {
                Some((CloseCode::Again, "history unavailable, try again later"))
            }
            // The moderator's reason, when given, replaces these (see `close`).
            Self::Kicked => Some((CloseCode::Library(KICKED), "kicked")),
            Self::Banned => Some((CloseCode::Library(BANNED), "banned")),
        }
    }
}

/// Opens the WebSocket over an upgraded connection: tungstenite reads it, and what it
/// writes goes through `outbox` to the returned writer.
async fn open(
    transport: Transport,
    already_read: Vec<u8>,
    outbox: Arc<Outbox>,
    shared: &Shared,
) -> (Socket, FrameWriter) {
    let (read, write) = transport.split();
    let meter = WireMeter::new(
        WireLimits::of(&shared.config),
        shared.config.message_timeout,
    );
    let inbound = Inbound {
        read,
        meter,
        outbox,
    };
    let config = shared.websocket_config();
    let socket =
        WebSocketStream::from_partially_read(inbound, already_read, Role::Server, Some(config))
            .await;
    (socket, FrameWriter::new(write))
}

/// Runs a member's session until the client goes, misbehaves, goes silent, or the
/// server shuts down.
///
/// The span is at debug level so that, at the default info level, a connection pays no
/// span's memory; info events carry the client id and peer address themselves. It is
/// attached here rather than with `#[tracing::instrument]`, whose `async fn` keeps the
/// session's future twice over (once as is, once instrumented) besides the arguments:
/// about 2 KiB more for every connection.
pub fn serve(
    transport: Transport,
    already_read: Vec<u8>,
    member: Member,
    peer: SocketAddr,
    shared: Arc<Shared>,
    held: impl Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let span = tracing::debug_span!("session", client = %member.id(), peer = %peer);
    let opening = Opening {
        transport,
        already_read,
        member,
        peer,
        shared,
        held,
    };
    session(Box::new(opening)).instrument(span)
}

/// What a session starts with, handed over in one box: an `async fn` keeps its
/// arguments for as long as it runs, beside the variables they are moved into, and a
/// session's are about 300 bytes.
struct Opening<Held> {
    transport: Transport,
    already_read: Vec<u8>,
    member: Member,
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// The server's connection slots, kept until the session ends.
    held: Held,
}

/// [`serve`]'s session. (Spawned as it is: a future that awaits another keeps it
/// twice, once where it was given and once where it is polled.)
async fn session<Held: Send + 'static>(opening: Box<Opening<Held>>) {
    let Opening {
        transport,
        already_read,
        member,
        peer,
        shared,
        held: _held,
    } = *opening;
    let client = member.id().clone();
    info!(%client, room = %member.room(), %peer, "joined");
    shared.metrics.connected();
    let outbox = member.outbox().clone();
    let link = member.link();
    // Here and below, what runs only at the start or the end of a session is boxed:
    // a future is as large as its largest state, and every idle connection carries
    // this one for as long as it lasts.
    let (mut socket, writer) =
        Box::pin(open(transport, already_read, outbox.clone(), &shared)).await;
    let mut transmitter = Transmitter::spawn(writer, outbox.clone());
    let keepalive = Keepalive::new();
    let config = &shared.config;
    let ending = tokio::select! {
        ending = receive(&mut socket, &keepalive, &outbox, &shared, |text, wakes| relay(&member, &shared, text, wakes)) => ending,
        ending = transmitter.failed() => ending,
        () = keepalive.watch(&outbox, config.ping_interval, config.ping_timeout) => {
            Disconnect::PingTimeout
        }
        removal = outbox.ended() => match removal.map(|removal| removal.code) {
            None => Disconnect::SlowConsumer,
            Some(BANNED) => Disconnect::Banned,
            Some(_) => Disconnect::Kicked,
        },
        () = shared.shutdown.cancelled() => Disconnect::ShuttingDown,
        () = shared.cluster_lost(link) => Disconnect::BrokerLost,
        ending = history::catch_up(&member) => ending,
    };
    // Leaving the room before closing means nothing more is queued for a closing socket.
    drop(member);
    shared.metrics.disconnected(ending);
    info!(%client, %peer, reason = ending.label(), "left");
    Box::pin(goodbye(socket, transmitter, &outbox, ending)).await;
}

/// Stops the writer, and closes as `ending` calls for unless writing had failed.
async fn goodbye(socket: Socket, transmitter: Transmitter, outbox: &Outbox, ending: Disconnect) {
    if let Some(writer) = transmitter.stop().await {
        close(socket, writer, outbox, ending).await;
    }
}

/// Reads frames until the session must end, relaying each text message to the room.
///
/// It waits before reading on while the member's own outbox is over its high-water
/// mark, and, with a rate limit, for a token: either way the client's data stays in the
/// socket buffers and TCP slows the sender down; nothing is dropped. (Frames and bytes
/// are metered where they are read; see `meter`.)
///
/// The writers of the members a message reaches are woken only when this reader is
/// about to wait, for any of those or for its client's next frame (see [`Wakes`]), so
/// that everything read in one go leaves in one `writev` per recipient.
async fn receive(
    socket: &mut Socket,
    keepalive: &Keepalive,
    outbox: &Outbox,
    shared: &Shared,
    relay: impl Fn(&str, &mut Wakes) -> Result<(), Disconnect>,
) -> Disconnect {
    let mut messages = shared.config.rate_limit.as_ref().map(TokenBucket::for_rate);
    let mut wakes = Wakes::default();
    loop {
        if let Some(wait) = messages.as_mut().and_then(TokenBucket::wait) {
            wakes.release().await;
            Box::pin(tokio::time::sleep(wait)).await;
        }
        wakes.wait_for(outbox.below_high_water()).await;
        wakes.wait_for(shared.rooms.has_room()).await;
        let frame = wakes.wait_for(socket.next()).await;
        keepalive.heard();
        match frame {
            Some(Ok(Message::Text(text))) => {
                debug!(bytes = text.len(), "message");
                shared.metrics.received(text.len());
                // Counted against the store's or the cluster's backlog before it is
                // handed on, so that sessions reading at once cannot overshoot it.
                let reserved = wakes
                    .wait_for(Box::pin(
                        shared.rooms.reserve(backlog::most_for_frame(text.len())),
                    ))
                    .await;
                // Relayed once every live member has room for what it may cost (see
                // `Wakes`): a member still full after the grace is counted as not
                // reading, and evicted if its queue overflows.
                let relayed = loop {
                    wakes.expect(wire::most_for_text(&text));
                    let relayed = relay(&text, &mut wakes);
                    let full = wakes.take_lacking();
                    if full.is_empty() {
                        break relayed;
                    }
                    wakes.release().await;
                    Box::pin(drained_by(full, Instant::now() + DELIVERY_GRACE)).await;
                };
                drop(reserved);
                if let Err(ending) = relayed {
                    return ending;
                }
                if let Some(messages) = &mut messages {
                    messages.take(1.0);
                }
            }
            Some(Ok(Message::Ping(_))) => {
                wakes.release().await;
                Box::pin(answer_ping(socket, outbox)).await;
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
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

/// Relays what a member sent: a plain client's text as it is, a v1 or v2 client's
/// request once it is read as one. A v2 request the room refuses is answered with an
/// error frame; only a frame that is not a request ends the session.
fn relay(
    member: &Member,
    shared: &Arc<Shared>,
    text: &str,
    wakes: &mut Wakes,
) -> Result<(), Disconnect> {
    match member.protocol() {
        Protocol::Plain => member.say(text, None, wakes),
        Protocol::V1 => match v1::Request::parse(text) {
            Ok(v1::Request::Message { text, nonce }) => member.say(&text, nonce, wakes),
            Err(error) => {
                debug!(%error, "invalid request");
                return Err(Disconnect::InvalidRequest);
            }
        },
        Protocol::V2 => match v2::Request::parse(text) {
            Ok(v2::Request::Dms { nonce }) => list_direct_rooms(member, shared, nonce),
            Ok(v2::Request::History {
                before,
                after,
                limit,
                nonce,
            }) => match Query::page(before, after, limit, nonce.as_deref()) {
                Ok(query) => history::answer_member(member, query, nonce),
                Err(error) => refuse(member, &error),
            },
            Ok(v2::Request::Members {
                after,
                limit,
                nonce,
            }) => {
                if let Err(error) = member.members(after, limit, nonce.as_deref()) {
                    refuse(member, &error);
                }
            }
            Ok(v2::Request::Search {
                text,
                before,
                limit,
                nonce,
            }) => match Query::search(&text, before, limit, nonce.as_deref()) {
                Ok(query) => history::answer_member(member, query, nonce),
                Err(error) => refuse(member, &error),
            },
            Ok(request) => {
                let asked = request.clone();
                match member.request(request, wakes) {
                    Ok(()) => {}
                    Err(error)
                        if error.code == v2::ErrorCode::TooOld
                            && member.room_handle().store().is_some() =>
                    {
                        history::change_old_message(member, asked);
                    }
                    Err(error) => refuse(member, &error),
                }
            }
            Err(error) => {
                debug!(%error, "invalid request");
                return Err(Disconnect::InvalidV2Request);
            }
        },
    }
    Ok(())
}

/// Answers a request the member may not make with an error frame.
pub(super) fn refuse(member: &Member, error: &v2::Error) {
    debug!(code = ?error.code, "request refused");
    member
        .outbox()
        .push(&wire::json(error, 128 + error.message.len()));
}

/// Answers `dms` with the member's direct-message rooms, from a task of its own: the
/// store's are read from disk.
fn list_direct_rooms(member: &Member, shared: &Arc<Shared>, nonce: Option<String>) {
    let (id, outbox, shared) = (member.id().clone(), member.outbox().clone(), shared.clone());
    tokio::spawn(
        async move {
            let rooms = shared.rooms.direct_rooms(&id).await;
            let list = v2::DirectRooms { nonce, rooms };
            outbox.push(&wire::json(&list, 64 + 96 * list.rooms.len()));
        }
        .in_current_span(),
    );
}

/// Hands tungstenite's pong to the outbox now, and waits for the writer to take it
/// before the next frame is read: every ping is answered, and a client that pings but
/// does not read is read no further until it does, with one pong waiting for it.
async fn answer_ping(socket: &mut Socket, outbox: &Outbox) {
    // An error here is the connection's, and the next read reports it.
    let _ = socket.flush().await;
    outbox.pong_taken().await;
}

/// Writes the outbox to the socket, a whole batch per `writev`, until a write fails.
async fn transmit(writer: &mut FrameWriter, outbox: &Outbox) {
    loop {
        writer.take_batch(outbox).await;
        if let Err(error) = writer.flush().await {
            debug!(%error, "write failed");
            return;
        }
    }
}

/// A session's writer, in a task of its own.
///
/// A frame queued for a member wakes its writer, and only that. Inside the session's
/// `select!`, every wake also polled the reader, the keepalive timer and the session's
/// cancellation signals: in a quiet room, where a wake carries one frame, that cost
/// more CPU per delivery than the task's memory per connection is worth.
struct Transmitter {
    task: AbortOnDropHandle<FrameWriter>,
    outbox: Arc<Outbox>,
    /// Set once `failed` has seen the task end by itself: its writer, unless it
    /// panicked.
    ended: Option<Option<FrameWriter>>,
}

impl Transmitter {
    fn spawn(mut writer: FrameWriter, outbox: Arc<Outbox>) -> Self {
        let writing = {
            let outbox = outbox.clone();
            async move {
                // The stop first: it is a flag's load, and `biased` draws no random
                // order at every wake.
                tokio::select! {
                    biased;
                    () = outbox.writer_stopped() => {}
                    () = transmit(&mut writer, &outbox) => {}
                }
                writer
            }
        };
        let task = tokio::spawn(writing.in_current_span());
        Self {
            task: AbortOnDropHandle::new(task),
            outbox,
            ended: None,
        }
    }

    /// Completes if writing fails, which ends the session.
    async fn failed(&mut self) -> Disconnect {
        self.ended = Some((&mut self.task).await.ok());
        Disconnect::Dropped
    }

    /// Stops writing, and gives the writer back (with what it had taken and not yet
    /// written) for the goodbye; none if its task panicked.
    async fn stop(self) -> Option<FrameWriter> {
        let Self {
            task,
            outbox,
            ended,
        } = self;
        if let Some(writer) = ended {
            return writer;
        }
        outbox.stop_writer();
        task.await.ok()
    }
}

/// Says goodbye as `ending` calls for, then closes the TCP connection politely.
async fn close(mut socket: Socket, mut writer: FrameWriter, outbox: &Outbox, ending: Disconnect) {
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
        writer.take_queued(outbox);
        if let Some((code, reason)) = ending.close_frame() {
            let removal = outbox
                .removal()
                .filter(|_| matches!(ending, Disconnect::Kicked | Disconnect::Banned));
            let reason = removal.as_ref().map_or(reason, |removal| &removal.reason);
            writer.push(wire::close(code.into(), reason));
        }
        writer.flush().await
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, goodbye).await;
    let read = socket.into_inner().read;
    if let Some(transport) = read.reunite(writer.into_socket()) {
        linger(transport).await;
    }
}

/// Half-closes the connection (over TLS, after its close_notify) and reads what the
/// peer still sends for a moment, discarding it, up to 64 KiB; past that the
/// connection is simply dropped.
pub async fn linger(mut connection: impl AsyncRead + AsyncWrite + Unpin) {
    /// Enough for what a polite peer has in flight when our close frame reaches it.
    /// A peer that sends more is not closing, and is read no further: without a bound,
    /// one could make the server read (and spend CPU on) hundreds of megabytes in the
    /// linger's second.
    const CLOSE_LINGER_BYTES: usize = 64 * 1024;
    let _ = connection.shutdown().await;
    // On the heap, not in the session's future, which every idle connection carries.
    let mut discard = vec![0u8; 1024];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let mut left = CLOSE_LINGER_BYTES;
        while left > 0 {
            let most = discard.len().min(left);
            match connection.read(&mut discard[..most]).await {
                Ok(read) if read > 0 => left -= read,
                _ => return,
            }
        }
    })
    .await;
}

/// `/echo`, for the Autobahn conformance cases: every message comes back as it was
/// sent, through the same reading, writing, configuration and limits as a chat session.
/// (Its span attached as [`serve`]'s is.)
pub fn echo(
    transport: Transport,
    already_read: Vec<u8>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    held: impl Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let span = tracing::debug_span!("echo", peer = %peer);
    echo_session(transport, already_read, shared, held).instrument(span)
}

async fn echo_session(
    transport: Transport,
    already_read: Vec<u8>,
    shared: Arc<Shared>,
    _held: impl Send + 'static,
) {
    let outbox = Arc::new(Outbox::new(shared.config.queue_bytes()));
    let (mut socket, writer) = open(transport, already_read, outbox.clone(), &shared).await;
    let mut transmitter = Transmitter::spawn(writer, outbox.clone());
    let keepalive = Keepalive::new();
    let config = &shared.config;
    let ending = tokio::select! {
        ending = echo_messages(&mut socket, &keepalive, &outbox) => ending,
        ending = transmitter.failed() => ending,
        () = keepalive.watch(&outbox, config.ping_interval, config.ping_timeout) => {
            Disconnect::PingTimeout
        }
        _ = outbox.ended() => Disconnect::SlowConsumer,
        () = shared.shutdown.cancelled() => Disconnect::ShuttingDown,
    };
    debug!(reason = ending.label(), "echo ended");
    Box::pin(goodbye(socket, transmitter, &outbox, ending)).await;
}

async fn echo_messages(socket: &mut Socket, keepalive: &Keepalive, outbox: &Outbox) -> Disconnect {
    loop {
        outbox.below_high_water().await;
        let frame = socket.next().await;
        keepalive.heard();
        match frame {
            Some(Ok(Message::Text(text))) => outbox.push(&wire::text(&text)),
            Some(Ok(Message::Binary(data))) => outbox.push(&wire::binary(&data)),
            Some(Ok(Message::Ping(_))) => answer_ping(socket, outbox).await,
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) => return Disconnect::ClientClosed,
            Some(Err(error)) => return Disconnect::from_error(&error),
            None => return Disconnect::Dropped,
        }
    }
}
