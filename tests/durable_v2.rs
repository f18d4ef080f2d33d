//! Durable chat.v2.json (`--data-dir`) over real sockets: edits, deletes, reactions,
//! replies and read positions outlive a restart and a SIGKILL; the welcome's replay
//! shows each message's latest state to v2 clients, and nothing deleted to v1 ones;
//! `dms` lists a direct-message room the server has not loaded, with its unread count;
//! a deleted text is gone from the database's files; and the database of a
//! chat.v1.json server opens, keeps its rows, and takes v2 operations on them.

use std::path::Path;

use chat_server::Config;
use serde_json::{Value, json};
use testkit::TestServer;
use testkit::process::{Scratch, ServerProcess};
use testkit::v1::V1;
use testkit::v2::{Say, V2, offset};

/// A text that is deleted in the first run, and must never be seen again.
const SECRET: &str = "the code is 0451";
/// A text deleted just before the SIGKILL.
const LATE_SECRET: &str = "the new code is 7777";

/// Where each part of the story landed.
struct Story {
    first: u64,
    secret: u64,
    edit: u64,
    delete: u64,
    hi: u64,
    reply: u64,
    /// Ada's read position in `main`.
    read: u64,
    /// Ada's read position in `dm.7.8`, and the room's last offset as she saw it.
    dm_read: u64,
    dm_last: u64,
}

fn durable(folder: &Path) -> Config {
    Config {
        data_dir: Some(folder.to_owned()),
        rate_limit: None,
        ..Config::default()
    }
}

/// The next event of `kind` that `client` receives with `field` equal to `value`.
async fn next(client: &mut V2, kind: &str, field: &str, value: Value) -> Value {
    client
        .next_matching(&format!("a {kind} with {field} {value}"), |frame| {
            frame["type"] == kind && frame[field] == value
        })
        .await
}

/// Ada (7) and Bob (8), both on chat.v2.json, say, edit, delete, react, reply and read
/// in `main`, and Bob writes to Ada in `dm.7.8`; each step is awaited as it comes back,
/// so that it is written before the server stops.
async fn tell_the_story(base: &str) -> Story {
    let mut ada = V2::connect_url(&format!("{base}/ws/7?name=Ada")).await;
    ada.seated().await;
    let mut bob = V2::connect_url(&format!("{base}/ws/8?name=Bob")).await;
    bob.seated().await;
    next(&mut ada, "join", "id", json!("8")).await;

    ada.say("first", Some("n-first")).await;
    let first = offset(&next(&mut ada, "message", "text", json!("first")).await);
    ada.say(SECRET, Some("n-secret")).await;
    let secret = offset(&next(&mut ada, "message", "text", json!(SECRET)).await);
    bob.say("hi", None).await;
    let hi = offset(&next(&mut bob, "message", "text", json!("hi")).await);
    ada.edit(first, "first, fixed", Some("n-edit")).await;
    let edit = offset(&next(&mut ada, "edit", "target", json!(first)).await);
    ada.delete(secret, Some("n-delete")).await;
    let delete = offset(&next(&mut ada, "delete", "target", json!(secret)).await);
    // Bob's 👍 first, then Ada's: the aggregate lists them in that order.
    bob.react(first, "👍", None).await;
    next(&mut ada, "react", "id", json!("8")).await;
    ada.react(first, "👍", None).await;
    next(&mut ada, "react", "id", json!("7")).await;
    bob.react(first, "🎉", None).await;
    // Awaited like every step: with --data-dir an unreact checked before its react is
    // written is refused (a known race, in the note).
    next(&mut ada, "react", "emoji", json!("🎉")).await;
    bob.unreact(first, "🎉", None).await;
    next(&mut ada, "unreact", "id", json!("8")).await;
    bob.say_with(
        "agrees",
        Say {
            reply_to: Some(first),
            action: true,
            ..Say::default()
        },
    )
    .await;
    let reply = offset(&next(&mut ada, "message", "text", json!("agrees")).await);
    ada.read(reply).await;
    // Requests are handled in order: once this comes back, the read was saved.
    ada.say("read it", None).await;
    next(&mut ada, "message", "text", json!("read it")).await;

    let mut bob_dm = V2::connect_url(&format!("{base}/ws/8?room=dm.7.8")).await;
    bob_dm.seated().await;
    for text in ["psst 1", "psst 2", "psst 3"] {
        bob_dm.say(text, None).await;
    }
    let psst_1 = offset(&next(&mut bob_dm, "message", "text", json!("psst 1")).await);
    let psst_3 = offset(&next(&mut bob_dm, "message", "text", json!("psst 3")).await);
    bob_dm.delete(psst_3, None).await;
    next(&mut bob_dm, "delete", "target", json!(psst_3)).await;
    let mut ada_dm = V2::connect_url(&format!("{base}/ws/7?room=dm.7.8")).await;
    ada_dm.seated().await;
    ada_dm.read(psst_1).await;
    ada_dm.say("ok", None).await;
    let dm_last = offset(&next(&mut ada_dm, "message", "text", json!("ok")).await);
    Story {
        first,
        secret,
        edit,
        delete,
        hi,
        reply,
        read: reply,
        dm_read: psst_1,
        dm_last,
    }
}

