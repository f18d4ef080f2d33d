//! Signed identity, with `--jwt-secret`: a client proves its id (and its name) with an
//! HS256 JSON Web Token whose `sub` is the id, minted by the operator's backend with the
//! same secret, as Centrifugo's connection tokens are. Without a secret every client
//! claims its own id, as in the tutorial.
//!
//! A browser should not put such a token in a URL (proxies and its console log those),
//! so it trades one for a ticket (`POST /api/v1/tickets`): good for one connection of
//! the same id and name, within [`TICKET_TTL`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat::ClientId;
use chat::v1::DisplayName;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The shortest secret accepted: HS256's own key size. A shorter one could be found by
/// trying, from any token a client holds.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest a token may be good for unless the operator says otherwise
/// (`--max-token-ttl`): a month, so that a token that leaks stops working within one
/// even if nobody notices.
pub const DEFAULT_MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Seconds of disagreement between clocks forgiven on `exp` and `nbf`.
const CLOCK_LEEWAY_SECONDS: u64 = 30;

/// How long a ticket is good for: long enough to open a WebSocket over a slow link,
/// too short for one copied out of a log to be of use (and it is good only once).
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// What a ticket's key is made from besides the secret, so that a ticket is never
/// a token (nor a token a ticket) however the two are presented.
const TICKET_KEY_SUFFIX: &[u8] = b"\0chat-server ticket";

/// The shared secret tokens are signed with. Never shown, not even in debug output.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtSecret({} bytes)", self.0.len())
    }
}

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "the JWT secret has {0} bytes; it needs at least {MIN_SECRET_BYTES} (make one with: openssl rand -base64 32)"
)]
pub struct WeakSecret(usize);

impl JwtSecret {
    /// The secret, as given: text from a flag, or a file's contents with the line break
    /// an editor leaves at the end trimmed.
    pub fn new(secret: &str) -> Result<Self, WeakSecret> {
        let secret = secret.trim_end_matches(['\n', '\r']);
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret(secret.len()));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }
}

/// What a token says. `sub` is required (the id), and so is `exp`: a token that never
/// expires cannot be taken back short of changing the secret. (Both are checked by the
/// validation, which says which is missing; here `exp` is optional only so that serde
/// does not fail first with a vaguer error.)
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// What a ticket says: the token's id and name, until when, and which ticket it is.
#[derive(Debug, Serialize, Deserialize)]
struct TicketClaims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// Unique among the tickets this process issued: what marks one spent.
    tkt: String,
}

/// Checks tokens, mints them for `chat-server token`, and trades them for tickets.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ticket_encoding: EncodingKey,
    ticket_decoding: DecodingKey,
    ticket_validation: Validation,
    /// A random start for ticket serials, so that a ticket from before a restart
    /// (whose spent list is gone) names no ticket issued after it.
    ticket_boot: u64,
    tickets_issued: AtomicU64,
    /// Tickets used, by serial, with their expiry: kept until they would have expired
    /// anyway. At most what [`TICKET_TTL`] of handshakes can use, which the handshake
    /// rate per address bounds.
    tickets_spent: Mutex<HashMap<String, u64>>,
}

/// A ticket for one connection, as `POST /api/v1/tickets` answers it.
#[derive(Debug, Serialize)]
pub struct Ticket {
    pub ticket: String,
    /// Seconds it is good for from now.
    pub expires_in: u64,
}

/// Why a token does not let a client in, in words for the client.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenRefusal {
    #[error(
        "this server requires a token: connect to /ws/<id>?token=<JWT> or send Authorization: Bearer <JWT> (an operator mints one with chat-server token --id <id>)"
    )]
    Missing,
    #[error("the token has expired; get a new one")]
    Expired,
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYet,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token is for client {token}, not {asked}")]
    OtherId { token: String, asked: String },
    #[error("the token's name is not usable: {0}")]
    BadName(chat::v1::InvalidName),
    #[error(
        "the token is good for longer than this server allows ({}); get one that expires sooner",
        days(*.0)
    )]
    TooLong(Duration),
    #[error(
        "the token marks header parameters {0:?} as critical (crit), and this server understands none"
    )]
    Critical(Vec<String>),
    #[error(
        "the ticket has expired (a ticket is good for {} s); get another with POST /api/v1/tickets",
        TICKET_TTL.as_secs()
    )]
    TicketExpired,
    #[error("the ticket has been used already; get another with POST /api/v1/tickets")]
    TicketSpent,
    #[error("invalid ticket: {0}")]
    TicketInvalid(String),
}

