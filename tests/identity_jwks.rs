//! Tokens from an identity provider, over real sockets: RS256, ES256 and EdDSA tokens
//! checked against a JWKS file (`--jwks-file`, read again on SIGHUP) or URL
//! (`--jwks-url`, fetched again for a key it does not know), with `--jwt-issuer`,
//! `--jwt-audience` and `--jwt-id-claim`; and every kind of bad token refused with the
//! reasons the HS256 ones have. The keys are made by `openssl` as each test runs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chat_server::Config;
use chat_server::identity::{JwksSource, TokenRules};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use testkit::chromium::chat_server_binary;
use testkit::process::{Scratch, free_port, wait_until_listening};
use testkit::{TestServer, assert_refused_as, eventually, raw_http, upgrade_request, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

const ISSUER: &str = "https://id.example.org/realms/chat";
const AUDIENCE: &str = "chat";

/// A signing key made by `openssl` for this run, and its public half as a JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
}

impl TestKey {
    /// A new key for `alg` (RS256, ES256 or EdDSA), named `kid`.
    fn new(alg: Algorithm, kid: &str) -> Self {
        // jsonwebtoken takes RSA keys as PKCS#1 DER and the others as PKCS#8 DER.
        let pipeline = match alg {
            Algorithm::RS256 => {
                "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl pkey -outform DER"
            }
            Algorithm::ES256 => {
                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | openssl pkcs8 -topk8 -nocrypt -outform DER"
            }
            Algorithm::EdDSA => {
                "openssl genpkey -algorithm ED25519 | openssl pkcs8 -topk8 -nocrypt -outform DER"
            }
            other => panic!("no test keys for {other:?}"),
        };
        let output = std::process::Command::new("sh")
            .args(["-c", pipeline])
            .output()
            .expect("run openssl");
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "openssl made no key"
        );
        let der = output.stdout;
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(&der),
            Algorithm::ES256 => EncodingKey::from_ec_der(&der),
            _ => EncodingKey::from_ed_der(&der),
        };
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
        }
    }

    /// The public key as a JWK, with its `kid`, `alg` and `use`, as a provider lists it.
    fn jwk(&self) -> serde_json::Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).expect("a JWK");
        jwk.common.key_id = Some(self.kid.clone());
        let mut json = serde_json::to_value(&jwk).expect("JSON");
        json["use"] = "sig".into();
        json
    }

    /// A token with `claims`, signed with this key and naming it as `kid`.
    fn sign_as(&self, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    /// A token with `claims`, signed with this key.
    fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

/// A JWKS document with these keys' public halves.
fn jwks(keys: &[&TestKey]) -> String {
    let keys: Vec<_> = keys.iter().map(|key| key.jwk()).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// What a provider's token for client `id` holds: issuer, audience, ten minutes.
fn claims(id: &str) -> serde_json::Value {
    serde_json::json!({
        "sub": id, "iss": ISSUER, "aud": [AUDIENCE, "account"], "exp": now() + 600,
        "iat": now(), "name": format!("User {id}"),
    })
}

fn rules() -> TokenRules {
    TokenRules {
        issuer: Some(ISSUER.to_owned()),
        audience: Some(AUDIENCE.to_owned()),
        ..TokenRules::default()
    }
}

/// Whether `/ws/<id>?token=` is let in: the client's own join is its first frame.
async fn joins(address: SocketAddr, id: &str, token: &str) {
    let url = format!("ws://{address}/ws/{id}?token={token}");
    let (socket, _) = within("the handshake", tokio_tungstenite::connect_async(&url))
        .await
        .unwrap_or_else(|error| panic!("/ws/{id} with a good token: {error}"));
    let mut client = testkit::Client { socket };
    assert_eq!(
        client.recv().await,
        format!("Client #{id} has entered the chat")
    );
}

/// The status of the handshake `/ws/<id>?token=`, and its body.
async fn handshake(address: SocketAddr, id: &str, token: &str) -> (u16, String) {
    let response = raw_http(
        address,
        &upgrade_request(&format!("/ws/{id}?token={token}")),
    )
    .await;
    (response.status, response.body)
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_from_a_jwks_file_let_their_ids_in() {
    let scratch = Scratch::new("jwks-file");
    let rsa = TestKey::new(Algorithm::RS256, "rsa-1");
    let ec = TestKey::new(Algorithm::ES256, "ec-1");
    let ed = TestKey::new(Algorithm::EdDSA, "ed-1");
    let file = scratch.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&rsa, &ec, &ed])).expect("write the JWKS");
    let server = TestServer::start_with(Config {
        jwks: Some(JwksSource::File(file.clone())),
        token_rules: rules(),
        ..Config::default()
    })
    .await;
    joins(server.address, "1", &rsa.sign(&claims("1"))).await;
    joins(server.address, "2", &ec.sign(&claims("2"))).await;
    joins(server.address, "3", &ed.sign(&claims("3"))).await;

    // A browser trades its token for a ticket, as with --jwt-secret.
    let token = ed.sign(&claims("4"));
    let request = format!(
        "POST /api/v1/tickets HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let answer = server.http(&request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let ticket: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    let ticket = ticket["ticket"].as_str().expect("a ticket");
    let url = server.url(&format!("/ws/4?ticket={ticket}"));
    let (socket, _) = within("the handshake", tokio_tungstenite::connect_async(&url))
        .await
        .expect("the ticket lets 4 in");
    let mut four = testkit::Client { socket };
    assert_eq!(four.recv().await, "Client #4 has entered the chat");

    // An id from another claim: a provider's sub is its own (a UUID, say).
    let by_claim = TestServer::start_with(Config {
        jwks: Some(JwksSource::File(file)),
        token_rules: TokenRules {
            id_claim: "chat_id".to_owned(),
            ..rules()
        },
        ..Config::default()
    })
    .await;
    let mut uuid = claims("f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
    uuid["name"] = "Ada".into();
    uuid["chat_id"] = 42.into();
    joins(by_claim.address, "42", &rsa.sign(&uuid)).await;
    let (status, body) = handshake(by_claim.address, "42", &rsa.sign(&claims("42"))).await;
    assert_eq!(
        (status, body.trim()),
        (401, "invalid token: it has no chat_id claim")
    );
}

#[tokio::test]
async fn foreign_keys_wrong_claims_and_algorithms_are_refused_each_with_its_reason() {
    let scratch = Scratch::new("jwks-refusals");
    let trusted = TestKey::new(Algorithm::RS256, "trusted");
    let stranger = TestKey::new(Algorithm::RS256, "stranger");
    let ec = TestKey::new(Algorithm::ES256, "ec");
    let file = scratch.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&trusted])).expect("write the JWKS");
    let server = TestServer::start_with(Config {
        jwks: Some(JwksSource::File(file)),
        token_rules: rules(),
        ..Config::default()
    })
    .await;
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = claims("2");
        change(&mut claims);
        claims
    };
    let unsigned = {
        let part = |json: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
        };
        let header = part(serde_json::json!({"alg": "none", "typ": "JWT"}));
        format!("{header}.{}.", part(claims("2")))
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("2"),
        &EncodingKey::from_secret(b"a secret of thirty-two bytes, or more"),
    )
    .expect("sign");
    let cases = [
        (
            stranger.sign(&claims("2")),
            401,
            "token_invalid",
            "key \"stranger\", which is not among the identity provider's keys",
        ),
        (
            stranger.sign_as("trusted", &claims("2")),
            401,
            "token_invalid",
            "signature does not match the identity provider's key",
        ),
        (
            ec.sign_as("trusted", &claims("2")),
            401,
            "token_invalid",
            "its alg is ES256, but key \"trusted\" is for RS256",
        ),
        (
            trusted.sign(&with(&|claims| claims["aud"] = "another-app".into())),
            401,
            "token_invalid",
            "its aud does not name this server",
        ),
        (
            trusted.sign(&with(&|claims| {
                claims["iss"] = "https://evil.example.org/realms/chat".into()
            })),
            401,
            "token_invalid",
            "its iss is not the issuer this server trusts",
        ),
        (
            trusted.sign(&with(&|claims| {
                claims.as_object_mut().expect("an object").remove("exp");
            })),
            401,
            "token_invalid",
            "it has no exp claim",
        ),
        (
            trusted.sign(&with(&|claims| claims["exp"] = (now() - 300).into())),
            401,
            "token_expired",
            "the token has expired",
        ),
        (
            unsigned,
            401,
            "token_invalid",
            "it is not signed (alg none)",
        ),
        (
            hs256,
            401,
            "token_invalid",
            "HS256 tokens are not taken here",
        ),
        (
            trusted.sign(&claims("1")),
            403,
            "token_other_id",
            "the token is for client 1, not 2",
        ),
    ];
    for (token, status, reason, says) in cases {
        let request = upgrade_request(&format!("/ws/2?token={token}"));
        assert_refused_as(server.address, &request, (status, says), reason).await;
    }
    joins(server.address, "2", &trusted.sign(&claims("2"))).await;
}

