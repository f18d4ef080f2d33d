//! The room: who is connected, and the fan-out of every announcement to their outboxes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat::{Announcement, ClientId};

use crate::metrics::Metrics;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// Everyone connected, each with the outbox their connection drains.
pub struct Room {
    members: Mutex<HashMap<u64, Arc<Outbox>>>,
    next_key: AtomicU64,
    max_queue_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Room {
    /// A room whose members may each have at most `max_queue_bytes` of frames waiting.
    pub fn new(max_queue_bytes: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            members: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            max_queue_bytes,
            metrics,
        })
    }

    /// Adds a member and announces it to everyone, the newcomer first in its own outbox.
    ///
    /// The returned [`Member`] announces the leave when it is dropped, so a connection
    /// cannot leave without the others hearing of it, whatever path it ends by.
    pub fn join(self: &Arc<Self>, id: ClientId) -> Member {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.max_queue_bytes));
        let mut members = self.lock();
        members.insert(key, outbox.clone());
        self.broadcast(&members, Announcement::Joined(id.as_str()));
        drop(members);
        Member {
            room: self.clone(),
            key,
            id,
            outbox,
        }
    }

    /// How many members are connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Outbox>>> {
        // A panic while holding the lock cannot leave the map half-updated (every change
        // is a single insert or remove), so a poisoned lock is still good to use.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Room {
    /// Encodes the announcement once and queues the same bytes for every member.
    ///
    /// Callers hold the members lock. That is what gives every client one total order:
    /// no two broadcasts interleave their pushes. The lock is a std `Mutex` because it is
    /// never held across an `.await`, only for a loop of non-blocking pushes.
    fn broadcast(&self, members: &HashMap<u64, Arc<Outbox>>, announcement: Announcement<'_>) {
        let frame = Utf8Bytes::from(announcement.to_string());
        for outbox in members.values() {
            outbox.push(&frame);
        }
        self.metrics.delivered(members.len(), frame.len());
    }
}

/// One connection's place in the room. Dropping it announces the leave.
pub struct Member {
    room: Arc<Room>,
    key: u64,
    id: ClientId,
    outbox: Arc<Outbox>,
}

impl Member {
    /// Relays `text` to everyone, the sender included, as `Client #<id>: <text>`.
    pub fn say(&self, text: &str) {
        let members = self.room.lock();
        self.room.broadcast(
            &members,
            Announcement::Said {
                id: self.id.as_str(),
                text,
            },
        );
    }

    /// The member's client id.
    pub fn id(&self) -> &ClientId {
        &self.id
    }

    /// The frames waiting to be written to this member's socket.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut members = self.room.lock();
        members.remove(&self.key);
        self.room
            .broadcast(&members, Announcement::Left(self.id.as_str()));
    }
}

/// A bounded queue of frames for one connection, measured in bytes.
///
/// Fan-out never waits on a reader: a push either fits or evicts the member as a slow
/// consumer, dropping what was queued so memory is returned at once.
pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    evicted: CancellationToken,
}

struct Queue {
    frames: Vec<Utf8Bytes>,
    bytes: usize,
    max_bytes: usize,
}

impl Outbox {
    fn new(max_bytes: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                frames: Vec::new(),
                bytes: 0,
                max_bytes,
            }),
            ready: Notify::new(),
            evicted: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every change to the queue is completed before the guard drops; see Room::lock.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, frame: &Utf8Bytes) {
        if self.evicted.is_cancelled() {
            return;
        }
        let mut queue = self.lock();
        if queue.bytes + frame.len() > queue.max_bytes {
            queue.frames = Vec::new();
            queue.bytes = 0;
            drop(queue);
            self.evicted.cancel();
            return;
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.push(frame.clone());
        queue.bytes += frame.len();
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Waits until frames are queued, then moves all of them into `batch`, which must
    /// be empty. Swapping buffers keeps both allocations alive across batches.
    pub async fn next_batch(&self, batch: &mut Vec<Utf8Bytes>) {
        debug_assert!(batch.is_empty());
        loop {
            if self.take_queued(batch) {
                return;
            }
            // A push between take_queued and here stores a permit, so none is missed.
            self.ready.notified().await;
        }
    }

    /// Moves whatever is queued into `batch` without waiting; false if there was nothing.
    pub fn take_queued(&self, batch: &mut Vec<Utf8Bytes>) -> bool {
        let mut queue = self.lock();
        if queue.frames.is_empty() {
            return false;
        }
        std::mem::swap(&mut queue.frames, batch);
        queue.bytes = 0;
        true
    }

    /// Completes when this member overflowed its queue and must be disconnected.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> ClientId {
        ClientId::parse(text).unwrap()
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
        outbox.take_queued(&mut batch);
        batch.iter().map(|frame| frame.to_string()).collect()
    }

    #[test]
    fn a_newcomer_hears_its_own_join_first_and_everyone_hears_the_rest() {
        let room = Room::new(1 << 20, Arc::default());
        let first = room.join(id("1"));
        assert_eq!(drain(first.outbox()), ["Client #1 has entered the chat"]);
        let second = room.join(id("2"));
        first.say("hi");
        drop(second);
        assert_eq!(
            drain(first.outbox()),
            [
                "Client #2 has entered the chat",
                "Client #1: hi",
                "Client #2 has left the chat"
            ]
        );
        assert_eq!(room.len(), 1);
    }

    #[test]
    fn overflowing_the_queue_evicts_and_frees_it() {
        let room = Room::new(100, Arc::default());
        let slow = room.join(id("1"));
        let talker = room.join(id("2"));
        for _ in 0..10 {
            talker.say("0123456789");
        }
        assert!(slow.outbox().evicted.is_cancelled());
        assert!(drain(slow.outbox()).is_empty());
    }
}
