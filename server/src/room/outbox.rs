//! A connection's outbox: the bounded queue of encoded frames its writer drains.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::room::wire::Frame;

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
    /// Wakes the writer, its only waiter: frames were queued. Lighter than a `Notify`,
    /// which keeps a locked list of waiters, and this is taken for every delivery.
    ready: AtomicWaker,
    /// The session is over: its writer stops, and hands back what it has not written
    /// (see [`Outbox::stop_writer`]). A flag here, beside the writer's wake, rather
    /// than a channel of its own, which was one more allocation per connection and
    /// one more cache line to fetch at every wake of its writer.
    writer_stopping: AtomicBool,
    /// Wakes everyone else who waits on the queue, to look again: the writer took it
    /// while it was over the high-water mark, or took a pong; or the member was
    /// evicted or removed. One for all of these, and flags under the lock rather than
    /// cancellation tokens, because every idle connection carries an outbox (two
    /// tokens and two more `Notify`s were about 350 bytes of it); each of these is
    /// rare for a member that reads, so a waiter woken for another's reason costs
    /// little.
    changed: Notify,
}

struct Queue {
    frames: Vec<Frame>,
    /// What the queued frames cost, as counted by [`queued_cost`].
    bytes: usize,
    max_bytes: usize,
    pong: Option<Frame>,
    /// Set when a push overflowed the queue: the session is to end (see
    /// [`Outbox::ended`]), and nothing more is queued.
    evicted: bool,
    /// A batch delivery waited for this queue to drain and it did not: it is not
    /// waited for again until its writer takes it (see [`Outbox::is_full`]).
    stalled: bool,
    /// Why a moderator removed the member: the close frame's code and reason.
    removal: Option<Removal>,
    /// History and search answers on their way: see [`Outbox::begin_answer`].
    answers: usize,
}

/// Why a moderator removed a member: kicked (close code 4001) or banned (4003), and
/// the reason given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub code: u16,
    pub reason: String,
}

/// The most history and search answers one connection may have on their way at once.
/// Each is read (from the store, on a blocking thread) and then waits, whole, for room
/// in the queue: unbounded, a client asking faster than the store answers or than it
/// reads would hold the server's memory, up to half the queue's bound an answer.
pub const ANSWERS_AT_ONCE: usize = 4;

/// One answer counted on its way, until dropped.
pub struct AnswerOnItsWay(Arc<Outbox>);

impl Drop for AnswerOnItsWay {
    fn drop(&mut self) {
        self.0.lock().answers -= 1;
    }
}

