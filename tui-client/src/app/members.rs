//! Who is here in a big room (docs/PROTOCOL.md, "Big rooms"): above the server's
//! presence threshold the welcome lists only the first page of members, with their
//! count; the rest are asked for a page at a time, in the background, and presence
//! batches keep the list and the count exact from there.
//!
//! Everyone is fetched, up to [`MEMBERS_HELD_MOST`]: the pages come in join order, not
//! in the order the list is shown (roles, then names), so a list fetched as it is
//! scrolled would show a sorted handful that is not the top of the room; and `/who`
//! and Tab completion want everyone, as weechat's nicklist holds a whole IRC channel.
//! A 16 000-member room is 160 pages of 100 (about 1.6 MB); past the bound (a room of
//! 100 000) the list says how many it does not show.

use std::collections::BTreeMap;

use chat::v1::{DisplayName, Present};
use chat::v2::{self, Gone, Request};

use super::App;
use super::protocol::Session;
use crate::event::Protocol;

/// The most members fetched into the list: enough for a 16 000-member room whole,
/// while a room of 100 000 or a million costs at most this many (200 pages).
pub const MEMBERS_HELD_MOST: usize = 20_000;

/// Said at a session's first presence batch: above the server's threshold joins and
/// leaves stop having a line each.
pub(super) const BIG_ROOM: &str =
    "a big room: joins and leaves are no longer shown one by one; F2 lists who is here";

/// One connection in the list: its id, and the name it goes by (one id's connections
/// may go by different names, and the id shows its latest's).
#[derive(Debug, Clone)]
struct Held {
    id: String,
    name: Option<DisplayName>,
}

/// A big room's count and the paging under way.
#[derive(Debug, Clone, Default)]
pub struct BigRoom {
    /// Members (connections) in the room, as the server last said.
    pub count: usize,
    /// The page asked for and not answered yet: its nonce, and the `ref` it goes on
    /// from (none: from the start).
    asking: Option<(String, Option<u64>)>,
    /// A truncated batch came while a page was on its way: the pages read before it
    /// are stale, so the next answer starts the round again.
    again: bool,
    /// Whether this session has said the room is big (at its first batch, after the
    /// welcome's history).
    told: bool,
}

/// The member list by handle, beside [`Session::members`] by id.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    /// Connections listed with their `ref`.
    keyed: BTreeMap<u64, Held>,
    /// Connections listed without one (below the threshold), by id: each one's name,
    /// in the order they came.
    unkeyed: BTreeMap<String, Vec<Option<DisplayName>>>,
    /// Connections held, keyed or not.
    pub connections: usize,
}

impl Session {
    /// How many are here: the people listed (one id on two connections is one), unless
    /// in a big room the list does not hold every connection the server counts (pages
    /// on their way, a stale list after a truncated batch, or past the bound): then
    /// the server's count, of connections.
    pub fn here(&self) -> usize {
        match &self.big {
            Some(big) if big.count != self.handles.connections => big.count,
            _ => self.members.len(),
        }
    }

    /// Connections the server counts that the list does not hold (past
    /// `MEMBERS_HELD_MOST`, or while pages are on their way).
    pub fn unlisted(&self) -> usize {
        self.big
            .as_ref()
            .map_or(0, |big| big.count.saturating_sub(self.handles.connections))
    }

    pub(super) fn forget_members(&mut self) {
        self.members.clear();
        self.handles = Handles::default();
        self.members_changed();
    }

    /// A welcome's members or a `members` page, by the protocol's rule: what the list
    /// holds in the range of handles the page covers (after `after`, up to its last
    /// one, or to the end when nothing more follows) is replaced with what it lists.
    pub(super) fn members_page(&mut self, after: Option<u64>, listed: &[Present], more: bool) {
        let from = after.map_or(0, |after| after.saturating_add(1));
        let to = match (more, listed.last().and_then(|last| last.key)) {
            (true, Some(last)) => last,
            _ => u64::MAX,
        };
        if from <= to {
            let covered: Vec<u64> = self
                .handles
                .keyed
                .range(from..=to)
                .map(|(key, _)| *key)
                .collect();
            for key in covered {
                self.take_keyed(key);
            }
        }
        if after.is_none() {
            // Listed without a handle below the threshold: a round from the start
            // lists them again, with theirs.
            for (id, connections) in std::mem::take(&mut self.handles.unkeyed) {
                for _ in connections {
                    self.went(&id);
                }
            }
        }
        for member in listed {
            self.add_member(&member.id, member.name.as_ref(), member.key);
        }
    }

