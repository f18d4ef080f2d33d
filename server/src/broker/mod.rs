//! Clustering through Redis: several nodes share every room, with one order, one offset
//! space and one history.
//!
//! Numbering: every event goes through one Lua script (`APPEND`), which takes the room's
//! next offset from its `meta` hash, adds the event to the room's `history` stream
//! (entry id `0-<offset>`, capped at `--history` events) and to its partition's stream,
//! all atomically. So every node that reads the partition sees each of its rooms'
//! events in offset order, with the same offsets, and can serve welcomes, history and
//! resume from what it has read, whichever node the client was on before. The room's
//! epoch lives in `meta` too: a Redis that lost its data makes a new one, so resuming
//! clients learn that their history is gone. (After Centrifugo's Redis engine, which
//! keeps a stream and an offset per channel; a stream instead of pub/sub lets a node
//! read only as fast as it fans out.)
//!
//! Partitions: rooms are spread by a stable hash of their name over
//! `--redis-partitions` partitions (16 unless set; every node of a cluster must agree,
//! which `chat:partitions` checks), each with its own stream, `chat:{p7}:events`. Every
//! key of a room, its partition's stream and each node's members there share the hash
//! tag `{p7}`, so that one `APPEND` touches one Redis Cluster slot. A node reads only
//! the partitions of the rooms it has members in (interest-based delivery, as
//! Centrifugo subscribes a node only to the channels its clients use): it starts
//! reading one when it loads its first room there, and stops, forgetting the state of
//! the partition's rooms, at the first heartbeat after its last member there left. Each
//! read partition has a connection of its own, since a blocking read holds its
//! connection (and on a Redis Cluster, a read of several streams must be in one slot).
//! Direct-message rooms all go to one partition, which every node with members reads,
//! so that a message there is told to its two ids wherever they are.
//!
//! Loading: a node loads a room (`SNAPSHOT`: its epoch, offset, history and who is in
//! it) when its first client there joins, in the same task that fans out what the
//! partitions' readers read. `SNAPSHOT` also answers the id of the newest entry of the
//! room's partition stream, taken atomically with the rest. If the node does not read
//! the partition yet, it starts reading it after that id: what the room gains after the
//! snapshot comes after it in the stream. If it does, its reader is already at or before
//! that id (it started before, at an earlier snapshot), so what it reads either is in
//! the snapshot (and is skipped by its offset) or comes after it. Either way, per
//! partition, as with one stream before: nothing missed, nothing twice.
//!
//! Bounds: what sessions hand over is counted in bytes until it comes back through its
//! partition's stream and is fanned out (or at once, for a partition this node does not
//! read), and sessions stop reading from their clients past [`CLUSTER_BACKLOG_BYTES`],
//! so that a node whose fan-out falls behind slows its senders (as a single node does,
//! where a sender fans out its own messages) instead of letting Redis queue what it
//! cannot deliver; each stream is read a batch at a time, the next one only once the
//! last is fanned out, so nothing piles up inside the node either.
//!
//! Outside the log: typing and read positions (`Cluster::ephemeral`) go into the room's
//! partition stream too, without an offset, so that other nodes hear them in order with
//! the events; read positions are also kept in the room's `reads` hash, only moving
//! forward, and loaded with the room.
//!
//! Deletes: `APPEND` purges a deleted message and its edits from the room's history and
//! from its partition's stream, keeping only who and when; loading puts a tombstone and
//! text-less edits in their places.
//!
//! Presence: each member is in its room's `present` hash (what a welcome lists) and in
//! its node's `members` hash of the room's partition, both kept by `APPEND` (no key
//! outside the room's slot). Each node also refreshes an `alive` key with a TTL in each
//! partition it reads, in that partition's slot. When a node's `alive` key in a
//! partition expires (the node was killed or lost its machine), a surviving reader of
//! the partition claims its `members` hash there (`claim.lua`, atomic in the
//! partition's slot, so only one does) and announces those members' leaves. A node
//! that shuts down gracefully announces its members' leaves itself.
//!
//! Outage: while a node cannot reach Redis it closes its clients with 1013 ("try again
//! later"), refuses new ones with 503, and reports 503 on `/healthz`. Nothing is
//! delivered locally only, so no client sees an order the others do not. On reconnect
//! the node announces the leaves of the members it closed, unless another node already
//! has, and loads each room again when someone joins it.
//!
//! Failover: a primary killed is replaced by its replica (promoted by the Redis Cluster,
//! or by Sentinel), which may lack what the primary numbered last, since replication is
//! asynchronous, and which clients may have seen. So the first script to touch a room
//! on a promoted replica gives the room a new epoch, keeping its history and offset
//! (`take_epoch.lua`): clients resuming with the old epoch get `recovered: false` and
//! the history as the new primary has it, never another event under an offset they
//! saw. The nodes lose the dead primary's partitions' readers meanwhile, so they close
//! their clients (1013) as in any outage, and load each room again; a room loaded here
//! that finds a new epoch under its members ends the connection the same way.
//! (`WAIT` after each append would not close this window: the partitions' readers see
//! an event on the primary before any replica has it.)
//!
//! Files: this one, the broker task (connection, relay, the partitions read, liveness:
//! heartbeat and unregistering) and the rooms' [`Publisher`]; `append` (publishing:
//! pipelines of `APPEND` calls), `stream` (reading partitions, parsing stream entries
//! into events), `presence` (reaping the members of nodes gone silent), `keys` (every
//! key's name and the partitions), `connection` (one Redis, `redis://`, or a Redis
//! Cluster, `redis+cluster://`, behind one connection type; on a cluster each pipeline
//! stays in one partition's slot), `scripts` (the Lua scripts, in `.lua` files).
//!
//! Owns the connection to Redis; the rest of the server sees it only as a [`Cluster`]
//! and its [`Health`], made by [`start`]. May call: `room` (the seam it plugs into,
//! and the rooms it delivers to), `metrics`.

