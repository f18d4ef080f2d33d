//! Reaping: when a node's `alive` key has expired, a surviving node that reads one of
//! the partitions it was registered in claims its `members` hash there and announces
//! those members' leaves. Partitions nobody reads are reaped by the first node to read
//! one again, before it takes its first room's snapshot.

use std::collections::HashMap;

use chat::v1::{self, EventKind, RoomName};
use redis::AsyncCommands;
use tracing::{info, warn};

use super::BrokerError;
use super::append::{Appends, Keep};
use super::connection::Connection;
use super::keys::{alive_key, members_key, nodes_key, reaping_key};
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
    let members: HashMap<String, String> = redis.hgetall(&claimed).await?;
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
            kind: EventKind::Leave,
        };
        appends.push((dead, key), &room, &leave);
    }
    let (mut pipe, _) = appends.into_pipeline();
    pipe.del(&claimed).ignore();
    pipe.query_async::<()>(redis).await?;
    Ok(members.len())
}

/// Reaps, in each of the partitions `reading`, the nodes registered there whose `alive`
/// key has expired, and takes them off the partition's registry.
pub(super) async fn reap_dead_nodes(
    redis: &mut Connection,
    me: u64,
    keep: Keep,
    partitions: u16,
    reading: impl IntoIterator<Item = u16>,
) -> Result<(), BrokerError> {
    // Each node's key is asked about once, however many partitions list it.
    let mut alive: HashMap<u64, bool> = HashMap::new();
    for partition in reading {
        let registry = nodes_key(partition);
        let nodes: Vec<u64> = redis.smembers(&registry).await?;
        for node in nodes.into_iter().filter(|node| *node != me) {
            let is_alive = match alive.get(&node) {
                Some(&known) => known,
                None => {
                    let known: bool = redis.exists(alive_key(node)).await?;
                    *alive.entry(node).or_insert(known)
                }
            };
            if is_alive {
                continue;
            }
            let members = reap_partition(redis, node, me, keep, partitions, partition).await?;
            let _: () = redis.srem(&registry, node).await?;
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
