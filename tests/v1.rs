//! `chat.v1.json` over real sockets: negotiation, the welcome and its history, dense
//! offsets, resume, nonces, rooms, and what is refused; beside plain clients, whose
//! bytes never change.

use chat::v1::{Event, EventKind};
use chat_server::Config;
use testkit::v1::{V1, kinds, said};
use testkit::{Client, TestServer, refused_total, upgrade_request};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

// On paused time: `expect_silence` then ends only once every task here is idle.
#[tokio::test(start_paused = true)]
async fn a_newcomer_gets_the_welcome_the_history_and_then_its_own_join() {
    let server = TestServer::start().await;
    let mut alice = server.join("1", "1").await;
    alice.send("a").await;
    alice.send("b").await;
    assert_eq!(alice.recv().await, "Client #1: a");
    assert_eq!(alice.recv().await, "Client #1: b");

    let mut bob = V1::connect(&server, "/ws/2").await;
    let (welcome, history, own) = bob.joined(3).await;
    assert_eq!(welcome.id, "2");
    assert_eq!(welcome.room, "main");
    assert_eq!(welcome.offset, 3);
    assert!(!welcome.recovered, "nothing was asked to be resumed");
    assert_eq!(welcome.members.len(), 1);
    assert_eq!(welcome.members[0].id, "1");
    assert_eq!(welcome.limits.max_message_bytes, 64 * 1024);
    assert_eq!(welcome.limits.history, 1000);
    assert_eq!(
        kinds(&history),
        [
            ("1".to_owned(), EventKind::join()),
            ("1".to_owned(), said("a")),
            ("1".to_owned(), said("b")),
        ]
    );
    assert_eq!(
        history.iter().map(|event| event.offset).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(own.offset, 4);
    // The plain client hears the same join in the tutorial's words, and nothing else.
    assert_eq!(alice.recv().await, "Client #2 has entered the chat");
    alice.expect_silence().await;
}

#[tokio::test]
async fn every_client_sees_the_same_dense_offsets_and_plain_clients_the_same_order() {
    let server = TestServer::start().await;
    let mut plain = server.join("1", "1").await;
    let mut one = V1::connect(&server, "/ws/2").await;
    one.joined(1).await;
    let mut two = V1::connect(&server, "/ws/3").await;
    two.joined(2).await;
    assert_eq!(one.event().await.kind, EventKind::join());

    plain.send("from plain").await;
    one.say("from one", Some("nonce-1")).await;
    two.say("from two", None).await;

    let mut seen_by_one = Vec::new();
    let mut seen_by_two = Vec::new();
    for _ in 0..3 {
        seen_by_one.push(one.event().await);
        seen_by_two.push(two.event().await);
    }
    assert_eq!(
        seen_by_one, seen_by_two,
        "the same events, offsets and times"
    );
    let offsets: Vec<u64> = seen_by_one.iter().map(|event| event.offset).collect();
    assert_eq!(offsets, [4, 5, 6], "dense, after the three joins");
    let plain_order: Vec<String> = seen_by_one.iter().filter_map(Event::plain).collect();
    assert_eq!(plain.recv().await, "Client #2 has entered the chat");
    assert_eq!(plain.recv().await, "Client #3 has entered the chat");
    for expected in plain_order {
        assert_eq!(plain.recv().await, expected);
    }
    let nonces: Vec<Option<String>> = seen_by_one
        .iter()
        .map(|event| match &event.kind {
            EventKind::Message { nonce, .. } => nonce.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(nonces.contains(&Some("nonce-1".to_owned())));
    assert_eq!(nonces.iter().filter(|nonce| nonce.is_some()).count(), 1);
}

#[tokio::test]
async fn a_dropped_client_resumes_exactly_what_it_missed_its_own_message_included() {
    let server = TestServer::start().await;
    let mut dave = V1::connect(&server, "/ws/4").await;
    dave.joined(0).await;
    let mut carol = V1::connect(&server, "/ws/3").await;
    let (welcome, _, own_join) = carol.joined(1).await;
    assert_eq!(dave.event().await.kind, EventKind::join());

    // Carol sends, and her connection drops before she reads the echo.
    carol.say("did this go through?", Some("carol-17")).await;
    drop(carol);
    let echoed = dave.event().await;
    assert_eq!(echoed.id, "3");
    assert_eq!(dave.event().await.kind, EventKind::leave());
    dave.say("meanwhile", None).await;
    let meanwhile = dave.event().await;

    let path = format!("/ws/3?since={}&epoch={}", own_join.offset, welcome.epoch);
    let mut back = V1::connect(&server, &path).await;
    let welcome_again = back.welcome().await;
    assert!(welcome_again.recovered);
    assert_eq!(welcome_again.epoch, welcome.epoch);
    let mut missed = Vec::new();
    while missed.len() < 3 {
        missed.push(back.event().await);
    }
    assert_eq!(
        missed.iter().map(|event| event.offset).collect::<Vec<_>>(),
        [
            own_join.offset + 1,
            own_join.offset + 2,
            own_join.offset + 3
        ],
        "exactly the events after `since`"
    );
    assert_eq!(
        missed[0].kind,
        EventKind::said("did this go through?", Some("carol-17".into())),
        "her own message, found by its nonce: no need to send it again"
    );
    assert_eq!(missed[1].kind, EventKind::leave());
    assert_eq!(missed[2], meanwhile);
    let rejoined = back.event().await;
    assert_eq!(rejoined.kind, EventKind::join());
    assert_eq!(rejoined.offset, meanwhile.offset + 1);
}

#[tokio::test]
async fn resuming_past_the_history_or_in_another_epoch_is_not_recovered() {
    let server = TestServer::start_with(Config {
        history: 5,
        ..Config::default()
    })
    .await;
    let mut first = V1::connect(&server, "/ws/1").await;
    let (welcome, _, joined) = first.joined(0).await;
    for n in 0..10 {
        first.say(&n.to_string(), None).await;
        first.event().await;
    }
    // Ten events after the join, five kept: not all of what was missed is there.
    let path = format!("/ws/1?since={}&epoch={}", joined.offset, welcome.epoch);
    let mut late = V1::connect(&server, &path).await;
    let (again, history, _) = late.joined(5).await;
    assert!(!again.recovered);
    assert_eq!(
        history.first().map(|event| event.offset),
        Some(again.offset - 4)
    );
    // Nothing missed at all: recovered, with no history.
    let path = format!("/ws/1?since={}&epoch={}", again.offset + 1, welcome.epoch);
    let mut current = V1::connect(&server, &path).await;
    let (current_welcome, _, _) = current.joined(0).await;
    assert!(current_welcome.recovered);
    // An epoch this server never gave.
    let mut stranger = V1::connect(&server, "/ws/1?since=1&epoch=not-ours").await;
    assert!(!stranger.welcome().await.recovered);
}

#[tokio::test]
async fn after_a_restart_the_epoch_changes_and_nothing_is_recovered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = TestServer::start_on(listener, Config::default());
    let mut client = V1::connect(&server, "/ws/1").await;
    let (welcome, _, joined) = client.joined(0).await;
    drop(client);
    server.stop().await;

    let listener = TcpListener::bind(address).await.expect("the same port");
    let server = TestServer::start_on(listener, Config::default());
    let path = format!("/ws/1?since={}&epoch={}", joined.offset, welcome.epoch);
    let mut back = V1::connect(&server, &path).await;
    let restarted = back.welcome().await;
    assert!(!restarted.recovered);
    assert_ne!(restarted.epoch, welcome.epoch);
}

// On paused time: `expect_silence` then ends only once every task here is idle.
#[tokio::test(start_paused = true)]
async fn rooms_are_isolated_and_have_their_own_offsets() {
    let server = TestServer::start().await;
    let mut in_main = server.join("1", "1").await;
    let (socket, _) = tokio_tungstenite::connect_async(server.url("/ws/2?room=ops"))
        .await
        .expect("a plain client in ops");
    let mut plain_in_ops = Client { socket };
    assert_eq!(plain_in_ops.recv().await, "Client #2 has entered the chat");
    let mut v1_in_ops = V1::connect(&server, "/ws/3?room=ops").await;
    let (welcome, history, own) = v1_in_ops.joined(1).await;
    assert_eq!(welcome.room, "ops");
    assert_eq!(history[0].offset, 1, "ops counts its own events");
    assert_eq!(own.offset, 2);

    plain_in_ops.send("ops only").await;
    in_main.send("main only").await;
    assert_eq!(plain_in_ops.recv().await, "Client #3 has entered the chat");
    assert_eq!(plain_in_ops.recv().await, "Client #2: ops only");
    assert_eq!(v1_in_ops.event().await.kind, said("ops only"));
    assert_eq!(in_main.recv().await, "Client #1: main only");
    in_main.expect_silence().await;
    plain_in_ops.expect_silence().await;
    // `main` is the default room's name.
    let (socket, _) = tokio_tungstenite::connect_async(server.url("/ws/4?room=main"))
        .await
        .expect("main by name");
    let mut named = Client { socket };
    assert_eq!(named.recv().await, "Client #4 has entered the chat");
    assert_eq!(in_main.recv().await, "Client #4 has entered the chat");
}

#[tokio::test]
async fn bad_room_names_and_resumes_are_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    for room in ["", "a%20b", "%C3%A9", &"r".repeat(65), "a/b"] {
        let request = upgrade_request(&format!("/ws/1?room={room}"));
        server
            .refuses(&request, 403, "a room name is 1 to 64")
            .await;
    }
    for query in [
        "since=5",
        "epoch=x",
        "since=-1&epoch=x",
        "since=abc&epoch=x",
    ] {
        let request = upgrade_request(&format!("/ws/1?{query}"));
        server.refuses(&request, 400, "resume").await;
    }
    assert_eq!(server.metric(&refused_total("invalid_room")).await, 5);
    assert_eq!(server.metric(&refused_total("invalid_resume")).await, 4);
}

#[tokio::test]
async fn a_frame_that_is_not_a_request_closes_with_1008() {
    let server = TestServer::start().await;
    let mut watcher = V1::connect(&server, "/ws/1").await;
    watcher.joined(0).await;
    for bad in [
        "just text".to_owned(),
        r#"{"type":"shout","text":"hi"}"#.to_owned(),
        format!(
            r#"{{"type":"message","text":"hi","nonce":"{}"}}"#,
            "n".repeat(65)
        ),
    ] {
        let mut culprit = V1::connect(&server, "/ws/2").await;
        culprit.seated().await;
        assert_eq!(watcher.event().await.kind, EventKind::join());
        culprit.socket.send(&bad).await;
        let (frame, texts) = culprit.socket.recv_until_close().await;
        let frame = frame.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Policy, "{bad}");
        assert!(frame.reason.starts_with("invalid request"), "{frame:?}");
        assert!(texts.is_empty(), "nothing relayed: {texts:?}");
        let left = watcher.event().await;
        assert_eq!((left.id.as_str(), left.kind), ("2", EventKind::leave()));
    }
}

