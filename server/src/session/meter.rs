//! What a client sends, metered before tungstenite sees it: the rate of frames and bytes
//! (pings, pongs and continuation frames included, which never become messages), and
//! the deadline for a message that was started but not finished.
//!
//! Metering happens where the bytes are read, so a client over its rate is simply read
//! more slowly: its data waits in the socket buffers and TCP slows the sender down.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::{Config, RateLimit};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;

/// A token bucket: `rate` tokens a second on average, up to `burst` at once. Taking more
/// than there is goes into debt, which the wait before the next take pays off.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate`.
    pub fn for_rate(rate: &RateLimit) -> Self {
        Self::new(rate.per_second, f64::from(rate.burst))
    }

    /// A full bucket. `rate` must be positive (the configuration checks it).
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate,
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

    /// How long until a whole token is there; `None` if one is there now.
    pub fn wait(&mut self) -> Option<Duration> {
        self.refill();
        (self.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// Whether the bucket has refilled completely, so that forgetting it changes nothing.
    pub fn is_full(&mut self) -> bool {
        self.refill();
        self.tokens >= self.burst
    }

    /// Takes `amount` tokens, going into debt if there are fewer.
    pub fn take(&mut self, amount: f64) {
        self.tokens -= amount;
    }
}

/// The limits on what one connection may send, besides the message rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireLimits {
    /// Frames of any kind per second, on average, and at once.
    pub frames_per_second: f64,
    pub frame_burst: f64,
    /// Bytes per second, on average, and at once.
    pub bytes_per_second: f64,
    pub byte_burst: f64,
}

/// Frames of any kind a connection may send per message of its rate limit: room for
/// fragmented messages and pings, while a flood of empty frames is read slowly.
const FRAMES_PER_MESSAGE: f64 = 4.0;

impl WireLimits {
    /// The frames and bytes a connection may send under `config`'s message rate, if it
    /// has one: up to [`FRAMES_PER_MESSAGE`] frames a message, and as many bytes as
    /// that many messages of the largest size.
    pub fn of(config: &Config) -> Option<Self> {
        let rate = config.rate_limit?;
        let burst = f64::from(rate.burst.max(1));
        let largest = config.max_message_bytes as f64;
        Some(Self {
            frames_per_second: rate.per_second * FRAMES_PER_MESSAGE,
            frame_burst: burst * FRAMES_PER_MESSAGE,
            bytes_per_second: rate.per_second * largest,
            byte_burst: burst * largest,
        })
    }
}

/// The error a read fails with when a message stayed unfinished past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("a message was started but not finished in time")]
pub struct UnfinishedMessage;

/// Meters one connection's incoming bytes.
pub struct WireMeter {
    buckets: Option<(TokenBucket, TokenBucket)>,
    /// Set while the connection is over its rate: reading resumes when it fires. Boxed
    /// and only while needed, since every idle connection carries this struct.
    throttle: Option<Pin<Box<Sleep>>>,
    scanner: FrameScanner,
    message_timeout: Duration,
    /// Set while a data message is open: the time by which it must be finished.
    unfinished: Option<Pin<Box<Sleep>>>,
}

impl WireMeter {
    pub fn new(limits: Option<WireLimits>, message_timeout: Duration) -> Self {
        Self {
            buckets: limits.map(|limits| {
                (
                    TokenBucket::new(limits.frames_per_second, limits.frame_burst),
                    TokenBucket::new(limits.bytes_per_second, limits.byte_burst),
                )
            }),
            throttle: None,
            scanner: FrameScanner::default(),
            message_timeout,
            unfinished: None,
        }
    }

    /// Ready to read when the connection is within its rate; an error once an open
    /// message has outlived its deadline.
    pub fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(deadline) = &mut self.unfinished
            && deadline.as_mut().poll(context).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                UnfinishedMessage,
            )));
        }
        loop {
            if let Some(throttle) = &mut self.throttle {
                ready!(throttle.as_mut().poll(context));
                self.throttle = None;
            }
            let Some((frames, bytes)) = &mut self.buckets else {
                return Poll::Ready(Ok(()));
            };
            match frames.wait().max(bytes.wait()) {
                None => return Poll::Ready(Ok(())),
                Some(wait) => self.throttle = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
    }

    /// Counts bytes just read from the connection.
    pub fn record(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let finished_before = self.scanner.finished;
        let frames = self.scanner.scan(bytes);
        if let Some((frame_bucket, byte_bucket)) = &mut self.buckets {
            frame_bucket.take(frames as f64);
            byte_bucket.take(bytes.len() as f64);
        }
        // A message finished in these bytes, and the one open at their end began after
        // it: its own time starts now. Read at a throttled pace, a client that sends
        // faster than its rate has a message open at the end of nearly every read, each
        // a later one, and was closed when the first one's deadline came.
        let another = self.scanner.finished != finished_before;
        if !self.scanner.in_message {
            self.unfinished = None;
        } else if self.unfinished.is_none() || another {
            let deadline = tokio::time::sleep(self.message_timeout);
            self.unfinished = Some(Box::pin(deadline));
        }
    }
}

