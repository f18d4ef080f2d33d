//! Signed identity, with `--jwt-secret`: a client proves its id (and its name) with an
//! HS256 JSON Web Token whose `sub` is the id, minted by the operator's backend with the
//! same secret, as Centrifugo's connection tokens are. Without a secret every client
//! claims its own id, as in the tutorial.

use std::fmt;
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

/// Checks tokens, and mints them for `chat-server token`.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
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
        Self {
            encoding: EncodingKey::from_secret(&secret.0),
            decoding: DecodingKey::from_secret(&secret.0),
            validation,
        }
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
        claims
            .name
            .map(|name| DisplayName::parse(&name))
            .transpose()
            .map_err(TokenRefusal::BadName)
    }
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
