//! Buffers: several rooms (and direct messages) open at once, each over its own
//! connection, with its own scrollback, place, history and messages on their way. The
//! buffer on screen lives in `App`'s own fields, which every other part reads; the
//! others are parked here, and swapped in for the moment an event of theirs is applied
//! (so one `update` serves them all) or when the user switches to one.

use std::collections::{BTreeMap, HashMap};

use chat::v1::RoomName;

use super::{App, Command, Conversation, Link, Scrollback, Session, Viewport};
use crate::event::{Beside, NetEvent, Protocol};

/// The most direct-message rooms the server lists that are opened at the start: each
/// is a connection.
pub const MOST_LISTED_DMS: usize = 20;

/// Names a buffer for as long as it is open: its connection's events carry it.
pub type BufferId = u64;

/// What a buffer holds while another is on screen.
#[derive(Debug)]
pub struct Parked {
    pub room: RoomName,
    link: Link,
    scrollback: Scrollback,
    viewport: Viewport,
    connected_before: bool,
    protocol: Protocol,
    session: Option<Session>,
    connections: u64,
    notice_below: Option<String>,
    conversation: Conversation,
    frames: Vec<String>,
    max_message_bytes: usize,
    last_day: Option<(u64, String)>,
    /// Messages of others new to this id (past the server's read position, or live)
    /// that came while parked, by offset, and whether each mentions us: a read position
    /// from another device takes back those it covers.
    unread: BTreeMap<u64, bool>,
    /// How many of `unread` mention us.
    mentions: usize,
}

impl Parked {
    fn new(room: RoomName, scrollback: usize, max_message_bytes: usize) -> Self {
        Self {
            room,
            link: Link::Connecting,
            scrollback: Scrollback::with_room_before(scrollback),
            viewport: Viewport::default(),
            connected_before: false,
            protocol: Protocol::Plain,
            session: None,
            connections: 0,
            notice_below: None,
            conversation: Conversation::default(),
            frames: Vec::new(),
            max_message_bytes,
            last_day: None,
            unread: BTreeMap::new(),
            mentions: 0,
        }
    }

    /// Adds messages new to this id, each with whether it mentions us.
    fn count(&mut self, fresh: Vec<(u64, bool)>) {
        for (offset, mentions) in fresh {
            if self.unread.insert(offset, mentions).is_none() {
                self.mentions += usize::from(mentions);
            }
        }
    }

    /// Forgets what this id has read up to `read` (the server's read position: another
    /// device of ours read on).
    fn read_up_to(&mut self, read: u64) {
        if self
            .unread
            .first_key_value()
            .is_none_or(|(first, _)| *first > read)
        {
            return;
        }
        self.unread = self.unread.split_off(&(read + 1));
        self.mentions = self.unread.values().filter(|mentions| **mentions).count();
    }

    /// Forgets them all: the buffer was shown.
    fn seen(&mut self) {
        self.unread.clear();
        self.mentions = 0;
    }
}

/// The open buffers, in the order the status bar lists them (Alt-1 is the first).
#[derive(Debug, Default)]
pub struct Buffers {
    /// Every open buffer, the one on screen included.
    order: Vec<BufferId>,
    active: BufferId,
    parked: HashMap<BufferId, Parked>,
    next: BufferId,
    /// The buffer the last `update`'s command is for.
    routed: BufferId,
}

/// One buffer as the status bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tab {
    pub number: usize,
    pub room: String,
    pub active: bool,
    pub unread: usize,
    pub mentions: usize,
}

impl Buffers {
    /// The first buffer (id 0) is the one `App` starts with.
    pub fn new() -> Self {
        Self {
            order: vec![0],
            next: 1,
            ..Self::default()
        }
    }
}

