//! Several `chat-server` nodes sharing one room through a real Redis.
//!
//! Ignored by a bare `cargo test`, which needs no Redis; `.ci/run` installs Debian's
//! `redis-server` and runs these with `--include-ignored`. Each test starts its own Redis
//! on a free port.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chat_server::Config;
use testkit::process::{ServerProcess, free_port, wait_until_listening};
use testkit::{Client, PATIENCE, TestServer, assert_one_order};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A throwaway `redis-server` on a free port, without persistence.
struct Redis {
    port: u16,
    process: Option<Child>,
}

impl Redis {
    async fn start() -> Self {
        let port = free_port();
        let mut redis = Self {
            port,
            process: None,
        };
        redis.restart().await;
        redis
    }

    /// Starts (again) on the same port.
    async fn restart(&mut self) {
        let process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.process = Some(process);
        wait_until_listening(self.port, "redis-server").await;
    }

    async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.expect("stop redis-server");
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn node_config(redis: &Redis) -> Config {
    Config {
        redis_url: Some(redis.url()),
        presence_ttl: Duration::from_secs(1),
        rate_limit: None,
        ..Config::default()
    }
}

/// A node in this process, ready once its `/healthz` says so.
async fn node(redis: &Redis) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let node = TestServer::start_on(listener, node_config(redis));
    wait_healthy(&node, 200).await;
    node
}

async fn wait_healthy(node: &TestServer, status: u16) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = node
            .http("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        if response.status == status {
            return response.body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {status}: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn joins_messages_and_leaves_cross_nodes() {
    let redis = Redis::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);

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
    let redis = Redis::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);
    let mut clients = [
        one.join("1", "1").await,
        two.join("2", "2").await,
        one.join("3", "3").await,
        two.join("4", "4").await,
    ];
    // Bursts from senders on both nodes at once.
    assert_one_order(&mut clients, MESSAGES).await;
}

#[tokio::test]
#[ignore = "needs redis-server; .ci/run runs it"]
async fn a_newcomers_first_frame_is_its_own_join_even_under_traffic() {
    let redis = Redis::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);
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
    let redis = Redis::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);
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
    let survivor = node(&redis).await;
    let redis_url = redis.url();
    let args = [
        "--redis-url",
        &redis_url,
        "--presence-ttl",
        "1",
        "--rate-limit",
        "0",
    ];
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
    let mut redis = Redis::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);
    let mut alice = one.join("1", "1").await;
    let mut bob = two.join("2", "2").await;
    assert_eq!(alice.recv().await, "Client #2 has entered the chat");

    redis.stop().await;
    closed_for_the_outage([&mut alice, &mut bob]).await;
    let reason = wait_healthy(&one, 503).await;
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
    wait_healthy(one, 200).await;
    wait_healthy(two, 200).await;
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
    let mut redis = Redis::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);
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

