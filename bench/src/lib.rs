//! `chat-bench`: drives any server that speaks `/ws/<id>` (ours, or the tutorial's) and
//! measures what a chat server is for: fan-out.
//!
//! Layout:
//! - [`fanout`]: N clients, S of them sending M messages each, paced by a window of
//!   unacknowledged messages or by a fixed rate; counts every delivery and its latency.
//! - [`idle`]: N idle clients held open, for the server's memory per connection, and
//!   churn rounds that open and drop them.
//! - [`ServerProbe`]: the server's CPU time and RSS, read from `/proc/<pid>`.
//!
//! A room is ready when every client has seen its own join and then a sentinel's join:
//! the server's total order means every earlier join has been delivered by then.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use url::Url;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The first id the bench uses; ids are `ID_BASE + n`, the sentinel `ID_BASE - 1`.
const ID_BASE: u64 = 7_000_000_000;

/// Where the clients connect: client `n` uses `servers[n % len]`, so a room spread over
/// several nodes can be driven too.
#[derive(Debug, Clone)]
pub struct Servers(pub Vec<Url>);

impl Servers {
    fn endpoint(&self, client: usize, id: u64) -> String {
        let base = &self.0[client % self.0.len()];
        format!("{}/ws/{id}", base.as_str().trim_end_matches('/'))
    }
}

/// How senders pace themselves.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// At most this many of a sender's messages unacknowledged (not yet echoed back).
    Window(usize),
    /// This many messages a second per sender, whatever comes back.
    Rate(f64),
}

/// A fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutPlan {
    pub clients: usize,
    pub senders: usize,
    pub messages: usize,
    pub pace: Pace,
    pub connect_concurrency: usize,
    /// How long the sending phase may take before what is missing counts as lost.
    pub timeout: Duration,
}

/// The server's resource use, when its pid is known.
#[derive(Debug, Clone, Copy)]
pub struct ServerProbe {
    pid: u32,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

impl ServerProbe {
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        let probe = Self { pid };
        probe.usage()?;
        Ok(probe)
    }

    /// CPU time used so far (user + system) and the resident set now.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("reading /proc/{}/stat", self.pid))?;
        let after_name = stat
            .rfind(')')
            .map(|end| &stat[end + 2..])
            .context("unexpected /proc stat format")?;
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc status")?;
        // Linux reports CPU time in clock ticks of 1/100 s on every platform it runs on.
        Ok(Usage {
            cpu_seconds: ticks as f64 / 100.0,
            rss_kib,
        })
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What a fan-out run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub clients: usize,
    pub senders: usize,
    pub messages_per_sender: usize,
    pub pace: Pace,
    pub connect_seconds: f64,
    pub expected_deliveries: u64,
    pub received_deliveries: u64,
    pub lost_deliveries: u64,
    pub send_seconds: f64,
    pub deliveries_per_second: f64,
    pub latency: Latency,
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
}

/// What every reader of one run shares.
struct Shared {
    start: Instant,
    /// Per sender: how many of its messages it has seen come back.
    acks: Vec<AtomicU64>,
    ack_notify: Vec<Notify>,
    sentinel_seen: AtomicUsize,
    ready: Notify,
    done: AtomicUsize,
    all_done: Notify,
    expected_per_client: u64,
}

/// One client's reading side: counts, latencies, acknowledgements. Returns when it has
/// every message it expects, or when `stop` is cancelled.
#[allow(clippy::too_many_arguments)]
async fn read_all(
    mut stream: SplitStream<Socket>,
    own_join: String,
    sentinel_join: String,
    sender_index: Option<usize>,
    own_prefix: String,
    shared: Arc<Shared>,
    joined: Arc<Notify>,
    stop: CancellationToken,
) -> (u64, Histogram<u64>) {
    let mut histogram = new_histogram();
    let mut received = 0u64;
    let mut seen_own_join = false;
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = stream.next() => match message {
                Some(Ok(message)) => message,
                _ => break,
            },
        };
        let Message::Text(text) = message else {
            continue;
        };
        let text = text.as_str();
        if let Some((_, payload)) = text.split_once(": b ") {
            let Some(sent_at) = payload
                .split_once(' ')
                .and_then(|(_, sent_at)| sent_at.parse::<u64>().ok())
            else {
                continue;
            };
            let now = shared.start.elapsed().as_nanos() as u64;
            let _ = histogram.record((now.saturating_sub(sent_at) / 1000).max(1));
            received += 1;
            if let Some(sender) = sender_index
                && text.starts_with(&own_prefix)
            {
                shared.acks[sender].fetch_add(1, Ordering::Release);
                shared.ack_notify[sender].notify_one();
            }
            if received == shared.expected_per_client {
                shared.done.fetch_add(1, Ordering::AcqRel);
                shared.all_done.notify_one();
                break;
            }
        } else if !seen_own_join && text == own_join {
            seen_own_join = true;
            joined.notify_one();
        } else if text == sentinel_join {
            shared.sentinel_seen.fetch_add(1, Ordering::AcqRel);
            shared.ready.notify_one();
        }
    }
    (received, histogram)
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Opens one client's connection, with Nagle off.
async fn connect(url: &str) -> anyhow::Result<Socket> {
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(socket)
}

