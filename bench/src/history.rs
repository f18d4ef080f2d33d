//! The history scenario (`chat.v2.json`): a room filled with N messages, then W writers
//! keep it busy at a fixed rate while R readers ask for random pages of its history and
//! search it; page and search latencies, and the server's CPU per live delivery.
//!
//! Every client is one task over one socket: it reads the live messages (counting them
//! as deliveries), and, as the run's phase says, sends its share of the fill, its share
//! of the writes, or its requests, one at a time (a reader waits for each answer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::fanout::Latency;
use crate::probe::ServerProbe;
use crate::{PlainReader, Protocol, Servers, Socket, connect_all};

/// A history run.
#[derive(Debug, Clone)]
pub struct HistoryPlan {
    /// Messages the writers put in the room before the measured phase.
    pub fill: usize,
    /// The fill's pace in messages a second over all writers; `None` for as fast as the
    /// server takes them (each writer keeps [`FILL_WINDOW`] unechoed).
    pub fill_rate: Option<f64>,
    pub writers: usize,
    /// Messages a second over all writers while the readers read.
    pub write_rate: f64,
    pub readers: usize,
    /// Readers connect and receive the live messages but send no requests: the same run
    /// without the reading, to compare the fan-out's CPU with.
    pub quiet_readers: bool,
    /// Requests a second per reader (fewer if answers take longer: one at a time).
    pub request_rate: f64,
    /// Every K-th request of a reader is a search, the others pages; 0 for no search.
    pub search_every: usize,
    /// Events asked for per page or search.
    pub limit: usize,
    /// How long the measured phase lasts.
    pub duration: Duration,
    /// Distinct words the messages carry, one each (`kw0000`, `kw0001`, …); a search
    /// asks for one of them.
    pub words: usize,
    pub connect_concurrency: usize,
}

/// Fill messages a writer may have sent but not seen echoed, when the fill is unpaced.
pub const FILL_WINDOW: u64 = 64;

/// What one kind of request measured.
#[derive(Debug, Clone, Serialize)]
pub struct RequestReport {
    /// Requests answered (errors included).
    pub answered: u64,
    /// Answers that were `error` frames: a run with any is suspect.
    pub errors: u64,
    /// Answers with no events at all.
    pub empty: u64,
    /// Events per answer, on average.
    pub events_per_answer: f64,
    /// From sending the request to reading its whole answer.
    pub latency: Latency,
}

/// What a history run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    pub protocol: Protocol,
    pub fill: usize,
    pub fill_seconds: f64,
    pub fill_per_second: f64,
    /// The newest offset seen when the measured phase ended, and the server's
    /// `--history` (from the welcome): pages asked for `before` an offset in the last
    /// `history` of them.
    pub latest_offset: u64,
    pub server_history: u64,
    pub writers: usize,
    pub write_rate: f64,
    pub readers: usize,
    pub quiet_readers: bool,
    pub request_rate_per_reader: f64,
    pub limit: usize,
    pub measured_seconds: f64,
    /// Messages the writers sent in the measured phase.
    pub written: u64,
    /// Those messages as every client (writers and readers) received them, in the
    /// measured phase.
    pub deliveries: u64,
    /// From a writer's send to its own echo.
    pub write_echo_latency: Latency,
    pub pages: RequestReport,
    pub searches: RequestReport,
    pub server_cpu_seconds: Option<f64>,
    /// The server's CPU in the measured phase over the deliveries in it.
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_kib: Option<u64>,
}

/// Where the run is; clients follow it through a `watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Fill,
    Measure,
    Done,
}

/// Counts and histograms of one kind of request, shared by the readers.
struct Requests {
    answered: AtomicU64,
    errors: AtomicU64,
    empty: AtomicU64,
    events: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
}

impl Requests {
    fn new() -> Self {
        Self {
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            empty: AtomicU64::new(0),
            events: AtomicU64::new(0),
            latencies: Mutex::new(new_histogram()),
        }
    }

    fn record(&self, micros: u64, events: Option<usize>) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        match events {
            None => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Some(0) => {
                self.empty.fetch_add(1, Ordering::Relaxed);
            }
            Some(events) => {
                self.events.fetch_add(events as u64, Ordering::Relaxed);
            }
        }
        let _ = self
            .latencies
            .lock()
            .expect("no reader panics holding it")
            .record(micros.max(1));
    }

    fn report(&self) -> RequestReport {
        let answered = self.answered.load(Ordering::Relaxed);
        let histogram = self.latencies.lock().expect("no reader panics holding it");
        RequestReport {
            answered,
            errors: self.errors.load(Ordering::Relaxed),
            empty: self.empty.load(Ordering::Relaxed),
            events_per_answer: self.events.load(Ordering::Relaxed) as f64 / answered.max(1) as f64,
            latency: latency(&histogram),
        }
    }
}

