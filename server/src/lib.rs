//! `chat-server`: chat rooms over WebSocket, speaking the FastAPI tutorial's plain protocol
//! and `chat.v1.json`, with durable history (SQLite) and clustering (Redis).
//!
//! Layout: one folder per concern, each opening with what it owns and what it may call
//! (`server/module-graph.py` prints who uses whom, and fails on a cycle):
//! - [`run`]: the accept loop and graceful shutdown; the binary and the tests both call it.
//! - [`config`]: the settings, their defaults and their bounds.
//! - [`identity`]: signed tokens that prove a client's id and name, with `--jwt-secret`
//!   or an identity provider's keys (`--jwks-file`, reloaded on SIGHUP, or `--jwks-url`).
//! - [`tls`]: the certificate for `https://` and `wss://`, reloaded on SIGHUP.
//! - `metrics`: the counters behind `/metrics`.
//! - `shared`: what every session shares: settings, rooms, cluster health, lifecycle.
//! - `http/`: the front door: routing, `/healthz`, `/metrics`, the WebSocket handshake.
//! - `http::page`: the embedded browser page and its security headers.
//! - `http::addresses`: the limits per client IP address.
//! - `session/`: one WebSocket session.
//! - `session::connection`: the session's task, from join to close frame; also `/echo`.
//! - `session::keepalive`: pings, and the end of a session that does not answer them.
//! - `session::socket`: the connection (TCP or TLS) and its two halves.
//! - `session::meter`: rate limits on the frames and bytes a client sends.
//! - `room/`: one room's members, events, history and fan-out; the `Store` and
//!   `Cluster` seams that durable history and clustering plug into.
//! - `room::rooms`: every room of the server, made or loaded on first use.
//! - `room::outbox`: a member's bounded queue of frames.
//! - `room::wire`: WebSocket frames encoded once for every recipient.
//! - `room::backlog`: what storage has not yet taken, and the wait for room.
//! - `journal/`: durable history in SQLite, with `--data-dir`: a `Store`.
//! - `broker/`: clustering through Redis, with `--redis-url`: a `Cluster`.
//! - `broker::append`, `broker::stream`, `broker::presence`, `broker::keys`,
//!   `broker::scripts`: publishing, reading streams, reaping gone nodes, key names, and
//!   the Lua scripts (in `.lua` files).
//!
//! `identity` and `tls` stay at the top, not in `http/`: they are public, and `config`
//! names their types, so under `http/` they would make `config` and `http` use each
//! other.

mod broker;
pub mod config;
mod http;
pub mod identity;
mod journal;
mod metrics;
mod room;
mod session;
mod shared;
pub mod tls;

pub use config::{ApiKeys, Config, InvalidConfig, RateLimit};

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use chat::backoff::Backoff;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::http::FrontDoor;
use crate::http::addresses::Addresses;
use crate::http::page::Page;
use crate::identity::Jwks;
use crate::metrics::Metrics;
use crate::room::RoomSettings;
use crate::room::rooms::Rooms;
use crate::shared::Shared;
use crate::tls::Tls;

