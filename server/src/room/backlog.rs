//! Events handed on and not yet done with (written by the journal, or back from Redis),
//! counted in bytes: sessions wait for room under a bound before reading their clients
//! on, so that TCP slows the senders instead of a queue growing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chat::v1::{self, EventKind};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// A byte count of events in flight, with a bound that sessions wait under, shown in
/// a gauge of its own.
pub struct Backlog {
    bytes: AtomicUsize,
    drained: Notify,
    /// The most bytes waiting before sessions wait too.
    bound: usize,
    metrics: Arc<Metrics>,
    /// The gauge in `metrics` that shows this backlog.
    gauge: fn(&Metrics, i64),
}

impl Backlog {
    pub fn new(bound: usize, metrics: Arc<Metrics>, gauge: fn(&Metrics, i64)) -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            drained: Notify::new(),
            bound,
            metrics,
            gauge,
        }
    }

    /// `bytes` were handed on: an event's [`cost`].
    pub fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        (self.gauge)(&self.metrics, bytes as i64);
    }

    /// `bytes` of what was added are done with.
    pub fn release(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        (self.gauge)(&self.metrics, -(bytes as i64));
        self.drained.notify_waiters();
    }

    /// Waits until what waits is under the bound, and counts `bytes` more at once, in
    /// one step, until the returned [`Reserved`] is dropped: a session reserves what
    /// the frame it has read can cost before handing it on (which adds its real cost),
    /// and drops the reservation right after. Checked and counted apart, sessions
    /// that read at once each passed the check before any had counted, and the
    /// backlog overshot its bound by a message per session (508 KiB against 256 KiB);
    /// so it ends past the bound by one message at most.
    pub async fn reserve(&self, bytes: usize) -> Reserved<'_> {
        loop {
            // Made before the check, so that a release between the two still wakes it.
            let drained = self.drained.notified();
            let current = self.bytes.load(Ordering::Acquire);
            if current < self.bound {
                let counted = self.bytes.compare_exchange(
                    current,
                    current + bytes,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if counted.is_ok() {
                    (self.gauge)(&self.metrics, bytes as i64);
                    return Reserved {
                        backlog: self,
                        bytes,
                    };
                }
                continue;
            }
            drained.await;
        }
    }

    /// Completes once what waits is under the bound: a session waits for it before
    /// reading its client's next frame.
    pub async fn has_room(&self) {
        loop {
            // Made before the check, so that a release between the two still wakes it.
            let drained = self.drained.notified();
            if self.bytes.load(Ordering::Acquire) < self.bound {
                return;
            }
            drained.await;
        }
    }
}

/// Bytes counted in a backlog by [`Backlog::reserve`], until dropped.
pub struct Reserved<'a> {
    backlog: &'a Backlog,
    bytes: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.backlog.release(self.bytes);
    }
}

/// The most an event read from a text frame of `frame_bytes` can cost in a backlog
/// (see [`cost`]): its text and nonce are in the frame, no shorter than they are once
/// decoded, and its id is at most a sign and [`chat::MAX_ID_DIGITS`].
pub fn most_for_frame(frame_bytes: usize) -> usize {
    BOOKKEEPING + 1 + chat::MAX_ID_DIGITS + frame_bytes
}

/// What an event's bookkeeping costs in a backlog, beside its id and text.
const BOOKKEEPING: usize = 128;

/// What an event costs in a backlog: its text and its bookkeeping.
pub fn cost(event: &v1::Event) -> usize {
    let text = match &event.kind {
        EventKind::Message { text, nonce, .. } | EventKind::Edit { text, nonce, .. } => {
            text.len() + nonce.as_ref().map_or(0, String::len)
        }
        EventKind::React { emoji, .. } | EventKind::Unreact { emoji, .. } => emoji.len(),
        EventKind::Topic { text, .. } => text.len(),
        EventKind::Kick { member, reason, .. } | EventKind::Ban { member, reason, .. } => {
            member.len() + reason.as_ref().map_or(0, String::len)
        }
        EventKind::Unban { member, .. }
        | EventKind::Mute { member, .. }
        | EventKind::Unmute { member, .. }
        | EventKind::Role { member, .. } => member.len(),
        EventKind::Join { .. }
        | EventKind::Leave { .. }
        | EventKind::Delete { .. }
        | EventKind::Slow { .. }
        | EventKind::ReadOnly { .. } => 0,
    };
    BOOKKEEPING + event.id.len() + text
}
