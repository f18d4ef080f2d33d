//! Interest-based delivery (issue 33): rooms spread over partition streams in Redis, and
//! each node reading only the partitions of the rooms it has members in, while a room's
//! members on several nodes still see one order, and resume on any node; and the same
//! on a real Redis Cluster of three primaries and three replicas.
//!
//! Ignored by a bare `cargo test`, which needs no Redis; `.ci/run` installs Debian's
//! `redis-server` and runs these with `--include-ignored`. Each test starts its own Redis
//! on a free port.

use std::net::SocketAddr;
use std::time::Duration;

use chat::v1::{Event, EventKind, Request, ServerFrame, Welcome};
use chat_server::Config;
use futures_util::{SinkExt, StreamExt};
use testkit::process::ServerProcess;
use testkit::redis::{Redis, RedisCluster, RedisSentinel};
use testkit::v1::{V1, said};
use testkit::{TestServer, metric_until, wait_for_health};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The partition the server puts `room` in, of `partitions` (FNV-1a of its name, as
/// `broker::keys::partition_of`; direct-message rooms all go to partition 0).
fn partition_of(room: &str, partitions: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % partitions
}

/// Two room names in two different partitions of 16, neither the direct-message one.
fn rooms_apart() -> (String, String) {
    let names: Vec<String> = (0..64).map(|n| format!("room{n}")).collect();
    let busy = names
        .iter()
        .find(|name| partition_of(name, 16) != 0)
        .unwrap()
        .clone();
    let quiet = names
        .iter()
        .find(|name| ![0, partition_of(&busy, 16)].contains(&partition_of(name, 16)))
        .unwrap()
        .clone();
    (busy, quiet)
}

const READ: &str = "chat_broker_read_total";
const PARTITIONS: &str = "chat_broker_partitions";

/// `client` says `count` messages `<prefix> n` and reads each back.
async fn say_and_see(client: &mut V1, prefix: &str, count: usize) {
    for n in 0..count {
        client.say(&format!("{prefix} {n}"), None).await;
        let event = client.event().await;
        assert_eq!(event.kind, said(&format!("{prefix} {n}")));
    }
}

async fn read_total(node: &TestServer) -> u64 {
    node.metric(READ).await
}

/// A node with nobody in a busy room reads nothing of its partition: none while it has
/// no members at all, only its own room's few events once it has a member in a room of
/// another partition, and nothing again once its last member has left. Counted by
/// `chat_broker_read_total`, every entry a node reads from Redis whatever its room: a
/// node reading every partition (the design before) counts the busy room's hundreds.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_node_reads_only_the_partitions_of_rooms_it_has_members_in() {
    let redis = Redis::start().await;
    let (one, two) = redis.two_nodes().await;
    let (busy, quiet) = rooms_apart();
    let mut alice = V1::connect(&one, &format!("/ws/1?room={busy}")).await;
    alice.joined(0).await;
    assert_eq!(
        one.metric(PARTITIONS).await,
        2,
        "busy's, and direct messages'"
    );
    say_and_see(&mut alice, "busy", 100).await;
    assert_eq!(two.metric(PARTITIONS).await, 0);
    assert_eq!(read_total(&two).await, 0, "no member: nothing read");

    let mut carol = V1::connect(&two, &format!("/ws/3?room={quiet}")).await;
    carol.joined(0).await;
    assert_eq!(
        two.metric(PARTITIONS).await,
        2,
        "quiet's, and direct messages'"
    );
    let before = read_total(&two).await;
    say_and_see(&mut alice, "busy again", 100).await;
    // Once carol's own message is back, node two has read everything before it in
    // quiet's partition.
    say_and_see(&mut carol, "quiet", 1).await;
    let read = read_total(&two).await - before;
    assert!(read <= 3, "node two read {read} entries, busy's among them");

    // Carol leaves: at its next heartbeat node two stops reading.
    carol.socket.close().await;
    metric_until(two.address, PARTITIONS, |partitions| partitions == 0).await;
    let before = read_total(&two).await;
    say_and_see(&mut alice, "busy, alone", 50).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read_total(&two).await,
        before,
        "nothing read once nobody is left"
    );
}

