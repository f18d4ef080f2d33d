//! Where the cluster's state lives in Redis: every key's name, in one place.

/// The stream of every room's events, which every node reads.
pub(super) const EVENTS: &str = "chat:events";

/// About how many events `chat:events` keeps: enough for a node that falls behind for a
/// moment; one that falls further catches up from the rooms' own history.
pub(super) const EVENTS_KEPT: usize = 10_000;

/// The set of node ids that have registered.
pub(super) const NODES: &str = "chat:nodes";

pub(super) fn meta_key(room: &str) -> String {
    format!("chat:room:{room}:meta")
}

pub(super) fn history_key(room: &str) -> String {
    format!("chat:room:{room}:history")
}

pub(super) fn present_key(room: &str) -> String {
    format!("chat:room:{room}:present")
}

/// Each id's read position in the room: id -> offset.
pub(super) fn reads_key(room: &str) -> String {
    format!("chat:room:{room}:reads")
}

/// The room's operations by the offset they apply to: a sorted set whose members are
/// the operations' offsets and whose scores are their targets, so that a page of the
/// history finds the later operations on its messages without reading on to the end.
pub(super) fn operations_key(room: &str) -> String {
    format!("chat:room:{room}:operations")
}

/// The room's moderation state (see `room::rules`): field -> value. It does not expire
/// with the room: a ban outlasts a quiet week.
pub(super) fn rules_key(room: &str) -> String {
    format!("chat:room:{room}:rules")
}

pub(super) fn members_key(node: u64) -> String {
    format!("chat:node:{node:016x}:members")
}

pub(super) fn alive_key(node: u64) -> String {
    format!("chat:node:{node:016x}:alive")
}

/// A new epoch, for a room Redis has nothing of.
pub(super) fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_by_room_and_by_node_in_fixed_width_hex() {
        assert_eq!(meta_key("ops"), "chat:room:ops:meta");
        assert_eq!(history_key("ops"), "chat:room:ops:history");
        assert_eq!(present_key("ops"), "chat:room:ops:present");
        assert_eq!(reads_key("ops"), "chat:room:ops:reads");
        assert_eq!(operations_key("ops"), "chat:room:ops:operations");
        assert_eq!(members_key(255), "chat:node:00000000000000ff:members");
        assert_eq!(alive_key(255), "chat:node:00000000000000ff:alive");
        assert_eq!(new_epoch().len(), 16);
    }
}
