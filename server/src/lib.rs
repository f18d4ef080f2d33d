//! `chat-server`: one chat room over WebSocket, speaking the FastAPI tutorial's protocol.
//!
//! Layout:
//! - [`run`]: the accept loop and graceful shutdown; the binary and the tests both call it.
//! - `http`: the page at `/`, plain HTTP answers, and the WebSocket handshake.
//! - `connection`: one WebSocket session, from join to close frame; also `/echo`.
//! - [`room`]: the members and the fan-out of announcements to their bounded outboxes.
//! - `metrics`: the counters behind `/metrics`.
//! - `broker`: clustering through Redis, with `--redis-url`.
//! - `socket`: a connection's two halves: tungstenite reads, a writer sends encoded frames.
//! - `wire`: WebSocket frames encoded once for every recipient.

mod broker;
mod connection;
mod http;
mod metrics;
pub mod room;
mod socket;
mod wire;

pub use connection::RateLimit;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use tokio::sync::watch;

use crate::broker::Health;
use crate::metrics::Metrics;
use crate::room::Room;

/// The server's settings. [`Config::default`] is what `chat-server` runs with when given
/// no flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// The largest text message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// How many bytes of frames may wait for one slow client before it is disconnected.
    /// Raised, if need be, to hold at least one of the largest announcements.
    pub max_queue_bytes: usize,
    /// How often the server pings each client.
    pub ping_interval: Duration,
    /// A client heard from (any frame, a pong included) less recently than this is closed.
    pub ping_timeout: Duration,
    /// How long a client may take to send its HTTP request headers.
    pub handshake_timeout: Duration,
    /// The per-connection message rate, or `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// The most WebSocket sessions at once; more are refused with HTTP 503.
    pub max_connections: usize,
    /// Origins allowed besides the defaults (none, `null`, and the server's own); `*`
    /// allows every origin.
    pub allowed_origins: Vec<String>,
    /// Serve `/echo` for the Autobahn conformance cases.
    pub echo: bool,
    /// Share the room with other nodes through this Redis (`redis://host:port[/db]`).
    pub redis_url: Option<String>,
    /// In a cluster, how long a node may go unheard before the others announce its
    /// members' leaves.
    pub presence_ttl: Duration,
    /// How long shutdown may take to close every client before `run` returns anyway.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_queue_bytes: 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            rate_limit: Some(RateLimit {
                per_second: 20.0,
                burst: 40,
            }),
            max_connections: 10_000,
            allowed_origins: Vec::new(),
            echo: false,
            redis_url: None,
            presence_ttl: Duration::from_secs(6),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// What every connection task needs.
struct Shared {
    config: Config,
    room: Arc<Room>,
    /// In a cluster: whether Redis is reachable.
    broker: Option<watch::Receiver<Health>>,
    metrics: Arc<Metrics>,
    sessions: Sessions,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Config {
    /// The outbox bound in force: `max_queue_bytes`, but never less than one announcement
    /// of the largest message, which would otherwise evict every member on arrival.
    fn queue_bytes(&self) -> usize {
        let largest_announcement =
            self.max_message_bytes + "Client #-: ".len() + chat::MAX_ID_DIGITS;
        self.max_queue_bytes.max(largest_announcement)
    }
}

const READ_BUFFER_BYTES: usize = 1024;

impl Shared {
    /// Why the node cannot serve clients now, if it cannot.
    fn unavailable(&self) -> Option<String> {
        match self.broker.as_ref().map(|health| health.borrow().clone()) {
            Some(Health::Down(reason)) => Some(format!("cannot reach Redis: {reason}")),
            _ => None,
        }
    }

    /// Completes when the connection to Redis that a member joined in (`epoch`) has
    /// ended, even if a new one is up already; never on a single node.
    async fn broker_lost(&self, epoch: u64) {
        match self.broker.clone() {
            Some(mut health) => {
                let joined_in = Health::Up { epoch };
                let _ = health.wait_for(|health| *health != joined_in).await;
            }
            None => std::future::pending().await,
        }
    }

    fn websocket_config(&self) -> WebSocketConfig {
        // Chosen for many mostly idle connections: tungstenite's defaults reserve 128 KiB
        // of read buffer per connection; chat frames are small, so 1 KiB grows on demand.
        // tungstenite writes only control frames (our writer sends the rest), straight
        // into the outbox, so it needs no write buffer.
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(self.config.max_message_bytes))
            .max_frame_size(Some(self.config.max_message_bytes))
    }
}

/// Counts WebSocket sessions against `Config::max_connections`.
struct Sessions {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// A reserved place for one session; freed when dropped.
struct SessionSlot(Arc<AtomicUsize>);

impl Sessions {
    fn try_reserve(&self) -> Option<SessionSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.open.clone()))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the chat on `listener` until `shutdown` completes, then closes every client
/// with 1001 and returns once they are closed or `config.shutdown_timeout` has passed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (publisher, broker, health) = match &config.redis_url {
        Some(url) => {
            let (publisher, broker, health) = broker::channel(url.clone(), config.presence_ttl);
            (Some(publisher), Some(broker), Some(health))
        }
        None => (None, None, None),
    };
    let room = Room::new(config.queue_bytes(), metrics.clone(), publisher);
    let broker_stop = CancellationToken::new();
    let broker_task = broker
        .map(|broker| tokio::spawn(broker.run(room.clone(), metrics.clone(), broker_stop.clone())));
    let shared = Arc::new(Shared {
        room,
        broker: health,
        metrics,
        sessions: Sessions {
            open: Arc::default(),
            max: config.max_connections,
        },
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        config,
    });
    debug!(address = %listener.local_addr()?, "listening");

    accept_until(&listener, &shared, shutdown).await;
    drop(listener);

    info!(
        clients = shared.room.len(),
        "shutting down: closing every client"
    );
    shared.shutdown.cancel();
    shared.tasks.close();
    if tokio::time::timeout(shared.config.shutdown_timeout, shared.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            timeout = ?shared.config.shutdown_timeout,
            "shutdown timed out; dropping the connections left"
        );
    }
    if let Some(task) = broker_task {
        // Every session has ended and queued its leave: let the broker publish them.
        broker_stop.cancel();
        if tokio::time::timeout(shared.config.shutdown_timeout, task)
            .await
            .is_err()
        {
            warn!("Redis did not take the last leaves in time");
        }
    }
    Ok(())
}

async fn accept_until(listener: &TcpListener, shared: &Arc<Shared>, shutdown: impl Future) {
    // An accept error (most often running out of file descriptors) would repeat at once
    // if retried at once: back off, and log only the first of a streak.
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = FIRST_BACKOFF;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = FIRST_BACKOFF;
                    // Chat frames are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    shared.tasks.spawn(http::serve_connection(stream, peer, shared.clone()));
                }
                Err(accept_error) => {
                    if backoff == FIRST_BACKOFF {
                        error!(%accept_error, "accept failed; backing off until it succeeds");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
