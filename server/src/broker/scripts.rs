//! The Lua scripts that keep each room's numbering, history and presence atomic in
//! Redis. Their text lives in `.lua` files beside this one; each begins with
//! `take_epoch.lua`, and each file's header states its KEYS, ARGV and reply.

use std::sync::LazyLock;

/// Numbers a run of events in one room from one node, in order, and adds each to the
/// room's history and to `chat:events`; returns the last one's id in `chat:events`.
/// One call per run of events rather than per event, which costs Redis far less CPU
/// per event. A room's history is trimmed exactly, to `--history` events and
/// `--history-bytes`, so that no room takes more of Redis's memory than that; and a
/// room nobody is in expires `--room-expiry` after its last event.
pub(super) const APPEND: &str = concat!(include_str!("take_epoch.lua"), include_str!("append.lua"));

/// `APPEND`'s hash, which pipelines call it by (each connection loads it first).
pub(super) static APPEND_HASH: LazyLock<String> =
    LazyLock::new(|| redis::Script::new(APPEND).get_hash().to_owned());

/// A room as Redis has it: epoch, offset, the last events (newest first), who is in
/// it and each id's read position.
pub(super) const SNAPSHOT: &str =
    concat!(include_str!("take_epoch.lua"), include_str!("snapshot.lua"));

/// Adds a run of frames outside the log (typing, read positions) from one node in one
/// room to `chat:events`, and keeps read positions, each only moving forward.
pub(super) const EPHEMERAL: &str = include_str!("ephemeral.lua");

/// Claims a node's members in a partition for their leaves to be announced, if the
/// node's `alive` key there has expired.
pub(super) const CLAIM: &str = include_str!("claim.lua");

/// `EPHEMERAL`'s hash, which pipelines call it by.
pub(super) static EPHEMERAL_HASH: LazyLock<String> =
    LazyLock::new(|| redis::Script::new(EPHEMERAL).get_hash().to_owned());

