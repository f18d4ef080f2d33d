//! The floor under "one message to all" on this machine (issue 32): one small write to
//! each of N loopback TCP connections, with nothing else in the way: no WebSocket, no
//! room, no task per connection on the writing side, just a loop of `write` calls on
//! one or more threads. The reading side is a tokio runtime with one task per
//! connection, as chat-bench's clients are, in a process of its own (each process here
//! may hold 20 000 descriptors).
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
                        socket.write_all(&[b'm'; 16]).expect("write");
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sockets = Vec::with_capacity(connections);
        for _ in 0..connections {
            sockets.push(tokio::net::TcpStream::connect(address).await?);
        }
        let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<u64>();
        for mut socket in sockets {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = [0u8; 16];
                while socket.read_exact(&mut buffer).await.is_ok() {
                    let _ = arrived.send(micros_now());
                }
            });
        }
        drop(arrived);
        println!("ready");
        let mut stdin = std::io::stdin().lock();
        let cpu_before = cpu_seconds();
        let mut latencies = Vec::with_capacity(connections * rounds);
        for _ in 0..rounds {
            let mut line = String::new();
            stdin.read_line(&mut line)?;
            let start: u64 = line.trim().parse()?;
            for _ in 0..connections {
                let at = arrivals.recv().await.expect("every reader is alive");
                latencies.push(at.saturating_sub(start));
            }
            println!("round done");
        }
        let cpu = cpu_seconds() - cpu_before;
        let mut rest = Vec::new();
        let _ = stdin.read_to_end(&mut rest);
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] as f64
                / 1000.0
        };
        println!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} reads, reader CPU {:.2} µs per read",
            at(0.5),
            at(0.99),
            at(1.0),
            latencies.len(),
            cpu * 1e6 / latencies.len() as f64
        );
        anyhow::Ok(())
    })
}
