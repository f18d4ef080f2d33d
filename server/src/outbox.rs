//! A connection's outbox: the bounded queue of encoded frames its writer drains.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::wire::Frame;

/// A bounded queue of encoded frames for one connection, measured in bytes.
///
/// Fan-out never waits on a reader: a push either fits or evicts the member as a slow
/// consumer, dropping what was queued so memory is returned at once. Control frames
/// (pings, close replies) take the same queue, so one writer owns the socket; a pong
/// has a slot of its own, and the reader waits for the writer to take it before it
/// reads on, so a client that floods pings and never reads is slowed down instead of
/// making the server keep its answers.
pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Notified when the writer takes the queue while it was over the high-water mark.
    drained: Notify,
    /// Notified when the writer takes a pong.
    pong_taken: Notify,
    evicted: CancellationToken,
}

struct Queue {
    frames: Vec<Frame>,
    /// What the queued frames cost, as counted by [`queued_cost`].
    bytes: usize,
    max_bytes: usize,
    pong: Option<Frame>,
    /// Set with `Outbox::evicted`, here so that a push checks it under the lock it
    /// takes anyway instead of the token's own lock.
    evicted: bool,
}

/// What one queued frame costs this connection: the pointer in its queue, and the
/// frame, which is shared with every other recipient but counted whole here so that
/// the bound holds even when this member is its only recipient.
fn queued_cost(frame: &Frame) -> usize {
    std::mem::size_of::<Frame>() + frame.len()
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                frames: Vec::new(),
                bytes: 0,
                max_bytes,
                pong: None,
                evicted: false,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            pong_taken: Notify::new(),
            evicted: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every change to the queue is completed before the guard drops, so a poisoned lock
        // is still good to use.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an encoded frame, or evicts the connection if it would overflow.
    pub fn push(&self, frame: &Frame) {
        self.push_all(std::slice::from_ref(frame), queued_cost);
    }

    /// Queues frames that stay in memory whether or not they are queued (the room's
    /// history), so that only their pointers count against the bound: a client resuming
    /// with a long history is not a slow consumer for that. One lock for all of them.
    pub fn push_resident<'a>(&self, frames: impl IntoIterator<Item = &'a Frame>) {
        self.push_all(frames, |_| std::mem::size_of::<Frame>());
    }

    /// Queues `frames` in order, each costing what `cost` says, or evicts the connection
    /// at the first that would overflow.
    fn push_all<'a>(
        &self,
        frames: impl IntoIterator<Item = &'a Frame>,
        cost: impl Fn(&Frame) -> usize,
    ) {
        let mut queue = self.lock();
        if queue.evicted {
            return;
        }
        let was_empty = queue.is_empty();
        let frames = frames.into_iter();
        // A resuming client's replay is thousands of frames at once: room for them in
        // one allocation, not a dozen doublings.
        queue.frames.reserve(frames.size_hint().0);
        for frame in frames {
            let cost = cost(frame);
            if queue.bytes + cost > queue.max_bytes {
                queue.frames = Vec::new();
                queue.bytes = 0;
                queue.pong = None;
                queue.evicted = true;
                drop(queue);
                self.evicted.cancel();
                return;
            }
            queue.frames.push(frame.clone());
            queue.bytes += cost;
        }
        let now_empty = queue.is_empty();
        drop(queue);
        if was_empty && !now_empty {
            self.ready.notify_one();
        }
    }

    /// Whether the connection overflowed its queue and is to be disconnected.
    #[cfg(test)]
    pub fn is_evicted(&self) -> bool {
        self.lock().evicted
    }

    /// Queues a pong, replacing one not yet taken (RFC 6455 §5.5.3 allows answering only
    /// the latest ping).
    pub fn push_pong(&self, pong: Frame) {
        let mut queue = self.lock();
        let was_empty = queue.is_empty();
        queue.pong = Some(pong);
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Waits until frames are queued, then moves all of them into `batch`, which must
    /// be empty. Swapping buffers keeps both allocations alive across batches.
    ///
    /// A writer that had to wait lets every other task that is ready run once before it
    /// takes the queue: the frame that woke it is often the first of a burst (several
    /// senders answering at once), and the other senders' readers, ready in the same
    /// tick, fan theirs out meanwhile, so the burst leaves in one `writev` instead of one
    /// write per frame. Without a burst this costs one more poll and no waiting.
    pub async fn next_batch(&self, batch: &mut Vec<Frame>) {
        debug_assert!(batch.is_empty());
        if self.take_queued(batch) {
            return;
        }
        loop {
            // A push between take_queued and here stores a permit, so none is missed.
            self.ready.notified().await;
            if !self.lock().is_empty() {
                break;
            }
        }
        tokio::task::yield_now().await;
        self.take_queued(batch);
    }

    /// Moves whatever is queued into `batch` without waiting, a pending pong first;
    /// false if there was nothing.
    pub fn take_queued(&self, batch: &mut Vec<Frame>) -> bool {
        let mut queue = self.lock();
        if queue.is_empty() {
            return false;
        }
        let pong = queue.pong.take();
        let took_pong = pong.is_some();
        batch.extend(pong);
        if batch.is_empty() {
            std::mem::swap(&mut queue.frames, batch);
        } else {
            batch.append(&mut queue.frames);
        }
        let was_high = queue.bytes > queue.max_bytes / 2;
        queue.bytes = 0;
        drop(queue);
        if was_high {
            self.drained.notify_one();
        }
        if took_pong {
            self.pong_taken.notify_one();
        }
        true
    }

    /// Completes once no pong waits for the writer.
    pub async fn pong_taken(&self) {
        self.wait_until(&self.pong_taken, |queue| queue.pong.is_none())
            .await;
    }

    /// Completes once `done` holds, checking it again each time `notify` says the
    /// queue changed. `take_queued` notifies after changing it, so a permit stored
    /// between a check and the wait is not missed.
    async fn wait_until(&self, notify: &Notify, done: impl Fn(&Queue) -> bool) {
        while !done(&self.lock()) {
            notify.notified().await;
        }
    }

    /// Completes once at most half the queue's bound is waiting: a member's reader
    /// waits for this before reading on, so that a client that sends faster than it
    /// reads the room back is slowed down instead of evicted for its own echoes.
    pub async fn below_high_water(&self) {
        self.wait_until(&self.drained, |queue| queue.bytes <= queue.max_bytes / 2)
            .await;
    }

    /// Completes when this member overflowed its queue and must be disconnected.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.pong.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::wire;

    #[test]
    fn only_the_latest_pong_waits_and_it_goes_first() {
        let outbox = Outbox::new(1 << 20);
        outbox.push(&wire::text("hello"));
        outbox.push_pong(wire::raw(&[0x8a, 1, b'1']));
        outbox.push_pong(wire::raw(&[0x8a, 1, b'2']));
        let mut batch = Vec::new();
        assert!(outbox.take_queued(&mut batch));
        let frames: Vec<&[u8]> = batch.iter().map(|frame| &frame[..]).collect();
        assert_eq!(
            frames,
            [
                &[0x8a, 1, b'2'][..],
                &[0x81, 5, b'h', b'e', b'l', b'l', b'o']
            ]
        );
    }

    #[tokio::test]
    async fn a_writer_woken_by_a_burst_takes_what_the_burst_fanned_out_since() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut batch = Vec::new();
                outbox.next_batch(&mut batch).await;
                batch.len()
            }
        });
        tokio::task::yield_now().await;
        // The first frame wakes the writer; a second sender, ready only after that
        // wake, fans out before the writer takes its batch.
        tokio::spawn({
            let outbox = outbox.clone();
            async move {
                outbox.push(&wire::text("first"));
                tokio::spawn(async move { outbox.push(&wire::text("second")) });
            }
        });
        assert_eq!(writer.await.unwrap(), 2, "one batch for the burst");
    }

    #[tokio::test]
    async fn a_reader_waits_over_the_high_water_mark_until_the_writer_takes_the_queue() {
        let outbox = Arc::new(Outbox::new(1000));
        let frame = wire::text(&"x".repeat(300));
        outbox.push(&frame);
        outbox.below_high_water().await; // 308 + 8 bytes: under half
        outbox.push(&frame);
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.below_high_water().await }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "over half the bound, the reader waits"
        );
        outbox.take_queued(&mut Vec::new());
        waiting.await.unwrap();
    }
}