/// What one queued frame costs this connection: the pointer in its queue, and the
/// frame, which is shared with every other recipient but counted whole here so that
/// the bound holds even when this member is its only recipient.
pub fn queued_cost(frame: &Frame) -> usize {
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
                stalled: false,
                removal: None,
                answers: 0,
            }),
            ready: AtomicWaker::new(),
            writer_stopping: AtomicBool::new(false),
            changed: Notify::new(),
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
        if self.push_all(std::slice::from_ref(frame), queued_cost) {
            self.ready.wake();
        }
    }

    /// Queues an encoded frame like [`Outbox::push`], but leaves waking the writer to
    /// `wakes`, which does it once the reader that fans out has nothing more to read.
    pub fn push_corked(self: &Arc<Self>, frame: &Frame, wakes: &mut Wakes) {
        self.push_corked_charged(frame, 0, wakes);
    }

    /// Queues a sender's own echo like [`Outbox::push_corked`], counting it as at least
    /// `charge` bytes: the largest frame its message caused in any protocol. A sender
    /// reads on only below its high-water mark, so it is slowed by what its message
    /// costs the room, not by its own copy: a plain client's line of control
    /// characters, escaped six times over in JSON, paces it as the JSON does.
    pub fn push_corked_charged(self: &Arc<Self>, frame: &Frame, charge: usize, wakes: &mut Wakes) {
        let cost = |frame: &Frame| queued_cost(frame).max(charge);
        if self.push_all(std::slice::from_ref(frame), cost) {
            wakes.owed.push(self.clone());
        }
    }

    /// Queues a newcomer's welcome, counting it as at most half the bound: the welcome
    /// lists every member, and in a room of thousands with long ids and names it can
    /// outgrow the whole queue, but a newcomer must never be evicted by its own
    /// welcome. Its real size is bounded by the room's members; counted at half the
    /// bound, it still leaves room for the largest frame that follows it.
    pub fn push_welcome(&self, frame: &Frame) {
        let max_bytes = self.lock().max_bytes;
        let cost = |frame: &Frame| queued_cost(frame).min(max_bytes / 2);
        if self.push_all(std::slice::from_ref(frame), cost) {
            self.ready.wake();
        }
    }

    /// Queues frames that stay in memory whether or not they are queued (the room's
    /// history), so that only their pointers count against the bound: a client resuming
    /// with a long history is not a slow consumer for that. One lock for all of them.
    pub fn push_resident<'a>(&self, frames: impl IntoIterator<Item = &'a Frame>) {
        if self.push_all(frames, |_| std::mem::size_of::<Frame>()) {
            self.ready.wake();
        }
    }

    /// Queues `frames` in order, each costing what `cost` says, or evicts the connection
    /// at the first that would overflow. True if the writer is owed a wake: the queue
    /// was empty and is not.
    #[must_use]
    fn push_all<'a>(
        &self,
        frames: impl IntoIterator<Item = &'a Frame>,
        cost: impl Fn(&Frame) -> usize,
    ) -> bool {
        let mut queue = self.lock();
        if queue.evicted {
            return false;
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
                self.changed.notify_waiters();
                return false;
            }
            queue.frames.push(frame.clone());
            queue.bytes += cost;
        }
        was_empty && !queue.is_empty()
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
            self.ready.wake();
        }
    }

    /// Waits until frames are queued, then moves all of them into `batch`, which must
    /// be empty. Swapping buffers keeps both allocations alive across batches.
    pub async fn next_batch(&self, batch: &mut Vec<Frame>) {
        debug_assert!(batch.is_empty());
        std::future::poll_fn(|context| {
            // Registered before looking: a push after the look wakes this task.
            self.ready.register(context.waker());
            match self.take_queued(batch) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await;
    }

    /// Tells the writer to stop (see [`Outbox::writer_stopped`]).
    pub fn stop_writer(&self) {
        self.writer_stopping.store(true, Ordering::Release);
        self.ready.wake();
    }

    /// Completes once [`Outbox::stop_writer`] was called: what the writer waits on
    /// beside its next batch and its writes. It shares the batch's wake, since both
    /// are the writer's.
    pub async fn writer_stopped(&self) {
        std::future::poll_fn(|context| {
            self.ready.register(context.waker());
            match self.writer_stopping.load(Ordering::Acquire) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await;
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
        queue.stalled = false;
        drop(queue);
        if was_high || took_pong {
            // Every waiter: the member's own reader (for room, or for its pong to be
            // taken), and any batch delivery or sender's relay waiting for room here.
            // Woken one at a time, the others waited on while the client read
            // everything.
            self.changed.notify_waiters();
        }
        true
    }

    /// Completes once no pong waits for the writer.
    pub async fn pong_taken(&self) {
        self.wait_until(|queue| queue.pong.is_none()).await;
    }

    /// Completes once `done` holds, checking it again each time the queue changed.
    /// The wait is registered before each check, so a notification between the check
    /// and the wait is not missed.
    async fn wait_until(&self, done: impl Fn(&Queue) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.lock()) {
                return;
            }
            notified.await;
        }
    }

    /// Completes once at most half the queue's bound is waiting: a member's reader
    /// waits for this before reading on, so that a client that sends faster than it
    /// reads the room back is slowed down instead of evicted for its own echoes.
    pub async fn below_high_water(&self) {
        self.wait_until(|queue| queue.bytes <= queue.max_bytes / 2)
            .await;
    }

    /// Whether `bytes` more would overflow the queue of a member that has not been
    /// found not to read (see [`Outbox::mark_stalled`]): a live fan-out waits instead.
    /// (`bytes` is an estimate from above: past half the bound, which the largest frame
    /// never is, it counts as half.)
    pub fn lacks(&self, bytes: usize) -> bool {
        let queue = self.lock();
        let bytes = bytes.min(queue.max_bytes / 2);
        !queue.evicted && !queue.stalled && queue.bytes + bytes > queue.max_bytes
    }

    /// Whether a batch delivery should wait before pushing here: the queue is over
    /// its high-water mark, so a frame of the largest size might not fit, and it has
    /// not already been waited for in vain since its writer last took it.
    pub fn is_full(&self) -> bool {
        let queue = self.lock();
        !queue.evicted && !queue.stalled && queue.bytes > queue.max_bytes / 2
    }

    /// A batch delivery waited for this queue to drain for as long as a reading client
    /// needs, and it did not: it is not waited for again until its writer takes what
    /// is queued, and a push that overflows it evicts the member, as in live fan-out.
    pub fn mark_stalled(&self) {
        let mut queue = self.lock();
        if queue.bytes > queue.max_bytes / 2 {
            queue.stalled = true;
        }
    }

    /// Completes when the session must end for its outbox's sake: `None` when the
    /// member overflowed its queue (a slow consumer), else why a moderator removed it.
    /// One future for both, since every idle session waits on it.
    pub async fn ended(&self) -> Option<Removal> {
        self.wait_until(|queue| queue.evicted || queue.removal.is_some())
            .await;
        let queue = self.lock();
        match queue.evicted {
            true => None,
            false => queue.removal.clone(),
        }
    }

    /// Ends the member's session, what is queued sent first, with `removal`'s close
    /// code and reason; the first removal is the one told.
    pub fn remove(&self, removal: Removal) {
        self.lock().removal.get_or_insert(removal);
        self.changed.notify_waiters();
    }

    /// Counts one more answer on its way, unless [`ANSWERS_AT_ONCE`] are.
    pub fn begin_answer(self: &Arc<Self>) -> Option<AnswerOnItsWay> {
        let mut queue = self.lock();
        if queue.answers >= ANSWERS_AT_ONCE {
            return None;
        }
        queue.answers += 1;
        Some(AnswerOnItsWay(self.clone()))
    }

    /// Why a moderator removed the member, if one did.
    pub fn removal(&self) -> Option<Removal> {
        self.lock().removal.clone()
    }
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.pong.is_none()
    }
}

