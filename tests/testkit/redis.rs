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

/// A Redis Cluster of three primaries, each with a replica, from Debian's
/// `redis-server` (`redis-cli --cluster create`), on free ports (and free cluster bus
/// ports), without persistence; every process killed when dropped.
pub struct RedisCluster {
    /// Every node's port, the primaries' first as `redis-cli` assigned them.
    pub ports: Vec<u16>,
    processes: Vec<Child>,
    _data: Scratch,
}

impl RedisCluster {
    /// Six nodes, joined into a cluster whose every slot is served (`cluster_state:ok`
    /// on each node). A primary gone silent for 2 s is failed over to its replica.
    pub async fn start() -> Self {
        let data = Scratch::new("redis-cluster");
        let mut ports = Vec::new();
        let mut processes = Vec::new();
        for _ in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let process = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                // A replica that never synced cannot be promoted: no 5 s wait before
                // the first sync (Redis's default, for more replicas to join it).
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(data.path())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server is installed (apt-get install redis-server)");
            processes.push(process);
            wait_until_listening(port, "redis-server").await;
            ports.push(port);
        }
        let nodes: Vec<String> = ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is installed with redis-server");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self {
            ports,
            processes,
            _data: data,
        };
        for &port in &cluster.ports {
            crate::eventually("the cluster to serve every slot", async || {
                let info = Self::cli(port, &["cluster", "info"]).await;
                info.contains("cluster_state:ok").then_some(())
            })
            .await;
        }
        crate::eventually("every replica to follow its primary", async || {
            let nodes = Self::cli(cluster.ports[0], &["cluster", "nodes"]).await;
            (nodes.matches("slave").count() == 3).then_some(())
        })
        .await;
        for &port in &cluster.ports {
            crate::eventually("every replica to have synced", async || {
                let info = Self::cli(port, &["info", "replication"]).await;
                (info.contains("role:master") || info.contains("master_link_status:up"))
                    .then_some(())
            })
            .await;
        }
        cluster
    }

    /// What `redis-cli -p port args…` prints (`--raw`).
    pub async fn cli(port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--raw"])
            .args(args)
            .output()
            .await
            .expect("redis-cli is installed with redis-server");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The ports of the nodes that are primaries now.
    pub async fn primaries(&self) -> Vec<u16> {
        let nodes = Self::cli(self.ports[0], &["cluster", "nodes"]).await;
        nodes
            .lines()
            // `<id> <address> <flags> <primary> <ping> <pong> <epoch> <link> <slots…>`:
            // a primary serving slots.
            .filter(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                fields.len() > 8 && fields[2].contains("master") && !fields[2].contains("fail")
            })
            .filter_map(|line| {
                let address = line.split(' ').nth(1)?;
                let port = address.split('@').next()?.rsplit(':').next()?;
                port.parse().ok()
            })
            .collect()
    }

    /// The port of the primary that serves `key`'s slot now.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let slot = Self::cli(self.ports[0], &["cluster", "keyslot", key]).await;
        let slot: u16 = slot.trim().parse().expect("a slot");
        let nodes = Self::cli(self.ports[0], &["cluster", "nodes"]).await;
        // `<id> <address> <flags> <primary> <ping> <pong> <epoch> <link> <slots…>`,
        // each slot range `first-last`, or one slot alone.
        let serving = nodes.lines().find(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.len() > 8
                && fields[2].contains("master")
                && !fields[2].contains("fail")
                && fields[8..].iter().any(|range| {
                    let (first, last) = range.split_once('-').unwrap_or((range, range));
                    match (first.parse::<u16>(), last.parse::<u16>()) {
                        (Ok(first), Ok(last)) => (first..=last).contains(&slot),
                        _ => false,
                    }
                })
        });
        let address = serving
            .and_then(|line| line.split(' ').nth(1))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {nodes}"));
        let port = address
            .split('@')
            .next()
            .and_then(|at| at.rsplit(':').next());
        port.and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("an address: {address}"))
    }

    /// `redis+cluster://` with the first node as the seed.
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.ports[0])
    }

    /// A clustered node's settings on this cluster, as [`Redis::node_config`].
    pub fn node_config(&self) -> Config {
        Config {
            redis_url: Some(self.url()),
            presence_ttl: Duration::from_secs(1),
            rate_limit: None,
            ..Config::default()
        }
    }

    /// A node in this process with [`RedisCluster::node_config`], once it is healthy.
    pub async fn node(&self) -> TestServer {
        let node = TestServer::start_with(self.node_config()).await;
        crate::wait_for_health(node.address, 200).await;
        node
    }

    /// SIGKILL to the node on `port`, as a crash.
    pub async fn kill(&mut self, port: u16) {
        let at = self.ports.iter().position(|&each| each == port);
        if let Some(at) = at {
            self.processes[at].kill().await.expect("stop redis-server");
        }
    }
}

