//! The room: who is connected, and the fan-out of every announcement to their outboxes.
//!
//! On a single node, an announcement is fanned out at once, under the members lock. In a
//! cluster it is handed to the [`Cluster`] instead, and fanned out when the cluster
//! delivers it back ([`Room::deliver`]), so that every client on every node sees the
//! cluster's one order. The room owns that seam; the Redis broker plugs into it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat::{Announcement, ClientId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::wire::{self, Frame};

/// Which connection to the cluster a member joined in. A member's session ends with its
/// epoch, and nothing it queues afterwards is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epoch {
    /// A single node: there is no cluster, and nothing ends a member's epoch.
    Local,
    /// A clustered node that could not reach the cluster when the member joined: the
    /// member's session ends at once.
    Offline,
    /// The nth connection of a clustered node to the cluster; it ends when that does.
    Connection(u64),
}

/// What an announcement changes in who is in the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    Joined(ClientId),
    Left,
    Unchanged,
}

/// An announcement on its way to the cluster.
#[derive(Debug)]
pub struct Outgoing {
    /// The epoch of the member it is from.
    pub epoch: Epoch,
    /// The member, unique on this node.
    pub key: u64,
    pub presence: Presence,
    /// The announcement's text, as every client receives it.
    pub text: String,
}

/// Where a clustered room sends its announcements instead of fanning them out: the
/// cluster delivers them back, in its one order, through [`Room::deliver`].
pub trait Cluster: Send + Sync {
    /// This node's id, which comes back with every announcement it published.
    fn node(&self) -> &str;
    /// The epoch a member joining now belongs to.
    fn epoch(&self) -> Epoch;
    /// Hands an announcement over, in order. Never waits, since leaves are handed over
    /// from `Drop`.
    fn publish(&self, announcement: Outgoing);
}

/// Everyone connected to this node, each with the outbox their connection drains.
pub struct Room {
    members: Mutex<HashMap<u64, Slot>>,
    next_key: AtomicU64,
    max_queue_bytes: usize,
    metrics: Arc<Metrics>,
    /// Set on a clustered node.
    cluster: Option<Box<dyn Cluster>>,
}

struct Slot {
    outbox: Arc<Outbox>,
    /// In a cluster, a newcomer gets nothing until its own join comes back from Redis,
    /// so that its join is its first frame, as on a single node.
    awaiting_join: bool,
}

impl Room {
    /// A room whose members may each have at most `max_queue_bytes` of frames waiting;
    /// with a `cluster`, one node's share of a clustered room.
    pub fn new(
        max_queue_bytes: usize,
        metrics: Arc<Metrics>,
        cluster: Option<Box<dyn Cluster>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            members: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            max_queue_bytes,
            metrics,
            cluster,
        })
    }

    /// Adds a member and announces it to everyone, the newcomer first in its own outbox.
    ///
    /// The returned [`Member`] announces the leave when it is dropped, so a connection
    /// cannot leave without the others hearing of it, whatever path it ends by.
    pub fn join(self: &Arc<Self>, id: ClientId) -> Member {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let epoch = self
            .cluster
            .as_ref()
            .map_or(Epoch::Local, |cluster| cluster.epoch());
        let outbox = Arc::new(Outbox::new(self.max_queue_bytes));
        let slot = Slot {
            outbox: outbox.clone(),
            awaiting_join: self.cluster.is_some(),
        };
        let mut members = self.lock();
        members.insert(key, slot);
        self.announce(
            members,
            (epoch, key),
            Presence::Joined(id.clone()),
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

    /// Fans the announcement out here, or, in a cluster, hands it over.
    ///
    /// Takes the members lock from the caller, so that on a single node no two
    /// announcements interleave their pushes: that is what gives every client one total
    /// order. In a cluster the lock orders the hand-over, and the cluster gives the
    /// order. The lock is a std `Mutex` because it is never held across an `.await`,
    /// only for a loop of non-blocking pushes.
    fn announce(
        &self,
        members: MutexGuard<'_, HashMap<u64, Slot>>,
        (epoch, key): (Epoch, u64),
        presence: Presence,
        announcement: Announcement<'_>,
    ) {
        let text = announcement.to_string();
        match &self.cluster {
            Some(cluster) => cluster.publish(Outgoing {
                epoch,
                key,
                presence,
                text,
            }),
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

    /// Fans out an announcement that the cluster delivered, from member `key` of `node`.
    pub fn deliver(&self, node: &str, key: u64, text: &str) {
        let frame = &wire::text(text);
        let own_node = self.cluster.as_ref().map(|cluster| cluster.node()) == Some(node);
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
    epoch: Epoch,
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

    /// Which connection to the cluster the member joined in.
    pub fn epoch(&self) -> Epoch {
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
            pong_taken: Notify::new(),
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

    /// Queues a pong, replacing one not yet taken (RFC 6455 §5.5.3 allows answering only
    /// the latest ping).
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
        loop {
            if self.lock().pong.is_none() {
                return;
            }
            // take_queued notifies after taking it; a permit stored between the check
            // and here is not missed.
            self.pong_taken.notified().await;
        }
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