/// Waits until each of `full` is at most half full again, or until `deadline`: what a
/// batch delivery (the journal's, the broker's) does before each event, so that it
/// pushes no faster than its recipients read, as a sender in live fan-out reads its
/// client no faster than its own outbox drains. Those still full at the deadline are
/// marked stalled and are not waited for again (see [`Outbox::mark_stalled`]): a
/// client that does not read holds the delivery back once, for the grace, and is then
/// evicted when its queue overflows.
pub async fn drained_by(full: Vec<Arc<Outbox>>, deadline: tokio::time::Instant) {
    for outbox in full {
        if tokio::time::timeout_at(deadline, outbox.below_high_water())
            .await
            .is_err()
        {
            outbox.mark_stalled();
        }
    }
}

/// Writers owed a wake for frames queued with [`Outbox::push_corked`].
///
/// This is how a burst leaves in one `writev` per recipient (uWebSockets calls it
/// corking): a member's reader fans out every message its client has sent that is
/// already there to read, and only when it would wait for more does it [`release`] the
/// writers, after letting every other task that is ready run once, so that the other
/// senders' readers, woken in the same tick, fan theirs out first. Woken at the first
/// frame instead, the writers queued ahead of the burst's other readers, which were
/// read only as those writers finished, so a burst was read slowly and each recipient's
/// `writev` carried only part of it.
/// Dropped, it wakes them at once: a reader that ends owes no one.
///
/// [`release`]: Wakes::release
///
/// It also carries what a message being relayed may need in each outbox (`need`),
/// and, if some live member's outbox could not take that now, those outboxes
/// (`full`): then the room did not number the message, and the reader waits for them
/// ([`drained_by`]) and relays it again. So a live fan-out pushes a frame only into
/// outboxes with room for it, as batch deliveries do, whatever how many senders race.
#[derive(Default)]
pub struct Wakes {
    owed: Vec<Arc<Outbox>>,
    need: Option<usize>,
    lacking: Vec<Arc<Outbox>>,
}

