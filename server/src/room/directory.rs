//! Which connections each id has on this node, and in which room: so that a message in
//! a direct-message room reaches its two ids' chat.v2.json connections elsewhere as a
//! `dm` notice, and a new conversation shows up at once rather than at the next `dms`;
//! and so that a server-wide ban closes every connection of its id, in every room.
//!
//! The notice is a hint, like a badge: a connection that misses one (its node was
//! catching up with the cluster, say) still learns of the room from `dms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use chat::v1::{self, EventKind, RoomName};
use chat::{ClientId, v2};

use crate::room::Protocol;
use crate::room::outbox::{Outbox, Removal};
use crate::room::wire;

/// The connections of every id on this node.
#[derive(Default)]
pub struct Directory {
    ids: Mutex<HashMap<ClientId, Vec<Listed>>>,
}

/// One connection of an id: the room it is in, its key there, what it speaks, and its
/// outbox.
struct Listed {
    room: RoomName,
    key: u64,
    protocol: Protocol,
    outbox: Weak<Outbox>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Directory")
            .field("ids", &self.lock().len())
            .finish()
    }
}

impl Directory {
    /// Lists member `key` of `room`, connected as `id` with `outbox`, speaking
    /// `protocol`.
    pub fn add(
        &self,
        id: &ClientId,
        room: &RoomName,
        key: u64,
        protocol: Protocol,
        outbox: &Arc<Outbox>,
    ) {
        // Most ids have one connection: room for one, where a `Vec`'s first push
        // makes room for four (about 150 bytes more for every connection).
        let mut ids = self.lock();
        let listed = ids
            .entry(id.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        listed.push(Listed {
            room: room.clone(),
            key,
            protocol,
            outbox: Arc::downgrade(outbox),
        });
    }

    /// Ends every connection of `id` on this node, in any room, with `removal`: a
    /// server-wide ban, as each node hears of it.
    pub fn remove_everywhere(&self, id: &ClientId, removal: &Removal) {
        let outboxes: Vec<Arc<Outbox>> = match self.lock().get(id) {
            Some(listed) => listed
                .iter()
                .filter_map(|listed| listed.outbox.upgrade())
                .collect(),
            None => return,
        };
        for outbox in outboxes {
            outbox.remove(removal.clone());
        }
    }

    /// Forgets member `key` of `room`, once it has left.
    pub fn remove(&self, id: &ClientId, room: &RoomName, key: u64) {
        let mut ids = self.lock();
        if let Some(listed) = ids.get_mut(id) {
            listed.retain(|listed| !(listed.key == key && listed.room == *room));
            if listed.is_empty() {
                ids.remove(id);
            }
        }
    }

    /// Tells both ids of direct-message room `room` of `event`, a new message there,
    /// on each of their connections in another room; connections in `room` hear the
    /// message itself. Anything but a message, or a room that is not direct, is
    /// nobody's news.
    pub fn tell(&self, room: &RoomName, event: &v1::Event) {
        if !matches!(event.kind, EventKind::Message { .. }) {
            return;
        }
        let Some(Ok((first, second))) = v2::direct_members(room) else {
            return;
        };
        let ids = self.lock();
        for (id, with) in [(&first, &second), (&second, &first)] {
            let Some(listed) = ids.get(id) else {
                continue;
            };
            let elsewhere: Vec<Arc<Outbox>> = listed
                .iter()
                .filter(|listed| listed.room != *room && listed.protocol == Protocol::V2)
                .filter_map(|listed| listed.outbox.upgrade())
                .collect();
            if elsewhere.is_empty() {
                continue;
            }
            let notice = v2::DirectNotice {
                room: room.to_string(),
                with: with.to_string(),
                id: event.id.clone(),
                name: event.name.clone(),
                at: event.offset,
                ts: event.ts,
            };
            let frame = wire::json(&notice, 96 + room.as_str().len() + event.id.len());
            for outbox in elsewhere {
                outbox.push(&frame);
            }
            // `dm.7.7`, one's own notes, has one id: tell it once.
            if first == second {
                break;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientId, Vec<Listed>>> {
        // Every change is one push, retain or remove, complete before the guard drops.
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> ClientId {
        ClientId::parse(text).unwrap()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn queued(outbox: &Outbox) -> usize {
        let mut frames = Vec::new();
        outbox.take_queued(&mut frames);
        frames.len()
    }

    fn message(from: &str, offset: u64) -> v1::Event {
        v1::Event {
            offset,
            ts: 1,
            id: from.to_owned(),
            name: None,
            kind: EventKind::Message {
                text: "psst".to_owned(),
                nonce: None,
                reply_to: None,
                kind: None,
                state: Default::default(),
            },
        }
    }

    #[test]
    fn a_direct_message_reaches_both_ids_elsewhere_and_nobody_in_the_room() {
        let directory = Directory::default();
        let (elsewhere, in_the_room, sender_elsewhere, stranger) = (
            Arc::new(Outbox::new(1 << 16)),
            Arc::new(Outbox::new(1 << 16)),
            Arc::new(Outbox::new(1 << 16)),
            Arc::new(Outbox::new(1 << 16)),
        );
        directory.add(&id("8"), &room("main"), 0, Protocol::V2, &elsewhere);
        directory.add(&id("8"), &room("dm.7.8"), 0, Protocol::V2, &in_the_room);
        directory.add(&id("7"), &room("main"), 1, Protocol::V2, &sender_elsewhere);
        directory.add(&id("9"), &room("main"), 2, Protocol::V2, &stranger);

        directory.tell(&room("dm.7.8"), &message("7", 3));

        assert_eq!(queued(&elsewhere), 1);
        assert_eq!(queued(&sender_elsewhere), 1);
        assert_eq!(queued(&in_the_room), 0);
        assert_eq!(queued(&stranger), 0);
    }

    #[test]
    fn only_messages_in_direct_rooms_are_told_and_a_removed_connection_hears_nothing() {
        let directory = Directory::default();
        let outbox = Arc::new(Outbox::new(1 << 16));
        directory.add(&id("8"), &room("main"), 0, Protocol::V2, &outbox);
        directory.tell(&room("lobby"), &message("7", 1));
        let mut join = message("7", 2);
        join.kind = EventKind::join();
        directory.tell(&room("dm.7.8"), &join);
        assert_eq!(queued(&outbox), 0);

        directory.remove(&id("8"), &room("main"), 0);
        directory.tell(&room("dm.7.8"), &message("7", 3));
        assert_eq!(queued(&outbox), 0);
        assert!(directory.lock().is_empty());
    }
}
