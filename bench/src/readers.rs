//! Reading thousands of [`LeanConnection`]s on a few threads, each with an epoll of its
//! own, and no task per connection.
//!
//! Threads of its own let the bench choose how it waits for events ([`EventWait`]):
//! over loopback, a reader asleep in `epoll_wait` is woken inside the server's write to
//! it, so the server under test pays for its clients' sleep. Tokio's reactor sleeps in
//! `epoll_wait` whenever it has nothing to do. The threads alone, sleeping as tokio
//! does, measured no better than tokio tasks (bench/README.md, "Readers that look
//! rather than sleep"); not sleeping is what the server gains.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;

use crate::lean::{LeanConnection, ReadBuffer};

/// What a reading thread does with each text frame of one connection.
pub(crate) type OnText = Box<dyn FnMut(&str) + Send>;

/// The token under which a reading thread's epoll reports its commands.
const COMMANDS: mio::Token = mio::Token(usize::MAX);

/// Events taken from the epoll at once: a round of one message to 16 000 clients makes
/// that many ready at about the same time.
const EVENTS_AT_ONCE: usize = 1024;

/// How long a busy reading thread pauses when its epoll has nothing, rather than sleep
/// in it. Over loopback, waking a thread asleep in `epoll_wait` is done inside the
/// server's `write` to it (`sock_def_readable`, 14.5 % of the server's samples under
/// `perf record -g` during the fan-out), a cost no server pays for clients across a
/// network; a thread that looks every 250 µs (plus the timer's slack) is not woken that
/// way while it is busy, only for the first event after it has gone back to sleep
/// ([`BUSY_FOR`]), and takes each look's events as one batch. Tried at 16 000 clients
/// (`chat-bench --v2 growth`), 2026-12-05 11:45-12:15 UTC, p99 of one message to all:
/// 50 µs 93.7, 96.9 ms; 100 µs 94.7, 106.9; 250 µs 91.2-94.7 in five runs; 1 ms 95.2,
/// 106.4; asleep in `epoll_wait` 101.0-112.8 in five. Kept for being no worse than the
/// others in fewer runs, not proven better. Receipts are noted up to a pause late, so
/// the latencies measured can only be longer for it.
const PAUSE_WHEN_BUSY: Duration = Duration::from_micros(250);

/// How long after its last event a reading thread is busy: past this, it sleeps in
/// `epoll_wait` until the next, so an idle room costs nothing. Longer than the gap
/// between two rounds of the growth scenario's messages.
const BUSY_FOR: Duration = Duration::from_millis(50);

/// Reading threads, each with its share of the connections.
pub(crate) struct ReadingPool {
    threads: Vec<ReadingThread>,
    /// Which thread the next connection goes to.
    next: AtomicUsize,
}

