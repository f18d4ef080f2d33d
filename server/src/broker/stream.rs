//! Reading the partitions' streams and the rooms' history: stream entries parsed into
//! events, a batch at a time.

use chat::v1::{self, RoomName};
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tracing::warn;

use super::connection::{Connection, Redis};
use super::keys::events_key;
use super::{BrokerError, READ_WAIT};
use crate::room::{Ephemeral, MemberRef};

/// About the most bytes of events read from a partition's stream at once.
pub(super) const READ_BYTES: usize = 4 * 1024 * 1024;

/// The most events read from a partition's stream at once.
pub(super) const MOST_PER_READ: usize = 1024;

/// An entry read from a partition's stream.
pub(super) enum Entry {
    /// An event of the room's log, numbered in its history `epoch`.
    Event {
        room: RoomName,
        from: MemberRef,
        epoch: String,
        event: v1::Event,
    },
    /// A frame outside the log, from a member of node `node`.
    Ephemeral {
        room: RoomName,
        node: u64,
        what: Ephemeral,
    },
}

/// Where an entry is in a stream: its id, `<milliseconds>-<sequence>`.
pub(super) type StreamPosition = (u64, u64);

pub(super) fn position(id: &str) -> Option<StreamPosition> {
    let (millis, sequence) = id.split_once('-')?;
    Some((millis.parse().ok()?, sequence.parse().ok()?))
}

/// Events read from a partition's stream, and the position of the last one.
pub(super) struct Batch {
    pub(super) partition: u16,
    pub(super) entries: Vec<Entry>,
    pub(super) read_to: Option<StreamPosition>,
}

/// A stream entry: its id and its fields, names and values in turn.
pub(super) type StreamEntry = (String, Vec<String>);

/// How many events of `bytes` each make a read of about [`READ_BYTES`].
pub(super) fn events_per_read(bytes: usize) -> usize {
    (READ_BYTES / bytes.max(64)).clamp(16, MOST_PER_READ)
}

/// Reads partition `partition`'s stream from after `start`, on a connection of its own
/// to `redis` (a blocking read holds its connection), a batch at a time, handing
/// each over before reading the next: what Redis has and this node has not fanned out
/// stays in Redis.
///
/// A batch holds about [`READ_BYTES`]: the first read takes as many events as fit if
/// each were as large as a message can be, and each next read as many as fit if they
/// are like the last batch's. (Small batches fall behind a busy room that large ones
/// keep up with; a burst of large events after small ones makes one batch of at most
/// [`MOST_PER_READ`] large events before the size adjusts.)
pub(super) async fn read_events(
    redis: Redis,
    partition: u16,
    mut start: String,
    mut count: usize,
    batches: mpsc::Sender<Result<Batch, BrokerError>>,
) {
    let connected = redis
        .connect(super::REDIS_TIMEOUT, READ_WAIT + super::REDIS_TIMEOUT)
        .await;
    let mut reader: Connection = match connected {
        Ok(reader) => reader,
        Err(error) => {
            let _ = batches.send(Err(BrokerError::Redis(error))).await;
            return;
        }
    };
    let stream = events_key(partition);
    loop {
        let options = redis::streams::StreamReadOptions::default()
            .count(count)
            .block(READ_WAIT.as_millis() as usize);
        let read: Result<Option<redis::streams::StreamReadReply>, _> =
            reader.xread_options(&[&stream], &[&start], &options).await;
        let batch = match read {
            Ok(reply) => {
                let ids = reply
                    .into_iter()
                    .flat_map(|reply| reply.keys)
                    .flat_map(|key| key.ids);
                let (mut entries, mut bytes) = (Vec::new(), 0);
                for entry in ids {
                    start.clone_from(&entry.id);
                    match read_live_entry(&entry) {
                        Ok((read, size)) => {
                            entries.push(read);
                            bytes += size;
                        }
                        Err(error) => warn!(%error, id = %entry.id, "skipped an unreadable event"),
                    }
                }
                if !entries.is_empty() {
                    count = events_per_read(bytes / entries.len());
                }
                Ok(Batch {
                    partition,
                    entries,
                    read_to: position(&start),
                })
            }
            Err(error) => Err(BrokerError::Redis(error)),
        };
        let failed = batch.is_err();
        if batches.send(batch).await.is_err() || failed {
            return;
        }
    }
}