/// A member who joins a busy room on a node that does not read its partition yet gets
/// the room's history up to its welcome, then every event after it, once, in the order
/// the room's node one sees: the snapshot and the start of the partition's reading are
/// taken together. Its welcome is followed by a dense run of offsets while another node
/// keeps talking, and a client dropped there resumes on the first node with exactly
/// what it missed.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_member_joining_mid_traffic_on_another_node_sees_one_order_and_resumes() {
    const MESSAGES: usize = 300;
    let redis = Redis::start().await;
    let (one, two) = redis.two_nodes().await;
    let (busy, _) = rooms_apart();
    let mut alice = V1::connect(&one, &format!("/ws/1?room={busy}")).await;
    alice.joined(0).await;
    // Alice talks while Dave joins on node two, which does not read busy's partition.
    let talking = tokio::spawn(async move {
        let mut seen = Vec::new();
        for n in 0..MESSAGES {
            alice.say(&format!("m {n}"), None).await;
            loop {
                let event = alice.event().await;
                let done = event.kind == said(&format!("m {n}"));
                seen.push(event);
                if done {
                    break;
                }
            }
            // Paced, so that Dave joins mid-traffic however fast the build: a release
            // build said all 300 before he joined, and he waited for a last message
            // that was already in his history.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (alice, seen)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut dave = V1::connect(&two, &format!("/ws/4?room={busy}")).await;
    let welcome: Welcome = dave.seated().await;
    let joined_at = welcome.offset + 1;
    let mut daves = Vec::new();
    loop {
        let event = dave.event().await;
        let last = event.kind == said(&format!("m {}", MESSAGES - 1));
        daves.push(event);
        if last {
            break;
        }
    }
    let (mut alice, alices) = talking.await.expect("alice talked");
    // Offsets after dave's join, dense, and the same events alice saw.
    let offsets: Vec<u64> = daves.iter().map(|event| event.offset).collect();
    let dense: Vec<u64> = (joined_at + 1..joined_at + 1 + daves.len() as u64).collect();
    assert_eq!(
        offsets, dense,
        "after the join at {joined_at}: every event once"
    );
    let alices_after: Vec<_> = alices
        .into_iter()
        .filter(|event| event.offset > joined_at)
        .collect();
    assert_eq!(daves, alices_after, "one order on both nodes");

    // Dave's connection drops; he resumes on node one with what he missed.
    let seen = daves.last().unwrap().offset;
    drop(dave);
    assert_eq!(alice.event().await.kind, EventKind::leave());
    say_and_see(&mut alice, "while away", 2).await;
    let path = format!("/ws/4?room={busy}&since={seen}&epoch={}", welcome.epoch);
    let mut back = V1::connect(&one, &path).await;
    let (resumed, missed, _) = back.joined(3).await;
    assert!(resumed.recovered, "{resumed:?}");
    let kinds: Vec<_> = missed.iter().map(|event| event.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::leave(),
            said("while away 0"),
            said("while away 1")
        ]
    );
}

/// Nodes must agree on the partitions, or a room would have two sets of keys: a node
/// started with another `--redis-partitions` stays unhealthy.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_node_with_another_partition_count_stays_down() {
    let redis = Redis::start().await;
    let _first = redis.node().await;
    let other = TestServer::start_with(Config {
        redis_partitions: 4,
        ..redis.node_config()
    })
    .await;
    // Long enough for several attempts to connect (the first after about 100 ms): a
    // node that did not check would be healthy by then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_for_health(other.address, 503).await;
    let agreeing = redis.node().await;
    wait_for_health(agreeing.address, 200).await;
}

/// One room of each of the 16 partitions.
fn a_room_per_partition() -> Vec<String> {
    (0..16)
        .map(|partition| {
            (0..)
                .map(|n| format!("spread{n}"))
                .find(|name| partition_of(name, 16) == partition)
                .unwrap()
        })
        .collect()
}

