//! The mass-reconnect scenario, for `chat.v1.json`: N clients drop at once, the room
//! goes on without them, and all of them come back at once asking to resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat::v1::{EventKind, Request, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::probe::ServerProbe;
use crate::{ID_BASE, Protocol, Servers, Socket};

/// A mass-reconnect run.
#[derive(Debug, Clone)]
pub struct ResumePlan {
    pub clients: usize,
    /// Messages said while the clients are away (their leaves are missed too).
    pub missed_messages: usize,
    pub connect_concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    pub clients: usize,
    pub missed_messages: usize,
    /// Clients whose welcome said `recovered: true`.
    pub recovered: usize,
    /// Events replayed to all of them together, and to each on average.
    pub replayed_events: u64,
    pub replayed_per_client: f64,
    /// From the first reconnect until every client had its own join again.
    pub reconnect_seconds: f64,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_after_resume_kib: Option<u64>,
}

/// What one client knows of the room when it drops.
#[derive(Default)]
struct Seen {
    epoch: std::sync::OnceLock<String>,
    /// The offset of the last event it read.
    offset: AtomicU64,
}

/// Reads a v1 client's welcome and history up to its own join; returns the welcome's
/// epoch and whether it said `recovered`, the events replayed, and its join's offset.
async fn seated(socket: &mut Socket) -> anyhow::Result<(String, bool, u64, u64)> {
    let mut welcome: Option<chat::v1::Welcome> = None;
    let mut replayed = 0;
    while let Some(frame) = socket.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        // Events start with their offset, which is all that is needed of them here; a
        // JSON parse of every replayed event would make the load generator the limit.
        if let Some(welcome) = &welcome
            && let Some(offset) = quick_offset(&text)
        {
            if offset == welcome.offset + 1 {
                return Ok((welcome.epoch.clone(), welcome.recovered, replayed, offset));
            }
            replayed += 1;
            continue;
        }
        match ServerFrame::parse(&text).context("a v1 frame")? {
            ServerFrame::Welcome(frame) => welcome = Some(frame.welcome),
            ServerFrame::Event(event) => {
                let Some(welcome) = &welcome else {
                    bail!("an event before the welcome");
                };
                if event.offset == welcome.offset + 1 {
                    return Ok((
                        welcome.epoch.clone(),
                        welcome.recovered,
                        replayed,
                        event.offset,
                    ));
                }
                replayed += 1;
            }
        }
    }
    bail!("the connection ended before the client's own join")
}

