//! Where the cluster's state lives in Redis: every key's name, in one place.
//!
//! Every key of a room, its partition's event stream and each node's members in that
//! partition carry the partition's hash tag (`chat:{p7}:...`): Redis Cluster puts keys
//! with one tag in one slot, so that `APPEND`, which touches all of them, runs on one
//! primary. So does the registry of the nodes that read each partition, which its
//! readers look through for dead nodes to reap, and each node's `alive` key in each
//! partition it reads: no key is shared by every node but [`PARTITIONS`], read once per
//! connection, and a primary that fails over concerns only the nodes that read its
//! partitions.

/// About how many events each partition's stream keeps: enough for a node that falls
/// behind for a moment; one that falls further catches up from the rooms' own history.
pub(super) const EVENTS_KEPT: usize = 10_000;

/// How many partitions the cluster was started with: every node must agree, since it
/// decides where each room's keys are.
pub(super) const PARTITIONS: &str = "chat:partitions";

/// The partition of every direct-message room (`dm.<a>.<b>`) and of the server's own
/// room (server-wide bans), which every node with members reads: a message in a
/// direct-message room is told to its two ids' connections in other rooms on any node
/// (`room::directory`), and which nodes those are is not known in Redis; and every
/// handshake checks the server's bans, which should not cost a load each time.
pub(crate) const DIRECT_PARTITION: u16 = 0;

/// The partition `room` belongs to, of `partitions`: FNV-1a of its name, which never
/// changes between builds or machines (unlike `std`'s hasher); direct-message rooms
/// and the server's room all go to [`DIRECT_PARTITION`].
pub(crate) fn partition_of(room: &str, partitions: u16) -> u16 {
    if room.starts_with("dm.") || room == crate::room::SERVER_ROOM {
        return DIRECT_PARTITION;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

/// The stream of partition `partition`'s events, which the nodes with members in its
/// rooms read.
pub(super) fn events_key(partition: u16) -> String {
    format!("chat:{{p{partition}}}:events")
}

/// The prefix of every key of `room`, in partition `partition`.
fn room_key(partition: u16, room: &str, what: &str) -> String {
    format!("chat:{{p{partition}}}:room:{room}:{what}")
}

/// A room's keys, all in its partition's slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RoomKeys {
    pub(super) partition: u16,
    pub(super) meta: String,
    pub(super) history: String,
    pub(super) present: String,
    /// Each id's read position in the room: id -> offset.
    pub(super) reads: String,
    /// The room's operations by the offset they apply to: a sorted set whose members
    /// are the operations' offsets and whose scores are their targets, so that a page
    /// of the history finds the later operations on its messages without reading on to
    /// the end.
    pub(super) operations: String,
    /// The room's moderation state (see `room::rules`): field -> value. It does not
    /// expire with the room: a ban outlasts a quiet week.
    pub(super) rules: String,
    /// The partition's event stream.
    pub(super) events: String,
}

impl RoomKeys {
    pub(super) fn new(room: &str, partitions: u16) -> Self {
        let partition = partition_of(room, partitions);
        Self {
            partition,
            meta: room_key(partition, room, "meta"),
            history: room_key(partition, room, "history"),
            present: room_key(partition, room, "present"),
            reads: room_key(partition, room, "reads"),
            operations: room_key(partition, room, "operations"),
            rules: room_key(partition, room, "rules"),
            events: events_key(partition),
        }
    }
}

/// Node `node`'s members in the rooms of `partition`: `<room> <key>` -> the member as
/// its room's `present` lists it.
pub(super) fn members_key(partition: u16, node: u64) -> String {
    format!("chat:{{p{partition}}}:node:{node:016x}:members")
}

/// Where node `me` moves `dead`'s members of `partition` to announce their leaves: in
/// the same slot, so that the `RENAME` that claims them works on a Redis Cluster.
pub(super) fn reaping_key(partition: u16, dead: u64, me: u64) -> String {
    format!("chat:{{p{partition}}}:reaping:{dead:016x}:{me:016x}")
}

/// The nodes that have read `partition` since they registered, and so may have
/// members in its rooms: where the nodes that read it look for dead ones to reap.
pub(super) fn nodes_key(partition: u16) -> String {
    format!("chat:{{p{partition}}}:nodes")
}

/// Says that `node` is alive to the other readers of `partition`, who reap its members
/// there once it expires. It is refreshed for each partition the node reads, in that
/// partition's slot.
pub(super) fn alive_key(partition: u16, node: u64) -> String {
    format!("chat:{{p{partition}}}:node:{node:016x}:alive")
}

/// A new epoch, for a room Redis has nothing of.
pub(super) fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_by_partition_room_and_node_in_fixed_width_hex() {
        let keys = RoomKeys::new("ops", 16);
        let p = partition_of("ops", 16);
        assert_eq!(keys.partition, p);
        assert_eq!(keys.meta, format!("chat:{{p{p}}}:room:ops:meta"));
        assert_eq!(keys.history, format!("chat:{{p{p}}}:room:ops:history"));
        assert_eq!(keys.present, format!("chat:{{p{p}}}:room:ops:present"));
        assert_eq!(keys.reads, format!("chat:{{p{p}}}:room:ops:reads"));
        assert_eq!(
            keys.operations,
            format!("chat:{{p{p}}}:room:ops:operations")
        );
        assert_eq!(keys.rules, format!("chat:{{p{p}}}:room:ops:rules"));
        assert_eq!(keys.events, format!("chat:{{p{p}}}:events"));
        assert_eq!(
            members_key(3, 255),
            "chat:{p3}:node:00000000000000ff:members"
        );
        assert_eq!(nodes_key(3), "chat:{p3}:nodes");
        assert_eq!(alive_key(3, 255), "chat:{p3}:node:00000000000000ff:alive");
        assert_eq!(new_epoch().len(), 16);
    }

    #[test]
    fn rooms_go_to_stable_partitions_spread_over_all_of_them() {
        // Fixed values: a room must stay in its partition across builds, or its keys
        // are lost.
        assert_eq!(partition_of("main", 16), partition_of("main", 16));
        assert_eq!(partition_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as u16);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("dm.1.2", 16), DIRECT_PARTITION);
        assert_eq!(partition_of("_server", 16), DIRECT_PARTITION);
        let mut seen = [0usize; 16];
        for n in 0..1600 {
            seen[usize::from(partition_of(&format!("room-{n}"), 16))] += 1;
        }
        assert!(seen.iter().all(|&count| count > 50), "{seen:?}");
    }
}
