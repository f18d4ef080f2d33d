//! The `chat-server` binary: flags, logging, the listening socket and signals.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat::ClientId;
use chat::about::About;
use chat::config_file::{self, ConfigFile};
use chat::v1::DisplayName;
use chat_server::identity::{self, JwtSecret, Tokens};
use chat_server::{ApiKeys, Config, RateLimit, config};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc's malloc: a burst (thousands of clients reconnecting at
/// once, each sent a welcome and a replay) frees most of what it allocated, and glibc
/// keeps those pages between long-lived allocations, so the server's memory ratcheted
/// up with every burst. jemalloc, with a background thread and the one-second decay set in `.cargo/config.toml`,
/// returns them once they stay unused.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A WebSocket chat server: every client connects to /ws/<client_id>, the page is at /.
#[derive(Parser, Debug, Clone)]
#[command(version = chat::version_and_commit!(), about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Read settings from this TOML file: each key is a flag's name without its dashes
    /// (`port = 8000`). Flags and environment variables take precedence over it.
    /// `chat-server config default` prints one with every setting.
    #[arg(long, env = "CHAT_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Require every chat client to prove its id with a token signed with this secret
    /// (an HS256 JWT whose sub is the id, in ?token= or Authorization: Bearer); at
    /// least 32 bytes. Prefer --jwt-secret-file or the environment: a flag is visible
    /// to every user of the machine.
    #[arg(
        long,
        env = "CHAT_JWT_SECRET",
        hide_env_values = true,
        global = true,
        conflicts_with = "jwt_secret_file"
    )]
    jwt_secret: Option<String>,

    /// Read the --jwt-secret from this file (a final line break is ignored).
    #[arg(long, env = "CHAT_JWT_SECRET_FILE", value_name = "FILE", global = true)]
    jwt_secret_file: Option<std::path::PathBuf>,

    /// The longest a token may be good for: 90s, 30m, 12h, 30d. `chat-server token`
    /// mints none longer, and the server refuses a token that expires later than this
    /// from now.
    #[arg(long, env = "CHAT_MAX_TOKEN_TTL", global = true, default_value = "30d", value_parser = identity::parse_ttl)]
    max_token_ttl: Duration,

    /// Require every chat client to prove its id with a token signed by a key of this
    /// JWKS file (an identity provider's public keys: RS256, ES256, EdDSA), besides or
    /// instead of --jwt-secret. Read again on SIGHUP.
    #[arg(
        long,
        env = "CHAT_JWKS_FILE",
        value_name = "FILE",
        conflicts_with = "jwks_url"
    )]
    jwks_file: Option<PathBuf>,

    /// As --jwks-file, from the identity provider's URL (its jwks_uri): fetched at
    /// start, every --jwks-refresh, and when a token names a key not in the set (at
    /// most once per 30 s).
    #[arg(long, env = "CHAT_JWKS_URL", value_name = "URL")]
    jwks_url: Option<url::Url>,

    /// How often the --jwks-url is fetched again: 90s, 30m, 12h (at least 1m).
    #[arg(long, env = "CHAT_JWKS_REFRESH", default_value = "10m", value_parser = identity::parse_ttl)]
    jwks_refresh: Duration,

    /// The issuer every token must name in its iss claim, such as
    /// https://id.example.org/realms/chat (none: not checked).
    #[arg(long, env = "CHAT_JWT_ISSUER", global = true)]
    jwt_issuer: Option<String>,

    /// A value every token's aud claim must hold, such as chat (none: not checked).
    #[arg(long, env = "CHAT_JWT_AUDIENCE", global = true)]
    jwt_audience: Option<String>,

    /// The claim that holds the client id (a decimal integer, as text or a number).
    #[arg(long, env = "CHAT_JWT_ID_CLAIM", global = true, default_value = identity::DEFAULT_ID_CLAIM)]
    jwt_id_claim: String,

    /// Address to listen on.
    #[arg(long, env = "CHAT_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "CHAT_PORT", default_value_t = 8000)]
    port: u16,

    /// Largest text message a client may send, in bytes; bigger ones close with 1009.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = Config::default().max_message_bytes as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_message_bytes: u32,

    /// Bytes that may wait for one slow client before it is closed with 1008.
    #[arg(long, env = "CHAT_MAX_QUEUE_BYTES", default_value_t = Config::default().max_queue_bytes as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue_bytes: u32,

    /// Seconds between the server's pings to each client (at least 0.1).
    #[arg(long, env = "CHAT_PING_INTERVAL", default_value = seconds(Config::default().ping_interval), value_parser = seconds_from(config::MIN_PING_INTERVAL))]
    ping_interval: Duration,

    /// Seconds a client may take to answer a ping (with a pong or any frame) before it is
    /// closed (at least 0.1).
    #[arg(long, env = "CHAT_PING_TIMEOUT", default_value = seconds(Config::default().ping_timeout), value_parser = seconds_from(config::MIN_PING_TIMEOUT))]
    ping_timeout: Duration,

    /// Seconds a client may take to send its HTTP request headers.
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT", default_value = seconds(Config::default().handshake_timeout), value_parser = seconds_from(config::MIN_TIMEOUT))]
    handshake_timeout: Duration,

    /// Seconds a client may take from the first frame of a message to its last; then it
    /// is closed with 1008.
    #[arg(long, env = "CHAT_MESSAGE_TIMEOUT", default_value = seconds(Config::default().message_timeout), value_parser = seconds_from(config::MIN_TIMEOUT))]
    message_timeout: Duration,

    /// Messages per second each connection may send on average (0: no limit); frames
    /// of any kind and bytes are limited in proportion. Past it the server reads more
    /// slowly; nothing is dropped.
    #[arg(long, env = "CHAT_RATE_LIMIT", default_value_t = Config::default().rate_limit.map_or(0.0, |rate| rate.per_second), value_parser = rate)]
    rate_limit: f64,

    /// Messages a connection may send at once, after a quiet spell, under --rate-limit.
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = Config::default().rate_limit.map_or(1, |rate| rate.burst), value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: u32,

    /// Most WebSocket connections at once; more are refused with HTTP 503.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = Config::default().max_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Most WebSocket connections from one IP address (0: no limit); more are refused
    /// with HTTP 503. Behind a proxy or load balancer every client has its address.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = Config::default().max_connections_per_ip.map_or(0, |most| most as u32))]
    max_connections_per_ip: u32,

    /// WebSocket handshakes per second from one IP address, on average (0: no limit),
    /// with bursts of ten seconds' worth; more are refused with HTTP 429.
    #[arg(long, env = "CHAT_HANDSHAKE_RATE_PER_IP", default_value_t = Config::default().handshake_rate_per_ip.map_or(0.0, |rate| rate.per_second), value_parser = rate)]
    handshake_rate_per_ip: f64,

    /// Most connections, from every address, that have not upgraded to a WebSocket
    /// yet (a page load, a handshake under way, a client still silent); more are
    /// refused at once with HTTP 503.
    #[arg(long, env = "CHAT_MAX_PENDING_CONNECTIONS", default_value_t = Config::default().max_pending_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_pending_connections: u32,

    /// Most connections from one IP address that have not upgraded to a WebSocket yet
    /// (0: no limit); more are refused at once with HTTP 503.
    #[arg(long, env = "CHAT_MAX_PENDING_CONNECTIONS_PER_IP", default_value_t = Config::default().max_pending_connections_per_ip.map_or(0, |most| most as u32))]
    max_pending_connections_per_ip: u32,

    /// Most rooms the connections from one IP address may be in at once (0: no
    /// limit); a connection to another room is refused with HTTP 503.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_IP", default_value_t = Config::default().max_rooms_per_ip.map_or(0, |most| most as u32))]
    max_rooms_per_ip: u32,

    /// Events kept per room for chat.v1.json clients' history and resume (0: none; at
    /// most 1000000).
    #[arg(long, env = "CHAT_HISTORY", default_value_t = Config::default().history as u64, value_parser = clap::value_parser!(u64).range(..=config::MAX_HISTORY as u64))]
    history: u64,

    /// The most bytes of one room's history kept on disk (--data-dir) or in Redis
    /// (--redis-url); past it, as past --history, the oldest events are forgotten.
    #[arg(long, env = "CHAT_HISTORY_BYTES", default_value_t = Config::default().history_bytes as u64, value_parser = clap::value_parser!(u64).range(1..))]
    history_bytes: u64,

    /// Above this many connections in one room, joins and leaves reach chat.v2.json
    /// clients as presence batches (one event per room per 100 ms to 1 s), welcomes list a
    /// first page of members (v2 pages the rest), and v1 and plain clients hear of no
    /// join or leave but their own (0: never).
    #[arg(long, env = "CHAT_PRESENCE_BATCH_ABOVE", default_value_t = Config::default().presence_batch_above)]
    presence_batch_above: usize,

    /// With --redis-url, how long Redis keeps a room nobody is in after its last event
    /// (90s, 30m, 12h, 30d; up to 366d): then its keys expire.
    #[arg(long, env = "CHAT_ROOM_EXPIRY", default_value = "7d", value_parser = identity::parse_ttl)]
    room_expiry: Duration,

    /// An origin allowed to open WebSockets besides the server's own, e.g.
    /// https://app.example.org (repeatable; * allows every origin; null allows pages
    /// from disk and sandboxed frames when the server is reached over the network).
    #[arg(
        long = "allowed-origin",
        env = "CHAT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,

    /// A host name this server answers to besides IP addresses and localhost, e.g.
    /// chat.example.org (repeatable; * allows every name).
    #[arg(
        long = "allowed-host",
        env = "CHAT_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,

    /// Keep every room's history in an SQLite database in this folder (made if need
    /// be), so that it survives a restart or a crash: clients resume where they were.
    #[arg(long, env = "CHAT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,

    /// Share the room with other nodes through Redis: redis://host:port[/db], the primary
    /// Sentinel names: redis+sentinel://host:port[,host:port...]/NAME (the sentinels, and
    /// the name they watch it by), or a Redis Cluster: redis+cluster://host:port[,...]
    /// (any of its nodes as seeds).
    #[arg(long, env = "CHAT_REDIS_URL")]
    redis_url: Option<String>,

    /// With --redis-url, how many partitions rooms are spread over: a node reads only
    /// the partitions of the rooms it has members in (1 to 1024; every node of a
    /// cluster must have the same).
    #[arg(long, env = "CHAT_REDIS_PARTITIONS", default_value_t = Config::default().redis_partitions, value_parser = clap::value_parser!(u16).range(1..=config::MAX_REDIS_PARTITIONS as i64))]
    redis_partitions: u16,

    /// Seconds a clustered node may go unheard in Redis before the other nodes announce
    /// its members' leaves (at least 1).
    #[arg(long, env = "CHAT_PRESENCE_TTL", default_value = seconds(Config::default().presence_ttl), value_parser = seconds_from(config::MIN_PRESENCE_TTL))]
    presence_ttl: Duration,

    /// Serve TLS with this certificate chain (PEM): the page over https://, WebSockets
    /// over wss://, and plain HTTP refused. Read again on SIGHUP.
    #[arg(long, env = "CHAT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "CHAT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Serve /echo, a WebSocket echo endpoint for conformance testing.
    #[arg(long)]
    echo: bool,

    /// A client id that is an admin: an owner of every room, who may moderate and name
    /// moderators (repeatable). Without --jwt-secret ids are claimed, not proven, so
    /// anyone may claim this one: use it only on a trusted network.
    #[arg(long = "admin", env = "CHAT_ADMINS", value_delimiter = ',', value_parser = ClientId::parse)]
    admins: Vec<ClientId>,

    /// Read the operators' HTTP API keys from this file, one a line (at least 32
    /// bytes each; blank lines and # comments skipped): each, sent as Authorization:
    /// Bearer <key>, has an admin's rights over /api/v1/.
    #[arg(long, env = "CHAT_API_KEY_FILE", value_name = "FILE")]
    api_key_file: Option<PathBuf>,

    /// HTTP API requests per second each token or API key may make on average, in
    /// bursts of five seconds' worth; more are answered 429.
    #[arg(long, env = "CHAT_API_RATE", default_value_t = Config::default().api_rate.per_second, value_parser = rate_at_least)]
    api_rate: f64,

    /// Seconds that shutdown may take to close every client.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", default_value = seconds(Config::default().shutdown_timeout), value_parser = seconds_from(Duration::ZERO))]
    shutdown_timeout: Duration,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Print a token for one client, signed with the --jwt-secret (or CHAT_JWT_SECRET,
    /// or --jwt-secret-file), for `chat-tui --token`, the page's #token= or a script.
    Token {
        /// The client id the token proves.
        #[arg(long, value_parser = ClientId::parse)]
        id: ClientId,
        /// How long the token is good for: 90s, 30m, 1h, 7d; at most --max-token-ttl.
        #[arg(long, default_value = "1h", value_parser = identity::parse_ttl)]
        ttl: Duration,
        /// The name the client goes by, shown beside its id to chat.v1.json clients.
        #[arg(long, value_parser = DisplayName::parse)]
        name: Option<DisplayName>,
    },
    /// Settings files: check one, print the defaults, or print what a run would use.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    #[command(flatten)]
    About(About),
}

