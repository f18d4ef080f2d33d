//! The rule behind issue 34's findings 1, 2, 4 and 12: a sender is slowed by the
//! largest frame its message causes in any protocol, batch deliveries (the journal's
//! after a write, the broker's of what it reads from Redis) respect each outbox's bound
//! the way live fan-out does, and only a client that does not read is ever evicted.
//!
//! The clustered tests need a `redis-server` and are ignored by a bare `cargo test`;
//! `.ci/run` runs them with `--include-ignored`.

use std::time::Duration;

use chat_server::Config;
use testkit::process::ServerProcess;
use testkit::redis::Redis;
use testkit::{TestServer, read_at_full_speed};
use tokio_tungstenite::tungstenite::{self, Message};

/// Issue 34, finding 2, clustered: a node that fell behind `chat:events` reads what it
/// missed in batches of up to 4 MiB, and delivers each event only once its room's
/// members have room for it. Here the node with the readers is frozen (its runtime,
/// which is this test's, is held) while a node in another process takes a burst of
/// 40 messages of 60 KB; then it reads them in one or two batches, into outboxes of
/// 1 MiB. Without the wait for room, the delivery pushes them all before any writer
/// runs, and every reader is closed as a slow consumer.
#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_node_that_fell_behind_delivers_what_it_missed_to_readers_at_full_speed() {
    const MESSAGES: usize = 40;
    let redis = Redis::start().await;
    let url = redis.url();
    // Presence outlives the freeze, so that neither node counts the other as gone.
    let publisher = ServerProcess::start(&[
        "--redis-url",
        &url,
        "--presence-ttl",
        "30",
        "--rate-limit",
        "0",
    ])
    .await;
    let readers_node: TestServer = redis
        .node_with(Config {
            presence_ttl: Duration::from_secs(30),
            ..redis.node_config()
        })
        .await;
    let mut readers = Vec::new();
    for id in 2..=4 {
        readers.push(readers_node.join(&id.to_string(), &id.to_string()).await);
    }
    let text = |n: usize| format!("burst {n} {}", "z".repeat(60_000));
    let said = |text: &str| text.contains("burst ");
    let reading: Vec<_> = readers
        .into_iter()
        .map(|reader| read_at_full_speed(reader, MESSAGES, said))
        .collect();
    // The sender, on the other node, from a thread of its own: this runtime, where the
    // readers' node runs, is held until the publisher has taken the whole burst and
    // sent it back to its sender, so all of it waits in Redis for the readers' node.
    let sender_url = publisher.url("/ws/1");
    let sender = std::thread::spawn(move || {
        let (mut socket, _) = tungstenite::connect(sender_url).expect("connect the sender");
        for n in 0..MESSAGES {
            socket.send(Message::text(text(n))).expect("send");
        }
        let mut echoes = 0;
        while echoes < MESSAGES {
            match socket.read().expect("read the echoes") {
                Message::Text(text) if said(&text) => echoes += 1,
                _ => {}
            }
        }
        let _ = socket.close(None);
    });
    sender.join().expect("the sender");
    for reader in reading {
        let texts = reader.await.expect("the reader").expect("not closed");
        for (n, got) in texts.iter().enumerate() {
            assert!(got.contains(&format!("burst {n} ")), "message {n} in order");
        }
    }
    drop(publisher);
}
