//! Several `chat-server` nodes sharing one room through a real Redis.
//!
//! Ignored by a bare `cargo test`, which needs no Redis; `.ci/run` installs Debian's
//! `redis-server` and runs these with `--include-ignored`. Each test starts its own Redis
//! on a free port.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chat::v1::{Event, EventKind, ServerFrame, Welcome};
use chat_server::Config;
use futures_util::{SinkExt, StreamExt};
use testkit::chromium::{
    ChromeDriver, chat_tui_binary, client_id, messages, wait_for_message, wait_until,
};
use testkit::process::{Scratch, ServerProcess, free_port, wait_until_listening};
use testkit::redis::{Redis, cluster_of_two};
use testkit::terminal::Terminal;
use testkit::v1::{V1, kinds, said};
use testkit::{
    Client, PATIENCE, TestServer, assert_one_order, drained_gauge, flood, metric_until,
    settled_gauge, wait_for_health, within,
};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn joins_messages_and_leaves_cross_nodes() {
    let (_redis, one, two) = cluster_of_two().await;

    let mut alice = one.join("1", "1").await;
    let mut bob = two.join("2", "2").await;
    assert_eq!(alice.recv().await, "Client #2 has entered the chat");

    alice.send("hello from node one").await;
    assert_eq!(alice.recv().await, "Client #1: hello from node one");
    assert_eq!(bob.recv().await, "Client #1: hello from node one");
    bob.send("and back").await;
    assert_eq!(alice.recv().await, "Client #2: and back");
    assert_eq!(bob.recv().await, "Client #2: and back");

    bob.close().await;
    assert_eq!(alice.recv().await, "Client #2 has left the chat");
    alice.expect_silence().await;
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn every_client_on_every_node_sees_one_order() {
    const MESSAGES: usize = 200;
    let (_redis, one, two) = cluster_of_two().await;
    let mut clients = [
        one.join("1", "1").await,
        two.join("2", "2").await,
        one.join("3", "3").await,
        two.join("4", "4").await,
    ];
    // Bursts from senders on both nodes at once.
    assert_one_order(&mut clients, MESSAGES).await;
    // Each event counted against its node's backlog until it came back from Redis, and
    // every one did: nothing is left counted, which would slow the node's senders for
    // good.
    for node in [&one, &two] {
        drained_gauge(node.address, "chat_broker_backlog_bytes").await;
    }
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_newcomers_first_frame_is_its_own_join_even_under_traffic() {
    let (_redis, one, two) = cluster_of_two().await;
    let mut talker = one.join("1", "1").await;
    let chatter = tokio::spawn(async move {
        for n in 0..300 {
            talker.send(&n.to_string()).await;
        }
        talker
    });
    for id in 10..30 {
        // `join` asserts that the first frame is the newcomer's own join.
        let node = if id % 2 == 0 { &one } else { &two };
        let _ = node.join(&id.to_string(), &id.to_string()).await;
    }
    chatter.await.expect("the talker");
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_node_that_shuts_down_announces_its_members_leaves() {
    let (_redis, one, two) = cluster_of_two().await;
    let mut stays = one.join("1", "1").await;
    let mut goes = two.join("2", "2").await;
    assert_eq!(stays.recv().await, "Client #2 has entered the chat");
    two.stop().await;
    let (frame, _) = goes.recv_until_close().await;
    assert_eq!(frame.expect("a close frame").code, CloseCode::Away);
    assert_eq!(stays.recv().await, "Client #2 has left the chat");
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_killed_nodes_members_are_announced_as_gone_by_the_others() {
    let redis = Redis::start().await;
    let survivor = redis.node().await;
    let redis_url = redis.url();
    let args = Redis::process_args(&redis_url);
    let mut doomed = ServerProcess::start(&args).await;

    let mut watcher = survivor.join("1", "1").await;
    let (socket, _) = tokio_tungstenite::connect_async(doomed.url("/ws/2"))
        .await
        .expect("join the doomed node");
    let mut victim = Client { socket };
    assert_eq!(victim.recv().await, "Client #2 has entered the chat");
    assert_eq!(watcher.recv().await, "Client #2 has entered the chat");

    // SIGKILL: no leave is sent by the node itself.
    doomed.kill().await;
    let killed_at = Instant::now();
    assert_eq!(watcher.recv().await, "Client #2 has left the chat");
    eprintln!("leave announced {:?} after the kill", killed_at.elapsed());
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn nodes_ride_out_a_redis_restart() {
    let (mut redis, one, two) = cluster_of_two().await;
    let mut alice = one.join("1", "1").await;
    let mut bob = two.join("2", "2").await;
    assert_eq!(alice.recv().await, "Client #2 has entered the chat");

    redis.stop().await;
    closed_for_the_outage([&mut alice, &mut bob]).await;
    let reason = wait_for_health(one.address, 503).await;
    assert!(reason.contains("Redis"), "{reason}");
    let refused = one.http(&testkit::upgrade_request("/ws/3")).await;
    assert_eq!(refused.status, 503);

    redis.restart().await;
    one_room_again(&one, &two).await;
}

/// Each client was closed with 1013, "try again later".
async fn closed_for_the_outage(clients: [&mut Client; 2]) {
    for client in clients {
        let (frame, _) = client.recv_until_close().await;
        let frame = frame.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Again, "1013: try again later");
    }
}

/// Once Redis is back, both nodes are healthy, new clients on each chat as one room,
/// and nothing stale is announced: the old members' leaves were never owed to the new
/// ones, who joined after the outage.
async fn one_room_again(one: &TestServer, two: &TestServer) {
    wait_for_health(one.address, 200).await;
    wait_for_health(two.address, 200).await;
    let mut alice = one.join("1", "1").await;
    let mut bob = two.join("2", "2").await;
    assert_eq!(alice.recv().await, "Client #2 has entered the chat");
    bob.send("after the outage").await;
    assert_eq!(alice.recv().await, "Client #2: after the outage");
    assert_eq!(bob.recv().await, "Client #2: after the outage");
    alice.expect_silence().await;
    bob.expect_silence().await;
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_redis_blip_closes_every_client_even_when_redis_is_back_at_once() {
    let (mut redis, one, two) = cluster_of_two().await;
    let mut alice = one.join("1", "1").await;
    let mut bob = two.join("2", "2").await;
    assert_eq!(alice.recv().await, "Client #2 has entered the chat");

    // Back before the nodes have even noticed: their members still belong to the old
    // connection to Redis, whose presence and queued announcements are gone.
    redis.stop().await;
    redis.restart().await;
    closed_for_the_outage([&mut alice, &mut bob]).await;
    one_room_again(&one, &two).await;
}

/// Redis dies while a node is sending it a busy room's messages: what was on its way is
/// lost with the connection (its senders are closed with 1013), and no longer counted
/// once Redis is back, where, counted for good, it would slow every later sender.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn what_redis_lost_in_flight_is_not_counted_for_good() {
    let mut redis = Redis::start().await;
    let one = redis.node().await;
    let flooder = one.join("1", "1").await;
    let (mut sink, mut stream) = flooder.socket.split();
    // It reads the room back, as a client does, so that only Redis holds the node up.
    let reading = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let flood = tokio::spawn(async move {
        for n in 0.. {
            if sink
                .send(Message::text(format!("flood {n}")))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // Redis dies while the flood goes through it.
    metric_until(one.address, "chat_broker_published_total", |published| {
        published >= 100
    })
    .await;
    redis.stop().await;
    within("the flood to end with its connection", flood)
        .await
        .expect("the flood");
    reading.await.expect("the reader");
    redis.restart().await;
    wait_for_health(one.address, 200).await;
    drained_gauge(one.address, "chat_broker_backlog_bytes").await;
}

/// Redis takes no writes for a moment while a client floods a node: what the node has
/// handed to Redis and not yet read back grows to its bound (256 KiB) and stops there,
/// because the node stops reading its clients (TCP holds the sender back); once Redis
/// takes writes again, every message arrives, in order.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_node_stops_reading_its_clients_while_redis_holds_its_backlog_and_loses_nothing() {
    // The bound the server keeps (`broker::MAX_BACKLOG_BYTES`), and what one of these
    // messages costs against it at most (its text and its bookkeeping).
    const BOUND: u64 = 256 * 1024;
    const MESSAGE_COST: u64 = 31 * 1024;
    const MESSAGES: usize = 300;
    let redis = Redis::start().await;
    let config = Config {
        // Redis also holds the node's heartbeat while paused: a TTL well past the pause.
        presence_ttl: Duration::from_secs(6),
        ..redis.node_config()
    };
    let one = redis.node_with(config).await;
    let (mut alice, bob) = one.join_two().await;
    // Long enough to watch the backlog settle, and well inside the node's two seconds
    // for a Redis answer.
    let paused = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "client",
            "pause",
            "1500",
            "write",
        ])
        .output()
        .expect("redis-cli is installed with redis-server");
    assert!(paused.status.success(), "{paused:?}");
    // Bob floods, and reads his echoes, so that only Redis holds the node up.
    let (texts, sending, reading) = flood(bob.socket, MESSAGES);

    let backlog = settled_gauge(
        one.address,
        "chat_broker_backlog_bytes",
        BOUND,
        Duration::from_millis(300),
    )
    .await;
    eprintln!("backlog settled at {backlog} bytes");
    assert!(backlog >= BOUND, "the flood reached the bound: {backlog}");
    assert!(
        backlog < BOUND + MESSAGE_COST,
        "past the bound by at most one message: {backlog}"
    );
    assert!(!sending.is_finished(), "TCP holds bob back");

    for text in &texts {
        assert_eq!(alice.recv().await, format!("Client #2: {text}"));
    }
    within("bob's sends", sending).await.expect("bob sent");
    within("bob's echoes", reading).await.expect("bob read");
    drained_gauge(one.address, "chat_broker_backlog_bytes").await;
}

/// chat.v1.json across nodes: one offset space and one history per room, whichever node
/// a client is on; members listed from every node; rooms kept apart.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn v1_clients_on_two_nodes_share_offsets_history_and_members() {
    let (_redis, one, two) = cluster_of_two().await;
    let mut lobby = two.join("9", "9").await;
    let mut alice = V1::connect(&one, "/ws/1?room=ops").await;
    let (first, history, alices_join) = alice.joined(0).await;
    assert!(history.is_empty());
    assert_eq!((first.offset, alices_join.offset), (0, 1));
    alice.say("first", Some("n-1")).await;
    let first_said = alice.event().await;
    assert_eq!(first_said.offset, 2);
    assert_eq!(
        first_said.kind,
        EventKind::said("first", Some("n-1".into()))
    );

    let mut bob = V1::connect(&two, "/ws/2?room=ops").await;
    let (welcome, history, bobs_join) = bob.joined(2).await;
    assert_eq!(welcome.epoch, first.epoch, "one history for the room");
    assert_eq!(welcome.offset, 2);
    assert_eq!(ids(&welcome), ["1"], "alice, on the other node");
    assert_eq!(
        history,
        [alices_join, first_said],
        "the same events, offsets and times"
    );
    assert_eq!(alice.event().await, bobs_join);

    bob.say("second", None).await;
    let seen_by_bob = bob.event().await;
    assert_eq!(seen_by_bob.offset, 4);
    assert_eq!(alice.event().await, seen_by_bob);

    bob.socket.close().await;
    let left = alice.event().await;
    assert_eq!((left.offset, left.kind), (5, EventKind::leave()));
    // The default room heard nothing of "ops", and "ops" nothing of it.
    lobby.expect_silence().await;
    alice.socket.expect_silence().await;
}

fn ids(welcome: &Welcome) -> Vec<&str> {
    welcome
        .members
        .iter()
        .map(|member| member.id.as_str())
        .collect()
}

/// A client dropped from one node resumes on the other with the `since` and `epoch` it
/// had, and gets exactly what it missed, its own last message among it (found by its
/// nonce, so it knows not to send it again).
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_client_resumes_on_the_other_node_with_exactly_what_it_missed() {
    let (_redis, one, two) = cluster_of_two().await;
    let mut bob = V1::connect(&two, "/ws/2").await;
    bob.joined(0).await;
    let mut alice = V1::connect(&one, "/ws/1").await;
    let (welcome, _, _) = alice.joined(1).await;
    let (epoch, seen) = (welcome.epoch.clone(), welcome.offset + 1);
    assert_eq!(bob.event().await.kind, EventKind::join());

    // Alice's connection dies right after she sends: she never sees her echo.
    alice.say("did this go through?", Some("n-7")).await;
    drop(alice);
    assert_eq!(
        bob.event().await.kind.clone(),
        EventKind::said("did this go through?", Some("n-7".into()))
    );
    assert_eq!(bob.event().await.kind, EventKind::leave());
    for n in 0..3 {
        bob.say(&format!("meanwhile {n}"), None).await;
        bob.event().await;
    }

    let path = format!("/ws/1?since={seen}&epoch={epoch}");
    let mut back = V1::connect(&two, &path).await;
    let (welcome, missed, _) = back.joined(5).await;
    assert!(welcome.recovered, "{welcome:?}");
    assert_eq!(welcome.epoch, epoch);
    let offsets: Vec<u64> = missed.iter().map(|event| event.offset).collect();
    assert_eq!(offsets, [3, 4, 5, 6, 7], "every event after {seen}, once");
    assert_eq!(
        kinds(&missed),
        [
            (
                "1".into(),
                EventKind::said("did this go through?", Some("n-7".into()))
            ),
            ("1".into(), EventKind::leave()),
            ("2".into(), said("meanwhile 0")),
            ("2".into(), said("meanwhile 1")),
            ("2".into(), said("meanwhile 2")),
        ]
    );
}

/// After a Redis outage, a client resumes with `recovered: true` if Redis came back
/// with its data, and learns of the lost history (a new epoch, `recovered: false`) if
/// it came back empty.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn after_a_redis_restart_clients_resume_from_what_redis_kept() {
    for kept in [true, false] {
        let folder = Scratch::new("cluster-redis");
        let mut redis = if kept {
            Redis::durable(folder).await
        } else {
            Redis::start().await
        };
        let (one, two) = redis.two_nodes().await;
        let mut alice = V1::connect(&one, "/ws/1").await;
        let (before, _, _) = alice.joined(0).await;
        let mut bob = V1::connect(&two, "/ws/2").await;
        bob.joined(1).await;
        bob.say("before the outage", None).await;
        alice.event().await;
        let said = alice.event().await;
        assert_eq!(said.kind, testkit::v1::said("before the outage"));

        redis.stop().await;
        closed_for_the_outage([&mut alice.socket, &mut bob.socket]).await;
        redis.restart().await;
        wait_for_health(one.address, 200).await;
        wait_for_health(two.address, 200).await;

        let path = format!("/ws/1?since={}&epoch={}", said.offset, before.epoch);
        let mut back = V1::connect(&two, &path).await;
        let welcome = back.welcome().await;
        assert_eq!(welcome.recovered, kept, "{welcome:?}");
        assert_eq!(welcome.epoch == before.epoch, kept, "{welcome:?}");
        assert!(welcome.members.is_empty(), "both were closed: {welcome:?}");
        let replayed = back.replay_until_own_join(&welcome).await;
        if kept {
            // What happened after: the nodes announced the leaves of the members they
            // closed, once each.
            let mut left: Vec<String> = replayed.iter().map(|event| event.id.clone()).collect();
            left.sort();
            assert_eq!(left, ["1", "2"], "{replayed:?}");
            assert!(
                replayed
                    .iter()
                    .all(|event| event.kind == EventKind::leave())
            );
            assert_eq!(replayed[0].offset, said.offset + 1);
        } else {
            assert_eq!(
                welcome.offset, 0,
                "Redis has nothing of the room: {replayed:?}"
            );
        }
    }
}

/// haproxy in front of two nodes, with `contrib/haproxy.cfg` on free ports. It balances
/// with `first` instead of the file's `leastconn`, so that every client is known to be
/// on the first node when the test kills it.
struct Haproxy {
    port: u16,
    _process: Child,
    _folder: Scratch,
}

impl Haproxy {
    async fn start(one: SocketAddr, two: SocketAddr) -> Self {
        let port = free_port();
        let config = std::fs::read_to_string(testkit::repository().join("contrib/haproxy.cfg"))
            .expect("contrib/haproxy.cfg")
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:8001", &one.to_string())
            .replace("127.0.0.1:8002", &two.to_string())
            .replace("balance leastconn", "balance first");
        let folder = Scratch::new("haproxy");
        let path = folder.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write the haproxy config");
        let process = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy is installed (apt-get install haproxy)");
        wait_until_listening(port, "haproxy").await;
        Self {
            port,
            _process: process,
            _folder: folder,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// What a v1 client heard until its connection was cut.
async fn events_until_cut(client: &mut V1) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(PATIENCE, client.socket.socket.next()).await
    {
        if let Ok(ServerFrame::Event(event)) = ServerFrame::parse(&text) {
            events.push(event);
        }
    }
    events
}

/// The texts of the messages from `id` among `events`.
fn texts_from(id: &str, events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.id == id)
        .filter_map(|event| match &event.kind {
            EventKind::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Kills the node that every client reached through haproxy is on, while another
/// client sends: each client comes back through haproxy on the other node, and the v1
/// ones (a test client, chat-tui, the page) show every message once, in order; a plain
/// client reconnects too, without history. The dead node's members are announced as
/// gone.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server, haproxy and chromium; .ci/run runs it"]
async fn killing_a_node_behind_haproxy_moves_its_clients_and_loses_nothing() {
    const SENT: usize = 40;
    let redis = Redis::start().await;
    let redis_url = redis.url();
    let args = Redis::process_args(&redis_url);
    let mut one = ServerProcess::start(&args).await;
    let two = ServerProcess::start(&args).await;
    let proxy = Haproxy::start(one.address, two.address).await;
    let through = |path: &str| format!("ws://{}{path}", proxy.address());

    let mut v1 = V1::connect_url(&through("/ws/41")).await;
    let welcome = v1.seated().await;
    // A scratch XDG_STATE_HOME and XDG_CONFIG_HOME: nothing read from or written to
    // the user's home.
    let home = std::env::temp_dir().join(format!("chat-tui-home-{}", std::process::id()));
    let home = home.to_str().expect("a UTF-8 path");
    let mut tui = Terminal::start(
        &chat_tui_binary(),
        &["--server", &through(""), "--id", "42"],
        &[("XDG_STATE_HOME", home), ("XDG_CONFIG_HOME", home)],
        (100, 100),
    );
    tui.wait_for("● connected · id 42").await;
    let driver = ChromeDriver::start().await;
    let page = driver.open(900, 900).await;
    page.goto(&format!("http://{}/", proxy.address()))
        .await
        .expect("open the page through haproxy");
    let page_id = client_id(&page).await;
    wait_for_message(&page, &format!("Client #{page_id} has entered the chat")).await;
    let (plain, _) = tokio_tungstenite::connect_async(through("/ws/43"))
        .await
        .expect("a plain client through haproxy");
    let mut plain = Client { socket: plain };
    assert_eq!(plain.recv().await, "Client #43 has entered the chat");
    assert_eq!(
        testkit::metric(one.address, "chat_connections").await,
        4,
        "haproxy sent every client to the first node"
    );

    let mut sender = V1::connect_url(&two.url("/ws/7")).await;
    sender.seated().await;
    let sending = tokio::spawn(async move {
        for n in 0..SENT {
            sender.say(&format!("failover {n:02}"), None).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sender
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    one.kill().await;
    // Typed while chat-tui is cut off: sent once it is back.
    tui.type_keys("typed during the failover\r");
    let mut sender = sending.await.expect("the sender");

    // The v1 test client resumes through haproxy from the last event it saw.
    let mut heard = events_until_cut(&mut v1).await;
    let last = heard
        .last()
        .map_or(welcome.offset + 1, |event| event.offset);
    let path = format!("/ws/41?since={last}&epoch={}", welcome.epoch);
    let mut back = V1::connect_url(&through(&path)).await;
    let resumed = back.welcome().await;
    assert!(resumed.recovered, "{resumed:?}");
    let expected: Vec<String> = (0..SENT).map(|n| format!("failover {n:02}")).collect();
    while texts_from("7", &heard) != expected || texts_from("42", &heard).is_empty() {
        let Ok(event) = tokio::time::timeout(PATIENCE / 2, back.event()).await else {
            panic!(
                "not everything came: {heard:?}\nchat-tui shows\n{}",
                tui.contents()
            );
        };
        heard.push(event);
        assert!(
            texts_from("7", &heard).len() <= SENT,
            "a message twice: {heard:?}"
        );
    }
    let offsets: Vec<u64> = heard.iter().map(|event| event.offset).collect();
    assert!(
        offsets.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "every offset once, in order: {offsets:?}"
    );
    assert_eq!(texts_from("42", &heard), ["typed during the failover"]);

    // chat-tui and the page show each message once.
    tui.wait_for("failover 39").await;
    let screen = tui.contents();
    for text in expected
        .iter()
        .map(String::as_str)
        .chain(["typed during the failover"])
    {
        assert_eq!(screen.matches(text).count(), 1, "{text:?} on\n{screen}");
    }
    wait_until(&page, "the last message", |shown| {
        shown.iter().any(|shown| shown.ends_with("failover 39"))
    })
    .await;
    let shown = messages(&page).await;
    for text in expected
        .iter()
        .map(String::as_str)
        .chain(["typed during the failover"])
    {
        let times = shown.iter().filter(|shown| shown.ends_with(text)).count();
        assert_eq!(times, 1, "{text:?} in {shown:?}");
    }
    page.close().await.expect("close the page");

    // The plain client is cut off too (haproxy resets its connection), and comes back
    // as a newcomer.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, plain.socket.next()).await {}
    let (plain, _) = tokio_tungstenite::connect_async(through("/ws/43"))
        .await
        .expect("the plain client reconnects through haproxy");
    let mut plain = Client { socket: plain };
    assert_eq!(plain.recv().await, "Client #43 has entered the chat");

    // The survivor announces that the dead node's members left, once each.
    let mut left = Vec::new();
    while left.len() < 4 {
        let event = sender.event().await;
        if event.kind == EventKind::leave() {
            left.push(event.id);
        }
    }
    left.sort();
    let mut members = vec!["41".to_owned(), "42".to_owned(), "43".to_owned(), page_id];
    members.sort();
    assert_eq!(left, members);
}
