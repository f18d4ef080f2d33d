//! chat.v2.json across `chat-server` nodes sharing one room through a real Redis: the
//! operations live, on resume and in a newcomer's replay on another node (from that
//! node's memory and from a node that loads the room from Redis), a delete's text gone
//! from Redis, and typing and read positions reaching the other nodes.
//!
//! Ignored by a bare `cargo test`, which needs no Redis; `.ci/run` installs Debian's
//! `redis-server` and runs these with `--include-ignored`. Each test starts its own Redis
//! on a free port.

use serde_json::{Value, json};
use testkit::redis::Redis;
use testkit::v2::{V2, offset};
use tokio::process::Command;

/// `client`'s frames up to the first that `last` accepts, that one included.
async fn up_to(client: &mut V2, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.frame().await;
        let done = last(&frame);
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// The frame is the message `text`.
fn message(text: &str) -> impl Fn(&Value) -> bool + '_ {
    move |frame| frame["type"] == "message" && frame["text"] == text
}

/// The frame is an event (it has an offset) of type `kind`.
fn event(kind: &str) -> impl Fn(&Value) -> bool + '_ {
    move |frame| frame["type"] == kind && frame["offset"].is_u64()
}

/// The events among `frames` after offset `after`.
fn events_after(frames: &[Value], after: u64) -> Vec<Value> {
    frames
        .iter()
        .filter(|frame| frame["offset"].as_u64().is_some_and(|at| at > after))
        .cloned()
        .collect()
}

/// The event at `at` among `events`.
fn at(events: &[Value], at: u64) -> &Value {
    events
        .iter()
        .find(|event| event["offset"] == at)
        .unwrap_or_else(|| panic!("no event {at} in {events:?}"))
}

fn assert_dense(events: &[Value]) {
    for pair in events.windows(2) {
        assert_eq!(offset(&pair[1]), offset(&pair[0]) + 1, "dense: {pair:?}");
    }
}

/// Everything the Redis on `port` holds, every key with every value, as redis-cli
/// prints it.
async fn everything_in_redis(port: u16) -> String {
    let cli = async |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--no-raw"])
            .args(args)
            .output()
            .await
            .expect("redis-cli runs");
        assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("redis-cli prints UTF-8 escaped")
    };
    let keys = cli(&["--raw", "KEYS", "*"]).await;
    let mut everything = String::new();
    for key in keys.lines().filter(|key| !key.is_empty()) {
        let kind = cli(&["--raw", "TYPE", key]).await;
        let dump = match kind.trim() {
            "stream" => cli(&["XRANGE", key, "-", "+"]).await,
            "hash" => cli(&["HGETALL", key]).await,
            "set" => cli(&["SMEMBERS", key]).await,
            "zset" => cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]).await,
            "string" => cli(&["GET", key]).await,
            other => panic!("a key of type {other:?}: {key}"),
        };
        everything.push_str(&format!("{key}:\n{dump}\n"));
    }
    everything
}

/// The latest state in a replay of the message `typo` (edited, reacted to), the
/// message `secret` (edited, then deleted) and the edit of each.
fn assert_latest_state(replayed: &[Value], typo: u64, secret: u64) {
    let typo_now = at(replayed, typo);
    assert_eq!(
        (
            &typo_now["text"],
            &typo_now["edited"],
            &typo_now["reactions"]
        ),
        (
            &json!("typo"),
            &json!(true),
            &json!([{"emoji": "👍", "ids": ["7"]}])
        ),
        "{typo_now}"
    );
    assert_eq!(
        at(replayed, typo + 1)["text"],
        "typo",
        "its edit, as it was"
    );
    let tombstone = at(replayed, secret);
    assert_eq!(
        (
            &tombstone["type"],
            &tombstone["text"],
            &tombstone["deleted"]
        ),
        (&json!("message"), &json!(""), &json!(true)),
        "a tombstone: {tombstone}"
    );
    assert_eq!(tombstone["id"], "7");
    let edit = at(replayed, secret + 1);
    assert_eq!(
        (&edit["type"], &edit["target"], &edit["deleted"]),
        (&json!("edit"), &json!(secret), &json!(true)),
        "{edit}"
    );
    assert_eq!(edit["text"].as_str().unwrap_or(""), "", "{edit}");
    let delete = at(replayed, secret + 2);
    assert_eq!(
        (&delete["type"], &delete["target"]),
        (&json!("delete"), &json!(secret))
    );
    let everything = Value::from(replayed.to_vec()).to_string();
    assert!(!everything.contains("secret"), "{everything}");
}