/// `redis+cluster://`: two nodes on a Redis Cluster of three primaries (and three
/// replicas), rooms in every partition, hence on every primary (counted by their keys
/// on each), each room's members on both nodes in one order, and a client resuming on
/// the other node with exactly what it missed.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn rooms_spread_over_every_primary_of_a_redis_cluster_and_resume_on_another_node() {
    let cluster = RedisCluster::start().await;
    let (one, two) = (cluster.node().await, cluster.node().await);
    let rooms = a_room_per_partition();
    let (mut speakers, mut listeners) = (Vec::new(), Vec::new());
    for (n, room) in rooms.iter().enumerate() {
        let mut ada = V1::connect(&one, &format!("/ws/{}?room={room}", 100 + n)).await;
        ada.joined(0).await;
        let mut bob = V1::connect(&two, &format!("/ws/{}?room={room}", 200 + n)).await;
        bob.joined(1).await;
        assert_eq!(ada.event().await.kind, EventKind::join());
        ada.say(&format!("in {room}"), None).await;
        bob.say(&format!("back in {room}"), None).await;
        let adas = [ada.event().await, ada.event().await];
        let bobs = [bob.event().await, bob.event().await];
        assert_eq!(adas, bobs, "one order in {room} on both nodes");
        speakers.push(ada);
        listeners.push(bob);
    }
    // Every room at once from node one: its pipelines mix partitions, which a Redis
    // Cluster takes only split by slot.
    let talking: Vec<_> = speakers
        .into_iter()
        .map(|mut ada| {
            tokio::spawn(async move {
                for n in 0..30 {
                    ada.say(&format!("burst {n}"), None).await;
                }
                for n in 0..30 {
                    assert_eq!(ada.event().await.kind, said(&format!("burst {n}")));
                }
            })
        })
        .collect();
    for speaker in talking {
        speaker.await.expect("every burst came back, in order");
    }
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    for port in primaries {
        let keys = RedisCluster::cli(port, &["keys", "chat:*:room:*:history"]).await;
        assert!(
            keys.lines().count() >= 1,
            "the primary on {port} holds no room: {keys:?}"
        );
    }

    // A client on node one drops and resumes on node two.
    let room = &rooms[5];
    let mut carol = V1::connect(&one, &format!("/ws/7?room={room}")).await;
    let welcome = carol.seated().await;
    carol.say("before the drop", None).await;
    let seen = carol.event().await.offset;
    drop(carol);
    let mut dave = V1::connect(&two, &format!("/ws/8?room={room}")).await;
    dave.seated().await;
    dave.say("while carol is away", None).await;
    let path = format!("/ws/7?room={room}&since={seen}&epoch={}", welcome.epoch);
    let mut back = V1::connect(&two, &path).await;
    let resumed = back.welcome().await;
    assert!(resumed.recovered, "{resumed:?}");
    let mut missed = Vec::new();
    loop {
        let event = back.event().await;
        let own_join = event.id == "7" && event.kind == EventKind::join();
        missed.push((event.id.clone(), event.kind.clone()));
        if own_join {
            break;
        }
    }
    let offsets_dense = missed.len() as u64 == resumed.offset - seen + 1;
    assert!(
        offsets_dense,
        "{missed:?} after {seen} up to {}",
        resumed.offset
    );
    assert!(
        missed.contains(&("8".into(), said("while carol is away"))),
        "{missed:?}"
    );
    assert!(
        missed.contains(&("7".into(), EventKind::leave())),
        "{missed:?}"
    );
}

/// Reads `client`'s events until its node closes it; answers them and the close code.
async fn events_until_closed(client: &mut V1) -> (Vec<Event>, Option<CloseCode>) {
    let (frame, texts) = client.socket.recv_until_close().await;
    let events = texts
        .iter()
        .map(|text| match ServerFrame::parse(text) {
            Ok(ServerFrame::Event(event)) => event,
            other => panic!("expected an event, got {other:?}"),
        })
        .collect();
    (events, frame.map(|frame| frame.code))
}

/// Has `client` say `load <n>` every 5 ms, reading as it goes, until its node closes
/// it; answers what it read and the close code.
fn talk_until_closed(mut client: V1) -> JoinHandle<(Vec<Event>, Option<CloseCode>)> {
    tokio::spawn(async move {
        let mut heard = Vec::new();
        let mut every = tokio::time::interval(Duration::from_millis(5));
        for n in 0.. {
            tokio::select! {
                frame = client.socket.socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => match ServerFrame::parse(&text) {
                        Ok(ServerFrame::Event(event)) => heard.push(event),
                        other => panic!("expected an event, got {other:?}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return (heard, frame.map(|frame| frame.code));
                    }
                    Some(Ok(_)) => {}
                    other => panic!("expected a close frame, got {other:?}"),
                },
                _ = every.tick() => {
                    let request = Request::Message { text: format!("load {n}"), nonce: None };
                    // Once the node has closed, its close frame is what is read next.
                    let _ = client.socket.socket.send(Message::text(request.to_json())).await;
                }
            }
        }
        unreachable!("talked forever")
    })
}