/// What every client of one run shares.
struct Shared {
    start: Instant,
    /// The newest offset any client has seen.
    latest: AtomicU64,
    /// The server's `--history`, from a welcome.
    history: AtomicU64,
    /// Measured-phase messages received, by all clients.
    deliveries: AtomicU64,
    written: AtomicU64,
    fill_echoed: AtomicU64,
    fill_progress: Notify,
    echoes: Mutex<Histogram<u64>>,
    pages: Requests,
    searches: Requests,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    Latency {
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    }
}

/// What a client is for.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Writer `n` of `plan.writers`.
    Writer(usize),
    Reader,
}

/// A small xorshift generator: the bench needs uniform-enough offsets, not a crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// The fields of a v2 welcome this scenario needs.
#[derive(Deserialize)]
struct WelcomeHead {
    offset: u64,
    limits: WelcomeLimits,
}

#[derive(Deserialize)]
struct WelcomeLimits {
    history: u64,
}

/// An `error` frame's nonce, if it has one.
#[derive(Deserialize)]
struct ErrorHead {
    nonce: Option<String>,
}

/// The request a reader waits on.
struct Pending {
    nonce: String,
    sent: Instant,
    search: bool,
}

impl Pending {
    /// Counts the answer (`None`: an error) and its latency.
    fn record(self, shared: &Shared, events: Option<usize>) {
        let requests = if self.search {
            &shared.searches
        } else {
            &shared.pages
        };
        requests.record(self.sent.elapsed().as_micros() as u64, events);
    }
}

/// Ticks of `interval`, or never without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// An interval of `per_second` ticks a second, the first after `phase` periods (0 to 1)
/// so that clients spread theirs over one period.
fn pace(per_second: f64, phase: f64) -> Interval {
    let period = Duration::from_secs_f64(1.0 / per_second);
    let mut interval =
        tokio::time::interval_at(tokio::time::Instant::now() + period.mul_f64(phase), period);
    // Ticks missed are caught up at once, keeping the rate: a writer whose period is
    // below the timer's millisecond sends in small bursts, and a reader whose answer
    // came late asks again as soon as it has it, until it is back on schedule.
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    interval
}