/// A v2 client on node one messages, edits, deletes and reacts; a v2 client on node two
/// sees each event live as node one's client does, with the same offsets; a client
/// resuming on node two gets exactly what it missed; newcomers on node two and on a
/// third node that loads the room from Redis get the latest state; and Redis keeps no
/// trace of the deleted text.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn v2_operations_reach_the_other_node_live_on_resume_and_in_replays() {
    let redis = Redis::start().await;
    let (one, two) = redis.two_nodes().await;
    let mut ada = V2::connect(&one, "/ws/7?name=Ada").await;
    ada.seated().await;
    let mut bob = V2::connect(&two, "/ws/8").await;
    bob.seated().await;
    let mut cy = V2::connect(&two, "/ws/9").await;
    let (cy_welcome, _) = cy.seated().await;
    let epoch = cy_welcome["epoch"].as_str().expect("an epoch").to_owned();
    // The last event Cy saw: its own join. Its leave is the first it misses.
    let since = offset(&cy_welcome) + 1;
    drop(cy);

    // Each operation waits for its own event on node one, which checks it against the
    // room as delivered there.
    let mut seen_by_ada = up_to(&mut ada, event("leave")).await;
    ada.say("tpyo", Some("n1")).await;
    seen_by_ada.extend(up_to(&mut ada, message("tpyo")).await);
    let typo = offset(seen_by_ada.last().unwrap());
    ada.edit(typo, "typo", Some("n2")).await;
    seen_by_ada.extend(up_to(&mut ada, event("edit")).await);
    ada.react(typo, "👍", None).await;
    seen_by_ada.extend(up_to(&mut ada, event("react")).await);
    ada.say("secret", None).await;
    seen_by_ada.extend(up_to(&mut ada, message("secret")).await);
    let secret = offset(seen_by_ada.last().unwrap());
    ada.edit(secret, "secret two", None).await;
    seen_by_ada.extend(up_to(&mut ada, event("edit")).await);
    ada.delete(secret, Some("n3")).await;
    seen_by_ada.extend(up_to(&mut ada, event("delete")).await);
    ada.say("end", None).await;
    seen_by_ada.extend(up_to(&mut ada, message("end")).await);

    let live = events_after(&up_to(&mut bob, message("end")).await, since);
    assert_eq!(
        live,
        events_after(&seen_by_ada, since),
        "one log, the same offsets"
    );
    let kinds: Vec<&str> = live.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "leave", "message", "edit", "react", "message", "edit", "delete", "message"
        ],
        "{live:?}"
    );
    assert_dense(&live);
    assert_eq!(
        (&live[2]["target"], &live[2]["text"], &live[2]["nonce"]),
        (&json!(typo), &json!("typo"), &json!("n2"))
    );
    assert_eq!(
        (&live[3]["target"], &live[3]["emoji"], &live[3]["id"]),
        (&json!(typo), &json!("👍"), &json!("7"))
    );
    assert_eq!(
        (&live[6]["target"], &live[6]["nonce"]),
        (&json!(secret), &json!("n3"))
    );

    // Redis: the deleted message and its edit are gone from every stream and key.
    let everything = everything_in_redis(redis.port).await;
    assert!(!everything.contains("secret"), "{everything}");
    assert!(everything.contains("tpyo"), "the rest is still there");

    // Cy comes back on node two, from where it was: exactly what it missed, each
    // message in its latest state.
    let path = format!("/ws/9?since={since}&epoch={epoch}");
    let mut back = V2::connect(&two, &path).await;
    let (welcome, missed) = back.seated().await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let offsets = |events: &[Value]| events.iter().map(offset).collect::<Vec<_>>();
    assert_eq!(offsets(&missed), offsets(&live), "{missed:?}");
    for (missed, live) in missed.iter().zip(&live) {
        assert_eq!(
            (&missed["type"], &missed["id"]),
            (&live["type"], &live["id"])
        );
    }
    assert_latest_state(&missed, typo, secret);

    // A newcomer on node two, from its memory.
    let mut dan = V2::connect(&two, "/ws/10").await;
    let (_, on_two) = dan.seated().await;
    assert_dense(&on_two);
    assert_latest_state(&on_two, typo, secret);

    // A newcomer on a node that loads the room from Redis: the same replay, the purged
    // message and edit back in their places without their text.
    let three = redis.node().await;
    let mut eve = V2::connect(&three, "/ws/11").await;
    let (_, on_three) = eve.seated().await;
    assert_dense(&on_three);
    assert_latest_state(&on_three, typo, secret);
    let first = offset(&on_three[0]);
    let same_span: Vec<Value> = on_two
        .iter()
        .filter(|event| offset(event) >= first)
        .cloned()
        .collect();
    assert_eq!(
        on_three[..same_span.len()],
        same_span,
        "from Redis as from memory"
    );
}

