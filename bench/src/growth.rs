//! The growth scenario: for each size N, a fresh server, N clients joining one room at
//! once, one message to all of them a number of times, and all N dropping and coming
//! back at once asking to resume. Measures how a room's costs grow with its size.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::lean::LeanSocket;
use crate::probe::{ServerProbe, Usage};
use crate::readers::ReadingPool;
use crate::{ID_BASE, Protocol, Servers, Socket};

/// A growth run: one fresh server per size.
#[derive(Debug, Clone)]
pub struct GrowthPlan {
    /// Room sizes, one run each.
    pub sizes: Vec<usize>,
    /// The `chat-server` binary to start for each size.
    pub server: std::path::PathBuf,
    /// Arguments given to it besides `--port` and the limits that benchmarks turn off.
    pub server_args: Vec<String>,
    /// Messages sent to the whole room one after another (each waits for the last).
    pub messages: usize,
    pub connect_concurrency: usize,
    /// How long each phase may take before the run fails.
    pub timeout: Duration,
}

/// One size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct GrowthReport {
    pub clients: usize,
    pub protocol: Protocol,
    /// `/proc/loadavg`'s 1-minute figure before the run and after it: the machine is
    /// shared, and other work moves every figure here.
    pub load_before: f64,
    pub load_after: f64,
    /// From the first connection until every client had the sentinel's first message
    /// (which the server's total order puts after every join).
    pub join_storm_seconds: f64,
    pub server_cpu_per_join_us: f64,
    pub server_rss_empty_kib: u64,
    /// Taken 2 s after the storm (`SETTLE`), with every connection idle.
    pub server_rss_held_kib: u64,
    pub server_rss_per_connection_kib: f64,
    /// `messages` messages to all, one at a time: deliveries counted, server CPU per
    /// delivery, and the latency from the send to each client's receipt.
    pub fanout_messages: usize,
    pub fanout_deliveries: u64,
    pub fanout_lost: u64,
    pub fanout_cpu_per_delivery_us: f64,
    /// The same for this process, the load generator, which shares the machine.
    pub fanout_load_generator_cpu_per_delivery_us: f64,
    pub fanout_p50_ms: f64,
    pub fanout_p99_ms: f64,
    pub fanout_max_ms: f64,
    /// All N dropped without a close, then all back at once asking to resume (v1 and
    /// v2; plain clients just reconnect): until every one had its welcome (its own join
    /// for plain), and until every one had a message sent after all were back.
    pub reconnect_welcomed_seconds: f64,
    pub reconnect_caught_up_seconds: f64,
    /// Welcomes that said `recovered: true`.
    pub reconnect_recovered: usize,
    pub reconnect_server_cpu_seconds: f64,
}

/// What one client's reader has seen, kept across its reconnect.
#[derive(Default)]
struct Seen {
    /// Welcomes (v1, v2) or own joins (plain) read, over all its connections.
    welcomes: AtomicUsize,
    recovered: AtomicBool,
    /// The offset of the last event read (told by each connection's [`Reader`] once it
    /// is dropped), and the epoch of the last welcome: what a resume asks from.
    offset: AtomicU64,
    epoch: Mutex<String>,
}

/// When each client received each round's message, in microseconds since the run's
/// start (0: not yet).
struct Receipts {
    clients: usize,
    at: Vec<AtomicU64>,
}