#[derive(Subcommand, Debug, Clone)]
enum ConfigAction {
    /// Check a settings file as the server would read it: unknown keys and bad values
    /// are reported with their line; the exit status is 1 if any.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a settings file with every setting at its default, each explained.
    Default,
    /// Print the settings a run with these flags, variables and --config would use
    /// (secrets shown as set, not as what they are).
    Show,
}

/// Settings whose values `config show` does not print.
const SECRET_SETTINGS: &[&str] = &["jwt-secret"];

/// A default duration as its flag takes it: a number of seconds.
fn seconds(duration: Duration) -> String {
    duration.as_secs_f64().to_string()
}

/// A parser for a number of seconds, fractions allowed, from `min` up to a day.
fn seconds_from(min: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |text| {
        let seconds: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        let max = config::MAX_DURATION;
        match Duration::try_from_secs_f64(seconds) {
            Ok(duration) if (min..=max).contains(&duration) => Ok(duration),
            _ => Err(format!(
                "must be from {} to {} seconds",
                min.as_secs_f64(),
                max.as_secs()
            )),
        }
    }
}

/// A rate per second: 0 for none, or at least one a minute.
fn rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    let min = RateLimit::MIN_PER_SECOND;
    if rate == 0.0 || (rate >= min && rate.is_finite()) {
        Ok(rate)
    } else {
        Err(format!(
            "must be 0 (no limit) or at least {min:.4} (one a minute)"
        ))
    }
}

