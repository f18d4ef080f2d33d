//! The room: who is connected, and the fan-out of every announcement to their outboxes.
//!
//! On a single node, an announcement is fanned out at once, under the members lock. In a
//! cluster it is handed to the broker instead, and fanned out when Redis delivers it
//! back ([`Room::deliver`]), so that every client on every node sees Redis's one order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat::{Announcement, ClientId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{Presence, Publisher};
use crate::metrics::Metrics;
use crate::wire::{self, Frame};

/// Everyone connected to this node, each with the outbox their connection drains.
pub struct Room {
    members: Mutex<HashMap<u64, Slot>>,
    next_key: AtomicU64,
    max_queue_bytes: usize,
    metrics: Arc<Metrics>,
    /// Set in a cluster: announcements go through Redis.
    publisher: Option<Publisher>,
}

struct Slot {
    outbox: Arc<Outbox>,
    /// In a cluster, a newcomer gets nothing until its own join comes back from Redis,
    /// so that its join is its first frame, as on a single node.
    awaiting_join: bool,
}

impl Room {
    /// A room whose members may each have at most `max_queue_bytes` of frames waiting;
    /// with a `publisher`, one node of a cluster.
    pub fn new(
        max_queue_bytes: usize,
        metrics: Arc<Metrics>,
        publisher: Option<Publisher>,
    ) -> Arc<Self> {
        Arc::new(Self {
            members: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            max_queue_bytes,
            metrics,
            publisher,
        })
    }

    /// Adds a member and announces it to everyone, the newcomer first in its own outbox.
    ///
    /// The returned [`Member`] announces the leave when it is dropped, so a connection
    /// cannot leave without the others hearing of it, whatever path it ends by.
    pub fn join(self: &Arc<Self>, id: ClientId) -> Member {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let epoch = self.publisher.as_ref().map_or(0, Publisher::epoch);
        let outbox = Arc::new(Outbox::new(self.max_queue_bytes));
        let slot = Slot {
            outbox: outbox.clone(),
            awaiting_join: self.publisher.is_some(),
        };
        let mut members = self.lock();
        members.insert(key, slot);
        self.announce(
            members,
            (epoch, key),
            Presence::Joined(id.as_str()),
            Announcement::Joined(id.as_str()),
        );
        Member {
            room: self.clone(),
            epoch,
            key,
            id,
            outbox,
        }
    }

    /// How many members are connected to this node.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        // A panic while holding the lock cannot leave the map half-updated (every change
        // is a single insert, remove or flag), so a poisoned lock is still good to use.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fans the announcement out here, or, in a cluster, hands it to Redis.
    ///
    /// Takes the members lock from the caller, so that on a single node no two
    /// announcements interleave their pushes: that is what gives every client one total
    /// order. In a cluster the lock orders the hand-over to the broker, and Redis's one
    /// channel gives the order. The lock is a std `Mutex` because it is never held
    /// across an `.await`, only for a loop of non-blocking pushes.
    fn announce(
        &self,
        members: MutexGuard<'_, HashMap<u64, Slot>>,
        (epoch, key): (u64, u64),
        presence: Presence<'_>,
        announcement: Announcement<'_>,
    ) {
        let text = announcement.to_string();
        match &self.publisher {
            Some(publisher) => publisher.publish(epoch, key, presence, text),
            None => self.fan_out(members, &wire::text(&text), |_, _| true),
        }
    }

    /// Queues `frame` for every member for which `admit` says yes.
    fn fan_out(
        &self,
        mut members: MutexGuard<'_, HashMap<u64, Slot>>,
        frame: &Frame,
        mut admit: impl FnMut(u64, &mut Slot) -> bool,
    ) {
        let mut delivered = 0;
        for (key, slot) in members.iter_mut() {
            if admit(*key, slot) {
                slot.outbox.push(frame);
                delivered += 1;
            }
        }
        drop(members);
        self.metrics.delivered(delivered, frame.len());
    }

    /// Fans out an announcement that Redis delivered, from member `key` of `node`.
    pub fn deliver(&self, node: &str, key: u64, text: &str) {
        let frame = &wire::text(text);
        let own_node = self.publisher.as_ref().map(Publisher::node) == Some(node);
        let members = self.lock();
        self.fan_out(members, frame, |member, slot| {
            if slot.awaiting_join {
                // Whatever comes before the newcomer's own join is not for it.
                slot.awaiting_join = !(own_node && member == key);
            }
            !slot.awaiting_join
        });
    }
}

/// One connection's place in the room. Dropping it announces the leave.
pub struct Member {
    room: Arc<Room>,
    /// In a cluster, the epoch of the connection to Redis it joined in.
    epoch: u64,
    key: u64,
    id: ClientId,
    outbox: Arc<Outbox>,
}

