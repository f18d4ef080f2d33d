//! The `chat-bench` binary: flags, then one scenario, progress on stderr and one JSON
//! summary on stdout.

use std::process::ExitCode;
use std::time::Duration;

use chat_bench::{
    FanoutPlan, GrowthPlan, HistoryPlan, IdlePlan, Pace, Protocol, ResumePlan, ServerProbe, Servers,
};
use clap::{Parser, Subcommand};
use url::Url;

/// A load generator for any server that speaks the chat's /ws/<id> protocol.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server's base URL; repeat it, or separate with commas, to spread the clients
    /// over several nodes (client n connects to URL n mod count).
    #[arg(
        long = "url",
        default_value = "ws://127.0.0.1:8000",
        value_delimiter = ',',
        global = true
    )]
    urls: Vec<Url>,

    /// Clients ask for chat.v1.json (and fail if the server does not select it).
    #[arg(long, global = true, conflicts_with = "v2")]
    v1: bool,

    /// Clients ask for chat.v2.json (and fail if the server does not select it).
    #[arg(long, global = true)]
    v2: bool,

    /// The room the clients join, instead of the default one.
    #[arg(long, global = true)]
    room: Option<String>,

    /// The server's process id, to report its CPU time and memory from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,

    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64, global = true)]
    connect_concurrency: usize,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N clients; S of them send M messages each; every delivery is counted and timed.
    Fanout {
        #[arg(long, default_value_t = 500)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 300)]
        messages: usize,
        /// Unacknowledged messages a sender may have in flight (saturation).
        #[arg(long, default_value_t = 64, conflicts_with = "rate")]
        window: usize,
        /// Send at this many messages per second per sender instead (latency under load).
        #[arg(long)]
        rate: Option<f64>,
        /// With --rate, every sender fires at the same instants (bursts) instead of at
        /// phases spread over the period.
        #[arg(long, requires = "rate")]
        aligned: bool,
        /// Seconds the sending phase may take before what is missing counts as lost.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Make each message about this many bytes longer (filler after its numbers).
        #[arg(long, default_value_t = 0)]
        padding: usize,
        /// With --v2: this share of the clients (0 to 1; not senders) send
        /// {"type":"typing"} every 3 s while the messages are sent.
        #[arg(long, default_value_t = 0.0, value_parser = share)]
        typing_share: f64,
        /// How often each typing client sends typing, in milliseconds (the server counts
        /// at most one per 3 000 ms per connection).
        #[arg(long, value_name = "MS", default_value_t = chat::v2::TYPING_INTERVAL_MS)]
        typing_every_ms: u64,
        /// With --v2: each sender reacts to the latest message it has read after every K
        /// of its own messages.
        #[arg(long, value_name = "K", default_value_t = 0)]
        react_every: usize,
    },
    /// N idle clients held open: memory per connection, the join storm, and churn.
    Idle {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Seconds to hold the room once every join has been seen.
        #[arg(long, default_value_t = 0)]
        hold: u64,
        /// Rounds of opening and dropping every connection again.
        #[arg(long, default_value_t = 0)]
        churn: usize,
    },
    /// With --v1: N clients drop at once, M messages are said, and all N come back at
    /// once asking to resume; counts what was recovered (exit 1 if not all).
    Resume {
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        /// Messages said while they are away (their leaves are missed events too).
        #[arg(long, default_value_t = 100)]
        missed: usize,
    },
    /// For each size, a fresh chat-server (started here, on a port the kernel gives):
    /// N clients join one room at once, one message goes to all of them --messages
    /// times, and all N drop and come back at once asking to resume. One JSON report
    /// per size (--url is not used).
    Growth {
        /// Room sizes, one fresh server each (e.g. 2000 4000 8000 16000).
        #[arg(required = true)]
        sizes: Vec<usize>,
        /// The chat-server binary; by default the one beside chat-bench.
        #[arg(long)]
        server: Option<std::path::PathBuf>,
        /// An argument for each server (repeat it), e.g. --server-arg=--history=40000.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
        /// Messages to the whole room, one after another.
        #[arg(long, default_value_t = 20)]
        messages: usize,
        /// Seconds each phase may take before the run fails.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// With --v2: optionally fill the room with N messages, then W writers keep writing
    /// at a total rate while R readers ask for random pages (`before` uniform over the
    /// offsets the server keeps) and search for words the messages carry.
    History {
        /// Messages to put in the room first (by the writers).
        #[arg(long, default_value_t = 0)]
        fill: usize,
        /// The fill's total rate in messages a second; as fast as the server takes them
        /// (a window of unechoed messages per writer) without it.
        #[arg(long)]
        fill_rate: Option<f64>,
        #[arg(long, default_value_t = 2)]
        writers: usize,
        /// Messages a second over all writers while the readers read.
        #[arg(long, default_value_t = 1000.0)]
        write_rate: f64,
        #[arg(long, default_value_t = 4)]
        readers: usize,
        /// The readers connect and receive but ask nothing: the same run without the
        /// reading, for the fan-out's CPU per delivery.
        #[arg(long)]
        quiet_readers: bool,
        /// Requests a second per reader (one at a time: fewer if answers are slower).
        #[arg(long, default_value_t = 20.0)]
        request_rate: f64,
        /// Every K-th request of a reader is a search (0: none).
        #[arg(long, value_name = "K", default_value_t = 5)]
        search_every: usize,
        /// Events asked for per page or search.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Seconds of writing and reading, measured.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Distinct words in the messages (one each); searches ask for one of them.
        #[arg(long, default_value_t = 1000)]
        words: usize,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(lost) => {
            eprintln!(
                "chat-bench: {lost} deliveries lost, clients not recovered or requests refused"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("chat-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenario, prints its JSON summary, and returns the deliveries lost.
async fn run(args: Args) -> anyhow::Result<u64> {
    // Thousands of clients are thousands of file descriptors.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let servers = Servers {
        urls: args.urls,
        room: args.room,
        protocol: match (args.v1, args.v2) {
            (true, _) => Protocol::V1,
            (_, true) => Protocol::V2,
            _ => Protocol::Plain,
        },
    };
    let probe = args.server_pid.map(ServerProbe::new).transpose()?;
    let (summary, lost) = match args.scenario {
        Scenario::Fanout {
            clients,
            senders,
            messages,
            window,
            rate,
            aligned,
            timeout,
            padding,
            typing_share,
            typing_every_ms,
            react_every,
        } => {
            let plan = FanoutPlan {
                clients,
                senders,
                messages,
                pace: match (rate, aligned) {
                    (None, _) => Pace::Window(window),
                    (Some(rate), false) => Pace::Rate(rate),
                    (Some(rate), true) => Pace::Aligned(rate),
                },
                connect_concurrency: args.connect_concurrency,
                timeout: Duration::from_secs(timeout),
                padding,
                typing_share,
                typing_every: Duration::from_millis(typing_every_ms),
                react_every,
            };
            let report = chat_bench::fanout(&servers, &plan, probe).await?;
            let lost = report.lost_deliveries;
            (serde_json::to_string_pretty(&report)?, lost)
        }
        Scenario::Idle {
            clients,
            hold,
            churn,
        } => {
            let plan = IdlePlan {
                clients,
                connect_concurrency: args.connect_concurrency,
                hold: Duration::from_secs(hold),
                churn_rounds: churn,
            };
            let report = chat_bench::idle(&servers, &plan, probe).await?;
            (serde_json::to_string_pretty(&report)?, 0)
        }
        Scenario::Resume { clients, missed } => {
            let plan = ResumePlan {
                clients,
                missed_messages: missed,
                connect_concurrency: args.connect_concurrency,
            };
            let report = chat_bench::resume(&servers, &plan, probe).await?;
            let not_recovered = (report.clients - report.recovered) as u64;
            (serde_json::to_string_pretty(&report)?, not_recovered)
        }
        Scenario::Growth {
            sizes,
            server,
            server_args,
            messages,
            timeout,
        } => {
            let server = match server {
                Some(server) => server,
                None => std::env::current_exe()?.with_file_name("chat-server"),
            };
            let plan = GrowthPlan {
                sizes,
                server,
                server_args,
                messages,
                connect_concurrency: args.connect_concurrency,
                timeout: Duration::from_secs(timeout),
            };
            let reports = chat_bench::growth(servers.protocol, &plan).await?;
            let lost = reports.iter().map(|report| report.fanout_lost).sum();
            (serde_json::to_string_pretty(&reports)?, lost)
        }
        Scenario::History {
            fill,
            fill_rate,
            writers,
            write_rate,
            readers,
            quiet_readers,
            request_rate,
            search_every,
            limit,
            seconds,
            words,
        } => {
            let plan = HistoryPlan {
                fill,
                fill_rate,
                writers,
                write_rate,
                readers,
                quiet_readers,
                request_rate,
                search_every,
                limit,
                duration: Duration::from_secs(seconds),
                words,
                connect_concurrency: args.connect_concurrency,
            };
            let report = chat_bench::history(&servers, &plan, probe).await?;
            let failed = report.pages.errors + report.searches.errors;
            (serde_json::to_string_pretty(&report)?, failed)
        }
    };
    println!("{summary}");
    Ok(lost)
}

/// Parses a share of the clients: a number from 0 to 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}
