//! Clustering through Redis: several nodes share every room, with one order, one offset
//! space and one history.
//!
//! Numbering: every event goes through one Lua script (`APPEND`), which takes the room's
//! next offset from its `meta` hash, adds the event to the room's `history` stream
//! (entry id `0-<offset>`, capped at `--history` events) and to `chat:events`, the one
//! stream every node reads, all atomically. So every node sees each room's events in
//! offset order, with the same offsets, and can serve welcomes, history and resume from
//! what it has read, whichever node the client was on before. The room's epoch lives in
//! `meta` too: a Redis that lost its data makes a new one, so resuming clients learn
//! that their history is gone. (After Centrifugo's Redis engine, which keeps a stream
//! and an offset per channel; one shared stream instead of pub/sub lets a node read
//! only as fast as it fans out.)
//!
//! Loading: a node loads a room (`SNAPSHOT`: its epoch, offset, history and who is in
//! it) when its first client there joins, in the same task that reads `chat:events`,
//! so that what it reads afterwards either is in the snapshot (and is skipped by its
//! offset) or comes after it.
//!
//! Bounds: what sessions hand over is counted in bytes until it comes back through
//! `chat:events` and is fanned out, and sessions stop reading from their clients past
//! [`CLUSTER_BACKLOG_BYTES`], so that a node whose fan-out falls behind slows its senders
//! (as a single node does, where a sender fans out its own messages) instead of letting
//! Redis queue what it cannot deliver; `chat:events` is read a batch at a time, the next
//! one only once the last is fanned out, so nothing piles up inside the node either.
//!
//! Outside the log: typing and read positions (`Cluster::ephemeral`) go into
//! `chat:events` too, without an offset, so that other nodes hear them in order with
//! the events; read positions are also kept in the room's `reads` hash, only moving
//! forward, and loaded with the room.
//!
//! Deletes: `APPEND` purges a deleted message and its edits from the room's history and
//! from `chat:events`, keeping only who and when; loading puts a tombstone and text-less
//! edits in their places.
//!
//! Presence: each member is in its room's `present` hash (what a welcome lists) and in
//! its node's `members` hash, both kept by `APPEND`. Each node also refreshes an `alive`
//! key with a TTL. When a node's `alive` key expires (the node was killed or lost its
//! machine), a surviving node claims its `members` hash (an atomic `RENAME`, so only
//! one does) and announces those members' leaves. A node that shuts down gracefully
//! announces its members' leaves itself.
//!
//! Outage: while a node cannot reach Redis it closes its clients with 1013 ("try again
//! later"), refuses new ones with 503, and reports 503 on `/healthz`. Nothing is
//! delivered locally only, so no client sees an order the others do not. On reconnect
//! the node announces the leaves of the members it closed, unless another node already
//! has, and loads each room again when someone joins it.
//!
//! Files: this one, the broker task (connection, relay, liveness: heartbeat and
//! unregistering) and the rooms' [`Publisher`]; `append` (publishing: pipelines of
//! `APPEND` calls), `stream` (parsing stream entries into events), `presence` (reaping
//! the members of nodes gone silent), `keys` (every key's name), `scripts` (the Lua
//! scripts, in `.lua` files).
//!
//! Owns the connection to Redis; the rest of the server sees it only as a [`Cluster`]
//! and its [`Health`], made by [`start`]. May call: `room` (the seam it plugs into,
//! and the rooms it delivers to), `metrics`.

pub(crate) mod append;
mod keys;
mod presence;
mod scripts;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chat::backoff::Backoff;
use chat::v1::RoomName;
use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use self::append::{Appends, Keep};
use self::keys::{
    EVENTS, NODES, alive_key, history_key, members_key, meta_key, new_epoch, operations_key,
    present_key, reads_key, rules_key,
};
use self::presence::{reap, reap_dead_nodes};
use self::scripts::{APPEND, EPHEMERAL, SNAPSHOT};
use self::stream::{
    Batch, Entry, StreamEntry, StreamPosition, events_per_read, position, read_events,
    read_history_entry, read_present,
};
use crate::config::{CLUSTER_BACKLOG_BYTES, DELIVERY_GRACE};
use crate::metrics::Metrics;
use crate::room::backlog::{Backlog, cost};
use crate::room::directory::Directory;
use crate::room::{
    Cluster, Delivered, Ephemeral, Health, Link, Outgoing, Room, Snapshot, StoreError, StoredPage,
    now_millis,
};