/// Serves the chat on `listener` until `shutdown` completes, then closes every client
/// with 1001 and returns once they are closed or `config.shutdown_timeout` has passed.
/// Fails at once, with `InvalidInput`, on a configuration that cannot work.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    config
        .check()
        .map_err(|invalid| io::Error::new(io::ErrorKind::InvalidInput, invalid))?;
    if let Some(url) = &config.redis_url {
        broker::check_url(url)
            .map_err(|invalid| io::Error::new(io::ErrorKind::InvalidInput, invalid))?;
    }
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(Tls::load(files.clone())?)),
        None => None,
    };
    let jwks = match &config.jwks {
        Some(source) => {
            let jwks = Jwks::load(source.clone(), config.jwks_min_refetch)
                .await
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
            Some(Arc::new(jwks))
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    let settings = RoomSettings::new(&config);
    let cluster_stop = CancellationToken::new();
    let (cluster, health, cluster_task) = match &config.redis_url {
        Some(url) => {
            let keep = broker::append::Keep {
                events: config.history,
                bytes: config.history_bytes,
                expiry: config.room_expiry,
            };
            let (cluster, health, task) = broker::start(
                url.clone(),
                config.redis_partitions,
                config.presence_ttl,
                keep,
                config.max_message_bytes,
                settings.directory.clone(),
                metrics.clone(),
                cluster_stop.clone(),
            );
            (Some(cluster), Some(health), Some(task))
        }
        None => (None, None, None),
    };
    let store = match &config.data_dir {
        Some(folder) => {
            let store = journal::open(
                folder,
                config.history,
                config.history_bytes,
                metrics.clone(),
            );
            Some(store.map_err(io::Error::other)?)
        }
        None => None,
    };
    let rooms =
        Rooms::new(settings, metrics.clone(), cluster, store.clone()).map_err(io::Error::other)?;
    let cluster_task = cluster_task.map(tokio::spawn);
    let page = Page::new(config.max_message_bytes);
    let shared = Arc::new(Shared {
        rooms,
        cluster_health: health,
        metrics,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        config,
    });
    let door = Arc::new(FrontDoor {
        page,
        admin_page: Page::admin(),
        started: std::time::Instant::now(),
        tokens: identity::Tokens::checking(
            shared.config.jwt_secret.as_ref(),
            jwks.clone(),
            shared.config.token_rules.clone(),
        ),
        tls: tls.clone(),
        sessions: Arc::new(Semaphore::new(
            shared.config.max_connections.min(Semaphore::MAX_PERMITS),
        )),
        addresses: Addresses::new(
            shared.config.max_connections_per_ip,
            shared.config.handshake_rate_per_ip,
        ),
        shared: shared.clone(),
        api_rates: Default::default(),
    });
    // Caught before the server says it is ready: SIGHUP's default would end it.
    let serves_tls = tls.is_some();
    let reloader = tokio::spawn(reload_on_hangup(catch_hangups(), tls, jwks.clone()));
    announce(listener.local_addr()?, serves_tls);
    let refresher = jwks.map(|jwks| tokio::spawn(jwks.refresh_every(shared.config.jwks_refresh)));

    accept_until(&listener, &door, shutdown).await;
    drop(listener);
    drop(door);
    reloader.abort();
    if let Some(refresher) = refresher {
        refresher.abort();
    }

    info!(
        clients = shared.rooms.members(),
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
    if let Some(store) = &store {
        // Every session has ended and handed its leave over: let the journal write them.
        if tokio::time::timeout(shared.config.shutdown_timeout, store.close())
            .await
            .is_err()
        {
            warn!(
                "the history could not be written in time; what was not is lost, and no client saw it"
            );
        }
    }
    if let Some(task) = cluster_task {
        // Every session has ended and queued its leave: let the broker publish them.
        cluster_stop.cancel();
        if tokio::time::timeout(shared.config.shutdown_timeout, task)
            .await
            .is_err()
        {
            warn!("Redis did not take the last leaves in time");
        }
    }
    Ok(())
}

/// Tells the person who started the server where to point their clients, once it is
/// ready for them (after the data folder, say, was found usable).
fn announce(address: SocketAddr, tls: bool) {
    // A wildcard address is not something to type into a browser.
    let reachable = match address.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), address.port()),
        _ => address,
    };
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    info!("chat page:       {http}://{reachable}/");
    info!("terminal client: chat-tui --server {ws}://{reachable} --id 42");
}

/// Reads the certificate and the identity provider's keys again on every SIGHUP; a bad
/// one is logged and the one in use kept. Connections already open are not touched.
/// With neither there is nothing to reload, but SIGHUP is still caught: its default
/// would end the server, and systemd's `ExecReload` sends it (and counts that exit as
/// clean, so nothing restarts it).
async fn reload_on_hangup(hangups: Hangups, tls: Option<Arc<Tls>>, jwks: Option<Arc<Jwks>>) {
    #[cfg(unix)]
    {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(error) => {
                warn!(%error, "cannot watch for SIGHUP: nothing will be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            if tls.is_none() && jwks.is_none() {
                info!("SIGHUP: nothing to reload without --tls-cert or a JWKS; still running");
            }
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => {
                        info!(cert = %tls.cert_path().display(), "reloaded the TLS certificate")
                    }
                    Err(error) => {
                        error!(%error, "kept the TLS certificate in use: the new one cannot be used")
                    }
                }
            }
            if let Some(jwks) = &jwks {
                match jwks.reload().await {
                    Ok(keys) => {
                        info!(source = %jwks.source(), keys, "reloaded the identity provider's keys")
                    }
                    Err(error) => {
                        error!(%error, "kept the identity provider's keys in use: the new set cannot be used")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    drop((hangups, tls, jwks));
}

/// SIGHUPs, caught from now on.
#[cfg(unix)]
type Hangups = std::io::Result<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

fn catch_hangups() -> Hangups {
    #[cfg(unix)]
    return tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
}

async fn accept_until(listener: &TcpListener, door: &Arc<FrontDoor>, shutdown: impl Future) {
    // An accept error (most often running out of file descriptors) would repeat at once
    // if retried at once: back off, and log only the first of a streak.
    let mut failures = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    failures = 0;
                    // Chat frames are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    door.shared.tasks.spawn(http::serve_connection(stream, peer, door.clone()));
                }
                Err(accept_error) => {
                    if failures == 0 {
                        error!(%accept_error, "accept failed; backing off until it succeeds");
                    }
                    failures += 1;
                    tokio::time::sleep(Backoff::ACCEPT.wait(failures)).await;
                }
            }
        }
    }
}
