//! Signed identity: a client proves its id (and its name) with a JSON Web Token, either
//! HS256 with `--jwt-secret` (minted by the operator's backend with the same secret, as
//! Centrifugo's connection tokens are) or signed by an identity provider whose public
//! keys are given with `--jwks-file` or `--jwks-url` ([`jwks`]); `--jwt-issuer`,
//! `--jwt-audience` and `--jwt-id-claim` ([`TokenRules`]) say what else a token must
//! hold. Without either every client claims its own id, as in the tutorial.
//!
//! A browser should not put such a token in a URL (proxies and its console log those),
//! so it trades one for a ticket (`POST /api/v1/tickets`): good for one connection of
//! the same id and name, within [`TICKET_TTL`].
//!
//! What the handshake and the API call: [`Tokens::verify`] and [`Tokens::verify_for`],
//! which answer the [`Verified`] claims (the id, the name, and every claim as sent, for
//! what reads more of them), or a [`TokenRefusal`].

mod fetch;
pub mod jwks;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat::ClientId;
use chat::v1::DisplayName;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use fetch::FetchError;
pub use jwks::{Jwks, JwksError, JwksSource};

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

/// What else a token must hold besides a good signature and an `exp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRules {
    /// `--jwt-issuer`: the `iss` every token must carry, if any.
    pub issuer: Option<String>,
    /// `--jwt-audience`: a value the token's `aud` must hold, if any.
    pub audience: Option<String>,
    /// `--jwt-id-claim`: the claim that holds the client id (a string or an integer).
    pub id_claim: String,
}

impl Default for TokenRules {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            id_claim: DEFAULT_ID_CLAIM.to_owned(),
        }
    }
}

/// The claim that holds the client id unless `--jwt-id-claim` says otherwise.
pub const DEFAULT_ID_CLAIM: &str = "sub";

/// A token's claims once its signature and every rule have been checked.
///
/// `claims` holds them all as the token has them, so that what reads more of a token
/// (roles, say) reads them here rather than decoding it again.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// The client id, from the claim `--jwt-id-claim` names (`sub` by default).
    pub id: ClientId,
    /// The `name` claim, if any, as the chat shows it.
    pub name: Option<DisplayName>,
    /// The `exp` claim: when the token stops being good, in seconds since 1970.
    pub expires: u64,
    /// Every claim of the token.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// What a ticket says: the token's id, name and grants, until when, and which ticket it
/// is.
#[derive(Debug, Serialize, Deserialize)]
struct TicketClaims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// Unique among the tickets this process issued: what marks one spent.
    tkt: String,
    /// The token's roles, as its claims name them, so that a browser's connection
    /// has the role its token gives.
    #[serde(flatten)]
    grants: Grants,
}

/// The HS256 keys of `--jwt-secret`.
struct SecretKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Checks tokens, mints them for `chat-server token`, and trades them for tickets.
pub struct Tokens {
    /// With `--jwt-secret`: HS256 tokens.
    secret: Option<SecretKeys>,
    /// With `--jwks-file` or `--jwks-url`: tokens signed by an identity provider.
    jwks: Option<Arc<Jwks>>,
    rules: TokenRules,
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

/// What a ticket gives its connection: its token's name and grants.
#[derive(Debug, PartialEq)]
pub struct Redeemed {
    pub name: Option<DisplayName>,
    pub grants: Grants,
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
    /// HS256 tokens signed with `secret`, whose `sub` is the id.
    pub fn new(secret: &JwtSecret) -> Self {
        Self::checking(Some(secret), None, TokenRules::default())
            .expect("a secret is something to check tokens with")
    }

    /// Tokens signed with `secret` (HS256), by a key of `jwks`, or either if both are
    /// given, and holding what `rules` ask; `None` if neither is given.
    pub fn checking(
        secret: Option<&JwtSecret>,
        jwks: Option<Arc<Jwks>>,
        rules: TokenRules,
    ) -> Option<Self> {
        if secret.is_none() && jwks.is_none() {
            return None;
        }
        // Tickets are signed with a key made from the secret, so that any node with it
        // takes them; without one, with a random key of this process's own.
        let ticket_key = match secret {
            Some(secret) => [secret.0.as_slice(), TICKET_KEY_SUFFIX].concat(),
            None => random_key(),
        };
        let mut ticket_validation = Validation::new(Algorithm::HS256);
        ticket_validation.set_required_spec_claims(&["exp", "sub"]);
        // Issued and checked by this clock.
        ticket_validation.leeway = 0;
        Some(Self {
            secret: secret.map(|secret| SecretKeys {
                encoding: EncodingKey::from_secret(&secret.0),
                decoding: DecodingKey::from_secret(&secret.0),
            }),
            jwks,
            rules,
            ticket_encoding: EncodingKey::from_secret(&ticket_key),
            ticket_decoding: DecodingKey::from_secret(&ticket_key),
            ticket_validation,
            ticket_boot: fastrand::u64(..),
            tickets_issued: AtomicU64::new(0),
            tickets_spent: Mutex::new(HashMap::new()),
        })
    }

