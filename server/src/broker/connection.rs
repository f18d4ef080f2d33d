//! Where the node's Redis is: one server (`redis://host:port[/db]`) or a Redis Cluster
//! (`redis+cluster://host:port[,host:port...]`, any of its nodes as seeds), and the
//! connection to either behind one type that the broker's commands, scripts and
//! pipelines run on.
//!
//! On a Redis Cluster every command goes to the primary of its key's slot; a pipeline
//! must stay in one slot (the `redis` crate refuses one that crosses slots), so the
//! broker sends one per partition there ([`Redis::is_cluster`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// The scheme of a Redis Cluster's URL.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A Redis to connect to.
#[derive(Clone)]
pub(super) enum Redis {
    Single(redis::Client),
    /// The seeds, as `redis://` URLs.
    Cluster(Vec<String>),
}

impl Redis {
    /// The Redis `url` names; an error if it names none.
    pub(super) fn parse(url: &str) -> RedisResult<Self> {
        match url.strip_prefix(CLUSTER_SCHEME) {
            Some(seeds) => {
                let seeds: Vec<String> = seeds
                    .trim_end_matches('/')
                    .split(',')
                    .filter(|seed| !seed.is_empty())
                    .map(|seed| format!("redis://{seed}"))
                    .collect();
                // Checks the seeds' form now rather than at each connection.
                ClusterClient::new(seeds.clone())?;
                Ok(Self::Cluster(seeds))
            }
            None => Ok(Self::Single(redis::Client::open(url)?)),
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A new connection, whose commands may take `response_timeout`.
    pub(super) async fn connect(
        &self,
        connection_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<Connection> {
        match self {
            Self::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(connection_timeout)
                    .set_response_timeout(response_timeout);
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Connection::Single(connection))
            }
            Self::Cluster(seeds) => {
                let client = ClusterClient::builder(seeds.clone())
                    .connection_timeout(connection_timeout)
                    .response_timeout(response_timeout)
                    // A node that cannot reach the cluster closes its clients (see
                    // `Broker::run`) rather than waiting through many retries.
                    .retries(2)
                    .build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// A connection to one Redis, or to every primary of a Redis Cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_seeds_and_a_plain_one_is_one_server() {
        let Ok(Redis::Cluster(seeds)) =
            Redis::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/")
        else {
            panic!("a cluster");
        };
        assert_eq!(seeds, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
        assert!(
            !Redis::parse("redis://127.0.0.1:6379/2")
                .unwrap()
                .is_cluster()
        );
        assert!(Redis::parse("redis+cluster://").is_err(), "no seed");
    }
}
