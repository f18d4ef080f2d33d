//! A throwaway `redis-server` per test, and clustered `chat-server` nodes on it: the
//! opening the cluster tests share.

use std::process::Stdio;
use std::time::Duration;

use chat_server::Config;
use tokio::process::{Child, Command};

use crate::TestServer;
use crate::process::{Scratch, free_port, wait_until_listening};

/// A `redis-server` on a free port, without persistence unless it is given a folder to
/// keep its data in; killed when dropped.
pub struct Redis {
    pub port: u16,
    process: Option<Child>,
    data: Option<Scratch>,
}

impl Redis {
    pub async fn start() -> Self {
        Self::start_in(None).await
    }

    /// A Redis that keeps every write in an append-only file in `data`, synced before
    /// it answers, so that a killed and restarted one has everything it acknowledged.
    pub async fn durable(data: Scratch) -> Self {
        Self::start_in(Some(data)).await
    }

    async fn start_in(data: Option<Scratch>) -> Self {
        let mut redis = Self {
            port: free_port(),
            process: None,
            data,
        };
        redis.restart().await;
        redis
    }

    /// Starts (again) on the same port, and waits until it listens.
    pub async fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""]);
        match &self.data {
            Some(folder) => command
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .arg("--dir")
                .arg(folder.path()),
            None => command.args(["--appendonly", "no"]),
        };
        let process = command
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.process = Some(process);
        wait_until_listening(self.port, "redis-server").await;
    }

    /// SIGKILL, as a crash.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.expect("stop redis-server");
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A clustered node's settings on this Redis: a short presence TTL, so that a dead
    /// node's members are announced gone within a second or two, and no rate limit.
    pub fn node_config(&self) -> Config {
        Config {
            redis_url: Some(self.url()),
            presence_ttl: Duration::from_secs(1),
            rate_limit: None,
            ..Config::default()
        }
    }

    /// The flags of a node in its own process, as [`Redis::node_config`] sets them.
    pub fn process_args(redis_url: &str) -> [&str; 6] {
        [
            "--redis-url",
            redis_url,
            "--presence-ttl",
            "1",
            "--rate-limit",
            "0",
        ]
    }

    /// A node in this process with `config`, once its `/healthz` says it is connected.
    pub async fn node_with(&self, config: Config) -> TestServer {
        let node = TestServer::start_with(config).await;
        crate::wait_for_health(node.address, 200).await;
        node
    }

    /// A node in this process with [`Redis::node_config`], once it is healthy.
    pub async fn node(&self) -> TestServer {
        self.node_with(self.node_config()).await
    }

    /// Two healthy nodes in this process sharing this Redis.
    pub async fn two_nodes(&self) -> (TestServer, TestServer) {
        (self.node().await, self.node().await)
    }
}

/// A fresh Redis and two healthy nodes on it: how most cluster tests begin.
pub async fn cluster_of_two() -> (Redis, TestServer, TestServer) {
    let redis = Redis::start().await;
    let (one, two) = redis.two_nodes().await;
    (redis, one, two)
}
