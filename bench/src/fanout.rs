//! The fan-out scenario: senders paced by a window or a rate, every delivery counted
//! and timed by every client; over `chat.v2.json`, optionally with a realistic mix of
//! typing clients and reactions, counted apart from the deliveries.

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
use crate::{ID_BASE, PlainReader, Protocol, Servers, Socket, connect_all, wait_for_sentinel};

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
    /// v2 only: the share of clients (not senders) that send `typing` every
    /// `typing_every` while the messages are sent.
    pub typing_share: f64,
    /// How often a typing client says so; [`TYPING_PERIOD`] unless studying the
    /// server's throttle.
    pub typing_every: Duration,
    /// v2 only: each sender reacts to the latest message it has read after every this
    /// many of its own messages; 0 for never.
    pub react_every: usize,
}

/// How often a typing client says so: as often as the server counts it (once per 3 s
/// per connection); clients expire it after 6 s without a refresh.
pub const TYPING_PERIOD: Duration = Duration::from_millis(chat::v2::TYPING_INTERVAL_MS);

/// The emoji every reaction carries.
const REACTION: &str = "\u{1F44D}";

impl FanoutPlan {
    /// The number of typing clients: `typing_share` of the clients, rounded.
    pub fn typers(&self) -> usize {
        (self.clients as f64 * self.typing_share).round() as usize
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
    pub protocol: Protocol,
    /// The v2 mix, counted apart from the deliveries above (which are messages only).
    pub mix: MixReport,
}

/// What the v2 mix sent, and what the clients read of it while they read the run's
/// messages (frames still in flight when the last client has every message are not).
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    pub typers: usize,
    pub typing_every_ms: u64,
    /// `typing` frames the typers sent, and the ephemeral frames all clients received.
    pub typing_sent: u64,
    pub typing_received: u64,
    pub react_every: usize,
    /// Reactions the senders sent, and the `react` events all clients received.
    pub reactions_sent: u64,
    pub reactions_received: u64,
    /// `error` frames received: a run with any did not go as planned.
    pub errors_received: u64,
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
    /// Per sender: the offset of the latest message its reader has read.
    recent: Vec<AtomicU64>,
    /// What the clients read of the v2 mix, added as each reader stops.
    typing_received: AtomicU64,
    reactions_received: AtomicU64,
    errors_received: AtomicU64,
    typing_sent: AtomicU64,
    reactions_sent: AtomicU64,
}

/// One client's reading side: counts, latencies, acknowledgements, and what it reads of
/// the v2 mix. Returns when `stop` is cancelled (or the connection ends): having every
/// message it expects, it reads on only to count the mix.
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
            if received == shared.expected_per_client {
                continue;
            }
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
                if let Some(sender) = sender_index {
                    if text.starts_with(&own_prefix) {
                        shared.acks[sender].fetch_add(1, Ordering::Release);
                        shared.ack_notify[sender].notify_one();
                    }
                    shared.recent[sender].store(reader.last_message, Ordering::Relaxed);
                }
                if received == shared.expected_per_client {
                    shared.done.fetch_add(1, Ordering::AcqRel);
                    shared.all_done.notify_one();
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
    let extras = reader.extras;
    shared
        .typing_received
        .fetch_add(extras.typing, Ordering::Relaxed);
    shared
        .reactions_received
        .fetch_add(extras.reactions, Ordering::Relaxed);
    shared
        .errors_received
        .fetch_add(extras.errors, Ordering::Relaxed);
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
    let typers = plan.typers();
    if (typers > 0 || plan.react_every > 0) && servers.protocol != Protocol::V2 {
        bail!("typing and reactions are chat.v2.json's: run with --v2");
    }
    if typers > plan.clients - plan.senders {
        bail!(
            "{typers} typers but only {} clients that do not send",
            plan.clients - plan.senders
        );
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
        recent: (0..plan.senders).map(|_| AtomicU64::new(0)).collect(),
        typing_received: AtomicU64::new(0),
        reactions_received: AtomicU64::new(0),
        errors_received: AtomicU64::new(0),
        typing_sent: AtomicU64::new(0),
        reactions_sent: AtomicU64::new(0),
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
                plan.clone(),
                shared.clone(),
                servers.clone(),
            )));
        } else if index >= plan.clients - typers {
            let typer = index - (plan.clients - typers);
            let phase = plan.typing_every.mul_f64(typer as f64 / typers as f64);
            sending.push(tokio::spawn(type_on(
                sink,
                (phase, plan.typing_every),
                shared.clone(),
                stop.clone(),
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
    let mix = MixReport {
        typers,
        typing_every_ms: plan.typing_every.as_millis() as u64,
        typing_sent: shared.typing_sent.load(Ordering::Relaxed),
        typing_received: shared.typing_received.load(Ordering::Relaxed),
        react_every: plan.react_every,
        reactions_sent: shared.reactions_sent.load(Ordering::Relaxed),
        reactions_received: shared.reactions_received.load(Ordering::Relaxed),
        errors_received: shared.errors_received.load(Ordering::Relaxed),
    };
    Ok(report(
        plan,
        (servers.protocol, mix),
        connect_seconds,
        send_seconds,
        received,
        &histogram,
        before.zip(after),
    ))
}

fn report(
    plan: &FanoutPlan,
    (protocol, mix): (Protocol, MixReport),
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
        protocol,
        mix,
    }
}

/// One typing client: `{"type":"typing"}` every `period`, the first after `phase` (the
/// typers' phases spread over the period), until `stop`.
async fn type_on(
    mut sink: SplitSink<Socket, Message>,
    (phase, period): (Duration, Duration),
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<SplitSink<Socket, Message>> {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    // A late tick is typing said late, not twice: the server would count only one.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(sink),
            _ = ticks.tick() => {}
        }
        sink.send(Message::text(
            chat::v2::Request::Typing { nonce: None }.to_json(),
        ))
        .await
        .context("sending typing")?;
        shared.typing_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// One sender: `messages` messages, `b <seq> <sent-at-ns>`, paced by `pace`, and a
/// reaction to the latest message it has read after every `react_every` of its own.
async fn send(
    mut sink: SplitSink<Socket, Message>,
    index: usize,
    plan: FanoutPlan,
    shared: Arc<Shared>,
    servers: Servers,
) -> anyhow::Result<SplitSink<Socket, Message>> {
    let (messages, pace) = (plan.messages, plan.pace);
    // Never the same message twice: reacting again with the same emoji changes nothing.
    let mut reacted_to = 0;
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
        if plan.react_every > 0 && (seq + 1) % plan.react_every as u64 == 0 {
            let target = shared.recent[index].load(Ordering::Relaxed);
            if target > reacted_to {
                reacted_to = target;
                let react = chat::v2::Request::React {
                    target,
                    emoji: REACTION.to_owned(),
                    nonce: None,
                };
                sink.send(Message::text(react.to_json()))
                    .await
                    .context("sending a reaction")?;
                shared.reactions_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(sink)
}
