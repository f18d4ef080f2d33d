//! A connection's two halves.
//!
//! Reading goes through tungstenite, which parses and checks every frame and answers
//! pings and close frames. What tungstenite writes (those answers) is queued in the
//! connection's outbox like any other frame, so that one [`Writer`] owns the socket's
//! write half and sends whole frames, shared by every recipient, with `writev`: no
//! per-connection copy of what the room sends, and no per-connection write buffer.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::meter::WireMeter;
use crate::outbox::Outbox;
use crate::wire::{self, Frame};

/// The half tungstenite sees: reads from the socket through the meter, and "writes"
/// into the outbox.
pub struct Inbound {
    pub read: OwnedReadHalf,
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
pub struct Writer {
    socket: OwnedWriteHalf,
    /// Frames to write, in order. Only `flush` takes them out, and only once written,
    /// so a flush that is cancelled half-way resumes where it stopped.
    frames: Vec<Frame>,
    /// Frames of `frames` already written, and bytes of the next one.
    written: usize,
    offset: usize,
}

impl Writer {
    pub fn new(socket: OwnedWriteHalf) -> Self {
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
    pub fn into_socket(self) -> OwnedWriteHalf {
        self.socket
    }

    /// Writes every frame in `frames`. Cancel-safe: progress is recorded after each
    /// write, and a write either happened or did not.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.written < self.frames.len() {
            // On the heap rather than in this future, which every connection carries.
            let slices: Vec<IoSlice<'_>> = self.frames[self.written..]
                .iter()
                .take(MOST_SLICES)
                .enumerate()
                .map(|(index, frame)| {
                    let start = if index == 0 { self.offset } else { 0 };
                    IoSlice::new(&frame[start..])
                })
                .collect();
            let mut written = self.socket.write_vectored(&slices).await?;
            drop(slices);
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
        self.frames.clear();
        self.written = 0;
        if self.frames.capacity() > FRAMES_KEPT {
            self.frames = Vec::new();
        }
        Ok(())
    }
}
