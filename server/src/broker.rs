//! Clustering through Redis: several nodes share one room.
//!
//! Every announcement (join, message, leave) is published on one Redis channel and
//! fanned out by each node when Redis delivers it, so every client on every node sees
//! the order in which Redis received them. One Redis message per announcement per node.
//!
//! Presence: each node keeps its members in a Redis hash, and an `alive` key with a TTL
//! that it refreshes. When a node's `alive` key expires (the node was killed or lost its
//! machine), a surviving node claims the hash (an atomic `RENAME`, so only one does)
//! and announces those members' leaves. A node that shuts down gracefully announces its
//! members' leaves itself.
//!
//! Outage: while a node cannot reach Redis it closes its clients with 1013 ("try again
//! later"), refuses new ones with 503, and reports 503 on `/healthz`. Nothing is
//! delivered locally only, so no client sees an order the others do not. On reconnect the
//! node announces the leaves of the members it closed, unless another node already has.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::room::{Cluster, Epoch, Outgoing, Presence, Room, now_millis};

/// The one channel every announcement goes through.
const CHANNEL: &str = "chat:room";
/// The set of node ids that have registered.
const NODES: &str = "chat:nodes";
/// The most commands sent to Redis in one pipeline.
const MOST_PER_PIPELINE: usize = 1024;
/// How long a connection attempt or a command may take before Redis counts as lost.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

fn members_key(node: &str) -> String {
    format!("chat:node:{node}:members")
}

fn alive_key(node: &str) -> String {
    format!("chat:node:{node}:alive")
}

/// How a node stands with Redis. Each connection to Redis is a new epoch
/// ([`Epoch::Connection`]): members that joined in an earlier one were closed when it
/// ended, and nothing of theirs is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up { connection: u64 },
    Down(String),
}

/// Why a connection to Redis ended.
#[derive(Debug, thiserror::Error)]
enum BrokerError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer from Redis")]
    Timeout,
    #[error("lost the subscription")]
    SubscriptionLost,
    #[error("this node's presence expired in Redis")]
    PresenceExpired,
}

/// The room's side of the broker: hands announcements over, in order.
pub struct Publisher {
    node: Arc<str>,
    health: watch::Receiver<Health>,
    // Unbounded because a leave is handed over from `Drop` and must never be lost; what
    // can wait here is bounded by the connections and their rate limit, and is dropped
    // when Redis is lost, since those connections are closed then.
    commands: mpsc::UnboundedSender<Outgoing>,
}

impl Cluster for Publisher {
    fn node(&self) -> &str {
        &self.node
    }

    fn epoch(&self) -> Epoch {
        match *self.health.borrow() {
            Health::Up { connection } => Epoch::Connection(connection),
            Health::Down(_) => Epoch::Offline,
        }
    }

    fn publish(&self, announcement: Outgoing) {
        // Fails only once the broker task is gone, at the very end of a shutdown.
        let _ = self.commands.send(announcement);
    }
}

/// Where the broker task gets its work and reports its health.
pub struct Broker {
    url: String,
    node: Arc<str>,
    presence_ttl: Duration,
    /// How many connections to Redis this node has made; the current one's epoch.
    connection: u64,
    commands: mpsc::UnboundedReceiver<Outgoing>,
    health: watch::Sender<Health>,
}

/// A broker for a new node: the room's publisher, the broker task's half, and the
/// health that sessions and `/healthz` watch.
pub fn channel(
    url: String,
    presence_ttl: Duration,
) -> (Publisher, Broker, watch::Receiver<Health>) {
    let node: Arc<str> = format!("{:016x}", fastrand::u64(..)).into();
    let (sender, commands) = mpsc::unbounded_channel();
    let (health, watch) = watch::channel(Health::Down("connecting to Redis".to_owned()));
    (
        Publisher {
            node: node.clone(),
            health: watch.clone(),
            commands: sender,
        },
        Broker {
            url,
            node,
            presence_ttl,
            connection: 0,
            commands,
            health,
        },
        watch,
    )
}