/// The flags, the variables and the --config file, in that order of precedence.
fn parse_args() -> Result<(Args, ArgMatches), config_file::ConfigError> {
    let command = Args::command();
    let arguments: Vec<OsString> = std::env::args_os().collect();
    let given = command
        .clone()
        .try_get_matches_from(&arguments)
        .unwrap_or_else(|error| error.exit());
    let matches = match given.get_one::<PathBuf>("config") {
        Some(file) => {
            let file = ConfigFile::read(file)?;
            // The whole file, also what a flag or variable overrides: a mistake in it
            // is not hidden until the day the flag goes.
            file.check(&command)?;
            file.apply(&command, &given, arguments)?
        }
        None => given,
    };
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    Ok((args, matches))
}

/// Runs the subcommands that only print: settings files, completions, the manual.
fn print_only(command: &Command, matches: &ArgMatches) -> Option<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Config { action } => match action {
            ConfigAction::Check { file } => {
                match ConfigFile::read(file).and_then(|read| read.check(&Args::command())) {
                    Ok(()) => {
                        println!("{}: good", file.display());
                        Some(ExitCode::SUCCESS)
                    }
                    Err(error) => {
                        eprintln!("chat-server: {error}");
                        Some(ExitCode::FAILURE)
                    }
                }
            }
            ConfigAction::Default => {
                // Defaults only: what the environment sets is a run's, not a default.
                let matches = Args::command()
                    .mut_args(|arg| arg.env(None))
                    .get_matches_from(["chat-server"]);
                let rendered = config_file::render(&Args::command(), &matches, &[]);
                let _ = out.write_all(rendered.as_bytes());
                Some(ExitCode::SUCCESS)
            }
            ConfigAction::Show => {
                let rendered = config_file::render(&Args::command(), matches, SECRET_SETTINGS);
                let _ = out.write_all(rendered.as_bytes());
                Some(ExitCode::SUCCESS)
            }
        },
        Command::About(about) => match about.print(Args::command(), &mut out) {
            Ok(()) => Some(ExitCode::SUCCESS),
            Err(error) => {
                eprintln!("chat-server: cannot write to standard output: {error}");
                Some(ExitCode::FAILURE)
            }
        },
        Command::Token { .. } => None,
    }
}