#[tokio::test]
async fn two_connections_with_one_id_are_two_members_in_the_welcome() {
    let server = TestServer::start().await;
    let _one = server.join("7", "7").await;
    let _two = server.join("7", "7").await;
    let mut v1 = V1::connect(&server, "/ws/8").await;
    let (welcome, _, _) = v1.joined(2).await;
    let ids: Vec<&str> = welcome
        .members
        .iter()
        .map(|member| member.id.as_str())
        .collect();
    assert_eq!(ids, ["7", "7"]);
}

#[tokio::test]
async fn history_memory_stays_bounded_under_a_flood() {
    let server = TestServer::start_with(Config {
        history: 50,
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let mut flooder = server.join("1", "1").await;
    let kilobyte = "k".repeat(1024);
    for _ in 0..2000 {
        flooder.send(&kilobyte).await;
    }
    for _ in 0..2000 {
        flooder.recv().await;
    }
    let history_bytes = testkit::metric(server.address, "chat_history_bytes").await;
    // 50 events of a little over 1 KiB each, not 2 000: each kept as its frame and as
    // its fields, which take about as much again.
    assert!(
        (100 * 1024..120 * 1200).contains(&history_bytes),
        "{history_bytes}"
    );
    let mut newcomer = V1::connect(&server, "/ws/2").await;
    let (welcome, history, _) = newcomer.joined(50).await;
    assert_eq!(history[0].offset, welcome.offset - 49);
    newcomer.socket.expect_silence().await;
}

// On paused time: `expect_silence` then ends only once every task here is idle.
#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_ask_for_v1_gets_the_plain_protocol() {
    let server = TestServer::start().await;
    let (socket, response) = tokio_tungstenite::connect_async(server.url("/ws/1"))
        .await
        .expect("connect");
    assert!(response.headers().get("Sec-WebSocket-Protocol").is_none());
    let mut plain = Client { socket };
    assert_eq!(plain.recv().await, "Client #1 has entered the chat");
    let mut v1 = V1::connect(&server, "/ws/2").await;
    v1.say("{\"looks\": \"like json\"}", None).await;
    v1.joined(1).await;
    assert_eq!(plain.recv().await, "Client #2 has entered the chat");
    assert_eq!(plain.recv().await, "Client #2: {\"looks\": \"like json\"}");
    plain.expect_silence().await;
}