impl Broker {
    /// Keeps the node connected to Redis, reconnecting with backoff, until `stop`; then
    /// publishes what is left (the leaves of a graceful shutdown) and unregisters.
    pub async fn run(mut self, room: Arc<Room>, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            match self.connected(&room, &metrics, &stop, &mut failures).await {
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
                    let wait = backoff(failures);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One connection to Redis, from subscribing to losing it (`Err`) or stopping.
    async fn connected(
        &mut self,
        room: &Room,
        metrics: &Metrics,
        stop: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), BrokerError> {
        let (mut redis, pubsub) = self.connect().await?;
        self.register(&mut redis).await?;
        *failures = 0;
        self.connection += 1;
        metrics.broker_health(true);
        self.health.send_replace(Health::Up {
            connection: self.connection,
        });
        info!(node = %self.node, "connected to Redis");
        self.relay(&mut redis, pubsub, room, metrics, stop).await
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, PubSub), BrokerError> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let redis = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| BrokerError::Timeout)??;
        pubsub.subscribe(CHANNEL).await?;
        Ok((redis, pubsub))
    }

    /// Announces the leaves of the last connection's members (unless a survivor already
    /// did), and says this node is alive.
    async fn register(&self, redis: &mut MultiplexedConnection) -> Result<(), BrokerError> {
        // Members of the last epoch were closed when it ended; what they still queue is
        // dropped by `send`.
        reap(redis, &self.node, &self.node).await?;
        redis::pipe()
            .sadd(NODES, &*self.node)
            .ignore()
            .set_options(alive_key(&self.node), 1, self.alive_options())
            .ignore()
            .query_async::<()>(redis)
            .await?;
        Ok(())
    }

    fn alive_options(&self) -> SetOptions {
        let ttl = self.presence_ttl.as_millis() as u64;
        SetOptions::default().with_expiration(SetExpiry::PX(ttl))
    }

    /// Relays announcements both ways, and keeps this node's presence alive, until the
    /// connection is lost or `stop`.
    async fn relay(
        &mut self,
        redis: &mut MultiplexedConnection,
        mut pubsub: PubSub,
        room: &Room,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let mut heartbeat = tokio::time::interval(self.presence_ttl / 3);
        heartbeat.tick().await;
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let message = message.ok_or(BrokerError::SubscriptionLost)?;
                    deliver(room, metrics, message.get_payload_bytes());
                }
                command = self.commands.recv() => {
                    let Some(first) = command else { return Ok(()) };
                    self.send(redis, first, metrics).await?;
                }
                _ = heartbeat.tick() => self.heartbeat(redis).await?,
                () = stop.cancelled() => return self.unregister(redis, metrics).await,
            }
        }
    }

    /// Refreshes this node's `alive` key, and reaps the nodes whose key has expired.
    async fn heartbeat(&self, redis: &mut MultiplexedConnection) -> Result<(), BrokerError> {
        let only_if_alive = self.alive_options().conditional_set(ExistenceCheck::XX);
        let refreshed: Option<String> = redis
            .set_options(alive_key(&self.node), 1, only_if_alive)
            .await?;
        if refreshed.is_none() {
            return Err(BrokerError::PresenceExpired);
        }
        reap_dead_nodes(redis, &self.node).await
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
            .del(alive_key(&self.node))
            .ignore()
            .del(members_key(&self.node))
            .ignore()
            .srem(NODES, &*self.node)
            .ignore()
            .query_async::<()>(redis)
            .await?;
        Ok(())
    }

    /// Sends `first` and whatever else is queued, in order, in one pipeline.
    async fn send(
        &mut self,
        redis: &mut MultiplexedConnection,
        first: Outgoing,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        let mut count = 0;
        let mut next = Some(first);
        let current = Epoch::Connection(self.connection);
        while let Some(command) = next.take() {
            if command.epoch != current {
                next = self.commands.try_recv().ok();
                continue;
            }
            let members = members_key(&self.node);
            if let Presence::Joined(id) = &command.presence {
                pipe.hset(&members, command.key, id.as_str()).ignore();
            }
            let envelope = envelope(&self.node, command.key, &command.text);
            pipe.publish(CHANNEL, envelope).ignore();
            if command.presence == Presence::Left {
                pipe.hdel(&members, command.key).ignore();
            }
            count += 1;
            if count < MOST_PER_PIPELINE {
                next = self.commands.try_recv().ok();
            }
        }
        if count == 0 {
            return Ok(());
        }
        pipe.query_async::<()>(redis).await?;
        metrics.broker_published(count);
        Ok(())
    }
}