/// The replayed event at `offset`.
fn at(replayed: &[Value], offset: u64) -> &Value {
    replayed
        .iter()
        .find(|frame| frame["offset"] == offset)
        .unwrap_or_else(|| panic!("no event {offset} in the replay: {replayed:?}"))
}

/// What a newcomer on chat.v2.json is replayed: the latest state of each message.
async fn check_v2_replay(base: &str, story: &Story, first_text: &str) -> Vec<Value> {
    let mut carol = V2::connect_url(&format!("{base}/ws/9")).await;
    let (_, replayed) = carol.seated().await;
    let first = at(&replayed, story.first);
    assert_eq!(
        (&first["text"], &first["edited"], &first["reactions"]),
        (
            &json!(first_text),
            &json!(true),
            &json!([{"emoji": "👍", "ids": ["8", "7"]}])
        ),
        "{first}"
    );
    let tombstone = at(&replayed, story.secret);
    assert_eq!(
        (
            &tombstone["type"],
            &tombstone["text"],
            &tombstone["deleted"]
        ),
        (&json!("message"), &json!(""), &json!(true)),
        "{tombstone}"
    );
    assert_eq!(tombstone.get("nonce"), None, "{tombstone}");
    let edit = at(&replayed, story.edit);
    assert_eq!(
        (&edit["type"], &edit["target"], &edit["text"]),
        (&json!("edit"), &json!(story.first), &json!("first, fixed")),
        "the edit itself is replayed: {edit}"
    );
    let delete = at(&replayed, story.delete);
    assert_eq!(
        (&delete["type"], &delete["target"], &delete["nonce"]),
        (&json!("delete"), &json!(story.secret), &json!("n-delete"))
    );
    let reply = at(&replayed, story.reply);
    assert_eq!(
        (&reply["reply_to"], &reply["kind"], &reply["text"]),
        (&json!(story.first), &json!("action"), &json!("agrees")),
        "{reply}"
    );
    let everything = serde_json::to_string(&replayed).expect("frames");
    assert!(!everything.contains(SECRET), "{everything}");
    replayed
}

/// What a newcomer on chat.v1.json is replayed: the raw frames up to its own join.
async fn v1_replay(base: &str) -> Vec<String> {
    let mut dave = V1::connect_url(&format!("{base}/ws/10")).await;
    let welcome = dave.welcome().await;
    let own = welcome.offset + 1;
    let mut frames = Vec::new();
    loop {
        let frame = dave.socket.recv().await;
        let event: Value = serde_json::from_str(&frame).expect("JSON");
        if event["offset"] == own {
            return frames;
        }
        frames.push(frame);
    }
}

/// Ada's read position in `main` (from the welcome) and her direct-message rooms.
async fn ada_returns(base: &str) -> (Value, Value) {
    let mut ada = V2::connect_url(&format!("{base}/ws/7")).await;
    let (welcome, _) = ada.seated().await;
    ada.dms(Some("d")).await;
    let listed = ada.next_of("dms").await;
    (welcome["read"].clone(), listed["rooms"].clone())
}

/// The one direct-message room of Ada's, checked; returns its last offset.
fn check_dms(rooms: &Value, story: &Story, unread: u64) -> u64 {
    let rooms = rooms.as_array().expect("a list");
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    let room = &rooms[0];
    assert_eq!(
        (&room["room"], &room["with"], &room["read"], &room["unread"]),
        (
            &json!("dm.7.8"),
            &json!("8"),
            &json!(story.dm_read),
            &json!(unread)
        ),
        "{room}"
    );
    let last = room["offset"].as_u64().expect("an offset");
    assert!(last >= story.dm_last, "{room}");
    last
}

