//! An identity provider's public keys (a JWKS, RFC 7517), from `--jwks-file` (read
//! again on SIGHUP) or `--jwks-url` (fetched at start, every `--jwks-refresh`, and
//! again when a token names a key not in the set, at most once per
//! [`Config::jwks_min_refetch`](crate::Config::jwks_min_refetch)).
//!
//! Only signing keys of the algorithms below are kept: RS256/384/512, PS256/384/512,
//! ES256, ES384 and EdDSA (Ed25519). Encryption keys (`"use":"enc"`, which Keycloak
//! publishes beside its signing keys) and symmetric keys are left out, each with a line
//! in the log, so that one key the server cannot use does not cost it the others.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::time::Instant;
use tracing::{info, warn};

use super::fetch::{FetchError, Fetcher};

/// Where the key set comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read at start and again on SIGHUP.
    File(PathBuf),
    /// An `http://` or `https://` URL, such as an OpenID Connect provider's `jwks_uri`.
    Url(url::Url),
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

/// Why a key set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the key set {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot fetch the key set {url}: {error}")]
    Fetch { url: url::Url, error: FetchError },
    #[error("{source_name} is not a JWKS (a JSON object with a \"keys\" array): {error}")]
    NotJwks {
        source_name: String,
        error: serde_json::Error,
    },
    #[error(
        "{source_name} holds no key this server can check tokens with (RS256, ES256 or EdDSA signing keys){}",
        skipped_list(.skipped)
    )]
    NoUsableKey {
        source_name: String,
        skipped: Vec<String>,
    },
}

fn skipped_list(skipped: &[String]) -> String {
    match skipped {
        [] => String::new(),
        _ => format!(": {}", skipped.join("; ")),
    }
}

/// One verifying key: its id, the one algorithm it is for, and the key.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// The keys of one version of the set.
#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
}

/// Why no key of the set checks a token.
#[derive(Debug, PartialEq)]
pub(super) enum NoKey {
    /// Not in the set, as far as it is known: worth fetching the set again.
    Unknown(String),
    /// In the set but not for this token (another algorithm), or ambiguous.
    Unusable(String),
}

impl KeySet {
    /// Reads a JWKS document: the keys this server can use, and a line for each left out.
    fn parse(json: &[u8], source_name: &str) -> Result<(Self, Vec<String>), JwksError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(json).map_err(|error| JwksError::NotJwks {
                source_name: source_name.to_owned(),
                error,
            })?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            let name = match value.get("kid").and_then(|kid| kid.as_str()) {
                Some(kid) => format!("key {kid:?}"),
                None => format!("key #{index} (no kid)"),
            };
            match usable_key(value) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("{name} left out: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                source_name: source_name.to_owned(),
                skipped,
            });
        }
        Ok((Self { keys }, skipped))
    }

    /// The key that checks a token with header `kid` and `alg`.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, NoKey> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .peekable();
                let Some(first) = named.peek().map(|key| key.algorithm) else {
                    return Err(NoKey::Unknown(format!(
                        "it is signed with key {kid:?}, which is not among the identity provider's keys"
                    )));
                };
                named
                    .find(|key| key.algorithm == alg)
                    .map(|key| &key.decoding)
                    .ok_or_else(|| {
                        NoKey::Unusable(format!(
                            "its alg is {alg:?}, but key {kid:?} is for {first:?}"
                        ))
                    })
            }
            None => {
                let mut fitting = self.keys.iter().filter(|key| key.algorithm == alg);
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(&key.decoding),
                    (None, _) => Err(NoKey::Unknown(format!(
                        "it names no key (kid), and no {alg:?} key is among the identity provider's keys"
                    ))),
                    (Some(_), Some(_)) => Err(NoKey::Unusable(format!(
                        "it names no key (kid), and the identity provider has several {alg:?} keys"
                    ))),
                }
            }
        }
    }
}