/// Typing on node one reaches node two's other ids, not the typer's own; a read
/// position on node one reaches the same id's connection on node two, and is in later
/// welcomes on node two and on a node that loads the room from Redis.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn typing_and_read_positions_reach_the_other_nodes() {
    let redis = Redis::start().await;
    let (one, two) = redis.two_nodes().await;
    let mut ada = V2::connect(&one, "/ws/7?name=Ada").await;
    ada.seated().await;
    let mut ada_phone = V2::connect(&two, "/ws/7?name=Ada").await;
    ada_phone.seated().await;
    let mut bob = V2::connect(&two, "/ws/8").await;
    bob.seated().await;
    up_to(&mut ada, |frame| {
        frame["type"] == "join" && frame["id"] == "8"
    })
    .await;

    // Typing goes through Redis in order with the messages: before Ada's "done".
    ada.typing().await;
    ada.say("done", None).await;
    let seen = up_to(&mut bob, message("done")).await;
    let typing: Vec<&Value> = seen.iter().filter(|f| f["type"] == "typing").collect();
    assert_eq!(
        typing,
        [&json!({"type": "typing", "id": "7", "name": "Ada"})],
        "{seen:?}"
    );
    let own = up_to(&mut ada_phone, message("done")).await;
    assert!(own.iter().all(|f| f["type"] != "typing"), "{own:?}");
    let own = up_to(&mut ada, message("done")).await;
    assert!(own.iter().all(|f| f["type"] != "typing"), "{own:?}");

    bob.say("hi", None).await;
    let hi = offset(up_to(&mut ada, message("hi")).await.last().unwrap());
    ada.read(hi).await;
    let seen = up_to(&mut ada_phone, |frame| frame["type"] == "read").await;
    assert_eq!(seen.last().unwrap(), &json!({"type": "read", "offset": hi}));
    // Backwards: kept where it was, told to nobody.
    ada.read(hi - 1).await;
    ada.say("end", None).await;
    for client in [&mut ada, &mut ada_phone, &mut bob] {
        let seen = up_to(client, message("end")).await;
        assert!(seen.iter().all(|f| f["type"] != "read"), "{seen:?}");
    }

    let (welcome, _) = V2::connect(&two, "/ws/7").await.seated().await;
    assert_eq!(welcome["read"], hi, "node two heard it: {welcome}");
    let three = redis.node().await;
    let (welcome, _) = V2::connect(&three, "/ws/7").await.seated().await;
    assert_eq!(welcome["read"], hi, "Redis kept it: {welcome}");
    let (bobs, _) = V2::connect(&three, "/ws/8").await.seated().await;
    assert_eq!(bobs["read"], 0, "read positions are per id");
}