/// A `chat-server` process checking tokens against `jwks`, its log going to `log`.
async fn jwks_server(jwks: &Path, log: &Path) -> (tokio::process::Child, SocketAddr) {
    let port = free_port();
    let child = Command::new(chat_server_binary())
        .arg("--jwks-file")
        .arg(jwks)
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        .args(["--port", &port.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-server");
    wait_until_listening(port, "the server").await;
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn hang_up(child: &tokio::process::Child) {
    let pid = child.id().expect("a running server").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits until `line` has been logged `times` times in all.
async fn wait_for_log(log: &Path, line: &str, times: usize) {
    eventually(line, async || {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        (logged.matches(line).count() >= times).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sighup_takes_a_new_key_set_and_keeps_a_broken_one_out() {
    let scratch = Scratch::new("jwks-reload");
    let log = scratch.path().join("server.log");
    let old = TestKey::new(Algorithm::RS256, "2026-11");
    let new = TestKey::new(Algorithm::EdDSA, "2026-12");
    let file = scratch.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&old])).expect("write the JWKS");
    let (server, address) = jwks_server(&file, &log).await;
    joins(address, "1", &old.sign(&claims("1"))).await;
    let (status, body) = handshake(address, "2", &new.sign(&claims("2"))).await;
    assert_eq!(status, 401, "{body}");

    // The provider rotates: the new key is published beside the old one.
    std::fs::write(&file, jwks(&[&old, &new])).expect("write the JWKS");
    hang_up(&server);
    wait_for_log(&log, "reloaded the identity provider's keys", 1).await;
    joins(address, "2", &new.sign(&claims("2"))).await;
    joins(address, "3", &old.sign(&claims("3"))).await;

    // A broken file is logged, and the keys in use stay in use.
    std::fs::write(&file, "{\"keys\": \"not a list\"}").expect("write");
    hang_up(&server);
    wait_for_log(&log, "kept the identity provider's keys in use", 1).await;
    joins(address, "4", &new.sign(&claims("4"))).await;
    // And one with no key the server can use, too (an encryption key only).
    let mut encryption = old.jwk();
    encryption["use"] = "enc".into();
    let only_enc = serde_json::json!({ "keys": [encryption] }).to_string();
    std::fs::write(&file, only_enc).expect("write");
    hang_up(&server);
    wait_for_log(&log, "kept the identity provider's keys in use", 2).await;
    let logged = std::fs::read_to_string(&log).expect("the log");
    assert!(
        logged.contains("it is for encryption"),
        "says why the key is left out: {logged}"
    );
    joins(address, "5", &old.sign(&claims("5"))).await;
}

/// An identity provider's `jwks_uri`, served by the test: whatever `document` holds
/// now, counting the fetches.
struct Provider {
    address: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(document: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (serving, counting) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut chunk = [0; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => request.extend_from_slice(&chunk[..read]),
                    }
                }
                let body = serving.lock().expect("the document").clone();
                counting.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        Self {
            address,
            document,
            fetches,
        }
    }

    fn publish(&self, document: String) {
        *self.document.lock().expect("the document") = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_at_start_and_once_more_for_a_key_it_does_not_know() {
    let first = TestKey::new(Algorithm::ES256, "first");
    let second = TestKey::new(Algorithm::RS256, "second");
    let third = TestKey::new(Algorithm::EdDSA, "third");
    let provider = Provider::start(jwks(&[&first])).await;
    let url = format!(
        "http://{}/realms/chat/protocol/openid-connect/certs",
        provider.address
    );
    let server = TestServer::start_with(Config {
        jwks: Some(JwksSource::Url(url.parse().expect("a URL"))),
        token_rules: rules(),
        // Long enough that no refetch here is let through, or made, by the clock.
        jwks_min_refetch: Duration::from_secs(3600),
        jwks_refresh: Duration::from_secs(86_400),
        ..Config::default()
    })
    .await;
    joins(server.address, "1", &first.sign(&claims("1"))).await;
    assert_eq!(provider.fetches(), 1, "fetched once, at start");
    joins(server.address, "2", &first.sign(&claims("2"))).await;
    assert_eq!(provider.fetches(), 1, "a known key needs no fetch");

    // The provider rotates; the first token with the new key has the set fetched again.
    provider.publish(jwks(&[&first, &second]));
    joins(server.address, "3", &second.sign(&claims("3"))).await;
    assert_eq!(provider.fetches(), 2, "one more fetch, for the new key");
    joins(server.address, "4", &second.sign(&claims("4"))).await;
    assert_eq!(provider.fetches(), 2);

    // Within the shortest time between fetches, a key not known is refused unfetched:
    // made-up kids cannot turn into a stream of requests to the provider.
    provider.publish(jwks(&[&first, &second, &third]));
    for id in ["5", "6"] {
        let request = upgrade_request(&format!("/ws/{id}?token={}", third.sign(&claims(id))));
        assert_refused_as(
            server.address,
            &request,
            (401, "not among the identity provider's keys"),
            "token_invalid",
        )
        .await;
    }
    assert_eq!(provider.fetches(), 2, "no fetch within the shortest time");
}