/// A JWK as a key for one algorithm, or why it is left out.
fn usable_key(value: serde_json::Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|error| error.to_string())?;
    if let Some(PublicKeyUse::Encryption) = jwk.common.public_key_use {
        return Err("it is for encryption (\"use\":\"enc\"), not signatures".into());
    }
    // The algorithm the key says it is for, or the one its type implies.
    let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P384 => {
            Algorithm::ES384
        }
        (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
        (None, _) => return Err("its key type is not RSA, P-256, P-384 or Ed25519".into()),
        (Some(alg), _) => signing_algorithm(alg)?,
    };
    let fits = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), alg) => alg.family() == AlgorithmFamily::Rsa,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if !fits {
        return Err(format!(
            "its key type does not go with its alg {algorithm:?}"
        ));
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|error| error.to_string())?;
    Ok(Key {
        kid: jwk.common.key_id,
        algorithm,
        decoding,
    })
}

/// The signature algorithm a JWK's `alg` names, if this server checks it.
fn signing_algorithm(alg: KeyAlgorithm) -> Result<Algorithm, String> {
    match alg {
        KeyAlgorithm::RS256 => Ok(Algorithm::RS256),
        KeyAlgorithm::RS384 => Ok(Algorithm::RS384),
        KeyAlgorithm::RS512 => Ok(Algorithm::RS512),
        KeyAlgorithm::PS256 => Ok(Algorithm::PS256),
        KeyAlgorithm::PS384 => Ok(Algorithm::PS384),
        KeyAlgorithm::PS512 => Ok(Algorithm::PS512),
        KeyAlgorithm::ES256 => Ok(Algorithm::ES256),
        KeyAlgorithm::ES384 => Ok(Algorithm::ES384),
        KeyAlgorithm::EdDSA => Ok(Algorithm::EdDSA),
        // A shared secret in a published set would be anybody's: never trusted.
        KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512 => {
            Err("a symmetric (HS) key has no place in a public key set".into())
        }
        other => Err(format!(
            "its alg {other} is not a signature this server checks"
        )),
    }
}

/// The key set in use, and how to get it again.
pub struct Jwks {
    source: JwksSource,
    current: RwLock<Arc<KeySet>>,
    /// For a URL: the client, and when a token naming a key not known last had the set
    /// fetched (held across that fetch, so that tokens naming the same new key wait for
    /// one fetch, not one each). Fetches at start, on SIGHUP and every `--jwks-refresh`
    /// do not count: a key rotated just after one of those is still fetched at once.
    fetching: Option<(Fetcher, tokio::sync::Mutex<Option<Instant>>)>,
    min_refetch: Duration,
}

impl Jwks {
    /// Reads or fetches the set. A file that cannot be used is an error; a URL that
    /// cannot be fetched is logged, and the server starts with no keys and fetches again
    /// on the first token (an identity provider down for a moment should not keep the
    /// chat from starting, nor need a restart when it is back).
    pub async fn load(source: JwksSource, min_refetch: Duration) -> Result<Self, JwksError> {
        let fetching = match &source {
            JwksSource::File(_) => None,
            JwksSource::Url(_) => Some((Fetcher::new(), tokio::sync::Mutex::new(None))),
        };
        let jwks = Self {
            source,
            current: RwLock::new(Arc::new(KeySet::default())),
            fetching,
            min_refetch,
        };
        match (jwks.reload().await, &jwks.source) {
            (Ok(_), _) => {}
            (Err(error), JwksSource::Url(_)) => {
                warn!(%error, "no identity provider keys yet: fetching them again on the first token")
            }
            (Err(error), JwksSource::File(_)) => return Err(error),
        }
        Ok(jwks)
    }

    /// Where the set comes from.
    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    /// Reads or fetches the set again; on failure the set in use stays in use. Returns
    /// how many keys are in use.
    pub async fn reload(&self) -> Result<usize, JwksError> {
        let source_name = self.source.to_string();
        let json = match (&self.source, &self.fetching) {
            // A few KiB, read at start and on SIGHUP, as the certificate is.
            (JwksSource::File(path), _) => std::fs::read(path)
                .map_err(|error| JwksError::Read {
                    path: path.clone(),
                    error,
                })?
                .into(),
            (JwksSource::Url(url), Some((fetcher, _))) => {
                fetcher.get(url).await.map_err(|error| JwksError::Fetch {
                    url: url.clone(),
                    error,
                })?
            }
            (JwksSource::Url(_), None) => unreachable!("a URL's set is made with its fetcher"),
        };
        self.take(&json, &source_name)
    }