    /// The rules tokens are checked by, for `chat-server token` to mint by.
    pub fn with_rules(mut self, rules: TokenRules) -> Self {
        self.rules = rules;
        self
    }

    /// A ticket for one connection as the holder of `token`, the token's id, name and
    /// grants:
    /// good for [`TICKET_TTL`], or until the token expires if that is sooner.
    pub async fn ticket(
        &self,
        token: &str,
        id: &ClientId,
        max_ttl: Duration,
    ) -> Result<Ticket, TokenRefusal> {
        let verified = self.verify_for(token, id, max_ttl).await?;
        let grants = Grants::of(&verified);
        let now = jsonwebtoken::get_current_timestamp();
        let exp = now
            .saturating_add(TICKET_TTL.as_secs())
            .min(verified.expires);
        let serial = self.tickets_issued.fetch_add(1, Ordering::Relaxed);
        let claims = TicketClaims {
            sub: id.to_string(),
            exp,
            name: verified.name.map(|name| name.to_string()),
            tkt: format!("{:x}-{serial}", self.ticket_boot),
            grants,
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

    /// The name and grants a ticket gives client `id`, if it is this server's, for
    /// `id`, not expired and not used before; it is used from now on.
    pub fn redeem(&self, ticket: &str, id: &ClientId) -> Result<Redeemed, TokenRefusal> {
        self.redeem_at(ticket, id, jsonwebtoken::get_current_timestamp())
    }

    fn redeem_at(&self, ticket: &str, id: &ClientId, now: u64) -> Result<Redeemed, TokenRefusal> {
        let mut validation = self.ticket_validation.clone();
        // Expiry is checked below against `now`, so that tests can move the clock.
        validation.validate_exp = false;
        let claims =
            jsonwebtoken::decode::<TicketClaims>(ticket, &self.ticket_decoding, &validation)
                .map_err(|error| match refusal(error.kind(), Signer::Ticket) {
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
        let name = claims
            .name
            .map(|name| DisplayName::parse(&name))
            .transpose()
            .map_err(TokenRefusal::BadName)?;
        Ok(Redeemed {
            name,
            grants: claims.grants,
        })
    }

    /// A token for `id`, valid from now for `ttl`, naming it `name`, signed with the
    /// secret and holding what the rules ask (the id in their claim, `iss`, `aud`).
    ///
    /// # Panics
    ///
    /// Without a secret: [`Tokens::new`] always has one.
    pub fn mint(&self, id: &ClientId, ttl: Duration, name: Option<&DisplayName>) -> String {
        let secret = self
            .secret
            .as_ref()
            .expect("tokens are minted only with a secret");
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), id.to_string().into());
        claims.insert(self.rules.id_claim.clone(), id.to_string().into());
        claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
        claims.insert("iat".into(), now.into());
        if let Some(name) = name {
            claims.insert("name".into(), name.to_string().into());
        }
        if let Some(issuer) = &self.rules.issuer {
            claims.insert("iss".into(), issuer.clone().into());
        }
        if let Some(audience) = &self.rules.audience {
            claims.insert("aud".into(), audience.clone().into());
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &secret.encoding)
            .expect("HS256 signing with a byte key cannot fail")
    }

    /// The name `token` gives client `id`, if the token is good for `id` and for no
    /// longer than the default longest lifetime (see [`Tokens::check_within`]).
    pub fn check(&self, token: &str, id: &ClientId) -> Result<Option<DisplayName>, TokenRefusal> {
        self.check_within(token, id, DEFAULT_MAX_TOKEN_TTL)
    }

    /// The name `token` gives client `id`, as [`Tokens::verify_for`] checks it but
    /// with the key set as it is: a key not in it is not fetched.
    pub fn check_within(
        &self,
        token: &str,
        id: &ClientId,
        max_ttl: Duration,
    ) -> Result<Option<DisplayName>, TokenRefusal> {
        let (header, key) = self.key_now(token)?;
        let verified = self.verified(token, header, &key, max_ttl)?;
        same_id(verified, id).map(|verified| verified.name)
    }

    /// The claims of `token` if it is good for client `id` (see [`Tokens::verify`]).
    pub async fn verify_for(
        &self,
        token: &str,
        id: &ClientId,
        max_ttl: Duration,
    ) -> Result<Verified, TokenRefusal> {
        same_id(self.verify(token, max_ttl).await?, id)
    }

    /// The claims of `token`, if its signature is good (by the secret for HS256, by the
    /// identity provider's key its `kid` names otherwise, the set fetched again first
    /// if that key is new), it holds what the rules ask, it expires within `max_ttl`
    /// of now, and it has no `crit` header.
    ///
    /// A token whose `exp` is far off (2^64-1, say) could never be taken back short of
    /// changing the key; one that marks header parameters critical must be refused
    /// when they are not understood (RFC 7515 §4.1.11), and none are here.
    pub async fn verify(&self, token: &str, max_ttl: Duration) -> Result<Verified, TokenRefusal> {
        let header = read_header(token)?;
        let key = match (header.alg, &self.jwks) {
            (Algorithm::HS256, _) => self.secret_key()?,
            (alg, Some(jwks)) => jwks
                .find_or_refetch(header.kid.as_deref(), alg)
                .await
                .map_err(no_key)?,
            (_, None) => return Err(only_hs256()),
        };
        self.verified(token, header, &key, max_ttl)
    }

    /// The key for `token` as the set is now.
    fn key_now(&self, token: &str) -> Result<(Header, DecodingKey), TokenRefusal> {
        let header = read_header(token)?;
        let key = match (header.alg, &self.jwks) {
            (Algorithm::HS256, _) => self.secret_key()?,
            (alg, Some(jwks)) => jwks.find(header.kid.as_deref(), alg).map_err(no_key)?,
            (_, None) => return Err(only_hs256()),
        };
        Ok((header, key))
    }

    fn secret_key(&self) -> Result<DecodingKey, TokenRefusal> {
        match &self.secret {
            Some(secret) => Ok(secret.decoding.clone()),
            None => Err(TokenRefusal::Invalid(
                "HS256 tokens are not taken here: a token must be signed by the identity \
                 provider (RS256, ES256 or EdDSA)"
                    .into(),
            )),
        }
    }

    /// The claims of `token`, checked with `key` for the algorithm its header names.
    fn verified(
        &self,
        token: &str,
        header: Header,
        key: &DecodingKey,
        max_ttl: Duration,
    ) -> Result<Verified, TokenRefusal> {
        if let Some(critical) = header.crit {
            return Err(TokenRefusal::Critical(critical));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECONDS;
        if let Some(issuer) = &self.rules.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.rules.audience {
            Some(audience) => validation.set_audience(&[audience]),
            // A provider's tokens name their audience; with none asked for, any will do.
            None => validation.validate_aud = false,
        }
        let signer = match header.alg {
            Algorithm::HS256 => Signer::Secret,
            _ => Signer::Provider,
        };
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|error| refusal(error.kind(), signer))?
        .claims;
        let expires = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| TokenRefusal::Invalid("its exp claim has the wrong type".into()))?;
        let now = jsonwebtoken::get_current_timestamp();
        let latest = now
            .saturating_add(max_ttl.as_secs())
            .saturating_add(CLOCK_LEEWAY_SECONDS);
        if expires > latest {
            return Err(TokenRefusal::TooLong(max_ttl));
        }
        let id_claim = &self.rules.id_claim;
        // The id as a client would write it (`+7` and `007` are 7), as text or a number.
        let id = match claims.get(id_claim) {
            None => return Err(TokenRefusal::Invalid(format!("it has no {id_claim} claim"))),
            Some(serde_json::Value::String(text)) => ClientId::parse(text).ok(),
            Some(serde_json::Value::Number(number)) => ClientId::parse(&number.to_string()).ok(),
            Some(_) => None,
        };
        let id = id.ok_or_else(|| {
            TokenRefusal::Invalid(format!(
                "its {id_claim} claim is not a client id ({})",
                chat::ID_RULES
            ))
        })?;
        // A name the server would refuse is refused now, not at the ticket's use.
        let name = match claims.get("name") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(name)) => {
                Some(DisplayName::parse(name).map_err(TokenRefusal::BadName)?)
            }
            Some(_) => {
                return Err(TokenRefusal::Invalid(
                    "its name claim has the wrong type".into(),
                ));
            }
        };
        Ok(Verified {
            id,
            name,
            expires,
            claims,
        })
    }
}