/// One client, start to end: returns when the run is done or the connection fails.
#[allow(clippy::too_many_arguments)]
async fn client_task(
    mut socket: Socket,
    id: u64,
    role: Role,
    plan: HistoryPlan,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    joined: Arc<Notify>,
    servers: Servers,
) -> anyhow::Result<()> {
    let mut reader = PlainReader::new(&servers);
    let own_join = format!("Client #{id} has entered the chat");
    let own_prefix = format!("Client #{id}: ");
    let mut rng = Rng::new(id);
    let (fill_quota, spread) = match role {
        Role::Writer(n) => {
            let share = plan.fill / plan.writers + usize::from(n < plan.fill % plan.writers);
            (share as u64, n as f64 / plan.writers as f64)
        }
        Role::Reader => (0, rng.below(1000) as f64 / 1000.0),
    };
    let (mut fill_sent, mut fill_echoed, mut seq) = (0u64, 0u64, 0u64);
    let mut pending: Option<Pending> = None;
    let mut requests = 0u64;
    let mut ticks: Option<Interval> = None;
    let mut current = Phase::Connecting;
    loop {
        let unpaced_fill = matches!(role, Role::Writer(_))
            && current == Phase::Fill
            && plan.fill_rate.is_none()
            && fill_sent < fill_quota
            && fill_sent - fill_echoed < FILL_WINDOW;
        let may_tick = match role {
            Role::Writer(_) => current != Phase::Fill || fill_sent < fill_quota,
            Role::Reader => pending.is_none(),
        };
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                current = *phase.borrow_and_update();
                ticks = match (current, role) {
                    (Phase::Done, _) => return Ok(()),
                    (Phase::Fill, Role::Writer(_)) => plan
                        .fill_rate
                        .map(|rate| pace(rate / plan.writers as f64, spread)),
                    (Phase::Measure, Role::Writer(_)) if plan.write_rate > 0.0 => {
                        Some(pace(plan.write_rate / plan.writers as f64, spread))
                    }
                    (Phase::Measure, Role::Reader) if !plan.quiet_readers => {
                        Some(pace(plan.request_rate, spread))
                    }
                    _ => None,
                };
            }
            frame = socket.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error).context("reading"),
                    None => bail!("the server closed the connection"),
                };
                let text = text.as_str();
                if text.starts_with(r#"{"type":"history""#)
                    || text.starts_with(r#"{"type":"search""#)
                {
                    let page: chat::v2::Page =
                        serde_json::from_str(text).context("reading a page")?;
                    let answers = |asked: &mut Pending| page.nonce.as_ref() == Some(&asked.nonce);
                    if let Some(asked) = pending.take_if(answers) {
                        asked.record(&shared, Some(page.events.len()));
                    }
                    continue;
                }
                if text.starts_with(r#"{"type":"error""#) {
                    let error: ErrorHead =
                        serde_json::from_str(text).context("reading an error")?;
                    eprintln!("client {id}: {text}");
                    let answers = |asked: &mut Pending| error.nonce.as_ref() == Some(&asked.nonce);
                    if let Some(asked) = pending.take_if(answers) {
                        asked.record(&shared, None);
                    }
                    continue;
                }
                if text.starts_with(r#"{"type":"welcome""#) {
                    let welcome: WelcomeHead =
                        serde_json::from_str(text).context("reading the welcome")?;
                    shared.latest.fetch_max(welcome.offset, Ordering::Relaxed);
                    shared.history.store(welcome.limits.history, Ordering::Relaxed);
                }
                if let Some((offset, _, _)) = crate::quick_message(text) {
                    shared.latest.fetch_max(offset, Ordering::Relaxed);
                }
                let Some(line) = reader.read(text) else {
                    continue;
                };
                if line == own_join {
                    joined.notify_one();
                    continue;
                }
                let Some((_, said)) = line.split_once(": ") else {
                    continue;
                };
                let own = line.starts_with(&own_prefix);
                if let Some(rest) = said.strip_prefix("w ") {
                    if current == Phase::Measure {
                        shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                    let sent_at = rest.split(' ').nth(1).and_then(|at| at.parse::<u64>().ok());
                    if let (true, Some(sent_at)) = (own, sent_at) {
                        let now = shared.start.elapsed().as_nanos() as u64;
                        let micros = (now.saturating_sub(sent_at) / 1000).max(1);
                        let mut echoes = shared.echoes.lock().expect("no client panics holding it");
                        let _ = echoes.record(micros);
                    }
                } else if own && said.starts_with("f ") {
                    fill_echoed += 1;
                    shared.fill_echoed.fetch_add(1, Ordering::Relaxed);
                    shared.fill_progress.notify_one();
                }
            }
            () = tick(&mut ticks), if may_tick => match role {
                Role::Writer(_) if current == Phase::Fill => {
                    let word = seq % plan.words as u64;
                    let fill = servers.message(format!("f {seq} kw{word:04}"));
                    socket.send(fill).await.context("filling")?;
                    seq += 1;
                    fill_sent += 1;
                }
                Role::Writer(_) => {
                    let word = seq % plan.words as u64;
                    let sent_at = shared.start.elapsed().as_nanos() as u64;
                    let write = servers.message(format!("w {seq} {sent_at} kw{word:04}"));
                    socket.send(write).await.context("writing")?;
                    seq += 1;
                    shared.written.fetch_add(1, Ordering::Relaxed);
                }
                Role::Reader => {
                    requests += 1;
                    let nonce = requests.to_string();
                    let search = plan.search_every > 0
                        && requests.is_multiple_of(plan.search_every as u64);
                    let request = if search {
                        chat::v2::Request::Search {
                            text: format!("kw{:04}", rng.below(plan.words as u64)),
                            before: None,
                            limit: plan.limit as i64,
                            nonce: Some(nonce.clone()),
                        }
                    } else {
                        // Uniform over the offsets the server keeps: the last `history`.
                        let latest = shared.latest.load(Ordering::Relaxed);
                        let kept = shared.history.load(Ordering::Relaxed).min(latest);
                        let before = latest - kept + 1 + rng.below(kept + 1);
                        chat::v2::Request::History {
                            before: Some(before as i64),
                            after: None,
                            limit: plan.limit as i64,
                            nonce: Some(nonce.clone()),
                        }
                    };
                    pending = Some(Pending {
                        nonce,
                        sent: Instant::now(),
                        search,
                    });
                    let request = Message::text(request.to_json());
                    socket.send(request).await.context("asking")?;
                }
            },
            () = std::future::ready(()), if unpaced_fill => {
                let word = seq % plan.words as u64;
                let fill = servers.message(format!("f {seq} kw{word:04}"));
                socket.send(fill).await.context("filling")?;
                seq += 1;
                fill_sent += 1;
            }
        }
    }
}