/// A lifetime longer than the longest allowed, for `chat-server token`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "a token good for {} is longer than the longest allowed, {}: give a shorter --ttl, or raise --max-token-ttl",
    days(*.ttl), days(*.max)
)]
pub struct TtlTooLong {
    pub ttl: Duration,
    pub max: Duration,
}

/// `ttl` if no longer than `max`, the longest a token may be good for.
pub fn check_ttl(ttl: Duration, max: Duration) -> Result<Duration, TtlTooLong> {
    if ttl > max {
        return Err(TtlTooLong { ttl, max });
    }
    Ok(ttl)
}

/// A lifetime in the unit an operator would give it: `30 days`, `12 h`, `90 s`.
fn days(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        _ if seconds >= 86_400 && seconds.is_multiple_of(86_400) => {
            format!("{} days", seconds / 86_400)
        }
        _ if seconds >= 3_600 && seconds.is_multiple_of(3_600) => format!("{} h", seconds / 3_600),
        _ => format!("{seconds} s"),
    }
}

impl Tokens {
    pub fn new(secret: &JwtSecret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECONDS;
        let ticket_key = [secret.0.as_slice(), TICKET_KEY_SUFFIX].concat();
        let mut ticket_validation = Validation::new(Algorithm::HS256);
        ticket_validation.set_required_spec_claims(&["exp", "sub"]);
        // Issued and checked by this clock.
        ticket_validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(&secret.0),
            decoding: DecodingKey::from_secret(&secret.0),
            validation,
            ticket_encoding: EncodingKey::from_secret(&ticket_key),
            ticket_decoding: DecodingKey::from_secret(&ticket_key),
            ticket_validation,
            ticket_boot: fastrand::u64(..),
            tickets_issued: AtomicU64::new(0),
            tickets_spent: Mutex::new(HashMap::new()),
        }
    }

    /// A ticket for one connection as the holder of `token`, the token's id and name:
    /// good for [`TICKET_TTL`], or until the token expires if that is sooner.
    pub fn ticket(
        &self,
        token: &str,
        id: &ClientId,
        max_ttl: Duration,
    ) -> Result<Ticket, TokenRefusal> {
        let claims = self.verified(token, id, max_ttl)?;
        let now = jsonwebtoken::get_current_timestamp();
        let mut exp = now.saturating_add(TICKET_TTL.as_secs());
        if let Some(token_exp) = claims.exp {
            exp = exp.min(token_exp);
        }
        let serial = self.tickets_issued.fetch_add(1, Ordering::Relaxed);
        let claims = TicketClaims {
            sub: id.to_string(),
            exp,
            name: claims.name,
            tkt: format!("{:x}-{serial}", self.ticket_boot),
        };
        let ticket = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.ticket_encoding,
        )
        .expect("HS256 signing with a byte key cannot fail");
        Ok(Ticket {
            ticket,
            expires_in: exp.saturating_sub(now),
        })
    }

    /// The name a ticket gives client `id`, if it is this server's, for `id`, not
    /// expired and not used before; it is used from now on.
    pub fn redeem(&self, ticket: &str, id: &ClientId) -> Result<Option<DisplayName>, TokenRefusal> {
        self.redeem_at(ticket, id, jsonwebtoken::get_current_timestamp())
    }

    fn redeem_at(
        &self,
        ticket: &str,
        id: &ClientId,
        now: u64,
    ) -> Result<Option<DisplayName>, TokenRefusal> {
        let mut validation = self.ticket_validation.clone();
        // Expiry is checked below against `now`, so that tests can move the clock.
        validation.validate_exp = false;
        let claims =
            jsonwebtoken::decode::<TicketClaims>(ticket, &self.ticket_decoding, &validation)
                .map_err(|error| match refusal(error.kind()) {
                    TokenRefusal::Invalid(why) => TokenRefusal::TicketInvalid(why),
                    other => other,
                })?
                .claims;
        if claims.exp <= now {
            return Err(TokenRefusal::TicketExpired);
        }
        if ClientId::parse(&claims.sub).ok().as_ref() != Some(id) {
            return Err(TokenRefusal::OtherId {
                token: claims.sub,
                asked: id.to_string(),
            });
        }
        {
            // Held only for a map lookup and insert, never across an await.
            let mut spent = self
                .tickets_spent
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            spent.retain(|_, exp| *exp > now);
            if spent.insert(claims.tkt, claims.exp).is_some() {
                return Err(TokenRefusal::TicketSpent);
            }
        }
        claims
            .name
            .map(|name| DisplayName::parse(&name))
            .transpose()
            .map_err(TokenRefusal::BadName)
    }

    /// A token for `id`, valid from now for `ttl`, naming it `name`.
    pub fn mint(&self, id: &ClientId, ttl: Duration, name: Option<&DisplayName>) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: id.to_string(),
            exp: Some(now.saturating_add(ttl.as_secs())),
            iat: Some(now),
            nbf: None,
            name: name.map(|name| name.to_string()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with a byte key cannot fail")
    }

    /// The name `token` gives client `id`, if the token is good for `id` and for no
    /// longer than the default longest lifetime (see [`Tokens::check_within`]).
    pub fn check(&self, token: &str, id: &ClientId) -> Result<Option<DisplayName>, TokenRefusal> {
        self.check_within(token, id, DEFAULT_MAX_TOKEN_TTL)
    }

    /// The name `token` gives client `id`, if the token is good for `id`, expires
    /// within `max_ttl` of now, and has no `crit` header.
    ///
    /// A token whose `exp` is far off (2^64-1, say) could never be taken back short of
    /// changing the secret; one that marks header parameters critical must be refused
    /// when they are not understood (RFC 7515 §4.1.11), and none are here.
    pub fn check_within(
        &self,
        token: &str,
        id: &ClientId,
        max_ttl: Duration,
    ) -> Result<Option<DisplayName>, TokenRefusal> {
        self.verified(token, id, max_ttl)?
            .name
            .map(|name| DisplayName::parse(&name))
            .transpose()
            .map_err(TokenRefusal::BadName)
    }

    /// The claims of `token`, if it is good for `id` as [`Tokens::check_within`] says.
    fn verified(
        &self,
        token: &str,
        id: &ClientId,
        max_ttl: Duration,
    ) -> Result<Claims, TokenRefusal> {
        let decoded = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| refusal(error.kind()))?;
        if let Some(critical) = decoded.header.crit {
            return Err(TokenRefusal::Critical(critical));
        }
        let claims = decoded.claims;
        let now = jsonwebtoken::get_current_timestamp();
        let latest = now
            .saturating_add(max_ttl.as_secs())
            .saturating_add(CLOCK_LEEWAY_SECONDS);
        if claims.exp.is_some_and(|exp| exp > latest) {
            return Err(TokenRefusal::TooLong(max_ttl));
        }
        // The id as a client would write it: `+7` and `007` are 7.
        let same = ClientId::parse(&claims.sub).is_ok_and(|sub| sub == *id);
        if !same {
            return Err(TokenRefusal::OtherId {
                token: claims.sub,
                asked: id.to_string(),
            });
        }
        // A name the server would refuse is refused now, not at the ticket's use.
        if let Some(name) = &claims.name {
            DisplayName::parse(name).map_err(TokenRefusal::BadName)?;
        }
        Ok(claims)
    }
}

