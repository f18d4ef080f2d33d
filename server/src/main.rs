//! The `chat-server` binary: flags, logging, the listening socket and signals.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat_server::{Config, RateLimit};
use clap::Parser;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

/// A WebSocket chat server: every client connects to /ws/<client_id>, the page is at /.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CHAT_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "CHAT_PORT", default_value_t = 8000)]
    port: u16,

    /// Largest text message a client may send, in bytes; bigger ones close with 1009.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_message_bytes: u32,

    /// Bytes that may wait for one slow client before it is closed with 1008.
    #[arg(long, env = "CHAT_MAX_QUEUE_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue_bytes: u32,

    /// Seconds between the server's pings to each client.
    #[arg(long, env = "CHAT_PING_INTERVAL", default_value = "30", value_parser = seconds)]
    ping_interval: Duration,

    /// Seconds a client may stay silent (not even a pong) before it is closed.
    #[arg(long, env = "CHAT_PING_TIMEOUT", default_value = "30", value_parser = seconds)]
    ping_timeout: Duration,

    /// Seconds a client may take to send its HTTP request headers.
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT", default_value = "10", value_parser = seconds)]
    handshake_timeout: Duration,

    /// Messages per second each connection may send on average (0: no limit). Past it
    /// the server reads more slowly; nothing is dropped.
    #[arg(long, env = "CHAT_RATE_LIMIT", default_value_t = 20.0)]
    rate_limit: f64,

    /// Messages a connection may send at once, after a quiet spell, under --rate-limit.
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: u32,

    /// Most WebSocket connections at once; more are refused with HTTP 503.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,

    /// An origin allowed to open WebSockets besides the server's own, `null` and none,
    /// e.g. https://app.example.org (repeatable; * allows every origin).
    #[arg(
        long = "allowed-origin",
        env = "CHAT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,

    /// Share the room with other nodes through Redis: redis://host:port[/db].
    #[arg(long, env = "CHAT_REDIS_URL")]
    redis_url: Option<String>,

    /// Seconds a clustered node may go unheard in Redis before the other nodes announce
    /// its members' leaves.
    #[arg(long, env = "CHAT_PRESENCE_TTL", default_value = "6", value_parser = seconds)]
    presence_ttl: Duration,

    /// Serve /echo, a WebSocket echo endpoint for conformance testing.
    #[arg(long)]
    echo: bool,

    /// Seconds that shutdown may take to close every client.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", default_value = "5", value_parser = seconds)]
    shutdown_timeout: Duration,
}

/// A number of seconds, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat-server: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(args: Args) -> anyhow::Result<()> {
    if !(args.rate_limit >= 0.0 && args.rate_limit.is_finite()) {
        anyhow::bail!("--rate-limit must be a number of messages per second, 0 for none");
    }
    let config = Config {
        max_message_bytes: args.max_message_bytes as usize,
        max_queue_bytes: args.max_queue_bytes as usize,
        ping_interval: args.ping_interval,
        ping_timeout: args.ping_timeout,
        handshake_timeout: args.handshake_timeout,
        rate_limit: (args.rate_limit > 0.0).then_some(RateLimit {
            per_second: args.rate_limit,
            burst: args.rate_burst,
        }),
        max_connections: args.max_connections,
        allowed_origins: args.allowed_origins,
        echo: args.echo,
        redis_url: args.redis_url,
        presence_ttl: args.presence_ttl,
        shutdown_timeout: args.shutdown_timeout,
    };
    raise_open_file_limit();
    let address = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    announce(listener.local_addr()?);
    chat_server::run(listener, config, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
}

/// Every connection is a file descriptor, and the usual soft limit of 1024 would cap the
/// room long before memory does; the hard limit is what the administrator allows.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => debug!(limit, "open-file limit"),
        Err(error) => warn!(%error, "could not raise the open-file limit"),
    }
}

/// Tells the person who started the server where to point their clients.
fn announce(address: SocketAddr) {
    // A wildcard address is not something to type into a browser.
    let reachable = match address.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), address.port()),
        _ => address,
    };
    info!("chat page:       http://{reachable}/");
    info!("terminal client: chat-tui --server ws://{reachable} --id 42");
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