/// Connects `count` clients, at most `concurrency` handshakes at a time, each of which
/// has seen its own join when this returns. `setup` turns each socket into a running
/// reader and returns the writing half.
async fn connect_all<T: Send + 'static>(
    servers: &Servers,
    count: usize,
    concurrency: usize,
    setup: impl Fn(usize, u64, Socket, Arc<Notify>) -> T + Send + Sync + 'static,
) -> anyhow::Result<Vec<T>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let setup = Arc::new(setup);
    let connected = Arc::new(AtomicUsize::new(0));
    let progress = tokio::spawn(report_progress("connected", connected.clone(), count));
    let mut tasks = Vec::with_capacity(count);
    for client in 0..count {
        let gate = gate.clone();
        let setup = setup.clone();
        let connected = connected.clone();
        let url = servers.endpoint(client, ID_BASE + client as u64);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let socket = connect(&url).await?;
            let joined = Arc::new(Notify::new());
            let handle = setup(client, ID_BASE + client as u64, socket, joined.clone());
            tokio::time::timeout(Duration::from_secs(60), joined.notified())
                .await
                .with_context(|| format!("{url}: no join announced within 60 s"))?;
            connected.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(handle)
        }));
    }
    let mut handles = Vec::with_capacity(count);
    for task in tasks {
        handles.push(task.await??);
    }
    progress.abort();
    Ok(handles)
}

/// Prints `label done/total` to stderr every second until aborted.
async fn report_progress(label: &'static str, done: Arc<AtomicUsize>, total: usize) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        eprintln!("{label} {}/{total}", done.load(Ordering::Relaxed));
    }
}

/// Joins the sentinel and waits until `clients` readers have seen it.
async fn wait_for_sentinel(
    servers: &Servers,
    clients: usize,
    seen: impl Fn() -> usize,
    ready: &Notify,
    timeout: Duration,
) -> anyhow::Result<Socket> {
    let sentinel = connect(&servers.endpoint(0, ID_BASE - 1)).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    while seen() < clients {
        if tokio::time::timeout_at(deadline, ready.notified())
            .await
            .is_err()
        {
            bail!(
                "only {} of {clients} clients saw the sentinel's join within {timeout:?}",
                seen()
            );
        }
    }
    Ok(sentinel)
}

/// Runs a fan-out scenario and reports it.
pub async fn fanout(
    servers: &Servers,
    plan: &FanoutPlan,
    probe: Option<ServerProbe>,
) -> anyhow::Result<FanoutReport> {
    if plan.senders > plan.clients {
        bail!("--senders cannot exceed --clients");
    }
    let expected_per_client = (plan.senders * plan.messages) as u64;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        acks: (0..plan.senders).map(|_| AtomicU64::new(0)).collect(),
        ack_notify: (0..plan.senders).map(|_| Notify::new()).collect(),
        sentinel_seen: AtomicUsize::new(0),
        ready: Notify::new(),
        done: AtomicUsize::new(0),
        all_done: Notify::new(),
        expected_per_client,
    });
    let sentinel_join = format!("Client #{} has entered the chat", ID_BASE - 1);

    let connect_started = Instant::now();
    let reader_shared = shared.clone();
    let senders = plan.senders;
    let stop = CancellationToken::new();
    let reader_stop = stop.clone();
    let clients = connect_all(
        servers,
        plan.clients,
        plan.connect_concurrency,
        move |client, id, socket, joined| {
            let (sink, stream) = socket.split();
            let reader = tokio::spawn(read_all(
                stream,
                format!("Client #{id} has entered the chat"),
                sentinel_join.clone(),
                (client < senders).then_some(client),
                format!("Client #{id}: "),
                reader_shared.clone(),
                joined,
                reader_stop.clone(),
            ));
            (sink, reader)
        },
    )
    .await?;
    let ready_shared = shared.clone();
    let _sentinel = wait_for_sentinel(
        servers,
        plan.clients,
        move || ready_shared.sentinel_seen.load(Ordering::Acquire),
        &shared.ready,
        Duration::from_secs(120),
    )
    .await?;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    eprintln!("{} clients ready in {connect_seconds:.2} s", plan.clients);

    let before = probe.map(|probe| probe.usage()).transpose()?;
    let send_started = Instant::now();
    let (sinks, readers): (Vec<_>, Vec<_>) = clients.into_iter().unzip();
    let mut sending = Vec::new();
    let mut idle_sinks = Vec::new();
    for (index, sink) in sinks.into_iter().enumerate() {
        if index < plan.senders {
            sending.push(tokio::spawn(send(
                sink,
                index,
                plan.messages,
                plan.pace,
                shared.clone(),
            )));
        } else {
            idle_sinks.push(sink);
        }
    }
    let progress_shared = shared.clone();
    let total = (plan.senders * plan.messages) as u64;
    let progress = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let echoed: u64 = progress_shared
                .acks
                .iter()
                .map(|ack| ack.load(Ordering::Relaxed))
                .sum();
            eprintln!("sent and echoed {echoed}/{total}");
        }
    });
    let finished = tokio::time::timeout(plan.timeout, async {
        while shared.done.load(Ordering::Acquire) < plan.clients {
            shared.all_done.notified().await;
        }
    })
    .await
    .is_ok();
    let send_seconds = send_started.elapsed().as_secs_f64();
    progress.abort();
    let after = probe.map(|probe| probe.usage()).transpose()?;
    if !finished {
        eprintln!(
            "timed out after {:?}; what is missing counts as lost",
            plan.timeout
        );
    }

    stop.cancel();
    let mut histogram = new_histogram();
    let mut received = 0;
    for reader in readers {
        let (count, latencies) = reader.await?;
        received += count;
        histogram.add(latencies).expect("same bounds");
    }
    for task in sending {
        task.abort();
    }
    drop(idle_sinks);
    Ok(report(
        plan,
        connect_seconds,
        send_seconds,
        received,
        &histogram,
        before.zip(after),
    ))
}

