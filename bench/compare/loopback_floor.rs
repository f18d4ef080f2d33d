//! The floor under "one message to all" on this machine (issue 32): one small write to
//! each of N loopback TCP connections, with nothing else in the way: no WebSocket, no
//! room, no task per connection on the writing side, just a loop of `write` calls on
//! one or more threads. The reading side reads as chat-bench's growth clients do: two
//! threads with an epoll each, which look for events every 250 µs while they come
//! (`chat_bench::EventWait`), in a process of its own (each process here may hold
//! 20 000 descriptors).
//!
//! ```sh
//! cargo build --release -p chat-bench
//! ./target/release/loopback-floor 16000 20 1 2
//! ```
//!
//! Arguments: connections, rounds, then the writer thread counts to try. Prints, per
//! thread count, the p50, p99 and max from the first write of a round to each
//! connection's read, over all rounds, and each side's CPU per write or read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_bench::EventWait;

/// What each round writes to each connection.
const MESSAGE_BYTES: usize = 16;

/// As many as chat-bench's growth scenario reads with: one per core here.
const READING_THREADS: usize = 2;

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// CPU seconds this process has used, user and system.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc is mounted");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm ends")
        .1
        .split(' ')
        .collect();
    let ticks: u64 = fields[12].parse::<u64>().unwrap() + fields[13].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--read") {
        return read_side(&args[2], args[3].parse()?, args[4].parse()?);
    }
    let connections: usize = args.get(1).map_or(Ok(16_000), |a| a.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(20), |a| a.parse())?;
    let thread_counts: Vec<usize> = match args.get(3..) {
        Some(rest) if !rest.is_empty() => {
            rest.iter().map(|a| a.parse()).collect::<Result<_, _>>()?
        }
        _ => vec![1, 2],
    };
    rlimit::increase_nofile_limit(u64::MAX)?;
    for threads in thread_counts {
        write_side(connections, rounds, threads)?;
    }
    Ok(())
}

/// Accepts `connections` from a reading child, then each round writes 16 bytes to each,
/// split over `threads`, and reports what the child measured.
fn write_side(connections: usize, rounds: usize, threads: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--read",
            &address,
            &connections.to_string(),
            &rounds.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        sockets.push(socket);
    }
    let mut told = child.stdin.take().expect("piped");
    let mut heard = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    heard.read_line(&mut line)?; // "ready"
    let sockets = Arc::new(sockets);
    let cpu_before = cpu_seconds();
    for _ in 0..rounds {
        let start = micros_now();
        writeln!(told, "{start}")?;
        told.flush()?;
        let chunk = connections.div_ceil(threads);
        std::thread::scope(|scope| {
            for part in sockets.chunks(chunk) {
                scope.spawn(move || {
                    for mut socket in part {
                        socket.write_all(&[b'm'; MESSAGE_BYTES]).expect("write");
                    }
                });
            }
        });
        // The child says when every connection has its 16 bytes.
        line.clear();
        heard.read_line(&mut line)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = cpu_seconds() - cpu_before;
    drop(told);
    line.clear();
    heard.read_line(&mut line)?;
    child.wait()?;
    println!(
        "{connections} connections, {threads} writer thread(s): {} ; writer CPU {:.2} µs per write",
        line.trim(),
        cpu * 1e6 / (connections * rounds) as f64
    );
    Ok(())
}

/// The reading child: connects `connections` times, then each round takes the start
/// time from stdin and times every connection's 16 bytes against it.
fn read_side(address: &str, connections: usize, rounds: usize) -> anyhow::Result<()> {
    rlimit::increase_nofile_limit(u64::MAX)?;
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let socket = std::net::TcpStream::connect(address)?;
        socket.set_nonblocking(true)?;
        sockets.push(mio::net::TcpStream::from_std(socket));
    }
    let arrived = Arc::new(AtomicUsize::new(0));
    let chunk = connections.div_ceil(READING_THREADS);
    let mut readers = Vec::with_capacity(READING_THREADS);
    while !sockets.is_empty() {
        let rest = sockets.split_off(chunk.min(sockets.len()));
        let part = std::mem::replace(&mut sockets, rest);
        let arrived = arrived.clone();
        readers.push(std::thread::spawn(move || {
            read_rounds(part, rounds, &arrived)
        }));
    }
    println!("ready");
    let mut stdin = std::io::stdin().lock();
    let cpu_before = cpu_seconds();
    let mut starts = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        starts.push(line.trim().parse::<u64>()?);
        while arrived.load(Ordering::Acquire) < connections * round {
            std::thread::sleep(Duration::from_millis(1));
        }
        println!("round done");
    }
    let cpu = cpu_seconds() - cpu_before;
    let mut rest = Vec::new();
    let _ = stdin.read_to_end(&mut rest);
    let mut latencies = Vec::with_capacity(connections * rounds);
    for reader in readers {
        let arrivals = reader.join().expect("a reader does not panic")?;
        latencies.extend(
            arrivals
                .into_iter()
                .map(|(round, at)| at.saturating_sub(starts[round])),
        );
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    println!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} reads, reader CPU {:.2} µs per read",
        at(0.5),
        at(0.99),
        at(1.0),
        latencies.len(),
        cpu * 1e6 / latencies.len() as f64
    );
    Ok(())
}

/// One reading thread: reads its sockets until each has had `rounds` messages, and
/// returns when each message arrived, with its round.
fn read_rounds(
    mut sockets: Vec<mio::net::TcpStream>,
    rounds: usize,
    arrived: &AtomicUsize,
) -> anyhow::Result<Vec<(usize, u64)>> {
    let mut poll = mio::Poll::new()?;
    for (index, socket) in sockets.iter_mut().enumerate() {
        poll.registry()
            .register(socket, mio::Token(index), mio::Interest::READABLE)?;
    }
    let mut bytes_read = vec![0; sockets.len()];
    let mut arrivals = Vec::with_capacity(sockets.len() * rounds);
    let mut events = mio::Events::with_capacity(1024);
    let mut waiting = EventWait::default();
    let mut buffer = [0u8; 64];
    while arrivals.len() < sockets.len() * rounds {
        waiting.next(&mut poll, &mut events)?;
        let arrived_before = arrivals.len();
        for event in &events {
            let index = event.token().0;
            // One read: at most a round's 16 bytes wait on a socket (the writer waits
            // for "round done" before the next round), they fit the buffer, and the
            // next round's come with an event of their own (edge-triggered).
            let read = match (&sockets[index]).read(&mut buffer) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                read => read?,
            };
            anyhow::ensure!(read > 0, "the writing side closed early");
            let now = micros_now();
            let before = bytes_read[index];
            bytes_read[index] += read;
            for round in before / MESSAGE_BYTES..bytes_read[index] / MESSAGE_BYTES {
                arrivals.push((round, now));
            }
        }
        // Told once for the whole batch of events: one add to the shared counter per
        // read was a cache line passed between the reading threads at every message.
        arrived.fetch_add(arrivals.len() - arrived_before, Ordering::AcqRel);
    }
    Ok(arrivals)
}