impl App {
    /// How this id is known in another open buffer's room (its name, and whether the
    /// server proved it): what a buffer still joining shows its first message under.
    pub(super) fn known_elsewhere(&self) -> Option<(Option<chat::v1::DisplayName>, bool)> {
        self.buffers
            .parked
            .values()
            .filter_map(|parked| parked.session.as_ref())
            .map(|session| (session.my_name.clone(), session.verified))
            .find(|(name, _)| name.is_some())
    }

    pub(super) fn set_routed(&mut self, id: BufferId) {
        self.buffers.routed = id;
    }

    /// Connections buffer `id` has made so far, as its network task counts them.
    pub fn connections_of(&self, id: BufferId) -> u64 {
        match self.buffers.parked.get(&id) {
            Some(parked) => parked.connections,
            None => self.connections(),
        }
    }

    /// How many buffers are open, the one on screen included.
    pub fn buffer_count(&self) -> usize {
        self.buffers.order.len()
    }

    /// The buffer on screen.
    pub fn active_buffer(&self) -> BufferId {
        self.buffers.active
    }

    /// The buffer the command `update` just returned is for: the one on screen, or the
    /// one whose connection's event it applied.
    pub fn routed(&self) -> BufferId {
        self.buffers.routed
    }

    /// The open buffers in order, for the status bar's hotlist.
    pub fn tabs(&self) -> Vec<Tab> {
        let buffers = &self.buffers;
        buffers
            .order
            .iter()
            .enumerate()
            .map(|(index, id)| match buffers.parked.get(id) {
                Some(parked) => Tab {
                    number: index + 1,
                    room: parked.room.to_string(),
                    active: false,
                    unread: parked.unread.len(),
                    mentions: parked.mentions,
                },
                None => Tab {
                    number: index + 1,
                    room: self.room.to_string(),
                    active: true,
                    unread: 0,
                    mentions: 0,
                },
            })
            .collect()
    }

    /// The rooms open, in order, to open again on the next start.
    pub fn rooms(&self) -> Vec<RoomName> {
        let buffers = &self.buffers;
        buffers
            .order
            .iter()
            .map(|id| {
                buffers
                    .parked
                    .get(id)
                    .map_or_else(|| self.room.clone(), |parked| parked.room.clone())
            })
            .collect()
    }

    /// Swaps the buffer on screen with `parked`.
    fn swap_buffer(&mut self, parked: &mut Parked) {
        std::mem::swap(&mut self.room, &mut parked.room);
        std::mem::swap(&mut self.link, &mut parked.link);
        std::mem::swap(&mut self.scrollback, &mut parked.scrollback);
        std::mem::swap(&mut self.viewport, &mut parked.viewport);
        std::mem::swap(&mut self.connected_before, &mut parked.connected_before);
        std::mem::swap(&mut self.protocol, &mut parked.protocol);
        std::mem::swap(&mut self.session, &mut parked.session);
        std::mem::swap(&mut self.connections, &mut parked.connections);
        std::mem::swap(&mut self.notice_below, &mut parked.notice_below);
        std::mem::swap(&mut self.conversation, &mut parked.conversation);
        std::mem::swap(&mut self.frames, &mut parked.frames);
        std::mem::swap(&mut self.max_message_bytes, &mut parked.max_message_bytes);
        std::mem::swap(&mut self.last_day, &mut parked.last_day);
    }

    /// News from buffer `id`'s connection: applied to it, on screen or parked.
    pub(super) fn buffer_news(&mut self, id: BufferId, news: NetEvent) -> Option<Command> {
        self.buffers.routed = id;
        if id == self.buffers.active {
            return self.net(news);
        }
        // A buffer closed since: its connection's last words.
        let mut parked = self.buffers.parked.remove(&id)?;
        let read_position = matches!(news, NetEvent::Beside(Beside::Read { .. }));
        self.swap_buffer(&mut parked);
        self.fresh.clear();
        let command = self.net(news);
        let fresh = std::mem::take(&mut self.fresh);
        self.swap_buffer(&mut parked);
        parked.count(fresh);
        if read_position {
            parked.read_up_to(parked.conversation.read);
        }
        self.buffers.parked.insert(id, parked);
        command
    }