impl Wakes {
    /// Says that the message about to be relayed may need `bytes` in each outbox.
    pub fn expect(&mut self, bytes: usize) {
        self.need = Some(bytes);
    }

    /// What the message being relayed may need in each outbox, if it was said.
    pub fn need(&self) -> Option<usize> {
        self.need
    }

    /// The room had no room for the message in these outboxes, and did not take it.
    pub fn lacked(&mut self, full: Vec<Arc<Outbox>>) {
        self.lacking = full;
    }

    /// The outboxes the last relay lacked room in (empty if it was taken), and forgets
    /// what it needed.
    pub fn take_lacking(&mut self) -> Vec<Arc<Outbox>> {
        self.need = None;
        std::mem::take(&mut self.lacking)
    }

    /// Wakes the writers owed a wake, once every other ready task has run.
    pub async fn release(&mut self) {
        if self.owed.is_empty() {
            return;
        }
        tokio::task::yield_now().await;
        self.wake_all();
    }

    /// Waits for `future`; if it is not ready at once, wakes the writers owed a wake
    /// first (see [`Wakes::release`]), since this reader is about to wait.
    pub async fn wait_for<T>(&mut self, future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        if let Some(output) = future.as_mut().now_or_never() {
            return output;
        }
        self.release().await;
        future.await
    }

    fn wake_all(&mut self) {
        for outbox in self.owed.drain(..) {
            outbox.ready.wake();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::room::wire;

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

    /// A writer waiting for its next batch, which it reports the size of.
    fn waiting_writer(outbox: &Arc<Outbox>) -> tokio::task::JoinHandle<usize> {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            outbox.next_batch(&mut batch).await;
            batch.len()
        })
    }