impl Member {
    /// Relays `text` to everyone, the sender included, as `Client #<id>: <text>`.
    pub fn say(&self, text: &str) {
        let id = self.id.as_str();
        self.room.announce(
            self.room.lock(),
            (self.epoch, self.key),
            Presence::Unchanged,
            Announcement::Said { id, text },
        );
    }

    /// In a cluster, the epoch of the connection to Redis the member joined in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The member's client id.
    pub fn id(&self) -> &ClientId {
        &self.id
    }

    /// The frames waiting to be written to this member's socket.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut members = self.room.lock();
        members.remove(&self.key);
        let id = self.id.as_str();
        self.room.announce(
            members,
            (self.epoch, self.key),
            Presence::Left,
            Announcement::Left(id),
        );
    }
}

/// A bounded queue of encoded frames for one connection, measured in bytes.
///
/// Fan-out never waits on a reader: a push either fits or evicts the member as a slow
/// consumer, dropping what was queued so memory is returned at once. Control frames
/// (pings, close replies) take the same queue, so one writer owns the socket; pongs
/// have a slot of their own that holds only the latest, as RFC 6455 §5.5.3 allows, so a
/// client that floods pings and never reads cannot make the server keep its answers.
pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Notified when the writer takes the queue while it was over the high-water mark.
    drained: Notify,
    evicted: CancellationToken,
}

struct Queue {
    frames: Vec<Frame>,
    /// What the queued frames cost, as counted by [`queued_cost`].
    bytes: usize,
    max_bytes: usize,
    pong: Option<Frame>,
}

/// What one queued frame costs this connection: the pointer in its queue, and the
/// frame, which is shared with every other recipient but counted whole here so that
/// the bound holds even when this member is its only recipient.
fn queued_cost(frame: &Frame) -> usize {
    std::mem::size_of::<Frame>() + frame.len()
}

impl Outbox {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                frames: Vec::new(),
                bytes: 0,
                max_bytes,
                pong: None,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            evicted: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every change to the queue is completed before the guard drops; see Room::lock.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an encoded frame, or evicts the connection if it would overflow.
    pub(crate) fn push(&self, frame: &Frame) {
        if self.evicted.is_cancelled() {
            return;
        }
        let mut queue = self.lock();
        let cost = queued_cost(frame);
        if queue.bytes + cost > queue.max_bytes {
            queue.frames = Vec::new();
            queue.bytes = 0;
            queue.pong = None;
            drop(queue);
            self.evicted.cancel();
            return;
        }
        let was_empty = queue.is_empty();
        queue.frames.push(frame.clone());
        queue.bytes += cost;
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Queues a pong, replacing one not yet written.
    pub(crate) fn push_pong(&self, pong: Frame) {
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
    pub async fn next_batch(&self, batch: &mut Vec<Frame>) {
        debug_assert!(batch.is_empty());
        loop {
            if self.take_queued(batch) {
                return;
            }
            // A push between take_queued and here stores a permit, so none is missed.
            self.ready.notified().await;
        }
    }

    /// Moves whatever is queued into `batch` without waiting, a pending pong first;
    /// false if there was nothing.
    pub fn take_queued(&self, batch: &mut Vec<Frame>) -> bool {
        let mut queue = self.lock();
        if queue.is_empty() {
            return false;
        }
        if let Some(pong) = queue.pong.take() {
            batch.push(pong);
        }
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
        true
    }

    /// Completes once at most half the queue's bound is waiting: a member's reader
    /// waits for this before reading on, so that a client that sends faster than it
    /// reads the room back is slowed down instead of evicted for its own echoes.
    pub async fn below_high_water(&self) {
        loop {
            {
                let queue = self.lock();
                if queue.bytes <= queue.max_bytes / 2 {
                    return;
                }
            }
            // take_queued notifies after emptying the queue; a permit stored between
            // the check and here is not missed.
            self.drained.notified().await;
        }
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
    use super::*;

    fn id(text: &str) -> ClientId {
        ClientId::parse(text).unwrap()
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
        outbox.take_queued(&mut batch);
        batch
            .iter()
            .map(|frame| String::from_utf8(wire::payload(frame).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_newcomer_hears_its_own_join_first_and_everyone_hears_the_rest() {
        let room = Room::new(1 << 20, Arc::default(), None);
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
        let room = Room::new(100, Arc::default(), None);
        let slow = room.join(id("1"));
        let talker = room.join(id("2"));
        for _ in 0..10 {
            talker.say("0123456789");
        }
        assert!(slow.outbox().evicted.is_cancelled());
        assert!(drain(slow.outbox()).is_empty());
    }
}