pub(crate) mod append;
mod connection;
pub(crate) mod keys;
mod presence;
mod scripts;
mod stream;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chat::backoff::Backoff;
use chat::v1::RoomName;
use futures_util::future::BoxFuture;
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use self::append::{Appends, Keep};
use self::connection::{Connection, Redis};
use self::keys::{
    DIRECT_PARTITION, PARTITIONS, RoomKeys, alive_key, events_key, members_key, new_epoch,
    nodes_key,
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
/// How long one read of a partition's stream waits for news.
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
    #[error("room {0} has a new epoch in Redis under its members here (a failover)")]
    EpochChanged(String),
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

    /// Goes through the room's partition stream with the events, in the same pipelines (see
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
    redis: &mut Connection,
    room: &RoomName,
    first: u64,
    last: u64,
    partitions: u16,
) -> Result<StoredPage, BrokerError> {
    let keys = RoomKeys::new(room.as_str(), partitions);
    let key = keys.history;
    let range = |from: u64, to: u64| {
        let mut call = redis::cmd("XRANGE");
        call.arg(&key)
            .arg(format!("0-{from}"))
            .arg(format!("0-{to}"));
        call
    };
    let entries: Vec<StreamEntry> = range(first, last).query_async(redis).await?;
    let later: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.operations)
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
    /// The Redis `url` names, once a connection has parsed it.
    target: Option<Redis>,
    node: u64,
    /// How many partitions the cluster's rooms are spread over.
    partitions: u16,
    presence_ttl: Duration,
    /// What Redis keeps of each room.
    keep: Keep,
    /// Events read from a partition's stream in the first read of its reader.
    read_count: usize,
    /// How many connections to Redis this node has made: the current one's link.
    connection: u64,
    commands: mpsc::UnboundedReceiver<Command>,
    loads: mpsc::UnboundedReceiver<Load>,
    pages: mpsc::UnboundedReceiver<PageRead>,
    backlog: Arc<Backlog>,
    /// The part of the backlog that Redis has taken, by partition, as pipelines: the
    /// id of each one's last event in the partition's stream, and its bytes. Released
    /// once this node has read that far (or, if Redis trimmed them unread, past them),
    /// or when it stops reading the partition; what was sent on a lost connection is
    /// released when the next one begins.
    in_redis: HashMap<u16, VecDeque<(StreamPosition, usize)>>,
    /// The partitions this connection reads, each by a task of its own.
    readers: HashMap<u16, AbortOnDropHandle<()>>,
    /// Where the readers hand their batches (this connection's).
    batches: Option<mpsc::Sender<Result<Batch, BrokerError>>>,
    health: watch::Sender<Health>,
    /// The rooms loaded since the last connection to Redis, which events go to.
    rooms: HashMap<RoomName, Weak<Room>>,
    /// The node's v2 connections by id: told of direct messages in rooms not loaded
    /// here.
    directory: Arc<Directory>,
}