/// What a token's claims grant besides its id (issue 31): `"roles":{"<room>":"owner"|
/// "moderator"}`, `"admin":true`, `"bot":true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub roles: HashMap<String, chat::v1::Role>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub bot: bool,
}

impl Grants {
    /// The role these grants give in `room`: an admin's everywhere, else the room's
    /// (at most owner: admin is not a room's to give).
    pub fn role_in(&self, room: &str) -> chat::v1::Role {
        use chat::v1::Role;
        if self.admin {
            return Role::Admin;
        }
        self.roles
            .get(room)
            .map_or(Role::Member, |role| (*role).min(Role::Owner))
    }
}

/// The grants in `token`'s payload. Its signature is not checked here: call this only
/// for a token [`Tokens::check_within`] accepted. Claims of the wrong shape grant
/// nothing.
pub fn grants(token: &str) -> Grants {
    use base64::Engine;
    let Some(payload) = token.split('.').nth(1) else {
        return Grants::default();
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default()
}

fn refusal(kind: &ErrorKind) -> TokenRefusal {
    let why = match kind {
        ErrorKind::ExpiredSignature => return TokenRefusal::Expired,
        ErrorKind::ImmatureSignature => return TokenRefusal::NotYet,
        ErrorKind::InvalidSignature => "its signature does not match this server's secret",
        ErrorKind::InvalidAlgorithm => "only HS256 tokens are accepted",
        ErrorKind::MissingRequiredClaim(claim) => {
            return TokenRefusal::Invalid(format!("it has no {claim} claim"));
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            return TokenRefusal::Invalid(format!("its {claim} claim has the wrong type"));
        }
        ErrorKind::Json(_) => "its claims are not the JSON object expected",
        _ => "it is not a JWT (three base64url parts separated by dots)",
    };
    TokenRefusal::Invalid(why.into())
}

/// A duration as an operator writes one: `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 1h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    match count.checked_mul(seconds) {
        Some(0) => Err("a token that expires at once is of no use".into()),
        Some(total) => Ok(Duration::from_secs(total)),
        None => Err(format!("{text:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(secret: &str) -> Tokens {
        Tokens::new(&JwtSecret::new(secret).unwrap())
    }

    fn id(text: &str) -> ClientId {
        ClientId::parse(text).unwrap()
    }

    fn signed(claims: serde_json::Value, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_minted_token_lets_its_id_in_with_its_name() {
        let tokens = tokens(SECRET);
        let ada = DisplayName::parse("Ada").unwrap();
        let token = tokens.mint(&id("42"), Duration::from_secs(60), Some(&ada));
        assert_eq!(tokens.check(&token, &id("42")), Ok(Some(ada)));
        assert_eq!(tokens.check(&token, &id("+042")).map(|_| ()), Ok(()));
        assert_eq!(
            tokens.check(&token, &id("43")),
            Err(TokenRefusal::OtherId {
                token: "42".into(),
                asked: "43".into()
            })
        );
    }

    #[test]
    fn wrong_expired_early_and_malformed_tokens_are_refused_with_their_reason() {
        let other = tokens(&"x".repeat(32)).mint(&id("1"), Duration::from_secs(60), None);
        let tokens = tokens(SECRET);
        let now = jsonwebtoken::get_current_timestamp();
        assert!(matches!(
            tokens.check(&other, &id("1")),
            Err(TokenRefusal::Invalid(why)) if why.contains("signature")
        ));
        let expired = signed(serde_json::json!({"sub": "1", "exp": now - 120}), SECRET);
        assert_eq!(tokens.check(&expired, &id("1")), Err(TokenRefusal::Expired));
        let early = signed(
            serde_json::json!({"sub": "1", "exp": now + 600, "nbf": now + 300}),
            SECRET,
        );
        assert_eq!(tokens.check(&early, &id("1")), Err(TokenRefusal::NotYet));
        let forever = signed(serde_json::json!({"sub": "1"}), SECRET);
        assert_eq!(
            tokens.check(&forever, &id("1")),
            Err(TokenRefusal::Invalid("it has no exp claim".into()))
        );
        assert!(matches!(
            tokens.check("not.a.jwt", &id("1")),
            Err(TokenRefusal::Invalid(_))
        ));
        let bad_name = signed(
            serde_json::json!({"sub": "1", "exp": now + 60, "name": "a\u{1b}[2J"}),
            SECRET,
        );
        assert!(matches!(
            tokens.check(&bad_name, &id("1")),
            Err(TokenRefusal::BadName(_))
        ));
    }

    #[test]
    fn tokens_good_for_too_long_and_critical_headers_are_refused() {
        let tokens = tokens(SECRET);
        let now = jsonwebtoken::get_current_timestamp();
        let forever = signed(serde_json::json!({"sub": "1", "exp": u64::MAX}), SECRET);
        assert_eq!(
            tokens.check(&forever, &id("1")),
            Err(TokenRefusal::TooLong(DEFAULT_MAX_TOKEN_TTL))
        );
        let a_year = signed(
            serde_json::json!({"sub": "1", "exp": now + 365 * 86_400}),
            SECRET,
        );
        assert!(tokens.check(&a_year, &id("1")).is_err());
        let hour = Duration::from_secs(3600);
        assert_eq!(
            tokens.check_within(&a_year, &id("1"), hour),
            Err(TokenRefusal::TooLong(hour))
        );
        let a_week = signed(
            serde_json::json!({"sub": "1", "exp": now + 7 * 86_400}),
            SECRET,
        );
        assert_eq!(tokens.check(&a_week, &id("1")), Ok(None));

        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let critical = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "1", "exp": now + 60}),
            &key,
        )
        .unwrap();
        assert_eq!(
            tokens.check(&critical, &id("1")),
            Err(TokenRefusal::Critical(vec!["exp".into()]))
        );
    }

    #[test]
    fn a_ticket_is_good_once_for_its_id_until_it_expires() {
        let tokens = tokens(SECRET);
        let ada = DisplayName::parse("Ada").unwrap();
        let token = tokens.mint(&id("42"), Duration::from_secs(600), Some(&ada));
        let now = jsonwebtoken::get_current_timestamp();
        let ticket = tokens
            .ticket(&token, &id("42"), DEFAULT_MAX_TOKEN_TTL)
            .unwrap();
        assert_eq!(ticket.expires_in, TICKET_TTL.as_secs());
        let late = now + TICKET_TTL.as_secs() + 1;
        assert_eq!(
            tokens.redeem_at(&ticket.ticket, &id("42"), late),
            Err(TokenRefusal::TicketExpired)
        );
        assert!(matches!(
            tokens.redeem(&ticket.ticket, &id("43")),
            Err(TokenRefusal::OtherId { .. })
        ));
        assert_eq!(tokens.redeem(&ticket.ticket, &id("42")), Ok(Some(ada)));
        assert_eq!(
            tokens.redeem(&ticket.ticket, &id("42")),
            Err(TokenRefusal::TicketSpent)
        );
        // A ticket is not a token, nor a token a ticket.
        let other = tokens
            .ticket(&token, &id("42"), DEFAULT_MAX_TOKEN_TTL)
            .unwrap();
        assert!(matches!(
            tokens.check(&other.ticket, &id("42")),
            Err(TokenRefusal::Invalid(_))
        ));
        assert!(matches!(
            tokens.redeem(&token, &id("42")),
            Err(TokenRefusal::TicketInvalid(_))
        ));
        // One for a token about to expire lasts no longer than the token.
        let short = tokens.mint(&id("7"), Duration::from_secs(5), None);
        let ticket = tokens
            .ticket(&short, &id("7"), DEFAULT_MAX_TOKEN_TTL)
            .unwrap();
        assert!(ticket.expires_in <= 5, "{ticket:?}");
        let expired = signed(serde_json::json!({"sub": "7", "exp": now - 120}), SECRET);
        assert!(matches!(
            tokens.ticket(&expired, &id("7"), DEFAULT_MAX_TOKEN_TTL),
            Err(TokenRefusal::Expired)
        ));
    }

    #[test]
    fn lifetimes_past_the_longest_are_refused_with_both_named() {
        let month = DEFAULT_MAX_TOKEN_TTL;
        assert_eq!(check_ttl(month, month), Ok(month));
        let error = check_ttl(month * 2, month).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a token good for 60 days is longer than the longest allowed, 30 days: give a \
             shorter --ttl, or raise --max-token-ttl"
        );
    }

    #[test]
    fn a_short_secret_is_refused_and_a_secret_is_never_shown() {
        assert_eq!(JwtSecret::new("short\n").unwrap_err(), WeakSecret(5));
        let secret = JwtSecret::new(&format!("{SECRET}\n")).unwrap();
        assert_eq!(format!("{secret:?}"), "JwtSecret(32 bytes)");
    }

    #[test]
    fn ttls_read_as_operators_write_them() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86400)));
        for bad in ["", "h", "1w", "-1h", "0s", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
