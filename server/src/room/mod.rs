//! A room: who is in it, its numbered events and their history, and the fan-out of
//! every event to the members' outboxes, each in its own protocol.
//!
//! On a single node, an event is numbered under the room's lock, which gives every
//! member one order, and fanned out at once; with durable history it is handed to the
//! [`Store`] instead, in that order, and fanned out once it is written
//! ([`Room::fan_out`]), so that no client ever sees an event a crash could lose. In a
//! cluster it is handed to the [`Cluster`], and fanned out when the cluster delivers it
//! back, numbered ([`Room::deliver`]), so that every client on every node sees the
//! cluster's one order, with the same offsets. The room owns both seams; the journal
//! and the Redis broker plug into them.
//!
//! Also here: every room of the server (`rooms`), a member's bounded queue of frames
//! (`outbox`), frames encoded once for every recipient (`wire`), and what storage has
//! not yet taken (`backlog`). May call: `config`, `metrics`; never `journal` or
//! `broker`, which call it.

pub mod backlog;
pub mod directory;
pub mod outbox;
mod presence;
pub mod rooms;
pub mod rules;
pub mod wire;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use chat::ClientId;
use chat::v1::{self, DisplayName, EventKind, Role, RoomName};
use chat::v2;
use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, watch};

use crate::config::{Config, MAX_HISTORY_BYTES};
use crate::metrics::Metrics;
use crate::room::backlog::Backlog;
use crate::room::directory::Directory;
use crate::room::outbox::{Outbox, Removal, Wakes};
use crate::room::rules::{Rules, Sanction};
use crate::room::wire::Frame;

/// Which connection to the cluster (which link) a member joined in: not the history
/// `epoch` of the protocol. A member's session ends with its link, and nothing it
/// queues afterwards is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// A single node: there is no cluster, and nothing ends a member's link.
    Local,
    /// A clustered node that could not reach the cluster when the member joined: the
    /// member's session ends at once.
    Offline,
    /// The nth connection of a clustered node to the cluster; it ends when that does.
    Connection(u64),
}

/// A member anywhere in a room: the node it is connected to (0 on a single node) and
/// its key in the room there.
pub type MemberRef = (u64, u64);

/// An event on its way to the cluster, which numbers it.
#[derive(Debug)]
pub struct Outgoing {
    /// The link of the member it is from.
    pub link: Link,
    pub room: RoomName,
    /// The member, unique in the room on this node.
    pub key: u64,
    /// The event, its offset still 0.
    pub event: v1::Event,
}

/// Where a clustered room sends its events instead of numbering them: the cluster
/// numbers them and delivers them back, in its one order, through [`Room::deliver`].
pub trait Cluster: Send + Sync {
    /// This node's id, which comes back with every event it published.
    fn node(&self) -> u64;
    /// The link a member joining now belongs to.
    fn link(&self) -> Link;
    /// Hands an event over, in order. Never waits, since leaves are handed over from
    /// `Drop`.
    fn publish(&self, event: Outgoing);
    /// Tells the other nodes something that is not in the room's log (someone typing,
    /// someone's read position), for [`Room::hear`] there; a read position is also
    /// kept. Never waits. This node's own members have been told already.
    fn ephemeral(&self, room: &RoomName, what: Ephemeral);
    /// Asks for the room's state to be loaded from the cluster, as it is when the
    /// room is made or when the node has lost track of it (see [`Room::install`]).
    fn sync(&self, room: &Arc<Room>);
    /// Loads `room` from the cluster unless it is loaded, and completes once it is: a
    /// newcomer's welcome and history come from there. `false` if the cluster did not
    /// answer in time.
    fn load<'a>(&'a self, room: &'a Arc<Room>) -> BoxFuture<'a, bool>;
    /// What this node has handed over and the cluster has not yet delivered back.
    fn backlog(&self) -> &Backlog;
    /// The room's events at `offsets` that the cluster keeps (`--history` per room), in
    /// their latest state and in offset order, and the oldest offset it keeps.
    fn page<'a>(
        &'a self,
        room: &'a RoomName,
        offsets: RangeInclusive<u64>,
    ) -> BoxFuture<'a, Result<StoredPage, StoreError>>;
}

/// How a clustered node stands with its cluster, as sessions and `/healthz` watch it.
/// Each connection to the cluster is a new link ([`Link::Connection`]): members that
/// joined in an earlier one were closed when it ended, and nothing of theirs is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up { connection: u64 },
    Down(String),
}

/// A clustered room as the cluster has it: what [`Room::install`] takes.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub epoch: String,
    /// The offset of the room's last event; 0 before the first.
    pub offset: u64,
    /// The last events, oldest first, each with the member it is from.
    pub events: Vec<(MemberRef, v1::Event)>,
    /// Who is in the room as of `offset`, on every node.
    pub present: Vec<(MemberRef, v1::Present)>,
    /// Each id's read position in the room.
    pub reads: HashMap<String, u64>,
    /// The room's moderation fields (see [`rules`]).
    pub rules: Vec<(String, String)>,
}

/// What a room tells its members beside its log: not numbered, not replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ephemeral {
    /// `id` is typing.
    Typing {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<DisplayName>,
    },
    /// `id` has read the room up to `offset`.
    Read { id: String, offset: u64 },
}

/// What became of an event the cluster delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Fanned out, or already known (delivered twice, or part of the room's snapshot).
    Done,
    /// The room is not loaded on this node: nothing to do until it is.
    NotLoaded,
    /// Events before it are missing here, or its history is not the one this node
    /// has: the room must be loaded again.
    Behind,
}

/// Where a room with durable history writes its events before fanning them out.
pub trait Store: Send + Sync {
    /// Hands over the room's next event, in order: the store calls [`Room::fan_out`]
    /// with it once it is written. Never waits, since leaves are appended from `Drop`.
    fn append(&self, room: &Arc<Room>, key: u64, event: v1::Event);
    /// The room `name` as the store left it, or `None` if it holds nothing of it. Reads
    /// the disk: not for an async worker thread.
    fn load(&self, name: &RoomName) -> Result<Option<Start>, StoreError>;
    /// What the store has been handed and has not yet written.
    fn backlog(&self) -> &Backlog;
    /// Keeps `id`'s read position in `room`. Never waits.
    fn save_read(&self, room: &RoomName, id: &str, offset: u64);
    /// The room's events at `offsets` that the store keeps, in their latest state and
    /// in offset order, and the oldest offset it keeps. Reads the disk: not for an
    /// async worker thread.
    fn page(&self, room: &RoomName, offsets: RangeInclusive<u64>)
    -> Result<StoredPage, StoreError>;
    /// The room's newest messages before offset `before` that contain every one of
    /// `words` (lowercase), newest first, at most `limit`, and whether there are more.
    /// Reads the disk: not for an async worker thread.
    fn search(
        &self,
        room: &RoomName,
        words: &[String],
        before: u64,
        limit: usize,
    ) -> Result<(Vec<v1::Event>, bool), StoreError>;
    /// The direct-message rooms `id` has messages or a read position in, as the store
    /// has them. Reads the disk: not for an async worker thread.
    fn direct_rooms(&self, id: &ClientId) -> Result<Vec<v2::DirectRoom>, StoreError>;
    /// Why the store cannot write now, if it cannot.
    fn trouble(&self) -> Option<String>;
    /// Completes once every event appended so far is written and fanned out.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Why a store could not read a room.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// A page of a room's events as a store keeps them.
#[derive(Debug, Default, PartialEq)]
pub struct StoredPage {
    /// In their latest state, in offset order.
    pub events: Vec<v1::Event>,
    /// The oldest offset the store keeps for the room; 0 when it keeps none.
    pub oldest: u64,
}

/// What this node's memory holds of a page of a room's events: the offsets asked
/// for, and their frames if it holds all of them.
#[derive(Debug)]
pub struct MemoryPage {
    /// The first and last offsets of the page; `first > last` when it is empty.
    pub first: u64,
    pub last: u64,
    /// Every event of the page, when the history in memory holds them all; else those
    /// it holds.
    pub frames: Vec<Frame>,
    pub complete: bool,
    /// The oldest offset in memory, and the room's last offset.
    pub oldest_kept: u64,
    pub room_last: u64,
}

/// Where a room's history begins: nowhere for a new room, or where the store left it.
#[derive(Debug, Default, PartialEq)]
pub struct Start {
    pub epoch: String,
    /// The offset of the room's last event; 0 before the first.
    pub offset: u64,
    /// The last events, oldest first.
    pub events: Vec<v1::Event>,
    /// Who was connected when the store last wrote, by member key: gone now, so their
    /// leaves are announced as the room starts.
    pub present: Vec<(u64, v1::Present)>,
    /// Each id's read position in the room.
    pub reads: HashMap<String, u64>,
    /// The room's moderation fields (see [`rules`]).
    pub rules: Vec<(String, String)>,
}

impl Start {
    /// A room with nothing behind it, whose history begins with `epoch`.
    pub fn new(epoch: String) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
    }
}

/// Which protocol a member speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The tutorial's: `Client #<id>: <text>` and the join and leave lines, nothing else.
    Plain,
    /// `chat.v1.json`.
    V1,
    /// `chat.v2.json`.
    V2,
}

impl Protocol {
    /// The subprotocol the handshake selects, if any.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::V1 => Some(v1::SUBPROTOCOL),
            Self::V2 => Some(v2::SUBPROTOCOL),
        }
    }
}

/// Where a v1 client asks to resume: every event after `since` in `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub since: u64,
    pub epoch: String,
}

/// Who a member is: its id, the name it goes by, if it gave one, and the role its
/// token (or the operator, with `--admin`) gives it in the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub id: ClientId,
    pub name: Option<DisplayName>,
    pub role: Role,
}

/// What every room of a server has in common.
#[derive(Clone, Debug)]
pub struct RoomSettings {
    /// The outbox bound of each member.
    pub max_queue_bytes: usize,
    /// Events kept for history and resume.
    pub history: usize,
    /// The most bytes of history kept, whatever `history` says.
    pub max_history_bytes: usize,
    /// Told to v1 clients in their welcome.
    pub limits: v1::Limits,
    /// Whether ids and names are proven by signed tokens (told in the welcome).
    pub verified: bool,
    /// The node's v2 connections by id, told of direct messages in other rooms.
    pub directory: Arc<Directory>,
    /// The operator's admins (`--admin`): admins wherever they are.
    pub admins: Vec<ClientId>,
    /// Above this many connections, a single node's room batches presence (see
    /// `presence.rs`); 0 never does.
    pub presence_batch_above: usize,
    /// The most joins and leaves a presence batch lists.
    pub presence_batch_entries: usize,
}

impl RoomSettings {
    /// What every room of a server with `config` needs to know.
    pub fn new(config: &Config) -> Self {
        Self {
            max_queue_bytes: config.queue_bytes(),
            history: config.history,
            max_history_bytes: MAX_HISTORY_BYTES,
            limits: v1::Limits {
                max_message_bytes: config.max_message_bytes,
                max_nonce_chars: v1::MAX_NONCE_CHARS,
                history: config.history,
            },
            verified: config.checks_tokens(),
            directory: Arc::default(),
            admins: config.admins.clone(),
            presence_batch_above: config.presence_batch_above,
            presence_batch_entries: config.presence_batch_entries,
        }
    }
}