    /// Shows buffer `id`.
    pub(super) fn switch_to(&mut self, id: BufferId) {
        let active = self.buffers.active;
        if id == active {
            return;
        }
        let Some(mut parked) = self.buffers.parked.remove(&id) else {
            return;
        };
        // Looking at another buffer is looking away from this one: what it showed is
        // read (told to the server, for the other devices), and what comes next is
        // under a marker, as weechat's read marker does. Scrolled up, it was not all
        // seen.
        if !self.viewport.is_scrolled_up() {
            self.mark_read();
        }
        self.swap_buffer(&mut parked);
        parked.seen();
        self.buffers.parked.insert(active, parked);
        self.buffers.active = id;
        self.buffers.routed = id;
        // The terminal may have changed size while it was parked.
        self.fit_viewport();
    }

    /// Shows the `number`th buffer (Alt-1 is the first).
    pub(super) fn switch_to_number(&mut self, number: usize) {
        if let Some(&id) = number
            .checked_sub(1)
            .and_then(|index| self.buffers.order.get(index))
        {
            self.switch_to(id);
        }
    }

    /// `/buffer N|ROOM`: shows buffer `N` (counted from 1) or the open buffer of room
    /// `ROOM` (`#` optional); `false` if there is none.
    pub(super) fn show_buffer(&mut self, which: &str) -> bool {
        let which = which.trim();
        let found = match which.parse::<usize>() {
            Ok(number) => number
                .checked_sub(1)
                .and_then(|index| self.buffers.order.get(index))
                .copied(),
            Err(_) => {
                let name = which.strip_prefix('#').unwrap_or(which);
                let at = self.rooms().iter().position(|room| room.as_str() == name);
                at.map(|index| self.buffers.order[index])
            }
        };
        found.inspect(|id| self.switch_to(*id)).is_some()
    }

    /// Shows the next buffer (`step` 1) or the previous (-1), round.
    pub(super) fn switch_by(&mut self, step: isize) {
        let order = &self.buffers.order;
        let Some(at) = order.iter().position(|id| *id == self.buffers.active) else {
            return;
        };
        let next = (at as isize + step).rem_euclid(order.len() as isize) as usize;
        self.switch_to(order[next]);
    }

    /// `/join ROOM`, `/query ID`: shows the buffer of `room`, opening it if none is.
    pub(super) fn open(&mut self, room: RoomName) -> Option<Command> {
        if room == self.room {
            self.notice(&format!("you are in #{room}"));
            return None;
        }
        if let Some((&id, _)) = self
            .buffers
            .parked
            .iter()
            .find(|(_, parked)| parked.room == room)
        {
            self.switch_to(id);
            return None;
        }
        let id = self.add_buffer(room.clone());
        self.switch_to(id);
        self.viewport.end_search();
        Some(Command::Open { buffer: id, room })
    }

    /// Opens a buffer for `room` after the others, not shown (the rooms open when the
    /// client last quit); `None` if one is open already.
    pub fn open_beside(&mut self, room: RoomName) -> Option<Command> {
        let open = room == self.room
            || self
                .buffers
                .parked
                .values()
                .any(|parked| parked.room == room);
        if open {
            return None;
        }
        let id = self.add_buffer(room.clone());
        self.fit_viewport();
        Some(Command::Open { buffer: id, room })
    }

    /// The buffers opened beside since the last call (the direct messages the server
    /// listed), each to connect.
    pub fn take_opened(&mut self) -> Vec<(BufferId, RoomName)> {
        std::mem::take(&mut self.opened)
    }