/// `node key sent-at-ms`, a newline, then the frame.
fn envelope(node: &str, key: u64, frame: &str) -> String {
    let sent_at = now_millis();
    format!("{node} {key} {sent_at}\n{frame}")
}

fn deliver(room: &Room, metrics: &Metrics, payload: &[u8]) {
    let parsed = std::str::from_utf8(payload).ok().and_then(|text| {
        let (header, frame) = text.split_once('\n')?;
        let mut fields = header.split(' ');
        let node = fields.next()?;
        let key = fields.next()?.parse::<u64>().ok()?;
        let sent_at = fields.next()?.parse::<u64>().ok()?;
        Some((node, key, sent_at, frame))
    });
    let Some((node, key, sent_at, frame)) = parsed else {
        warn!(
            bytes = payload.len(),
            "ignored a malformed message on the Redis channel"
        );
        return;
    };
    let lag = Duration::from_millis(now_millis().saturating_sub(sent_at));
    metrics.broker_received(lag);
    room.deliver(node, key, frame);
}

/// Announces the leaves of `dead`'s members, if this node (`me`) is the one to claim
/// them; returns how many.
async fn reap(
    redis: &mut MultiplexedConnection,
    dead: &str,
    me: &str,
) -> Result<usize, BrokerError> {
    let claimed = format!("chat:reaping:{dead}:{me}");
    let renamed: redis::RedisResult<()> = redis.rename(members_key(dead), &claimed).await;
    match renamed {
        Ok(()) => {}
        // The one error reply RENAME has is "no such key": nobody is left to announce,
        // or another node claimed them first.
        Err(error) if error.kind() == redis::ErrorKind::ResponseError => return Ok(0),
        Err(error) => return Err(error.into()),
    }
    let members: HashMap<u64, String> = redis.hgetall(&claimed).await?;
    let mut pipe = redis::pipe();
    for (key, id) in &members {
        let left = chat::Announcement::Left(id).to_string();
        pipe.publish(CHANNEL, envelope(dead, *key, &left)).ignore();
    }
    pipe.del(&claimed).ignore();
    pipe.query_async::<()>(redis).await?;
    if !members.is_empty() {
        info!(
            node = dead,
            members = members.len(),
            "announced the leaves of a node's members"
        );
    }
    Ok(members.len())
}

/// Finds registered nodes whose `alive` key has expired and reaps them.
async fn reap_dead_nodes(redis: &mut MultiplexedConnection, me: &str) -> Result<(), BrokerError> {
    let nodes: Vec<String> = redis.smembers(NODES).await?;
    for node in nodes.iter().filter(|node| node.as_str() != me) {
        let alive: bool = redis.exists(alive_key(node)).await?;
        if !alive {
            reap(redis, node, me).await?;
            let _: () = redis.srem(NODES, node).await?;
        }
    }
    Ok(())
}

/// Doubling from 100 ms to 5 s, with jitter so that nodes do not retry in step.
fn backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(5));
    ceiling.mul_f64(0.5 + fastrand::f64() * 0.5)
}