fn report(
    plan: &FanoutPlan,
    connect_seconds: f64,
    send_seconds: f64,
    received: u64,
    histogram: &Histogram<u64>,
    usage: Option<(Usage, Usage)>,
) -> FanoutReport {
    let expected = (plan.clients * plan.senders * plan.messages) as u64;
    let cpu = usage.map(|(before, after)| after.cpu_seconds - before.cpu_seconds);
    FanoutReport {
        clients: plan.clients,
        senders: plan.senders,
        messages_per_sender: plan.messages,
        pace: plan.pace,
        connect_seconds,
        expected_deliveries: expected,
        received_deliveries: received,
        lost_deliveries: expected.saturating_sub(received),
        send_seconds,
        deliveries_per_second: received as f64 / send_seconds,
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        },
        server_cpu_seconds: cpu,
        server_cpu_us_per_delivery: cpu.map(|cpu| cpu * 1e6 / received.max(1) as f64),
    }
}

/// One sender: `messages` messages, `b <seq> <sent-at-ns>`, paced by `pace`.
async fn send(
    mut sink: SplitSink<Socket, Message>,
    index: usize,
    messages: usize,
    pace: Pace,
    shared: Arc<Shared>,
) -> anyhow::Result<SplitSink<Socket, Message>> {
    let mut ticks = match pace {
        Pace::Rate(per_second) => {
            // Senders start spread over one period, so the offered load is even in time
            // rather than a burst from every sender at once.
            let period = Duration::from_secs_f64(1.0 / per_second);
            let phase = period.mul_f64(index as f64 / shared.acks.len() as f64);
            let first = tokio::time::Instant::now() + phase;
            Some(tokio::time::interval_at(first, period))
        }
        Pace::Window(_) => None,
    };
    for seq in 0..messages as u64 {
        match (pace, &mut ticks) {
            (Pace::Window(window), _) => loop {
                let acked = shared.acks[index].load(Ordering::Acquire);
                if seq - acked.min(seq) < window as u64 {
                    break;
                }
                shared.ack_notify[index].notified().await;
            },
            (Pace::Rate(_), Some(ticks)) => {
                ticks.tick().await;
            }
            (Pace::Rate(_), None) => unreachable!("a rate has ticks"),
        }
        let sent_at = shared.start.elapsed().as_nanos() as u64;
        sink.send(Message::text(format!("b {seq} {sent_at}")))
            .await
            .context("sending")?;
    }
    Ok(sink)
}

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
    let sinks = connect_all(
        servers,
        plan.clients,
        plan.connect_concurrency,
        move |_, id, socket, joined| {
            let (sink, mut stream) = socket.split();
            let own_join = format!("Client #{id} has entered the chat");
            let (sentinel_join, seen, notify) =
                (sentinel_join.clone(), seen.clone(), notify.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    if let Message::Text(text) = message {
                        if text.as_str() == own_join {
                            joined.notify_one();
                        } else if text.as_str() == sentinel_join {
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
        // Let the server see the previous connections go before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(rss) = rss()? {
            after_churn.push(rss);
        }
        eprintln!("churn round {}/{}", round + 1, plan.churn_rounds);
        let (sinks, _) = idle_room(servers, plan).await?;
        close_all(sinks).await;
    }
    if plan.churn_rounds > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
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