/// Runs a history scenario and reports it.
pub async fn history(
    servers: &Servers,
    plan: &HistoryPlan,
    probe: Option<ServerProbe>,
) -> anyhow::Result<HistoryReport> {
    if servers.protocol != Protocol::V2 {
        bail!("history and search are chat.v2.json's: run with --v2");
    }
    if plan.writers == 0 && (plan.fill > 0 || plan.write_rate > 0.0) {
        bail!("filling or writing needs at least one writer");
    }
    if plan.words == 0 || plan.limit == 0 || plan.request_rate <= 0.0 {
        bail!("--words, --limit and --request-rate must be above 0");
    }
    let shared = Arc::new(Shared {
        start: Instant::now(),
        latest: AtomicU64::new(0),
        history: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        written: AtomicU64::new(0),
        fill_echoed: AtomicU64::new(0),
        fill_progress: Notify::new(),
        echoes: Mutex::new(new_histogram()),
        pages: Requests::new(),
        searches: Requests::new(),
    });
    let (phase, phases) = watch::channel(Phase::Connecting);
    let client_shared = shared.clone();
    let client_plan = plan.clone();
    let client_servers = servers.clone();
    let writers = plan.writers;
    let tasks = connect_all(
        servers,
        plan.writers + plan.readers,
        plan.connect_concurrency,
        move |client, id, socket, joined| {
            let role = if client < writers {
                Role::Writer(client)
            } else {
                Role::Reader
            };
            tokio::spawn(client_task(
                socket,
                id,
                role,
                client_plan.clone(),
                client_shared.clone(),
                phases.clone(),
                joined,
                client_servers.clone(),
            ))
        },
    )
    .await?;
    let failed = |tasks: &[tokio::task::JoinHandle<anyhow::Result<()>>]| {
        tasks.iter().any(tokio::task::JoinHandle::is_finished)
    };

    let fill_started = Instant::now();
    if plan.fill > 0 {
        phase.send_replace(Phase::Fill);
        let mut last_report = Instant::now();
        while shared.fill_echoed.load(Ordering::Relaxed) < plan.fill as u64 {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), shared.fill_progress.notified()).await;
            if failed(&tasks) {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!(
                    "filled {}/{}",
                    shared.fill_echoed.load(Ordering::Relaxed),
                    plan.fill
                );
            }
        }
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    if plan.fill > 0 {
        eprintln!("filled {} in {fill_seconds:.1} s", plan.fill);
    }

    let before = probe.map(|probe| probe.usage()).transpose()?;
    let measure_started = Instant::now();
    if !failed(&tasks) {
        phase.send_replace(Phase::Measure);
        tokio::time::sleep(plan.duration).await;
    }
    let measured_seconds = measure_started.elapsed().as_secs_f64();
    let after = probe.map(|probe| probe.usage()).transpose()?;
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let written = shared.written.load(Ordering::Relaxed);
    phase.send_replace(Phase::Done);
    for task in tasks {
        task.await?.context("a client failed")?;
    }

    let cpu = before
        .zip(after)
        .map(|(before, after)| after.cpu_seconds - before.cpu_seconds);
    let echoes = shared.echoes.lock().expect("no client panics holding it");
    Ok(HistoryReport {
        protocol: servers.protocol,
        fill: plan.fill,
        fill_seconds,
        fill_per_second: plan.fill as f64 / fill_seconds.max(1e-9),
        latest_offset: shared.latest.load(Ordering::Relaxed),
        server_history: shared.history.load(Ordering::Relaxed),
        writers: plan.writers,
        write_rate: plan.write_rate,
        readers: plan.readers,
        quiet_readers: plan.quiet_readers,
        request_rate_per_reader: plan.request_rate,
        limit: plan.limit,
        measured_seconds,
        written,
        deliveries,
        write_echo_latency: latency(&echoes),
        pages: shared.pages.report(),
        searches: shared.searches.report(),
        server_cpu_seconds: cpu,
        server_cpu_us_per_delivery: cpu.map(|cpu| cpu * 1e6 / deliveries.max(1) as f64),
        server_rss_kib: after.map(|after| after.rss_kib),
    })
}