    /// A presence batch that lists its changes.
    pub(super) fn presence_batch(&mut self, joined: &[Present], left: &[Gone]) {
        for gone in left {
            // Else listed without a handle (from a welcome below the threshold): one
            // connection of that id goes (a batch does not say which name it had).
            // Neither: one the list never held.
            if !self.take_keyed(gone.key) {
                self.take_unkeyed(&gone.id, None);
            }
        }
        for member in joined {
            self.add_member(&member.id, member.name.as_ref(), member.key);
        }
    }

    /// A join or a leave of its own (below the threshold), with the connection's
    /// handle when the server names it; true when the id comes into the room or
    /// leaves it.
    pub(super) fn one_presence(
        &mut self,
        id: &str,
        name: Option<&DisplayName>,
        key: Option<u64>,
        joined: bool,
    ) -> bool {
        if let Some(big) = &mut self.big {
            // A room shrunk back to the threshold: its count goes one by one too.
            big.count = if joined {
                big.count.saturating_add(1)
            } else {
                big.count.saturating_sub(1)
            };
        }
        let before = self.members.contains_key(id);
        if joined {
            self.add_member(id, name, key);
        } else {
            let taken = key.is_some_and(|key| self.take_keyed(key)) || self.take_unkeyed(id, name);
            if !taken && key.is_none() {
                // A cluster names no handle: one of the id's handles goes.
                let key = self
                    .handles
                    .keyed
                    .iter()
                    .find_map(|(key, held)| (held.id == id).then_some(*key));
                if let Some(key) = key {
                    self.take_keyed(key);
                }
            }
        }
        before != self.members.contains_key(id)
    }

    fn add_member(&mut self, id: &str, name: Option<&DisplayName>, key: Option<u64>) {
        let held = Held {
            id: id.to_owned(),
            name: name.cloned(),
        };
        match key {
            Some(key) => {
                if self.handles.keyed.insert(key, held).is_none() {
                    self.arrived(id, name, 1);
                }
            }
            None => {
                let names = self.handles.unkeyed.entry(id.to_owned()).or_default();
                names.push(name.cloned());
                self.arrived(id, name, 1);
            }
        }
    }

    /// Takes the connection listed with handle `key`; false when there is none.
    fn take_keyed(&mut self, key: u64) -> bool {
        let Some(held) = self.handles.keyed.remove(&key) else {
            return false;
        };
        self.went(&held.id);
        true
    }

    /// Takes one connection of `id` listed without a handle, one that went by `name`
    /// if there is one; false when there is none.
    fn take_unkeyed(&mut self, id: &str, name: Option<&DisplayName>) -> bool {
        let Some(names) = self.handles.unkeyed.get_mut(id) else {
            return false;
        };
        let at = names
            .iter()
            .rposition(|held| held.as_ref() == name)
            .unwrap_or(names.len() - 1);
        names.remove(at);
        if names.is_empty() {
            self.handles.unkeyed.remove(id);
        }
        self.went(id);
        true
    }

    /// One connection of `id`, no longer held, goes: if the id stays, it goes by its
    /// latest remaining connection's name (the newest with a handle, else the newest
    /// without), as it did before that one came.
    fn went(&mut self, id: &str) {
        if self.arrived(id, None, -1) {
            return;
        }
        let newest_keyed = self
            .handles
            .keyed
            .values()
            .rev()
            .filter(|held| held.id == id)
            .find_map(|held| held.name.clone());
        let name = newest_keyed.or_else(|| {
            let names = self.handles.unkeyed.get(id)?;
            names.iter().rev().find_map(Clone::clone)
        });
        if let Some(member) = self.members.get_mut(id) {
            member.name = name;
        }
    }
}

impl App {
    /// After a welcome: above the threshold its members are the first page, and the
    /// rest are asked for.
    pub(super) fn welcome_members(&mut self, listed: &[Present], count: Option<usize>, more: bool) {
        let v2 = self.protocol == Protocol::V2;
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.forget_members();
        session.big = count.map(|count| BigRoom {
            count,
            ..BigRoom::default()
        });
        session.members_page(None, listed, more);
        if more && v2 && session.big.is_some() {
            let after = listed.last().and_then(|last| last.key);
            self.ask_members(after);
        }
    }