/// `verified` if it is for client `id`.
fn same_id(verified: Verified, id: &ClientId) -> Result<Verified, TokenRefusal> {
    if verified.id != *id {
        return Err(TokenRefusal::OtherId {
            token: verified.id.to_string(),
            asked: id.to_string(),
        });
    }
    Ok(verified)
}

/// The header of `token`, read before anything else is believed. `alg: none` (and any
/// algorithm this server does not know) is refused here, by name.
fn read_header(token: &str) -> Result<Header, TokenRefusal> {
    jsonwebtoken::decode_header(token).map_err(|error| {
        if unsigned(token) {
            return TokenRefusal::Invalid(
                "it is not signed (alg none); only signed tokens are taken".into(),
            );
        }
        refusal(error.kind(), Signer::Secret)
    })
}

/// Whether `token`'s header says `"alg": "none"` (in any case).
fn unsigned(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&json).is_ok_and(|header| {
        header
            .get("alg")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|alg| alg.eq_ignore_ascii_case("none"))
    })
}

fn only_hs256() -> TokenRefusal {
    TokenRefusal::Invalid("only HS256 tokens are accepted".into())
}

fn no_key(why: jwks::NoKey) -> TokenRefusal {
    match why {
        jwks::NoKey::Unknown(why) | jwks::NoKey::Unusable(why) => TokenRefusal::Invalid(why),
    }
}

