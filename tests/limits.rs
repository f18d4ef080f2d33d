//! Keepalive and the limits on what one client can make the server do, over real
//! sockets: quiet readers stay, dead peers go, floods of any kind of frame are slowed,
//! and one address cannot take every place.
//!
//! The tests of timers run on paused time (`start_paused`), with the server in this
//! process: its clock moves only when every task here waits, so a busy machine cannot
//! make a client miss a deadline it would meet on an idle one, and an elapsed time is
//! exact rather than "at least".

use std::time::Duration;

use chat_server::{Config, RateLimit};
use futures_util::{SinkExt, StreamExt};
use testkit::{
    Client, TestServer, assert_refused_as, closes_with, eventually, refused_total, upgrade_request,
    within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

fn unlimited() -> Config {
    Config {
        rate_limit: None,
        ..Config::default()
    }
}

/// A client frame as it goes on the wire: masked, with `payload`.
fn client_frame(opcode: OpCode, payload: &[u8], is_final: bool) -> Vec<u8> {
    let mut frame = Frame::message(payload.to_vec(), OpCode::Data(Data::Text), is_final);
    *frame.header_mut() = FrameHeader {
        is_final,
        opcode,
        mask: Some([7, 7, 7, 7]),
        ..FrameHeader::default()
    };
    let mut bytes = Vec::new();
    frame.format(&mut bytes).expect("format a frame");
    bytes
}

/// A raw connection that has completed the handshake for `/ws/<id>`, with a small
/// receive buffer, so that what it does not read soon backs up into the server.
async fn raw_member(server: &TestServer, id: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let mut stream = socket.connect(server.address).await.expect("connect");
    stream
        .write_all(upgrade_request(&format!("/ws/{id}")).as_bytes())
        .await
        .expect("handshake");
    // The 101 head, then the member's own join frame.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        within("the 101", stream.read_exact(&mut byte))
            .await
            .expect("read");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream
}

#[tokio::test(start_paused = true)]
async fn a_quiet_reader_outlives_many_pings_when_the_timeout_equals_the_interval() {
    // The defaults' shape (interval = timeout), scaled down. The reader answers each
    // ping as it reads it; on paused time that is always before the next timer, so it
    // is never late. A deadline counted from the start of the session instead of from
    // each unanswered ping would close it at its first deadline, and `read_pings` would
    // get the close frame instead of the second ping.
    let server = TestServer::start_with(Config {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let mut quiet = server.join("1", "1").await;
    // Ten intervals: ten timeouts' worth.
    quiet.read_pings(10).await;
    quiet.send("still here").await;
    assert_eq!(quiet.recv().await, "Client #1: still here");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_answering_is_closed_one_timeout_after_an_unanswered_ping() {
    let server = TestServer::start_with(Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let mut watcher = server.join("1", "1").await;
    // Connected and joined, then never reads or writes again.
    let _dead = raw_member(&server, "2").await;
    assert_eq!(watcher.recv().await, "Client #2 has entered the chat");
    let joined = Instant::now();
    assert_eq!(watcher.recv().await, "Client #2 has left the chat");
    // First ping at 300 ms, unanswered by 600 ms; on paused time that is exact. A
    // peer closed at once, or only after a later ping, falls outside.
    let elapsed = joined.elapsed();
    assert!(
        (Duration::from_millis(600)..Duration::from_millis(650)).contains(&elapsed),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_resets_while_its_reading_is_held_back_is_gone_at_once() {
    // Default keepalive: a dead peer nobody noticed would stay for 30 s + 30 s, past
    // the 10 s `within` waits for its leave (paused time gets there at once).
    let server = TestServer::start_with(unlimited()).await;
    let mut watcher = server.join("1", "1").await;
    let mut flooder = raw_member(&server, "2").await;
    assert_eq!(watcher.recv().await, "Client #2 has entered the chat");
    let watching = tokio::spawn(async move {
        let mut relayed = 0;
        loop {
            match watcher.recv().await.as_str() {
                "Client #2 has left the chat" => return relayed,
                text => {
                    assert!(text.starts_with("Client #2: zzz"), "{text:.40}");
                    relayed += 1;
                }
            }
        }
    });

    // The flooder never reads: its echoes fill its receive buffer, the server's send
    // buffer, then its outbox past the high-water mark, where the server stops reading
    // it, and its own writes stall. Only the server's writer, blocked on its socket, is
    // then there to notice the reset. On paused time the 1 s timeout below runs out only
    // once nothing in the process can move, so only when the server has stopped reading.
    let frame = client_frame(OpCode::Data(Data::Text), &[b'z'; 16 * 1024], true);
    let mut sent = 0;
    while let Ok(written) =
        tokio::time::timeout(Duration::from_secs(1), flooder.write_all(&frame)).await
    {
        written.expect("the server reads on until it holds back");
        sent += 1;
        assert!(
            sent < 100_000,
            "the server never stopped reading the flooder"
        );
    }
    flooder.set_zero_linger().expect("SO_LINGER 0");
    drop(flooder);

    let relayed = within("the flooder's leave", watching)
        .await
        .expect("the watcher read every frame");
    assert!(relayed > 0 && relayed <= sent + 1, "{relayed} of {sent}");
}

#[tokio::test(start_paused = true)]
async fn a_ping_flood_from_a_client_that_does_not_read_is_slowed_not_queued() {
    let server = TestServer::start_with(unlimited()).await;
    let mut watcher = server.join("1", "1").await;
    let flooder = raw_member(&server, "2").await;
    assert_eq!(watcher.recv().await, "Client #2 has entered the chat");

    // 100 000 numbered pings of 125 bytes (13 MB, and as many bytes of pongs: far more
    // than the socket buffers hold), sent while the flooder reads nothing at first.
    const PINGS: u32 = 100_000;
    let (read_half, mut write_half) = flooder.into_split();
    let flood = tokio::spawn(async move {
        let mut burst = Vec::new();
        for n in 0..PINGS {
            let mut payload = format!("{n:>10}").into_bytes();
            payload.resize(125, b'.');
            burst.extend(client_frame(OpCode::Control(Control::Ping), &payload, true));
            if burst.len() > 1 << 16 || n == PINGS - 1 {
                write_half.write_all(&burst).await.expect("flood");
                burst.clear();
            }
        }
        write_half
    });
    // The server stops reading from it rather than queue its answers or evict it. On
    // paused time this sleep ends only once every task here waits: a server that read
    // on, queueing pongs, would have taken all 13 MB first, and the flood would be over.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !flood.is_finished(),
        "the server took 13 MB without slowing it"
    );
    watcher.expect_silence().await;

    // Reading at last, it finds its own join, then every pong, in order.
    let reading = tokio::io::join(read_half, tokio::io::sink());
    let mut socket = WebSocketStream::from_raw_socket(reading, Role::Client, None).await;
    let mut pongs = 0;
    while pongs < PINGS {
        match within("the next pong", socket.next()).await {
            Some(Ok(Message::Pong(payload))) => {
                assert!(payload.starts_with(format!("{pongs:>10}").as_bytes()));
                pongs += 1;
            }
            Some(Ok(Message::Text(text))) => {
                assert_eq!(text.as_str(), "Client #2 has entered the chat");
            }
            other => panic!("expected pongs, got {other:?} after {pongs}"),
        }
    }
    // Kept: dropping the write half would end the connection.
    let _write_half = within("the flood to be sent", flood)
        .await
        .expect("flood task");
    watcher.expect_silence().await;
}

#[tokio::test(start_paused = true)]
async fn continuation_frames_and_pings_are_metered_like_messages() {
    // 25 messages a second allows 100 frames a second, 20 at once.
    let server = TestServer::start_with(Config {
        rate_limit: Some(RateLimit {
            per_second: 25.0,
            burst: 5,
        }),
        ..Config::default()
    })
    .await;
    let mut watcher = server.join("1", "1").await;
    let mut sender = raw_member(&server, "2").await;
    assert_eq!(watcher.recv().await, "Client #2 has entered the chat");

    // One message in 400 frames, with 100 pings among them: 500 frames of 6 or 7 bytes.
    // The server reads at most 1 KiB (about 170 of them) at a time and pays for each
    // read before the next, so the last read is free: 20 at once, then at least 310 at
    // 100 a second, 3.1 s on the paused clock. Unmetered, the clock would not move.
    let started = Instant::now();
    let mut burst = client_frame(OpCode::Data(Data::Text), b"x", false);
    for n in 0..398 {
        burst.extend(client_frame(OpCode::Data(Data::Continue), b"", false));
        if n % 4 == 0 {
            burst.extend(client_frame(OpCode::Control(Control::Ping), b"", true));
        }
    }
    burst.extend(client_frame(OpCode::Data(Data::Continue), b"y", true));
    sender.write_all(&burst).await.expect("send");
    assert_eq!(watcher.recv().await, "Client #2: xy");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(3000), "{elapsed:?}");
}

#[tokio::test]
async fn a_message_left_unfinished_is_closed_after_the_message_timeout() {
    let server = TestServer::start_with(Config {
        message_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    // The first fragment of a message, and never the rest.
    let first_fragment = async |client: &mut Client| {
        let frame = Frame::message("Hel", OpCode::Data(Data::Text), false);
        client.socket.send(Message::Frame(frame)).await.unwrap();
    };
    let reason = closes_with(&server, first_fragment, CloseCode::Policy).await;
    assert_eq!(reason, "message not finished in time");

    // A single frame whose payload trickles in and stops.
    let mut watcher = server.join("3", "3").await;
    let mut trickler = raw_member(&server, "4").await;
    assert_eq!(watcher.recv().await, "Client #4 has entered the chat");
    let frame = client_frame(OpCode::Data(Data::Text), &[b'z'; 100], true);
    trickler.write_all(&frame[..20]).await.expect("send");
    assert_eq!(watcher.recv().await, "Client #4 has left the chat");

    // A message that is finished in time is not affected, however it is split. Its
    // own server gives it a timeout 50 times the pause between its fragments: on a busy
    // machine the pause can last far longer than the 100 ms asked for. (Paused time
    // would make it exact, but on paused time the server does not read the second
    // fragment before the deadline, even with no pause at all; not yet understood.)
    let server = TestServer::start_with(Config {
        message_timeout: Duration::from_secs(5),
        ..Config::default()
    })
    .await;
    let mut slow = server.join("5", "5").await;
    for (text, is_final) in [("a", false), ("b", true)] {
        let opcode = if text == "a" {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(text, opcode, is_final);
        slow.socket.send(Message::Frame(frame)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(slow.recv().await, "Client #5: ab");
}

#[tokio::test]
async fn a_sender_faster_than_its_own_reading_is_slowed_not_evicted() {
    let server = TestServer::start_with(Config {
        max_queue_bytes: 64 * 1024,
        // The queue is never less than twice the largest frame a message can cause:
        // small messages keep it small.
        max_message_bytes: 17 * 1024,
        ..unlimited()
    })
    .await;
    let client = server.join("1", "1").await;
    let (mut sending, mut reading) = client.socket.split();
    // 300 messages of 16 KiB, sent as fast as TCP takes them, while the same client
    // reads its echoes back at a slower pace: its echoes alone are over 20 times its queue.
    const MESSAGES: usize = 300;
    let chunk = "z".repeat(16 * 1024);
    let sender = async {
        for _ in 0..MESSAGES {
            sending
                .send(Message::text(chunk.clone()))
                .await
                .expect("send");
        }
    };
    let reader = async {
        let mut echoes = 0;
        while echoes < MESSAGES {
            match within("an echo", reading.next()).await {
                Some(Ok(Message::Text(text))) => {
                    assert!(text.ends_with(chunk.as_str()), "{}", &text[..40]);
                    echoes += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Some(Ok(Message::Ping(_))) => {}
                other => panic!("expected echoes, got {other:?} after {echoes}"),
            }
        }
        echoes
    };
    let ((), echoes) = tokio::join!(sender, reader);
    assert_eq!(echoes, MESSAGES);

    // A client that reads nothing while the room talks is still evicted.
    let server = TestServer::start_with(Config {
        max_queue_bytes: 64 * 1024,
        // The queue is never less than twice the largest frame a message can cause:
        // small messages keep it small.
        max_message_bytes: 17 * 1024,
        ..unlimited()
    })
    .await;
    let mut deaf = server.join("1", "1").await;
    let mut talker = server.join("2", "2").await;
    let mut sent = 0;
    loop {
        assert!(sent < 10_000, "the deaf client was never dropped");
        talker.send(&chunk).await;
        sent += 1;
        let echo = talker.recv().await;
        if echo == "Client #1 has left the chat" {
            break;
        }
    }
    let (frame, _) = deaf.recv_until_close().await;
    assert_eq!(frame.expect("a close frame").reason, "slow consumer");
}

#[tokio::test]
async fn upgrades_over_http_1_0_are_refused() {
    let server = TestServer::start().await;
    let request = upgrade_request("/ws/1").replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_refused_as(server.address, &request, (400, "HTTP/1.1"), "http_version").await;
}

fn with_host_and_origin(path: &str, host: &str, origin: &str) -> String {
    upgrade_request(path).replacen(
        "Host: localhost\r\n",
        &format!("Host: {host}\r\nOrigin: {origin}\r\n"),
        1,
    )
}

#[tokio::test]
async fn only_ip_literals_localhost_and_listed_hosts_are_served() {
    let server = TestServer::start().await;
    // DNS rebinding: a page on attacker.example whose name now points here.
    let rebound = with_host_and_origin(
        "/ws/1",
        "attacker.example:8000",
        "http://attacker.example:8000",
    );
    server.refuses(&rebound, 403, "--allowed-host").await;
    let page = server
        .http("GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
        .await;
    assert_eq!(page.status, 403);
    for host in ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"] {
        let own = with_host_and_origin("/ws/1", host, &format!("http://{host}"));
        assert_eq!(server.http(&own).await.status, 101, "{host}");
    }
    assert_eq!(server.metric(&refused_total("host")).await, 2);

    let named = TestServer::start_with(Config {
        allowed_hosts: vec!["chat.example.org".into()],
        ..Config::default()
    })
    .await;
    let listed = with_host_and_origin("/ws/1", "chat.example.org", "http://chat.example.org");
    assert_eq!(named.http(&listed).await.status, 101);
    assert_eq!(named.http(&rebound).await.status, 403);
}

#[tokio::test]
async fn pages_from_disk_are_let_in_over_loopback() {
    let server = TestServer::start().await;
    for origin in ["null", "file://"] {
        let from_disk = upgrade_request("/ws/1").replacen(
            "\r\n\r\n",
            &format!("\r\nOrigin: {origin}\r\n\r\n"),
            1,
        );
        assert_eq!(server.http(&from_disk).await.status, 101, "{origin}");
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_place() {
    let server = TestServer::start_with(Config {
        max_connections_per_ip: Some(2),
        ..Config::default()
    })
    .await;
    let first = server.join("1", "1").await;
    let _second = server.join("2", "2").await;
    let another = upgrade_request("/ws/3");
    server
        .refuses(&another, 503, "too many connections from your address")
        .await;
    first.close().await;
    eventually("the place to be given back", async || {
        (server.http(&another).await.status == 101).then_some(())
    })
    .await;
    assert_eq!(server.metric(&refused_total("per_ip_connections")).await, 1);
}

#[tokio::test(start_paused = true)]
async fn one_address_cannot_open_connections_faster_than_its_rate() {
    // On paused time: on a busy machine the three handshakes could take long enough,
    // on the wall clock, for a token to come back before the fourth.
    let server = TestServer::start_with(Config {
        handshake_rate_per_ip: Some(RateLimit {
            per_second: 1.0,
            burst: 3,
        }),
        ..Config::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(server.http(&upgrade_request("/ws/1")).await.status, 101);
    }
    let response = server.http(&upgrade_request("/ws/1")).await;
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(server.metric(&refused_total("per_ip_rate")).await, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.http(&upgrade_request("/ws/1")).await.status, 101);
}

/// A plain client's message of control characters becomes a frame six times its size
/// for JSON clients (each byte escaped as `\u0001`). The sender is paced by that frame,
/// not by its own copy, so the JSON clients, reading at full speed, keep up instead of
/// being evicted (issue 34, finding 1: 4 such messages closed every v1 client).
#[tokio::test]
async fn control_characters_from_a_plain_client_evict_no_json_reader() {
    let server = TestServer::start_with(unlimited()).await;
    let mut readers = Vec::new();
    for id in 10..14 {
        let mut reader = testkit::v1::V1::connect(&server, &format!("/ws/{id}")).await;
        reader.seated().await;
        readers.push(reader);
    }
    let mut v2 = testkit::v2::V2::connect(&server, "/ws/20").await;
    v2.seated().await;
    let mut sender = server.join("1", "1").await;
    const MESSAGES: usize = 20;
    let text = "\u{1}".repeat(64 * 1024 - 16);
    // Every reader reads at once, at full speed.
    let v1_readers = readers.iter_mut().map(|reader| async {
        let mut seen = 0;
        while seen < MESSAGES {
            let event = reader.event().await;
            if matches!(&event.kind, chat::v1::EventKind::Message { text: said, .. } if *said == text)
            {
                seen += 1;
            }
        }
    });
    let v2_reader = async {
        let mut seen = 0;
        while seen < MESSAGES {
            if v2.next_of("message").await["text"] == text.as_str() {
                seen += 1;
            }
        }
    };
    let readers_read = async {
        tokio::join!(futures_util::future::join_all(v1_readers), v2_reader);
    };
    let sending = async {
        for _ in 0..MESSAGES {
            sender.send(&text).await;
        }
        for _ in 0..MESSAGES {
            sender.recv().await;
        }
    };
    tokio::join!(readers_read, sending);
    assert_eq!(
        testkit::metric(
            server.address,
            "chat_disconnects_total{reason=\"slow_consumer\"}"
        )
        .await,
        0
    );
}

/// Issue 34, finding 4: a newcomer's welcome lists every member, and in a room of many
/// with long ids and names it outgrows the queue bound (here a small one: a few hundred
/// members at the defaults' 1 MiB take thousands). The newcomer is welcomed, not
/// evicted by its own welcome, and hears what follows.
#[tokio::test]
async fn a_welcome_longer_than_the_queue_bound_does_not_evict_the_newcomer() {
    const MEMBERS: usize = 150;
    let server = TestServer::start_with(Config {
        max_message_bytes: 1000,
        // Raised to its floor: twice the largest frame of a 1000-byte message.
        max_queue_bytes: 1,
        handshake_rate_per_ip: None,
        ..unlimited()
    })
    .await;
    let name = "N".repeat(chat::v1::MAX_NAME_CHARS);
    let mut members = Vec::new();
    for n in 0..MEMBERS {
        let id = format!("{}{n:03}", "9".repeat(chat::MAX_ID_DIGITS - 3));
        members.push(server.connect(&format!("{id}?name={name}")).await);
    }
    let mut newcomer = testkit::v1::V1::connect(&server, "/ws/7?name=newcomer").await;
    let welcome = newcomer.seated().await;
    assert_eq!(welcome.members.len(), MEMBERS, "every member listed");
    members[0].send("after the welcome").await;
    let said = newcomer.event().await;
    assert_eq!(
        said.kind,
        testkit::v1::said("after the welcome"),
        "{said:?}"
    );
}