    /// A big room's presence batch.
    pub(super) fn presence(
        &mut self,
        count: usize,
        truncated: bool,
        joined: &[Present],
        left: &[Gone],
    ) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let big = session.big.get_or_insert_with(BigRoom::default);
        big.count = count;
        if !std::mem::replace(&mut big.told, true) {
            self.notice(BIG_ROOM);
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if !truncated {
            session.presence_batch(joined, left);
            return;
        }
        let Some(big) = session.big.as_mut() else {
            return;
        };
        // More came and went than a batch lists: the list is stale until it has been
        // paged again, from the start, with pages begun after this batch.
        if big.asking.is_some() {
            big.again = true;
        } else if self.protocol == Protocol::V2 {
            self.ask_members(None);
        }
    }

    /// The answer to a `members` request of ours: applied, and the next page asked.
    /// Another's answer (an earlier connection's) is not ours to apply.
    pub(super) fn members_answer(
        &mut self,
        nonce: Option<&str>,
        count: usize,
        listed: &[Present],
        more: bool,
    ) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let Some(big) = session.big.as_mut() else {
            return;
        };
        let after = match &big.asking {
            Some((asked, after)) if Some(asked.as_str()) == nonce => *after,
            _ => return,
        };
        big.asking = None;
        big.count = count;
        let again = std::mem::take(&mut big.again);
        session.members_page(after, listed, more);
        let next = listed.last().and_then(|last| last.key);
        if again {
            self.ask_members(None);
        } else if more && session.handles.keyed.len() < MEMBERS_HELD_MOST && next.is_some() {
            self.ask_members(next);
        }
    }

    /// A request refused: when it was our page, paging stops until the next
    /// truncated batch or welcome.
    pub(super) fn members_refused(&mut self, nonce: &str) {
        if let Some(big) = self
            .session
            .as_mut()
            .and_then(|session| session.big.as_mut())
            && big.asking.as_ref().is_some_and(|(asked, _)| asked == nonce)
        {
            big.asking = None;
            big.again = false;
        }
    }

    fn ask_members(&mut self, after: Option<u64>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.members_asked += 1;
        let nonce = format!("{}-m{}", self.id, session.members_asked);
        if let Some(big) = session.big.as_mut() {
            big.asking = Some((nonce.clone(), after));
        }
        self.tell(&Request::Members {
            // A ref is a count of the room's connections, far below `i64::MAX`.
            after: after.map(|after| i64::try_from(after).unwrap_or(i64::MAX)),
            limit: v2::MAX_MEMBERS_PAGE as i64,
            nonce: Some(nonce),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Beside, Event, NetEvent};
    use chat::v1::{Limits, Role, ServerFrame, Welcome, WelcomeFrame, WelcomeTag};
    use serde_json::Value;

    fn present(id: u64) -> Present {
        Present {
            id: id.to_string(),
            name: None,
            since: 1,
            role: Role::Member,
            key: Some(id),
        }
    }

    /// A v2 app welcomed into a room of `count` whose first page is `first`.
    fn big_app(first: std::ops::Range<u64>, count: usize) -> App {
        let mut app = App::new("ws://x".into(), "42".into(), 1000, || "12:00:00".into());
        app.update(Event::Net(NetEvent::Connecting));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::V2,
        }));
        let welcome = Welcome {
            id: "42".into(),
            room: "main".into(),
            epoch: "e1".into(),
            offset: 3,
            members: first.map(present).collect(),
            count: Some(count),
            more: Some(true),
            recovered: false,
            verified: false,
            limits: Limits {
                max_message_bytes: 1000,
                max_nonce_chars: 64,
                history: 100,
            },
        };
        app.update(Event::Net(NetEvent::Frame(ServerFrame::Welcome(
            WelcomeFrame {
                kind: WelcomeTag::Welcome,
                welcome,
            },
        ))));
        app
    }

    /// The `members` request the app sent last: its `after` and nonce.
    fn asked(app: &mut App) -> (Option<u64>, String) {
        let frames = app.take_frames();
        let request = frames
            .iter()
            .rev()
            .map(|frame| serde_json::from_str::<Value>(frame).unwrap())
            .find(|frame| frame["type"] == "members")
            .unwrap_or_else(|| panic!("no page asked for: {frames:?}"));
        assert_eq!(request["limit"], 100);
        (
            request["after"].as_u64(),
            request["nonce"].as_str().unwrap().to_owned(),
        )
    }

    fn answer(app: &mut App, nonce: &str, listed: std::ops::Range<u64>, count: usize, more: bool) {
        app.update(Event::Net(NetEvent::Beside(Beside::Members {
            nonce: Some(nonce.to_owned()),
            count,
            members: listed.map(present).collect(),
            more,
        })));
    }

    fn batch(app: &mut App, count: usize, joined: &[u64], left: &[u64], truncated: bool) {
        app.update(Event::Net(NetEvent::Beside(Beside::Presence {
            offset: 9,
            count,
            truncated,
            joined: joined.iter().copied().map(present).collect(),
            left: left
                .iter()
                .map(|key| v2::Gone {
                    key: *key,
                    id: key.to_string(),
                })
                .collect(),
        })));
    }

    fn listed(app: &App) -> Vec<u64> {
        let session = app.session.as_ref().unwrap();
        session
            .members
            .keys()
            .map(|id| id.parse().unwrap())
            .collect::<std::collections::BTreeSet<u64>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn pages_follow_the_welcome_until_the_room_is_whole() {
        let mut app = big_app(1..101, 250);
        assert_eq!(app.session.as_ref().unwrap().here(), 250);
        let (after, nonce) = asked(&mut app);
        assert_eq!(after, Some(100));
        // A batch between the request and its answer is applied first.
        batch(&mut app, 251, &[251], &[], false);
        answer(&mut app, &nonce, 101..201, 251, true);
        let (after, nonce) = asked(&mut app);
        assert_eq!(after, Some(200));
        // Another's answer (an earlier connection's) is not applied.
        answer(&mut app, "other", 500..510, 251, false);
        answer(&mut app, &nonce, 201..252, 251, false);
        assert!(app.take_frames().is_empty(), "whole: nothing more asked");
        assert_eq!(listed(&app), (1..252).collect::<Vec<_>>());
        let session = app.session.as_ref().unwrap();
        assert_eq!((session.here(), session.unlisted()), (251, 0));
    }

    #[test]
    fn across_the_threshold_each_leave_takes_out_its_own_connection() {
        use chat::v1::{Event as RoomEvent, EventKind};
        let mut app = big_app(1..6, 5);
        let (_, nonce) = asked(&mut app);
        answer(&mut app, &nonce, 0..0, 5, false);
        // Two connections of 7 come in a batch, each with its handle.
        let seven = |key| Present {
            id: "7".into(),
            key: Some(key),
            ..present(key)
        };
        app.update(Event::Net(NetEvent::Beside(Beside::Presence {
            offset: 4,
            count: 7,
            truncated: false,
            joined: vec![seven(10), seven(11)],
            left: Vec::new(),
        })));
        // Seven connections, six people: the list holds them all, and counts people.
        assert_eq!(app.session.as_ref().unwrap().here(), 6);
        // Below the threshold again, the second leaves on its own, named by its handle.
        app.update(Event::Net(NetEvent::Frame(ServerFrame::Event(RoomEvent {
            offset: 5,
            ts: 5,
            id: "7".into(),
            name: None,
            kind: EventKind::Leave { key: Some(11) },
        }))));
        // Above it once more, the first leaves in a batch: the list held that one.
        app.update(Event::Net(NetEvent::Beside(Beside::Presence {
            offset: 6,
            count: 5,
            truncated: false,
            joined: Vec::new(),
            left: vec![v2::Gone {
                key: 10,
                id: "7".into(),
            }],
        })));
        assert_eq!(listed(&app), (1..6).collect::<Vec<_>>());
        let session = app.session.as_ref().unwrap();
        assert_eq!((session.here(), session.unlisted()), (5, 0));
    }

    #[test]
    fn the_first_batch_says_once_that_joins_and_leaves_no_longer_have_a_line_each() {
        let mut app = big_app(1..101, 150);
        let said = |app: &App| {
            app.scrollback
                .iter()
                .filter(|entry| entry.text == format!("* {BIG_ROOM}"))
                .count()
        };
        assert_eq!(said(&app), 0, "not above the welcome's history");
        batch(&mut app, 151, &[151], &[], false);
        batch(&mut app, 150, &[], &[151], false);
        assert_eq!(said(&app), 1);
    }

    #[test]
    fn a_truncated_batch_pages_again_from_the_start() {
        let mut app = big_app(1..101, 150);
        let (_, nonce) = asked(&mut app);
        answer(&mut app, &nonce, 101..151, 150, false);
        // Ten went: the batch only counts them.
        batch(&mut app, 140, &[], &[], true);
        assert_eq!(app.session.as_ref().unwrap().here(), 140);
        let (after, nonce) = asked(&mut app);
        assert_eq!(after, None, "from the start");
        // While that page is on its way, another truncated batch: its answer is
        // applied, and the round starts again.
        batch(&mut app, 139, &[], &[], true);
        assert!(
            app.take_frames().is_empty(),
            "one page on its way at a time"
        );
        let page: Vec<u64> = (11..111).collect();
        app.update(Event::Net(NetEvent::Beside(Beside::Members {
            nonce: Some(nonce),
            count: 139,
            members: page.iter().copied().map(present).collect(),
            more: true,
        })));
        let (after, nonce) = asked(&mut app);
        assert_eq!(after, None, "again from the start");
        let page: Vec<u64> = (12..112).collect();
        app.update(Event::Net(NetEvent::Beside(Beside::Members {
            nonce: Some(nonce),
            count: 139,
            members: page.iter().copied().map(present).collect(),
            more: true,
        })));
        let (after, nonce) = asked(&mut app);
        assert_eq!(after, Some(111));
        answer(&mut app, &nonce, 112..151, 139, false);
        assert_eq!(listed(&app), (12..151).collect::<Vec<_>>());
    }

    #[test]
    fn past_the_bound_paging_stops_and_the_rest_are_counted() {
        let most = MEMBERS_HELD_MOST as u64;
        let mut app = big_app(1..101, MEMBERS_HELD_MOST + 500);
        let mut next = 101;
        loop {
            let frames = app.take_frames();
            let Some(request) = frames
                .iter()
                .map(|frame| serde_json::from_str::<Value>(frame).unwrap())
                .find(|frame| frame["type"] == "members")
            else {
                break;
            };
            let nonce = request["nonce"].as_str().unwrap().to_owned();
            answer(
                &mut app,
                &nonce,
                next..next + 100,
                MEMBERS_HELD_MOST + 500,
                true,
            );
            next += 100;
        }
        assert_eq!(next, most + 1, "stopped at the bound");
        let session = app.session.as_ref().unwrap();
        assert_eq!(session.unlisted(), 500);
        app.who();
        assert!(
            app.scrollback
                .iter()
                .any(|entry| entry.text.starts_with("* 20500 here: ")
                    && entry.text.ends_with(" and 500 more")),
            "/who says how many it does not list"
        );
    }

    #[test]
    fn a_batch_on_sixteen_thousand_members_costs_its_changes_not_the_room() {
        let mut app = big_app(1..101, 16_000);
        let mut next = 101;
        while next <= 16_000 {
            let (_, nonce) = asked(&mut app);
            answer(
                &mut app,
                &nonce,
                next..next + 100,
                16_000,
                next + 100 <= 16_000,
            );
            next += 100;
        }
        let started = std::time::Instant::now();
        for round in 0..100u64 {
            let joined: Vec<u64> = (0..128).map(|n| 20_000 + round * 128 + n).collect();
            let left: Vec<u64> = (0..128).map(|n| 1 + round * 128 + n).collect();
            batch(&mut app, 16_000, &joined, &left, false);
        }
        // 25 600 changes on 16 000 members: linear, well under a second even in debug.
        let took = started.elapsed();
        assert!(took.as_secs_f64() < 2.0, "{took:?}");
        let session = app.session.as_ref().unwrap();
        assert_eq!((session.members.len(), session.unlisted()), (16_000, 0));
    }

    #[test]
    fn the_member_list_draws_the_rows_that_fit_and_counts_the_rest() {
        use crossterm::event::Event as TerminalEvent;
        let mut app = big_app(1..101, 16_000);
        app.update(Event::Terminal(TerminalEvent::Resize(80, 12)));
        app.show_members = true;
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 12)).expect("terminal");
        terminal
            .draw(|frame| crate::ui::render(&app, frame))
            .expect("draw");
        let buffer = terminal.backend().buffer();
        let rows: Vec<String> = (0..12)
            .map(|y| {
                (54..80)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect();
        let pane: Vec<&str> = rows
            .iter()
            .map(String::as_str)
            .filter(|row| row.starts_with("│ "))
            .collect();
        assert_eq!(pane.first(), Some(&"│ 16000 here"), "{rows:#?}");
        let last = pane.last().unwrap();
        let shown = pane.len() - 2;
        assert_eq!(
            *last,
            format!("│ and {} more (F12)", 16_000 - shown),
            "the rows that fit, then how many more: {rows:#?}"
        );
    }
}