/// Whether any of the database's files holds `text`.
fn on_disk(folder: &Path, text: &str) -> Option<String> {
    ["chat.sqlite3", "chat.sqlite3-wal"]
        .into_iter()
        .find_map(|file| {
            let bytes = std::fs::read(folder.join(file)).unwrap_or_default();
            bytes
                .windows(text.len())
                .any(|window| window == text.as_bytes())
                .then(|| file.to_owned())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_history_outlives_a_restart_and_a_sigkill() {
    let data = Scratch::new("durable-v2");
    let server = TestServer::start_with(durable(data.path())).await;
    let base = format!("ws://{}", server.address);
    let story = tell_the_story(&base).await;
    server.stop().await;

    // Restarted: the replay, the read position and the DM room come from the disk.
    let server = TestServer::start_with(durable(data.path())).await;
    let base = format!("ws://{}", server.address);
    let (read, dms) = ada_returns(&base).await;
    assert_eq!(read, json!(story.read), "the welcome's read");
    check_dms(&dms, &story, 1);
    check_v2_replay(&base, &story, "first, fixed").await;
    let v1 = v1_replay(&base).await;
    let v1_text = v1.join("\n");
    assert!(!v1_text.contains(SECRET), "{v1_text}");
    assert!(
        v1.iter()
            .all(|frame| !frame.contains(&format!("\"offset\":{},", story.secret))),
        "the deleted message is not replayed to v1: {v1_text}"
    );
    assert!(
        v1_text.contains("(edited) first, fixed"),
        "the edit, as v1 sees it: {v1_text}"
    );
    server.stop().await;
    assert_eq!(on_disk(data.path(), SECRET), None, "after a restart");

    // The real binary, killed with SIGKILL right after more of the same.
    let folder = data.path().to_str().expect("a UTF-8 path");
    let args = ["--data-dir", folder, "--rate-limit", "0"];
    let mut server = ServerProcess::start(&args).await;
    let base = format!("ws://{}", server.address);
    let mut ada = V2::connect_url(&format!("{base}/ws/7")).await;
    ada.seated().await;
    ada.edit(story.first, "first, fixed twice", None).await;
    next(&mut ada, "edit", "text", json!("first, fixed twice")).await;
    let mut bob = V2::connect_url(&format!("{base}/ws/8")).await;
    bob.seated().await;
    bob.delete(story.hi, None).await;
    next(&mut bob, "delete", "target", json!(story.hi)).await;
    bob.say(LATE_SECRET, None).await;
    let late = offset(&next(&mut bob, "message", "text", json!(LATE_SECRET)).await);
    bob.delete(late, None).await;
    next(&mut bob, "delete", "target", json!(late)).await;
    let mut bob_dm = V2::connect_url(&format!("{base}/ws/8?room=dm.7.8")).await;
    bob_dm.seated().await;
    bob_dm.say("psst 4", None).await;
    next(&mut bob_dm, "message", "text", json!("psst 4")).await;
    server.kill().await;
    assert_eq!(on_disk(data.path(), LATE_SECRET), None, "after SIGKILL");

    let server = ServerProcess::start(&args).await;
    let base = format!("ws://{}", server.address);
    let (read, dms) = ada_returns(&base).await;
    assert_eq!(read, json!(story.read), "the welcome's read");
    check_dms(&dms, &story, 2);
    let replayed = check_v2_replay(&base, &story, "first, fixed twice").await;
    let hi = at(&replayed, story.hi);
    assert_eq!((&hi["text"], &hi["deleted"]), (&json!(""), &json!(true)));
    let late = at(&replayed, late);
    assert_eq!(
        (&late["text"], &late["deleted"]),
        (&json!(""), &json!(true))
    );
    let v1_text = v1_replay(&base).await.join("\n");
    for gone in [SECRET, LATE_SECRET, "\"hi\""] {
        assert!(!v1_text.contains(gone), "{gone} in {v1_text}");
    }
    assert!(v1_text.contains("(edited) first, fixed twice"), "{v1_text}");
}

/// The database as the chat.v1.json server (schema 2) left it: a room with a join, a
/// message and a leave.
const SCHEMA_2_DATABASE: &str = "
    CREATE TABLE rooms (name TEXT PRIMARY KEY, epoch TEXT NOT NULL,
        last_offset INTEGER NOT NULL, last_ts INTEGER NOT NULL);
    CREATE INDEX rooms_by_age ON rooms (last_ts);
    CREATE TABLE events (room TEXT NOT NULL, offset INTEGER NOT NULL, ts INTEGER NOT NULL,
        client TEXT NOT NULL, type TEXT NOT NULL CHECK (type IN ('join', 'leave', 'message')),
        text TEXT, nonce TEXT, name TEXT, PRIMARY KEY (room, offset)) WITHOUT ROWID;
    CREATE TABLE members (room TEXT NOT NULL, key INTEGER NOT NULL, client TEXT NOT NULL,
        since INTEGER NOT NULL, name TEXT, PRIMARY KEY (room, key)) WITHOUT ROWID;
    INSERT INTO rooms VALUES ('main', 'old-epoch', 3, 1700000000300);
    INSERT INTO events VALUES ('main', 1, 1700000000100, '7', 'join', NULL, NULL, 'Ada');
    INSERT INTO events VALUES ('main', 2, 1700000000200, '7', 'message', 'from v1', 'n-1', 'Ada');
    INSERT INTO events VALUES ('main', 3, 1700000000300, '7', 'leave', NULL, NULL, 'Ada');
    PRAGMA user_version = 2;
";

#[tokio::test]
async fn a_chat_v1_database_keeps_its_rows_and_takes_v2_operations() {
    let data = Scratch::new("durable-v2-old");
    let file = data.path().join("chat.sqlite3");
    rusqlite::Connection::open(&file)
        .and_then(|database| database.execute_batch(SCHEMA_2_DATABASE))
        .expect("a chat.v1.json database");

    let server = TestServer::start_with(durable(data.path())).await;
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    let (welcome, replayed) = ada.seated().await;
    assert_eq!(welcome["epoch"], "old-epoch", "the room goes on");
    let message = at(&replayed, 2);
    assert_eq!(
        (&message["text"], &message["nonce"], &message["name"]),
        (&json!("from v1"), &json!("n-1"), &json!("Ada")),
        "{message}"
    );
    assert_eq!(replayed.len(), 3, "{replayed:?}");
    ada.edit(2, "from v2", None).await;
    next(&mut ada, "edit", "target", json!(2)).await;
    ada.react(2, "👍", None).await;
    next(&mut ada, "react", "target", json!(2)).await;
    server.stop().await;

    let server = TestServer::start_with(durable(data.path())).await;
    let mut carol = V2::connect(&server, "/ws/9").await;
    let (_, replayed) = carol.seated().await;
    let message = at(&replayed, 2);
    assert_eq!(
        (&message["text"], &message["edited"], &message["reactions"]),
        (
            &json!("from v2"),
            &json!(true),
            &json!([{"emoji": "👍", "ids": ["7"]}])
        ),
        "{message}"
    );
    server.stop().await;

    let database = rusqlite::Connection::open(&file).expect("open");
    let (version, events): (i64, String) = database
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT sql FROM sqlite_schema WHERE name = 'events')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the schema");
    assert_eq!(version, 4);
    assert!(
        events.contains("CHECK (type IN ('join', 'leave', 'message'))")
            && events.contains("reply_to INTEGER"),
        "altered in place, not rebuilt: {events}"
    );
}

/// With `--data-dir`, a request is checked against what the room has numbered, not only
/// what the store has written: an unreact right behind its react, an edit behind an
/// edit, an unban behind its ban, each sent without waiting, is done, never refused.
#[tokio::test]
async fn requests_sent_right_behind_those_they_follow_are_done_while_written() {
    let data = Scratch::new("durable-v2-behind");
    let server = TestServer::start_with(Config {
        admins: vec![chat::ClientId::parse("1").unwrap()],
        ..durable(data.path())
    })
    .await;
    let mut ada = V2::connect(&server, "/ws/1").await;
    ada.seated().await;
    ada.say("target", Some("t")).await;
    let target = offset(&ada.error_or("message", "t").await);
    for round in 0..20 {
        ada.react(target, "👍", Some(&format!("r{round}"))).await;
        ada.unreact(target, "👍", Some(&format!("u{round}"))).await;
    }
    ada.edit(target, "once", Some("e1")).await;
    ada.edit(target, "twice", Some("e2")).await;
    ada.delete(target, Some("d")).await;
    for request in [
        json!({"type":"ban","member":"5","nonce":"b"}),
        json!({"type":"unban","member":"5","nonce":"ub"}),
        json!({"type":"topic","text":"Launch","nonce":"tp"}),
        json!({"type":"topic","text":"","nonce":"tc"}),
    ] {
        ada.send(&request).await;
    }
    let mut done = Vec::new();
    loop {
        let frame = ada.frame().await;
        assert_ne!(frame["type"], "error", "after {done:?}: {frame}");
        if let Some(nonce) = frame["nonce"].as_str() {
            done.push(nonce.to_owned());
        }
        if frame["nonce"] == "tc" {
            break;
        }
    }
    assert_eq!(done.len(), 2 * 20 + 3 + 4, "{done:?}");
    server.stop().await;
}