impl Receipts {
    fn note(&self, round: usize, client: usize, micros: u64) {
        if let Some(slot) = self.at.get(round * self.clients + client) {
            let _ = slot.compare_exchange(0, micros.max(1), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn all_have(&self, round: usize) -> bool {
        self.round(round)
            .iter()
            .all(|at| at.load(Ordering::Acquire) != 0)
    }

    fn round(&self, round: usize) -> &[AtomicU64] {
        &self.at[round * self.clients..(round + 1) * self.clients]
    }
}

/// How long the room is left idle after the storm before its memory is read: past the
/// server's allocator's one-second decay (`.cargo/config.toml`), so that what the storm
/// freed and jemalloc has not yet returned is not counted as the idle connections'.
/// (Half a second, as before 2026-12-05, counted some of it: measured side by side in
/// four runs at 16 000, 5.62-5.81 KiB a connection after half a second and 5.50-5.65
/// after two; at 4 000, 7.3-7.9 against 6.1.)
const SETTLE: Duration = Duration::from_secs(2);

/// The threads that read the clients' connections: one per core, as the server has
/// workers.
const READING_THREADS: usize = 2;

/// The text of round `round`'s message; the bench's clients look for this prefix.
const ROUND: &str = "growth ";

/// Clients that connect from one loopback address. From one address, each `connect`
/// searches the ephemeral port range for a port not yet used towards the server's
/// address and port, a search that grows with the connections already open: at 16 000
/// it was 46 % of this process's samples during the storm (`__inet_check_established`,
/// `__inet_hash_connect` in `perf record -g -p <chat-bench>`), time taken from the
/// server on a shared machine. A room's real clients come from many addresses.
const CLIENTS_PER_ADDRESS: usize = 1000;

/// The loopback address client `client` connects from: 127.0.0.2 for the first
/// [`CLIENTS_PER_ADDRESS`], and so on (the server is at 127.0.0.1, as is the sentinel).
fn source_address(client: usize) -> IpAddr {
    let first = u32::from(Ipv4Addr::new(127, 0, 0, 2));
    IpAddr::V4(Ipv4Addr::from(
        first + (client / CLIENTS_PER_ADDRESS) as u32,
    ))
}

/// Runs every size in turn, each against a fresh server.
pub async fn growth(protocol: Protocol, plan: &GrowthPlan) -> anyhow::Result<Vec<GrowthReport>> {
    let mut reports = Vec::new();
    for &clients in &plan.sizes {
        let mut server = FreshServer::start(&plan.server, &plan.server_args)?;
        let servers = Servers {
            urls: vec![server.url.clone()],
            room: None,
            protocol,
        };
        let result = one_size(&servers, plan, clients, &server.probe).await;
        server.stop();
        let report = result.with_context(|| format!("{clients} clients"))?;
        eprintln!("{}", serde_json::to_string(&report)?);
        reports.push(report);
    }
    Ok(reports)
}

/// A server started for one size, stopped (killed) when done.
struct FreshServer {
    child: Child,
    url: Url,
    probe: ServerProbe,
}

impl FreshServer {
    fn start(binary: &std::path::Path, args: &[String]) -> anyhow::Result<Self> {
        // A port the kernel just gave out, handed over: never a fixed one, as others
        // run servers on this machine.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .args(["--port", &port.to_string()])
            .args(["--rate-limit", "0", "--max-connections-per-ip", "0"])
            .args(["--handshake-rate-per-ip", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let probe = ServerProbe::new(child.id())?;
        let mut server = Self {
            child,
            url: Url::parse(&format!("ws://127.0.0.1:{port}"))?,
            probe,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || server.child.try_wait()?.is_some() {
                server.stop();
                bail!("{} did not listen on {port}", binary.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FreshServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One fresh server's run at `clients`.
async fn one_size(
    servers: &Servers,
    plan: &GrowthPlan,
    clients: usize,
    probe: &ServerProbe,
) -> anyhow::Result<GrowthReport> {
    let load_before = load_average();
    let rounds = plan.messages + 2;
    let receipts = Arc::new(Receipts {
        clients,
        at: (0..rounds * clients).map(|_| AtomicU64::new(0)).collect(),
    });
    let origin = Instant::now();
    let seen: Vec<Arc<Seen>> = (0..clients).map(|_| Arc::default()).collect();
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let empty = probe.usage()?;

    // The storm: everyone at once (as many handshakes in flight as allowed), then the
    // sentinel's first message, which reaches each client after every join before it.
    let started = Instant::now();
    let readers = Arc::new(ReadingPool::new(READING_THREADS)?);
    open_all(servers, &readers, &seen, &receipts, origin, &gate, false).await?;
    wait_until(plan.timeout, "the clients' welcomes", || {
        seen.iter()
            .all(|seen| seen.welcomes.load(Ordering::Acquire) >= 1)
    })
    .await?;
    let mut sentinel = Sentinel::join(servers).await?;
    sentinel.say(0).await?;
    wait_until(plan.timeout, "the storm's end", || receipts.all_have(0)).await?;
    let join_storm_seconds = started.elapsed().as_secs_f64();
    let stormed = probe.usage()?;
    tokio::time::sleep(SETTLE).await;
    let held = probe.usage()?;

    // One message to all, `messages` times, each once the last has reached everyone.
    let before_fanout = probe.usage()?;
    let load_generator = ServerProbe::new(std::process::id())?;
    let generator_before_fanout = load_generator.usage()?;
    let mut sent_at = Vec::with_capacity(plan.messages);
    for round in 1..=plan.messages {
        sent_at.push(origin.elapsed().as_micros() as u64);
        sentinel.say(round).await?;
        let deadline = Instant::now() + plan.timeout;
        while !receipts.all_have(round) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let after_fanout = probe.usage()?;
    let generator_after_fanout = load_generator.usage()?;
    let mut latencies = Vec::with_capacity(plan.messages * clients);
    let mut lost = 0;
    for (round, sent) in (1..=plan.messages).zip(&sent_at) {
        for at in receipts.round(round) {
            match at.load(Ordering::Acquire) {
                0 => lost += 1,
                at => latencies.push(at.saturating_sub(*sent)),
            }
        }
    }
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |micros| *micros as f64 / 1000.0)
    };
    let deliveries = latencies.len() as u64;

    // Everyone drops without a close, then everyone is back at once, asking to resume.
    readers.drop_all().await?;
    eprintln!("{clients} clients dropped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_reconnect = probe.usage()?;
    let started = Instant::now();
    open_all(servers, &readers, &seen, &receipts, origin, &gate, true).await?;
    wait_until(plan.timeout, "the resumed clients' welcomes", || {
        seen.iter()
            .all(|seen| seen.welcomes.load(Ordering::Acquire) >= 2)
    })
    .await?;
    let reconnect_welcomed_seconds = started.elapsed().as_secs_f64();
    let last = plan.messages + 1;
    sentinel.say(last).await?;
    wait_until(plan.timeout, "the resumed clients' catching up", || {
        receipts.all_have(last)
    })
    .await?;
    let reconnect_caught_up_seconds = started.elapsed().as_secs_f64();
    let after_reconnect = probe.usage()?;
    readers.drop_all().await?;
    let cpu = |from: &Usage, to: &Usage| to.cpu_seconds - from.cpu_seconds;
    let per_delivery_us = |from: &Usage, to: &Usage| cpu(from, to) * 1e6 / deliveries.max(1) as f64;
    Ok(GrowthReport {
        clients,
        protocol: servers.protocol,
        load_before,
        load_after: load_average(),
        join_storm_seconds,
        server_cpu_per_join_us: cpu(&empty, &stormed) * 1e6 / clients as f64,
        server_rss_empty_kib: empty.rss_kib,
        server_rss_held_kib: held.rss_kib,
        server_rss_per_connection_kib: held.rss_kib.saturating_sub(empty.rss_kib) as f64
            / clients as f64,
        fanout_messages: plan.messages,
        fanout_deliveries: deliveries,
        fanout_lost: lost,
        fanout_cpu_per_delivery_us: per_delivery_us(&before_fanout, &after_fanout),
        fanout_load_generator_cpu_per_delivery_us: per_delivery_us(
            &generator_before_fanout,
            &generator_after_fanout,
        ),
        fanout_p50_ms: quantile(0.5),
        fanout_p99_ms: quantile(0.99),
        fanout_max_ms: latencies.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        reconnect_welcomed_seconds,
        reconnect_caught_up_seconds,
        reconnect_recovered: seen
            .iter()
            .filter(|seen| seen.recovered.load(Ordering::Acquire))
            .count(),
        reconnect_server_cpu_seconds: cpu(&before_reconnect, &after_reconnect),
    })
}

/// Polls `done` until it holds, or fails after `timeout` naming `what`.
async fn wait_until(timeout: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} took more than {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The client that says each round's message.
struct Sentinel {
    socket: futures_util::stream::SplitSink<Socket, Message>,
    servers: Servers,
}

impl Sentinel {
    async fn join(servers: &Servers) -> anyhow::Result<Self> {
        let socket = servers.connect(&servers.endpoint(0, ID_BASE - 1)).await?;
        let (socket, mut stream) = socket.split();
        // Read and dropped: the sentinel hears the room like anyone else.
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        Ok(Self {
            socket,
            servers: servers.clone(),
        })
    }

    async fn say(&mut self, round: usize) -> anyhow::Result<()> {
        let message = self.servers.message(format!("{ROUND}{round}"));
        self.socket.send(message).await?;
        Ok(())
    }
}

/// Connects every client (resuming from what it saw, if `resume`) and hands it to
/// `readers`.
async fn open_all(
    servers: &Servers,
    readers: &Arc<ReadingPool>,
    seen: &[Arc<Seen>],
    receipts: &Arc<Receipts>,
    origin: Instant,
    gate: &Arc<Semaphore>,
    resume: bool,
) -> anyhow::Result<()> {
    let connected = Arc::new(AtomicUsize::new(0));
    let progress = tokio::spawn(crate::report_progress(
        "connected",
        connected.clone(),
        seen.len(),
    ));
    let mut tasks = Vec::with_capacity(seen.len());
    for (client, seen) in seen.iter().enumerate() {
        let id = ID_BASE + client as u64;
        let mut url = servers.endpoint(client, id);
        if resume && servers.protocol != Protocol::Plain {
            let epoch = seen.epoch.lock().expect("not poisoned").clone();
            let since = seen.offset.load(Ordering::Acquire);
            url.push_str(&format!("?since={since}&epoch={epoch}"));
        }
        let (servers, seen, receipts) = (servers.clone(), seen.clone(), receipts.clone());
        let (gate, connected, readers) = (gate.clone(), connected.clone(), readers.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await?;
            let source = Some(source_address(client));
            let socket = LeanSocket::connect(&url, servers.protocol.subprotocol(), source).await?;
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            let mut reader = Reader {
                protocol: servers.protocol,
                own_join: format!("Client #{id} has entered the chat"),
                client,
                offset: 0,
                seen,
                receipts,
                origin,
            };
            readers.add(socket, client, Box::new(move |text| reader.read(text)))
        }));
    }
    for task in tasks {
        task.await??;
    }
    progress.abort();
    Ok(())
}

/// One client's reader: notes its welcome, the last offset, and each round's receipt,
/// reading as little of each frame as that takes, on a [`ReadingPool`] (thousands of
/// clients share the machine's two cores with the server).
struct Reader {
    protocol: Protocol,
    own_join: String,
    client: usize,
    /// The offset of the last event read, told to `seen` when the connection is
    /// dropped: kept here, beside the rest of the reader, it costs no trip to another
    /// cache line at every frame (`seen.offset`'s atomic was a third of this reader's
    /// samples under `perf` at 16 000 clients).
    offset: u64,
    seen: Arc<Seen>,
    receipts: Arc<Receipts>,
    origin: Instant,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.seen.offset.fetch_max(self.offset, Ordering::AcqRel);
    }
}

impl Reader {
    fn read(&mut self, text: &str) {
        let round_said = if self.protocol == Protocol::Plain {
            if text == self.own_join {
                self.seen.welcomes.fetch_add(1, Ordering::AcqRel);
                return;
            }
            text.split_once(": ").map(|(_, said)| said)
        } else if let Some(rest) = text.strip_prefix(r#"{"offset":"#) {
            if let Some(offset) = rest
                .split_once(',')
                .and_then(|(offset, _)| offset.parse().ok())
            {
                self.offset = self.offset.max(offset);
            }
            // Fixed prefixes only: a presence batch of thousands of members is not
            // searched through for a message.
            crate::quick_message(text).map(|(_, _, said)| said)
        } else {
            if text.starts_with(r#"{"type":"welcome""#) {
                self.welcome(text);
            }
            None
        };
        if let Some(round) = round_said
            .and_then(|said| said.strip_prefix(ROUND))
            .and_then(|round| round.parse().ok())
        {
            let micros = self.origin.elapsed().as_micros() as u64;
            self.receipts.note(round, self.client, micros);
        }
    }

    /// Reads the epoch, the offset and `recovered` of a welcome without parsing its
    /// member list, which today's server makes as long as the room.
    fn welcome(&mut self, text: &str) {
        let field = |name: &str| {
            let start = text.find(name)? + name.len();
            let rest = &text[start..];
            let end = rest.find([',', '"', '}'])?;
            Some(&rest[..end])
        };
        if let Some(epoch) = field(r#""epoch":""#) {
            *self.seen.epoch.lock().expect("not poisoned") = epoch.to_owned();
        }
        if let Some(offset) = field(r#""offset":"#).and_then(|offset| offset.parse().ok()) {
            self.offset = self.offset.max(offset);
        }
        // After the member list: looked for from the end.
        let recovered = text
            .rfind(r#""recovered":"#)
            .is_some_and(|at| text[at..].starts_with(r#""recovered":true"#));
        self.seen.recovered.store(recovered, Ordering::Release);
        self.seen.welcomes.fetch_add(1, Ordering::AcqRel);
    }
}
