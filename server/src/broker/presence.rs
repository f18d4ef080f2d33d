//! Reaping: each node keeps an `alive` key in each partition it reads. When one has
//! expired (the node was killed, lost its machine, or stopped reading there), a
//! surviving node that reads the partition claims the node's `members` hash there and
//! announces those members' leaves. Partitions nobody reads are reaped by the first
//! node to read one again, before it takes its first room's snapshot.

use std::collections::HashMap;

use chat::v1::{self, EventKind, RoomName};
use redis::AsyncCommands;
use tracing::{info, warn};

use super::BrokerError;
use super::append::{Appends, Keep};
use super::connection::Connection;
use super::keys::{alive_key, members_key, nodes_key, reaping_key};
use super::scripts::CLAIM;
use crate::room::now_millis;

/// Announces the leaves of `dead`'s members in every one of the `partitions`, where
/// this node (`me`) is the one to claim them; returns how many.
pub(super) async fn reap(
    redis: &mut Connection,
    dead: u64,
    me: u64,
    keep: Keep,
    partitions: u16,
) -> Result<usize, BrokerError> {
    let mut reaped = 0;
    for partition in 0..partitions {
        reaped += reap_partition(redis, dead, me, keep, partitions, partition).await?;
    }
    if reaped > 0 {
        info!(
            node = %format!("{dead:016x}"),
            members = reaped,
            "announced the leaves of a node's members"
        );
    }
    Ok(reaped)
}

/// Announces the leaves of `dead`'s members in the rooms of `partition`, if this node
/// (`me`) is the one to claim them; returns how many. The claim and the leaves stay in
/// the partition's slot.
async fn reap_partition(
    redis: &mut Connection,
    dead: u64,
    me: u64,
    keep: Keep,
    partitions: u16,
    partition: u16,
) -> Result<usize, BrokerError> {
    let claimed = reaping_key(partition, dead, me);
    let renamed: redis::RedisResult<()> =
        redis.rename(members_key(partition, dead), &claimed).await;
    match renamed {
        Ok(()) => {}
        // The one error reply RENAME has is "no such key": nobody is left to announce,
        // or another node claimed them first.
        Err(error) if error.kind() == redis::ErrorKind::ResponseError => return Ok(0),
        Err(error) => return Err(error.into()),
    }
    announce_leaves(redis, dead, &claimed, keep, partitions).await
}

/// Announces the leaves of `dead`'s members claimed into `claimed`, then forgets them;
/// returns how many.
async fn announce_leaves(
    redis: &mut Connection,
    dead: u64,
    claimed: &str,
    keep: Keep,
    partitions: u16,
) -> Result<usize, BrokerError> {
    let members: HashMap<String, String> = redis.hgetall(claimed).await?;
    let mut appends = Appends::new(keep, partitions);
    for (seat, present) in &members {
        // `<room> <key>`, and the member as its room's `present` lists it.
        let parsed = seat.split_once(' ').and_then(|(room, key)| {
            let room = RoomName::parse(room).ok()?;
            let key = key.parse::<u64>().ok()?;
            let present = serde_json::from_str::<v1::Present>(present).ok()?;
            Some((room, key, present))
        });
        let Some((room, key, present)) = parsed else {
            warn!(%seat, "skipped an unreadable member of a gone node");
            continue;
        };
        let leave = v1::Event {
            offset: 0,
            ts: now_millis(),
            id: present.id,
            name: present.name,
            kind: EventKind::leave(),
        };
        appends.push((dead, key), &room, &leave);
    }
    let (mut pipe, _) = appends.into_pipeline();
    pipe.del(claimed).ignore();
    pipe.query_async::<()>(redis).await?;
    Ok(members.len())
}

/// Reaps, in each of the partitions `reading`, the nodes registered there whose `alive`
/// key there has expired, and takes them off the partition's registry.
pub(super) async fn reap_dead_nodes(
    redis: &mut Connection,
    me: u64,
    keep: Keep,
    partitions: u16,
    reading: impl IntoIterator<Item = u16>,
) -> Result<(), BrokerError> {
    for partition in reading {
        let registry = nodes_key(partition);
        let nodes: Vec<u64> = redis.smembers(&registry).await?;
        for node in nodes.into_iter().filter(|node| *node != me) {
            let claimed = reaping_key(partition, node, me);
            let claim: i64 = redis::Script::new(CLAIM)
                .key(alive_key(partition, node))
                .key(members_key(partition, node))
                .key(&claimed)
                .key(&registry)
                .arg(node)
                .invoke_async(redis)
                .await?;
            if claim != 1 {
                continue;
            }
            let members = announce_leaves(redis, node, &claimed, keep, partitions).await?;
            if members > 0 {
                info!(
                    node = %format!("{node:016x}"),
                    partition,
                    members,
                    "announced the leaves of a gone node's members"
                );
            }
        }
    }
    Ok(())
}