/// Follows frame boundaries in the bytes a client sends, without keeping the bytes:
/// counts frames, and knows whether a data message is open (started, and its last
/// frame not yet wholly read).
#[derive(Default)]
struct FrameScanner {
    header: [u8; 14],
    header_bytes: usize,
    payload_left: u64,
    /// Whether the frame whose payload is being read is the last of its message.
    finishes_message: bool,
    in_message: bool,
    /// Data messages finished so far.
    finished: u64,
    /// The stream is not valid WebSocket framing; tungstenite will close it.
    broken: bool,
}

impl FrameScanner {
    /// Scans `bytes`, the next ones in the stream; returns how many frames began.
    fn scan(&mut self, mut bytes: &[u8]) -> usize {
        let mut frames = 0;
        while !bytes.is_empty() && !self.broken {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skipped;
                bytes = &bytes[skipped as usize..];
                if self.payload_left == 0 && self.finishes_message {
                    self.finish_message();
                }
                continue;
            }
            self.header[self.header_bytes] = bytes[0];
            self.header_bytes += 1;
            bytes = &bytes[1..];
            if self.header_bytes < 2 || self.header_bytes < header_length(self.header[1]) {
                continue;
            }
            let mut cursor = io::Cursor::new(&self.header[..self.header_bytes]);
            self.header_bytes = 0;
            let Ok(Some((header, length))) = FrameHeader::parse(&mut cursor) else {
                self.broken = true;
                break;
            };
            frames += 1;
            self.finishes_message = match header.opcode {
                OpCode::Data(_) => {
                    self.in_message = true;
                    header.is_final
                }
                OpCode::Control(_) => false,
            };
            self.payload_left = length;
            if length == 0 && self.finishes_message {
                self.finish_message();
            }
        }
        frames
    }

    fn finish_message(&mut self) {
        self.in_message = false;
        self.finished += 1;
    }
}

