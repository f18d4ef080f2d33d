//! Who a client is, over real sockets: signed tokens with `--jwt-secret` (each refusal
//! and each success), the names `chat.v1.json` clients see, `chat-server token`, and
//! tokens kept out of the logs. Plain clients' bytes never change.

use std::process::Stdio;

use chat::v1::DisplayName;
use testkit::chromium::chat_server_binary;
use testkit::process::{Scratch, free_port};
use testkit::tokens::{SECRET, server_with_tokens, token};
use testkit::v1::V1;
use testkit::{
    Client, TestServer, assert_refused_as, raw_http, upgrade_request, wait_for_health, within,
};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A token signed with `secret` carrying exactly `claims`.
fn signed(claims: serde_json::Value, secret: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

// On paused time: `expect_silence` then ends only once every task here is idle.
#[tokio::test(start_paused = true)]
async fn a_token_proves_the_id_and_names_it_and_plain_clients_hear_what_they_always_did() {
    let server = server_with_tokens().await;
    // A plain client with its token in the Authorization header, as a program would.
    let mut request = server
        .url("/ws/7")
        .into_client_request()
        .expect("a request");
    let bearer = format!("Bearer {}", token("7", None));
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&bearer).expect("header"),
    );
    let (socket, _) = within("the handshake", tokio_tungstenite::connect_async(request))
        .await
        .expect("a good token in the header is let in");
    let mut plain = Client { socket };
    assert_eq!(plain.recv().await, "Client #7 has entered the chat");

    // A v1 client with its token in the query, as the page does, named by the token.
    let mut ada = V1::connect(
        &server,
        &format!("/ws/42?token={}", token("42", Some("Ada"))),
    )
    .await;
    let (welcome, _history, own) = ada.joined(1).await;
    assert!(welcome.verified, "names are proven by tokens here");
    assert_eq!(welcome.members.len(), 1);
    assert_eq!(welcome.members[0].name, None, "7's token gave no name");
    assert_eq!(own.name.as_ref().map(DisplayName::as_str), Some("Ada"));
    ada.say("hello", None).await;
    let said = ada.event().await;
    assert_eq!(
        (
            said.id.as_str(),
            said.name.as_ref().map(DisplayName::as_str)
        ),
        ("42", Some("Ada"))
    );

    assert_eq!(plain.recv().await, "Client #42 has entered the chat");
    assert_eq!(plain.recv().await, "Client #42: hello");
    plain.expect_silence().await;
}