    /// Opens beside the direct-message rooms the server listed (`dms`) that are ours and
    /// not open yet: those with unread messages first, then the latest, up to
    /// [`MOST_LISTED_DMS`] of them.
    pub(super) fn open_listed_dms(&mut self) {
        let mut listed = std::mem::take(&mut self.listed_dms);
        listed.sort_by(|a, b| b.unread.cmp(&a.unread).then(b.offset.cmp(&a.offset)));
        let me = chat::ClientId::parse(&self.id).ok();
        let ours = listed.into_iter().filter_map(|listed| {
            let room = RoomName::parse(&listed.room).ok()?;
            let (a, b) = chat::v2::direct_members(&room)?.ok()?;
            me.as_ref()
                .is_some_and(|me| *me == a || *me == b)
                .then_some(room)
        });
        for room in ours.take(MOST_LISTED_DMS) {
            if let Some(Command::Open { buffer, room }) = self.open_beside(room) {
                self.opened.push((buffer, room));
            }
        }
    }

    fn add_buffer(&mut self, room: RoomName) -> BufferId {
        let id = self.buffers.next;
        self.buffers.next += 1;
        self.buffers.order.push(id);
        let parked = Parked::new(
            room,
            self.scrollback.cap(),
            super::DEFAULT_MAX_MESSAGE_BYTES,
        );
        self.buffers.parked.insert(id, parked);
        id
    }

    /// `/part`: closes the buffer on screen and shows the one before it.
    pub(super) fn part(&mut self) -> Option<Command> {
        let closing = self.buffers.active;
        if self.buffers.order.len() == 1 {
            self.notice("this is the only buffer: /quit quits");
            return None;
        }
        let waiting = self.messages_on_their_way();
        if waiting > 0 {
            self.notice(&format!(
                "{waiting} of your messages here are not sent yet: /part again once they are, or /quit"
            ));
            return None;
        }
        self.tell_read();
        let frames = std::mem::take(&mut self.frames);
        self.switch_by(-1);
        self.buffers.order.retain(|id| *id != closing);
        self.buffers.parked.remove(&closing);
        self.fit_viewport();
        self.buffers.routed = closing;
        Some(Command::Close {
            buffer: closing,
            frames,
        })
    }

    /// Our messages waiting for a connection in the buffers not on screen.
    pub(super) fn parked_messages_on_their_way(&mut self) -> usize {
        let ids: Vec<BufferId> = self.buffers.parked.keys().copied().collect();
        let mut waiting = 0;
        for id in ids {
            let Some(mut parked) = self.buffers.parked.remove(&id) else {
                continue;
            };
            self.swap_buffer(&mut parked);
            waiting += self.messages_on_their_way();
            self.swap_buffer(&mut parked);
            self.buffers.parked.insert(id, parked);
        }
        waiting
    }

    /// Has the smart filter hide (or show) the buffers not on screen too.
    pub(super) fn filter_parked(&mut self, hide: bool) {
        for parked in self.buffers.parked.values_mut() {
            parked.scrollback.filter_quiet_presence(hide);
            // Measured again when shown.
        }
    }

