//! TLS on the server's own port, over real sockets: the page over https, the chat over
//! wss (at a busy room's volume too), plain HTTP and untrusting clients refused with
//! their reasons, and a renewed certificate taken on SIGHUP while open connections go on.

use std::net::SocketAddr;
use std::process::Stdio;

use chat_server::Config;
use futures_util::SinkExt;
use testkit::chromium::chat_server_binary;
use testkit::process::{Scratch, free_port, wait_until_listening};
use testkit::tls::{TestCa, connect, https, metric};
use testkit::{Client, TestServer, eventually, raw_http, refused_total, within};
use tokio::process::Command;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;

/// Opens `/ws/<id>` over wss as `localhost`, trusting `ca`.
async fn wss_client(address: SocketAddr, id: &str, ca: &TestCa) -> Client {
    let url = format!("wss://localhost:{}/ws/{id}", address.port());
    let connector = Connector::Rustls(ca.client_config());
    let (socket, _) = within(
        "a wss handshake",
        tokio_tungstenite::connect_async_tls_with_config(&url, None, false, Some(connector)),
    )
    .await
    .unwrap_or_else(|error| panic!("{url}: {error}"));
    Client { socket }
}

#[tokio::test]
async fn the_page_and_the_chat_are_served_over_tls_and_plain_http_is_refused_clearly() {
    let scratch = Scratch::new("tls");
    let ca = TestCa::new("chat test CA");
    let files = ca.issue_into(scratch.path(), &["localhost"]);
    let server = TestServer::start_with(Config {
        tls: Some(files),
        ..Config::default()
    })
    .await;
    let address = server.address;

    let page = https(address, &ca, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>"), "the page");

    let mut alice = wss_client(address, "1", &ca).await;
    assert_eq!(alice.recv().await, "Client #1 has entered the chat");
    let mut bob = wss_client(address, "2", &ca).await;
    assert_eq!(bob.recv().await, "Client #2 has entered the chat");
    assert_eq!(alice.recv().await, "Client #2 has entered the chat");
    // The largest message passes through TLS records whole.
    let largest = "x".repeat(64 * 1024 - 1);
    bob.send(&largest).await;
    assert_eq!(alice.recv().await, format!("Client #2: {largest}"));
    assert_eq!(bob.recv().await, format!("Client #2: {largest}"));

    // A busy room's volume over TLS: 5 000 messages, from 125 senders five at a time,
    // each sending what the default rate limit's burst allows at once, every one
    // reaching the reader, in each sender's order.
    let senders = 5;
    let per_sender = 40;
    let rounds = 25;
    for round in 0..rounds {
        let mut talkers = Vec::new();
        for sender in 0..senders {
            let id = format!("{}", 100 + round * senders + sender);
            let mut talker = wss_client(address, &id, &ca).await;
            talker.recv().await;
            talkers.push((id, talker));
        }
        for (id, talker) in &mut talkers {
            for n in 0..per_sender {
                talker
                    .socket
                    .feed(Message::text(format!("{id} {n}")))
                    .await
                    .expect("feed");
            }
            talker.socket.flush().await.expect("flush");
        }
        let mut next = std::collections::HashMap::new();
        let mut heard = 0;
        while heard < senders * per_sender {
            let line = alice.recv().await;
            let Some(said) = line.split(": ").nth(1) else {
                continue; // a join or leave
            };
            let (id, n) = said.split_once(' ').expect("id and number");
            let n: usize = n.parse().expect("a number");
            let expected = next.entry(id.to_owned()).or_insert(0);
            assert_eq!(n, *expected, "{id}'s messages in order");
            *expected += 1;
            heard += 1;
        }
        for (_, talker) in talkers {
            talker.close().await;
        }
    }

    // Plain HTTP to the TLS port is told what to use, in plain HTTP it can read.
    let before = metric(address, &ca, &refused_total("not_tls")).await;
    let plain = raw_http(address, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(plain.status, 400);
    assert_eq!(
        plain.body,
        "this server speaks TLS only: use https:// for the page and wss:// for WebSockets\n"
    );
    assert_eq!(
        metric(address, &ca, &refused_total("not_tls")).await,
        before + 1
    );

    // A client that trusts another CA fails its handshake, and nothing else notices.
    let stranger = TestCa::new("someone else's CA");
    let refused = connect(address, "localhost", &stranger).await;
    assert!(
        refused.is_err(),
        "a certificate from a CA the client does not trust"
    );
    alice.send("still fine").await;
    for client in [&mut alice, &mut bob] {
        // Past the last talkers' leaves (and, for bob, the whole burst he never read).
        while client.recv().await != "Client #1: still fine" {}
    }
}

/// A `chat-server` process with TLS, its log going to `log`.
async fn tls_server(
    files: &chat_server::tls::TlsFiles,
    log: &std::path::Path,
) -> (tokio::process::Child, SocketAddr) {
    let port = free_port();
    let child = Command::new(chat_server_binary())
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .args(["--port", &port.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-server");
    wait_until_listening(port, "the TLS server").await;
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

async fn wait_for_log(log: &std::path::Path, line: &str) {
    eventually(line, async || {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        logged.contains(line).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sighup_takes_a_renewed_certificate_keeps_a_broken_one_out_and_drops_nobody() {
    let scratch = Scratch::new("tls-reload");
    let log = scratch.path().join("server.log");
    let old_ca = TestCa::new("the old CA");
    let files = old_ca.issue_into(scratch.path(), &["localhost"]);
    let (server, address) = tls_server(&files, &log).await;
    let mut early = wss_client(address, "1", &old_ca).await;
    assert_eq!(early.recv().await, "Client #1 has entered the chat");

    // Renewed, by another CA so that the tests can tell which one is served.
    let new_ca = TestCa::new("the new CA");
    new_ca.issue_into(scratch.path(), &["localhost"]);
    hang_up(&server);
    wait_for_log(&log, "reloaded the TLS certificate").await;
    let mut late = wss_client(address, "2", &new_ca).await;
    assert_eq!(late.recv().await, "Client #2 has entered the chat");
    assert!(
        connect(address, "localhost", &old_ca).await.is_err(),
        "the old certificate is no longer served"
    );
    // The connection made before the reload is still there, and chats.
    assert_eq!(early.recv().await, "Client #2 has entered the chat");
    early.send("made before the reload").await;
    assert_eq!(early.recv().await, "Client #1: made before the reload");
    assert_eq!(late.recv().await, "Client #1: made before the reload");

    // A broken renewal is logged and the certificate in use stays.
    std::fs::write(&files.cert, "not a certificate").expect("write");
    hang_up(&server);
    wait_for_log(&log, "kept the TLS certificate in use").await;
    let mut third = wss_client(address, "3", &new_ca).await;
    assert_eq!(third.recv().await, "Client #3 has entered the chat");
    early.send("after the broken one").await;
    assert_eq!(early.recv().await, "Client #3 has entered the chat");
    assert_eq!(early.recv().await, "Client #1: after the broken one");
}

#[tokio::test]
async fn a_certificate_that_cannot_be_used_stops_the_server_at_start_with_why() {
    let scratch = Scratch::new("tls-bad");
    let ca = TestCa::new("a CA");
    let files = ca.issue_into(scratch.path(), &["localhost"]);
    let other = ca.issue_into(
        &{
            let folder = scratch.path().join("other");
            std::fs::create_dir(&folder).expect("mkdir");
            folder
        },
        &["localhost"],
    );
    let empty = scratch.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let cases = [
        (
            files.cert.clone(),
            scratch.path().join("missing.pem"),
            "cannot read the private key",
        ),
        (empty.clone(), files.key.clone(), "holds no certificate"),
        (files.cert.clone(), other.key.clone(), "do not go together"),
    ];
    for (cert, key, says) in cases {
        let output = Command::new(chat_server_binary())
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(["--port", "0"])
            .output()
            .await
            .expect("run chat-server");
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    let alone = Command::new(chat_server_binary())
        .arg("--tls-cert")
        .arg(&files.cert)
        .output()
        .await
        .expect("run chat-server");
    assert_eq!(alone.status.code(), Some(2), "a certificate needs its key");
}
