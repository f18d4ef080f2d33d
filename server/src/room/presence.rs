//! Presence in a big room: above `--presence-batch-above` connections (on a single
//! node without a store), joins and leaves are gathered for
//! [`PRESENCE_BATCH_INTERVAL`] (longer in bigger rooms) and told as one `presence` event in the room's log,
//! encoded once for every chat.v2.json member; welcomes list a first page of members
//! and their count, and v2 clients ask for the rest a page at a time (`members`).
//! v1 and plain members hear no one's join or leave but their own.
//!
//! Why: below the threshold a storm of N joins costs N²/2 deliveries and N welcomes of
//! up to N members each; here it costs one batch per interval to each member and one
//! welcome of at most a page to each newcomer: linear in the room.
//!
//! Exactness: the batch is numbered and fanned out under the room's lock like any
//! event, and anything numbered after it (every [`Room::announce`]) flushes it first;
//! a newcomer is welcomed, as of the room before the batch, just before the batch that
//! holds its own join; a `members` page is queued under the same lock, so it says
//! the room as of the last event the client was sent before it.

use std::collections::HashMap;
use std::sync::Arc;

use chat::v1::{self, Present};
use chat::v2;

use super::{Member, Protocol, Room, Stage, State, Who, now_millis, wire};
use crate::config::{PRESENCE_BATCH_INTERVAL, PRESENCE_BATCH_MOST, PRESENCE_BATCH_PER_MEMBER};

/// The joins and leaves of a big room not told yet.
#[derive(Default)]
pub(super) struct Batch {
    /// Newcomers by key, in the order they came; not yet welcomed.
    joined: Vec<(u64, Present)>,
    left: Vec<v2::Gone>,
    /// Whether a flush is on its way.
    scheduled: bool,
}

/// Members with their handles, for a welcome's first page or a `members` page.
pub(super) fn listed<'a>(members: impl Iterator<Item = (u64, &'a Present)>) -> Vec<Present> {
    members
        .map(|(key, present)| Present {
            key: Some(key),
            ..present.clone()
        })
        .collect()
}

impl Room {
    /// Whether the room's joins and leaves are batched now: above the threshold, on a
    /// single node without a store (a cluster's and a store's joins go through Redis
    /// and the journal one by one, as before).
    pub(super) fn batches(&self, state: &State) -> bool {
        let above = self.settings.presence_batch_above;
        above > 0 && self.cluster.is_none() && self.store.is_none() && state.members.len() > above
    }

    /// Gathers newcomer `key`'s join into the next batch; it is welcomed then.
    pub(super) fn gather_join(self: &Arc<Self>, state: &mut State, key: u64, who: &Who) {
        let present = Present {
            id: who.id.to_string(),
            name: who.name.clone(),
            since: now_millis(),
            role: who.role,
            key: None,
        };
        state.batch.joined.push((key, present));
        self.schedule_flush(state);
    }

    /// Gathers member `key`'s leave into the next batch, or forgets its join if that
    /// was not told yet. Returns `false` when the leave is to be announced on its own
    /// (the room is not batching, and the join was told).
    pub(super) fn gather_leave(self: &Arc<Self>, state: &mut State, key: u64, who: &Who) -> bool {
        if let Some(at) = state.batch.joined.iter().position(|(k, _)| *k == key) {
            state.batch.joined.remove(at);
            return true;
        }
        if !self.batches(state) {
            return false;
        }
        state.batch.left.push(v2::Gone {
            key,
            id: who.id.to_string(),
        });
        self.schedule_flush(state);
        true
    }

