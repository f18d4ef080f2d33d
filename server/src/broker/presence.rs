//! Reaping: when a node's `alive` key has expired, a surviving node claims its
//! `members` hash and announces those members' leaves.

use std::collections::HashMap;

use chat::v1::{self, EventKind, RoomName};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

use super::BrokerError;
use super::append::{Appends, Keep};
use super::keys::{NODES, alive_key, members_key};
use crate::room::now_millis;

/// Announces the leaves of `dead`'s members, if this node (`me`) is the one to claim
/// them; returns how many.
pub(super) async fn reap(
    redis: &mut MultiplexedConnection,
    dead: u64,
    me: u64,
    keep: Keep,
) -> Result<usize, BrokerError> {
    let claimed = format!("chat:reaping:{dead:016x}:{me:016x}");
    let renamed: redis::RedisResult<()> = redis.rename(members_key(dead), &claimed).await;
    match renamed {
        Ok(()) => {}
        // The one error reply RENAME has is "no such key": nobody is left to announce,
        // or another node claimed them first.
        Err(error) if error.kind() == redis::ErrorKind::ResponseError => return Ok(0),
        Err(error) => return Err(error.into()),
    }
    let members: HashMap<String, String> = redis.hgetall(&claimed).await?;
    let mut appends = Appends::new(keep);
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
    let mut pipe = appends.into_pipeline();
    pipe.del(&claimed).ignore();
    pipe.query_async::<()>(redis).await?;
    if !members.is_empty() {
        info!(
            node = %format!("{dead:016x}"),
            members = members.len(),
            "announced the leaves of a node's members"
        );
    }
    Ok(members.len())
}

/// Finds registered nodes whose `alive` key has expired and reaps them.
pub(super) async fn reap_dead_nodes(
    redis: &mut MultiplexedConnection,
    me: u64,
    keep: Keep,
) -> Result<(), BrokerError> {
    let nodes: Vec<u64> = redis.smembers(NODES).await?;
    for node in nodes.into_iter().filter(|node| *node != me) {
        let alive: bool = redis.exists(alive_key(node)).await?;
        if !alive {
            reap(redis, node, me, keep).await?;
            let _: () = redis.srem(NODES, node).await?;
        }
    }
    Ok(())
}
