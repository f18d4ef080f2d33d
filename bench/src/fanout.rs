//! The fan-out scenario: senders paced by a window or a rate, every delivery counted
//! and timed by every client.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::probe::{ServerProbe, Usage};
use crate::{ID_BASE, PlainReader, Servers, Socket, connect_all, wait_for_sentinel};

/// How senders pace themselves.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// At most this many of a sender's messages unacknowledged (not yet echoed back).
    Window(usize),
    /// This many messages a second per sender, whatever comes back, the senders' phases
    /// spread evenly over the period.
    Rate(f64),
    /// This many messages a second per sender, every sender firing at the same instants:
    /// bursts, as when many people answer the same message.
    Aligned(f64),
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
    /// Bytes of filler after each message's sequence number and send time.
    pub padding: usize,
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
    /// Sent after each message's sequence number and send time (` xxx…`), or nothing.
    padding: String,
    /// Every client's latencies, in microseconds.
    latencies: Arc<Mutex<Histogram<u64>>>,
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
    servers: Servers,
) -> u64 {
    let mut latencies = Latencies::new(shared.latencies.clone());
    let mut received = 0u64;
    let mut seen_own_join = false;
    let mut reader = PlainReader::new(&servers);
    // One `select!` around the whole loop rather than one per frame: a client reads
    // thousands of frames a second, and the load generator's own cost per frame is
    // CPU the server under test does not get on a shared machine.
    let reading = async {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Some(text) = reader.read(text.as_str()) else {
                continue;
            };
            if let Some((_, payload)) = text.split_once(": b ") {
                let Some(sent_at) = payload
                    .split(' ')
                    .nth(1)
                    .and_then(|sent_at| sent_at.parse::<u64>().ok())
                else {
                    continue;
                };
                let now = shared.start.elapsed().as_nanos() as u64;
                latencies.record((now.saturating_sub(sent_at) / 1000).max(1));
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
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = reading => {}
    }
    latencies.flush();
    received
}

/// Latencies one client measured and has not yet added to the run's histogram.
///
/// Adding them a batch at a time keeps one histogram in the cache, where one per
/// client missed it on nearly every delivery (a fifth of the load generator's CPU in
/// the overload scenario, by `perf`).
struct Latencies {
    pending: Vec<u64>,
    histogram: Arc<Mutex<Histogram<u64>>>,
}

impl Latencies {
    const BATCH: usize = 1024;

    fn new(histogram: Arc<Mutex<Histogram<u64>>>) -> Self {
        Self {
            pending: Vec::with_capacity(Self::BATCH),
            histogram,
        }
    }

    fn record(&mut self, micros: u64) {
        self.pending.push(micros);
        if self.pending.len() == Self::BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut histogram = self.histogram.lock().expect("no reader panics holding it");
        for micros in self.pending.drain(..) {
            let _ = histogram.record(micros);
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
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
        padding: match plan.padding {
            0 => String::new(),
            bytes => format!(" {}", "x".repeat(bytes - 1)),
        },
        latencies: Arc::new(Mutex::new(new_histogram())),
    });
    let sentinel_join = format!("Client #{} has entered the chat", ID_BASE - 1);

    let connect_started = Instant::now();
    let reader_shared = shared.clone();
    let senders = plan.senders;
    let reader_servers = servers.clone();
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
                reader_servers.clone(),
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
                servers.clone(),
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
    let mut received = 0;
    for reader in readers {
        received += reader.await?;
    }
    let histogram = shared
        .latencies
        .lock()
        .expect("no reader panics holding it");
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
    servers: Servers,
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
        Pace::Aligned(per_second) => {
            // Every sender ticks on the same multiples of the period since the run began.
            let period = Duration::from_secs_f64(1.0 / per_second);
            let periods_so_far = shared.start.elapsed().as_secs_f64() / period.as_secs_f64();
            let first = tokio::time::Instant::from_std(shared.start)
                + period.mul_f64(periods_so_far.floor() + 2.0);
            let mut ticks = tokio::time::interval_at(first, period);
            // Catching up after a stall would be a burst of its own; keep the instants.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            Some(ticks)
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
            (Pace::Rate(_) | Pace::Aligned(_), Some(ticks)) => {
                ticks.tick().await;
            }
            (Pace::Rate(_) | Pace::Aligned(_), None) => unreachable!("a rate has ticks"),
        }
        let sent_at = shared.start.elapsed().as_nanos() as u64;
        let padding = &shared.padding;
        sink.send(servers.message(format!("b {seq} {sent_at}{padding}")))
            .await
            .context("sending")?;
    }
    Ok(sink)
}
