//! The idle scenario: clients held open for the server's memory per connection, and
//! churn rounds that open and drop them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::probe::ServerProbe;
use crate::{ID_BASE, PlainReader, Servers, Socket, connect_all, wait_for_sentinel};

/// An idle-connections run, for memory per connection and the join storm.
#[derive(Debug, Clone)]
pub struct IdlePlan {
    pub clients: usize,
    pub connect_concurrency: usize,
    /// How long to hold the connections open after the room is ready.
    pub hold: Duration,
    /// Rounds of opening and dropping every connection after the first.
    pub churn_rounds: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub clients: usize,
    /// From the first connection until every client had seen every join.
    pub join_storm_seconds: f64,
    /// Joins delivered during the storm: n(n+1)/2 for n clients, plus the sentinel's.
    pub join_deliveries: u64,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_held_kib: Option<u64>,
    pub server_rss_per_connection_kib: Option<f64>,
    /// The server's RSS after each churn round, once its connections were gone.
    pub server_rss_after_churn_kib: Vec<u64>,
}

/// Connects idle clients whose readers count frames and watch for the sentinel.
async fn idle_room(
    servers: &Servers,
    plan: &IdlePlan,
) -> anyhow::Result<(Vec<SplitSink<Socket, Message>>, f64)> {
    let sentinel_seen = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(Notify::new());
    let sentinel_join = format!("Client #{} has entered the chat", ID_BASE - 1);
    let started = Instant::now();
    let (seen, notify) = (sentinel_seen.clone(), ready.clone());
    let reader_servers = servers.clone();
    let sinks = connect_all(
        servers,
        plan.clients,
        plan.connect_concurrency,
        move |_, id, socket, joined| {
            let (sink, mut stream) = socket.split();
            let own_join = format!("Client #{id} has entered the chat");
            let (sentinel_join, seen, notify) =
                (sentinel_join.clone(), seen.clone(), notify.clone());
            let mut reader = PlainReader::new(&reader_servers);
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    if let Message::Text(text) = message
                        && let Some(text) = reader.read(text.as_str())
                    {
                        if text == own_join {
                            joined.notify_one();
                        } else if text == sentinel_join {
                            seen.fetch_add(1, Ordering::AcqRel);
                            notify.notify_one();
                        }
                    }
                }
            });
            sink
        },
    )
    .await?;
    let seen = sentinel_seen.clone();
    let sentinel = wait_for_sentinel(
        servers,
        plan.clients,
        move || seen.load(Ordering::Acquire),
        &ready,
        Duration::from_secs(300),
    )
    .await?;
    let storm_seconds = started.elapsed().as_secs_f64();
    let mut sinks = sinks;
    sinks.push(sentinel.split().0);
    Ok((sinks, storm_seconds))
}

async fn close_all(sinks: Vec<SplitSink<Socket, Message>>) {
    futures_util::future::join_all(sinks.into_iter().map(|mut sink| async move {
        let _ = sink.close().await;
    }))
    .await;
}

/// How long after the clients go memory is measured: the server sees them go and fans
/// out their leaves, and its allocator returns what that freed (chat-server's jemalloc
/// does so over about a second).
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the idle scenario, then the churn rounds, and reports the server's memory.
pub async fn idle(
    servers: &Servers,
    plan: &IdlePlan,
    probe: Option<ServerProbe>,
) -> anyhow::Result<IdleReport> {
    let rss = || -> anyhow::Result<Option<u64>> {
        Ok(probe
            .map(|probe| probe.usage())
            .transpose()?
            .map(|usage| usage.rss_kib))
    };
    let before = rss()?;
    let (sinks, join_storm_seconds) = idle_room(servers, plan).await?;
    eprintln!(
        "{} idle clients ready in {join_storm_seconds:.2} s",
        plan.clients
    );
    let held = rss()?;
    tokio::time::sleep(plan.hold).await;
    close_all(sinks).await;

    let mut after_churn = Vec::new();
    for round in 0..plan.churn_rounds {
        tokio::time::sleep(SETTLE).await;
        if let Some(rss) = rss()? {
            after_churn.push(rss);
        }
        eprintln!("churn round {}/{}", round + 1, plan.churn_rounds);
        let (sinks, _) = idle_room(servers, plan).await?;
        close_all(sinks).await;
    }
    if plan.churn_rounds > 0 {
        tokio::time::sleep(SETTLE).await;
        if let Some(rss) = rss()? {
            after_churn.push(rss);
        }
    }
    let n = plan.clients as u64;
    Ok(IdleReport {
        clients: plan.clients,
        join_storm_seconds,
        join_deliveries: n * (n + 1) / 2 + n,
        server_rss_before_kib: before,
        server_rss_held_kib: held,
        server_rss_per_connection_kib: before
            .zip(held)
            .map(|(before, held)| held.saturating_sub(before) as f64 / plan.clients as f64),
        server_rss_after_churn_kib: after_churn,
    })
}