/// Each event once, offsets one after another.
fn assert_dense(events: &[Event]) {
    for pair in events.windows(2) {
        assert_eq!(pair[1].offset, pair[0].offset + 1, "{pair:?}");
    }
}

/// The welcome and what the client is replayed up to its own join.
async fn welcome_and_replay(client: &mut V1) -> (Welcome, Vec<Event>) {
    let welcome = client.welcome().await;
    let mut replayed = Vec::new();
    loop {
        let event = client.event().await;
        if event.offset == welcome.offset + 1 {
            assert_eq!(
                (event.id.as_str(), &event.kind),
                (welcome.id.as_str(), &EventKind::join())
            );
            return (welcome, replayed);
        }
        replayed.push(event);
    }
}

/// Client `id` resumes on `node` in `room` from the last of `seen`, under `epoch`,
/// after a failover: a new epoch, `recovered: false`, and the history the promoted
/// replica holds, with `settled` at their offsets.
async fn resumes_in_a_new_epoch(
    node: &TestServer,
    id: &str,
    room: &str,
    epoch: &str,
    seen: &[Event],
    settled: &[Event],
) -> (V1, Welcome) {
    let last = seen.last().expect("events seen").offset;
    let path = format!("/ws/{id}?room={room}&since={last}&epoch={epoch}");
    let mut client = V1::connect(node, &path).await;
    let (welcome, replayed) = welcome_and_replay(&mut client).await;
    assert!(!welcome.recovered, "{welcome:?}");
    assert_ne!(welcome.epoch, epoch, "a new epoch: {welcome:?}");
    for event in settled {
        let kept = replayed.iter().find(|kept| kept.offset == event.offset);
        assert_eq!(kept, Some(event), "kept by the replica");
    }
    (client, welcome)
}

/// Waits until `until` (up to 20 s: a failover takes the cluster's node timeout, 2 s,
/// and the nodes' backoff up to 5 s more), failing with `what`.
async fn patiently(what: &str, until: impl AsyncFn() -> bool) {
    let waited = async {
        while !until().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), waited)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}");
    }
}

/// A room (outside partition 0) and the primary it is on, which is neither the nodes'
/// seed (they find the cluster again through it once that primary is killed) nor
/// partition 0's (which every node with members reads), and a room on another primary.
async fn rooms_to_fail_over(cluster: &RedisCluster) -> ((String, u16), String) {
    let seed = cluster.ports[0];
    let direct = cluster.primary_of("chat:{p0}:events").await;
    let mut on_primaries = Vec::new();
    for room in a_room_per_partition().into_iter().skip(1) {
        let stream = format!("chat:{{p{}}}:events", partition_of(&room, 16));
        on_primaries.push((room, cluster.primary_of(&stream).await));
    }
    let (room, victim) = on_primaries
        .iter()
        .find(|(_, port)| *port != seed && *port != direct)
        .cloned()
        .expect("a room away from the seed and partition 0");
    let (calm, _) = on_primaries
        .iter()
        .find(|(_, port)| *port != victim)
        .cloned()
        .expect("a room on another primary");
    ((room, victim), calm)
}

/// The first event that says `text`, skipping those before it.
async fn until_said(client: &mut V1, text: &str) -> Event {
    loop {
        let event = client.event().await;
        if event.kind == said(text) {
            return event;
        }
    }
}

/// Until the replica of the primary killed on port `killed` serves its slots.
async fn promoted(cluster: &RedisCluster, killed: u16) {
    patiently("the replica promoted", async || {
        let primaries = cluster.primaries().await;
        primaries.len() == 3 && !primaries.contains(&killed)
    })
    .await;
}

/// Until the node at `address` is connected again.
async fn healthy_again(address: SocketAddr) {
    patiently("the node healthy again", async || {
        testkit::process::health(address).await == Some(200)
    })
    .await;
}

