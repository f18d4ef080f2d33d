//! Publishing: events on their way to Redis, as pipelines of `APPEND` calls, and
//! frames outside the log as `EPHEMERAL` calls in the same pipelines.

use chat::v1::{self, EventKind, RoomName};

use super::keys::{EVENTS_KEPT, RoomKeys, members_key, new_epoch};
use super::scripts::{APPEND_HASH, EPHEMERAL_HASH};
use crate::room::rules::{self, Change};
use crate::room::{Ephemeral, MemberRef};

/// Which script a run of calls goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Append,
    Ephemeral,
}

/// What Redis keeps of each room: its last `events`, no more than `bytes` of them,
/// and all of it only for `expiry` after its last event once nobody is in it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keep {
    pub events: usize,
    pub bytes: usize,
    pub expiry: std::time::Duration,
}

/// A pipeline of `APPEND` and `EPHEMERAL` calls: one for each run of events (or of
/// ephemeral frames) in the same room from the same node, so that their order is kept.
pub(super) struct Appends {
    pipe: redis::Pipeline,
    /// The call being filled: for which script, node and room.
    run: Option<(Script, u64, RoomName, redis::Cmd)>,
    /// The partition of each call in the pipeline, in order.
    partitions: Vec<u16>,
    keep: Keep,
    /// How many partitions the cluster has.
    partition_count: u16,
}

impl Appends {
    pub(super) fn new(keep: Keep, partition_count: u16) -> Self {
        Self {
            pipe: redis::pipe(),
            run: None,
            partitions: Vec::new(),
            keep,
            partition_count,
        }
    }

    /// Adds `event` from `member` in `room`.
    pub(super) fn push(&mut self, (node, key): MemberRef, room: &RoomName, event: &v1::Event) {
        let keep = self.keep;
        let call = self.call(Script::Append, node, room, |name, keys| {
            let mut call = redis::cmd("EVALSHA");
            call.arg(&*APPEND_HASH)
                .arg(8)
                .arg(&keys.meta)
                .arg(&keys.history)
                .arg(&keys.present)
                .arg(members_key(keys.partition, node))
                .arg(&keys.events)
                .arg(&keys.reads)
                .arg(&keys.operations)
                .arg(&keys.rules)
                .arg(new_epoch())
                .arg(name)
                .arg(node)
                .arg(keep.events)
                .arg(EVENTS_KEPT)
                .arg(keep.bytes)
                .arg(keep.expiry.as_millis() as u64);
            call
        });
        let (presence, present) = match event.kind {
            EventKind::Join { role, .. } => {
                let present = v1::Present {
                    id: event.id.clone(),
                    name: event.name.clone(),
                    since: event.ts,
                    role,
                    key: None,
                };
                let present = serde_json::to_string(&present).expect("presence always serializes");
                ("join", present)
            }
            EventKind::Leave { .. } => ("leave", String::new()),
            // A moderation event's change to the room's rules: `field`, or
            // `field\nvalue`, which the script keeps in the room's rules hash.
            _ => match rules::change(event) {
                Some(Change {
                    field,
                    value: Some(value),
                }) => ("rule", format!("{field}\n{value}")),
                Some(Change { field, value: None }) => ("rule", field),
                None => ("-", String::new()),
            },
        };
        call.arg(key)
            .arg(presence)
            .arg(present)
            .arg(json_after_offset(event));
    }

    /// Adds `what`, which a member of `node` told `room`.
    pub(super) fn push_ephemeral(&mut self, node: u64, room: &RoomName, what: &Ephemeral) {
        let call = self.call(Script::Ephemeral, node, room, |name, keys| {
            let mut call = redis::cmd("EVALSHA");
            call.arg(&*EPHEMERAL_HASH)
                .arg(3)
                .arg(&keys.meta)
                .arg(&keys.reads)
                .arg(&keys.events)
                .arg(name)
                .arg(node)
                .arg(EVENTS_KEPT);
            call
        });
        let (id, offset) = match what {
            Ephemeral::Typing { .. } => ("", 0),
            Ephemeral::Read { id, offset } => (id.as_str(), *offset),
        };
        let json = serde_json::to_string(what).expect("an ephemeral frame always serializes");
        call.arg(id).arg(offset).arg(json);
    }

    /// The call a run of `script` in `room` from `node` goes to: the current one if it
    /// is that run, else a new one that `start` makes for the room's name and keys.
    fn call(
        &mut self,
        script: Script,
        node: u64,
        room: &RoomName,
        start: impl FnOnce(&str, &RoomKeys) -> redis::Cmd,
    ) -> &mut redis::Cmd {
        let same_run = matches!(&self.run, Some((run_script, run_node, run_room, _))
            if *run_script == script && *run_node == node && run_room == room);
        if !same_run {
            self.finish_run();
            let keys = RoomKeys::new(room.as_str(), self.partition_count);
            self.partitions.push(keys.partition);
            self.run = Some((script, node, room.clone(), start(room.as_str(), &keys)));
        }
        let Some((_, _, _, call)) = &mut self.run else {
            unreachable!("a run was just started");
        };
        call
    }

    fn finish_run(&mut self) {
        if let Some((_, _, _, call)) = self.run.take() {
            self.pipe.add_command(call);
        }
    }

    /// The pipeline, and each of its calls' partition; it answers with each run's
    /// last id in its partition's stream (`""` for a run of ephemeral frames that added
    /// none).
    pub(super) fn into_pipeline(mut self) -> (redis::Pipeline, Vec<u16>) {
        self.finish_run();
        (self.pipe, self.partitions)
    }
}

