//! The `chat-server` binary: flags, logging, the listening socket and signals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat_server::Config;
use clap::Parser;
use tokio::net::TcpListener;
use tracing::info;
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

    /// Seconds that shutdown may take to close every client.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", default_value_t = 5.0)]
    shutdown_timeout: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
    let shutdown_timeout = Duration::try_from_secs_f64(args.shutdown_timeout)
        .context("--shutdown-timeout must be a non-negative number of seconds")?;
    let config = Config {
        max_message_bytes: args.max_message_bytes as usize,
        max_queue_bytes: args.max_queue_bytes as usize,
        shutdown_timeout,
    };
    let address = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    announce(listener.local_addr()?);
    chat_server::run(listener, config, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
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