/// Each script's contract, against a real `redis-server` (Debian's package).
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use redis::Commands;
    use redis::streams::StreamRangeReply;

    use super::*;
    use crate::broker::keys::RoomKeys;

    /// The tests' rooms' keys, in a cluster of 16 partitions.
    fn keys(room: &str) -> RoomKeys {
        RoomKeys::new(room, 16)
    }
    fn meta_key(room: &str) -> String {
        keys(room).meta
    }
    fn history_key(room: &str) -> String {
        keys(room).history
    }
    fn present_key(room: &str) -> String {
        keys(room).present
    }
    fn reads_key(room: &str) -> String {
        keys(room).reads
    }
    fn operations_key(room: &str) -> String {
        keys(room).operations
    }
    fn rules_key(room: &str) -> String {
        keys(room).rules
    }
    /// Room `main`'s partition stream.
    fn stream_key() -> String {
        keys("main").events
    }
    /// Node `node`'s members in room `main`'s partition.
    fn members_key(node: u64) -> String {
        crate::broker::keys::members_key(keys("main").partition, node)
    }

    /// A `redis-server` of the test's own, on a free port, without persistence; killed
    /// when dropped.
    struct Redis {
        child: Child,
        connection: redis::Connection,
        port: u16,
    }

    impl Redis {
        fn start() -> Self {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            Self::start_on(port, &["--appendonly", "no"])
        }

        /// On `port`, with `persistence`'s flags (and `--dir`, if it names one).
        fn start_on(port: u16, persistence: &[&str]) -> Self {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(persistence)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed (apt-get install -y redis-server)");
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            // Polled until it accepts: a server starting is not an event we can await.
            let started = Instant::now();
            let connection = loop {
                match client.get_connection() {
                    Ok(connection) => break connection,
                    Err(error) if started.elapsed() > Duration::from_secs(10) => {
                        panic!("redis-server did not start: {error}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            Self {
                child,
                connection,
                port,
            }
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Calls `APPEND` for a run of events of room `main` from `node`, each as (member
    /// key, presence, present, JSON after the offset).
    fn append(
        redis: &mut redis::Connection,
        epoch: &str,
        node: u64,
        history: usize,
        events: &[(u64, &str, &str, &str)],
    ) -> String {
        append_keeping(redis, epoch, node, (history, 1 << 30, 60_000), events)
    }

    /// [`append`], keeping (events, bytes, expiry in ms) of the room.
    fn append_keeping(
        redis: &mut redis::Connection,
        epoch: &str,
        node: u64,
        (history, bytes, expiry): (usize, usize, u64),
        events: &[(u64, &str, &str, &str)],
    ) -> String {
        let script = redis::Script::new(APPEND);
        let mut call = script.prepare_invoke();
        call.key(meta_key("main"))
            .key(history_key("main"))
            .key(present_key("main"))
            .key(members_key(node))
            .key(stream_key())
            .key(reads_key("main"))
            .key(operations_key("main"))
            .key(rules_key("main"))
            .arg(epoch)
            .arg("main")
            .arg(node)
            .arg(history)
            .arg(100)
            .arg(bytes)
            .arg(expiry);
        for (key, presence, present, rest) in events {
            call.arg(key).arg(presence).arg(present).arg(rest);
        }
        call.invoke(redis).unwrap()
    }

    const ADA: &str = r#"{"id":"7","since":5}"#;

    /// What `SNAPSHOT` answers.
    type Reply = (
        String,
        u64,
        Vec<(String, Vec<String>)>,
        Vec<String>,
        Vec<String>,
        String,
    );

    fn snapshot(redis: &mut redis::Connection) -> Reply {
        redis::Script::new(SNAPSHOT)
            .key(meta_key("main"))
            .key(history_key("main"))
            .key(present_key("main"))
            .key(reads_key("main"))
            .key(keys("main").events)
            .arg("ignored")
            .arg(10)
            .arg(1 << 20)
            .invoke(redis)
            .unwrap()
    }

    /// Calls `EPHEMERAL` for frames of room `main` from `node`, each as (id whose read
    /// position it is or "", that position, JSON).
    fn ephemeral(redis: &mut redis::Connection, node: u64, frames: &[(&str, u64, &str)]) -> String {
        let script = redis::Script::new(EPHEMERAL);
        let mut call = script.prepare_invoke();
        call.key(meta_key("main"))
            .key(reads_key("main"))
            .key(stream_key())
            .arg("main")
            .arg(node)
            .arg(100);
        for (id, offset, json) in frames {
            call.arg(id).arg(offset).arg(json);
        }
        call.invoke(redis).unwrap()
    }

    /// Every value in a stream, as one text to search.
    fn everything_in(redis: &mut redis::Connection, stream: &str) -> String {
        let all: StreamRangeReply = redis.xrange_all(stream).unwrap();
        let mut text = String::new();
        for entry in &all.ids {
            for value in entry.map.values() {
                text.push_str(&redis::from_redis_value::<String>(value).unwrap());
                text.push('\n');
            }
        }
        text
    }

    /// `SNAPSHOT` of room `main`, offering `epoch`: its epoch, offset and events.
    fn snapshot_offering(redis: &mut redis::Connection, epoch: &str) -> (String, u64, usize) {
        let (epoch, offset, events, _, _, _): Reply = redis::Script::new(SNAPSHOT)
            .key(meta_key("main"))
            .key(history_key("main"))
            .key(present_key("main"))
            .key(reads_key("main"))
            .key(keys("main").events)
            .arg(epoch)
            .arg(10)
            .arg(1 << 20)
            .invoke(redis)
            .unwrap();
        (epoch, offset, events.len())
    }

    #[test]
    #[ignore = "needs redis-server"]
    fn a_replica_promoted_in_a_failover_gives_each_room_a_new_epoch_keeping_its_history() {
        let mut primary = Redis::start();
        let said = r#""ts":6,"id":"7","type":"message","text":"hi"}"#;
        append(&mut primary.connection, "e1", 3, 10, &[(4, "-", "", said)]);
        assert_eq!(
            snapshot_offering(&mut primary.connection, "e2"),
            ("e1".into(), 1, 1)
        );

        let mut replica = Redis::start();
        // Loaded from the socket: a `dump.rdb` left in the working folder would be
        // loaded by every later test's Redis.
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-load")
            .arg("on-empty-db")
            .query(&mut replica.connection)
            .unwrap();
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port)
            .query(&mut replica.connection)
            .unwrap();
        // Polled: a replica's first sync is not an event a client can wait for.
        let started = Instant::now();
        loop {
            let copied: Option<String> =
                replica.connection.hget(meta_key("main"), "epoch").unwrap();
            if copied.is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the replica synced"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The same Redis answering again keeps the epoch.
        assert_eq!(
            snapshot_offering(&mut primary.connection, "e3"),
            ("e1".into(), 1, 1)
        );

        let _: () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query(&mut replica.connection)
            .unwrap();
        let promoted = &mut replica.connection;
        assert_eq!(
            snapshot_offering(promoted, "e4"),
            ("e4".into(), 1, 1),
            "a new epoch, the same history"
        );
        append(promoted, "e5", 3, 10, &[(4, "-", "", said)]);
        assert_eq!(
            snapshot_offering(promoted, "e6"),
            ("e4".into(), 2, 2),
            "once per failover"
        );
    }

    /// A Redis restarted from an RDB snapshot lost what it numbered since the snapshot,
    /// which clients may have seen: each room it kept takes a new epoch, keeping its
    /// history. Restarted from an append-only file written at each command, it lost
    /// nothing, and the epoch stays.
    #[test]
    #[ignore = "needs redis-server"]
    fn a_redis_restarted_from_a_snapshot_gives_each_room_a_new_epoch_and_from_its_log_not() {
        let said = r#""ts":6,"id":"7","type":"message","text":"hi"}"#;
        for from_log in [false, true] {
            let folder = std::env::temp_dir()
                .join(format!("chat-restart-{}-{from_log}", std::process::id()));
            std::fs::create_dir_all(&folder).unwrap();
            let dir = folder.to_str().unwrap();
            let persistence = match from_log {
                true => [
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--dir",
                    dir,
                ],
                false => [
                    "--appendonly",
                    "no",
                    "--dbfilename",
                    "dump.rdb",
                    "--dir",
                    dir,
                ],
            };
            let port = Redis::start().port;
            let mut redis = Redis::start_on(port, &persistence);
            append(&mut redis.connection, "e1", 3, 10, &[(4, "-", "", said)]);
            let _: () = redis::cmd("SAVE").query(&mut redis.connection).unwrap();
            // Numbered after the snapshot, and lost with the process unless logged.
            append(&mut redis.connection, "e1", 3, 10, &[(4, "-", "", said)]);
            drop(redis);
            let mut again = Redis::start_on(port, &persistence);
            let expected = match from_log {
                true => ("e1".into(), 2, 2),
                false => ("e2".into(), 1, 1),
            };
            assert_eq!(
                snapshot_offering(&mut again.connection, "e2"),
                expected,
                "from the log: {from_log}"
            );
            drop(again);
            std::fs::remove_dir_all(&folder).unwrap();
        }
    }

    #[test]
    #[ignore = "needs redis-server"]
    fn a_delete_purges_its_message_and_edits_from_both_streams_keeping_who_and_when() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        append(
            redis,
            "e1",
            3,
            10,
            &[
                (
                    4,
                    "join",
                    ADA,
                    r#""ts":5,"id":"7","name":"Ada","type":"join"}"#,
                ),
                (
                    4,
                    "-",
                    "",
                    r#""ts":6,"id":"7","name":"Ada","type":"message","text":"secret one"}"#,
                ),
                (
                    4,
                    "-",
                    "",
                    r#""ts":7,"id":"7","type":"message","text":"kept"}"#,
                ),
                (
                    4,
                    "-",
                    "",
                    r#""ts":8,"id":"7","type":"edit","target":2,"text":"secret two"}"#,
                ),
                (
                    4,
                    "-",
                    "",
                    r#""ts":9,"id":"7","type":"edit","target":3,"text":"kept too"}"#,
                ),
            ],
        );
        // Another id's delete is not the author's: nothing is purged.
        append(
            redis,
            "e1",
            3,
            10,
            &[(
                5,
                "-",
                "",
                r#""ts":10,"id":"8","type":"delete","target":2}"#,
            )],
        );
        assert!(everything_in(redis, &history_key("main")).contains("secret one"));
        // Nor is a delete of what is not a message.
        append(
            redis,
            "e1",
            3,
            10,
            &[(
                4,
                "-",
                "",
                r#""ts":11,"id":"7","type":"delete","target":1}"#,
            )],
        );
        assert!(everything_in(redis, &history_key("main")).contains("\"type\":\"join\""));
        append(
            redis,
            "e1",
            3,
            10,
            &[(
                4,
                "-",
                "",
                r#""ts":12,"id":"7","type":"delete","target":2}"#,
            )],
        );
        for stream in [history_key("main"), stream_key()] {
            let text = everything_in(redis, &stream);
            assert!(
                !text.contains("secret"),
                "{stream} still holds the text: {text}"
            );
            assert!(text.contains("kept too"), "only the target's edits go");
        }
        let history: StreamRangeReply = redis.xrange_all(history_key("main")).unwrap();
        let ids: Vec<&str> = history.ids.iter().map(|entry| entry.id.as_str()).collect();
        assert_eq!(ids, ["0-1", "0-3", "0-5", "0-6", "0-7", "0-8"]);
        let delete = &history.ids[5];
        let purged: String = delete.get("g").unwrap();
        assert_eq!(
            purged,
            "{\"offset\":2,\"ts\":6,\"id\":\"7\",\"name\":\"Ada\"\n{\"offset\":4,\"ts\":8,\"id\":\"7\""
        );
        let (_, offset, events, _, _, _) = snapshot(redis);
        assert_eq!((offset, events.len()), (8, 6));
    }

    #[test]
    #[ignore = "needs redis-server"]
    fn rules_are_set_and_cleared_and_a_moderators_delete_purges_anyones_message() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        append(
            redis,
            "e1",
            3,
            10,
            &[
                (4, "join", ADA, r#""ts":5,"id":"7","type":"join"}"#),
                (
                    4,
                    "-",
                    "",
                    r#""ts":6,"id":"7","type":"message","text":"spam","nonce":",\"moderated\":true"}"#,
                ),
                (
                    5,
                    "rule",
                    "ban:7\n{\"reason\":\"spam\"}",
                    r#""ts":7,"id":"8","type":"ban","member":"7","reason":"spam"}"#,
                ),
                (
                    5,
                    "rule",
                    "topic\nLaunch\nday",
                    r#""ts":8,"id":"8","type":"topic","text":"Launch\nday"}"#,
                ),
            ],
        );
        let rules: HashMap<String, String> = redis.hgetall(rules_key("main")).unwrap();
        assert_eq!(rules["ban:7"], r#"{"reason":"spam"}"#);
        assert_eq!(
            rules["topic"], "Launch\nday",
            "the value is all after the first line break"
        );
        // A nonce that quotes the marker is not a moderator's delete.
        append(
            redis,
            "e1",
            3,
            10,
            &[
                (
                    6,
                    "-",
                    "",
                    r#""ts":9,"id":"9","type":"delete","target":2,"nonce":",\"moderated\":true"}"#,
                ),
                (
                    5,
                    "rule",
                    "ban:7",
                    r#""ts":10,"id":"8","type":"unban","member":"7"}"#,
                ),
            ],
        );
        assert!(everything_in(redis, &history_key("main")).contains(r#""text":"spam""#));
        let rules: HashMap<String, String> = redis.hgetall(rules_key("main")).unwrap();
        assert!(!rules.contains_key("ban:7"), "{rules:?}");
        append(
            redis,
            "e1",
            3,
            10,
            &[(
                5,
                "-",
                "",
                r#""ts":11,"id":"8","type":"delete","target":2,"moderated":true}"#,
            )],
        );
        assert!(!everything_in(redis, &history_key("main")).contains(r#""text":"spam""#));
        let ttl: i64 = redis.pttl(rules_key("main")).unwrap();
        assert_eq!(ttl, -1, "the rules do not expire with the room");
    }

    #[test]
    #[ignore = "needs redis-server"]
    fn read_positions_only_move_forward_and_are_told_only_when_they_move() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        let read = |offset: u64| format!(r#"{{"type":"read","id":"7","offset":{offset}}}"#);
        let (two, one) = (read(2), read(1));
        assert_eq!(
            ephemeral(redis, 3, &[("7", 2, &two)]),
            "",
            "a room without an epoch has no positions"
        );
        append(
            redis,
            "e1",
            3,
            10,
            &[(4, "join", ADA, r#""ts":5,"id":"7","type":"join"}"#)],
        );
        let typing = r#"{"type":"typing","id":"7"}"#;
        let told = ephemeral(redis, 3, &[("", 0, typing), ("7", 2, &two), ("7", 1, &one)]);
        let shared: StreamRangeReply = redis.xrange_all(stream_key()).unwrap();
        let frames: Vec<String> = shared.ids[1..]
            .iter()
            .map(|entry| entry.get("x").unwrap())
            .collect();
        assert_eq!(frames, [typing, two.as_str()], "the step back is not told");
        assert_eq!(shared.ids.last().unwrap().id, told);
        assert_eq!(shared.ids[1].get::<String>("n").unwrap(), "3");
        let (_, _, _, _, reads, _) = snapshot(redis);
        assert_eq!(reads, ["7", "2"]);
        // A Redis that lost the room's epoch forgets its positions with its history.
        let _: () = redis.del(meta_key("main")).unwrap();
        let (_, _, _, _, reads, _) = snapshot(redis);
        assert!(reads.is_empty());
    }

    #[test]
    #[ignore = "needs redis-server"]
    fn append_numbers_events_and_keeps_history_presence_and_the_shared_stream() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        let last = append(
            redis,
            "e1",
            3,
            10,
            &[
                (4, "join", ADA, r#""ts":5,"id":"7","type":"join"}"#),
                (
                    4,
                    "-",
                    "",
                    r#""ts":6,"id":"7","type":"message","text":"hi"}"#,
                ),
            ],
        );
        let meta: HashMap<String, String> = redis.hgetall(meta_key("main")).unwrap();
        assert_eq!(meta["epoch"], "e1");
        assert_eq!(meta["offset"], "2");
        let history: StreamRangeReply = redis.xrange_all(history_key("main")).unwrap();
        let ids: Vec<&str> = history.ids.iter().map(|entry| entry.id.as_str()).collect();
        assert_eq!(ids, ["0-1", "0-2"]);
        let second: String = history.ids[1].get("e").unwrap();
        assert_eq!(
            second,
            r#"{"offset":2,"ts":6,"id":"7","type":"message","text":"hi"}"#
        );
        let present: HashMap<String, String> = redis.hgetall(present_key("main")).unwrap();
        assert_eq!(present, HashMap::from([("3 4".to_owned(), ADA.to_owned())]));
        let members: HashMap<String, String> = redis.hgetall(members_key(3)).unwrap();
        assert_eq!(
            members,
            HashMap::from([("main 4".to_owned(), ADA.to_owned())])
        );
        let shared: StreamRangeReply = redis.xrange_all(stream_key()).unwrap();
        assert_eq!(shared.ids.len(), 2);
        assert_eq!(shared.ids[1].id, last, "the reply is the last event's id");
        for (name, value) in [("r", "main"), ("n", "3"), ("k", "4"), ("p", "e1")] {
            assert_eq!(shared.ids[1].get::<String>(name).unwrap(), value);
        }

        append(
            redis,
            "e2",
            3,
            10,
            &[(4, "leave", "", r#""ts":7,"id":"7","type":"leave"}"#)],
        );
        let meta: HashMap<String, String> = redis.hgetall(meta_key("main")).unwrap();
        assert_eq!(meta["epoch"], "e1", "an epoch is kept once taken");
        assert_eq!(meta["offset"], "3");
        let present: HashMap<String, String> = redis.hgetall(present_key("main")).unwrap();
        assert!(present.is_empty(), "a leave takes the member out");
        let members: HashMap<String, String> = redis.hgetall(members_key(3)).unwrap();
        assert!(members.is_empty());
    }

    /// Issue 34, finding 13: a room's history in Redis is bounded in bytes as well as
    /// in events, trimmed exactly and never past its newest entry.
    #[test]
    #[ignore = "needs redis-server"]
    fn the_history_keeps_its_newest_entries_within_its_bytes() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        let said = |n: usize| {
            format!(
                r#""ts":{n},"id":"7","type":"message","text":"{}"}}"#,
                "x".repeat(1000)
            )
        };
        for n in 0..20 {
            let event = said(n);
            append_keeping(redis, "e", 3, (100, 5000, 60_000), &[(4, "-", "", &event)]);
        }
        let history: StreamRangeReply = redis.xrange_all(history_key("main")).unwrap();
        let ids: Vec<&str> = history.ids.iter().map(|entry| entry.id.as_str()).collect();
        assert_eq!(
            ids,
            ["0-17", "0-18", "0-19", "0-20"],
            "about 1 KB each, 5 KB kept"
        );
        let bytes: usize = redis.hget(meta_key("main"), "bytes").unwrap();
        let held: usize = history
            .ids
            .iter()
            .map(|entry| entry.get::<String>("e").unwrap().len())
            .sum();
        assert_eq!(bytes, held, "what is counted is what is held");
        let huge = format!(
            r#""ts":1,"id":"7","type":"message","text":"{}"}}"#,
            "y".repeat(9000)
        );
        append_keeping(redis, "e", 3, (100, 5000, 60_000), &[(4, "-", "", &huge)]);
        let history: StreamRangeReply = redis.xrange_all(history_key("main")).unwrap();
        assert_eq!(
            history.ids.len(),
            1,
            "an entry past the budget alone is kept"
        );
    }

    /// Issue 34, finding 13: a room nobody is in expires after its last event; one
    /// with someone in it does not.
    #[test]
    #[ignore = "needs redis-server"]
    fn a_room_nobody_is_in_expires_and_one_with_members_does_not() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        let keep = (100, 1 << 20, 60_000);
        append_keeping(
            redis,
            "e",
            3,
            keep,
            &[(4, "join", ADA, r#""ts":5,"id":"7","type":"join"}"#)],
        );
        for key in [meta_key("main"), history_key("main")] {
            let ttl: i64 = redis.pttl(&key).unwrap();
            assert_eq!(ttl, -1, "{key} stays while someone is in the room");
        }
        append_keeping(
            redis,
            "e",
            3,
            keep,
            &[(4, "leave", "", r#""ts":6,"id":"7","type":"leave"}"#)],
        );
        for key in [meta_key("main"), history_key("main")] {
            let ttl: i64 = redis.pttl(&key).unwrap();
            assert!((1..=60_000).contains(&ttl), "{key} expires: {ttl}");
        }
        append_keeping(
            redis,
            "e",
            3,
            keep,
            &[(5, "join", ADA, r#""ts":7,"id":"7","type":"join"}"#)],
        );
        let ttl: i64 = redis.pttl(meta_key("main")).unwrap();
        assert_eq!(ttl, -1, "someone came back");
    }

    #[test]
    #[ignore = "needs redis-server"]
    fn a_room_whose_epoch_was_lost_starts_a_new_history() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        let join = (4, "join", ADA, r#""ts":5,"id":"7","type":"join"}"#);
        append(redis, "e1", 3, 10, &[join]);
        // As after a Redis that lost the room's meta but not the rest.
        let _: () = redis.del(meta_key("main")).unwrap();
        append(redis, "e2", 3, 10, &[join]);
        let meta: HashMap<String, String> = redis.hgetall(meta_key("main")).unwrap();
        assert_eq!(
            (meta["epoch"].as_str(), meta["offset"].as_str()),
            ("e2", "1")
        );
        let history: StreamRangeReply = redis.xrange_all(history_key("main")).unwrap();
        assert_eq!(history.ids.len(), 1, "the old epoch's history is gone");
    }

    /// A long history is read only as far back as a node keeps in memory: the newest
    /// events up to the bytes asked for, the one that passes them included.
    #[test]
    #[ignore = "needs redis-server"]
    fn snapshot_reads_the_newest_events_up_to_the_bytes_asked_for() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        let texts: Vec<String> = (0..600)
            .map(|n| format!(r#""ts":6,"id":"7","type":"message","text":"{n:0>100}"}}"#))
            .collect();
        let events: Vec<_> = texts
            .iter()
            .map(|text| (4, "-", "", text.as_str()))
            .collect();
        append(redis, "e1", 3, 1000, &events);
        let read = |redis: &mut redis::Connection, count: usize, bytes: usize| {
            let (_, _, events, _, _, _): Reply = redis::Script::new(SNAPSHOT)
                .key(meta_key("main"))
                .key(history_key("main"))
                .key(present_key("main"))
                .key(reads_key("main"))
                .key(keys("main").events)
                .arg("ignored")
                .arg(count)
                .arg(bytes)
                .invoke(redis)
                .unwrap();
            events
        };
        let ids = |events: &[(String, Vec<String>)]| -> Vec<String> {
            events.iter().map(|(id, _)| id.clone()).collect()
        };
        // What the budget counts of an entry: its values.
        let size = |(_, fields): &(String, Vec<String>)| -> usize {
            fields.iter().skip(1).step_by(2).map(String::len).sum()
        };
        let all = read(redis, 1000, 1 << 20);
        assert_eq!(
            all.len(),
            600,
            "under the bytes, every event, across chunks"
        );
        assert_eq!((all[0].0.as_str(), all[599].0.as_str()), ("0-600", "0-1"));
        let budget = 50_000;
        let some = read(redis, 1000, budget);
        let before_last: usize = some[..some.len() - 1].iter().map(size).sum();
        assert!(before_last < budget && before_last + size(&some[some.len() - 1]) >= budget);
        assert_eq!(ids(&some), ids(&all[..some.len()]), "the newest");
        assert_eq!(ids(&read(redis, 5, 1 << 20)), ids(&all[..5]));
    }

    #[test]
    #[ignore = "needs redis-server"]
    fn snapshot_answers_epoch_offset_the_last_events_newest_first_and_who_is_in() {
        let mut server = Redis::start();
        let redis = &mut server.connection;
        let message = |text: &str| format!(r#""ts":6,"id":"7","type":"message","text":"{text}"}}"#);
        let (one, two, three) = (message("1"), message("2"), message("3"));
        append(
            redis,
            "e1",
            3,
            10,
            &[
                (4, "join", ADA, r#""ts":5,"id":"7","type":"join"}"#),
                (4, "-", "", &one),
                (4, "-", "", &two),
                (4, "-", "", &three),
            ],
        );
        let (epoch, offset, events, present, reads, read_from): Reply =
            redis::Script::new(SNAPSHOT)
                .key(meta_key("main"))
                .key(history_key("main"))
                .key(present_key("main"))
                .key(reads_key("main"))
                .key(keys("main").events)
                .arg("ignored")
                .arg(2)
                .arg(1 << 20)
                .invoke(redis)
                .unwrap();
        assert_eq!((epoch.as_str(), offset), ("e1", 4));
        let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["0-4", "0-3"], "the last two, newest first");
        assert_eq!(events[0].1[..4], ["n", "3", "k", "4"]);
        assert_eq!(present, ["3 4", ADA]);
        assert!(reads.is_empty());
        let newest: StreamRangeReply = redis.xrevrange_count(stream_key(), "+", "-", 1).unwrap();
        assert_eq!(
            read_from, newest.ids[0].id,
            "where reading the partition begins"
        );

        let (epoch, offset, events, present, _, read_from): Reply = redis::Script::new(SNAPSHOT)
            .key(meta_key("new"))
            .key(history_key("new"))
            .key(present_key("new"))
            .key(reads_key("new"))
            .key(keys("new").events)
            .arg("fresh")
            .arg(2)
            .arg(1 << 20)
            .invoke(redis)
            .unwrap();
        assert_eq!(
            (epoch.as_str(), offset),
            ("fresh", 0),
            "a new room takes the epoch offered"
        );
        assert!(events.is_empty() && present.is_empty());
        if keys("new").partition != keys("main").partition {
            assert_eq!(
                read_from, "0-0",
                "an empty partition is read from its start"
            );
        }
    }
}