/// What `APPEND` takes of an event: its JSON after the offset, which the script writes
/// in front of the rest once it has numbered the event.
///
/// Relies on `chat::v1::Event` serializing its offset first, which the tests below
/// check for every kind of event.
pub(super) fn json_after_offset(event: &v1::Event) -> String {
    let json = event.to_json();
    json.strip_prefix(OFFSET_ZERO)
        .expect("an event's JSON starts with its offset")
        .to_owned()
}

/// How an event with offset 0 (not yet numbered) begins.
const OFFSET_ZERO: &str = r#"{"offset":0,"#;

#[cfg(test)]
mod tests {
    use chat::v1::DisplayName;

    use super::*;

    fn events() -> Vec<v1::Event> {
        let kinds = [
            EventKind::join(),
            EventKind::leave(),
            EventKind::said("hi \"there\"", None),
            EventKind::said("with a nonce", Some("n-1".into())),
        ];
        kinds
            .into_iter()
            .flat_map(|kind| {
                [None, Some(DisplayName::parse("Ada").unwrap())]
                    .into_iter()
                    .map(move |name| v1::Event {
                        offset: 0,
                        ts: 1_700_000_000_000,
                        id: "42".into(),
                        name,
                        kind: kind.clone(),
                    })
            })
            .collect()
    }

    #[test]
    fn every_event_encodes_its_offset_first_and_the_script_s_join_restores_it() {
        for event in events() {
            let rest = json_after_offset(&event);
            // What APPEND writes for offset 7.
            let numbered = format!("{{\"offset\":7,{rest}");
            let decoded: v1::Event = serde_json::from_str(&numbered).unwrap();
            assert_eq!(decoded, v1::Event { offset: 7, ..event });
        }
    }

    fn args(call: &redis::Cmd) -> Vec<String> {
        call.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                redis::Arg::Cursor => String::new(),
            })
            .collect()
    }

    #[test]
    fn ephemeral_frames_are_runs_of_their_own_between_events_in_order() {
        let events = events();
        let room = RoomName::default();
        let typing = Ephemeral::Typing {
            id: "42".into(),
            name: None,
        };
        let read = Ephemeral::Read {
            id: "42".into(),
            offset: 3,
        };
        let mut appends = appends();
        appends.push((1, 2), &room, &events[4]);
        appends.push_ephemeral(1, &room, &typing);
        appends.push_ephemeral(1, &room, &read);
        appends.push((1, 2), &room, &events[4]);
        let (pipe, partitions) = appends.into_pipeline();
        let commands: Vec<_> = pipe.cmd_iter().cloned().collect();
        assert_eq!(commands.len(), 3, "event, two ephemeral frames, event");
        let main = RoomKeys::new("main", 16);
        assert_eq!(partitions, [main.partition; 3]);
        let ephemeral = args(&commands[1]);
        assert_eq!(ephemeral[1], *EPHEMERAL_HASH);
        assert_eq!(
            &ephemeral[2..6],
            ["3", &main.meta, &main.reads, &main.events]
        );
        assert_eq!(&ephemeral[6..9], ["main", "1", &EVENTS_KEPT.to_string()]);
        assert_eq!(&ephemeral[9..11], ["", "0"], "typing keeps no position");
        let frame: Ephemeral = serde_json::from_str(&ephemeral[11]).unwrap();
        assert_eq!(frame, typing);
        assert_eq!(&ephemeral[12..14], ["42", "3"]);
        assert_eq!(ephemeral.len(), 15);
    }

    /// Appends keeping 10 events of 1 000 bytes for a minute, over 16 partitions.
    fn appends() -> Appends {
        let keep = Keep {
            events: 10,
            bytes: 1000,
            expiry: std::time::Duration::from_secs(60),
        };
        Appends::new(keep, 16)
    }

    #[test]
    fn a_run_of_one_room_from_one_node_is_one_call() {
        let events = events();
        let room = RoomName::default();
        let other = RoomName::parse("ops").unwrap();
        let mut appends = appends();
        appends.push((1, 1), &room, &events[0]);
        // Join, leave, then messages: see `events`.
        appends.push((1, 2), &room, &events[2]);
        appends.push((1, 2), &other, &events[4]);
        appends.push((2, 1), &other, &events[6]);
        appends.push((2, 1), &other, &events[5]);
        let (pipe, partitions) = appends.into_pipeline();
        let commands: Vec<_> = pipe.cmd_iter().cloned().collect();
        let (main, ops) = (RoomKeys::new("main", 16), RoomKeys::new("ops", 16));
        assert_eq!(partitions, [main.partition, ops.partition, ops.partition]);
        assert_eq!(
            commands.len(),
            3,
            "room main, then ops from node 1, then from node 2"
        );
        let first = args(&commands[0]);
        assert_eq!(first[0], "EVALSHA");
        assert_eq!(first[2], "8", "eight keys");
        assert_eq!(
            &first[3..11],
            [
                main.meta.clone(),
                main.history.clone(),
                main.present.clone(),
                members_key(main.partition, 1),
                main.events.clone(),
                main.reads.clone(),
                main.operations.clone(),
                main.rules.clone(),
            ]
        );
        // An epoch, the room, the node, the history, the stream's length, the history's
        // bytes, the room's expiry, then four arguments per event.
        assert_eq!(
            &first[12..18],
            ["main", "1", "10", &EVENTS_KEPT.to_string(), "1000", "60000"]
        );
        assert_eq!(first.len(), 18 + 2 * 4);
        assert_eq!(&first[18..20], ["1", "join"]);
        let present: v1::Present = serde_json::from_str(&first[20]).unwrap();
        assert_eq!(present.id, "42");
        assert_eq!(&first[22..25], ["2", "leave", ""]);
        let last = args(&commands[2]);
        assert_eq!(last.len(), 18 + 2 * 4);
        assert_eq!(&last[18..20], ["1", "-"]);
    }
}
