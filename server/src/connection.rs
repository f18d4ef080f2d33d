//! One WebSocket session: reads the member's frames, writes its outbox, and closes it
//! with the close code that says why it ended.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::room::{Member, Outbox};

type Socket = WebSocketStream<TcpStream>;

/// How long a closing connection may take to flush its last frames and close frame.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long we keep reading after our close frame, so that unread input does not make
/// the kernel answer with a reset that could destroy the close frame in flight.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Why a session ended; decides the close frame the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client sent a close frame; ours is the echo tungstenite already queued.
    ClientClosed,
    /// The TCP connection ended or failed; there is nobody to tell.
    Dropped,
    Binary,
    TooBig,
    InvalidUtf8,
    ProtocolViolation,
    SlowConsumer,
    ShuttingDown,
}

impl Ending {
    fn from_error(error: &WsError) -> Self {
        match error {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => Self::TooBig,
            WsError::Capacity(_) => Self::TooBig,
            WsError::Utf8(_) => Self::InvalidUtf8,
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Self::Dropped,
            WsError::Protocol(_) => Self::ProtocolViolation,
            _ => Self::Dropped,
        }
    }

    /// The close frame we send, if any.
    fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        match self {
            Self::ClientClosed | Self::Dropped => None,
            Self::Binary => Some((CloseCode::Unsupported, "binary frames are not supported")),
            Self::TooBig => Some((CloseCode::Size, "message too big")),
            Self::InvalidUtf8 => Some((CloseCode::Invalid, "text is not valid UTF-8")),
            Self::ProtocolViolation => Some((CloseCode::Protocol, "protocol violation")),
            Self::SlowConsumer => Some((CloseCode::Policy, "slow consumer")),
            Self::ShuttingDown => Some((CloseCode::Away, "server shutting down")),
        }
    }

    /// A short name for logs.
    fn reason(self) -> &'static str {
        match self {
            Self::ClientClosed => "closed by client",
            Self::Dropped => "connection dropped",
            Self::Binary => "binary frame",
            Self::TooBig => "message too big",
            Self::InvalidUtf8 => "invalid utf-8",
            Self::ProtocolViolation => "protocol violation",
            Self::SlowConsumer => "slow consumer",
            Self::ShuttingDown => "server shutting down",
        }
    }
}

/// Runs a member's session until the client goes, misbehaves, or the server shuts down.
#[tracing::instrument(name = "session", skip_all, fields(client = %member.id(), peer = %peer))]
pub async fn serve(socket: Socket, member: Member, peer: SocketAddr, shutdown: CancellationToken) {
    info!("joined");
    let (mut sink, mut stream) = socket.split();
    let ending = tokio::select! {
        ending = receive(&mut stream, &member) => ending,
        ending = transmit(&mut sink, member.outbox()) => ending,
        () = member.outbox().evicted() => Ending::SlowConsumer,
        () = shutdown.cancelled() => Ending::ShuttingDown,
    };
    if matches!(ending, Ending::ShuttingDown | Ending::ClientClosed) {
        // Flush what the room already queued before saying goodbye: a client that closes
        // still gets the messages sent before its close, its own last one included.
        let mut batch = Vec::new();
        if member.outbox().take_queued(&mut batch) {
            let _ =
                tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, write_batch(&mut sink, &mut batch)).await;
        }
    }
    // Leaving the room before closing means nothing more is queued for a dead socket.
    drop(member);
    info!(reason = ending.reason(), "left");
    close(sink, stream, ending).await;
}

/// Reads frames until the session must end, relaying each text message to the room.
async fn receive(stream: &mut SplitStream<Socket>, member: &Member) -> Ending {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                debug!(bytes = text.len(), "message");
                member.say(&text);
            }
            // tungstenite answers pings itself, on the next read or write.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Binary(_))) => return Ending::Binary,
            Some(Ok(Message::Close(_))) => return Ending::ClientClosed,
            Some(Err(error)) => {
                debug!(%error, "read failed");
                return Ending::from_error(&error);
            }
            None => return Ending::Dropped,
        }
    }
}

/// Writes the outbox to the socket, a whole batch per flush.
async fn transmit(sink: &mut SplitSink<Socket, Message>, outbox: &Outbox) -> Ending {
    let mut batch = Vec::new();
    loop {
        outbox.next_batch(&mut batch).await;
        if let Err(error) = write_batch(sink, &mut batch).await {
            debug!(%error, "write failed");
            return Ending::Dropped;
        }
    }
}

async fn write_batch(
    sink: &mut SplitSink<Socket, Message>,
    batch: &mut Vec<Utf8Bytes>,
) -> Result<(), WsError> {
    for frame in batch.drain(..) {
        sink.feed(Message::Text(frame)).await?;
    }
    sink.flush().await
}

/// Sends the close frame `ending` calls for, then closes the TCP connection politely.
async fn close(mut sink: SplitSink<Socket, Message>, stream: SplitStream<Socket>, ending: Ending) {
    let goodbye = async {
        match ending.close_frame() {
            Some((code, reason)) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                sink.send(Message::Close(Some(frame))).await
            }
            // Sends the echo of the client's close frame, if tungstenite queued one.
            None => sink.flush().await,
        }
    };
    if ending == Ending::Dropped {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, goodbye).await;
    let Ok(socket) = sink.reunite(stream) else {
        return;
    };
    let mut tcp = socket.into_inner();
    let _ = tcp.shutdown().await;
    let mut discard = [0u8; 1024];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while matches!(tcp.read(&mut discard).await, Ok(n) if n > 0) {}
    })
    .await;
}