/// The most events sent to Redis in one pipeline.
const MOST_PER_PIPELINE: usize = 1024;
/// How long a connection attempt or a command may take before Redis counts as lost.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read of `chat:events` waits for news.
const READ_WAIT: Duration = Duration::from_secs(1);

/// Why a connection to Redis ended.
#[derive(Debug, thiserror::Error)]
enum BrokerError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("lost the stream of events")]
    ReaderLost,
    #[error("this node's presence expired in Redis")]
    PresenceExpired,
    #[error("Redis answered what this node does not understand: {0}")]
    Unreadable(String),
}

/// What sessions hand the broker task, in the order they happened.
enum Command {
    /// An event for the room's log.
    Event(Outgoing),
    /// A frame outside the log, from a member of `link`.
    Ephemeral {
        link: Link,
        room: RoomName,
        what: Ephemeral,
    },
}

/// A room to load, and who waits for it.
struct Load {
    room: Arc<Room>,
    done: Option<oneshot::Sender<()>>,
}

/// A page of a room's history to read from Redis, and who waits for it.
struct PageRead {
    room: RoomName,
    first: u64,
    last: u64,
    done: oneshot::Sender<Result<StoredPage, BrokerError>>,
}

/// The rooms' and sessions' side of the broker: hands events over, in order, and loads
/// rooms.
pub struct Publisher {
    node: u64,
    health: watch::Receiver<Health>,
    // Unbounded because a leave is handed over from `Drop` and must never be lost; what
    // waits here is bounded in bytes by `has_room`, which sessions wait for before they
    // read on, and is dropped when Redis is lost, since those sessions are closed then.
    commands: mpsc::UnboundedSender<Command>,
    loads: mpsc::UnboundedSender<Load>,
    pages: mpsc::UnboundedSender<PageRead>,
    backlog: Arc<Backlog>,
}

impl Cluster for Publisher {
    fn node(&self) -> u64 {
        self.node
    }

    fn link(&self) -> Link {
        match *self.health.borrow() {
            Health::Up { connection } => Link::Connection(connection),
            Health::Down(_) => Link::Offline,
        }
    }

    fn publish(&self, outgoing: Outgoing) {
        self.backlog.add(cost(&outgoing.event));
        // Fails only once the broker task is gone, at the very end of a shutdown.
        let _ = self.commands.send(Command::Event(outgoing));
    }

    /// Goes through `chat:events` with the events, in the same pipelines (see
    /// `ephemeral.lua`), rather than through PUBLISH: other nodes then hear it in order
    /// with the room's events (a typing before the message that ends it, a read
    /// position after the event it reaches), on the connection that already reads the
    /// stream, and a run of them costs one script call. Not counted in the backlog:
    /// typing is counted at most once per 3 s per connection and a read position only
    /// when it moves, so they are few and small beside the events.
    fn ephemeral(&self, room: &RoomName, what: Ephemeral) {
        let link = self.link();
        if link == Link::Offline {
            return;
        }
        let command = Command::Ephemeral {
            link,
            room: room.clone(),
            what,
        };
        let _ = self.commands.send(command);
    }

    fn sync(&self, room: &Arc<Room>) {
        let load = Load {
            room: room.clone(),
            done: None,
        };
        let _ = self.loads.send(load);
    }

    fn load<'a>(&'a self, room: &'a Arc<Room>) -> BoxFuture<'a, bool> {
        Box::pin(self.load_room(room))
    }

    fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    fn page<'a>(
        &'a self,
        room: &'a RoomName,
        offsets: RangeInclusive<u64>,
    ) -> BoxFuture<'a, Result<StoredPage, StoreError>> {
        Box::pin(async move {
            let (done, read) = oneshot::channel();
            let page = PageRead {
                room: room.clone(),
                first: *offsets.start(),
                last: *offsets.end(),
                done,
            };
            self.pages
                .send(page)
                .map_err(|_| -> StoreError { "the broker has stopped".into() })?;
            match tokio::time::timeout(2 * REDIS_TIMEOUT, read).await {
                Ok(Ok(page)) => Ok(page?),
                Ok(Err(_)) => Err("Redis went away".into()),
                Err(_) => Err("Redis did not answer in time".into()),
            }
        })
    }
}

impl Publisher {
    /// Loads `room` from Redis unless it is loaded. `false` if Redis did not answer in
    /// time.
    async fn load_room(&self, room: &Arc<Room>) -> bool {
        if room.is_loaded() {
            return true;
        }
        let (done, loaded) = oneshot::channel();
        let load = Load {
            room: room.clone(),
            done: Some(done),
        };
        if self.loads.send(load).is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(2 * REDIS_TIMEOUT, loaded).await,
            Ok(Ok(()))
        )
    }
}

/// Room `room`'s events from `first` to `last` as its history stream keeps them, in
/// their latest state: the page's entries, and the later operations on them, which the
/// room's operations set names; purged entries come back as the tombstones and
/// text-less edits their delete kept the headers of.
async fn read_page(
    redis: &mut MultiplexedConnection,
    room: &RoomName,
    first: u64,
    last: u64,
) -> Result<StoredPage, BrokerError> {
    let key = history_key(room.as_str());
    let range = |from: u64, to: u64| {
        let mut call = redis::cmd("XRANGE");
        call.arg(&key)
            .arg(format!("0-{from}"))
            .arg(format!("0-{to}"));
        call
    };
    let entries: Vec<StreamEntry> = range(first, last).query_async(redis).await?;
    let later: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(operations_key(room.as_str()))
        .arg(first)
        .arg(last)
        .query_async(redis)
        .await?;
    let mut later: Vec<u64> = later
        .iter()
        .filter_map(|offset| offset.parse().ok())
        .filter(|&offset| offset > last)
        .collect();
    later.sort_unstable();
    let mut reads = redis::pipe();
    for &offset in &later {
        reads.add_command(range(offset, offset));
    }
    let later: Vec<Vec<StreamEntry>> = if later.is_empty() {
        Vec::new()
    } else {
        reads.query_async(redis).await?
    };
    let oldest: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(redis)
        .await?;
    let mut page = Vec::new();
    let mut operations = Vec::new();
    for (_, fields) in entries.iter().chain(later.iter().flatten()) {
        let ((_, event), purged) = read_history_entry(fields)?;
        page.extend(
            purged
                .into_iter()
                .map(|(_, stood)| stood)
                .filter(|stood| (first..=last).contains(&stood.offset)),
        );
        let target = chat::v2::target_of(&event.kind);
        if target.is_some_and(|target| (first..=last).contains(&target)) {
            operations.push(event.clone());
        }
        if (first..=last).contains(&event.offset) {
            page.push(event);
        }
    }
    page.sort_by_key(|event| event.offset);
    page.dedup_by_key(|event| event.offset);
    operations.sort_by_key(|event| event.offset);
    chat::v2::apply_all(&mut page, &operations);
    let oldest = match oldest.first() {
        Some((_, fields)) => read_history_entry(fields)?.0.1.offset,
        None => 0,
    };
    Ok(StoredPage {
        events: page,
        oldest,
    })
}