/// A key of 32 random bytes, for tickets when there is no secret to make one from.
fn random_key() -> Vec<u8> {
    let mut key = vec![0; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut key)
        .expect("the system has a source of random bytes");
    key
}

/// Who signed what a signature was checked against, for the words of a refusal.
#[derive(Clone, Copy)]
enum Signer {
    Secret,
    Provider,
    Ticket,
}

/// What a token's claims grant besides its id (issue 31): `"roles":{"<room>":"owner"|
/// "moderator"}`, `"admin":true`, `"bot":true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub roles: HashMap<String, chat::v1::Role>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
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

impl Grants {
    /// The grants in a verified token's claims. Claims of the wrong shape grant
    /// nothing.
    pub fn of(verified: &Verified) -> Self {
        serde_json::from_value(serde_json::Value::Object(verified.claims.clone()))
            .unwrap_or_default()
    }
}

fn refusal(kind: &ErrorKind, signer: Signer) -> TokenRefusal {
    let why = match kind {
        ErrorKind::ExpiredSignature => return TokenRefusal::Expired,
        ErrorKind::ImmatureSignature => return TokenRefusal::NotYet,
        ErrorKind::InvalidSignature => match signer {
            Signer::Secret | Signer::Ticket => "its signature does not match this server's secret",
            Signer::Provider => "its signature does not match the identity provider's key",
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "its alg is not one this server takes (HS256 with a secret; RS256, ES256 or \
             EdDSA with an identity provider's keys)"
        }
        ErrorKind::InvalidIssuer => "its iss is not the issuer this server trusts",
        ErrorKind::InvalidAudience => "its aud does not name this server",
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

    #[tokio::test]
    async fn a_ticket_is_good_once_for_its_id_until_it_expires() {
        let tokens = tokens(SECRET);
        let ada = DisplayName::parse("Ada").unwrap();
        let token = tokens.mint(&id("42"), Duration::from_secs(600), Some(&ada));
        let now = jsonwebtoken::get_current_timestamp();
        let ticket = tokens
            .ticket(&token, &id("42"), DEFAULT_MAX_TOKEN_TTL)
            .await
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
        let redeemed = tokens.redeem(&ticket.ticket, &id("42")).unwrap();
        assert_eq!(redeemed.name, Some(ada));
        assert_eq!(redeemed.grants, Grants::default());
        assert_eq!(
            tokens.redeem(&ticket.ticket, &id("42")),
            Err(TokenRefusal::TicketSpent)
        );
        // A ticket is not a token, nor a token a ticket.
        let other = tokens
            .ticket(&token, &id("42"), DEFAULT_MAX_TOKEN_TTL)
            .await
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
            .await
            .unwrap();
        assert!(ticket.expires_in <= 5, "{ticket:?}");
        let expired = signed(serde_json::json!({"sub": "7", "exp": now - 120}), SECRET);
        assert!(matches!(
            tokens
                .ticket(&expired, &id("7"), DEFAULT_MAX_TOKEN_TTL)
                .await,
            Err(TokenRefusal::Expired)
        ));
    }

    #[tokio::test]
    async fn a_ticket_carries_its_tokens_roles() {
        let tokens = tokens(SECRET);
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({
            "sub": "42", "exp": now + 600, "roles": {"lobby": "moderator"}, "bot": true,
        });
        let ticket = tokens
            .ticket(&signed(claims, SECRET), &id("42"), DEFAULT_MAX_TOKEN_TTL)
            .await
            .unwrap();
        let grants = tokens.redeem(&ticket.ticket, &id("42")).unwrap().grants;
        assert_eq!(grants.role_in("lobby"), chat::v1::Role::Moderator);
        assert_eq!(grants.role_in("main"), chat::v1::Role::Member);
        assert!(grants.bot && !grants.admin);
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

    #[tokio::test]
    async fn the_rules_are_checked_and_minted_by_and_every_claim_is_handed_on() {
        let rules = TokenRules {
            issuer: Some("https://id.example.org".into()),
            audience: Some("chat".into()),
            id_claim: "chat_id".into(),
        };
        let tokens = tokens(SECRET).with_rules(rules.clone());
        let minted = tokens.mint(&id("42"), Duration::from_secs(60), None);
        let verified = tokens
            .verify_for(&minted, &id("42"), DEFAULT_MAX_TOKEN_TTL)
            .await
            .unwrap();
        assert_eq!(verified.id, id("42"));
        assert_eq!(verified.claims["iss"], "https://id.example.org");
        // What the rules do not know is handed on as it came (roles, say).
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({
            "sub": "a-uuid", "chat_id": 7, "iss": "https://id.example.org",
            "aud": ["account", "chat"], "exp": now + 60, "roles": {"lobby": "owner"},
        });
        let verified = tokens
            .verify(&signed(claims.clone(), SECRET), DEFAULT_MAX_TOKEN_TTL)
            .await
            .unwrap();
        assert_eq!(verified.id, id("7"), "an integer claim is an id too");
        assert_eq!(verified.claims["roles"]["lobby"], "owner");
        assert_eq!(verified.expires, now + 60);

        let refused = async |change: serde_json::Value| {
            let mut claims = claims.clone();
            for (key, value) in change.as_object().unwrap() {
                claims[key] = value.clone();
            }
            let token = signed(claims, SECRET);
            match tokens.verify(&token, DEFAULT_MAX_TOKEN_TTL).await {
                Err(TokenRefusal::Invalid(why)) => why,
                other => panic!("{change}: {other:?}"),
            }
        };
        let aud = refused(serde_json::json!({"aud": "another"})).await;
        assert_eq!(aud, "its aud does not name this server");
        let iss = refused(serde_json::json!({"iss": "https://evil.example.org"})).await;
        assert_eq!(iss, "its iss is not the issuer this server trusts");
        let uuid = refused(serde_json::json!({"chat_id": "a-uuid"})).await;
        assert!(
            uuid.starts_with("its chat_id claim is not a client id"),
            "{uuid}"
        );
        // A token minted without the rules does not pass a server with them.
        let plain = self::tokens(SECRET).mint(&id("42"), Duration::from_secs(60), None);
        assert!(tokens.check(&plain, &id("42")).is_err());
    }

    #[tokio::test]
    async fn unsigned_tokens_and_hs256_without_a_secret_are_refused_by_name() {
        use base64::Engine;
        let part = |json: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
        };
        let now = jsonwebtoken::get_current_timestamp();
        let body = part(serde_json::json!({"sub": "1", "exp": now + 60}));
        let tokens = tokens(SECRET);
        for alg in ["none", "None", "NONE"] {
            let unsigned = format!("{}.{body}.", part(serde_json::json!({"alg": alg})));
            assert_eq!(
                tokens.check(&unsigned, &id("1")),
                Err(TokenRefusal::Invalid(
                    "it is not signed (alg none); only signed tokens are taken".into()
                ))
            );
        }
        let es256 = format!("{}.{body}.c2ln", part(serde_json::json!({"alg": "ES256"})));
        assert_eq!(
            tokens.verify(&es256, DEFAULT_MAX_TOKEN_TTL).await,
            Err(TokenRefusal::Invalid(
                "only HS256 tokens are accepted".into()
            ))
        );

        let dir = std::env::temp_dir().join(format!("chat-jwks-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jwks.json");
        let ed_x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let set = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ed_x}]});
        std::fs::write(&file, set.to_string()).unwrap();
        let jwks = Jwks::load(JwksSource::File(file), Duration::from_secs(30))
            .await
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let provider_only = Tokens::checking(None, Some(Arc::new(jwks)), TokenRules::default())
            .expect("keys to check with");
        let hs256 = signed(serde_json::json!({"sub": "1", "exp": now + 60}), SECRET);
        assert!(matches!(
            provider_only.verify(&hs256, DEFAULT_MAX_TOKEN_TTL).await,
            Err(TokenRefusal::Invalid(why)) if why.starts_with("HS256 tokens are not taken here")
        ));
        assert!(Tokens::checking(None, None, TokenRules::default()).is_none());
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