struct ReadingThread {
    commands: Option<mpsc::Sender<Command>>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

enum Command {
    Add {
        connection: LeanConnection,
        client: usize,
        on_text: OnText,
    },
    /// Drops every connection (without a close frame), then says so.
    DropAll(oneshot::Sender<()>),
}

/// A connection being read, with what its frames go to.
struct Reading {
    connection: LeanConnection,
    /// Named in the error, if the connection fails.
    client: usize,
    on_text: OnText,
}

impl ReadingPool {
    /// Starts `threads` reading threads.
    pub(crate) fn new(threads: usize) -> anyhow::Result<Self> {
        let threads = (0..threads.max(1))
            .map(|index| {
                let poll = mio::Poll::new().context("an epoll")?;
                let waker = Arc::new(mio::Waker::new(poll.registry(), COMMANDS)?);
                let (commands, inbox) = mpsc::channel();
                let thread = std::thread::Builder::new()
                    .name(format!("reader-{index}"))
                    .spawn(move || read_until_told(poll, inbox))?;
                Ok(ReadingThread {
                    commands: Some(commands),
                    waker,
                    thread: Some(thread),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands `connection` to one of the threads, which reads it until it ends, giving
    /// each text frame to `on_text`. Errors are printed, naming `client`.
    pub(crate) fn add(
        &self,
        connection: LeanConnection,
        client: usize,
        on_text: OnText,
    ) -> anyhow::Result<()> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        self.threads[index].tell(Command::Add {
            connection,
            client,
            on_text,
        })
    }

    /// Drops every connection, without a close frame, as a crash or a lost network
    /// would; returns once all are dropped.
    pub(crate) async fn drop_all(&self) -> anyhow::Result<()> {
        let mut dropped = Vec::with_capacity(self.threads.len());
        for thread in &self.threads {
            let (done, done_seen) = oneshot::channel();
            thread.tell(Command::DropAll(done))?;
            dropped.push(done_seen);
        }
        for done in dropped {
            done.await.context("a reading thread ended")?;
        }
        Ok(())
    }
}

impl ReadingThread {
    fn tell(&self, command: Command) -> anyhow::Result<()> {
        self.commands
            .as_ref()
            .expect("only dropped with the pool")
            .send(command)
            .ok()
            .context("a reading thread ended")?;
        self.waker.wake()?;
        Ok(())
    }

    fn tell_to_end(&mut self) {
        // A closed channel is the thread's sign to end.
        if self.commands.take().is_some() {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for ReadingPool {
    fn drop(&mut self) {
        // All told first, then joined: they end side by side.
        for thread in &mut self.threads {
            thread.tell_to_end();
        }
    }
}

/// Also when [`ReadingPool::new`] fails after starting some threads: they would
/// otherwise sleep in `epoll_wait` for ever.
impl Drop for ReadingThread {
    fn drop(&mut self) {
        self.tell_to_end();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One reading thread: reads its connections as they become readable, and takes
/// commands, until its channel closes.
fn read_until_told(mut poll: mio::Poll, inbox: mpsc::Receiver<Command>) {
    // Indexed by token; freed slots are reused.
    let mut readings: Vec<Option<Reading>> = Vec::new();
    let mut free = Vec::new();
    let mut events = mio::Events::with_capacity(EVENTS_AT_ONCE);
    let mut waiting = EventWait::default();
    let mut lent = ReadBuffer::new();
    loop {
        let polled = waiting.next(&mut poll, &mut events);
        if let Err(error) = polled {
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("a reading thread's epoll failed: {error}");
            return;
        }
        for event in &events {
            if event.token() == COMMANDS {
                loop {
                    match inbox.try_recv() {
                        Ok(Command::Add {
                            connection,
                            client,
                            on_text,
                        }) => {
                            let slot = free.pop().unwrap_or_else(|| {
                                readings.push(None);
                                readings.len() - 1
                            });
                            let mut reading = Reading {
                                connection,
                                client,
                                on_text,
                            };
                            // Registered edge-triggered: bytes already waiting give an
                            // event at once, and those read with the handshake's answer
                            // are handed out by the first `read_all`.
                            let registered = poll.registry().register(
                                reading.connection.stream(),
                                mio::Token(slot),
                                mio::Interest::READABLE,
                            );
                            match registered {
                                Ok(()) if reading.read(&mut lent, false) => {
                                    readings[slot] = Some(reading)
                                }
                                Ok(()) => free.push(slot),
                                Err(error) => {
                                    eprintln!("client {client}: not registered: {error}");
                                    free.push(slot);
                                }
                            }
                        }
                        Ok(Command::DropAll(done)) => {
                            readings.clear();
                            free.clear();
                            let _ = done.send(());
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                continue;
            }
            let slot = event.token().0;
            // An event may name a connection dropped earlier in this batch.
            if let Some(reading) = readings.get_mut(slot).and_then(Option::as_mut)
                && !reading.read(&mut lent, event.is_read_closed() || event.is_error())
            {
                readings[slot] = None;
                free.push(slot);
            }
        }
    }
}

impl Reading {
    /// Reads what has come (all of it, if `closing`): `false` once the connection is
    /// over.
    fn read(&mut self, lent: &mut ReadBuffer, closing: bool) -> bool {
        match self.connection.read_all(lent, &mut self.on_text, closing) {
            Ok(open) => open,
            Err(error) => {
                eprintln!("client {}: {error:#}", self.client);
                false
            }
        }
    }
}

/// How a reading thread waits for its epoll's events: while they come often, by looking
/// every 250 µs without sleeping in `epoll_wait`; after 50 ms without one, asleep in it.
pub struct EventWait {
    last_event: Instant,
}

impl Default for EventWait {
    fn default() -> Self {
        Self {
            last_event: Instant::now(),
        }
    }
}

impl EventWait {
    /// Fills `events` with at least one event (or fails).
    pub fn next(&mut self, poll: &mut mio::Poll, events: &mut mio::Events) -> std::io::Result<()> {
        loop {
            let busy = self.last_event.elapsed() < BUSY_FOR;
            poll.poll(events, busy.then_some(Duration::ZERO))?;
            if !events.is_empty() {
                self.last_event = Instant::now();
                return Ok(());
            }
            if busy {
                std::thread::sleep(PAUSE_WHEN_BUSY);
            }
        }
    }
}