/// Where the broker task gets its work and reports its health.
pub struct Broker {
    url: String,
    node: u64,
    presence_ttl: Duration,
    /// What Redis keeps of each room.
    keep: Keep,
    /// Events read from `chat:events` in the first read of a connection.
    read_count: usize,
    /// How many connections to Redis this node has made: the current one's link.
    connection: u64,
    commands: mpsc::UnboundedReceiver<Command>,
    loads: mpsc::UnboundedReceiver<Load>,
    pages: mpsc::UnboundedReceiver<PageRead>,
    backlog: Arc<Backlog>,
    /// The part of the backlog that Redis has taken, as pipelines: the id of each one's
    /// last event in `chat:events`, and its bytes. Released once this node has read
    /// that far (or, if Redis trimmed them unread, past them); what was sent on a lost
    /// connection is released when the next one begins.
    in_redis: VecDeque<(StreamPosition, usize)>,
    health: watch::Sender<Health>,
    /// The rooms loaded since the last connection to Redis, which events go to.
    rooms: HashMap<RoomName, Weak<Room>>,
    /// The node's v2 connections by id: told of direct messages in rooms not loaded
    /// here.
    directory: Arc<Directory>,
}

/// The cluster a new node joins through the Redis at `url`, keeping what `keep` says
/// of each room and taking messages up to `max_message_bytes`: what the rooms hand events
/// to, the health that sessions and `/healthz` watch, and the task that keeps the node
/// connected until `stop` (to be spawned once the node is ready).
pub(crate) fn start(
    url: String,
    presence_ttl: Duration,
    keep: Keep,
    max_message_bytes: usize,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> (
    Arc<dyn Cluster>,
    watch::Receiver<Health>,
    BoxFuture<'static, ()>,
) {
    let (publisher, broker, health) = channel(
        url,
        presence_ttl,
        keep,
        max_message_bytes,
        directory,
        metrics.clone(),
    );
    (publisher, health, Box::pin(broker.run(metrics, stop)))
}

/// A broker for a new node: the rooms' publisher, the broker task's half, and the
/// health that sessions and `/healthz` watch.
fn channel(
    url: String,
    presence_ttl: Duration,
    keep: Keep,
    max_message_bytes: usize,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
) -> (Arc<Publisher>, Broker, watch::Receiver<Health>) {
    let node = fastrand::u64(1..);
    let (sender, commands) = mpsc::unbounded_channel();
    let (load_sender, loads) = mpsc::unbounded_channel();
    let (page_sender, pages) = mpsc::unbounded_channel();
    let (health, watch) = watch::channel(Health::Down("connecting to Redis".to_owned()));
    let backlog = Arc::new(Backlog::new(
        CLUSTER_BACKLOG_BYTES,
        metrics,
        Metrics::broker_backlog,
    ));
    let publisher = Publisher {
        node,
        health: watch.clone(),
        commands: sender,
        loads: load_sender,
        pages: page_sender,
        backlog: backlog.clone(),
    };
    let broker = Broker {
        url,
        node,
        presence_ttl,
        keep,
        read_count: events_per_read(max_message_bytes),
        connection: 0,
        commands,
        loads,
        pages,
        backlog,
        in_redis: VecDeque::new(),
        health,
        rooms: HashMap::new(),
        directory,
    };
    (Arc::new(publisher), broker, watch)
}

impl Broker {
    /// Keeps the node connected to Redis, reconnecting with backoff, until `stop`; then
    /// publishes what is left (the leaves of a graceful shutdown) and unregisters.
    async fn run(mut self, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            match self.connected(&metrics, &stop, &mut failures).await {
                Ok(()) => return,
                Err(error) => {
                    let reason = error.to_string();
                    if failures == 0 {
                        warn!(%reason, "lost Redis; closing this node's clients and reconnecting");
                    }
                    metrics.broker_health(false);
                    self.health.send_replace(Health::Down(reason));
                    failures += 1;
                    metrics.broker_reconnect();
                    let wait = Backoff::CLUSTER.wait(failures);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One connection to Redis, from registering to losing it (`Err`) or stopping.
    async fn connected(
        &mut self,
        metrics: &Metrics,
        stop: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), BrokerError> {
        // What the last connection sent and did not read back is not coming.
        let lost: usize = self.in_redis.drain(..).map(|(_, bytes)| bytes).sum();
        self.backlog.release(lost);
        let (mut redis, reader) = self.connect().await?;
        self.register(&mut redis).await?;
        // Where this connection starts reading: every room loaded from here on is
        // loaded after it, so what comes after it either is in the room's snapshot or
        // follows it.
        let newest: Vec<(String, Vec<String>)> = redis.xrevrange_count(EVENTS, "+", "-", 1).await?;
        let start = newest
            .first()
            .map_or("0-0".to_owned(), |(id, _)| id.clone());
        // While this node was away, its rooms may have missed events: each is loaded
        // again when someone joins it.
        for room in self.rooms.drain().filter_map(|(_, room)| room.upgrade()) {
            room.unload();
        }
        let (batches, received) = mpsc::channel(1);
        let _reading = AbortOnDropHandle::new(tokio::spawn(read_events(
            reader,
            start,
            self.read_count,
            batches,
        )));
        *failures = 0;
        self.connection += 1;
        metrics.broker_health(true);
        self.health.send_replace(Health::Up {
            connection: self.connection,
        });
        info!(node = %format!("{:016x}", self.node), "connected to Redis");
        self.relay(&mut redis, received, metrics, stop).await
    }

    /// Two connections: one for commands, one that waits on `chat:events`.
    async fn connect(&self) -> Result<(MultiplexedConnection, MultiplexedConnection), BrokerError> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let mut redis = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let reader = client
            .get_multiplexed_async_connection_with_config(
                &config.set_response_timeout(READ_WAIT + REDIS_TIMEOUT),
            )
            .await?;
        for script in [APPEND, SNAPSHOT, EPHEMERAL] {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script)
                .query_async::<String>(&mut redis)
                .await?;
        }
        Ok((redis, reader))
    }

    /// Announces the leaves of the last connection's members (unless a survivor already
    /// did), and says this node is alive.
    async fn register(&self, redis: &mut MultiplexedConnection) -> Result<(), BrokerError> {
        // Members of the last link were closed when it ended; what they still queue is
        // dropped by `send`.
        reap(redis, self.node, self.node, self.keep).await?;
        redis::pipe()
            .sadd(NODES, self.node)
            .ignore()
            .set_options(alive_key(self.node), 1, self.alive_options())
            .ignore()
            .query_async::<()>(redis)
            .await?;
        Ok(())
    }

    fn alive_options(&self) -> SetOptions {
        let ttl = self.presence_ttl.as_millis() as u64;
        SetOptions::default().with_expiration(SetExpiry::PX(ttl))
    }

    /// Relays events both ways, loads rooms, and keeps this node's presence alive,
    /// until the connection is lost or `stop`.
    async fn relay(
        &mut self,
        redis: &mut MultiplexedConnection,
        mut batches: mpsc::Receiver<Result<Batch, BrokerError>>,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let mut heartbeat = tokio::time::interval(self.presence_ttl / 3);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                batch = batches.recv() => {
                    let batch = batch.ok_or(BrokerError::ReaderLost)??;
                    self.deliver(redis, batch, metrics).await?;
                }
                command = self.commands.recv() => {
                    let Some(first) = command else { return Ok(()) };
                    self.send(redis, first, metrics).await?;
                }
                Some(load) = self.loads.recv() => {
                    if !load.room.is_loaded() {
                        self.load(redis, &load.room).await?;
                    }
                    if let Some(done) = load.done {
                        let _ = done.send(());
                    }
                }
                Some(page) = self.pages.recv() => {
                    let read = read_page(redis, &page.room, page.first, page.last).await;
                    let _ = page.done.send(read);
                }
                _ = heartbeat.tick() => self.heartbeat(redis).await?,
                () = stop.cancelled() => return self.unregister(redis, metrics).await,
            }
        }
    }

    /// Fans out a batch read from `chat:events`, each event in its room if the room is
    /// loaded here; a room that missed events is loaded again, which fans them out.
    async fn deliver(
        &mut self,
        redis: &mut MultiplexedConnection,
        batch: Batch,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        // A batch holds up to `READ_BYTES`, several outboxes' worth: each event waits
        // until its room's members have room for it, as the journal's fan-out does.
        let deadline = tokio::time::Instant::now() + DELIVERY_GRACE;
        for entry in batch.entries {
            match entry {
                Entry::Event {
                    room,
                    from,
                    epoch,
                    event,
                } => {
                    let loaded = self.rooms.get(&room).and_then(Weak::upgrade);
                    let Some(room) = loaded.filter(|room| room.is_loaded()) else {
                        // Nobody is in the room here, but its two ids may be elsewhere.
                        self.directory.tell(&room, &event);
                        continue;
                    };
                    room.room_to_deliver(deadline).await;
                    let lag = Duration::from_millis(now_millis().saturating_sub(event.ts));
                    metrics.broker_received(lag);
                    if room.deliver(from, &epoch, event) == Delivered::Behind {
                        info!(room = %room.name().as_str(), "missed events; loading the room again");
                        self.load(redis, &room).await?;
                    }
                }
                // This node's own members were told when it was said.
                Entry::Ephemeral { room, node, what } if node != self.node => {
                    let loaded = self.rooms.get(&room).and_then(Weak::upgrade);
                    if let Some(room) = loaded.filter(|room| room.is_loaded()) {
                        room.hear(&what, None, None);
                    }
                }
                Entry::Ephemeral { .. } => {}
            }
        }
        if let Some(read_to) = batch.read_to {
            while let Some(&(last, bytes)) = self.in_redis.front() {
                if last > read_to {
                    break;
                }
                self.in_redis.pop_front();
                self.backlog.release(bytes);
            }
        }
        Ok(())
    }

    /// Takes a room's state from Redis, and delivers its events from now on.
    async fn load(
        &mut self,
        redis: &mut MultiplexedConnection,
        room: &Arc<Room>,
    ) -> Result<(), BrokerError> {
        let name = room.name().as_str();
        type Reply = (String, u64, Vec<StreamEntry>, Vec<String>, Vec<String>);
        let (epoch, offset, newest_first, present, reads): Reply = redis::Script::new(SNAPSHOT)
            .key(meta_key(name))
            .key(history_key(name))
            .key(present_key(name))
            .key(reads_key(name))
            .arg(new_epoch())
            .arg(self.keep.events)
            .arg(room.memory_bytes())
            .invoke_async(redis)
            .await?;
        // Read after the snapshot: a change newer than it is applied again, in order,
        // as its event is delivered, and comes to the same.
        let rules: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(rules_key(name))
            .query_async(redis)
            .await?;
        let (mut events, mut purged) = (Vec::new(), Vec::new());
        for (_, fields) in newest_first.iter().rev() {
            let (event, stood) = read_history_entry(fields)?;
            events.push(event);
            purged.extend(stood);
        }
        // What a delete purged goes back in its place, without its text, as far as the
        // history read reaches: the room's history has no gaps. (The room would make
        // the tombstone from the delete alone; the edits it could not.)
        let oldest = events.first().map_or(u64::MAX, |(_, event)| event.offset);
        events.extend(
            purged
                .into_iter()
                .filter(|(_, event)| event.offset > oldest),
        );
        events.sort_by_key(|(_, event)| event.offset);
        // An event from a Redis that numbered it and then lost it cannot be newer than
        // the room's offset; none is kept, but none is trusted past it either.
        events.retain(|(_, event)| event.offset <= offset);
        let present = present
            .chunks_exact(2)
            .map(|pair| read_present(&pair[0], &pair[1]))
            .collect::<Result<Vec<_>, _>>()?;
        let reads = reads
            .chunks_exact(2)
            .map(|pair| {
                let offset = pair[1].parse::<u64>();
                let offset =
                    offset.map_err(|_| BrokerError::Unreadable(format!("a read {pair:?}")));
                Ok((pair[0].clone(), offset?))
            })
            .collect::<Result<HashMap<_, _>, BrokerError>>()?;
        // A room loaded here that fell behind catches up on what it missed the way a
        // batch is delivered: each event once its members have room for it. (Install
        // then finds nothing left to fan out.)
        if let Some(had) = room.offset_in(&epoch) {
            let deadline = tokio::time::Instant::now() + DELIVERY_GRACE;
            for (from, event) in events.iter().filter(|(_, event)| event.offset > had) {
                room.room_to_deliver(deadline).await;
                if room.deliver(*from, &epoch, event.clone()) == Delivered::NotLoaded {
                    break;
                }
            }
        }
        room.install(Snapshot {
            epoch,
            offset,
            events,
            present,
            reads,
            rules,
        });
        self.rooms.insert(room.name().clone(), Arc::downgrade(room));
        Ok(())
    }

    /// Refreshes this node's `alive` key, reaps the nodes whose key has expired, and
    /// forgets the rooms this node no longer has.
    async fn heartbeat(&mut self, redis: &mut MultiplexedConnection) -> Result<(), BrokerError> {
        let only_if_alive = self.alive_options().conditional_set(ExistenceCheck::XX);
        let refreshed: Option<String> = redis
            .set_options(alive_key(self.node), 1, only_if_alive)
            .await?;
        if refreshed.is_none() {
            return Err(BrokerError::PresenceExpired);
        }
        self.rooms.retain(|_, room| room.strong_count() > 0);
        reap_dead_nodes(redis, self.node, self.keep).await
    }

    /// Every session has ended: sends their leaves, then unregisters.
    async fn unregister(
        &mut self,
        redis: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        while let Ok(command) = self.commands.try_recv() {
            self.send(redis, command, metrics).await?;
        }
        redis::pipe()
            .del(alive_key(self.node))
            .ignore()
            .del(members_key(self.node))
            .ignore()
            .srem(NODES, self.node)
            .ignore()
            .query_async::<()>(redis)
            .await?;
        Ok(())
    }

    /// Sends `first` and whatever else is queued, in order, in one pipeline.
    async fn send(
        &mut self,
        redis: &mut MultiplexedConnection,
        first: Command,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        let mut appends = Appends::new(self.keep);
        let (mut count, mut calls, mut bytes, mut fresh) = (0, 0, 0, 0);
        let mut next = Some(first);
        let current = Link::Connection(self.connection);
        while let Some(command) = next.take() {
            match command {
                Command::Event(outgoing) => {
                    let cost = cost(&outgoing.event);
                    bytes += cost;
                    if outgoing.link == current {
                        fresh += cost;
                        appends.push((self.node, outgoing.key), &outgoing.room, &outgoing.event);
                        count += 1;
                        calls += 1;
                    }
                }
                Command::Ephemeral { link, room, what } => {
                    if link == current {
                        appends.push_ephemeral(self.node, &room, &what);
                        calls += 1;
                    }
                }
            }
            if calls < MOST_PER_PIPELINE {
                next = self.commands.try_recv().ok();
            }
        }
        // Those from an ended connection are not sent, and the sessions they are from
        // were closed with it; the rest are released once they are read back.
        self.backlog.release(bytes - fresh);
        if calls == 0 {
            return Ok(());
        }
        let sent: Result<Vec<String>, _> = appends.into_pipeline().query_async(redis).await;
        // The last id added to chat:events: a run of ephemeral frames may add none.
        let last = sent.map_err(BrokerError::from).and_then(|ids| {
            let last = ids.iter().rev().find(|id| !id.is_empty());
            match last.map(|id| position(id)) {
                Some(Some(last)) => Ok(Some(last)),
                None if count == 0 => Ok(None),
                _ => Err(BrokerError::Unreadable(format!("event ids {ids:?}"))),
            }
        });
        match last {
            Ok(Some(last)) => self.in_redis.push_back((last, fresh)),
            Ok(None) => {}
            Err(error) => {
                // Lost with the connection, along with the sessions that sent them
                // (closed with it): counted on, they would hold the bound down for good.
                self.backlog.release(fresh);
                return Err(error);
            }
        }
        metrics.broker_published(count);
        Ok(())
    }
}
