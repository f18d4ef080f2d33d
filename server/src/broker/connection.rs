//! Where the node's Redis is: one server (`redis://host:port[/db]`), the primary that
//! Sentinel names (`redis+sentinel://host:port[,host:port...]/<name>`, the sentinels and
//! the name of the primary they watch), or a Redis Cluster
//! (`redis+cluster://host:port[,host:port...]`, any of its nodes as seeds), and the
//! connection to any of them behind one type that the broker's commands, scripts and
//! pipelines run on.
//!
//! With Sentinel, each new connection asks the sentinels where the primary is now, so a
//! node that lost its primary finds the replica Sentinel promoted when it reconnects.
//!
//! On a Redis Cluster every command goes to the primary of its key's slot; a pipeline
//! must stay in one slot (the `redis` crate refuses one that crosses slots), so the
//! broker sends one per partition there ([`Redis::is_cluster`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// The scheme of a Redis Cluster's URL.
const CLUSTER_SCHEME: &str = "redis+cluster://";
/// The scheme of a URL that names sentinels and the primary they watch.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A Redis to connect to.
#[derive(Clone)]
pub(super) enum Redis {
    Single(redis::Client),
    /// The sentinels, as `redis://` URLs, and the name of the primary they watch.
    Sentinel {
        sentinels: Vec<String>,
        primary: String,
    },
    /// The seeds, as `redis://` URLs.
    Cluster(Vec<String>),
}

/// The `host:port` list of a URL after its scheme, as `redis://` URLs.
fn addresses(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|address| !address.is_empty())
        .map(|address| format!("redis://{address}"))
        .collect()
}

impl Redis {
    /// The Redis `url` names; an error if it names none.
    pub(super) fn parse(url: &str) -> RedisResult<Self> {
        if let Some(seeds) = url.strip_prefix(CLUSTER_SCHEME) {
            let seeds = addresses(seeds.trim_end_matches('/'));
            // Checks the seeds' form now rather than at each connection.
            ClusterClient::new(seeds.clone())?;
            return Ok(Self::Cluster(seeds));
        }
        if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
            let (sentinels, primary) = rest.split_once('/').unwrap_or((rest, ""));
            let sentinels = addresses(sentinels);
            if primary.is_empty() || sentinels.is_empty() {
                let wanted = "redis+sentinel://host:port[,host:port...]/<primary's name>";
                return Err((
                    redis::ErrorKind::InvalidClientConfig,
                    "expected",
                    wanted.to_owned(),
                )
                    .into());
            }
            let primary = primary.to_owned();
            // Checks the sentinels' form now rather than at each connection.
            SentinelClient::build(
                sentinels.clone(),
                primary.clone(),
                None,
                SentinelServerType::Master,
            )?;
            return Ok(Self::Sentinel { sentinels, primary });
        }
        Ok(Self::Single(redis::Client::open(url)?))
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
            Self::Sentinel { sentinels, primary } => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(connection_timeout)
                    .set_response_timeout(response_timeout);
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    primary.clone(),
                    None,
                    SentinelServerType::Master,
                )?;
                // Asking the sentinels may hang on one that is gone: bounded too.
                let connecting = sentinel.get_async_connection_with_config(&config);
                let connection = tokio::time::timeout(connection_timeout * 2, connecting)
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((
                            redis::ErrorKind::IoError,
                            "no answer from the sentinels or the primary they name",
                        ))
                    })??;
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
        let Ok(Redis::Sentinel { sentinels, primary }) =
            Redis::parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/chat")
        else {
            panic!("sentinels");
        };
        assert_eq!(
            sentinels,
            ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"]
        );
        assert_eq!(primary, "chat");
        assert!(
            Redis::parse("redis+sentinel://127.0.0.1:26379").is_err(),
            "no name"
        );
        assert!(
            Redis::parse("redis+sentinel:///chat").is_err(),
            "no sentinel"
        );
    }
}