    fn schedule_flush(self: &Arc<Self>, state: &mut State) {
        if state.batch.scheduled {
            return;
        }
        state.batch.scheduled = true;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.flush_presence(state);
            return;
        };
        let room = Arc::downgrade(self);
        let members = u32::try_from(state.members.len()).unwrap_or(u32::MAX);
        let interval = (PRESENCE_BATCH_PER_MEMBER * members)
            .clamp(PRESENCE_BATCH_INTERVAL, PRESENCE_BATCH_MOST);
        runtime.spawn(async move {
            tokio::time::sleep(interval).await;
            if let Some(room) = room.upgrade() {
                room.flush_presence(&mut room.lock());
            }
        });
    }

    /// Numbers the gathered joins and leaves as one `presence` event and fans it out:
    /// each newcomer first gets its welcome (the room before the batch), then v2
    /// members the batch, v1 and plain newcomers their own join. Nothing if nothing
    /// was gathered.
    pub(super) fn flush_presence(&self, state: &mut State) {
        state.batch.scheduled = false;
        if state.batch.joined.is_empty() && state.batch.left.is_empty() {
            return;
        }
        let joined = std::mem::take(&mut state.batch.joined);
        let left = std::mem::take(&mut state.batch.left);
        // Token roles first, so that each newcomer's welcome has its own.
        for (key, present) in &joined {
            state.seat_token_role((0, *key), &present.id, present.role);
        }
        for (key, present) in &joined {
            let Some(slot) = state.members.get(key) else {
                continue;
            };
            let Stage::Joining(resume) = &slot.stage else {
                continue;
            };
            if slot.protocol != Protocol::Plain {
                let (resume, protocol, outbox) =
                    (resume.clone(), slot.protocol, slot.outbox.clone());
                self.welcome(
                    state,
                    &present.id,
                    protocol,
                    resume.as_ref(),
                    &outbox,
                    None,
                    true,
                );
            }
        }
        state.numbered += 1;
        let offset = state.numbered;
        let ts = now_millis();
        for gone in &left {
            state.unseat((0, gone.key));
        }
        for (key, present) in &joined {
            state.present.insert((0, *key), present.clone());
        }
        state.offset = offset;
        let joined_listed = listed(joined.iter().map(|(key, present)| (*key, present)));
        let listed = joined.len() + left.len() <= self.settings.presence_batch_entries;
        let batch = v2::PresenceOut {
            offset,
            ts,
            kind: "presence",
            count: state.present.len(),
            joined: if listed { &joined_listed } else { &[] },
            left: if listed { &left } else { &[] },
            truncated: !listed,
        };
        let hint = 96 + 80 * joined_listed.len() + 40 * left.len();
        let v2_frame = wire::json(&batch, hint);
        let mut to_v2 = 0;
        let newcomers: HashMap<u64, &Present> = joined
            .iter()
            .map(|(key, present)| (*key, present))
            .collect();
        for (key, slot) in &mut state.members {
            let own = newcomers
                .get(key)
                .filter(|_| matches!(slot.stage, Stage::Joining(_)));
            if own.is_some() {
                slot.stage = Stage::Live;
            } else if !matches!(slot.stage, Stage::Live) {
                continue;
            }
            match (slot.protocol, own) {
                (Protocol::V2, _) => {
                    to_v2 += 1;
                    slot.outbox.push(&v2_frame);
                }
                // Their own join only, as below the threshold.
                (protocol, Some(own)) => {
                    let event = v1::Event {
                        offset,
                        ts,
                        id: own.id.clone(),
                        name: own.name.clone(),
                        kind: v1::EventKind::Join {
                            role: own.role,
                            key: None,
                        },
                    };
                    let frame = match protocol {
                        Protocol::V1 => wire::text(&event.to_json()),
                        _ => wire::text(&event.plain().unwrap_or_default()),
                    };
                    slot.outbox.push(&frame);
                }
                (_, None) => {}
            }
        }
        self.metrics.delivered(to_v2, v2_frame.len());
    }

    /// Queues a page of the room's members after `after`, in join order, for member
    /// `key`: under the room's lock, so that it says the room as of the last event
    /// queued before it.
    pub(super) fn members_page(
        &self,
        key: u64,
        after: Option<i64>,
        limit: i64,
        nonce: Option<&str>,
    ) -> Result<(), v2::Error> {
        let invalid = |message: String| v2::Error::new(nonce, v2::ErrorCode::Invalid, message);
        let most = v2::MAX_MEMBERS_PAGE as i64;
        if !(1..=most).contains(&limit) {
            return Err(invalid(format!(
                "a members limit is 1 to {most}, not {limit}"
            )));
        }
        let after = after
            .map(|after| {
                u64::try_from(after).map_err(|_| {
                    invalid(format!("a members after is a ref, 0 or more, not {after}"))
                })
            })
            .transpose()?;
        let state = self.lock();
        let Some(slot) = state.members.get(&key) else {
            return Ok(());
        };
        if !matches!(slot.stage, Stage::Live) {
            return Err(invalid("members are listed after the welcome".to_owned()));
        }
        let from = after.map_or(std::ops::Bound::Unbounded, |after| {
            std::ops::Bound::Excluded((0, after))
        });
        let mut rest = state.present.range((from, std::ops::Bound::Unbounded));
        let page = listed(
            rest.by_ref()
                .take(limit as usize)
                .map(|((_, key), present)| (*key, present)),
        );
        let answer = v2::MembersOut {
            nonce,
            offset: state.offset,
            count: state.present.len(),
            members: page.iter().collect(),
            more: rest.next().is_some(),
        };
        slot.outbox.push(&wire::json(&answer, 96 + 80 * page.len()));
        Ok(())
    }
}

impl Member {
    /// Answers `members` with a page of the room's members (see [`Room::members_page`]).
    pub fn members(
        &self,
        after: Option<i64>,
        limit: i64,
        nonce: Option<&str>,
    ) -> Result<(), v2::Error> {
        self.room.members_page(self.key, after, limit, nonce)
    }
}