/// A primary of the Redis Cluster killed while a room on it is busy: its replica takes
/// over (after the cluster's node timeout, 2 s here), and the nodes, which closed their
/// clients with 1013 meanwhile, carry on. Until the close, both members saw one order,
/// each offset once. Replication is asynchronous, so what the dead primary numbered
/// last may be lost: the room's clients, resuming on the other node, get a new epoch
/// (`recovered: false`) and the history as the promoted replica has it, which still
/// holds, at their offsets, the events said well before the kill. A room on a primary
/// that lived resumes with `recovered: true`, its epoch unchanged; and both rooms chat
/// on in one order. A third node, whose members are only in a room on a primary that
/// lived, keeps them connected throughout: no key it refreshes or looks at is on the
/// dead primary.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_primary_killed_under_load_fails_over_and_clients_learn_the_new_epoch() {
    let mut cluster = RedisCluster::start().await;
    let (one, two) = (cluster.node().await, cluster.node().await);
    let ((room, victim), calm) = rooms_to_fail_over(&cluster).await;
    // With the default presence TTL, which outlasts the cluster's failover (2 s here):
    // the cluster's client stops every command while it learns the new topology.
    let three = TestServer::start_with(Config {
        presence_ttl: Config::default().presence_ttl,
        ..cluster.node_config()
    })
    .await;
    healthy_again(three.address).await;
    let mut erin = V1::connect(&three, &format!("/ws/5?room={calm}")).await;
    erin.seated().await;

    let mut carol = V1::connect(&one, &format!("/ws/3?room={calm}")).await;
    let calm_welcome = carol.seated().await;
    let mut dave = V1::connect(&two, &format!("/ws/4?room={calm}")).await;
    dave.seated().await;
    assert_eq!(carol.event().await.kind, EventKind::join());
    carol.say("calm", None).await;
    let calm_seen = carol.event().await;
    assert_eq!(dave.event().await, calm_seen);
    let erin_saw = [erin.event().await, erin.event().await, erin.event().await];
    assert_eq!(erin_saw[2], calm_seen);

    let mut ada = V1::connect(&one, &format!("/ws/1?room={room}")).await;
    let welcome = ada.seated().await;
    let mut bob = V1::connect(&two, &format!("/ws/2?room={room}")).await;
    bob.seated().await;
    assert_eq!(ada.event().await.kind, EventKind::join());
    let mut settled = Vec::new();
    for n in 0..20 {
        ada.say(&format!("before {n}"), None).await;
        let event = ada.event().await;
        assert_eq!(event.kind, said(&format!("before {n}")));
        assert_eq!(bob.event().await, event);
        settled.push(event);
    }
    // Long enough for the replica to have all that.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Ada talks every 5 ms until her node closes her; the primary dies meanwhile.
    let talker = talk_until_closed(ada);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(victim).await;

    let (bobs, code) = events_until_closed(&mut bob).await;
    assert_eq!(code, Some(CloseCode::Again), "1013: try again later");
    let (adas, code) = talker.await.expect("ada talked");
    assert_eq!(code, Some(CloseCode::Again), "1013: try again later");
    for (client, name) in [(&mut carol, "carol"), (&mut dave, "dave")] {
        let (_, code) = events_until_closed(client).await;
        assert_eq!(code, Some(CloseCode::Again), "{name}: 1013");
    }
    assert!(
        bobs.iter()
            .filter(|event| event.kind != EventKind::leave())
            .count()
            > 10,
        "messages were flowing when the primary died: {bobs:?}"
    );
    // One order up to the close: each offset once, the same event on both nodes.
    let (adas, bobs) = (
        [settled.clone(), adas].concat(),
        [settled.clone(), bobs].concat(),
    );
    assert_dense(&adas);
    assert_dense(&bobs);
    let common = adas.len().min(bobs.len());
    assert_eq!(adas[..common], bobs[..common], "one order on both nodes");

    promoted(&cluster, victim).await;
    for node in [&one, &two] {
        healthy_again(node.address).await;
    }
    // Erin was never closed: she hears carol and dave leave (their nodes closed them),
    // and her own word comes back, in the room's epoch.
    erin.say("still here", None).await;
    loop {
        let event = erin.event().await;
        if event.kind == said("still here") {
            assert_eq!(event.id, "5");
            break;
        }
        assert_eq!(event.kind, EventKind::leave(), "{event:?}");
    }
    assert_eq!(testkit::process::health(three.address).await, Some(200));

    // Each resumes on the other node, from the last event it saw: a new epoch, and the
    // history as the promoted replica has it, the settled events at their offsets.
    let (mut ada, new_epoch) =
        resumes_in_a_new_epoch(&two, "1", &room, &welcome.epoch, &adas, &settled).await;
    let (mut bob, _) =
        resumes_in_a_new_epoch(&one, "2", &room, &welcome.epoch, &bobs, &settled).await;
    ada.say("after the failover", None).await;
    let heard = [
        until_said(&mut ada, "after the failover").await,
        until_said(&mut bob, "after the failover").await,
    ];
    assert_eq!(heard[0], heard[1], "one order after the failover");
    assert!(heard[0].offset > new_epoch.offset);

    // The room on a primary that lived resumes as after any outage.
    let path = format!(
        "/ws/3?room={calm}&since={}&epoch={}",
        calm_seen.offset, calm_welcome.epoch
    );
    let mut carol = V1::connect(&two, &path).await;
    let (again, missed) = welcome_and_replay(&mut carol).await;
    assert!(again.recovered, "{again:?}");
    assert_eq!(again.epoch, calm_welcome.epoch);
    assert!(
        missed
            .iter()
            .all(|event| event.kind == EventKind::leave() || event.kind == said("still here")),
        "{missed:?}"
    );
}