/// A Redis primary with one replica, watched by three sentinels (Debian's
/// `redis-server` and `redis-sentinel`), on free ports, without persistence: a primary
/// unreachable for 1 s is failed over to its replica. Every process killed when
/// dropped.
pub struct RedisSentinel {
    /// The primary's port when it started, then the replica's.
    pub ports: [u16; 2],
    sentinels: Vec<u16>,
    processes: Vec<Child>,
    _data: Scratch,
}

impl RedisSentinel {
    /// The name the sentinels know the primary by.
    pub const PRIMARY: &str = "chat";

    pub async fn start() -> Self {
        let data = Scratch::new("redis-sentinel");
        let (primary, replica) = (free_port(), free_port());
        let mut processes = Vec::new();
        for (port, follows) in [(primary, None), (replica, Some(primary))] {
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                // A replica writes what it syncs to `dump.rdb` there: not in the
                // working folder, where every later test's Redis would load it.
                .arg("--dir")
                .arg(data.path());
            if let Some(primary) = follows {
                command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
            }
            let process = command
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server is installed (apt-get install redis-server)");
            processes.push(process);
            wait_until_listening(port, "redis-server").await;
        }
        crate::eventually("the replica to follow its primary", async || {
            let info = RedisCluster::cli(replica, &["info", "replication"]).await;
            info.contains("master_link_status:up").then_some(())
        })
        .await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            // Sentinel rewrites its file: one each, in the scratch folder.
            let file = data.path().join(format!("sentinel-{port}.conf"));
            let settings = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n",
                data.path().display(),
                name = Self::PRIMARY,
            );
            std::fs::write(&file, settings).expect("write sentinel.conf");
            let process = Command::new("redis-sentinel")
                .arg(&file)
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-sentinel is installed (apt-get install redis-sentinel)");
            processes.push(process);
            wait_until_listening(port, "redis-sentinel").await;
            sentinels.push(port);
        }
        // Each sentinel must know the replica and the two others, or none may fail over.
        for &port in &sentinels {
            crate::eventually("the sentinels to know each other", async || {
                let known = RedisCluster::cli(port, &["sentinel", "master", Self::PRIMARY]).await;
                let fields: Vec<&str> = known.lines().collect();
                let value = |name: &str| {
                    let at = fields.iter().position(|field| *field == name)?;
                    fields.get(at + 1).copied()
                };
                (value("num-other-sentinels") == Some("2") && value("num-slaves") == Some("1"))
                    .then_some(())
            })
            .await;
        }
        Self {
            ports: [primary, replica],
            sentinels,
            processes,
            _data: data,
        }
    }

    /// `redis+sentinel://` with the three sentinels.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{}", sentinels.join(","), Self::PRIMARY)
    }

    /// The port of the primary the first sentinel names now.
    pub async fn primary(&self) -> Option<u16> {
        let named = RedisCluster::cli(
            self.sentinels[0],
            &["sentinel", "get-master-addr-by-name", Self::PRIMARY],
        )
        .await;
        named.lines().nth(1)?.trim().parse().ok()
    }

    /// SIGKILL to the primary it started with, as a crash.
    pub async fn kill_primary(&mut self) {
        self.processes[0].kill().await.expect("stop redis-server");
    }

    /// A clustered node's settings on this Redis, as [`Redis::node_config`].
    pub fn node_config(&self) -> Config {
        Config {
            redis_url: Some(self.url()),
            presence_ttl: Duration::from_secs(1),
            rate_limit: None,
            ..Config::default()
        }
    }

    /// A node in this process on this Redis, once it is healthy.
    pub async fn node(&self) -> TestServer {
        let node = TestServer::start_with(self.node_config()).await;
        crate::wait_for_health(node.address, 200).await;
        node
    }
}