pub(super) fn field<T: redis::FromRedisValue>(
    entry: &redis::streams::StreamId,
    name: &str,
) -> Result<T, BrokerError> {
    entry
        .get(name)
        .ok_or_else(|| BrokerError::Unreadable(format!("an event without {name:?}")))
}

/// An entry of a partition's stream, and the size of its event: an event has `e`, a frame
/// outside the log `x` (see `ephemeral.lua`).
pub(super) fn read_live_entry(
    entry: &redis::streams::StreamId,
) -> Result<(Entry, usize), BrokerError> {
    let room: String = field(entry, "r")?;
    let room = RoomName::parse(&room).map_err(|_| BrokerError::Unreadable(room))?;
    if entry.contains_key("x") {
        let what: String = field(entry, "x")?;
        let read = Entry::Ephemeral {
            room,
            node: field(entry, "n")?,
            what: serde_json::from_str(&what)
                .map_err(|error| BrokerError::Unreadable(error.to_string()))?,
        };
        return Ok((read, what.len()));
    }
    let event: String = field(entry, "e")?;
    let read = Entry::Event {
        room,
        from: (field(entry, "n")?, field(entry, "k")?),
        epoch: field(entry, "p")?,
        event: read_event(&event)?,
    };
    Ok((read, event.len()))
}

/// An event from the room's history, and the member it is from.
pub(super) type Numbered = (MemberRef, v1::Event);

/// A `history` entry's fields (names and values in turn): `n`, `k`, `e`, and for a
/// delete that purged its target `g`. Gives the entry's event, and for such a delete
/// what stood where it purged: the target as a tombstone and its edits without text
/// (see `append.lua`), from the delete's member.
pub(super) fn read_history_entry(
    fields: &[String],
) -> Result<(Numbered, Vec<Numbered>), BrokerError> {
    let value = |name: &str| {
        // Names are at even places: a value may equal a name.
        let at = fields.iter().step_by(2).position(|field| field == name);
        at.and_then(|at| fields.get(2 * at + 1))
    };
    let required = |name: &str| {
        value(name)
            .ok_or_else(|| BrokerError::Unreadable(format!("a history entry without {name:?}")))
    };
    let number = |name: &str| {
        required(name)?
            .parse::<u64>()
            .map_err(|error| BrokerError::Unreadable(error.to_string()))
    };
    let from = (number("n")?, number("k")?);
    let event = read_event(required("e")?)?;
    let purged = match (value("g"), &event.kind) {
        (Some(heads), v1::EventKind::Delete { target, .. }) => heads
            .lines()
            .map(|head| Ok((from, read_purged(head, *target)?)))
            .collect::<Result<_, BrokerError>>()?,
        _ => Vec::new(),
    };
    Ok(((from, event), purged))
}