/// Presence survives a failover: each node's members are a hash per partition, on the
/// partition's primary, so once a replica has taken over, a node killed there is still
/// reaped by a survivor, which announces its member's leave.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn after_a_failover_a_killed_nodes_members_are_announced_gone() {
    let mut cluster = RedisCluster::start().await;
    let survivor = cluster.node().await;
    let url = cluster.url();
    let mut doomed = ServerProcess::start(&Redis::process_args(&url)).await;
    let ((room, victim), _) = rooms_to_fail_over(&cluster).await;
    let path = format!("/ws/2?room={room}");
    let mut before = V1::connect_url(&doomed.url(&path)).await;
    before.seated().await;

    cluster.kill(victim).await;
    let (_, code) = events_until_closed(&mut before).await;
    assert_eq!(code, Some(CloseCode::Again), "1013: try again later");
    promoted(&cluster, victim).await;
    healthy_again(survivor.address).await;
    healthy_again(doomed.address).await;

    let mut watcher = V1::connect(&survivor, &format!("/ws/1?room={room}")).await;
    watcher.seated().await;
    let mut member = V1::connect_url(&doomed.url(&path)).await;
    member.seated().await;
    let joined = watcher.event().await;
    assert_eq!((joined.id.as_str(), joined.kind), ("2", EventKind::join()));

    // SIGKILL: no leave is sent by the node itself.
    doomed.kill().await;
    let left = watcher.event().await;
    assert_eq!((left.id.as_str(), left.kind), ("2", EventKind::leave()));
    assert_eq!(left.offset, joined.offset + 1);
}

