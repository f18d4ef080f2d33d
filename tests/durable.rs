//! Durable history (`--data-dir`) over real sockets and the real binary: a restart
//! continues every room's epoch and offsets, SIGKILL in the middle of a burst loses
//! nothing any client received, the database keeps only the history's bound, and a
//! folder that cannot be used is a one-line error, at start or (a full disk) at run time.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command as StdCommand;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat::v1::{Event, EventKind};
use chat_server::Config;
use futures_util::StreamExt;
use testkit::process::{Scratch, ServerProcess, health};
use testkit::v1::{V1, kinds, said};
use testkit::{
    PATIENCE, TestServer, drained_gauge, eventually, flood, settled_gauge, upgrade_request,
    wait_for_health, within,
};
use tokio_tungstenite::tungstenite::Message;

fn durable(folder: &Path) -> Config {
    Config {
        data_dir: Some(folder.to_owned()),
        ..Config::default()
    }
}

fn nonce_of(event: &Event) -> Option<&str> {
    match &event.kind {
        EventKind::Message { nonce, .. } => nonce.as_deref(),
        _ => None,
    }
}

#[tokio::test]
async fn a_restarted_server_continues_each_rooms_epoch_and_offsets_and_clients_resume() {
    let data = Scratch::new("restart");
    let server = TestServer::start_with(durable(data.path())).await;
    let mut alice = V1::connect(&server, "/ws/1").await;
    let first = alice.seated().await;
    alice.say("before the restart", Some("n-1")).await;
    let sent = alice.event().await;
    assert_eq!((sent.offset, nonce_of(&sent)), (2, Some("n-1")));
    let mut ops = V1::connect(&server, "/ws/2?room=ops").await;
    let ops_first = ops.seated().await;
    ops.say("in ops", None).await;
    assert_eq!(ops.event().await.offset, 2);
    server.stop().await;

    let server = TestServer::start_with(durable(data.path())).await;
    let path = format!("/ws/1?since={}&epoch={}", sent.offset, first.epoch);
    let mut back = V1::connect(&server, &path).await;
    let welcome = back.welcome().await;
    assert!(welcome.recovered, "{welcome:?}");
    assert_eq!(welcome.epoch, first.epoch, "the epoch goes on");
    let missed = back.event().await;
    assert_eq!(
        (missed.offset, missed.id.as_str(), &missed.kind),
        (3, "1", &EventKind::leave()),
        "the leave written as the server stopped"
    );
    let own = back.event().await;
    assert_eq!((own.offset, &own.kind), (4, &EventKind::join()));

    // A newcomer gets the history from before the restart, nonce and all.
    let mut carol = V1::connect(&server, "/ws/3").await;
    let (welcome, history, _) = carol.joined(4).await;
    assert_eq!(welcome.epoch, first.epoch);
    let offsets: Vec<u64> = history.iter().map(|event| event.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
    assert_eq!(history[1], sent, "the message is as it was sent");
    assert_eq!(
        welcome
            .members
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["1"]
    );

    // Each room has kept its own.
    let mut dave = V1::connect(&server, "/ws/4?room=ops").await;
    let (welcome, history, _) = dave.joined(3).await;
    assert_eq!(welcome.epoch, ops_first.epoch);
    assert_eq!(
        kinds(&history),
        [
            ("2".into(), EventKind::join()),
            ("2".into(), said("in ops")),
            ("2".into(), EventKind::leave())
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_mid_burst_the_history_holds_every_event_any_client_received() {
    const SENDERS: usize = 3;
    const MESSAGES: usize = 2000;
    let data = Scratch::new("crash");
    let folder = data.path().to_str().expect("a UTF-8 path");
    let args = [
        "--data-dir",
        folder,
        "--rate-limit",
        "0",
        "--history",
        "100000",
    ];
    let mut server = ServerProcess::start(&args).await;

    let seen = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for id in 1..=3 {
        let mut reader = V1::connect_url(&server.url(&format!("/ws/{id}"))).await;
        reader.seated().await;
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            // Every event until the connection dies with the server.
            let mut events = Vec::new();
            while let Ok(Some(Ok(frame))) =
                tokio::time::timeout(PATIENCE, reader.socket.socket.next()).await
            {
                if let Message::Text(text) = frame {
                    let event: Event = serde_json::from_str(&text).expect("an event");
                    events.push(event);
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
            events
        }));
    }
    // Paced so that the readers keep up: what they have received is what the server
    // fanned out a moment ago, not a backlog it sent long before the kill.
    for sender in 0..SENDERS {
        let url = server.url(&format!("/ws/{}", 10 + sender));
        tokio::spawn(async move {
            let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
                return;
            };
            let mut pace = tokio::time::interval(Duration::from_millis(1));
            for n in 0..MESSAGES {
                pace.tick().await;
                let text = format!("{sender}-{n}");
                if futures_util::SinkExt::send(&mut socket, Message::text(text))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Stay until the server dies, so that only the restart announces the leave.
            while let Some(Ok(_)) = socket.next().await {}
        });
    }
    eventually("the burst to reach the readers", async || {
        (seen.load(Ordering::Relaxed) >= MESSAGES).then_some(())
    })
    .await;
    server.kill().await;
    let mut received = Vec::new();
    for reader in readers {
        received.push(reader.await.expect("a reader"));
    }

    let server = ServerProcess::start(&args).await;
    let mut auditor = V1::connect_url(&server.url("/ws/99")).await;
    let welcome = auditor.welcome().await;
    let mut history = HashMap::new();
    loop {
        let event = auditor.event().await;
        if event.offset > welcome.offset {
            break;
        }
        history.insert(event.offset, event);
    }
    assert_eq!(
        history.len() as u64,
        welcome.offset,
        "offsets 1 to {} are dense",
        welcome.offset
    );
    let mut checked = 0;
    for (reader, events) in received.iter().enumerate() {
        for event in events {
            assert_eq!(
                history.get(&event.offset),
                Some(event),
                "reader {reader}'s event"
            );
            checked += 1;
        }
    }
    let written = history
        .values()
        .filter(|event| matches!(event.kind, EventKind::Message { .. }))
        .count();
    eprintln!(
        "checked {checked} received events; {written} of {} messages sent were written before the kill",
        SENDERS * MESSAGES
    );
    // Whoever was connected at the kill has left, in the history, before the newcomer.
    assert!(welcome.members.is_empty(), "{:?}", welcome.members);
    let last_received = received.iter().flatten().map(|event| event.offset).max();
    let leaves: Vec<&str> = (last_received.expect("something received") + 1..=welcome.offset)
        .filter_map(|offset| history.get(&offset))
        .filter(|event| event.kind == EventKind::leave())
        .map(|event| event.id.as_str())
        .collect();
    for id in ["1", "2", "3", "10", "11", "12"] {
        assert!(
            leaves.contains(&id),
            "{id}'s leave after the restart: {leaves:?}"
        );
    }
}

#[tokio::test]
async fn the_database_keeps_only_the_last_history_events_of_each_room() {
    let data = Scratch::new("retention");
    let config = Config {
        history: 5,
        rate_limit: None,
        ..durable(data.path())
    };
    let server = TestServer::start_with(config).await;
    let mut alice = V1::connect(&server, "/ws/1").await;
    alice.seated().await;
    for n in 0..20 {
        alice.say(&n.to_string(), None).await;
    }
    for _ in 0..20 {
        alice.event().await;
    }
    let database = rusqlite::Connection::open(data.path().join("chat.sqlite3")).expect("open");
    let offsets: Vec<u64> = database
        .prepare("SELECT offset FROM events WHERE room = 'main' ORDER BY offset")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .expect("read the events");
    assert_eq!(
        offsets,
        [17, 18, 19, 20, 21],
        "the join was 1, the messages 2 to 21"
    );
    server.stop().await;
}

/// Runs the binary with `args` until it exits, returning its status and what it printed
/// on stderr.
fn run_to_exit(command: &mut StdCommand) -> (Option<i32>, String) {
    let output = command
        .args(["--port", "0"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run chat-server");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn server_with(folder: &Path) -> StdCommand {
    let mut command = StdCommand::new(testkit::chromium::chat_server_binary());
    command.arg("--data-dir").arg(folder);
    command
}

#[test]
fn an_unusable_data_folder_is_a_one_line_error_at_start() {
    let scratch = Scratch::new("unusable");
    let a_file = scratch.path().join("a-file");
    std::fs::write(&a_file, "not a folder").expect("write");
    let corrupt = scratch.path().join("corrupt");
    std::fs::create_dir(&corrupt).expect("mkdir");
    std::fs::write(corrupt.join("chat.sqlite3"), "garbage ".repeat(1000)).expect("write");
    let newer = scratch.path().join("newer");
    std::fs::create_dir(&newer).expect("mkdir");
    rusqlite::Connection::open(newer.join("chat.sqlite3"))
        .and_then(|database| database.pragma_update(None, "user_version", 99))
        .expect("a database from the future");

    let cases = [
        (
            server_with(&a_file),
            "cannot use the data folder",
            "File exists",
        ),
        (
            server_with(&corrupt),
            "cannot use the database",
            "file is not a database",
        ),
        (
            server_with(&newer),
            "written by a newer chat-server",
            "schema 99",
        ),
    ];
    for (mut command, what, why) in cases {
        let (status, stderr) = run_to_exit(&mut command);
        assert_eq!(status, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("chat-server: "), "{stderr}");
        assert!(
            stderr.contains(what) && stderr.contains(why),
            "{what}, {why}: {stderr}"
        );
    }

    // A folder its user may not write to. Root may write anywhere, so as root the
    // server runs as nobody.
    let locked = scratch.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    let mut command = if is_root() {
        std::fs::set_permissions(scratch.path(), permissions(0o755)).expect("chmod");
        std::fs::set_permissions(&locked, permissions(0o755)).expect("chmod");
        let mut command = StdCommand::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(testkit::chromium::chat_server_binary())
            .arg("--data-dir")
            .arg(&locked);
        command
    } else {
        std::fs::set_permissions(&locked, permissions(0o555)).expect("chmod");
        server_with(&locked)
    };
    let (status, stderr) = run_to_exit(&mut command);
    assert_eq!(status, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    // The folder's lock file is the first thing the server writes there.
    assert!(stderr.contains("cannot use the data folder"), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

fn permissions(mode: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(mode)
}

fn is_root() -> bool {
    StdCommand::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// A small tmpfs mounted on a scratch folder, unmounted when dropped.
struct SmallDisk(Scratch);

impl SmallDisk {
    fn mount(bytes: usize) -> Self {
        let scratch = Scratch::new("small-disk");
        let status = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(scratch.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self(scratch)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Events that wait for the journal before sessions stop reading (journal.rs).
const MAX_BACKLOG_BYTES: u64 = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs, which needs root; .ci/run runs it"]
async fn a_full_disk_refuses_sessions_bounds_the_backlog_and_loses_nothing() {
    const MESSAGES: usize = 600;
    let disk = SmallDisk::mount(64 << 20);
    let config = Config {
        rate_limit: None,
        // Once the disk has room, the whole backlog (8 MiB here) is fanned out at once:
        // room for it, so that a reader slowed down by a busy machine is not closed as
        // a slow consumer, which is not what this test is about.
        max_queue_bytes: 32 << 20,
        ..durable(&disk.0.path().join("data"))
    };
    let server = TestServer::start_with(config).await;
    let mut alice = V1::connect(&server, "/ws/1").await;
    alice.seated().await;
    let (bob, _) = tokio_tungstenite::connect_async(server.url("/ws/2"))
        .await
        .expect("bob connects");
    assert_eq!(alice.event().await.kind, EventKind::join(), "bob's join");

    let filler = disk.0.path().join("filler");
    let mut file = std::fs::File::create(&filler).expect("make the filler");
    let chunk = vec![b'x'; 64 * 1024];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);

    // Bob floods (and reads his echoes, so that only the disk holds him back).
    let (texts, sending, reading) = flood(bob, MESSAGES);

    let unhealthy = wait_for_health(server.address, 503).await;
    assert!(
        unhealthy.contains("cannot write the history"),
        "{unhealthy}"
    );
    server
        .refuses(&upgrade_request("/ws/3"), 503, "cannot write the history")
        .await;

    // The backlog grows to its bound and stays there: bob is no longer read.
    let backlog = settled_gauge(
        server.address,
        "chat_history_backlog_bytes",
        MAX_BACKLOG_BYTES,
        Duration::from_secs(1),
    )
    .await;
    eprintln!("backlog settled at {backlog} bytes");
    assert!(
        backlog >= MAX_BACKLOG_BYTES,
        "the flood reached the bound: {backlog}"
    );
    assert!(
        backlog < MAX_BACKLOG_BYTES + 64 * 1024,
        "past the bound by at most one message: {backlog}"
    );
    assert!(!sending.is_finished(), "TCP holds bob back");
    // Nothing unwritten reaches anyone.
    alice.socket.expect_silence().await;

    std::fs::remove_file(&filler).expect("make room");
    for text in &texts {
        let event = within("the messages, once written", alice.event()).await;
        assert_eq!(event.kind, said(text));
    }
    within("bob's sends", sending).await.expect("bob sent");
    within("bob's echoes", reading).await.expect("bob read");
    assert_eq!(health(server.address).await, Some(200));
    // The gauge drops once the last batch has been fanned out, which can be a moment
    // after alice has read it.
    drained_gauge(server.address, "chat_history_backlog_bytes").await;
    server.stop().await;
}
