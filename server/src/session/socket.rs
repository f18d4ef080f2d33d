//! A connection's two halves.
//!
//! Reading goes through tungstenite, which parses and checks every frame and answers
//! pings and close frames. What tungstenite writes (those answers) is queued in the
//! connection's outbox like any other frame, so that one [`FrameWriter`] owns the socket's
//! write half and sends whole frames, shared by every recipient, with `writev`: no
//! per-connection copy of what the room sends, and no per-connection write buffer.
//!
//! The connection is TCP, or TLS over TCP with `--tls-cert` ([`Transport`]); over TLS
//! the frames pass through rustls's record buffer on their way.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

use crate::room::outbox::Outbox;
use crate::room::wire::{self, Frame};
use crate::session::meter::WireMeter;

/// A client's connection: plain TCP, or TLS over it.
pub enum Transport {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The read half of a [`Transport`].
pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>),
}

/// The write half of a [`Transport`].
pub enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>),
}

impl Transport {
    /// Splits the connection, so that tungstenite reads while the writer writes. A TCP
    /// stream splits for free; a TLS stream's halves share one lock, held for a single
    /// read or write at a time.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Tcp(tcp) => {
                let (read, write) = tcp.into_split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
            Self::Tls(tls) => {
                let (read, write) = tokio::io::split(tls);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
        }
    }
}

impl ReadHalf {
    /// The connection again, from the halves [`Transport::split`] gave.
    pub fn reunite(self, write: WriteHalf) -> Option<Transport> {
        match (self, write) {
            (Self::Tcp(read), WriteHalf::Tcp(write)) => {
                read.reunite(write).ok().map(Transport::Tcp)
            }
            (Self::Tls(read), WriteHalf::Tls(write)) => read
                .is_pair_of(&write)
                .then(|| Transport::Tls(read.unsplit(write))),
            _ => None,
        }
    }
}

impl Transport {
    fn stream(self: Pin<&mut Self>) -> Pin<&mut (dyn Stream + Send + Unpin)> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp),
            Self::Tls(tls) => Pin::new(tls),
        }
    }
}

impl ReadHalf {
    fn stream(self: Pin<&mut Self>) -> Pin<&mut (dyn AsyncRead + Send + Unpin)> {
        match self.get_mut() {
            Self::Tcp(read) => Pin::new(read),
            Self::Tls(read) => Pin::new(read),
        }
    }
}

impl WriteHalf {
    fn stream(self: Pin<&mut Self>) -> Pin<&mut (dyn AsyncWrite + Send + Unpin)> {
        match self.get_mut() {
            Self::Tcp(write) => Pin::new(write),
            Self::Tls(write) => Pin::new(write),
        }
    }
}

/// Both directions of a connection, as one trait object.
trait Stream: AsyncRead + AsyncWrite {}

impl<T: AsyncRead + AsyncWrite> Stream for T {}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(context, buffer)
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(context, buffer)
    }
}

/// Writes through `stream()`, vectored writes included (rustls takes them whole).
macro_rules! write_through_stream {
    ($type:ty) => {
        impl AsyncWrite for $type {
            fn poll_write(
                self: Pin<&mut Self>,
                context: &mut Context<'_>,
                bytes: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.stream().poll_write(context, bytes)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                context: &mut Context<'_>,
                slices: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.stream().poll_write_vectored(context, slices)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.stream().poll_flush(context)
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                context: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                self.stream().poll_shutdown(context)
            }
        }
    };
}

write_through_stream!(Transport);
write_through_stream!(WriteHalf);

/// The half tungstenite sees: reads from the socket through the meter, and "writes"
/// into the outbox.
pub struct Inbound {
    pub read: ReadHalf,
    pub meter: WireMeter,
    pub outbox: Arc<Outbox>,
}

impl AsyncRead for Inbound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.meter.poll_ready(context))?;
        let before = buffer.filled().len();
        ready!(Pin::new(&mut this.read).poll_read(context, buffer))?;
        this.meter.record(&buffer.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Inbound {
    /// tungstenite writes its whole buffer of finished frames at once, and this takes
    /// all of it, so the queue only ever holds whole frames. A lone pong takes the
    /// outbox's pong slot, which keeps only the latest.
    fn poll_write(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        frames: &[u8],
    ) -> Poll<io::Result<usize>> {
        let frame = wire::raw(frames);
        if wire::is_lone_pong(&frame) {
            self.outbox.push_pong(frame);
        } else {
            self.outbox.push(&frame);
        }
        Poll::Ready(Ok(frames.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Frames a writer keeps room for between batches; a burst's larger buffer is freed.
const FRAMES_KEPT: usize = 4;

/// The most frames in one `writev`.
const MOST_SLICES: usize = 64;

/// The socket's write half, and the frames on their way out.
pub struct FrameWriter {
    socket: WriteHalf,
    /// Frames to write, in order. Only `flush` takes them out, and only once written,
    /// so a flush that is cancelled half-way resumes where it stopped.
    frames: Vec<Frame>,
    /// Frames of `frames` already written, and bytes of the next one.
    written: usize,
    offset: usize,
}

impl FrameWriter {
    pub fn new(socket: WriteHalf) -> Self {
        Self {
            socket,
            frames: Vec::new(),
            written: 0,
            offset: 0,
        }
    }

    /// Waits for the outbox's next batch, when every frame taken before is written.
    pub async fn take_batch(&mut self, outbox: &Outbox) {
        if self.frames.is_empty() {
            outbox.next_batch(&mut self.frames).await;
        }
    }

    /// Takes whatever the outbox holds now, after the frames taken before.
    pub fn take_queued(&mut self, outbox: &Outbox) {
        let mut queued = Vec::new();
        outbox.take_queued(&mut queued);
        self.frames.append(&mut queued);
    }

    /// Adds a frame after the ones taken.
    pub fn push(&mut self, frame: Frame) {
        self.frames.push(frame);
    }

    /// The socket's write half, to be reunited with its read half.
    pub fn into_socket(self) -> WriteHalf {
        self.socket
    }

    /// Writes every frame in `frames`. Cancel-safe: progress is recorded after each
    /// write, and a write either happened or did not.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.written < self.frames.len() {
            let mut written = if self.written + 1 == self.frames.len() {
                // One frame, as in a quiet room: no list of slices to build.
                let frame = &self.frames[self.written];
                self.socket.write(&frame[self.offset..]).await?
            } else {
                // On the heap rather than in this future, which every connection
                // carries.
                let slices: Vec<IoSlice<'_>> = self.frames[self.written..]
                    .iter()
                    .take(MOST_SLICES)
                    .enumerate()
                    .map(|(index, frame)| {
                        let start = if index == 0 { self.offset } else { 0 };
                        IoSlice::new(&frame[start..])
                    })
                    .collect();
                self.socket.write_vectored(&slices).await?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let left = self.frames[self.written].len() - self.offset;
                if written >= left {
                    written -= left;
                    self.written += 1;
                    self.offset = 0;
                } else {
                    self.offset += written;
                    written = 0;
                }
            }
        }
        // Over TLS, the last records may still be in rustls's buffer; over TCP this is
        // nothing.
        self.socket.flush().await?;
        self.frames.clear();
        self.written = 0;
        if self.frames.capacity() > FRAMES_KEPT {
            self.frames = Vec::new();
        }
        Ok(())
    }
}