    fn take(&self, json: &[u8], source_name: &str) -> Result<usize, JwksError> {
        let (set, skipped) = KeySet::parse(json, source_name)?;
        for why in skipped {
            warn!(source = %source_name, "{why}");
        }
        let count = set.keys.len();
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
        Ok(count)
    }

    /// The key for a token's `kid` and `alg` in the set as it is now.
    pub(super) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, NoKey> {
        let set = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        set.find(kid, alg).cloned()
    }

    /// The key for a token's `kid` and `alg`; if the set (from a URL) has none, it is
    /// fetched again first, unless it was fetched within `min_refetch`: a stream of
    /// tokens naming made-up keys must not become a stream of requests to the provider.
    pub(super) async fn find_or_refetch(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, NoKey> {
        let unknown = match self.find(kid, alg) {
            Err(NoKey::Unknown(why)) => why,
            found => return found,
        };
        let (JwksSource::Url(url), Some((fetcher, last))) = (&self.source, &self.fetching) else {
            return Err(NoKey::Unknown(unknown));
        };
        {
            let mut last = last.lock().await;
            // Another token may have had the set fetched while this one waited.
            if let Ok(key) = self.find(kid, alg) {
                return Ok(key);
            }
            if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
                return Err(NoKey::Unknown(unknown));
            }
            *last = Some(Instant::now());
            match fetcher.get(url).await {
                Ok(json) => match self.take(&json, &self.source.to_string()) {
                    Ok(count) => {
                        info!(%url, keys = count, kid, "fetched the identity provider's keys again for a key not known")
                    }
                    Err(error) => warn!(%error, "kept the identity provider's keys in use"),
                },
                Err(error) => warn!(%url, %error, "cannot fetch the identity provider's keys"),
            }
        }
        self.find(kid, alg)
    }

    /// Fetches the set (from a URL) again every `period`, so that a key the provider
    /// has withdrawn stops being trusted within that time. Runs until aborted.
    pub async fn refresh_every(self: Arc<Self>, period: Duration) {
        if !matches!(self.source, JwksSource::Url(_)) {
            return;
        }
        loop {
            tokio::time::sleep(period).await;
            match self.reload().await {
                Ok(keys) => {
                    info!(source = %self.source, keys, "fetched the identity provider's keys")
                }
                Err(error) => warn!(%error, "kept the identity provider's keys in use"),
            }
        }
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<(KeySet, Vec<String>), JwksError> {
        KeySet::parse(json.to_string().as_bytes(), "test.json")
    }

    // An Ed25519 public key (RFC 8037's example) and a P-256 one (RFC 7517's).
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const EC_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
    const EC_Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";

    #[test]
    fn signing_keys_are_kept_and_the_others_left_out_with_why() {
        let (set, skipped) = parse(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ed"},
            {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "ec", "alg": "ES256", "use": "sig"},
            {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "enc", "use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hs", "alg": "HS256"},
            {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "mixed", "alg": "RS256"},
        ]}))
        .unwrap();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("\"enc\""), "{skipped:?}");
        assert!(skipped[1].contains("symmetric"), "{skipped:?}");
        assert!(skipped[2].contains("does not go with"), "{skipped:?}");

        assert!(set.find(Some("ed"), Algorithm::EdDSA).is_ok());
        assert!(
            set.find(None, Algorithm::ES256).is_ok(),
            "the one ES256 key"
        );
        assert!(matches!(
            set.find(Some("ed"), Algorithm::RS256),
            Err(NoKey::Unusable(why)) if why.contains("is for EdDSA")
        ));
        assert!(matches!(
            set.find(Some("gone"), Algorithm::EdDSA),
            Err(NoKey::Unknown(_))
        ));
        assert!(matches!(
            set.find(None, Algorithm::RS256),
            Err(NoKey::Unknown(_))
        ));
    }

    #[test]
    fn a_set_with_nothing_usable_is_refused() {
        assert!(matches!(
            parse(serde_json::json!({"keys": []})),
            Err(JwksError::NoUsableKey { .. })
        ));
        assert!(matches!(
            parse(serde_json::json!({"kid": "not a set"})),
            Err(JwksError::NotJwks { .. })
        ));
        let error = parse(serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("key #0 (no kid) left out"),
            "{error}"
        );
    }
}