fn main() -> ExitCode {
    let (mut args, matches) = match parse_args() {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("chat-server: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(done) = args
        .command
        .as_ref()
        .and_then(|command| print_only(command, &matches))
    {
        return done;
    }
    let jwt_secret = match jwt_secret(&args) {
        Ok(secret) => secret,
        Err(error) => {
            eprintln!("chat-server: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token { id, ttl, name }) = args.command.take() {
        let Some(secret) = jwt_secret else {
            eprintln!(
                "chat-server: a token is signed with the server's secret: give it with \
                 --jwt-secret-file FILE, CHAT_JWT_SECRET or --jwt-secret"
            );
            return ExitCode::from(2);
        };
        let ttl = match identity::check_ttl(ttl, args.max_token_ttl) {
            Ok(ttl) => ttl,
            Err(too_long) => {
                eprintln!("chat-server: {too_long}");
                return ExitCode::from(2);
            }
        };
        let tokens = Tokens::new(&secret).with_rules(token_rules(&args));
        println!("{}", tokens.mint(&id, ttl, name.as_ref()));
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(|| LossyStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match serve(args, jwt_secret) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Not eprintln!, which panics when stderr itself is what failed.
            let _ = writeln!(std::io::stderr(), "chat-server: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The settings the flags (and their variables) give, with the secret already read.
fn config(args: &Args, jwt_secret: Option<JwtSecret>) -> Config {
    let token_rules = token_rules(args);
    let args = args.clone();
    Config {
        max_message_bytes: args.max_message_bytes as usize,
        max_queue_bytes: args.max_queue_bytes as usize,
        ping_interval: args.ping_interval,
        ping_timeout: args.ping_timeout,
        handshake_timeout: args.handshake_timeout,
        message_timeout: args.message_timeout,
        rate_limit: (args.rate_limit > 0.0).then_some(RateLimit {
            per_second: args.rate_limit,
            burst: args.rate_burst,
        }),
        max_connections: args.max_connections as usize,
        max_connections_per_ip: (args.max_connections_per_ip > 0)
            .then_some(args.max_connections_per_ip as usize),
        handshake_rate_per_ip: (args.handshake_rate_per_ip > 0.0)
            .then(|| RateLimit::handshakes(args.handshake_rate_per_ip)),
        max_pending_connections: args.max_pending_connections as usize,
        max_pending_connections_per_ip: (args.max_pending_connections_per_ip > 0)
            .then_some(args.max_pending_connections_per_ip as usize),
        max_rooms_per_ip: (args.max_rooms_per_ip > 0).then_some(args.max_rooms_per_ip as usize),
        history: usize::try_from(args.history).unwrap_or(usize::MAX),
        history_bytes: usize::try_from(args.history_bytes).unwrap_or(usize::MAX),
        presence_batch_above: args.presence_batch_above,
        presence_batch_entries: Config::default().presence_batch_entries,
        room_expiry: args.room_expiry,
        allowed_origins: args.allowed_origins,
        allowed_hosts: args.allowed_hosts,
        echo: args.echo,
        data_dir: args.data_dir,
        redis_url: args.redis_url,
        redis_partitions: args.redis_partitions,
        presence_ttl: args.presence_ttl,
        shutdown_timeout: args.shutdown_timeout,
        jwt_secret,
        max_token_ttl: args.max_token_ttl,
        jwks: match (&args.jwks_file, &args.jwks_url) {
            (Some(file), _) => Some(identity::JwksSource::File(file.clone())),
            (None, Some(url)) => Some(identity::JwksSource::Url(url.clone())),
            (None, None) => None,
        },
        jwks_refresh: args.jwks_refresh,
        jwks_min_refetch: Config::default().jwks_min_refetch,
        token_rules,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| chat_server::tls::TlsFiles { cert, key }),
        admins: args.admins,
        api_keys: ApiKeys::default(),
        api_rate: RateLimit {
            per_second: args.api_rate,
            burst: (args.api_rate * 5.0).ceil() as u32,
        },
    }
}

/// What tokens must hold, as the flags say: for the server, and for the tokens
/// `chat-server token` mints, so that they pass it.
fn token_rules(args: &Args) -> identity::TokenRules {
    identity::TokenRules {
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
        id_claim: args.jwt_id_claim.clone(),
    }
}

/// A rate per second of at least one a minute: an API without any rate is a mistake.
fn rate_at_least(text: &str) -> Result<f64, String> {
    match rate(text)? {
        0.0 => Err("must be at least one a minute".to_owned()),
        rate => Ok(rate),
    }
}

/// The keys in the file `--api-key-file` names, if it is given.
fn api_keys(args: &Args) -> anyhow::Result<ApiKeys> {
    let Some(file) = &args.api_key_file else {
        return Ok(ApiKeys::default());
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the API keys from {}", file.display()))?;
    Ok(ApiKeys::parse(&text)?)
}

#[tokio::main]
async fn serve(args: Args, jwt_secret: Option<JwtSecret>) -> anyhow::Result<()> {
    let mut config = config(&args, jwt_secret);
    config.api_keys = api_keys(&args)?;
    if !config.admins.is_empty() && !config.checks_tokens() {
        // Ids are only claimed without tokens: anyone may connect as an admin's.
        warn!(
            "--admin without --jwt-secret or a JWKS: anyone may connect as an admin's id \
             and moderate; use it on a trusted network only"
        );
    }
    raise_open_file_limit();
    let address = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    chat_server::run(listener, config, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
}

/// The secret from `--jwt-secret` (or its variable) or the file `--jwt-secret-file`
/// names, if either is given.
fn jwt_secret(args: &Args) -> anyhow::Result<Option<JwtSecret>> {
    let text = match (&args.jwt_secret, &args.jwt_secret_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the JWT secret from {}", file.display()))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(JwtSecret::new(&text)?))
}

/// Every connection is a file descriptor, and the usual soft limit of 1024 would cap the
/// room long before memory does; the hard limit is what the administrator allows.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => debug!(limit, "open-file limit"),
        Err(error) => warn!(%error, "could not raise the open-file limit"),
    }
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed now, not when the future
/// is first polled: a SIGTERM right after the server says it is ready (a supervisor's
/// quick restart, a test) must end it gracefully, not by the signal's default.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut interrupt), Err(_)) => drop(interrupt.recv().await),
                (Err(_), _) => drop(tokio::signal::ctrl_c().await),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Standard error for the log, where a failed write is dropped rather than reported: a
/// full disk behind `2>file`, or a closed pipe behind `2>&1 | head`, must cost log lines,
/// not the server. (The log's own writer reports a failed write by printing to stderr,
/// which panics when stderr is what failed, inside whatever task was logging.)
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_give_the_default_config() {
        // The variables the flags read (CI sets other CHAT_ ones, for the tests).
        let set: Vec<String> = <Args as clap::CommandFactory>::command()
            .get_arguments()
            .filter_map(|argument| argument.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| std::env::var_os(name).is_some())
            .collect();
        assert!(set.is_empty(), "run this test without {set:?}");
        let args = Args::try_parse_from(["chat-server"]).expect("no flags parse");
        let config = config(&args, None);
        // Config holds a secret that is deliberately not comparable; its `Debug` shows
        // every field (the secret as its length), so equal output is equal settings.
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
    }
}