/// `redis+sentinel://`: one Redis with a replica and three sentinels. The primary
/// killed while a room is busy: Sentinel promotes the replica (after 1 s without an
/// answer here), the nodes, which closed their clients with 1013, find it through the
/// sentinels, and clients resuming on the other node get a new epoch, with the history
/// the replica holds.
#[tokio::test]
#[ignore = "needs redis-server and redis-sentinel; .ci/run runs it"]
async fn a_primary_behind_sentinel_fails_over_and_clients_learn_the_new_epoch() {
    let mut redis = RedisSentinel::start().await;
    let (one, two) = (redis.node().await, redis.node().await);
    let mut ada = V1::connect(&one, "/ws/1").await;
    let welcome = ada.seated().await;
    let mut bob = V1::connect(&two, "/ws/2").await;
    bob.seated().await;
    assert_eq!(ada.event().await.kind, EventKind::join());
    let mut settled = Vec::new();
    for n in 0..10 {
        ada.say(&format!("before {n}"), None).await;
        let event = ada.event().await;
        assert_eq!(bob.event().await, event);
        settled.push(event);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let talker = talk_until_closed(ada);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let [primary, replica] = redis.ports;
    redis.kill_primary().await;
    let (bobs, code) = events_until_closed(&mut bob).await;
    assert_eq!(code, Some(CloseCode::Again), "1013: try again later");
    let (adas, code) = talker.await.expect("ada talked");
    assert_eq!(code, Some(CloseCode::Again), "1013: try again later");
    let (adas, bobs) = (
        [settled.clone(), adas].concat(),
        [settled.clone(), bobs].concat(),
    );
    assert_dense(&adas);
    assert_dense(&bobs);
    let common = adas.len().min(bobs.len());
    assert_eq!(adas[..common], bobs[..common], "one order on both nodes");

    patiently("Sentinel to promote the replica", async || {
        redis.primary().await == Some(replica)
    })
    .await;
    assert_ne!(primary, replica);
    for node in [&one, &two] {
        healthy_again(node.address).await;
    }
    let (mut ada, _) =
        resumes_in_a_new_epoch(&two, "1", "main", &welcome.epoch, &adas, &settled).await;
    let (mut bob, _) =
        resumes_in_a_new_epoch(&one, "2", "main", &welcome.epoch, &bobs, &settled).await;
    ada.say("after the failover", None).await;
    let heard = [
        until_said(&mut ada, "after the failover").await,
        until_said(&mut bob, "after the failover").await,
    ];
    assert_eq!(heard[0], heard[1], "one order after the failover");
}

/// Reaping works per partition: the nodes that read a partition are listed in a
/// registry of its own, in its slot (no key names every node), and only they look
/// there for dead ones. A node killed with a member in a room nobody else reads is
/// not reaped by a node busy elsewhere; the first node to read that room's partition
/// reaps it before its snapshot, so that the newcomer's welcome does not list the
/// dead node's member and the history holds its leave.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_dead_nodes_members_are_reaped_by_the_first_node_to_read_their_partition() {
    let redis = Redis::start().await;
    let survivor = redis.node().await;
    let mut doomed = ServerProcess::start(&Redis::process_args(&redis.url())).await;
    let (elsewhere, room) = rooms_apart();
    let mut busy = V1::connect(&survivor, &format!("/ws/1?room={elsewhere}")).await;
    busy.seated().await;
    let mut victim = V1::connect_url(&doomed.url(&format!("/ws/2?room={room}"))).await;
    victim.seated().await;
    let partition = partition_of(&room, 16).to_string();
    let registry = format!("chat:{{p{partition}}}:nodes");
    let registered = RedisCluster::cli(redis.port, &["SCARD", &registry]).await;
    assert_eq!(
        registered.trim(),
        "1",
        "the doomed node, in its room's partition"
    );
    // Every key in a partition's slot but the partition count: a primary that fails
    // over concerns only the nodes that read its partitions.
    let keys = RedisCluster::cli(redis.port, &["KEYS", "chat:*"]).await;
    let outside: Vec<&str> = keys
        .lines()
        .filter(|key| !key.starts_with("chat:{p") && *key != "chat:partitions")
        .collect();
    assert!(
        outside.is_empty(),
        "keys outside any partition: {outside:?}"
    );

    // SIGKILL: no leave is sent by the node itself. The survivor heartbeats every
    // third of the 1 s TTL; 3 s is several of its rounds past the doomed node's expiry.
    doomed.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let present = format!("chat:{{p{partition}}}:room:{room}:present");
    let still = RedisCluster::cli(redis.port, &["HLEN", &present]).await;
    assert_eq!(
        still.trim(),
        "1",
        "not reaped by a node that does not read it"
    );

    let mut newcomer = V1::connect(&survivor, &format!("/ws/3?room={room}")).await;
    let welcome = newcomer.welcome().await;
    let members: Vec<&str> = welcome.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        members,
        Vec::<&str>::new(),
        "the dead node's member is gone"
    );
    let replayed = newcomer.replay_until_own_join(&welcome).await;
    let last = replayed.last().expect("the victim's join and leave");
    assert_eq!((last.id.as_str(), &last.kind), ("2", &EventKind::leave()));
    let registered = RedisCluster::cli(redis.port, &["SMEMBERS", &registry]).await;
    assert_eq!(
        registered.lines().count(),
        1,
        "only the survivor now: {registered}"
    );
}
