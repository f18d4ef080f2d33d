//! The server's settings, their defaults, and the bounds outside which they cannot work.

use std::path::PathBuf;
use std::time::Duration;

use crate::identity::{DEFAULT_MAX_TOKEN_TTL, JwksSource, JwtSecret, TokenRules};
use crate::tls::TlsFiles;

/// How many partitions a cluster has unless `--redis-partitions` says otherwise: enough
/// that a node serving a few busy rooms reads a small share of the traffic, and that
/// they spread over the primaries of a Redis Cluster; few enough that a node in every
/// partition keeps one reading connection to each without strain.
pub const DEFAULT_REDIS_PARTITIONS: u16 = 16;

/// The most partitions `--redis-partitions` allows: each read partition costs a node
/// a connection to Redis.
pub const MAX_REDIS_PARTITIONS: u16 = 1024;

/// The server's settings. [`Config::default`] is what `chat-server` runs with when given
/// no flags; [`Config::check`] says whether a setting cannot work.
#[derive(Clone, Debug)]
pub struct Config {
    /// The largest text message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// How many bytes of frames may wait for one slow client before it is disconnected.
    /// Raised, if need be, to hold at least one of the largest announcements.
    pub max_queue_bytes: usize,
    /// How often the server pings each client.
    pub ping_interval: Duration,
    /// A ping not answered within this (by a pong or any other frame) closes the client.
    pub ping_timeout: Duration,
    /// How long a client may take to send its HTTP request headers.
    pub handshake_timeout: Duration,
    /// How long a client may take from the first frame of a message to its last.
    pub message_timeout: Duration,
    /// The per-connection message rate, or `None` for no limit. Frames and bytes of any
    /// kind are limited in proportion.
    pub rate_limit: Option<RateLimit>,
    /// The most WebSocket sessions at once; more are refused with HTTP 503.
    pub max_connections: usize,
    /// The most WebSocket sessions from one IP address, or `None` for no limit.
    pub max_connections_per_ip: Option<usize>,
    /// WebSocket handshakes per second from one IP address, or `None` for no limit.
    pub handshake_rate_per_ip: Option<RateLimit>,
    /// The most connections, from every address, that have not upgraded to a WebSocket
    /// (or been answered and closed) yet; more are refused at once.
    pub max_pending_connections: usize,
    /// The most connections from one IP address that have not upgraded yet, or `None`
    /// for no limit; more are refused at once.
    pub max_pending_connections_per_ip: Option<usize>,
    /// The most rooms the sessions of one IP address may be in at once, or `None` for
    /// no limit; a session for another room is refused with HTTP 503. Well below
    /// [`MAX_ROOMS`], so that one address cannot take every room.
    pub max_rooms_per_ip: Option<usize>,
    /// Events kept per room for `chat.v1.json` clients' history and resume; 0 keeps none.
    /// At most [`MAX_HISTORY`].
    pub history: usize,
    /// The most bytes of one room's history kept on disk (with `data_dir`) or in Redis
    /// (with `redis_url`): past it, as past `history`, the oldest events are forgotten,
    /// so that a room of large messages cannot fill the disk or Redis.
    pub history_bytes: usize,
    /// Above this many connections in one room, joins and leaves reach chat.v2.json
    /// clients as coalesced presence batches, welcomes list only a first page of
    /// members, and v1 and plain clients hear no one's join or leave but their own
    /// (docs/PROTOCOL.md, "Big rooms"); 0 never batches.
    pub presence_batch_above: usize,
    /// The most joins and leaves one presence batch lists; past it, the batch says
    /// only the count, and clients that keep the list page it again.
    pub presence_batch_entries: usize,
    /// In a cluster, how long Redis keeps a room that nobody is in after its last
    /// event: then its keys expire, so that rooms used once do not stay for good.
    pub room_expiry: Duration,
    /// Origins allowed besides the defaults (none, the server's own, and on a loopback
    /// listener `null` and `file://`); `*` allows every origin, `null` allows `null`
    /// everywhere.
    pub allowed_origins: Vec<String>,
    /// Host names served besides IP addresses and `localhost`; `*` allows every name.
    pub allowed_hosts: Vec<String>,
    /// Serve `/echo` for the Autobahn conformance cases.
    pub echo: bool,
    /// Keep every room's history in a database in this folder, so that it survives a
    /// restart or a crash; `None` keeps it in memory only.
    pub data_dir: Option<PathBuf>,
    /// Share the room with other nodes through this Redis (`redis://host:port[/db]`), the
    /// primary Sentinel names (`redis+sentinel://host:port[,host:port...]/<name>`), or
    /// this Redis Cluster (`redis+cluster://host:port[,host:port...]`, its seeds).
    pub redis_url: Option<String>,
    /// How many partitions the cluster spreads its rooms over (each node reads only
    /// those of its rooms); every node of a cluster must have the same.
    pub redis_partitions: u16,
    /// In a cluster, how long a node may go unheard before the others announce its
    /// members' leaves.
    pub presence_ttl: Duration,
    /// How long shutdown may take to close every client before `run` returns anyway.
    pub shutdown_timeout: Duration,
    /// Require every chat client to prove its id with a token signed with this secret;
    /// `None` lets each client claim its own id (and name), as in the tutorial.
    pub jwt_secret: Option<JwtSecret>,
    /// The longest a token may be good for: `chat-server token` mints none longer, and
    /// the server refuses a token whose `exp` is further than this from now.
    pub max_token_ttl: Duration,
    /// Require every chat client to prove its id with a token signed by a key of this
    /// set (an identity provider's, RS256, ES256 or EdDSA), besides or instead of
    /// `jwt_secret`.
    pub jwks: Option<JwksSource>,
    /// With a JWKS URL: how often it is fetched again, so that withdrawn keys stop
    /// being trusted.
    pub jwks_refresh: Duration,
    /// With a JWKS URL: the shortest time between two fetches for tokens naming a key
    /// not in the set. Not a flag: tests lengthen it, so that what they count does not
    /// depend on how fast they run.
    pub jwks_min_refetch: Duration,
    /// What a token must hold besides a good signature: `iss`, `aud`, and which claim
    /// holds the id.
    pub token_rules: TokenRules,
    /// Serve TLS (https and wss) with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Client ids the operator makes admins (`--admin`): owners of every room.
    /// Without `jwt_secret` ids are claimed, not proven: only on a trusted network.
    pub admins: Vec<chat::ClientId>,
    /// The operators' keys for the HTTP API (`--api-key-file`), each with an admin's
    /// rights there.
    pub api_keys: ApiKeys,
    /// Requests per second each API credential (token or key) may make on average.
    pub api_rate: RateLimit,
}