/// The length of a client frame's header, from its second byte: the length encoding
/// and the mask bit (RFC 6455 §5.2).
fn header_length(second_byte: u8) -> usize {
    let extended_length = match second_byte & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second_byte & 0x80 != 0 { 4 } else { 0 };
    2 + extended_length + mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;

    fn masked(opcode: OpCode, payload: &[u8], is_final: bool) -> Vec<u8> {
        format_masked(Frame::message(payload.to_vec(), opcode, is_final))
    }

    fn masked_ping() -> Vec<u8> {
        format_masked(Frame::ping(Vec::new()))
    }

    fn format_masked(mut frame: Frame) -> Vec<u8> {
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn frames_are_counted_however_the_bytes_are_split() {
        let mut stream = Vec::new();
        stream.extend(masked(OpCode::Data(Data::Text), b"hello", true));
        stream.extend(masked_ping());
        stream.extend(masked(OpCode::Data(Data::Text), &[b'x'; 300], true));
        stream.extend(masked(OpCode::Data(Data::Binary), &[0; 70_000], true));
        for chunk_size in [1, 3, 7, 100, stream.len()] {
            let mut scanner = FrameScanner::default();
            let frames: usize = stream
                .chunks(chunk_size)
                .map(|chunk| scanner.scan(chunk))
                .sum();
            assert_eq!(frames, 4, "chunks of {chunk_size}");
            assert!(!scanner.in_message);
        }
    }

    #[test]
    fn a_fragmented_message_is_open_until_its_last_frame_is_read() {
        let mut scanner = FrameScanner::default();
        scanner.scan(&masked(OpCode::Data(Data::Text), b"Hel", false));
        assert!(scanner.in_message);
        // A ping in the middle neither opens nor closes a message.
        scanner.scan(&masked_ping());
        assert!(scanner.in_message);
        let last = masked(OpCode::Data(Data::Continue), b"lo", true);
        scanner.scan(&last[..last.len() - 1]);
        assert!(scanner.in_message, "the last byte is still to come");
        scanner.scan(&last[last.len() - 1..]);
        assert!(!scanner.in_message);
        // An empty continuation frame that ends the message ends it at its header.
        scanner.scan(&masked(OpCode::Data(Data::Text), b"a", false));
        scanner.scan(&masked(OpCode::Data(Data::Continue), b"", true));
        assert!(!scanner.in_message);
    }

    #[test]
    fn garbage_stops_the_scan() {
        let mut scanner = FrameScanner::default();
        // Opcode 0xF is reserved: tungstenite's parser refuses it.
        assert_eq!(scanner.scan(&[0x8f, 0x80, 0, 0, 0, 0, 0x81, 0x80]), 0);
        assert!(scanner.broken);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_in_debt_waits_for_the_debt_to_be_paid() {
        let mut bucket = TokenBucket::new(10.0, 5.0);
        assert_eq!(bucket.wait(), None);
        bucket.take(15.0);
        // 10 in debt, so 11 short of a whole token: 1.1 s at 10 a second.
        let wait = bucket.wait().expect("in debt");
        assert!((wait.as_secs_f64() - 1.1).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(bucket.wait(), None);
    }

    /// Whether the meter lets the next read go ahead now, without waiting.
    fn ready_now(meter: &mut WireMeter) -> Poll<io::Result<()>> {
        let waker = futures_util::task::noop_waker();
        meter.poll_ready(&mut Context::from_waker(&waker))
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_left_unfinished_past_its_timeout_fails_the_read() {
        let timeout = Duration::from_secs(20);
        let mut meter = WireMeter::new(None, timeout);
        meter.record(&masked(OpCode::Data(Data::Text), b"Hel", false));
        tokio::time::advance(timeout - Duration::from_millis(1)).await;
        assert!(matches!(ready_now(&mut meter), Poll::Ready(Ok(()))));
        tokio::time::advance(Duration::from_millis(1)).await;
        match ready_now(&mut meter) {
            Poll::Ready(Err(error)) => assert_eq!(error.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected the message timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_finished_in_time_clears_its_deadline() {
        let timeout = Duration::from_secs(20);
        let mut meter = WireMeter::new(None, timeout);
        meter.record(&masked(OpCode::Data(Data::Text), b"Hel", false));
        tokio::time::advance(timeout / 2).await;
        meter.record(&masked(OpCode::Data(Data::Continue), b"lo", true));
        tokio::time::advance(timeout * 2).await;
        assert!(matches!(ready_now(&mut meter), Poll::Ready(Ok(()))));
    }

    /// A client over its rate is read slowly, and each read may end inside a message:
    /// each message open at the end of a read has its own time, from the read that
    /// began it, however long the stream of messages lasts.
    #[tokio::test(start_paused = true)]
    async fn each_message_open_at_the_end_of_a_read_has_its_own_deadline() {
        let timeout = Duration::from_secs(20);
        let mut meter = WireMeter::new(None, timeout);
        let message = masked(OpCode::Data(Data::Text), &[b'x'; 40], true);
        let stream: Vec<u8> = std::iter::repeat_n(&message, 100)
            .flatten()
            .copied()
            .collect();
        // Reads one byte longer than a message: each of the first ones ends inside a
        // message, a byte further into it than the one before, and each after the
        // first finishes the message the one before left open.
        let read = message.len() + 1;
        for chunk in stream.chunks(read).take(message.len() - 1) {
            meter.record(chunk);
            tokio::time::advance(timeout / 2).await;
            assert!(
                matches!(ready_now(&mut meter), Poll::Ready(Ok(()))),
                "no message was open for its whole timeout"
            );
        }
        // The message the last read left open is timed from that read.
        tokio::time::advance(timeout / 2).await;
        assert!(matches!(ready_now(&mut meter), Poll::Ready(Err(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn over_its_rate_a_connection_is_read_again_once_the_debt_is_paid() {
        let limits = WireLimits {
            frames_per_second: 1.0,
            frame_burst: 1.0,
            bytes_per_second: 1e9,
            byte_burst: 1e9,
        };
        let mut meter = WireMeter::new(Some(limits), Duration::from_secs(20));
        let frame = masked(OpCode::Data(Data::Text), b"x", true);
        meter.record(&frame);
        meter.record(&frame);
        // Two frames against a burst of one: one in debt, so two seconds to a token.
        assert!(ready_now(&mut meter).is_pending());
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(ready_now(&mut meter).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(ready_now(&mut meter), Poll::Ready(Ok(()))));
    }
}