/// Everyone in one room on this node, each with the outbox their connection drains.
pub struct Room {
    name: RoomName,
    state: Mutex<State>,
    next_key: AtomicU64,
    settings: Arc<RoomSettings>,
    metrics: Arc<Metrics>,
    /// Set on a clustered node.
    cluster: Option<Arc<dyn Cluster>>,
    /// Set with durable history.
    store: Option<Arc<dyn Store>>,
}

struct State {
    /// Changes whenever the room's history is lost: a new room, or a new server (or, in
    /// a cluster, a Redis that lost its data).
    epoch: String,
    /// On a clustered node, whether the room's state is the cluster's (see
    /// [`Room::install`]); always on a single node.
    loaded: bool,
    members: HashMap<u64, Slot>,
    /// The offset of the last event fanned out, the one clients know of; 0 before the
    /// first.
    offset: u64,
    /// The offset of the last event numbered: ahead of `offset` while the store writes.
    numbered: u64,
    /// Who is in the room as of `offset`, by member: what a welcome lists.
    present: BTreeMap<MemberRef, v1::Present>,
    /// Those of `present` whose token gives them a role above member's: few, so that
    /// a welcome (thousands of them in a mass reconnect) looks through these only.
    token_roles: BTreeMap<MemberRef, (String, Role)>,
    history: History,
    /// Each id's read position, as v2 clients set them.
    reads: HashMap<String, u64>,
    /// With a store, the oldest offset it keeps, as its last write told (see
    /// [`Room::stored_from`]); 0 until then.
    stored_from: u64,
    /// Roles granted, bans, mutes, topic, slow mode, as of `offset`.
    rules: Rules,
    /// In slow mode: when each id last spoke, in Unix milliseconds.
    spoke: HashMap<String, u64>,
    /// Messages posted over HTTP and not yet fanned out, by sender and nonce: who
    /// waits for each one's offset.
    posting: HashMap<(String, String), Vec<oneshot::Sender<u64>>>,
    /// With a store: the operations and moderation events numbered but not yet
    /// written, in order. A request is checked against them too (see
    /// [`State::message_ahead`]), or an unreact sent right behind its react would be
    /// refused while the store writes the react.
    unwritten: VecDeque<v1::Event>,
    /// Above the presence threshold: the joins and leaves not told yet.
    batch: presence::Batch,
}

impl State {
    /// Notes the role `member`'s token gives `id`, if above member's: before its
    /// welcome, which lists it, and before it is in `present`, which the welcome
    /// lists as the room was before the join.
    fn seat_token_role(&mut self, member: MemberRef, id: &str, role: Role) {
        if !role.is_member() {
            self.token_roles.insert(member, (id.to_owned(), role));
        }
    }

    /// Forgets `member`, gone: from who is here and from the token roles.
    fn unseat(&mut self, member: MemberRef) {
        self.present.remove(&member);
        self.token_roles.remove(&member);
    }

    /// The highest role `id`'s tokens give it here, on any node; member's if none.
    fn token_role(&self, id: &str) -> Role {
        self.token_roles
            .values()
            .filter(|(holder, _)| holder == id)
            .map(|(_, role)| *role)
            .max()
            .unwrap_or_default()
    }

    /// The rules as they will be once every event numbered is written.
    fn rules_ahead(&self) -> Cow<'_, Rules> {
        let mut changes = self.unwritten.iter().filter_map(rules::change).peekable();
        if changes.peek().is_none() {
            return Cow::Borrowed(&self.rules);
        }
        let mut rules = self.rules.clone();
        changes.for_each(|change| rules.apply(change));
        Cow::Owned(rules)
    }

    /// Event `offset`, if the history in memory keeps it, as it will be once every
    /// event numbered is written: with the unwritten operations on it applied.
    fn message_ahead(&self, offset: u64) -> Option<Cow<'_, v1::Event>> {
        let kept = self.history.get(offset)?;
        let mut ops = self
            .unwritten
            .iter()
            .filter(|op| v2::target_of(&op.kind) == Some(offset))
            .peekable();
        if ops.peek().is_none() {
            return Some(Cow::Borrowed(kept));
        }
        let mut event = kept.clone();
        for op in ops {
            v2::apply(op, &mut event);
        }
        Some(Cow::Owned(event))
    }

    /// Forgets the posts nobody waits for any more (their answers timed out), once
    /// there are many: an event that never came back (a node that lost Redis) would
    /// otherwise be waited for until the room is forgotten.
    fn forget_abandoned_posts(&mut self) {
        if self.posting.len() >= MAX_POSTING / 2 {
            self.posting
                .retain(|_, waiting| waiting.iter().any(|waiter| !waiter.is_closed()));
        }
    }

    /// Whether `id`, of `role`, may add something said to the room now: not
    /// while muted, in a read-only room, or sooner than slow mode allows.
    fn may_speak(
        &self,
        id: &str,
        role: Role,
        now: u64,
        nonce: Option<&str>,
    ) -> Result<(), v2::Error> {
        self.may_be_heard(id, role, now, nonce)?;
        if role >= Role::Moderator {
            return Ok(());
        }
        let refuse = |code, message: String| Err(v2::Error::new(nonce, code, message));
        let slow = self.rules.slow().saturating_mul(1000);
        if let Some(last) = self.spoke.get(id)
            && now.saturating_sub(*last) < slow
        {
            let wait = (slow - now.saturating_sub(*last)).div_ceil(1000);
            return refuse(
                v2::ErrorCode::Slow,
                format!(
                    "slow mode: one message per {} s; wait {wait} s",
                    self.rules.slow()
                ),
            );
        }
        Ok(())
    }

    /// Whether `id` may be heard at all, in a message, a reaction or its typing: not
    /// if muted, nor in a read-only room, unless a moderator. (Slow mode counts
    /// messages only.)
    fn may_be_heard(
        &self,
        id: &str,
        role: Role,
        now: u64,
        nonce: Option<&str>,
    ) -> Result<(), v2::Error> {
        if role >= Role::Moderator {
            return Ok(());
        }
        let refuse = |code, message: &str| Err(v2::Error::new(nonce, code, message));
        if self.rules.muted(id, now) {
            return refuse(
                v2::ErrorCode::Muted,
                "you are muted in this room: you can read, not send",
            );
        }
        if self.rules.read_only() {
            return refuse(
                v2::ErrorCode::Forbidden,
                "this room is read-only: only moderators speak",
            );
        }
        Ok(())
    }

    /// Notes, in slow mode, that `id` spoke (if what it said was numbered).
    fn spoke(&mut self, id: &str, role: Role, now: u64, numbered: bool) {
        if numbered && role < Role::Moderator && self.rules.slow() > 0 {
            self.spoke.insert(id.to_owned(), now);
        }
    }
}

struct Slot {
    id: ClientId,
    protocol: Protocol,
    outbox: Arc<Outbox>,
    stage: Stage,
    /// With a store, for a newcomer that asked to resume: tells its session whether
    /// to stream the replay from the store (see [`CatchUp`]).
    catch_up: Option<watch::Sender<CatchUp>>,
}

/// Whether a resuming newcomer's replay comes from the store: when the events it
/// missed are older than the history in memory but still on disk, its session streams
/// them a page at a time as the client reads ([`Room::finish_catch_up`] ends it), so
/// that a resume of any length holds no more than the outbox's bound in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// The welcome is not sent yet.
    Waiting,
    /// Welcomed: stream from the store every event after this offset.
    After(u64),
    /// Welcomed, with its replay from memory (or none): nothing to stream.
    NotNeeded,
}

/// Whether a member receives the room's events yet.
enum Stage {
    /// A newcomer gets nothing until its own join is fanned out (written by the store,
    /// or back from Redis), so that its welcome and join come first and it hears of
    /// nothing twice. A v1 newcomer's welcome resumes from here.
    Joining(Option<Resume>),
    /// Came into a room this node has not loaded from the cluster (it had nobody
    /// there, or lost Redis): its join is said once the room is loaded (see
    /// [`Room::install`]), so that Redis numbers it after the snapshot and it comes back
    /// through the room's partition like anyone's, the welcome just before it. Said
    /// at once, it could land in the snapshot, and a welcome from there would hold it.
    Waiting(Box<Arrival>),
    /// Welcomed, its replay streaming from the store: it gets nothing live until that
    /// reaches the history in memory.
    CatchingUp,
    Live,
}

/// A newcomer waiting for its room to be loaded: what its join needs.
struct Arrival {
    who: Who,
    link: Link,
    resume: Option<Resume>,
}

/// The room's last events in their latest state (edits applied, deletes turned into
/// tombstones, reactions gathered), each with the frames v1 and v2 clients receive:
/// shared with every recipient, never copied. Bounded in events and in bytes.
struct History {
    events: VecDeque<Kept>,
    bytes: usize,
    /// The ids and nonces of the newest messages said with one.
    said: SaidNonces,
}