    /// The frames for the server of every buffer, each with its buffer.
    pub fn take_all_frames(&mut self) -> Vec<(BufferId, String)> {
        let active = self.buffers.active;
        let mut all: Vec<(BufferId, String)> = self
            .take_frames()
            .into_iter()
            .map(|frame| (active, frame))
            .collect();
        for (id, parked) in &mut self.buffers.parked {
            all.extend(parked.frames.drain(..).map(|frame| (*id, frame)));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use chat::v1::{Event as RoomEvent, EventKind, Limits, ServerFrame, Welcome, WelcomeFrame};

    fn news(offset: u64, id: &str, text: &str) -> NetEvent {
        NetEvent::Frame(ServerFrame::Event(RoomEvent {
            offset,
            ts: offset,
            id: id.into(),
            name: None,
            kind: EventKind::said(text, None),
        }))
    }

    fn news_in(buffer: BufferId, offset: u64, id: &str, text: &str) -> Event {
        Event::Room(buffer, news(offset, id, text))
    }

    #[test]
    fn a_buffer_not_shown_counts_what_is_new_past_the_server_s_read_position() {
        let mut app = App::new("ws://x".into(), "42".into(), 100, || "12:00:00".into());
        let ops = RoomName::parse("ops").unwrap();
        let Some(Command::Open { buffer, .. }) = app.open_beside(ops.clone()) else {
            panic!("opened");
        };
        let welcome = welcome_of_42("ops", 5);
        let welcome = NetEvent::Frame(ServerFrame::Welcome(WelcomeFrame {
            kind: chat::v1::WelcomeTag::Welcome,
            welcome,
        }));
        for event in [
            NetEvent::Connected {
                protocol: Protocol::V2,
            },
            welcome,
            NetEvent::Beside(Beside::Read { offset: 3 }),
            news(1, "7", "old"),
            news(2, "7", "old"),
            news(3, "7", "read"),
            news(4, "7", "new"),
            news(5, "42", "mine"),
            news(6, "7", "new to 42"),
        ] {
            app.update(Event::Room(buffer, event));
        }
        let tabs = app.tabs();
        assert_eq!(
            (tabs[1].room.as_str(), tabs[1].unread, tabs[1].mentions),
            ("ops", 2, 1)
        );
        assert!(app.fresh.is_empty(), "taken into the hotlist entry");
        // Another device of ours read on: what it read is no longer counted.
        let read = |offset| Event::Room(buffer, NetEvent::Beside(Beside::Read { offset }));
        app.update(read(5));
        let tabs = app.tabs();
        assert_eq!((tabs[1].unread, tabs[1].mentions), (1, 1));
        app.update(news_in(buffer, 7, "7", "and more"));
        app.update(read(6));
        let tabs = app.tabs();
        assert_eq!((tabs[1].unread, tabs[1].mentions), (1, 0));
        assert_eq!(app.room, RoomName::default(), "still on #main");
        app.update(Event::Terminal(crossterm::event::Event::Key(
            crossterm::event::KeyEvent::new(
                crossterm::event::KeyCode::Char('n'),
                crossterm::event::KeyModifiers::CONTROL,
            ),
        )));
        assert_eq!(app.room, ops);
        assert!(app.tabs().iter().all(|tab| tab.unread == 0), "seen");
        // What comes to the buffer on screen is seen: nothing is kept for it.
        for offset in 7..100 {
            app.update(news_in(buffer, offset, "7", "on screen"));
        }
        assert!(app.fresh.is_empty(), "{} kept", app.fresh.len());
    }

    #[test]
    fn too_many_buffers_for_the_status_bar_leave_out_the_quiet_ones_not_the_news() {
        let mut app = App::new("ws://x".into(), "42".into(), 100, || "12:00:00".into());
        app.update(Event::Terminal(crossterm::event::Event::Resize(100, 10)));
        let mut last = None;
        for number in 2..=11 {
            let room = RoomName::parse(&format!("room-number-{number}")).unwrap();
            if let Some(Command::Open { buffer, .. }) = app.open_beside(room) {
                last = Some(buffer);
            }
        }
        let buffer = last.expect("opened");
        let welcome = NetEvent::Frame(ServerFrame::Welcome(WelcomeFrame {
            kind: chat::v1::WelcomeTag::Welcome,
            welcome: welcome_of_42("room-number-11", 0),
        }));
        let connected = NetEvent::Connected {
            protocol: Protocol::V2,
        };
        for event in [connected, welcome, news(1, "7", "42: the build is red")] {
            app.update(Event::Room(buffer, event));
        }
        let status = |app: &App| {
            let backend = ratatui::backend::TestBackend::new(100, 10);
            let mut terminal = ratatui::Terminal::new(backend).unwrap();
            terminal
                .draw(|frame| crate::ui::render(app, frame))
                .unwrap();
            let buffer = terminal.backend().buffer().clone();
            let row = buffer.area.height - 2;
            (0..buffer.area.width)
                .map(|x| buffer[(x, row)].symbol().to_owned())
                .collect::<String>()
        };
        let shown = status(&app);
        assert!(shown.contains(" 11:#room-number-11(1)! +9"), "{shown}");
        assert!(!shown.contains("2:#room-number-2"), "{shown}");
    }

    #[test]
    fn alt_left_and_alt_right_go_round_the_buffers() {
        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        let alt = |code| {
            Event::Terminal(crossterm::event::Event::Key(KeyEvent::new(
                code,
                KeyModifiers::ALT,
            )))
        };
        let mut app = App::new("ws://x".into(), "42".into(), 100, || "12:00:00".into());
        for room in ["ops", "dev"] {
            app.open_beside(RoomName::parse(room).unwrap());
        }
        let on = |app: &App| app.room.to_string();
        app.update(alt(KeyCode::Right));
        assert_eq!(on(&app), "ops");
        app.update(alt(KeyCode::Right));
        assert_eq!(on(&app), "dev");
        app.update(alt(KeyCode::Right));
        assert_eq!(on(&app), "main", "round");
        app.update(alt(KeyCode::Left));
        assert_eq!(on(&app), "dev");
        type_into(&mut app, "ab");
        app.update(alt(KeyCode::Left));
        assert_eq!(
            (on(&app).as_str(), app.input.text()),
            ("ops", "ab"),
            "not a word move, even with text in the line"
        );
    }

    #[test]
    fn alt_0_is_the_tenth_buffer_and_slash_buffer_reaches_any() {
        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        let key = |code, modifiers| {
            Event::Terminal(crossterm::event::Event::Key(KeyEvent::new(code, modifiers)))
        };
        let mut app = App::new("ws://x".into(), "42".into(), 100, || "12:00:00".into());
        for number in 2..=12 {
            app.open_beside(RoomName::parse(&format!("r{number}")).unwrap());
        }
        let on = |app: &App| app.room.to_string();
        app.update(key(KeyCode::Char('0'), KeyModifiers::ALT));
        assert_eq!(on(&app), "r10");
        for (typed, shown) in [
            ("/buffer 12", "r12"),
            ("/buffer #r11", "r11"),
            ("/buffer main", "main"),
        ] {
            type_into(&mut app, typed);
            app.update(key(KeyCode::Enter, KeyModifiers::NONE));
            let last = app.scrollback.iter().last().map(|entry| entry.text.clone());
            assert_eq!(on(&app), shown, "{typed} {last:?} {:?}", app.input.text());
        }
        type_into(&mut app, "/buffer 13");
        app.update(key(KeyCode::Enter, KeyModifiers::NONE));
        assert_eq!(on(&app), "main", "no 13th");
        let last = app.scrollback.iter().last().map(|entry| entry.text.clone());
        assert!(last.is_some_and(|text| text.contains("no buffer 13: /buffer N shows")));
    }

    /// The welcome of id 42 to `room`, whose newest event is `offset`.
    fn welcome_of_42(room: &str, offset: u64) -> Welcome {
        Welcome {
            id: "42".into(),
            room: room.into(),
            epoch: "e".into(),
            offset,
            members: Vec::new(),
            count: None,
            more: None,
            recovered: false,
            verified: false,
            limits: Limits {
                max_message_bytes: 1000,
                max_nonce_chars: 64,
                history: 100,
            },
        }
    }

    fn type_into(app: &mut App, text: &str) {
        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        for c in text.chars() {
            app.update(Event::Terminal(crossterm::event::Event::Key(
                KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE),
            )));
        }
    }

    #[test]
    fn the_direct_messages_the_server_lists_are_opened_beside() {
        let mut app = App::new("ws://x".into(), "42".into(), 100, || "12:00:00".into());
        let welcome = welcome_of_42("main", 0);
        app.update(Event::Room(
            0,
            NetEvent::Connected {
                protocol: Protocol::V2,
            },
        ));
        app.update(Event::Room(
            0,
            NetEvent::Frame(ServerFrame::Welcome(WelcomeFrame {
                kind: chat::v1::WelcomeTag::Welcome,
                welcome,
            })),
        ));
        let frames: Vec<String> = app.take_all_frames().into_iter().map(|(_, f)| f).collect();
        assert!(
            frames.iter().any(|frame| frame.contains(r#""type":"dms""#)),
            "{frames:?}"
        );
        let listed = |room: &str, unread, offset| chat::v2::DirectRoom {
            room: room.into(),
            with: String::new(),
            offset,
            read: 0,
            unread,
        };
        let rooms = vec![
            // Read already: it stays closed (the rooms open at quitting come back on
            // their own), as weechat opens a private buffer only for news.
            listed("dm.7.42", 0, 9),
            listed("dm.8.42", 2, 3),
            listed("dm.9.42", 5, 1),
            // Not ours, and not a direct-message room: left alone.
            listed("dm.7.8", 1, 1),
            listed("ops", 1, 1),
        ];
        app.update(Event::Room(
            0,
            NetEvent::Beside(Beside::DirectRooms { rooms }),
        ));
        let opened: Vec<String> = app
            .take_opened()
            .into_iter()
            .map(|(_, room)| room.to_string())
            .collect();
        assert_eq!(opened, ["dm.9.42", "dm.8.42"], "most unread first");
        let rooms: Vec<String> = app.tabs().into_iter().map(|tab| tab.room).collect();
        assert_eq!(rooms, ["main", "dm.9.42", "dm.8.42"]);
        assert_eq!(app.room.as_str(), "main", "still on screen");
        // Listed again (another connection asked): nothing opens twice.
        app.update(Event::Room(
            0,
            NetEvent::Beside(Beside::DirectRooms {
                rooms: vec![listed("dm.7.42", 0, 9)],
            }),
        ));
        assert!(app.take_opened().is_empty());
    }

    /// A user review: a direct message sent to a running chat-tui never showed up.
    /// The list is asked again every 30 s; of a later list, the rooms with unread
    /// messages open (a new one, or one closed with /part that has news), the others
    /// stay closed.
    #[test]
    fn the_direct_messages_are_asked_again_and_new_ones_open() {
        let mut app = App::new("ws://x".into(), "42".into(), 100, || "12:00:00".into());
        app.now = || 1_000_000;
        app.update(Event::Room(
            0,
            NetEvent::Connected {
                protocol: Protocol::V2,
            },
        ));
        let welcome = welcome_of_42("main", 0);
        app.update(Event::Room(
            0,
            NetEvent::Frame(ServerFrame::Welcome(WelcomeFrame {
                kind: chat::v1::WelcomeTag::Welcome,
                welcome,
            })),
        ));
        let asked = |app: &mut App| {
            app.take_all_frames()
                .iter()
                .filter(|(_, frame)| frame.contains(r#""type":"dms""#))
                .count()
        };
        assert_eq!(asked(&mut app), 1, "at the welcome");
        let listed = |room: &str, unread| chat::v2::DirectRoom {
            room: room.into(),
            with: String::new(),
            offset: 5,
            read: 0,
            unread,
        };
        app.update(Event::Room(
            0,
            NetEvent::Beside(Beside::DirectRooms { rooms: Vec::new() }),
        ));
        app.update(Event::Tick);
        assert_eq!(asked(&mut app), 0, "not again within 30 s");
        app.now = || 1_031_000;
        app.update(Event::Tick);
        assert_eq!(asked(&mut app), 1, "again after 30 s");
        app.update(Event::Room(
            0,
            NetEvent::Beside(Beside::DirectRooms {
                rooms: vec![listed("dm.7.42", 1), listed("dm.8.42", 0)],
            }),
        ));
        let opened: Vec<String> = app
            .take_opened()
            .into_iter()
            .map(|(_, room)| room.to_string())
            .collect();
        assert_eq!(opened, ["dm.7.42"], "the one with news");
    }
}