/// The operators' API keys. Never shown, not even in debug output.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<String>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

/// Why an API key file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "API key {line} has {bytes} bytes; each needs at least {MIN_API_KEY_BYTES} (make one with: openssl rand -hex 32)"
)]
pub struct WeakApiKey {
    line: usize,
    bytes: usize,
}

/// The shortest API key accepted, as for a JWT secret.
pub const MIN_API_KEY_BYTES: usize = 32;

impl ApiKeys {
    /// The keys of a file: one a line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, WeakApiKey> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            if key.len() < MIN_API_KEY_BYTES {
                return Err(WeakApiKey {
                    line: number + 1,
                    bytes: key.len(),
                });
            }
            keys.push(key.to_owned());
        }
        Ok(Self(keys))
    }

    /// Whether there are none: no operator speaks through the API.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is one of the keys, compared in time that does not depend on
    /// where it differs.
    pub fn holds(&self, given: &str) -> bool {
        self.0.iter().fold(false, |found, key| {
            let same = key.len() == given.len()
                && key
                    .bytes()
                    .zip(given.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0;
            found | same
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_queue_bytes: 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(20),
            rate_limit: Some(RateLimit {
                per_second: 20.0,
                burst: 40,
            }),
            max_connections: 10_000,
            max_connections_per_ip: Some(1000),
            handshake_rate_per_ip: Some(RateLimit::handshakes(20.0)),
            max_pending_connections: 1000,
            max_pending_connections_per_ip: Some(128),
            max_rooms_per_ip: Some(100),
            history: 1000,
            history_bytes: 8 * 1024 * 1024,
            presence_batch_above: PRESENCE_BATCH_ABOVE,
            presence_batch_entries: PRESENCE_BATCH_ENTRIES,
            room_expiry: Duration::from_secs(7 * 24 * 60 * 60),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            echo: false,
            data_dir: None,
            redis_url: None,
            redis_partitions: DEFAULT_REDIS_PARTITIONS,
            presence_ttl: Duration::from_secs(6),
            shutdown_timeout: Duration::from_secs(5),
            jwt_secret: None,
            max_token_ttl: DEFAULT_MAX_TOKEN_TTL,
            jwks: None,
            jwks_refresh: Duration::from_secs(10 * 60),
            jwks_min_refetch: Duration::from_secs(30),
            token_rules: TokenRules::default(),
            tls: None,
            admins: Vec::new(),
            api_keys: ApiKeys::default(),
            api_rate: RateLimit {
                per_second: 10.0,
                burst: 50,
            },
        }
    }
}

/// A rate: `per_second` on average, up to `burst` at once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Handshakes from one address may come in bursts of this many seconds' worth, so that
/// a page reloaded a few times, or clients coming back after a restart, are let in.
const HANDSHAKE_BURST_SECONDS: f64 = 10.0;

impl RateLimit {
    /// The slowest rate that is not a mistake: one a minute.
    pub const MIN_PER_SECOND: f64 = 1.0 / 60.0;

    /// Handshakes from one address at `per_second`, in bursts of
    /// `HANDSHAKE_BURST_SECONDS` worth (ten seconds).
    pub fn handshakes(per_second: f64) -> Self {
        Self {
            per_second,
            burst: (per_second * HANDSHAKE_BURST_SECONDS).ceil() as u32,
        }
    }
}

/// A setting that cannot work, and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidConfig {
    #[error("{name} must be between {min:?} and {max:?}")]
    OutOfRange {
        name: &'static str,
        min: Duration,
        max: Duration,
    },
    #[error("{name} must be at least {min} a second, or off")]
    RateTooLow { name: &'static str, min: f64 },
    #[error("{name} must be at least 1")]
    Zero { name: &'static str },
    #[error("the history must be at most {MAX_HISTORY} events per room")]
    HistoryTooLong,
    #[error("a room's expiry in Redis must be between {min:?} and {max:?}")]
    RoomExpiryOutOfRange { min: Duration, max: Duration },
    #[error("the longest token lifetime must be at least a second")]
    TokenTtlZero,
    #[error("a data folder cannot be combined with Redis yet: a cluster's history lives in Redis")]
    DataDirInCluster,
    #[error("a JWKS URL must be http:// or https:// with a host, not {0}")]
    JwksUrl(String),
    #[error("the JWKS refresh interval must be at least a minute")]
    JwksRefreshTooShort,
    #[error("the claim that holds the client id needs a name")]
    NoIdClaim,
}

/// The most rooms at once. Past it, empty rooms are forgotten (with their history) to
/// make place for new ones, and if none is empty a new room is refused.
pub const MAX_ROOMS: usize = 1000;

/// The most bytes of history a room keeps, whatever `--history` says: with at most
/// [`MAX_ROOMS`] rooms, history never takes more than 1 GiB.
pub const MAX_HISTORY_BYTES: usize = 1024 * 1024;

/// The room size above which presence is batched, by default. Below it a storm of N
/// joins costs N²/2 deliveries and each welcome lists N members: at 1 000 that is
/// 0.5 M deliveries (about 0.15 s of CPU at the fan-out's 0.3 µs each) and welcomes of
/// about 40 KB, still cheap, so every room people chat in as a group keeps its exact
/// join and leave lines for every protocol; ergo's maintainer puts the wall near
/// 2 000 per channel, where the same storm is four times as costly.
pub const PRESENCE_BATCH_ABOVE: usize = 1000;

/// How long joins and leaves of a room above the threshold are gathered into one
/// presence batch, at the least: a newcomer's welcome waits at most this long.
pub const PRESENCE_BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How much longer a batch is gathered per member of the room, up to
/// [`PRESENCE_BATCH_MOST`]: each batch goes to every member, so during a storm the
/// batches cost N deliveries per interval; an interval that grows with N keeps that
/// to about 40 000 deliveries a second (some 0.2 s of CPU a second at 5 µs each),
/// whatever the room's size: 100 ms up to 4 000 members, 400 ms at 16 000.
pub const PRESENCE_BATCH_PER_MEMBER: Duration = Duration::from_micros(25);

/// The most joins and leaves a presence batch lists. Every member receives every
/// batch, so listing each join to everyone is N²/2 entries over a storm of N joins
/// (7.7 GB at 16 000, measured as the wall in bench/README.md); bounded, a batch is at
/// most about 15 KB, and a storm costs each member a bounded amount per interval.
/// A client that keeps the whole list pages it again after an unlisted batch, at its
/// own pace.
pub const PRESENCE_BATCH_ENTRIES: usize = 256;

/// The longest a batch is gathered, and a newcomer's welcome waits.
pub const PRESENCE_BATCH_MOST: Duration = Duration::from_secs(1);

/// The most events `history` may keep per room: more is a mistake (Redis refuses a
/// stream length past its integers, and the byte budget keeps far fewer of any size
/// that matters).
pub const MAX_HISTORY: usize = 1_000_000;

/// The shortest and longest a room may be kept in Redis after its last event.
pub const ROOM_EXPIRY_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(366 * 24 * 60 * 60);

/// Bytes of events that may wait for the journal's writer (with `--data-dir`) before
/// sessions stop reading from their clients: a few seconds of a busy room, and a bound
/// on memory when the disk stalls.
pub const JOURNAL_BACKLOG_BYTES: usize = 8 * 1024 * 1024;

/// The most bytes of events handed over to Redis by sessions and not yet back from it:
/// enough for a few milliseconds of a busy room, so that waiting on Redis costs no
/// throughput, and little enough that what waits costs no noticeable latency.
pub const CLUSTER_BACKLOG_BYTES: usize = 256 * 1024;

/// How long a batch delivery (the journal's after a write, the broker's of what it read
/// from Redis) waits, at most once per batch, for a member's outbox over its high-water
/// mark to drain before pushing on: a client reading at full speed drains half its
/// queue far sooner; one that does not is evicted when its queue overflows, and holds
/// the delivery back only this once (see `room::outbox::drained_by`).
pub const DELIVERY_GRACE: Duration = Duration::from_secs(1);

/// The longest any timer may be set to: longer is a mistake, and far longer would
/// overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest handshake and message timeout: shorter is not a timeout at all.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// A pong needs a network round trip: a timeout shorter than this would close healthy
/// clients on any real network.
pub const MIN_PING_TIMEOUT: Duration = Duration::from_millis(100);

/// Pings more often than this would cost more than the connections they keep.
pub const MIN_PING_INTERVAL: Duration = Duration::from_millis(100);

/// Redis expires keys in a background cycle about ten times a second, and a node's
/// heartbeat every third of the TTL has to reach it in time.
pub const MIN_PRESENCE_TTL: Duration = Duration::from_secs(1);

impl Config {
    /// Whether every setting can work.
    pub fn check(&self) -> Result<(), InvalidConfig> {
        let durations = [
            ("ping interval", self.ping_interval, MIN_PING_INTERVAL),
            ("ping timeout", self.ping_timeout, MIN_PING_TIMEOUT),
            ("handshake timeout", self.handshake_timeout, MIN_TIMEOUT),
            ("message timeout", self.message_timeout, MIN_TIMEOUT),
            ("presence TTL", self.presence_ttl, MIN_PRESENCE_TTL),
            ("shutdown timeout", self.shutdown_timeout, Duration::ZERO),
        ];
        for (name, value, min) in durations {
            if !(min..=MAX_DURATION).contains(&value) {
                let max = MAX_DURATION;
                return Err(InvalidConfig::OutOfRange { name, min, max });
            }
        }
        let rates = [
            ("rate limit", self.rate_limit),
            ("handshake rate per IP", self.handshake_rate_per_ip),
        ];
        for (name, rate) in rates {
            if let Some(rate) = rate
                && !(rate.per_second >= RateLimit::MIN_PER_SECOND && rate.per_second.is_finite())
            {
                let min = RateLimit::MIN_PER_SECOND;
                return Err(InvalidConfig::RateTooLow { name, min });
            }
        }
        let counts = [
            ("max message bytes", self.max_message_bytes),
            ("max queue bytes", self.max_queue_bytes),
            ("max connections", self.max_connections),
            (
                "max connections per IP",
                self.max_connections_per_ip.unwrap_or(1),
            ),
            ("max pending connections", self.max_pending_connections),
            (
                "max pending connections per IP",
                self.max_pending_connections_per_ip.unwrap_or(1),
            ),
            ("max rooms per IP", self.max_rooms_per_ip.unwrap_or(1)),
            ("history bytes", self.history_bytes),
        ];
        if let Some((name, _)) = counts.into_iter().find(|(_, count)| *count == 0) {
            return Err(InvalidConfig::Zero { name });
        }
        if self.history > MAX_HISTORY {
            return Err(InvalidConfig::HistoryTooLong);
        }
        if !ROOM_EXPIRY_RANGE.contains(&self.room_expiry) {
            let (min, max) = (*ROOM_EXPIRY_RANGE.start(), *ROOM_EXPIRY_RANGE.end());
            return Err(InvalidConfig::RoomExpiryOutOfRange { min, max });
        }
        if self.max_token_ttl < Duration::from_secs(1) {
            return Err(InvalidConfig::TokenTtlZero);
        }
        if self.data_dir.is_some() && self.redis_url.is_some() {
            return Err(InvalidConfig::DataDirInCluster);
        }
        if let Some(JwksSource::Url(url)) = &self.jwks
            && !(matches!(url.scheme(), "http" | "https") && url.host().is_some())
        {
            return Err(InvalidConfig::JwksUrl(url.to_string()));
        }
        // More often would be asking the provider for what it does not change that fast.
        if self.jwks_refresh < Duration::from_secs(60) {
            return Err(InvalidConfig::JwksRefreshTooShort);
        }
        if self.token_rules.id_claim.is_empty() {
            return Err(InvalidConfig::NoIdClaim);
        }
        Ok(())
    }

    /// Whether chat clients prove their ids with tokens (`--jwt-secret` or a JWKS).
    pub fn checks_tokens(&self) -> bool {
        self.jwt_secret.is_some() || self.jwks.is_some()
    }

    /// The outbox bound in force: `max_queue_bytes`, but never less than twice the
    /// largest frame a message can cause in any protocol (its JSON, every byte escaped),
    /// with its header and its place in the queue: a member reads on below half the
    /// bound, so half of it plus one such frame must fit, or a message at the size limit
    /// would evict its own recipients on arrival.
    pub(crate) fn queue_bytes(&self) -> usize {
        /// The longest frame header, and the queue's pointer to the frame.
        const PER_FRAME: usize = 10 + std::mem::size_of::<usize>();
        let largest_plain = chat::Announcement::longest_said(self.max_message_bytes);
        let largest_json = chat::v1::longest_event(self.max_message_bytes);
        let largest = largest_plain.max(largest_json) + PER_FRAME;
        self.max_queue_bytes.max(2 * largest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_work() {
        assert_eq!(Config::default().check(), Ok(()));
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let zero_pings = Config {
            ping_interval: Duration::ZERO,
            ..Config::default()
        };
        assert!(matches!(
            zero_pings.check(),
            Err(InvalidConfig::OutOfRange {
                name: "ping interval",
                ..
            })
        ));
        let hasty = Config {
            ping_timeout: Duration::from_millis(5),
            ..Config::default()
        };
        assert!(hasty.check().is_err());
        let glacial = Config {
            rate_limit: Some(RateLimit {
                per_second: 1e-30,
                burst: 1,
            }),
            ..Config::default()
        };
        assert!(matches!(
            glacial.check(),
            Err(InvalidConfig::RateTooLow { .. })
        ));
        let blink = Config {
            presence_ttl: Duration::from_millis(500),
            ..Config::default()
        };
        assert!(blink.check().is_err());
        let nobody = Config {
            max_connections: 0,
            ..Config::default()
        };
        assert_eq!(
            nobody.check(),
            Err(InvalidConfig::Zero {
                name: "max connections"
            })
        );
        // Issue 34, finding 13: Redis refused every append, and the node flapped.
        let endless = Config {
            history: 9_223_372_036_854_775_807,
            ..Config::default()
        };
        let ftp = Config {
            jwks: Some(JwksSource::Url(
                "ftp://id.example.org/certs".parse().unwrap(),
            )),
            ..Config::default()
        };
        assert!(matches!(ftp.check(), Err(InvalidConfig::JwksUrl(_))));
        let eager = Config {
            jwks_refresh: Duration::from_secs(5),
            ..Config::default()
        };
        assert_eq!(eager.check(), Err(InvalidConfig::JwksRefreshTooShort));
        let nameless = Config {
            token_rules: TokenRules {
                id_claim: String::new(),
                ..TokenRules::default()
            },
            ..Config::default()
        };
        assert_eq!(nameless.check(), Err(InvalidConfig::NoIdClaim));
        assert_eq!(endless.check(), Err(InvalidConfig::HistoryTooLong));
        assert_eq!(
            endless.check().unwrap_err().to_string(),
            "the history must be at most 1000000 events per room"
        );
    }
}