/// The `(id, nonce)` of the newest messages said with a nonce, at most `most`: a
/// message that comes again with the same (a client that resent it on a new connection
/// while its old one, stalled, still delivered the first) is said once.
#[derive(Default)]
struct SaidNonces {
    seen: std::collections::HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl SaidNonces {
    /// At least a screenful of messages, at most what a history holds by default ten
    /// times over.
    fn most(history: usize) -> usize {
        history.clamp(256, 10_000)
    }

    fn holds(&self, id: &str, nonce: &str) -> bool {
        // Keyed by owned strings; the probe allocates only for a nonced message.
        self.seen.contains(&(id.to_owned(), nonce.to_owned()))
    }

    fn note(&mut self, id: &str, nonce: &str, most: usize) {
        let key = (id.to_owned(), nonce.to_owned());
        if self.seen.contains(&key) {
            return;
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        while self.order.len() > most {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
    }
}

/// One event of the history.
struct Kept {
    event: v1::Event,
    /// What a v1 client is shown of it, if anything.
    v1: Option<Frame>,
    v2: Frame,
}

/// An event's frames for v1 and v2 clients.
struct Frames {
    v1: Option<Frame>,
    v2: Frame,
}

impl Kept {
    fn new(event: v1::Event) -> Self {
        let v2 = wire::text(&event.to_json());
        // Most events are the same for both: one frame then, shared.
        let v1 = match event.for_v1() {
            Some(Cow::Borrowed(_)) => Some(v2.clone()),
            Some(Cow::Owned(shown)) => Some(wire::text(&shown.to_json())),
            None => None,
        };
        Self { event, v1, v2 }
    }

    /// The bytes it holds, as the history's byte bound counts them: itself, its
    /// fields (which take about as many bytes as their JSON), and its frames, each
    /// with its `Arc`'s counts and `Vec`.
    fn bytes(&self) -> usize {
        const PER_FRAME: usize = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Vec<u8>>();
        let fields = self.v2.len();
        let frames = match &self.v1 {
            Some(v1) if !Arc::ptr_eq(v1, &self.v2) => 2 * PER_FRAME + self.v2.len() + v1.len(),
            _ => PER_FRAME + self.v2.len(),
        };
        std::mem::size_of::<Self>() + fields + frames
    }

    fn offset(&self) -> u64 {
        self.event.offset
    }
}

impl History {
    /// Where the event at `offset` is, or would be.
    fn find(&self, offset: u64) -> Result<usize, usize> {
        self.events.binary_search_by_key(&offset, Kept::offset)
    }

    /// The latest state of the event at `offset`, if it is still kept.
    fn get(&self, offset: u64) -> Option<&v1::Event> {
        self.find(offset).ok().map(|at| &self.events[at].event)
    }
}

/// The time now, in Unix milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Room {
    /// A room named `name` whose history begins at `start`; with a `cluster`, one
    /// node's share of a clustered room; with a `store`, a room whose history is
    /// written before anyone hears of it.
    pub fn new(
        name: RoomName,
        start: Start,
        settings: Arc<RoomSettings>,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<dyn Cluster>>,
        store: Option<Arc<dyn Store>>,
    ) -> Arc<Self> {
        let stale = start.present;
        let room = Arc::new(Self {
            name,
            state: Mutex::new(State {
                epoch: start.epoch,
                loaded: cluster.is_none(),
                members: HashMap::new(),
                offset: start.offset,
                numbered: start.offset,
                present: stale
                    .iter()
                    .map(|(key, present)| ((0, *key), present.clone()))
                    .collect(),
                history: History {
                    events: VecDeque::new(),
                    bytes: 0,
                    said: SaidNonces::default(),
                },
                reads: start.reads,
                stored_from: 0,
                rules: Rules::from_fields(start.rules),
                spoke: HashMap::new(),
                posting: HashMap::new(),
                unwritten: VecDeque::new(),
                token_roles: BTreeMap::new(),
                batch: presence::Batch::default(),
            }),
            next_key: AtomicU64::new(stale.iter().map(|(key, _)| key + 1).max().unwrap_or(0)),
            settings,
            metrics,
            cluster,
            store,
        });
        let mut state = room.lock();
        for event in start.events {
            room.remember(&mut state.history, event);
        }
        for (key, present) in stale {
            match ClientId::parse(&present.id) {
                Ok(id) => {
                    let who = Who {
                        id,
                        name: present.name,
                        role: Role::Member,
                    };
                    room.announce(
                        &mut state,
                        (Link::Local, key),
                        &who,
                        EventKind::leave(),
                        None,
                    );
                }
                // Only a hand-edited store holds an id no client could have had.
                Err(_) => state.unseat((0, key)),
            }
        }
        drop(state);
        room
    }

    /// Adds a member and announces it to everyone, the newcomer first in its own outbox;
    /// a v1 newcomer gets its welcome and the history before that.
    ///
    /// The returned [`Member`] announces the leave when it is dropped, so a connection
    /// cannot leave without the others hearing of it, whatever path it ends by.
    pub fn join(self: &Arc<Self>, who: Who, protocol: Protocol, resume: Option<&Resume>) -> Member {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let link = self
            .cluster
            .as_ref()
            .map_or(Link::Local, |cluster| cluster.link());
        let outbox = Arc::new(Outbox::new(self.settings.max_queue_bytes));
        let (catch_up, caught_up) = match (&self.store, resume, protocol) {
            (Some(_), Some(_), Protocol::V1 | Protocol::V2) => {
                let (tell, told) = watch::channel(CatchUp::Waiting);
                (Some(tell), Some(told))
            }
            _ => (None, None),
        };
        let mut state = self.lock();
        state.members.insert(
            key,
            Slot {
                id: who.id.clone(),
                protocol,
                outbox: outbox.clone(),
                stage: Stage::Joining(resume.cloned()),
                catch_up,
            },
        );
        if let Some(cluster) = self.cluster.as_ref().filter(|_| !state.loaded) {
            let arrival = Arrival {
                who: who.clone(),
                link,
                resume: resume.cloned(),
            };
            state.members.get_mut(&key).expect("just added").stage =
                Stage::Waiting(Box::new(arrival));
            cluster.sync(self);
        } else if self.batches(&state) {
            self.gather_join(&mut state, key, &who);
        } else {
            let join = EventKind::Join {
                role: who.role,
                key: None,
            };
            self.announce(&mut state, (link, key), &who, join, None);
        }
        drop(state);
        self.settings
            .directory
            .add(&who.id, &self.name, key, protocol, &outbox);
        Member {
            room: self.clone(),
            protocol,
            link,
            key,
            who,
            outbox,
            typed_at: AtomicU64::new(0),
            caught_up,
        }
    }

    /// Queues a v1 or v2 newcomer's welcome and the history it is to replay: the room
    /// as of the last event fanned out, just before the newcomer's own join.
    /// With `catch_up`, a resume older than memory holds is told to stream from the
    /// store instead: then the welcome says `recovered` and nothing is replayed here;
    /// returns whether that is so.
    /// With `paged` (a room above the presence threshold), the welcome lists only
    /// the first page of members, with their count.
    #[allow(clippy::too_many_arguments)]
    fn welcome(
        &self,
        state: &State,
        id: &str,
        protocol: Protocol,
        resume: Option<&Resume>,
        outbox: &Outbox,
        catch_up: Option<&watch::Sender<CatchUp>>,
        paged: bool,
    ) -> bool {
        let history = &state.history.events;
        // Everything after `since` is still here when the oldest kept event is no later
        // than the first one missed (or nothing was missed).
        let recovered = resume.is_some_and(|resume| {
            resume.epoch == state.epoch
                && resume.since <= state.offset
                && (resume.since == state.offset
                    || history
                        .front()
                        .is_some_and(|oldest| oldest.offset() <= resume.since + 1))
        });
        // The store keeps the last `history` events of the room, and fewer when they
        // are past its byte budget: its last write, which was this newcomer's join,
        // said how many.
        let oldest_stored =
            (state.offset.saturating_sub(self.settings.history as u64) + 1).max(state.stored_from);
        let from_store = catch_up.and(resume).filter(|resume| {
            !recovered
                && resume.epoch == state.epoch
                && resume.since < state.offset
                && resume.since + 1 >= oldest_stored
        });
        let recovered = recovered || from_store.is_some();
        let replay_after = match resume {
            Some(resume) if recovered => resume.since,
            _ => 0,
        };
        // By key, which is the order they joined in: no member is copied, as a mass
        // reconnect writes thousands of welcomes listing thousands of members each.
        // Paged, the first page is copied, each with its handle.
        let first_page: Vec<v1::Present> = match paged {
            true => presence::listed(
                state
                    .present
                    .iter()
                    .take(v2::MAX_MEMBERS_PAGE)
                    .map(|((_, key), present)| (*key, present)),
            ),
            false => Vec::new(),
        };
        let welcome = v1::WelcomeOut {
            id,
            room: self.name.as_str(),
            epoch: &state.epoch,
            offset: state.offset,
            members: match paged {
                true => first_page.iter().collect(),
                false => state.present.values().collect(),
            },
            count: paged.then_some(state.present.len()),
            more: paged.then_some(state.present.len() > v2::MAX_MEMBERS_PAGE),
            recovered,
            verified: self.settings.verified,
            limits: &self.settings.limits,
        };
        // Offsets only grow along the history: what was missed is one range of it.
        // Streamed from the store instead, by the session.
        let first_missed = match from_store {
            Some(_) => history.len(),
            None => history.partition_point(|kept| kept.offset() <= replay_after),
        };
        let missed = history.range(first_missed..);
        if protocol == Protocol::V2 {
            // Granted in the room, or given by the tokens of those here, on any node
            // (the newcomer's own among them).
            let mut roles = state.rules.roles();
            for (id, token) in state.token_roles.values() {
                let role = roles.entry(id.as_str()).or_default();
                *role = (*role).max(*token);
            }
            let with_read = v2::WelcomeOut {
                welcome: welcome.tagged(),
                read: state.reads.get(id).copied().unwrap_or(0),
                roles,
                topic: state.rules.topic(),
                slow: state.rules.slow(),
                read_only: state.rules.read_only(),
            };
            outbox.push_welcome(&wire::json(&with_read, welcome.size_hint() + 32));
            outbox.push_resident(missed.map(|kept| &kept.v2));
        } else {
            outbox.push_welcome(&wire::json(&welcome.tagged(), welcome.size_hint()));
            outbox.push_resident(missed.filter_map(|kept| kept.v1.as_ref()));
        }
        let told = match from_store {
            Some(resume) => CatchUp::After(resume.since),
            None => CatchUp::NotNeeded,
        };
        if let Some(catch_up) = catch_up {
            catch_up.send_replace(told);
        }
        from_store.is_some()
    }

    /// Ends a newcomer's catch-up from the store once it reaches the history in memory:
    /// queues what memory holds from `next` on and makes the member live, all under the
    /// room's lock so that nothing is missed or sent twice. `Err` with the oldest offset
    /// memory holds while `next` is older than that: the session streams on from the
    /// store.
    pub fn finish_catch_up(&self, key: u64, next: u64) -> Result<(), u64> {
        let mut state = self.lock();
        let history = &state.history.events;
        let oldest = history.front().map_or(state.offset + 1, Kept::offset);
        if next < oldest && next <= state.offset {
            return Err(oldest);
        }
        let from = history.partition_point(|kept| kept.offset() < next);
        let Some(slot) = state.members.get(&key) else {
            return Ok(());
        };
        match slot.protocol {
            Protocol::V2 => slot
                .outbox
                .push_resident(history.range(from..).map(|kept| &kept.v2)),
            _ => slot
                .outbox
                .push_resident(history.range(from..).filter_map(|kept| kept.v1.as_ref())),
        }
        state.members.get_mut(&key).expect("just found").stage = Stage::Live;
        Ok(())
    }

    /// How many members are connected to this node.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// Whether the room can be forgotten: nobody is in it, and every event it numbered
    /// has been fanned out (so a store has written them all).
    pub fn is_idle(&self) -> bool {
        let state = self.lock();
        state.members.is_empty() && state.numbered == state.offset
    }

    /// Where the room writes its history, if anywhere.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// The cluster the room is part of, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.as_ref()
    }

    /// This room's name.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// The epoch of this room's history.
    pub fn epoch(&self) -> String {
        self.lock().epoch.clone()
    }

    /// The offset of the room's newest event here, if the room is loaded and its
    /// history is `epoch`: what a load from the cluster need not fan out again.
    pub fn offset_in(&self, epoch: &str) -> Option<u64> {
        let state = self.lock();
        (state.loaded && state.epoch == epoch).then_some(state.offset)
    }

    /// The most bytes of events the room keeps in memory: a load from the cluster
    /// need not read more of its history than that.
    pub fn memory_bytes(&self) -> usize {
        self.settings.max_history_bytes
    }

    /// The most bytes of events a `history` or `search` answer carries: half the queue
    /// bound, which holds two of the largest frames, so that an answer pushed once the
    /// asker's queue is at most half full always fits.
    pub fn answer_bytes(&self) -> usize {
        self.settings.max_queue_bytes / 2
    }

    /// The room's bans that hold now, by id: `[{"id":I,"until":MS?,"reason":R?}]`.
    pub fn bans(&self) -> Vec<serde_json::Value> {
        let state = self.lock();
        state
            .rules
            .bans(now_millis())
            .into_iter()
            .map(|(id, ban)| {
                let mut listed = serde_json::to_value(&ban).expect("a ban serializes");
                listed["id"] = id.into();
                listed
            })
            .collect()
    }

    /// `id`'s ban from this room, if it is banned now.
    pub fn ban_of(&self, id: &ClientId) -> Option<Sanction> {
        self.lock().rules.ban(id.as_str(), now_millis())
    }

    /// Who is in the room as of its last event (on every node, in a cluster), in the
    /// order they joined, each with the role granted in the room or given by its token
    /// (as its join told every node).
    pub fn present(&self) -> Vec<(v1::Present, Role)> {
        let state = self.lock();
        state
            .present
            .values()
            .map(|present| {
                let role = state.rules.role(&present.id).max(present.role);
                (present.clone(), role)
            })
            .collect()
    }

    /// Posts `text` from `who`, which is in no room (a bot over HTTP), unless a
    /// message from `who` with this `nonce` is in the history already (then its
    /// offset is the answer) or on its way (then the answer waits for it): the same
    /// nonce from the same sender posts once.
    pub fn post(
        self: &Arc<Self>,
        who: &Who,
        text: String,
        nonce: String,
    ) -> Result<Posting, v2::Error> {
        let mut state = self.lock();
        let refuse = |code, message: String| Err(v2::Error::new(Some(&nonce), code, message));
        let id = who.id.as_str();
        let posted = state
            .history
            .events
            .iter()
            .rev()
            .find_map(|kept| match &kept.event.kind {
                EventKind::Message {
                    nonce: Some(said),
                    text: first,
                    state,
                    ..
                } if kept.event.id == id && *said == nonce => {
                    // Changed since (deleted, say), it cannot be compared: a retry.
                    let same = state.edited || state.deleted || *first == text;
                    Some((kept.offset(), same))
                }
                _ => None,
            });
        match posted {
            // A retry: the same message, posted once.
            Some((offset, true)) => return Ok(Posting::Done(offset)),
            // Not a retry but a bot's bug, which the same answer would hide.
            Some((offset, _)) => {
                return refuse(
                    v2::ErrorCode::Invalid,
                    format!(
                        "nonce {nonce:?} was used for another message ({offset}); use a new one"
                    ),
                );
            }
            None => {}
        }
        let (tell, told) = oneshot::channel();
        let key = (id.to_owned(), nonce.clone());
        if let Some(waiting) = state.posting.get_mut(&key) {
            waiting.push(tell);
            return Ok(Posting::Waiting(told));
        }
        if text.len() > self.settings.limits.max_message_bytes {
            let most = self.settings.limits.max_message_bytes;
            return refuse(
                v2::ErrorCode::Invalid,
                format!("a message is at most {most} bytes"),
            );
        }
        if nonce.is_empty() || nonce.chars().count() > v1::MAX_NONCE_CHARS {
            let most = v1::MAX_NONCE_CHARS;
            return refuse(
                v2::ErrorCode::Invalid,
                format!("a nonce is 1 to {most} characters"),
            );
        }
        state.forget_abandoned_posts();
        if state.posting.len() >= MAX_POSTING {
            return refuse(
                v2::ErrorCode::Unavailable,
                "too many messages on their way; try again later".to_owned(),
            );
        }
        let now = now_millis();
        let role = state.rules.role(id).max(who.role);
        state.may_speak(id, role, now, Some(&nonce))?;
        state.posting.insert(key, vec![tell]);
        let link = self
            .cluster
            .as_ref()
            .map_or(Link::Local, |cluster| cluster.link());
        let number = self.next_key.fetch_add(1, Ordering::Relaxed);
        let kind = EventKind::said(text, Some(nonce));
        self.announce(&mut state, (link, number), who, kind, None);
        state.spoke(id, role, now, true);
        Ok(Posting::Waiting(told))
    }

    /// Does a moderation request of `who`, which is in no room (the HTTP API's
    /// caller), if its role allows: recorded in the log as `who`'s, as a member's is.
    ///
    /// With a nonce, the answer is told its offset once the event is fanned out (in
    /// the log: written, or back from Redis).
    pub fn moderate(
        self: &Arc<Self>,
        who: &Who,
        request: v2::Request,
    ) -> Result<Option<oneshot::Receiver<u64>>, v2::Error> {
        let mut state = self.lock();
        let role = state.rules.role(who.id.as_str()).max(who.role);
        may_moderate(&state, &self.settings.admins, &request, role)?;
        // A delete, as a member's: the caller's own message, or (a moderator's)
        // anyone's, that the history in memory holds.
        let mut moderated = false;
        if let v2::Request::Delete { target, .. } = &request {
            let history = &state.history;
            let oldest = history
                .events
                .front()
                .map_or(state.offset + 1, Kept::offset);
            let kept = state.message_ahead(*target);
            let moderator = role >= Role::Moderator;
            v2::check_as(
                who.id.as_str(),
                moderator,
                &request,
                kept.as_deref(),
                (oldest, state.offset),
            )?;
            moderated = kept.is_some_and(|kept| kept.id != who.id.as_str());
        } else if request.needs() == Role::Member {
            let nonce = request.nonce();
            let message = "not a moderation request";
            return Err(v2::Error::new(nonce, v2::ErrorCode::Invalid, message));
        }
        state.forget_abandoned_posts();
        let told = request.nonce().map(|nonce| {
            let (tell, told) = oneshot::channel();
            let key = (who.id.to_string(), nonce.to_owned());
            state.posting.entry(key).or_default().push(tell);
            told
        });
        let mut kind = request.into_event_kind().expect("a log request");
        if let EventKind::Delete { moderated: by, .. } = &mut kind {
            *by = moderated;
        }
        let link = self
            .cluster
            .as_ref()
            .map_or(Link::Local, |cluster| cluster.link());
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.announce(&mut state, (link, key), who, kind, None);
        Ok(told)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated (every
        // change is a single insert, remove, push or counter), so a poisoned lock is
        // still good to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Numbers the event and fans it out here; with a store, hands it over to be
    /// written first; in a cluster, hands it over to the cluster.
    ///
    /// Takes the room's state from a caller holding its lock, so that on a single node
    /// no two events are numbered (or fanned out) interleaved: that is what gives every
    /// client one total order and dense offsets. The store and the cluster receive
    /// events in that order. The lock is a std `Mutex` because it is never held across
    /// an `.await`, only for a loop of non-blocking pushes.
    /// Returns `false` when the event was not numbered for want of room (see
    /// [`Wakes`]).
    fn announce(
        self: &Arc<Self>,
        state: &mut State,
        (link, key): (Link, u64),
        who: &Who,
        kind: EventKind,
        wakes: Option<&mut Wakes>,
    ) -> bool {
        // Joins and leaves gathered so far come before anything numbered after them.
        self.flush_presence(state);
        let event = v1::Event {
            offset: 0,
            ts: now_millis(),
            id: who.id.to_string(),
            name: who.name.clone(),
            kind,
        };
        // Fanned out at once, here: only if every live member has room for it (see
        // `Wakes`); else not numbered, and the sender's reader waits and tries again.
        if let Some(need) = wakes.as_deref().and_then(Wakes::need)
            && self.cluster.is_none()
            && self.store.is_none()
        {
            let full: Vec<Arc<Outbox>> = state
                .members
                .values()
                .filter(|slot| matches!(slot.stage, Stage::Live) && slot.outbox.lacks(need))
                .map(|slot| slot.outbox.clone())
                .collect();
            if !full.is_empty() {
                if let Some(wakes) = wakes {
                    wakes.lacked(full);
                }
                return false;
            }
        }
        if let Some(cluster) = &self.cluster {
            cluster.publish(Outgoing {
                link,
                room: self.name.clone(),
                key,
                event,
            });
            return true;
        }
        state.numbered += 1;
        let event = v1::Event {
            offset: state.numbered,
            ..event
        };
        match &self.store {
            Some(store) => {
                if v2::target_of(&event.kind).is_some() || rules::change(&event).is_some() {
                    state.unwritten.push_back(event.clone());
                }
                store.append(self, key, event);
            }
            None => self.fan_out_numbered(state, (0, key), event, wakes),
        }
        true
    }

    /// The outboxes of this room's live members that a batch delivery waits for
    /// before its next event here: those over their high-water mark (see
    /// [`outbox::drained_by`]). Empty, almost always, when every member reads.
    pub fn full_outboxes(&self) -> Vec<Arc<Outbox>> {
        self.lock()
            .members
            .values()
            .filter(|slot| matches!(slot.stage, Stage::Live) && slot.outbox.is_full())
            .map(|slot| slot.outbox.clone())
            .collect()
    }

    /// Waits, as a batch delivery does before each event, until every live member's
    /// outbox here has room for the largest frame, or until `deadline` (see
    /// [`outbox::drained_by`]).
    pub async fn room_to_deliver(&self, deadline: tokio::time::Instant) {
        let full = self.full_outboxes();
        if !full.is_empty() {
            outbox::drained_by(full, deadline).await;
        }
    }

    /// The store keeps this room's events from offset `first` on: told after each of
    /// its writes, before their events are fanned out, so that a welcome offers a
    /// resume from the store only as far back as it reaches.
    pub fn stored_from(&self, first: u64) {
        self.lock().stored_from = first;
    }

    /// Fans out an event the store has written, from member `key`.
    pub fn fan_out(&self, key: u64, event: v1::Event) {
        self.fan_out_numbered(&mut self.lock(), (0, key), event, None);
    }

    /// This node's id in the cluster; 0 on a single node.
    fn node(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |cluster| cluster.node())
    }

    /// With `wakes`, the writers of the members it reaches are left to be woken by it.
    fn fan_out_numbered(
        &self,
        state: &mut State,
        (node, key): MemberRef,
        event: v1::Event,
        mut wakes: Option<&mut Wakes>,
    ) {
        let mut event = event;
        // On a single node a key names one connection: v2 clients that keep members
        // by handle take out the one that left, not another of its id. A cluster's
        // keys are each node's own, and its clients keep members by id.
        if self.cluster.is_none() {
            event.kind.set_member_ref(Some(key));
        }
        match &event.kind {
            EventKind::Join { role, .. } => {
                state.seat_token_role((node, key), &event.id, *role);
                let here = (node == self.node())
                    .then_some(())
                    .and(state.members.get_mut(&key));
                let newcomer = here.and_then(|slot| {
                    let stage = std::mem::replace(&mut slot.stage, Stage::Live);
                    match (stage, slot.protocol) {
                        (Stage::Joining(resume), Protocol::V1 | Protocol::V2) => Some((
                            resume,
                            slot.protocol,
                            slot.outbox.clone(),
                            slot.catch_up.clone(),
                        )),
                        (stage, _) => {
                            slot.stage = stage;
                            if matches!(slot.stage, Stage::Joining(_)) {
                                slot.stage = Stage::Live;
                            }
                            None
                        }
                    }
                });
                if let Some((resume, protocol, outbox, catch_up)) = newcomer {
                    let streaming = self.welcome(
                        state,
                        &event.id,
                        protocol,
                        resume.as_ref(),
                        &outbox,
                        catch_up.as_ref(),
                        false,
                    );
                    if streaming && let Some(slot) = state.members.get_mut(&key) {
                        slot.stage = Stage::CatchingUp;
                    }
                }
                let present = v1::Present {
                    id: event.id.clone(),
                    name: event.name.clone(),
                    since: event.ts,
                    role: *role,
                    key: None,
                };
                state.present.insert((node, key), present);
            }
            EventKind::Leave { .. } => state.unseat((node, key)),
            kind => {
                if let Some(change) = rules::change(&event) {
                    state.rules.apply(change);
                }
                if is_moderation(kind) {
                    // The operator's audit trail, besides the room's log.
                    tracing::info!(room = %self.name, offset = event.offset, event = %event.to_json(), "moderation");
                }
                if let EventKind::Slow { .. } = kind {
                    state.spoke.clear();
                }
            }
        }
        if !state.posting.is_empty()
            && let Some(nonce) = logged_nonce(&event.kind)
            && let Some(waiting) = state.posting.remove(&(event.id.clone(), nonce.clone()))
        {
            for waiter in waiting {
                let _ = waiter.send(event.offset);
            }
        }
        let removal = match &event.kind {
            EventKind::Kick { member, reason, .. } => {
                Some((member.clone(), removal(KICKED, "kicked", reason)))
            }
            EventKind::Ban { member, reason, .. } => {
                Some((member.clone(), removal(BANNED, "banned", reason)))
            }
            _ => None,
        };
        state.offset = event.offset;
        while state
            .unwritten
            .front()
            .is_some_and(|unwritten| unwritten.offset <= event.offset)
        {
            state.unwritten.pop_front();
        }
        // In a cluster, events are numbered in Redis and only delivered here: what this
        // node numbered is what it was delivered, or a room could never be idle.
        state.numbered = state.numbered.max(event.offset);
        self.settings.directory.tell(&self.name, &event);
        let plain = event.plain().map(|line| wire::text(&line));
        let kept = self.remember(&mut state.history, event);
        let (v1, v2) = (kept.v1, kept.v2);
        let (mut to_plain, mut to_v1, mut to_v2) = (0, 0, 0);
        // What the sender's own copy counts as: the largest frame of the event.
        let charge = [plain.as_ref(), v1.as_ref(), Some(&v2)]
            .into_iter()
            .flatten()
            .map(outbox::queued_cost)
            .max()
            .unwrap_or(0);
        let sender = (node == self.node()).then_some(key);
        let live = state
            .members
            .iter()
            .filter(|(_, slot)| matches!(slot.stage, Stage::Live));
        for (member, slot) in live {
            let frame = match slot.protocol {
                Protocol::Plain => plain.as_ref().inspect(|_| to_plain += 1),
                Protocol::V1 => v1.as_ref().inspect(|_| to_v1 += 1),
                Protocol::V2 => Some(&v2).inspect(|_| to_v2 += 1),
            };
            let Some(frame) = frame else { continue };
            match wakes.as_deref_mut() {
                Some(wakes) if sender == Some(*member) => {
                    slot.outbox.push_corked_charged(frame, charge, wakes)
                }
                Some(wakes) => slot.outbox.push_corked(frame, wakes),
                None => slot.outbox.push(frame),
            }
        }
        // After the event itself, which the removed member's outbox has queued.
        if let Some((member, removal)) = removal {
            for slot in state.members.values() {
                if slot.id.as_str() == member {
                    slot.outbox.remove(removal.clone());
                }
            }
            // A server-wide ban: every node that hears it closes the id's connections
            // in every room.
            if self.name.as_str() == SERVER_ROOM
                && removal.code == BANNED
                && let Ok(member) = ClientId::parse(&member)
            {
                self.settings.directory.remove_everywhere(&member, &removal);
            }
        }
        let length = |frame: &Option<Frame>| frame.as_ref().map_or(0, |frame| frame.len());
        self.metrics.delivered(to_plain, length(&plain));
        self.metrics.delivered(to_v1, length(&v1));
        self.metrics.delivered(to_v2, v2.len());
    }

    /// Keeps an event in the history, forgetting the oldest past the bounds, and
    /// applies it to the event it operates on, if it is an operation. Returns the
    /// event's frames (which the history shares, if it keeps any).
    fn remember(&self, history: &mut History, event: v1::Event) -> Frames {
        if let Some(target) = v2::target_of(&event.kind) {
            self.apply(history, &event, target);
        }
        if let EventKind::Message {
            nonce: Some(nonce), ..
        } = &event.kind
        {
            let most = SaidNonces::most(self.settings.history);
            history.said.note(&event.id, nonce, most);
        }
        let kept = Kept::new(event);
        let frames = Frames {
            v1: kept.v1.clone(),
            v2: kept.v2.clone(),
        };
        if self.settings.history == 0 {
            return frames;
        }
        history.bytes += kept.bytes();
        self.metrics.history_bytes(kept.bytes() as i64);
        history.events.push_back(kept);
        while history.events.len() > self.settings.history
            || history.bytes > self.settings.max_history_bytes
        {
            let Some(oldest) = history.events.pop_front() else {
                break;
            };
            history.bytes -= oldest.bytes();
            self.metrics.history_bytes(-(oldest.bytes() as i64));
        }
        frames
    }

    /// Applies operation `op` to the message at `target`, if the history keeps it,
    /// encoding its frames again. A delete also takes the text out of the message's
    /// edits, and stands in for a message the cluster has already purged.
    fn apply(&self, history: &mut History, op: &v1::Event, target: u64) {
        let deleting = matches!(op.kind, EventKind::Delete { .. });
        match history.find(target) {
            Ok(at) => {
                let mut event = history.events[at].event.clone();
                if !v2::apply(op, &mut event) {
                    return;
                }
                self.replace(history, at, event);
                if deleting {
                    let edits: Vec<usize> = (at + 1..history.events.len())
                        .filter(|&later| {
                            let kept = &history.events[later].event;
                            matches!(kept.kind, EventKind::Edit { target: edited, deleted: false, .. } if edited == target)
                        })
                        .collect();
                    for later in edits {
                        let mut edit = history.events[later].event.clone();
                        v2::scrub_edit(&mut edit);
                        self.replace(history, later, edit);
                    }
                }
            }
            // Inside the kept range but missing: Redis deleted it (see the broker's
            // append script), and the delete says what stood there.
            Err(at) if deleting && at > 0 && at < history.events.len() => {
                let tombstone = v1::Event {
                    offset: target,
                    kind: EventKind::Message {
                        text: String::new(),
                        nonce: None,
                        reply_to: None,
                        kind: None,
                        state: v1::MessageState {
                            deleted: true,
                            ..Default::default()
                        },
                    },
                    ..op.clone()
                };
                let kept = Kept::new(tombstone);
                history.bytes += kept.bytes();
                self.metrics.history_bytes(kept.bytes() as i64);
                history.events.insert(at, kept);
            }
            Err(_) => {}
        }
    }

    /// Puts `event` in the place of the history's `at`th, with its new frames.
    fn replace(&self, history: &mut History, at: usize, event: v1::Event) {
        let kept = Kept::new(event);
        let old = std::mem::replace(&mut history.events[at], kept);
        let grown = history.events[at].bytes() as i64 - old.bytes() as i64;
        history.bytes = (history.bytes as i64 + grown) as usize;
        self.metrics.history_bytes(grown);
    }

    /// Fans out an event the cluster numbered, from member `key` of `node`, if it is
    /// the next one of the room's history `epoch`.
    pub fn deliver(&self, (node, key): MemberRef, epoch: &str, event: v1::Event) -> Delivered {
        let mut state = self.lock();
        if !state.loaded {
            return Delivered::NotLoaded;
        }
        if epoch != state.epoch || event.offset > state.offset + 1 {
            return Delivered::Behind;
        }
        if event.offset <= state.offset {
            return Delivered::Done;
        }
        self.fan_out_numbered(&mut state, (node, key), event, None);
        Delivered::Done
    }

    /// The events of a `history` page of `range`, as far as the history in memory
    /// holds them.
    ///
    /// A page is `limit` offsets, but offsets memory holds no event for (a big room's
    /// presence batches, which are not kept) do not count against it: the page reaches
    /// on through memory until it has `limit` events, else a run of batches gave short
    /// or empty pages that said there was more.
    pub fn page(&self, range: v2::PageRange, limit: usize) -> MemoryPage {
        let state = self.lock();
        let last = state.offset;
        let history = &state.history;
        let oldest_kept = history.events.front().map_or(last + 1, Kept::offset);
        let held = |first: u64, last: u64| {
            let from = history.events.partition_point(|kept| kept.offset() < first);
            let to = history.events.partition_point(|kept| kept.offset() <= last);
            from..to
        };
        let (first, page_last) = match range {
            v2::PageRange::Before(before) => {
                let page_last = before.saturating_sub(1).min(last);
                let first = page_last.saturating_sub(limit as u64 - 1).max(1);
                let held = held(first, page_last);
                let first = match held.len() < limit && first > oldest_kept {
                    // The `limit`th newest event up to `page_last`, or the oldest kept.
                    true => history
                        .events
                        .range(..held.end)
                        .rev()
                        .nth(limit - 1)
                        .map_or(oldest_kept, Kept::offset),
                    false => first,
                };
                (first, page_last)
            }
            v2::PageRange::After(after) => {
                let first = after + 1;
                let page_last = after.saturating_add(limit as u64).min(last);
                let held = held(first, page_last);
                let page_last = match held.len() < limit && page_last < last && first >= oldest_kept
                {
                    // The `limit`th event after `after`, or the newest.
                    true => history
                        .events
                        .range(held.start..)
                        .nth(limit - 1)
                        .map_or(last, Kept::offset),
                    false => page_last,
                };
                (first, page_last)
            }
        };
        let from = history.events.partition_point(|kept| kept.offset() < first);
        let frames: Vec<Frame> = history
            .events
            .range(from..)
            .take_while(|kept| kept.offset() <= page_last)
            .map(|kept| kept.v2.clone())
            .collect();
        MemoryPage {
            first,
            last: page_last,
            complete: first > page_last || oldest_kept <= first,
            frames,
            oldest_kept,
            room_last: last,
        }
    }

    /// The newest messages in memory before `before` that contain every one of `words`,
    /// newest first, at most `limit`, and whether there are more in memory.
    pub fn search(&self, words: &[String], before: u64, limit: usize) -> (Vec<Frame>, bool) {
        let state = self.lock();
        let mut found = state
            .history
            .events
            .iter()
            .rev()
            .filter(|kept| kept.offset() < before && v2::matches_words(&kept.event, words))
            .map(|kept| kept.v2.clone());
        let page: Vec<Frame> = found.by_ref().take(limit).collect();
        let more = found.next().is_some();
        (page, more)
    }

    /// The room as a direct-message room of `id` lists it, if it is one of `id`'s:
    /// unread counts the other id's messages after `id`'s read position that the
    /// history still holds.
    pub fn direct_summary(&self, id: &ClientId) -> Option<v2::DirectRoom> {
        let (first, second) = v2::direct_members(&self.name)?.ok()?;
        let with = match (*id == first, *id == second) {
            (true, _) => second,
            (_, true) => first,
            _ => return None,
        };
        let state = self.lock();
        let read = state.reads.get(id.as_str()).copied().unwrap_or(0);
        let unread = state
            .history
            .events
            .iter()
            .filter(|kept| {
                kept.offset() > read
                    && kept.event.id == with.as_str()
                    && matches!(&kept.event.kind, EventKind::Message { state, .. } if !state.deleted)
            })
            .count() as u64;
        Some(v2::DirectRoom {
            room: self.name.to_string(),
            with: with.to_string(),
            offset: state.offset,
            read,
            unread,
        })
    }

    /// Tells this node's members what `what` says, but not the member `from` that said
    /// it: someone typing to the other v2 connections, a read position to the other v2
    /// connections of its id. A read position that does not move forward is dropped:
    /// returns whether it moved (always true for typing). With `wakes`, the writers it
    /// reaches are left to be woken with the reader's other frames (see [`Wakes`]): a
    /// typing frame then leaves in the same `writev` as the messages around it.
    pub fn hear(&self, what: &Ephemeral, from: Option<u64>, mut wakes: Option<&mut Wakes>) -> bool {
        let mut state = self.lock();
        let (frame, to_id) = match what {
            Ephemeral::Typing { id, name } => {
                let typing = v2::Typing {
                    id: id.clone(),
                    name: name.clone(),
                };
                (wire::json(&typing, 64), None)
            }
            Ephemeral::Read { id, offset } => {
                let position = state.reads.entry(id.clone()).or_default();
                if *position >= *offset {
                    return false;
                }
                *position = *offset;
                let read = v2::ReadPosition { offset: *offset };
                (wire::json(&read, 40), Some(id))
            }
        };
        let sender = match what {
            Ephemeral::Typing { id, .. } | Ephemeral::Read { id, .. } => id,
        };
        let mut told = 0;
        for (key, slot) in &state.members {
            let reaches = slot.protocol == Protocol::V2
                && matches!(slot.stage, Stage::Live)
                && Some(*key) != from
                && match to_id {
                    Some(id) => slot.id.as_str() == id,
                    None => slot.id.as_str() != sender,
                };
            if reaches {
                match wakes.as_deref_mut() {
                    Some(wakes) => slot.outbox.push_corked(&frame, wakes),
                    None => slot.outbox.push(&frame),
                }
                told += 1;
            }
        }
        self.metrics.delivered(told, frame.len());
        true
    }

    /// Whether the room's state is the cluster's; always on a single node.
    pub fn is_loaded(&self) -> bool {
        self.lock().loaded
    }

    /// Forgets that the room's state is the cluster's: the node lost track of it (lost
    /// Redis), and loads it again when someone joins.
    pub fn unload(&self) {
        self.lock().loaded = false;
    }

    /// Forgets that the room's state is the cluster's if nobody is in it on this node,
    /// whose broker is about to stop reading the room's partition (the state would go
    /// stale); someone who joins later loads it again. `false` if someone is in it.
    pub fn unload_if_empty(&self) -> bool {
        let mut state = self.lock();
        if !state.members.is_empty() {
            return false;
        }
        state.loaded = false;
        true
    }

    /// Takes the room's state from the cluster. A room that was loaded and fell behind
    /// fans out what it missed, as far as the snapshot's history reaches; a room loaded
    /// anew takes it as it is. A member of this node whose join the snapshot already
    /// holds (it joined while the room was not loaded) is welcomed now.
    pub fn install(self: &Arc<Self>, snapshot: Snapshot) {
        let mut state = self.lock();
        let caught_up = state.loaded && state.epoch == snapshot.epoch;
        if caught_up {
            for (from, event) in &snapshot.events {
                if event.offset == state.offset + 1 {
                    self.fan_out_numbered(&mut state, *from, event.clone(), None);
                }
            }
            if state.offset == snapshot.offset {
                return;
            }
            tracing::warn!(room = %self.name, from = state.offset, to = snapshot.offset, "the room's history no longer holds what this node missed");
        }
        state.epoch = snapshot.epoch;
        state.offset = snapshot.offset;
        state.numbered = snapshot.offset;
        state.present = snapshot.present.into_iter().collect();
        state.token_roles = state
            .present
            .iter()
            .filter(|(_, present)| !present.role.is_member())
            .map(|(member, present)| (*member, (present.id.clone(), present.role)))
            .collect();
        state.reads = snapshot.reads;
        state.rules = Rules::from_fields(snapshot.rules);
        let history = std::mem::take(&mut state.history.events);
        let forgotten: usize = history.iter().map(Kept::bytes).sum();
        state.history.bytes -= forgotten;
        self.metrics.history_bytes(-(forgotten as i64));
        for (_, event) in snapshot.events {
            self.remember(&mut state.history, event);
        }
        state.loaded = true;
        let node = self.node();
        let joined: Vec<(u64, String)> = state
            .members
            .iter()
            .filter(|(key, slot)| {
                matches!(slot.stage, Stage::Joining(_))
                    && state.present.contains_key(&(node, **key))
            })
            .map(|(key, _)| (*key, state.present[&(node, *key)].id.clone()))
            .collect();
        for (key, id) in joined {
            let slot = state.members.get_mut(&key).expect("just found");
            let Stage::Joining(resume) = std::mem::replace(&mut slot.stage, Stage::Live) else {
                continue;
            };
            if slot.protocol != Protocol::Plain {
                let (protocol, outbox) = (slot.protocol, slot.outbox.clone());
                self.welcome(&state, &id, protocol, resume.as_ref(), &outbox, None, false);
            }
        }
        let waiting: Vec<u64> = state
            .members
            .iter()
            .filter(|(_, slot)| matches!(slot.stage, Stage::Waiting(_)))
            .map(|(key, _)| *key)
            .collect();
        for key in waiting {
            let slot = state.members.get_mut(&key).expect("just found");
            let Stage::Waiting(arrival) = std::mem::replace(&mut slot.stage, Stage::Live) else {
                continue;
            };
            slot.stage = Stage::Joining(arrival.resume);
            let join = EventKind::Join {
                role: arrival.who.role,
                key: None,
            };
            self.announce(&mut state, (arrival.link, key), &arrival.who, join, None);
        }
    }
}

/// Whether one of `role` may make a moderation request: its values in
/// bounds, its role high enough, and its target's role lower than its own (an
/// admin's aside).
fn may_moderate(
    state: &State,
    admins: &[ClientId],
    request: &v2::Request,
    role: Role,
) -> Result<(), v2::Error> {
    let needs = request.needs();
    if needs == Role::Member {
        return Ok(());
    }
    let nonce = request.nonce();
    let forbidden = |message: String| Err(v2::Error::new(nonce, v2::ErrorCode::Forbidden, message));
    if role < needs {
        return forbidden(format!(
            "only {} of this room may do that; you are {}",
            with_article(needs),
            with_article(role)
        ));
    }
    v2::check_moderation(request)?;
    let invalid = |message: String| Err(v2::Error::new(nonce, v2::ErrorCode::Invalid, message));
    let member = match request {
        v2::Request::Kick { member, .. }
        | v2::Request::Ban { member, .. }
        | v2::Request::Mute { member, .. }
        | v2::Request::Role { member, .. } => Some(member),
        _ => None,
    };
    // Its token's role, on whichever node it is connected.
    let token = member.map_or(Role::Member, |member| state.token_role(member));
    // A token's role is the identity provider's: a role given here adds to it, never
    // takes it away.
    if let v2::Request::Role {
        member,
        role: wanted,
        ..
    } = request
        && token > *wanted
    {
        return invalid(format!(
            "#{member} is {} by their token; a role given here cannot take that away",
            with_article(token)
        ));
    }
    let rules = state.rules_ahead();
    if let Some(why) = rules.unchanged(request, now_millis()) {
        return invalid(why);
    }
    let Some(member) = member else {
        return Ok(());
    };
    if matches!(request, v2::Request::Kick { .. })
        && !state.present.values().any(|present| present.id == *member)
    {
        return invalid(format!("#{member} is not in this room"));
    }
    let operator = match admins.iter().any(|admin| admin.as_str() == member) {
        true => Role::Admin,
        false => Role::Member,
    };
    let theirs = rules.role(member).max(token).max(operator);
    if theirs >= role && role < Role::Admin {
        return forbidden(format!(
            "#{member} is {} here: only a higher role may do that",
            with_article(theirs)
        ));
    }
    Ok(())
}

/// A role with its article: "a moderator", "an owner".
fn with_article(role: Role) -> String {
    match role {
        Role::Admin | Role::Owner => format!("an {}", role.as_str()),
        Role::Member | Role::Moderator => format!("a {}", role.as_str()),
    }
}

/// Whether `kind` is a moderator's (or an owner's) doing.
fn is_moderation(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Kick { .. }
            | EventKind::Ban { .. }
            | EventKind::Unban { .. }
            | EventKind::Mute { .. }
            | EventKind::Unmute { .. }
            | EventKind::Topic { .. }
            | EventKind::Slow { .. }
            | EventKind::ReadOnly { .. }
            | EventKind::Role { .. }
    ) || matches!(
        kind,
        EventKind::Delete {
            moderated: true,
            ..
        }
    )
}

/// The nonce of a message or a moderation event: what a poster over HTTP waits for.
fn logged_nonce(kind: &EventKind) -> Option<&String> {
    match kind {
        EventKind::Message { nonce, .. }
        | EventKind::Delete { nonce, .. }
        | EventKind::Kick { nonce, .. }
        | EventKind::Ban { nonce, .. }
        | EventKind::Unban { nonce, .. }
        | EventKind::Mute { nonce, .. }
        | EventKind::Unmute { nonce, .. }
        | EventKind::Topic { nonce, .. }
        | EventKind::Slow { nonce, .. }
        | EventKind::ReadOnly { nonce, .. }
        | EventKind::Role { nonce, .. } => nonce.as_ref(),
        _ => None,
    }
}

/// The most messages posted over HTTP that may be on their way at once in a room.
const MAX_POSTING: usize = 1000;

/// Where a message posted over HTTP is: in the log at this offset, or on its way.
pub enum Posting {
    Done(u64),
    /// Answered with its offset once it is fanned out; dropped if it never is (its
    /// node lost Redis, say).
    Waiting(oneshot::Receiver<u64>),
}

/// A kick's or ban's close code and reason: the moderator's, or `default`, within
/// what a close frame holds.
fn removal(code: u16, default: &str, reason: &Option<String>) -> Removal {
    let mut reason = reason.clone().unwrap_or_else(|| default.to_owned());
    if reason.len() > v2::MAX_REASON_BYTES {
        let mut end = v2::MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    Removal { code, reason }
}

/// The room whose bans are the server's (an admin's, `PUT /api/v1/bans/{id}`): kept,
/// logged and shared as any room's are, and checked at every handshake. Nobody may
/// join it or read it.
pub const SERVER_ROOM: &str = "_server";

/// A kicked member's close code: it may come back (docs/PROTOCOL.md).
pub const KICKED: u16 = 4001;

/// A banned member's close code: it may not come back until the ban ends or is lifted.
pub const BANNED: u16 = 4003;

impl Drop for Room {
    fn drop(&mut self) {
        let bytes = self.lock().history.bytes;
        self.metrics.history_bytes(-(bytes as i64));
    }
}

/// A member's voice in its room, for a task of its own: see [`Member::speaker`].
pub struct Speaker {
    room: Arc<Room>,
    link: Link,
    key: u64,
    who: Who,
}

impl Speaker {
    /// The room spoken in.
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// Does `request`, an operation on a message older than memory holds, read from
    /// the store as `stored` (its oldest offset `oldest`), if the room's rules allow
    /// it: checked under the room's lock against the room now, as any request is, a
    /// moderator's delete of another's message included.
    pub fn change_old_message(
        &self,
        request: v2::Request,
        stored: Option<v1::Event>,
        oldest: u64,
    ) -> Result<(), v2::Error> {
        let mut state = self.room.lock();
        let id = self.who.id.as_str();
        let role = state.rules_ahead().role(id).max(self.who.role);
        let stored = stored.map(|mut event| {
            let target = Some(event.offset);
            let ops = state.unwritten.iter();
            for op in ops.filter(|op| v2::target_of(&op.kind) == target) {
                v2::apply(op, &mut event);
            }
            event
        });
        let window = (oldest.min(state.offset + 1), state.offset);
        let moderator = role >= Role::Moderator;
        v2::check_as(id, moderator, &request, stored.as_ref(), window)?;
        let mut kind = request.into_event_kind().expect("an operation");
        if let EventKind::Delete { moderated, .. } = &mut kind {
            *moderated = stored.is_some_and(|stored| stored.id != id);
        }
        self.room
            .announce(&mut state, (self.link, self.key), &self.who, kind, None);
        Ok(())
    }
}

/// One connection's place in a room. Dropping it announces the leave.
pub struct Member {
    room: Arc<Room>,
    protocol: Protocol,
    link: Link,
    key: u64,
    who: Who,
    outbox: Arc<Outbox>,
    /// When this connection's typing last counted, in Unix milliseconds.
    typed_at: AtomicU64,
    /// With a store, when resuming: whether its replay is to stream from the store.
    caught_up: Option<watch::Receiver<CatchUp>>,
}

impl Member {
    /// Relays `text` to everyone, the sender included: `Client #<id>: <text>` to plain
    /// clients, a message event with the sender's `nonce` to v1 clients. Where it is
    /// fanned out at once (a single node without a store), the recipients' writers are
    /// left to `wakes`.
    ///
    /// A member the room's rules keep from speaking (muted, slow mode, a read-only
    /// room) is not heard: these protocols have no error to answer with.
    pub fn say(&self, text: &str, nonce: Option<String>, wakes: &mut Wakes) {
        let mut state = self.room.lock();
        if self.said_before(&mut state, nonce.as_deref()) {
            return;
        }
        let now = now_millis();
        let role = self.role_in(&state);
        if let Err(error) = state.may_speak(self.who.id.as_str(), role, now, None) {
            tracing::debug!(code = ?error.code, "not heard");
            return;
        }
        let said = nonce.clone();
        let numbered = self.room.announce(
            &mut state,
            (self.link, self.key),
            &self.who,
            EventKind::said(text, nonce),
            Some(wakes),
        );
        if numbered {
            self.note_said(&mut state, said.as_deref());
        }
        state.spoke(self.who.id.as_str(), role, now, numbered);
    }

    /// Whether this id said a message with `nonce` already (on any connection): then
    /// this one is a resend whose first copy got through, and is dropped.
    fn said_before(&self, state: &mut State, nonce: Option<&str>) -> bool {
        let repeated =
            nonce.is_some_and(|nonce| state.history.said.holds(self.who.id.as_str(), nonce));
        if repeated {
            tracing::debug!(id = %self.who.id.as_str(), "a message said again with its nonce: dropped");
        }
        repeated
    }

    /// Notes a message numbered now, before it is fanned out (written, or back from
    /// Redis), so that a resend in between is caught too.
    fn note_said(&self, state: &mut State, nonce: Option<&str>) {
        if let Some(nonce) = nonce {
            let most = SaidNonces::most(self.room.settings.history);
            state.history.said.note(self.who.id.as_str(), nonce, most);
        }
    }

    /// This member's role in the room: the one granted there or its token's, whichever
    /// is higher.
    fn role_in(&self, state: &State) -> Role {
        state.rules.role(self.who.id.as_str()).max(self.who.role)
    }

    /// Does what a v2 client asked, if the room's rules allow it; otherwise says why.
    /// A `dms` request is the session's to answer (it needs every room); here it does
    /// nothing.
    pub fn request(&self, request: v2::Request, wakes: &mut Wakes) -> Result<(), v2::Error> {
        match request {
            v2::Request::Typing { .. } => {
                self.typing(wakes);
                Ok(())
            }
            v2::Request::Read { offset, .. } => {
                let last = self.room.lock().offset;
                v2::check(self.who.id.as_str(), &request, None, (last + 1, last))?;
                self.read(offset);
                Ok(())
            }
            v2::Request::Dms { .. } => Ok(()),
            request => {
                let mut state = self.room.lock();
                let message = matches!(request, v2::Request::Message { .. });
                if message && self.said_before(&mut state, request.nonce()) {
                    return Ok(());
                }
                let said = message
                    .then(|| request.nonce().map(str::to_owned))
                    .flatten();
                let now = now_millis();
                let role = self.role_in(&state);
                may_moderate(&state, &self.room.settings.admins, &request, role)?;
                let speaks = request.speaks();
                if speaks {
                    state.may_speak(self.who.id.as_str(), role, now, request.nonce())?;
                } else if matches!(
                    request,
                    v2::Request::React { .. } | v2::Request::Unreact { .. }
                ) {
                    state.may_be_heard(self.who.id.as_str(), role, now, request.nonce())?;
                }
                let history = &state.history;
                let window = (
                    history
                        .events
                        .front()
                        .map_or(state.offset + 1, Kept::offset),
                    state.offset,
                );
                let kept = request
                    .target()
                    .and_then(|offset| state.message_ahead(offset));
                let moderator = role >= Role::Moderator;
                v2::check_as(
                    self.who.id.as_str(),
                    moderator,
                    &request,
                    kept.as_deref(),
                    window,
                )?;
                let others = kept.is_some_and(|kept| kept.id != self.who.id.as_str());
                let mut kind = request.into_event_kind().expect("a log request");
                if let EventKind::Delete { moderated, .. } = &mut kind {
                    *moderated = others;
                }
                let numbered = self.room.announce(
                    &mut state,
                    (self.link, self.key),
                    &self.who,
                    kind,
                    Some(wakes),
                );
                if numbered {
                    self.note_said(&mut state, said.as_deref());
                }
                if speaks {
                    state.spoke(self.who.id.as_str(), role, now, numbered);
                }
                Ok(())
            }
        }
    }

    /// What this member needs to add to the room's log later, from another task: an
    /// operation on a message older than memory holds, checked against the store.
    pub fn speaker(&self) -> Speaker {
        Speaker {
            room: self.room.clone(),
            link: self.link,
            key: self.key,
            who: self.who.clone(),
        }
    }

    /// Tells the room's other v2 connections that this member is typing, unless it
    /// already did in the last [`v2::TYPING_MIN_GAP_MS`].
    fn typing(&self, wakes: &mut Wakes) {
        let now = now_millis();
        let last = self.typed_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < v2::TYPING_MIN_GAP_MS {
            return;
        }
        self.typed_at.store(now, Ordering::Relaxed);
        {
            // Someone who may not speak is not shown typing either.
            let state = self.room.lock();
            let role = self.role_in(&state);
            if state
                .may_be_heard(self.who.id.as_str(), role, now, None)
                .is_err()
            {
                return;
            }
        }
        let typing = Ephemeral::Typing {
            id: self.who.id.to_string(),
            name: self.who.name.clone(),
        };
        self.room.hear(&typing, Some(self.key), Some(wakes));
        if let Some(cluster) = &self.room.cluster {
            cluster.ephemeral(&self.room.name, typing);
        }
    }

    /// Moves this id's read position in the room forward to `offset`, and tells its
    /// other connections.
    fn read(&self, offset: u64) {
        let read = Ephemeral::Read {
            id: self.who.id.to_string(),
            offset,
        };
        if !self.room.hear(&read, Some(self.key), None) {
            return;
        }
        if let Some(store) = &self.room.store {
            store.save_read(&self.room.name, self.who.id.as_str(), offset);
        }
        if let Some(cluster) = &self.room.cluster {
            cluster.ephemeral(&self.room.name, read);
        }
    }

    /// The room this member is in.
    pub fn room_handle(&self) -> &Arc<Room> {
        &self.room
    }

    /// This member's key in the room.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Whether its replay may stream from the store, once welcomed (see [`CatchUp`]).
    pub fn catch_up(&self) -> Option<watch::Receiver<CatchUp>> {
        self.caught_up.clone()
    }

    /// The protocol the member speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Which connection to the cluster the member joined in.
    pub fn link(&self) -> Link {
        self.link
    }

    /// The member's client id.
    pub fn id(&self) -> &ClientId {
        &self.who.id
    }

    /// The room the member is in.
    pub fn room(&self) -> &RoomName {
        self.room.name()
    }

    /// The frames waiting to be written to this member's socket.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let directory = &self.room.settings.directory;
        directory.remove(&self.who.id, &self.room.name, self.key);
        let mut state = self.room.lock();
        let slot = state.members.remove(&self.key);
        // Nobody heard of its join: nobody is to hear of its leave.
        if slot.is_some_and(|slot| matches!(slot.stage, Stage::Waiting(_))) {
            return;
        }
        if !self.room.gather_leave(&mut state, self.key, &self.who) {
            self.room.announce(
                &mut state,
                (self.link, self.key),
                &self.who,
                EventKind::leave(),
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Who {
        Who {
            id: ClientId::parse(text).unwrap(),
            name: None,
            role: Role::Member,
        }
    }

    fn room(max_queue_bytes: usize, history: usize) -> Arc<Room> {
        let settings = RoomSettings {
            max_queue_bytes,
            history,
            max_history_bytes: 1 << 20,
            limits: v1::Limits {
                max_message_bytes: 1000,
                max_nonce_chars: v1::MAX_NONCE_CHARS,
                history,
            },
            verified: false,
            directory: Default::default(),
            admins: Vec::new(),
            presence_batch_above: 0,
            presence_batch_entries: 0,
        };
        Room::new(
            RoomName::default(),
            Start::new("e".into()),
            Arc::new(settings),
            Arc::default(),
            None,
            None,
        )
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
        let room = room(1 << 20, 10);
        let first = room.join(id("1"), Protocol::Plain, None);
        assert_eq!(drain(first.outbox()), ["Client #1 has entered the chat"]);
        let second = room.join(id("2"), Protocol::Plain, None);
        first.say("hi", None, &mut Wakes::default());
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
        let room = room(100, 10);
        let slow = room.join(id("1"), Protocol::Plain, None);
        let talker = room.join(id("2"), Protocol::Plain, None);
        for _ in 0..10 {
            talker.say("0123456789", None, &mut Wakes::default());
        }
        assert!(slow.outbox().is_evicted());
        assert!(drain(slow.outbox()).is_empty());
    }

    #[test]
    fn history_keeps_the_last_events_within_its_bounds() {
        let room = room(1 << 20, 3);
        let talker = room.join(id("1"), Protocol::Plain, None);
        for n in 0..5 {
            talker.say(&n.to_string(), None, &mut Wakes::default());
        }
        let state = room.lock();
        let offsets: Vec<u64> = state.history.events.iter().map(Kept::offset).collect();
        assert_eq!(offsets, [4, 5, 6], "the join was 1, the messages 2 to 6");
        let bytes: usize = state.history.events.iter().map(Kept::bytes).sum();
        assert_eq!(state.history.bytes, bytes);
    }

    /// A cluster that this node only hears from: what it publishes goes nowhere.
    struct Elsewhere(Backlog);

    impl Cluster for Elsewhere {
        fn node(&self) -> u64 {
            1
        }
        fn link(&self) -> Link {
            Link::Connection(1)
        }
        fn publish(&self, _: Outgoing) {}
        fn ephemeral(&self, _: &RoomName, _: Ephemeral) {}
        fn sync(&self, _: &Arc<Room>) {}
        fn load<'a>(&'a self, _: &'a Arc<Room>) -> BoxFuture<'a, bool> {
            Box::pin(async { true })
        }
        fn backlog(&self) -> &Backlog {
            &self.0
        }
        fn page<'a>(
            &'a self,
            _: &'a RoomName,
            _: RangeInclusive<u64>,
        ) -> BoxFuture<'a, Result<StoredPage, StoreError>> {
            Box::pin(async { Ok(StoredPage::default()) })
        }
    }

    /// A cluster that keeps what this node publishes, for a test to deliver back.
    struct Recorded {
        backlog: Backlog,
        published: Mutex<Vec<Outgoing>>,
        syncs: AtomicU64,
    }

    impl Cluster for Recorded {
        fn node(&self) -> u64 {
            1
        }
        fn link(&self) -> Link {
            Link::Connection(1)
        }
        fn publish(&self, outgoing: Outgoing) {
            self.published.lock().unwrap().push(outgoing);
        }
        fn ephemeral(&self, _: &RoomName, _: Ephemeral) {}
        fn sync(&self, _: &Arc<Room>) {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        fn load<'a>(&'a self, _: &'a Arc<Room>) -> BoxFuture<'a, bool> {
            Box::pin(async { true })
        }
        fn backlog(&self) -> &Backlog {
            &self.backlog
        }
        fn page<'a>(
            &'a self,
            _: &'a RoomName,
            _: RangeInclusive<u64>,
        ) -> BoxFuture<'a, Result<StoredPage, StoreError>> {
            Box::pin(async { Ok(StoredPage::default()) })
        }
    }

    /// A node that stopped reading a room (nobody was left here) and has a newcomer
    /// join before it loads it again: the join is said only once the room is loaded,
    /// so that it is numbered after the snapshot, and the welcome is the room just
    /// before it. (Said at once, it could be in the snapshot, and the welcome would
    /// hold the newcomer's own join, which then never came live.)
    #[test]
    fn a_join_into_a_room_not_loaded_is_said_once_the_room_is_loaded() {
        let settings = room(1 << 20, 10).settings.clone();
        let recorded = Arc::new(Recorded {
            backlog: Backlog::new(1 << 20, Arc::default(), Metrics::history_bytes),
            published: Mutex::default(),
            syncs: AtomicU64::new(0),
        });
        let cluster: Arc<dyn Cluster> = recorded.clone();
        let clustered = Room::new(
            RoomName::default(),
            Start::new("e".into()),
            settings,
            Arc::default(),
            Some(cluster),
            None,
        );
        let newcomer = clustered.join(id("8"), Protocol::V2, None);
        let gone_before = clustered.join(id("9"), Protocol::V2, None);
        assert_eq!(
            recorded.syncs.load(Ordering::Relaxed),
            2,
            "a load is asked for"
        );
        drop(gone_before);
        assert!(
            recorded.published.lock().unwrap().is_empty(),
            "nothing said before the room is loaded, and no leave of a join never said"
        );
        let elsewhere = v1::Event {
            offset: 5,
            ts: 0,
            id: "7".into(),
            name: None,
            kind: EventKind::join(),
        };
        let present = v1::Present {
            id: "7".into(),
            name: None,
            since: 0,
            role: Role::Member,
            key: None,
        };
        clustered.install(Snapshot {
            epoch: "e".into(),
            offset: 5,
            events: vec![((2, 0), elsewhere)],
            present: vec![((2, 0), present)],
            ..Snapshot::default()
        });
        let published = std::mem::take(&mut *recorded.published.lock().unwrap());
        assert_eq!(published.len(), 1, "the newcomer's join, said now");
        let Outgoing { key, mut event, .. } = published.into_iter().next().unwrap();
        assert_eq!(
            (key, &event.id, &event.kind),
            (newcomer.key(), &"8".to_owned(), &EventKind::join())
        );
        assert!(
            drain(newcomer.outbox()).is_empty(),
            "nothing before its join is back"
        );
        event.offset = 6;
        assert_eq!(clustered.deliver((1, key), "e", event), Delivered::Done);
        let frames = drain(newcomer.outbox());
        let welcome: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(
            (&welcome["type"], &welcome["offset"]),
            (&serde_json::json!("welcome"), &serde_json::json!(5))
        );
        let own: serde_json::Value = serde_json::from_str(frames.last().unwrap()).unwrap();
        assert_eq!(
            (&own["type"], &own["id"], &own["offset"]),
            (
                &serde_json::json!("join"),
                &serde_json::json!("8"),
                &serde_json::json!(6)
            ),
            "{frames:?}"
        );
    }

    #[test]
    fn a_clustered_room_whose_members_left_elsewhere_is_idle() {
        let settings = room(1 << 20, 10).settings.clone();
        let cluster: Arc<dyn Cluster> = Arc::new(Elsewhere(Backlog::new(
            1 << 20,
            Arc::default(),
            Metrics::history_bytes,
        )));
        let clustered = Room::new(
            RoomName::default(),
            Start::new("e".into()),
            settings,
            Arc::default(),
            Some(cluster),
            None,
        );
        clustered.install(Snapshot {
            epoch: "e".into(),
            ..Snapshot::default()
        });
        let event = |offset, kind| v1::Event {
            offset,
            ts: 0,
            id: "7".into(),
            name: None,
            kind,
        };
        let from = (2, 0);
        assert_eq!(
            clustered.deliver(from, "e", event(1, EventKind::join())),
            Delivered::Done
        );
        assert_eq!(
            clustered.deliver(from, "e", event(2, EventKind::leave())),
            Delivered::Done
        );
        assert!(
            clustered.is_idle(),
            "nobody is here and nothing waits to be written"
        );
    }

    /// Issue 34, finding 12: the queue bound holds twice the largest frame a message
    /// can cause in any protocol, header and place in the queue included: the longest
    /// id, a name and a nonce that JSON escapes at every character, and a text of
    /// control characters, escaped six times over.
    #[test]
    fn the_queue_bound_holds_twice_the_largest_frame_of_any_protocol() {
        for max_message_bytes in [1, 1000, 64 * 1024, 1024 * 1024] {
            let config = Config {
                max_message_bytes,
                max_queue_bytes: 1,
                ..Config::default()
            };
            let text = "\u{1}".repeat(max_message_bytes);
            let nonce = Some("\u{1}".repeat(v1::MAX_NONCE_CHARS));
            let kinds = [
                EventKind::Message {
                    text: text.clone(),
                    nonce: nonce.clone(),
                    reply_to: Some(u64::MAX),
                    kind: Some(v1::MessageKind::Action),
                    state: v1::MessageState::default(),
                },
                EventKind::Edit {
                    target: u64::MAX,
                    text,
                    nonce,
                    deleted: false,
                },
            ];
            for kind in kinds {
                let event = v1::Event {
                    offset: u64::MAX,
                    ts: u64::MAX,
                    id: format!("-{}", "9".repeat(chat::MAX_ID_DIGITS)),
                    name: Some(DisplayName::parse(&"\\".repeat(v1::MAX_NAME_CHARS)).unwrap()),
                    kind,
                };
                let plain = event.plain().map(|line| wire::text(&line));
                let kept = Kept::new(event);
                let largest = [plain.as_ref(), kept.v1.as_ref(), Some(&kept.v2)]
                    .into_iter()
                    .flatten()
                    .map(outbox::queued_cost)
                    .max()
                    .unwrap();
                assert!(
                    2 * largest <= config.queue_bytes(),
                    "{max_message_bytes}: {largest} twice in {}",
                    config.queue_bytes()
                );
            }
        }
    }

    /// The rule in live fan-out: a message is numbered only once every live member
    /// has room for the largest frame it may cause, so that senders racing one
    /// another cannot overflow a reader between its writer's batches.
    #[test]
    fn a_message_waits_for_room_in_every_outbox_before_it_is_numbered() {
        let room = room(1000, 10);
        let reader = room.join(id("1"), Protocol::Plain, None);
        let talker = room.join(id("2"), Protocol::Plain, None);
        drain(reader.outbox());
        drain(talker.outbox());
        let line = "x".repeat(300);
        let mut wakes = Wakes::default();
        talker.say(&line, None, &mut wakes);
        talker.say(&line, None, &mut wakes);
        drain(talker.outbox());
        wakes.expect(wire::most_for_text(&line));
        talker.say(&line, None, &mut wakes);
        let full = wakes.take_lacking();
        assert_eq!(full.len(), 1, "only the reader lacks room");
        assert!(Arc::ptr_eq(&full[0], reader.outbox()));
        assert!(drain(talker.outbox()).is_empty(), "not numbered, not sent");
        assert_eq!(drain(reader.outbox()).len(), 2);
        wakes.expect(wire::most_for_text(&line));
        talker.say(&line, None, &mut wakes);
        assert!(wakes.take_lacking().is_empty());
        assert_eq!(drain(reader.outbox()), [format!("Client #2: {line}")]);
    }
}