    #[tokio::test]
    async fn a_burst_is_queued_before_its_writers_are_woken() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let writer = waiting_writer(&outbox);
        tokio::task::yield_now().await;
        let mut wakes = Wakes::default();
        outbox.push_corked(&wire::text("first"), &mut wakes);
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "not woken while the reader reads on");
        // Another sender's reader, ready in the same tick, fans out its message before
        // the writers are woken; the frame finds the queue not empty and owes no wake.
        tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.push_corked(&wire::text("second"), &mut Wakes::default()) }
        });
        wakes.release().await;
        assert_eq!(writer.await.unwrap(), 2, "one batch for the burst");
    }

    #[tokio::test]
    async fn a_reader_that_ends_wakes_the_writers_it_owes() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let writer = waiting_writer(&outbox);
        tokio::task::yield_now().await;
        let mut wakes = Wakes::default();
        outbox.push_corked(&wire::text("last words"), &mut wakes);
        drop(wakes);
        assert_eq!(writer.await.unwrap(), 1);
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

    #[tokio::test(start_paused = true)]
    async fn a_batch_delivery_waits_for_a_full_queue_once_and_not_again() {
        let outbox = Arc::new(Outbox::new(1000));
        let frame = wire::text(&"x".repeat(300));
        outbox.push(&frame);
        outbox.push(&frame);
        assert!(outbox.is_full());
        // Nobody takes the queue: the wait ends at the deadline, and marks it.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        drained_by(vec![outbox.clone()], deadline).await;
        assert!(!outbox.is_full(), "not waited for again");
        outbox.push(&frame);
        outbox.push(&frame);
        assert!(outbox.is_evicted(), "and evicted when it overflows");
    }

    /// Issue 34's rerun: with `--data-dir`, a member's reader and the journal's
    /// delivery both waited for the same queue to drain, and the writer's take woke
    /// only one of them: the reader waited for good, and its client, reading at full
    /// speed, was closed for not answering pings. Every waiter goes on.
    #[tokio::test]
    async fn every_waiter_goes_on_when_the_writer_takes_the_queue() {
        let outbox = Arc::new(Outbox::new(1000));
        let frame = wire::text(&"x".repeat(300));
        outbox.push(&frame);
        outbox.push(&frame);
        let reader = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.below_high_water().await }
        });
        let delivery = tokio::spawn({
            let outbox = outbox.clone();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
            async move { drained_by(vec![outbox], deadline).await }
        });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!reader.is_finished() && !delivery.is_finished());
        outbox.take_queued(&mut Vec::new());
        let both = async { (reader.await.unwrap(), delivery.await.unwrap()) };
        tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("both the reader and the delivery go on");
    }

    /// Completes `waiting` within ten seconds, or fails saying `what` did not go on.
    async fn goes_on<T>(what: &str, waiting: tokio::task::JoinHandle<T>) -> T {
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await;
        done.unwrap_or_else(|_| panic!("{what} did not go on"))
            .unwrap()
    }

    /// The reader's waits and the session's end all wait on one `Notify`: each wakes
    /// for its own reason, and none is lost to the others.
    #[tokio::test]
    async fn every_wait_on_the_outbox_wakes_for_its_own_reason() {
        let outbox = Arc::new(Outbox::new(1000));
        let ended = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ended().await }
        });
        // A pong alone, the queue far below its high-water mark.
        outbox.push_pong(wire::raw(&[0x8a, 0]));
        let pong = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.pong_taken().await }
        });
        tokio::task::yield_now().await;
        assert!(!pong.is_finished());
        outbox.take_queued(&mut Vec::new());
        goes_on("the wait for the pong", pong).await;
        // Over the high-water mark, no pong.
        let frame = wire::text(&"x".repeat(300));
        outbox.push(&frame);
        outbox.push(&frame);
        let room = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.below_high_water().await }
        });
        tokio::task::yield_now().await;
        assert!(!room.is_finished());
        outbox.take_queued(&mut Vec::new());
        goes_on("the wait for room", room).await;
        tokio::task::yield_now().await;
        assert!(!ended.is_finished(), "the session goes on");
        let kick = Removal {
            code: 4001,
            reason: "spam".into(),
        };
        outbox.remove(kick.clone());
        assert_eq!(goes_on("the session's end", ended).await, Some(kick));
    }

    /// A writer waits for its next batch and for its stop at once: a push gives it the
    /// batch, and only the stop stops it.
    #[tokio::test]
    async fn a_writer_is_woken_to_stop_and_frames_do_not_stop_it() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let writer = |outbox: Arc<Outbox>| async move {
            let mut batch = Vec::new();
            tokio::select! {
                biased;
                () = outbox.writer_stopped() => "stopped",
                () = outbox.next_batch(&mut batch) => "batch",
            }
        };
        let first = tokio::spawn(writer(outbox.clone()));
        tokio::task::yield_now().await;
        outbox.push(&wire::text("hello"));
        assert_eq!(goes_on("the writer", first).await, "batch");
        let second = tokio::spawn(writer(outbox.clone()));
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "nothing queued, no stop: it waits");
        outbox.stop_writer();
        assert_eq!(goes_on("the writer", second).await, "stopped");
    }

    #[tokio::test]
    async fn an_eviction_ends_the_session_as_a_slow_consumer() {
        let outbox = Arc::new(Outbox::new(1000));
        let ended = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ended().await }
        });
        tokio::task::yield_now().await;
        let frame = wire::text(&"x".repeat(300));
        for _ in 0..4 {
            outbox.push(&frame);
        }
        assert_eq!(goes_on("the session's end", ended).await, None);
    }

    #[tokio::test]
    async fn a_batch_delivery_goes_on_as_soon_as_the_writer_takes_the_queue() {
        let outbox = Arc::new(Outbox::new(1000));
        let frame = wire::text(&"x".repeat(300));
        outbox.push(&frame);
        outbox.push(&frame);
        let writer = waiting_writer(&outbox);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        drained_by(vec![outbox.clone()], deadline).await;
        assert_eq!(writer.await.unwrap(), 2);
        assert!(!outbox.is_full());
    }
}