// On paused time: `expect_silence` then ends only once every task here is idle.
#[tokio::test(start_paused = true)]
async fn missing_expired_forged_and_borrowed_tokens_are_refused_each_with_its_reason() {
    let server = server_with_tokens().await;
    let mut watcher = server
        .connect(&format!("1?token={}", token("1", None)))
        .await;
    assert_eq!(watcher.recv().await, "Client #1 has entered the chat");
    let now = unix_now();
    let cases = [
        ("/ws/2".to_owned(), 401, "token_missing", "requires a token"),
        (
            format!(
                "/ws/2?token={}",
                signed(serde_json::json!({"sub": "2", "exp": now - 300}), SECRET)
            ),
            401,
            "token_expired",
            "expired",
        ),
        (
            format!(
                "/ws/2?token={}",
                signed(
                    serde_json::json!({"sub": "2", "exp": now + 600, "nbf": now + 300}),
                    SECRET
                )
            ),
            401,
            "token_expired",
            "not valid yet",
        ),
        (
            format!(
                "/ws/2?token={}",
                signed(
                    serde_json::json!({"sub": "2", "exp": now + 600}),
                    "another secret, thirty-two bytes"
                )
            ),
            401,
            "token_invalid",
            "signature does not match",
        ),
        (
            "/ws/2?token=garbage".to_owned(),
            401,
            "token_invalid",
            "not a JWT",
        ),
        (
            format!("/ws/2?token={}", token("1", None)),
            403,
            "token_other_id",
            "the token is for client 1, not 2",
        ),
        (
            format!(
                "/ws/2?token={}",
                signed(
                    serde_json::json!({"sub": "2", "exp": now + 600, "name": "\u{1b}[2J"}),
                    SECRET
                )
            ),
            403,
            "invalid_name",
            "unprintable",
        ),
    ];
    for (path, status, reason, says) in cases {
        let request = upgrade_request(&path);
        let response = assert_refused_as(server.address, &request, (status, says), reason).await;
        assert_eq!(
            response.body.lines().count(),
            1,
            "one line: {}",
            response.body
        );
        if status == 401 {
            let challenge = response.header("www-authenticate").expect("a challenge");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    // The room never heard of any of them.
    watcher.expect_silence().await;
    let mut second = server
        .connect(&format!("2?token={}", token("2", None)))
        .await;
    assert_eq!(second.recv().await, "Client #2 has entered the chat");
    assert_eq!(watcher.recv().await, "Client #2 has entered the chat");
}

#[tokio::test]
async fn without_tokens_a_client_names_itself_and_v1_clients_see_it_marked_unverified() {
    let server = TestServer::start().await;
    let mut plain = server.connect("5?name=Grace%20H").await;
    assert_eq!(plain.recv().await, "Client #5 has entered the chat");
    let mut ada = V1::connect(&server, "/ws/6?name=%20Ada%20").await;
    let (welcome, history, own) = ada.joined(1).await;
    assert!(!welcome.verified, "each client claims its own name here");
    assert_eq!(
        welcome.members[0].name.as_ref().map(DisplayName::as_str),
        Some("Grace H")
    );
    assert_eq!(history[0].name, welcome.members[0].name, "5's join, named");
    assert_eq!(
        own.name.as_ref().map(DisplayName::as_str),
        Some("Ada"),
        "trimmed"
    );
    plain.send("hi").await;
    let said = ada.event().await;
    assert_eq!(said.name.as_ref().map(DisplayName::as_str), Some("Grace H"));
    assert_eq!(plain.recv().await, "Client #6 has entered the chat");
    assert_eq!(plain.recv().await, "Client #5: hi");
    // A token means nothing to a server without a secret: it is ignored, like any
    // query parameter it does not know.
    let mut anyone = server.connect("8?token=whatever").await;
    assert_eq!(anyone.recv().await, "Client #8 has entered the chat");

    for bad in ["", "%20%20", "a%0Ab", "%E2%80%AEevil", &"n".repeat(33)] {
        let request = upgrade_request(&format!("/ws/9?name={bad}"));
        let refusal = (403, "invalid name: ");
        let response = assert_refused_as(server.address, &request, refusal, "invalid_name").await;
        assert!(response.body.starts_with("invalid name: "), "{bad:?}");
    }
}

#[tokio::test]
async fn chat_server_token_mints_what_the_server_accepts_and_tokens_stay_out_of_the_logs() {
    let scratch = Scratch::new("tokens");
    let secret_file = scratch.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write the secret");
    let minted = Command::new(chat_server_binary())
        .args(["token", "--id", "42", "--ttl", "5m", "--name", "Ada"])
        .env("CHAT_JWT_SECRET", SECRET)
        .output()
        .await
        .expect("run chat-server token");
    assert!(minted.status.success(), "{minted:?}");
    let minted = String::from_utf8(minted.stdout).expect("utf-8");
    let minted = minted.trim();
    assert_eq!(minted.split('.').count(), 3, "a JWT: {minted}");

    // The server reads the same secret from a file; everything it logs, at the most
    // detailed level, goes to a file we then search for the tokens.
    let port = free_port();
    let log = scratch.path().join("server.log");
    let mut server = Command::new(chat_server_binary())
        .arg("--jwt-secret-file")
        .arg(&secret_file)
        .args(["--port", &port.to_string()])
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-server");
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_health(address, 200).await;
    let mut ada = V1::connect_url(&format!("ws://{address}/ws/42?token={minted}")).await;
    let welcome = ada.welcome().await;
    assert!(welcome.verified);
    let own = ada.event().await;
    assert_eq!(own.name.as_ref().map(DisplayName::as_str), Some("Ada"));
    let refused_token = token("43", None);
    let response = raw_http(
        address,
        &upgrade_request(&format!("/ws/44?token={refused_token}")),
    )
    .await;
    assert_eq!(response.status, 403);
    drop(ada);
    server.start_kill().expect("stop the server");
    server.wait().await.expect("the server stops");

    let logged = std::fs::read_to_string(&log).expect("read the log");
    assert!(
        logged.contains("refused"),
        "the log is at trace level: {logged}"
    );
    for token in [minted, refused_token.as_str()] {
        let signature = token.rsplit('.').next().expect("a signature");
        assert!(!logged.contains(signature), "a token in the log:\n{logged}");
    }
    assert!(!logged.contains(SECRET), "the secret in the log");

    // Without a secret, `token` says where to give it.
    let without = Command::new(chat_server_binary())
        .args(["token", "--id", "42"])
        .env_remove("CHAT_JWT_SECRET")
        .env_remove("CHAT_JWT_SECRET_FILE")
        .output()
        .await
        .expect("run chat-server token");
    assert_eq!(without.status.code(), Some(2));
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(said.contains("--jwt-secret-file"), "{said}");
}

#[tokio::test]
async fn tokens_good_for_too_long_or_with_a_crit_header_are_refused() {
    let server = server_with_tokens().await;
    let now = unix_now();
    let critical = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".to_owned()]);
        encode(
            &header,
            &serde_json::json!({"sub": "2", "exp": now + 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    };
    let cases = [
        // 2^64-1: never expires.
        (
            signed(serde_json::json!({"sub": "2", "exp": u64::MAX}), SECRET),
            "longer than this server allows (30 days)",
        ),
        // Past the default longest lifetime, 30 days, from now.
        (
            signed(
                serde_json::json!({"sub": "2", "exp": now + 31 * 86_400}),
                SECRET,
            ),
            "longer than this server allows (30 days)",
        ),
        // RFC 7515 §4.1.11: an extension marked critical and not understood.
        (critical, "crit"),
    ];
    for (token, says) in cases {
        let request = upgrade_request(&format!("/ws/2?token={token}"));
        let response =
            assert_refused_as(server.address, &request, (401, says), "token_invalid").await;
        assert_eq!(response.body.lines().count(), 1, "{}", response.body);
    }
    // Within the lifetime, the same client is let in.
    let good = signed(
        serde_json::json!({"sub": "2", "exp": now + 29 * 86_400}),
        SECRET,
    );
    let mut client = server.connect(&format!("2?token={good}")).await;
    assert_eq!(client.recv().await, "Client #2 has entered the chat");
}

#[tokio::test]
async fn chat_server_token_refuses_a_lifetime_past_the_longest_allowed() {
    let mint = async |args: &[&str]| {
        Command::new(chat_server_binary())
            .arg("token")
            .args(args)
            .env("CHAT_JWT_SECRET", SECRET)
            .env_remove("CHAT_MAX_TOKEN_TTL")
            .output()
            .await
            .expect("run chat-server token")
    };
    for ttl in ["31d", "213503982334d"] {
        let refused = mint(&["--id", "42", "--ttl", ttl]).await;
        assert_eq!(refused.status.code(), Some(2), "--ttl {ttl}: {refused:?}");
        assert!(refused.stdout.is_empty(), "no token for --ttl {ttl}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("longer than the longest allowed, 30 days")
                && said.contains("--max-token-ttl"),
            "{said}"
        );
        assert_eq!(said.lines().count(), 1, "one line: {said}");
    }
    let month = mint(&["--id", "42", "--ttl", "30d"]).await;
    assert!(month.status.success(), "{month:?}");
    let raised = mint(&["--id", "42", "--ttl", "60d", "--max-token-ttl", "90d"]).await;
    assert!(raised.status.success(), "{raised:?}");
}

/// `POST /api/v1/tickets` with `token` in the Authorization header (none if `None`).
fn ticket_request(token: Option<&str>) -> String {
    let authorization = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    format!(
        "POST /api/v1/tickets HTTP/1.1\r\nHost: localhost\r\n{authorization}\
         Content-Length: 0\r\n\r\n"
    )
}

/// A browser keeps its token out of URLs: it trades it for a ticket over POST, and the
/// ticket opens one WebSocket as the token's id and name, once.
#[tokio::test]
async fn a_ticket_for_a_token_opens_one_connection_as_its_id_and_name() {
    let server = server_with_tokens().await;
    let response = server
        .http(&ticket_request(Some(&token("42", Some("Ada")))))
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let answer: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    let ticket = answer["ticket"].as_str().expect("a ticket").to_owned();
    let expires_in = answer["expires_in"].as_u64().expect("seconds");
    assert!((1..=30).contains(&expires_in), "{answer}");
    assert!(!ticket.contains(&token("42", Some("Ada"))));

    // Not for another id, and not as a token.
    server
        .refuses(
            &upgrade_request(&format!("/ws/43?ticket={ticket}")),
            403,
            "the token is for client 42, not 43",
        )
        .await;
    server
        .refuses(
            &upgrade_request(&format!("/ws/42?token={ticket}")),
            401,
            "signature does not match",
        )
        .await;

    let mut ada = V1::connect(&server, &format!("/ws/42?ticket={ticket}")).await;
    let (welcome, _history, own) = ada.joined(0).await;
    assert!(welcome.verified);
    assert_eq!(own.name.as_ref().map(DisplayName::as_str), Some("Ada"));

    // Used once, it is spent.
    let again = upgrade_request(&format!("/ws/42?ticket={ticket}"));
    assert_refused_as(
        server.address,
        &again,
        (401, "used already"),
        "token_invalid",
    )
    .await;
}

/// Each refusal of the ticket endpoint is JSON whose code says why, which a page can
/// turn into its own words ("your sign-in has expired").
#[tokio::test]
async fn the_ticket_endpoint_refuses_each_bad_token_with_a_code() {
    let server = server_with_tokens().await;
    let now = unix_now();
    let expired = signed(serde_json::json!({"sub": "2", "exp": now - 300}), SECRET);
    let forged = signed(
        serde_json::json!({"sub": "2", "exp": now + 600}),
        "another secret, thirty-two bytes",
    );
    let cases = [
        (None, 401, "token_missing"),
        (Some(expired.as_str()), 401, "token_expired"),
        (Some(forged.as_str()), 401, "token_invalid"),
        (Some("garbage"), 401, "token_invalid"),
    ];
    for (token, status, code) in cases {
        let response =
            assert_refused_as(server.address, &ticket_request(token), (status, ""), code).await;
        let answer: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
        assert_eq!(answer["code"], code, "{answer}");
        assert!(response.header("www-authenticate").is_some());
    }
    let get = server
        .http("GET /api/v1/tickets HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));

    // A server without tokens has no tickets to give.
    let open = TestServer::start().await;
    let response = open.http(&ticket_request(Some(&token("2", None)))).await;
    assert_eq!(response.status, 404);
    assert!(response.body.contains("no_tokens"), "{}", response.body);
}