/// A direct message said on node one is told as a `dm` notice to the recipient on
/// node two, where nobody is in the room, and on node one, where it is loaded: once
/// each.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_direct_message_is_told_to_the_recipient_on_every_node() {
    let redis = Redis::start().await;
    let (one, two) = redis.two_nodes().await;
    let mut bob_there = V2::connect(&two, "/ws/8").await;
    bob_there.seated().await;
    let mut bob_here = V2::connect(&one, "/ws/8").await;
    bob_here.seated().await;
    let mut ada = V2::connect(&one, "/ws/7?room=dm.7.8").await;
    ada.seated().await;
    ada.say("psst", None).await;
    let psst = offset(&up_to(&mut ada, message("psst")).await.pop().unwrap());
    ada.say("end", None).await;
    // Back from Redis: what anyone says from now on comes after it, on every node.
    up_to(&mut ada, message("end")).await;
    for bob in [&mut bob_there, &mut bob_here] {
        bob.say("end", None).await;
        let seen = up_to(bob, message("end")).await;
        let notices: Vec<&Value> = seen.iter().filter(|f| f["type"] == "dm").collect();
        assert_eq!(notices.len(), 2, "{seen:?}");
        assert_eq!(
            (&notices[0]["room"], &notices[0]["with"], &notices[0]["at"]),
            (&json!("dm.7.8"), &json!("7"), &json!(psst)),
            "{seen:?}"
        );
        assert_eq!(notices[1]["at"], psst + 1, "{seen:?}");
    }
}

/// Pages back from `client`'s newest event to the first, 200 at a time; the offsets.
async fn page_back_to_the_start(client: &mut V2, newest: u64) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let mut before = newest + 1;
    for page in 0u64.. {
        let nonce = format!("p{page}");
        client
            .send(&json!({"type": "history", "before": before, "limit": 200, "nonce": nonce}))
            .await;
        let answer = client.error_or("history", &nonce).await;
        let offsets: Vec<u64> = answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(offset)
            .collect();
        if let Some(&first) = offsets.first() {
            assert_eq!(*offsets.last().unwrap(), before - 1, "no gap between pages");
            before = first;
        }
        seen.splice(0..0, offsets);
        if answer["more"] == false {
            return seen;
        }
    }
    unreachable!()
}

/// 50 000 events, far more than a node's memory holds, paged back on both nodes from
/// Redis's history of the room: every event once, in order, from the first; and a
/// deleted message's tombstone in its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn both_nodes_page_back_to_the_first_event_from_redis() {
    const MESSAGES: u64 = 50_000;
    let redis = Redis::start().await;
    // A flood of 50 000 in a debug build can hold a node's heartbeat back for more
    // than the 1 s of `node_config`; the default TTL is what a deployment has.
    let config = || chat_server::Config {
        history: 60_000,
        presence_ttl: chat_server::Config::default().presence_ttl,
        ..redis.node_config()
    };
    let one = redis.node_with(config()).await;
    let two = redis.node_with(config()).await;
    let mut ada = V2::connect(&one, "/ws/7").await;
    ada.seated().await;
    ada.say("a secret, first", None).await;
    let secret = offset(&ada.next_of("message").await);
    ada.delete(secret, None).await;
    ada.next_of("delete").await;
    for n in 0..MESSAGES {
        ada.say(&format!("m {n}"), None).await;
    }
    let last = format!("m {}", MESSAGES - 1);
    let newest = offset(
        &ada.next_matching_within(MESSAGES as usize + 10, |f| f["text"] == last.as_str())
            .await,
    );
    for node in [&one, &two] {
        let mut bob = V2::connect(node, "/ws/8").await;
        let (welcome, _) = bob.seated().await;
        let newest_here = offset(&welcome);
        assert!(newest_here >= newest);
        let seen = page_back_to_the_start(&mut bob, newest_here).await;
        assert_eq!(
            seen,
            (1..=newest_here).collect::<Vec<_>>(),
            "every event once, in order"
        );
        bob.send(&json!({"type": "history", "after": secret - 1, "limit": 1}))
            .await;
        let page = bob.next_of("history").await;
        assert_eq!(
            (&page["events"][0]["text"], &page["events"][0]["deleted"]),
            (&json!(""), &json!(true)),
            "{page}"
        );
    }
}