/// What stood at a purged entry whose JSON began with `head` (everything before its
/// type): the tombstone of message `target`, or an edit of it without its text.
fn read_purged(head: &str, target: u64) -> Result<v1::Event, BrokerError> {
    let mut event = read_event(&format!(r#"{head},"type":"leave"}}"#))?;
    event.kind = if event.offset == target {
        v1::EventKind::Message {
            text: String::new(),
            nonce: None,
            reply_to: None,
            kind: None,
            state: v1::MessageState {
                deleted: true,
                ..Default::default()
            },
        }
    } else {
        v1::EventKind::Edit {
            target,
            text: String::new(),
            nonce: None,
            deleted: true,
        }
    };
    Ok(event)
}

pub(super) fn read_event(json: &str) -> Result<v1::Event, BrokerError> {
    serde_json::from_str(json).map_err(|error| BrokerError::Unreadable(error.to_string()))
}

/// A `present` field (`<node> <key>`) and its value.
pub(super) fn read_present(
    member: &str,
    value: &str,
) -> Result<(MemberRef, v1::Present), BrokerError> {
    let unreadable = || BrokerError::Unreadable(format!("a member {member:?}"));
    let (node, key) = member.split_once(' ').ok_or_else(unreadable)?;
    let node = node.parse().map_err(|_| unreadable())?;
    let key = key.parse().map_err(|_| unreadable())?;
    let present = serde_json::from_str(value).map_err(|_| unreadable())?;
    Ok(((node, key), present))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_from_stream_ids_and_order_as_redis_orders_them() {
        assert_eq!(position("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(position("0-12"), Some((0, 12)));
        assert_eq!(position("12"), None);
        assert_eq!(position("a-1"), None);
        assert!(position("9-10") > position("9-9"));
        assert!(position("10-0") > position("9-99"));
    }

    #[test]
    fn a_history_entry_gives_its_member_and_event() {
        let fields: Vec<String> = [
            "n",
            "3",
            "k",
            "4",
            "e",
            r#"{"offset":2,"ts":6,"id":"7","type":"leave"}"#,
        ]
        .map(String::from)
        .to_vec();
        let (((node, key), event), purged) = read_history_entry(&fields).unwrap();
        assert_eq!((node, key), (3, 4));
        assert_eq!((event.offset, event.id.as_str()), (2, "7"));
        assert_eq!(event.kind, v1::EventKind::leave());
        assert!(purged.is_empty());
    }

    #[test]
    fn a_delete_that_purged_gives_a_tombstone_and_edits_without_text() {
        let fields: Vec<String> = [
            "n",
            "3",
            "k",
            "4",
            "e",
            r#"{"offset":9,"ts":8,"id":"7","type":"delete","target":5}"#,
            "c",
            "1-1",
            "g",
            "{\"offset\":5,\"ts\":6,\"id\":\"7\",\"name\":\"Ada\"\n{\"offset\":7,\"ts\":7,\"id\":\"7\"",
        ]
        .map(String::from)
        .to_vec();
        let (_, purged) = read_history_entry(&fields).unwrap();
        let json: Vec<String> = purged.iter().map(|(_, event)| event.to_json()).collect();
        assert_eq!(
            json,
            [
                r#"{"offset":5,"ts":6,"id":"7","name":"Ada","type":"message","text":"","deleted":true}"#,
                r#"{"offset":7,"ts":7,"id":"7","type":"edit","target":5,"text":"","deleted":true}"#,
            ]
        );
        assert!(purged.iter().all(|(from, _)| *from == (3, 4)));
    }

    #[test]
    fn unreadable_entries_are_errors_not_panics() {
        let missing: Vec<String> = ["n", "3", "e", "{}"].map(String::from).to_vec();
        assert!(read_history_entry(&missing).is_err());
        let not_a_number: Vec<String> = ["n", "x", "k", "4", "e", "{}"].map(String::from).to_vec();
        assert!(read_history_entry(&not_a_number).is_err());
        assert!(read_event("not json").is_err());
        assert!(read_present("3", r#"{"id":"7","since":5}"#).is_err());
        assert!(read_present("3 4", "{").is_err());
    }

    #[test]
    fn a_present_field_gives_its_member() {
        let ((node, key), present) = read_present("3 4", r#"{"id":"7","since":5}"#).unwrap();
        assert_eq!((node, key), (3, 4));
        assert_eq!((present.id.as_str(), present.since), ("7", 5));
    }

    #[test]
    fn a_read_takes_about_read_bytes_within_its_bounds() {
        assert_eq!(events_per_read(64 * 1024), READ_BYTES / (64 * 1024));
        assert_eq!(
            events_per_read(1),
            MOST_PER_READ,
            "small events: the most a read takes"
        );
        assert_eq!(
            events_per_read(usize::MAX),
            16,
            "huge events: still a few at once"
        );
    }
}