/// The offset an event frame starts with.
fn quick_offset(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix(r#"{"offset":"#)?;
    rest.split_once(',')?.0.parse().ok()
}

/// Runs the scenario; the clients must speak v1 (`servers.protocol`).
pub async fn resume(
    servers: &Servers,
    plan: &ResumePlan,
    probe: Option<ServerProbe>,
) -> anyhow::Result<ResumeReport> {
    if servers.protocol != Protocol::V1 {
        bail!("resuming needs chat.v1.json: run with --v1");
    }
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    let stop = CancellationToken::new();
    let last_join = Arc::new(AtomicU64::new(0));
    let seated_count = Arc::new(AtomicUsize::new(0));
    let seen: Vec<Arc<Seen>> = (0..plan.clients).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (client, seen) in seen.iter().enumerate() {
        let url = servers.endpoint(client, ID_BASE + client as u64);
        let (servers, gate, stop, seen) =
            (servers.clone(), gate.clone(), stop.clone(), seen.clone());
        let (last_join, seated_count) = (last_join.clone(), seated_count.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await?;
            let mut socket = servers.connect(&url).await?;
            let (epoch, _, _, own) = seated(&mut socket).await?;
            drop(permit);
            let _ = seen.epoch.set(epoch);
            seen.offset.store(own, Ordering::Release);
            last_join.fetch_max(own, Ordering::AcqRel);
            seated_count.fetch_add(1, Ordering::AcqRel);
            // Reads until told to drop; then the socket goes without a close frame.
            loop {
                let frame = tokio::select! {
                    () = stop.cancelled() => break,
                    frame = socket.next() => frame,
                };
                let Some(Ok(Message::Text(text))) = frame else {
                    continue;
                };
                if let Ok(ServerFrame::Event(event)) = ServerFrame::parse(&text) {
                    seen.offset.store(event.offset, Ordering::Release);
                }
            }
            anyhow::Ok(url)
        }));
    }
    // Everyone has joined, then everyone has read the last join: the room is quiet.
    let deadline = Instant::now() + Duration::from_secs(120);
    let quiet = || {
        seated_count.load(Ordering::Acquire) == plan.clients
            && seen.iter().all(|seen| {
                seen.offset.load(Ordering::Acquire) >= last_join.load(Ordering::Acquire)
            })
    };
    while !quiet() {
        if Instant::now() > deadline {
            bail!("the clients never all caught up with the room");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected_rss = probe.map(|probe| probe.usage()).transpose()?;
    stop.cancel();
    let mut away = Vec::with_capacity(plan.clients);
    for (task, seen) in tasks.into_iter().zip(seen) {
        away.push((task.await??, seen));
    }
    eprintln!("{} clients dropped", plan.clients);

    // The room goes on: their leaves, then messages from someone else.
    let mut talker = servers.connect(&servers.endpoint(0, ID_BASE - 2)).await?;
    seated(&mut talker).await?;
    for n in 0..plan.missed_messages {
        let request = Request::Message {
            text: format!("while you were away {n}"),
            nonce: None,
        };
        talker.send(Message::text(request.to_json())).await?;
    }
    // Its own messages back: they are in the history. (The leaves may still be
    // arriving; they are missed events too, replayed or not by the time each asks.)
    let mut said = 0;
    while said < plan.missed_messages {
        let Some(frame) = talker.next().await else {
            bail!("the talker lost its connection");
        };
        if let Message::Text(text) = frame?
            && let Ok(ServerFrame::Event(event)) = ServerFrame::parse(&text)
            && matches!(event.kind, EventKind::Message { .. })
        {
            said += 1;
        }
    }

    // Everyone back at once, each asking for what it missed.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (url, seen) in away {
        let (servers, gate) = (servers.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let since = seen.offset.load(Ordering::Acquire);
            let epoch = seen.epoch.get().cloned().unwrap_or_default();
            let separator = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{separator}since={since}&epoch={epoch}");
            let mut socket = servers.connect(&url).await?;
            let (_, recovered, replayed, own) = seated(&mut socket).await?;
            anyhow::Ok((socket, recovered, replayed, own))
        }));
    }
    let mut back = Vec::with_capacity(tasks.len());
    let (mut recovered, mut replayed) = (0, 0);
    let done = CancellationToken::new();
    let last_rejoin = Arc::new(AtomicU64::new(0));
    let mut seen = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (mut socket, was_recovered, events, own) = task.await??;
        recovered += usize::from(was_recovered);
        replayed += events;
        last_rejoin.fetch_max(own, Ordering::AcqRel);
        let offset = Arc::new(AtomicU64::new(own));
        seen.push(offset.clone());
        // Back in the room, each reads on (the others' rejoins) as a client would.
        let done = done.clone();
        back.push(tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    () = done.cancelled() => break,
                    frame = socket.next() => frame,
                };
                match frame {
                    None => break,
                    Some(Ok(Message::Text(text))) => {
                        if let Some(event) = quick_offset(&text) {
                            offset.store(event, Ordering::Release);
                        }
                    }
                    Some(_) => {}
                }
            }
        }));
    }
    let reconnect_seconds = started.elapsed().as_secs_f64();
    // Memory is compared in the same state as before the drop: everyone connected and
    // the room quiet (every client has read the last rejoin), so that what is still
    // being fanned out is not counted as kept.
    let deadline = Instant::now() + Duration::from_secs(120);
    let last_rejoin = last_rejoin.load(Ordering::Acquire);
    while seen
        .iter()
        .any(|offset| offset.load(Ordering::Acquire) < last_rejoin)
    {
        if Instant::now() > deadline {
            bail!("the resumed clients never all caught up with the room");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_rss = probe.map(|probe| probe.usage()).transpose()?;
    done.cancel();
    for reader in back {
        reader.await?;
    }
    Ok(ResumeReport {
        clients: plan.clients,
        missed_messages: plan.missed_messages,
        recovered,
        replayed_events: replayed,
        replayed_per_client: replayed as f64 / plan.clients.max(1) as f64,
        reconnect_seconds,
        server_rss_connected_kib: connected_rss.map(|usage| usage.rss_kib),
        server_rss_after_resume_kib: after_rss.map(|usage| usage.rss_kib),
    })
}
