//! The tutorial's protocol, byte for byte, over real sockets against an in-process server.

use chat_server::Config;
use testkit::{TestServer, assert_one_order, upgrade_request};
use tokio::io::AsyncWriteExt;

/// The tutorial's `test_websocket_broadcast`, ported exactly.
#[tokio::test]
async fn tutorial_websocket_broadcast() {
    let server = TestServer::start().await;
    let mut websocket1 = server.connect("1").await;
    assert_eq!(websocket1.recv().await, "Client #1 has entered the chat");

    let mut websocket2 = server.connect("2").await;
    assert_eq!(websocket1.recv().await, "Client #2 has entered the chat");
    assert_eq!(websocket2.recv().await, "Client #2 has entered the chat");

    websocket1.send("Hello from client 1").await;
    assert_eq!(websocket1.recv().await, "Client #1: Hello from client 1");
    assert_eq!(websocket2.recv().await, "Client #1: Hello from client 1");
}

// On paused time: `expect_silence` then ends only once every task here is idle.
#[tokio::test(start_paused = true)]
async fn a_close_frame_is_announced_as_a_leave() {
    let server = TestServer::start().await;
    let (mut stays, goes) = server.join_two().await;

    goes.close().await;
    assert_eq!(stays.recv().await, "Client #2 has left the chat");
    stays.expect_silence().await;
}

#[tokio::test]
async fn a_dropped_connection_is_announced_as_a_leave() {
    let server = TestServer::start().await;
    let (mut stays, goes) = server.join_two().await;

    // Dropping the stream closes the TCP connection without a close frame.
    drop(goes);
    assert_eq!(stays.recv().await, "Client #2 has left the chat");
}

#[tokio::test]
async fn ids_are_announced_in_canonical_form() {
    let server = TestServer::start().await;
    let longest = "9".repeat(chat::MAX_ID_DIGITS);
    let negative_longest = format!("-{longest}");
    for (written, shown) in [
        ("007", "7"),
        ("+5", "5"),
        ("-0", "0"),
        ("-5", "-5"),
        ("0", "0"),
        ("1764134400000", "1764134400000"),
        ("99999999999999999999999", "99999999999999999999999"),
        (longest.as_str(), longest.as_str()),
        (negative_longest.as_str(), negative_longest.as_str()),
    ] {
        let mut client = server.join(written, shown).await;
        client.send("hi").await;
        assert_eq!(client.recv().await, format!("Client #{shown}: hi"));
    }
}

// On paused time: `expect_silence` then ends only once every task here is idle.
#[tokio::test(start_paused = true)]
async fn invalid_ids_are_refused_with_403_before_the_upgrade() {
    let server = TestServer::start().await;
    let too_long = "1".repeat(chat::MAX_ID_DIGITS + 1);
    for path in [
        "/ws/abc",
        "/ws/",
        "/ws",
        "/ws/1.5",
        "/ws/5x",
        "/ws/-",
        "/ws/5/extra",
        "/ws/5/",
        "/ws/%35",
        &format!("/ws/{too_long}"),
    ] {
        // The body says what a valid id is.
        let response = server
            .refuses(&upgrade_request(path), 403, "client id")
            .await;
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    // A WebSocket library sees the refusal as a failed handshake with that status.
    let refused = tokio_tungstenite::connect_async(server.url("/ws/abc")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected an HTTP 403, got {other:?}"),
    }
    // Nobody joined through any of that.
    let mut client = server.join("1", "1").await;
    client.expect_silence().await;
}

#[tokio::test]
async fn text_passes_through_exactly() {
    let server = TestServer::start().await;
    let (mut sender, mut other) = server.join_two().await;

    let sixteen_kib: String = "0123456789abcdef".repeat(1024);
    for text in [
        "",
        " ",
        "  leading and trailing  ",
        "line one\nline two\r\nline three\n",
        "\ttab",
        "héllo wörld — 你好 — こんにちは — 🎉👍🏽",
        "<b>not bold</b> & \"quotes\"",
        "Client #2 has left the chat",
        sixteen_kib.as_str(),
    ] {
        sender.send(text).await;
        let expected = format!("Client #1: {text}");
        assert_eq!(sender.recv().await, expected);
        assert_eq!(other.recv().await, expected);
    }
}

#[tokio::test]
async fn everyone_sees_one_order_and_each_senders_order_is_kept() {
    const MESSAGES: usize = 200;
    let server = TestServer::start_with(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let mut clients = Vec::new();
    for id in ["1", "2", "3"] {
        clients.push(server.join(id, id).await);
    }
    assert_one_order(&mut clients, MESSAGES).await;
}

#[tokio::test]
async fn two_connections_with_one_id_are_two_members() {
    let server = TestServer::start().await;
    let mut watcher = server.join("9", "9").await;
    let mut first = server.join("5", "5").await;
    let second = server.join("5", "5").await;
    assert_eq!(watcher.recv().await, "Client #5 has entered the chat");
    assert_eq!(watcher.recv().await, "Client #5 has entered the chat");
    assert_eq!(first.recv().await, "Client #5 has entered the chat");

    second.close().await;
    assert_eq!(watcher.recv().await, "Client #5 has left the chat");
    assert_eq!(first.recv().await, "Client #5 has left the chat");

    // The first connection with that id is still a member.
    first.send("still here").await;
    assert_eq!(watcher.recv().await, "Client #5: still here");
}

#[tokio::test]
async fn the_page_is_served_at_the_root() {
    let server = TestServer::start().await;
    let response = server
        .http("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // client/index.html, with what this server speaks written in: chat.v1.json, and
    // no plain fallback to try.
    let page = include_str!("../client/index.html").replace(
        r#"<meta name="chat-protocols" content="chat.v1.json plain">"#,
        r#"<meta name="chat-protocols" content="chat.v1.json">"#,
    );
    assert_eq!(
        response.body, page,
        "the embedded page is client/index.html"
    );
}

#[tokio::test]
async fn other_paths_get_404_and_plain_gets_on_the_endpoint_get_426() {
    let server = TestServer::start().await;
    for path in ["/nope", "/index.html", "/wsx/1", "/favicon.ico"] {
        let response = server
            .http(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            .await;
        assert_eq!(response.status, 404, "{path}");
    }
    let response = server
        .refuses(
            "GET /ws/5 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            426,
            "WebSocket",
        )
        .await;
    assert_eq!(response.header("upgrade"), Some("websocket"));

    let response = server
        .http("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn a_frame_sent_in_the_same_packet_as_the_handshake_is_heard() {
    let server = TestServer::start().await;
    let mut watcher = server.join("1", "1").await;

    let mut request = upgrade_request("/ws/2").into_bytes();
    request.extend(masked_text_frame("first words"));
    let mut eager = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("connect");
    eager.write_all(&request).await.expect("write");

    assert_eq!(watcher.recv().await, "Client #2 has entered the chat");
    assert_eq!(watcher.recv().await, "Client #2: first words");
}

/// A client's text frame, masked as RFC 6455 requires of clients.
fn masked_text_frame(text: &str) -> Vec<u8> {
    assert!(text.len() < 126, "short frames only");
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend(mask);
    frame.extend(text.bytes().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}