/// Checks that `url` names a Redis, a Redis Cluster or the sentinels of a primary, so
/// that a mistyped `--redis-url` stops the server at once instead of leaving it
/// unhealthy, retrying what can never work.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    Redis::parse(url).map(drop).map_err(|error| {
        format!(
            "--redis-url {url}: {error}; expected redis://host:port[/db], \
             redis+cluster://host:port[,host:port...] or \
             redis+sentinel://host:port[,host:port...]/<primary's name>"
        )
    })
}

/// The cluster a new node joins through the Redis at `url`, keeping what `keep` says
/// of each room and taking messages up to `max_message_bytes`: what the rooms hand events
/// to, the health that sessions and `/healthz` watch, and the task that keeps the node
/// connected until `stop` (to be spawned once the node is ready).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    url: String,
    partitions: u16,
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
        partitions,
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
    partitions: u16,
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
        target: None,
        node,
        partitions,
        presence_ttl,
        keep,
        read_count: events_per_read(max_message_bytes),
        connection: 0,
        commands,
        loads,
        pages,
        backlog,
        in_redis: HashMap::new(),
        readers: HashMap::new(),
        batches: None,
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
        // Each new reason is logged once: a wrong partition count found once Redis is
        // reachable again is not hidden behind the refused connections before it.
        let mut last_logged = String::new();
        loop {
            match self.connected(&metrics, &stop, &mut failures).await {
                Ok(()) => return,
                Err(error) => {
                    let reason = error.to_string();
                    if failures == 0 {
                        warn!(%reason, "lost Redis; closing this node's clients and reconnecting");
                    } else if reason != last_logged {
                        warn!(%reason, "still cannot use Redis; retrying");
                    }
                    last_logged.clone_from(&reason);
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
        let lost: usize = self
            .in_redis
            .drain()
            .flat_map(|(_, sent)| sent)
            .map(|(_, bytes)| bytes)
            .sum();
        self.backlog.release(lost);
        // The last connection's readers; each partition is read again from the snapshot
        // of the first room loaded there.
        self.readers.clear();
        metrics.broker_partitions(0);
        let mut redis = self.connect().await?;
        self.check_partitions(&mut redis).await?;
        self.register(&mut redis).await?;
        // While this node was away, its rooms may have missed events: each is loaded
        // again when someone joins it.
        for room in self.rooms.drain().filter_map(|(_, room)| room.upgrade()) {
            room.unload();
        }
        let (batches, received) = mpsc::channel(1);
        self.batches = Some(batches);
        *failures = 0;
        self.connection += 1;
        metrics.broker_health(true);
        self.health.send_replace(Health::Up {
            connection: self.connection,
        });
        info!(node = %format!("{:016x}", self.node), "connected to Redis");
        self.relay(&mut redis, received, metrics, stop).await
    }

    /// The connection for commands (each partition read has its own: see
    /// [`Broker::read_partition`]).
    async fn connect(&mut self) -> Result<Connection, BrokerError> {
        let target = Redis::parse(&self.url)?;
        let mut redis = target.connect(REDIS_TIMEOUT, REDIS_TIMEOUT).await?;
        self.target = Some(target);
        // On a Redis Cluster, loaded on every node of it (the crate routes SCRIPT LOAD
        // to all), so that pipelines can call them by hash on any primary.
        for script in [APPEND, SNAPSHOT, EPHEMERAL] {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script)
                .query_async::<redis::Value>(&mut redis)
                .await?;
        }
        Ok(redis)
    }

    /// Runs the pipeline of `Appends` whose calls are in `partitions`: at once on one
    /// Redis; on a Redis Cluster, where a pipeline must stay in one slot, as one
    /// pipeline per partition (each partition's calls in their order, which is all that
    /// order means: a room is in one partition). Answers each call's reply in order.
    async fn query_appends(
        &self,
        redis: &mut Connection,
        pipe: redis::Pipeline,
        partitions: &[u16],
    ) -> redis::RedisResult<Vec<String>> {
        if !self.target.as_ref().is_some_and(Redis::is_cluster) {
            return pipe.query_async(redis).await;
        }
        let calls: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
        let mut replies = vec![String::new(); calls.len()];
        let mut by_partition: HashMap<u16, Vec<usize>> = HashMap::new();
        for (at, partition) in partitions.iter().enumerate() {
            by_partition.entry(*partition).or_default().push(at);
        }
        for places in by_partition.into_values() {
            let mut one = redis::pipe();
            for &at in &places {
                one.add_command(calls[at].clone());
            }
            let answered: Vec<String> = one.query_async(redis).await?;
            for (at, reply) in places.into_iter().zip(answered) {
                replies[at] = reply;
            }
        }
        Ok(replies)
    }

    /// Records this node's partition count in Redis if none is, and refuses to go on
    /// with another: nodes that disagree would keep one room under two names.
    async fn check_partitions(&self, redis: &mut Connection) -> Result<(), BrokerError> {
        let only_if_new = SetOptions::default().conditional_set(ExistenceCheck::NX);
        let _: Option<String> = redis
            .set_options(PARTITIONS, self.partitions, only_if_new)
            .await?;
        let recorded: Option<u16> = redis.get(PARTITIONS).await?;
        match recorded {
            Some(recorded) if recorded == self.partitions => Ok(()),
            Some(recorded) => Err(BrokerError::Unreadable(format!(
                "the cluster's rooms are spread over {recorded} partitions ({PARTITIONS}), \
                 and this node has --redis-partitions {}: every node must have the same",
                self.partitions
            ))),
            None => Err(BrokerError::Unreadable(format!(
                "{PARTITIONS} is not kept in Redis"
            ))),
        }
    }

    /// Starts reading `partition` after stream id `after`, unless this connection
    /// already reads it.
    fn read_partition(&mut self, partition: u16, after: String, metrics: &Metrics) {
        let Some(batches) = self.batches.clone() else {
            return;
        };
        if self.readers.contains_key(&partition) {
            return;
        }
        // Parsed when the connection was made.
        let Some(target) = self.target.clone() else {
            return;
        };
        let reader = tokio::spawn(read_events(
            target,
            partition,
            after,
            self.read_count,
            batches,
        ));
        self.readers
            .insert(partition, AbortOnDropHandle::new(reader));
        metrics.broker_partitions(self.readers.len());
    }

    /// Stops reading the partitions where this node has nobody left (but the
    /// direct-message partition while it reads any other), forgetting the state of
    /// their rooms, which a join loads again. Rooms nobody is in stay loaded in a
    /// partition still read.
    fn drop_partitions(&mut self, metrics: &Metrics) {
        let partitions = self.partitions;
        self.rooms
            .retain(|_, room| room.upgrade().is_some_and(|room| room.is_loaded()));
        let rooms: Vec<(u16, Arc<Room>)> = self
            .rooms
            .iter()
            .filter_map(|(name, room)| {
                let room = room.upgrade()?;
                Some((keys::partition_of(name.as_str(), partitions), room))
            })
            .collect();
        let mut wanted: BTreeSet<u16> = rooms
            .iter()
            .filter(|(_, room)| room.len() > 0)
            .map(|(partition, _)| *partition)
            .collect();
        if !wanted.is_empty() {
            wanted.insert(DIRECT_PARTITION);
        }
        for (partition, room) in &rooms {
            if wanted.contains(partition) {
                continue;
            }
            if room.unload_if_empty() {
                self.rooms.remove(room.name());
            } else {
                // Someone joined since: the partition stays read, and with it the
                // direct-message one.
                wanted.insert(*partition);
                wanted.insert(DIRECT_PARTITION);
            }
        }
        let before = self.readers.len();
        self.readers
            .retain(|partition, _| wanted.contains(partition));
        let dropped: Vec<u16> = self
            .in_redis
            .keys()
            .filter(|partition| !self.readers.contains_key(partition))
            .copied()
            .collect();
        for partition in dropped {
            if let Some(sent) = self.in_redis.remove(&partition) {
                self.backlog
                    .release(sent.into_iter().map(|(_, bytes)| bytes).sum());
            }
        }
        if self.readers.len() != before {
            metrics.broker_partitions(self.readers.len());
        }
    }

    /// Announces the leaves of the last connection's members (unless a survivor already
    /// did). The node says it is alive in each partition as it starts to read it.
    async fn register(&self, redis: &mut Connection) -> Result<(), BrokerError> {
        // Members of the last link were closed when it ended; what they still queue is
        // dropped by `send`.
        reap(redis, self.node, self.node, self.keep, self.partitions).await?;
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
        redis: &mut Connection,
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
                        self.load(redis, &load.room, metrics).await?;
                    }
                    if let Some(done) = load.done {
                        let _ = done.send(());
                    }
                }
                Some(page) = self.pages.recv() => {
                    let read =
                        read_page(redis, &page.room, page.first, page.last, self.partitions).await;
                    let _ = page.done.send(read);
                }
                _ = heartbeat.tick() => self.heartbeat(redis, metrics).await?,
                () = stop.cancelled() => return self.unregister(redis, metrics).await,
            }
        }
    }

    /// Fans out a batch read from a partition's stream, each event in its room if the room is
    /// loaded here; a room that missed events is loaded again, which fans them out.
    async fn deliver(
        &mut self,
        redis: &mut Connection,
        batch: Batch,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        // A batch holds up to `READ_BYTES`, several outboxes' worth: each event waits
        // until its room's members have room for it, as the journal's fan-out does.
        let deadline = tokio::time::Instant::now() + DELIVERY_GRACE;
        metrics.broker_read(batch.entries.len());
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
                        self.load(redis, &room, metrics).await?;
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
        let sent = self.in_redis.get_mut(&batch.partition);
        if let (Some(read_to), Some(sent)) = (batch.read_to, sent) {
            while let Some(&(last, bytes)) = sent.front() {
                if last > read_to {
                    break;
                }
                sent.pop_front();
                self.backlog.release(bytes);
            }
        }
        Ok(())
    }

    /// Takes a room's state from Redis, and delivers its events from now on, reading
    /// its partition from the snapshot on if this node does not yet.
    async fn load(
        &mut self,
        redis: &mut Connection,
        room: &Arc<Room>,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        let name = room.name().as_str();
        let keys = RoomKeys::new(name, self.partitions);
        if !self.readers.contains_key(&keys.partition) {
            self.enter_partition(redis, keys.partition).await?;
        }
        type Reply = (
            String,
            u64,
            Vec<StreamEntry>,
            Vec<String>,
            Vec<String>,
            String,
        );
        let (epoch, offset, newest_first, present, reads, read_from): Reply =
            redis::Script::new(SNAPSHOT)
                .key(&keys.meta)
                .key(&keys.history)
                .key(&keys.present)
                .key(&keys.reads)
                .key(&keys.events)
                .arg(new_epoch())
                .arg(self.keep.events)
                .arg(room.memory_bytes())
                .invoke_async(redis)
                .await?;
        // Read after the snapshot: a change newer than it is applied again, in order,
        // as its event is delivered, and comes to the same.
        let rules: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&keys.rules)
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
        // A new epoch under members who are here: Redis failed over (see
        // `take_epoch.lua`) while this node's connections carried on. Its members have
        // seen offsets that now name other events; closing them all, as for any loss of
        // Redis, makes them resume and learn of the new epoch.
        if room.is_loaded() && room.len() > 0 && room.offset_in(&epoch).is_none() {
            return Err(BrokerError::EpochChanged(name.to_owned()));
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
        self.read_partition(keys.partition, read_from, metrics);
        if !self.readers.contains_key(&DIRECT_PARTITION) {
            self.enter_partition(redis, DIRECT_PARTITION).await?;
            // Only to tell of direct messages, which are hints: read from now on.
            let newest: Vec<(String, Vec<String>)> = redis
                .xrevrange_count(events_key(DIRECT_PARTITION), "+", "-", 1)
                .await?;
            let after = newest
                .first()
                .map_or("0-0".to_owned(), |(id, _)| id.clone());
            self.read_partition(DIRECT_PARTITION, after, metrics);
        }
        Ok(())
    }

    /// Says this node is alive in `partition`, which it is about to read, registers it
    /// there, and reaps the dead nodes registered there: nobody may have read it since
    /// they died, and a snapshot taken now would list their members as present. Alive
    /// first: a node is claimed only when its key is gone (`claim.lua`).
    async fn enter_partition(
        &mut self,
        redis: &mut Connection,
        partition: u16,
    ) -> Result<(), BrokerError> {
        let _: () = redis
            .set_options(alive_key(partition, self.node), 1, self.alive_options())
            .await?;
        let _: () = redis.sadd(nodes_key(partition), self.node).await?;
        let (me, keep, partitions) = (self.node, self.keep, self.partitions);
        reap_dead_nodes(redis, me, keep, partitions, [partition]).await
    }

    /// Forgets the rooms this node no longer has members in, and their partitions;
    /// refreshes its `alive` key in each partition it still reads, and reaps the nodes
    /// whose key there has expired. Only those partitions' primaries are asked: a
    /// primary failing over holds up only the nodes that read it. A partition no longer
    /// read keeps its key until it expires, and its readers then take this node off
    /// its registry; it had no members there.
    async fn heartbeat(
        &mut self,
        redis: &mut Connection,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        self.drop_partitions(metrics);
        let reading: Vec<u16> = self.readers.keys().copied().collect();
        let only_if_alive = self.alive_options().conditional_set(ExistenceCheck::XX);
        for &partition in &reading {
            let refreshed: Option<String> = redis
                .set_options(alive_key(partition, self.node), 1, only_if_alive)
                .await?;
            if refreshed.is_none() {
                return Err(BrokerError::PresenceExpired);
            }
        }
        reap_dead_nodes(redis, self.node, self.keep, self.partitions, reading).await
    }

    /// Every session has ended: sends their leaves, then unregisters.
    async fn unregister(
        &mut self,
        redis: &mut Connection,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        while let Ok(command) = self.commands.try_recv() {
            self.send(redis, command, metrics).await?;
        }
        // One command each, not a pipeline: on a Redis Cluster the keys are in many
        // slots.
        for partition in 0..self.partitions {
            let _: () = redis.del(alive_key(partition, self.node)).await?;
            let _: () = redis.del(members_key(partition, self.node)).await?;
            let _: () = redis.srem(nodes_key(partition), self.node).await?;
        }
        Ok(())
    }

    /// Sends `first` and whatever else is queued, in order, in one pipeline.
    async fn send(
        &mut self,
        redis: &mut Connection,
        first: Command,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        let mut appends = Appends::new(self.keep, self.partitions);
        let (mut count, mut calls, mut bytes, mut fresh) = (0, 0, 0, 0);
        // What the events of each partition weigh in the backlog.
        let mut fresh_by_partition: HashMap<u16, usize> = HashMap::new();
        let mut next = Some(first);
        let current = Link::Connection(self.connection);
        while let Some(command) = next.take() {
            match command {
                Command::Event(outgoing) => {
                    let cost = cost(&outgoing.event);
                    bytes += cost;
                    if outgoing.link == current {
                        fresh += cost;
                        let partition = keys::partition_of(outgoing.room.as_str(), self.partitions);
                        *fresh_by_partition.entry(partition).or_default() += cost;
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
        let (pipe, partitions) = appends.into_pipeline();
        let sent = self.query_appends(redis, pipe, &partitions).await;
        // The last id added to each partition's stream: a run of ephemeral frames may
        // add none, but a run of events always adds some.
        let last = sent.map_err(BrokerError::from).and_then(|ids| {
            let mut last: HashMap<u16, StreamPosition> = HashMap::new();
            for (id, partition) in ids.iter().zip(&partitions) {
                if id.is_empty() {
                    continue;
                }
                let position = position(id)
                    .ok_or_else(|| BrokerError::Unreadable(format!("event id {id:?}")))?;
                last.insert(*partition, position);
            }
            if fresh_by_partition
                .keys()
                .all(|partition| last.contains_key(partition))
            {
                Ok(last)
            } else {
                Err(BrokerError::Unreadable(format!("event ids {ids:?}")))
            }
        });
        let last = match last {
            Ok(last) => last,
            Err(error) => {
                // Lost with the connection, along with the sessions that sent them
                // (closed with it): counted on, they would hold the bound down for good.
                self.backlog.release(fresh);
                return Err(error);
            }
        };
        for (partition, bytes) in fresh_by_partition {
            if self.readers.contains_key(&partition) {
                self.in_redis
                    .entry(partition)
                    .or_default()
                    .push_back((last[&partition], bytes));
            } else {
                // Not coming back to this node, which does not read the partition (a
                // leave after the last member there, say).
                self.backlog.release(bytes);
            }
        }
        metrics.broker_published(count);
        Ok(())
    }
}
