//! The client's state and its pure `update`: no I/O here, so every key and every
//! network event can be tested by calling [`App::update`]. What `chat.v1.json` adds
//! (history, resuming, names, who is here, messages on their way) is in `protocol`;
//! the kept messages are a [`Scrollback`], and where the pane is in them a [`Viewport`].

mod buffers;
mod members;
mod messages;
mod protocol;

pub use buffers::{BufferId, Buffers, Parked, Tab};
pub use messages::{Composing, Conversation, PAGE_EVENTS, Typist, typing_line};
pub use protocol::{Member, Session};

use std::ops::Range;

use chat::Announcement;
use chat::v1::RoomName;
use crossterm::event::{Event as TerminalEvent, KeyCode, KeyEvent, KeyEventKind, MouseEvent};

use crate::event::{Event, NetEvent, Protocol};
use crate::input::InputLine;
use crate::keys::{self, Action, Situation, SlashAction};
pub use crate::scrollback::{Entry, Kind, Scrollback, TIME_WIDTH};
use crate::text::sanitize;
use crate::viewport::WHEEL_ROWS;
pub use crate::viewport::{Anchor, CHROME_ROWS, Search, Viewport};

/// What `update` asks the outside world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this line as a text frame.
    Send(String),
    /// Send these frames, in order: messages that a lost connection may have lost,
    /// once the new connection has joined.
    Resend(Vec<String>),
    /// Ring the bell and ask the terminal for a desktop notification (OSC 9 and 777)
    /// with this text, already made safe.
    Notify(String),
    /// Open a buffer for this room (`/join`, `/query`): connect there too; the buffer's
    /// connection sends its events as [`Event::Room`] with `buffer`.
    Open {
        buffer: BufferId,
        room: RoomName,
    },
    /// Close this buffer's connection (`/part`), after sending `frames` on it.
    Close {
        buffer: BufferId,
        frames: Vec<String>,
    },
    /// Take the mouse's reports (true: the wheel scrolls) or leave the mouse to the
    /// terminal (false: text can be selected) (Alt-M).
    Mouse(bool),
    /// Try to connect now (F5), without waiting for the countdown, or after a failure
    /// that is not retried by itself.
    Reconnect,
    /// Clear the terminal and draw everything again (Ctrl-L): for when the terminal
    /// and the client disagree on the width of some character and leave stray glyphs.
    Redraw,
    Quit,
}

/// The state of the connection, as the status bar shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Connected,
    Retrying {
        seconds: u64,
    },
    /// Not retrying: the last failure will not fix itself.
    Stopped,
}

/// A server time (Unix milliseconds) as the time column shows it: local, `HH:MM:SS`
/// unless `--time-format` says otherwise.
pub fn local_time_of(millis: u64) -> String {
    crate::time_format::chosen().local(millis)
}

/// The local date of a server time (Unix milliseconds), as a day-change line says it:
/// `Friday 4 December 2026`.
pub fn local_day_of(millis: u64) -> String {
    i64::try_from(millis)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|time| {
            time.with_timezone(&chrono::Local)
                .format("%A %-d %B %Y")
                .to_string()
        })
        .unwrap_or_default()
}

/// Whether `text` has `word` (both in lower case) as a word of its own: not inside a
/// longer one ("deploy" is in "deploy done", not in "redeploying").
fn has_word(text: &str, word: &str) -> bool {
    !word.is_empty()
        && text.match_indices(word).any(|(at, found)| {
            let before = text[..at].chars().next_back();
            let after = text[at + found.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
}

/// The whole client state.
#[derive(Debug)]
pub struct App {
    /// The server's base URL, for the status bar.
    pub server: String,
    /// Our canonical id.
    pub id: String,
    /// The room we are in, or going to.
    pub room: RoomName,
    pub link: Link,
    /// The messages kept for the pane.
    pub scrollback: Scrollback,
    /// Where the pane is in them.
    pub viewport: Viewport,
    pub input: InputLine,
    /// The local time as `HH:MM:SS`; a parameter so that tests can fix it.
    clock: fn() -> String,
    /// Whether a connection has ever been made, so that only a later one is "again".
    connected_before: bool,
    /// The largest message the server takes, in bytes: a longer line is kept, not sent.
    pub max_message_bytes: usize,
    /// Whether to draw in colour (`NO_COLOR` says not to); attributes are drawn either way.
    pub colours: bool,
    /// Whether a mention of our id, while the terminal is not focused, rings and
    /// notifies (`--no-notify` turns it off; the highlight stays).
    pub notify: bool,
    /// Whether the terminal has focus, as its focus reports say.
    focused: bool,
    /// The protocol the connection now speaks.
    pub protocol: Protocol,
    /// What the `chat.v1.json` connections so far have told, kept across reconnects.
    pub session: Option<Session>,
    /// Connections made so far: a message sent in an earlier one may have been lost.
    connections: u64,
    /// Whether the member list is asked for beside the messages (F2); see
    /// [`App::members_shown`].
    pub show_members: bool,
    /// How many of who is here the member list scrolls past (F11, F12): kept within
    /// the list when it is drawn, as the list changes under it.
    pub members_scroll: usize,
    /// Whether the list of open buffers is asked for left of the messages (F3); see
    /// [`App::buffer_list_shown`].
    pub show_buffers: bool,
    /// The terminal's columns and rows.
    terminal_size: (u16, u16),
    /// A server time (Unix milliseconds) as the time column shows it; a parameter so
    /// that tests can fix it.
    pub event_time: fn(u64) -> String,
    /// With `--log`: the messages received since the last [`App::take_received`].
    received: Option<Vec<Received>>,
    /// The rooms open besides the one on screen.
    buffers: Buffers,
    /// Messages of others new to this id since they were last taken, by offset, and
    /// whether each mentions it: what a buffer not on screen adds to its hotlist entry.
    fresh: Vec<(u64, bool)>,
    /// The last event logged (`--log`) of each history, by room and epoch, in every
    /// buffer: a history seen again (a reconnect, a room opened again) is not logged
    /// again. (Across runs, `--log` reads the end of its file for that.)
    logged: std::collections::BTreeMap<(String, String), u64>,
    /// Whether the user was told that quitting drops messages on their way: the next
    /// quit does.
    quit_asked: bool,
    /// The last notice, while it is out of sight below a pane scrolled up: the view
    /// shows it over the pane's last row until the next key.
    pub notice_below: Option<String>,
    /// What `chat.v2.json` has told about this room: messages in their latest state,
    /// who is typing, pages and searches on their way, the read position.
    pub conversation: Conversation,
    /// Frames for the server beside the messages, since the last
    /// [`App::take_frames`].
    frames: Vec<String>,
    /// The time now, in Unix milliseconds; a parameter so that tests can fix it.
    pub now: fn() -> u64,
    /// When this id's direct-message rooms were last asked for (`dms`: at the first
    /// chat.v2.json welcome, then every [`DMS_EVERY_MS`]), in Unix milliseconds.
    dms_asked: Option<u64>,
    /// Direct-message rooms the server listed, to open beside once the event that
    /// brought them is applied.
    listed_dms: Vec<chat::v2::DirectRoom>,
    /// Buffers opened beside since the last [`App::take_opened`], to connect.
    opened: Vec<(BufferId, RoomName)>,
    /// The Tab completion in progress, until another key.
    completion: Option<crate::complete::Completion>,
    /// A server time (Unix milliseconds) as its local date; a parameter so that tests
    /// can fix it.
    pub event_day: fn(u64) -> String,
    /// The minute (Unix milliseconds / 60 000) and the date of the last message or
    /// presence line shown, for the day-change lines.
    pub(crate) last_day: Option<(u64, String)>,
    /// Keys the user bound (`--key`), before the table's.
    pub rebound: Vec<keys::Rebinding>,
    /// Whether URLs are drawn as OSC 8 hyperlinks (`--hyperlinks`: where the terminal
    /// is known to support them).
    pub hyperlinks: bool,
    /// The mention Alt-N showed last, while Alt-N is pressed again: the next goes on
    /// from there.
    mention_shown: Option<u64>,
    /// Extra words that highlight a message as a mention does (`--highlight`), in
    /// lower case.
    pub highlights: Vec<String>,
    /// Whether the mouse's reports are taken (the wheel scrolls); else the terminal
    /// has it, for selecting text (`--no-mouse`, Alt-M).
    pub mouse: bool,
    /// Whether the smart filter hides the comings and goings of people who had not
    /// spoken lately (Alt-J, `--smart-filter`).
    pub smart_filter: bool,
}

/// The time now in Unix milliseconds, as the server counts it.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A message received, as `--log` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When it was said, in Unix milliseconds, if the server told (`chat.v1.json`).
    pub millis: Option<u64>,
    /// The room it was said in.
    pub room: String,
    /// As received: raw, unsanitized.
    pub text: String,
}

impl Received {
    /// Its line in the log: the date and time it was said (or, if the server did not
    /// tell, `now`), local; the room; the text made safe, on one line.
    pub fn line(&self, now: chrono::DateTime<chrono::Local>) -> String {
        let said = self
            .millis
            .and_then(|millis| i64::try_from(millis).ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or(now, |time| time.with_timezone(&chrono::Local));
        format!(
            "{} #{} {}",
            said.format("%Y-%m-%d %H:%M:%S"),
            self.room,
            crate::text::sanitize_line(&self.text)
        )
    }
}

/// The smart filter hides the comings and goings of those who had not spoken in this
/// many minutes before (as weechat's `irc.look.smart_filter_delay` does).
pub const SMART_FILTER_MINUTES: u64 = 10;

/// Columns of the member list (F2), its border included.
pub const MEMBERS_WIDTH: u16 = 26;

/// Columns of the list of open buffers (F3), its border included.
pub const BUFFERS_WIDTH: u16 = 22;

/// The server's default limit on a message, which the plain protocol cannot tell.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How often this id's direct-message rooms are asked for again, in milliseconds: a
/// direct message started while chat-tui runs shows up within this (the page asks as
/// often).
pub const DMS_EVERY_MS: u64 = 30_000;

impl App {
    /// A client for `id` on `server`, keeping at most `scrollback` messages, stamping
    /// each with the time `clock` tells.
    pub fn new(server: String, id: String, scrollback: usize, clock: fn() -> String) -> Self {
        Self {
            server,
            id,
            room: RoomName::default(),
            link: Link::Connecting,
            scrollback: Scrollback::with_room_before(scrollback),
            viewport: Viewport::default(),
            input: InputLine::default(),
            clock,
            connected_before: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            colours: true,
            notify: true,
            focused: true,
            protocol: Protocol::Plain,
            session: None,
            connections: 0,
            show_members: false,
            members_scroll: 0,
            show_buffers: true,
            terminal_size: (80, 24),
            event_time: local_time_of,
            received: None,
            buffers: Buffers::new(),
            fresh: Vec::new(),
            logged: std::collections::BTreeMap::new(),
            quit_asked: false,
            notice_below: None,
            conversation: Conversation::default(),
            frames: Vec::new(),
            now: unix_millis,
            dms_asked: None,
            listed_dms: Vec::new(),
            opened: Vec::new(),
            completion: None,
            event_day: local_day_of,
            last_day: None,
            smart_filter: false,
            mouse: true,
            highlights: Vec::new(),
            mention_shown: None,
            hyperlinks: false,
            rebound: Vec::new(),
        }
    }

    /// The frames for the server beside the messages (typing, a read position, an
    /// edit, a page asked for) since the last call, in order.
    pub fn take_frames(&mut self) -> Vec<String> {
        std::mem::take(&mut self.frames)
    }

    /// The message pane's columns and the terminal's rows, as the viewport is given them.
    fn viewport_size(&self) -> (u16, u16) {
        let (mut columns, mut rows) = self.terminal_size;
        if self.title().is_some() {
            rows = rows.saturating_sub(1);
        }
        if self.members_shown() {
            columns -= MEMBERS_WIDTH;
        }
        if self.buffer_list_shown() {
            columns -= BUFFERS_WIDTH;
        }
        (columns, rows)
    }

    /// The most entries the scrollback keeps (`--scrollback`).
    fn scrollback_cap(&self) -> usize {
        self.scrollback.cap()
    }

    /// Keeps the messages received for [`App::take_received`] (`--log`).
    pub fn keep_received(&mut self) {
        self.received = Some(Vec::new());
    }

    /// The messages received since the last call, each once.
    pub fn take_received(&mut self) -> Vec<Received> {
        self.received
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Keeps `text` for the log, said at `millis` (Unix milliseconds; `None`: now, for
    /// the plain protocol, which does not tell) in the room we are in.
    fn log_received(&mut self, text: &str, millis: Option<u64>) {
        let room = self.room.to_string();
        if let Some(received) = &mut self.received {
            received.push(Received {
                millis,
                room,
                text: text.to_owned(),
            });
        }
    }

    /// Reacts to one event; returns what must be done outside, if anything (and
    /// [`App::take_opened`] the buffers it opened beside).
    pub fn update(&mut self, event: Event) -> Option<Command> {
        let command = self.apply(event);
        // What the buffer on screen counted as new is seen already; a parked buffer's
        // was taken into its hotlist entry.
        self.fresh.clear();
        if !self.listed_dms.is_empty() {
            self.open_listed_dms();
        }
        command
    }

    fn apply(&mut self, event: Event) -> Option<Command> {
        if let Event::Room(buffer, news) = event {
            return self.buffer_news(buffer, news);
        }
        self.buffers_route_to_active();
        match event {
            Event::Room(..) => {}
            Event::Terminal(TerminalEvent::Key(key)) => return self.key(key),
            Event::Terminal(TerminalEvent::Paste(text)) => {
                let text = text.replace("\r\n", "\n").replace('\r', "\n");
                // A line copied whole comes with its newline, which is not part of it.
                self.input.insert(text.strip_suffix('\n').unwrap_or(&text));
                self.typed();
            }
            Event::Tick => self.tick(),
            Event::Terminal(TerminalEvent::Mouse(mouse)) => self.mouse(mouse),
            Event::Terminal(TerminalEvent::FocusLost) => {
                self.focused = false;
                self.mark_read();
            }
            Event::Terminal(TerminalEvent::FocusGained) => self.focused = true,
            Event::Terminal(TerminalEvent::Resize(columns, rows)) => {
                self.terminal_size = (columns, rows);
                self.fit_viewport();
            }
            Event::Net(news) => return self.net(news),
        }
        None
    }

    /// Finds the newest message containing `query` (any case) that is older than the
    /// one found last for it, and scrolls it to the top of the pane.
    fn search_older(&mut self, query: &str) {
        let before = self.viewport.search_before(query);
        let Some(found) = self.scrollback.newest_containing(query, before) else {
            let older = if self.viewport.search().is_some() {
                "older "
            } else {
                ""
            };
            self.notice(&format!("no {older}message contains “{query}”"));
            return;
        };
        if !self.viewport.is_scrolled_up() {
            self.mark_read();
        }
        self.viewport.found(&self.scrollback, query, found);
    }

    /// Puts the read marker after the newest message, unless it is there already, and
    /// tells a `chat.v2.json` server that this id has read all shown.
    fn mark_read(&mut self) {
        self.tell_read();
        self.mark_read_with("── new since you looked away ──");
    }

    /// Puts a read marker saying `text` after the newest message, unless one is there.
    fn mark_read_with(&mut self, text: &str) {
        let newest = self.scrollback.next_number();
        if self.scrollback.is_empty() || self.viewport.marker() == Some(newest - 1) {
            return;
        }
        if let Some(old) = self.viewport.marker()
            && let Some(entry) = self.scrollback.by_number_mut(old)
        {
            entry.kind = Kind::ReadMarker { latest: false };
        }
        self.push(Entry {
            time: String::new(),
            text: text.into(),
            kind: Kind::ReadMarker { latest: true },
        });
        self.viewport.set_marker(newest);
    }

    fn key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let situation = Situation {
            line_empty: self.input.is_empty(),
            connected: self.link == Link::Connected,
        };
        let action = keys::action_for_key_in(&key, situation, &self.rebound)?;
        self.notice_below = None;
        if action != Action::Complete {
            self.completion = None;
        }
        if action != Action::OlderMention {
            self.mention_shown = None;
        }
        // "Ctrl-C again" means at once: any other key asks again next time.
        if action != Action::Quit {
            self.quit_asked = false;
        }
        self.act(action, key.code)
    }

    /// Carries out what a key or the wheel is bound to ([`keys::BINDINGS`]); `code` is
    /// the key pressed, for the character typed.
    fn act(&mut self, action: Action, code: KeyCode) -> Option<Command> {
        match action {
            Action::Send => return self.submit(),
            Action::NewLine => self.input.insert("\n"),
            Action::Type => {
                if let KeyCode::Char(c) = code {
                    self.input.insert(c.encode_utf8(&mut [0; 4]));
                    self.typed();
                }
            }
            Action::EditLast => {
                if !self.start_edit() {
                    self.input.history_back();
                }
            }
            Action::CharLeft => self.input.left(),
            Action::CharRight => self.input.right(),
            Action::WordLeft => self.input.word_left(),
            Action::WordRight => self.input.word_right(),
            Action::LineStart => self.input.home(),
            Action::LineEnd => self.input.end(),
            Action::Backspace => self.input.backspace(),
            Action::Delete => self.input.delete(),
            Action::DeleteWordBefore => self.input.delete_word_before(),
            Action::DeleteWordAfter => self.input.delete_word_after(),
            Action::DeleteToStart => self.input.delete_to_start(),
            Action::DeleteToEnd => self.input.delete_to_end(),
            Action::Yank => self.input.yank(),
            Action::Complete => self.complete(),
            // Another line in place of the edited text is a new message, not the edit.
            Action::HistoryBack => {
                self.conversation.composing = Composing::Message;
                self.input.history_back();
            }
            Action::HistoryForward => {
                self.conversation.composing = Composing::Message;
                self.input.history_forward();
            }
            Action::PageUp => self.scroll_up(self.viewport.page()),
            Action::PageDown => self.scroll_down(self.viewport.page()),
            Action::WheelUp => self.scroll_up(WHEEL_ROWS),
            Action::WheelDown => self.scroll_down(WHEEL_ROWS),
            Action::Oldest => self.scroll_to_top(),
            Action::Newest => self.scroll_to_bottom(),
            // The next older match of the search on (asked again, the line holding its
            // text still, or emptied), or a search for the line.
            Action::Search => {
                let again = self
                    .viewport
                    .search()
                    .map(|search| search.query.clone())
                    .filter(|query| self.input.is_empty() || self.input.text() == query);
                match again {
                    Some(query) => self.search_older(&query),
                    None if !self.input.is_empty() => {
                        let query = self.input.text().to_owned();
                        self.viewport.end_search();
                        self.search_older(&query);
                    }
                    None => self
                        .notice("Ctrl-R searches for what is in the line, /search TEXT for TEXT"),
                }
            }
            Action::EndSearch => {
                if !self.cancel_edit() && !self.unselect() {
                    self.viewport.end_search();
                }
            }
            Action::SwitchBuffer => {
                if let KeyCode::Char(digit) = code
                    && let Some(number) = digit.to_digit(10)
                {
                    // Alt-0 is the tenth, as in weechat and irssi.
                    let number = if number == 0 { 10 } else { number as usize };
                    self.switch_to_number(number);
                }
            }
            Action::NextBuffer => self.switch_by(1),
            Action::PreviousBuffer => self.switch_by(-1),
            Action::SelectOlder => self.select_older(),
            Action::SelectNewer => self.select_newer(),
            Action::Redraw => return Some(Command::Redraw),
            Action::Reconnect => return Some(Command::Reconnect),
            Action::ToggleBuffers => {
                self.show_buffers = !self.show_buffers;
                self.fit_viewport();
            }
            Action::ToggleSmartFilter => {
                self.set_smart_filter(!self.smart_filter);
                let now = if self.smart_filter { "hidden" } else { "shown" };
                self.notice(&format!(
                    "joins and leaves of people who had not spoken in {SMART_FILTER_MINUTES} minutes: {now} (Alt-J)"
                ));
            }
            Action::OlderMention => self.older_mention(),
            Action::ToReadMarker => match self.viewport.marker() {
                // The marker stays where it is: going to it is not looking away.
                Some(number) if number >= self.scrollback.first_number() => {
                    self.viewport.show(&self.scrollback, number);
                }
                _ => self.notice("no read marker here: you have seen everything"),
            },
            Action::ToggleMouse => {
                self.mouse = !self.mouse;
                self.notice(if self.mouse {
                    "the mouse is chat-tui's: the wheel scrolls (Alt-M gives it to the terminal)"
                } else {
                    "the mouse is the terminal's: select text to copy it (Alt-M takes it back)"
                });
                return Some(Command::Mouse(self.mouse));
            }
            Action::ToggleMembers => {
                self.show_members = !self.show_members;
                self.fit_viewport();
            }
            Action::MembersUp => {
                self.members_scroll = self.members_scroll.saturating_sub(self.member_rows());
            }
            Action::MembersDown => {
                let listed = self
                    .session
                    .as_ref()
                    .map_or(0, |session| session.sorted_roster(&self.id).len());
                // Not past the last page, so that it is full.
                let page = self.member_rows();
                self.members_scroll = (self.members_scroll + page).min(listed.saturating_sub(page));
            }
            Action::Quit => return self.quit(!self.input.is_empty()),
        }
        None
    }

    /// Alt-N: shows the newest mention of us above the one shown last (or above the
    /// top of the pane, or the newest of all at the bottom).
    fn older_mention(&mut self) {
        let from = match (self.mention_shown, self.visible().first()) {
            (Some(shown), _) => shown,
            (None, Some((top, ..))) if self.viewport.is_scrolled_up() => *top,
            _ => self.scrollback.next_number(),
        };
        let first = self.scrollback.first_number();
        let found = (first..from).rev().find(|number| {
            let index = self.scrollback.index_of(*number);
            matches!(
                self.scrollback[index].kind,
                Kind::Said {
                    mentions_me: true,
                    ..
                }
            )
        });
        let Some(found) = found else {
            let older = if self.mention_shown.is_some() {
                "older "
            } else {
                ""
            };
            self.notice(&format!("no {older}message mentions you here"));
            return;
        };
        self.viewport.end_search();
        self.viewport.show(&self.scrollback, found);
        self.mention_shown = Some(found);
    }

    /// Turns the smart filter on or off, in every buffer.
    pub fn set_smart_filter(&mut self, on: bool) {
        self.smart_filter = on;
        self.scrollback.filter_quiet_presence(on);
        self.filter_parked(on);
        self.fit_viewport();
    }

    /// Tab: the name or id before the cursor completed, or the next one if Tab was
    /// the last key.
    fn complete(&mut self) {
        if let Some(mut completion) = self.completion.take()
            && completion.is_current(self.input.text())
        {
            let (start, text) = completion.advance();
            self.input.replace_before_cursor(start, &text);
            completion.left(self.input.text());
            self.completion = Some(completion);
            return;
        }
        let known = self.known_people();
        let started = crate::complete::Completion::start(
            self.input.before_cursor(),
            known.iter().map(String::as_str),
        );
        if let Some((mut completion, start, text)) = started {
            self.input.replace_before_cursor(start, &text);
            completion.left(self.input.text());
            self.completion = Some(completion);
        }
    }

    /// The names and ids Tab completes: who is here, and who spoke in what is shown;
    /// not ours.
    fn known_people(&self) -> Vec<String> {
        let mut known = Vec::new();
        if let Some(session) = &self.session {
            for (id, member) in &session.members {
                known.push(id.clone());
                if let Some(name) = &member.name {
                    known.push(name.as_str().to_owned());
                }
            }
        }
        for entry in self.scrollback.iter() {
            if let Kind::Said {
                id, mine: false, ..
            } = &entry.kind
            {
                known.push(id.clone());
            }
        }
        known.retain(|known| *known != self.id);
        known
    }

    fn submit(&mut self) -> Option<Command> {
        if self.input.is_empty() {
            return None;
        }
        let text = self.input.text();
        if text.starts_with('/') && !text.starts_with("//") {
            return self.slash_command();
        }
        if let Composing::Edit { target } = self.conversation.composing {
            return self.submit_edit(target);
        }
        if self.session.is_some()
            && (self.protocol > Protocol::Plain || self.link != Link::Connected)
        {
            return self.say_v1(None, false);
        }
        if self.link != Link::Connected {
            self.notice("not connected: your line is kept; press Enter again once connected");
            return None;
        }
        // `//text` says `/text`.
        let escaped = usize::from(self.input.text().starts_with("//"));
        let bytes = self.input.text().len() - escaped;
        if bytes > self.max_message_bytes {
            let limit = self.max_message_bytes;
            self.notice(&format!(
                "your message is {bytes} bytes and the server takes at most {limit}: it is kept, to shorten"
            ));
            return None;
        }
        self.scroll_to_bottom();
        let line = self.input.submit();
        Some(Command::Send(line[escaped..].to_owned()))
    }

    /// Carries out the `/command` in the input line ([`keys::COMMANDS`]). An unknown one
    /// is not sent to the room: it stays in the input, with a notice.
    fn slash_command(&mut self) -> Option<Command> {
        let text = self.input.text()[1..].to_owned();
        let (name, argument) = text
            .split_once(char::is_whitespace)
            .map_or((text.as_str(), ""), |(name, argument)| {
                (name, argument.trim())
            });
        let known = keys::slash_command(name).map(|command| command.action);
        let command = match known {
            Some(SlashAction::Quit) => self.quit(false),
            Some(SlashAction::Reconnect) => Some(Command::Reconnect),
            Some(SlashAction::Clear) => {
                self.viewport.end_search();
                self.scrollback.clear();
                self.scroll_to_bottom();
                None
            }
            // Without its text, `/search` is not a command one could mean. A
            // chat.v2.json server searches all it keeps; otherwise, what is loaded.
            Some(SlashAction::Search) if !argument.is_empty() && self.speaks_v2() => {
                self.viewport.end_search();
                self.search_on_server(argument);
                None
            }
            Some(SlashAction::Search) if !argument.is_empty() => {
                self.viewport.end_search();
                self.search_older(argument);
                None
            }
            Some(SlashAction::Edit) => {
                self.edit_command(argument);
                return None;
            }
            Some(SlashAction::Delete) => {
                self.delete_command();
                return None;
            }
            Some(SlashAction::React) => {
                self.react_command(argument);
                return None;
            }
            Some(SlashAction::Reply | SlashAction::Me) if argument.is_empty() => {
                self.notice(&format!("/{name} needs the text to say: /{name} TEXT"));
                return None;
            }
            Some(SlashAction::Reply) => {
                if !self.needs_v2("/reply") {
                    return None;
                }
                let Some(parent) = self.answered_message() else {
                    self.notice("there is no message of someone else's here to reply to");
                    return None;
                };
                return self.say_text(argument.to_owned(), Some(parent), false);
            }
            Some(SlashAction::Me) => {
                if !self.needs_v2("/me") {
                    return None;
                }
                return self.say_text(argument.to_owned(), None, true);
            }
            Some(SlashAction::Help) => {
                self.notice(&keys::help_notice());
                None
            }
            // Refused (the last buffer, messages on their way): the line stays.
            Some(SlashAction::Moderate) => {
                self.moderate(name, argument);
                return None;
            }
            Some(SlashAction::Buffer) => {
                if !self.show_buffer(argument) {
                    self.notice(&format!(
                        "no buffer {argument}: /buffer N shows buffer N, /buffer ROOM the one of an open room"
                    ));
                }
                None
            }
            Some(SlashAction::Part) => match self.part() {
                None => return None,
                closing => closing,
            },
            Some(SlashAction::Query | SlashAction::Msg)
                if self.connected_before && self.session.is_none() =>
            {
                self.notice("this server has no direct messages (it does not speak chat.v1.json)");
                return None;
            }
            Some(action @ (SlashAction::Query | SlashAction::Msg)) => {
                let (who, text) = argument
                    .split_once(char::is_whitespace)
                    .map_or((argument, ""), |(who, text)| (who, text.trim()));
                let room = chat::ClientId::parse(who)
                    .ok()
                    .zip(chat::ClientId::parse(&self.id).ok())
                    .and_then(|(them, me)| chat::v2::direct_room(&me, &them));
                let Some(room) = room else {
                    let example = if action == SlashAction::Msg {
                        " hello"
                    } else {
                        ""
                    };
                    let why = match chat::ClientId::parse(who) {
                        _ if who.is_empty() => format!("/{name} needs an id"),
                        Err(invalid) => format!("{} is not an id ({invalid})", sanitize(who)),
                        Ok(_) => format!("/{name} needs an id of your own too"),
                    };
                    self.notice(&format!("{why}: /{name} 7{example}"));
                    return None;
                };
                let text = text.to_owned();
                self.input.submit();
                let command = self.open(room);
                if action == SlashAction::Msg && !text.is_empty() {
                    // Said in the buffer now on screen: sent at once if it is
                    // connected, else as soon as its connection has joined.
                    let said = self.say_when_joined(text);
                    return command.or(said);
                }
                return command;
            }
            Some(SlashAction::Who) => {
                self.who();
                None
            }
            // Connected without `chat.v1.json`: the server speaks the tutorial's plain
            // protocol, which has one room for everyone.
            Some(SlashAction::Join) if self.connected_before && self.session.is_none() => {
                self.notice(&format!(
                    "this server has no rooms (it does not speak chat.v1.json): staying in #{}",
                    self.room
                ));
                None
            }
            Some(SlashAction::Join) => match RoomName::parse(argument) {
                Ok(room) => self.open(room),
                Err(invalid) => {
                    self.notice(&format!("/join needs a room name: {invalid}"));
                    return None;
                }
            },
            Some(SlashAction::Search) => {
                self.notice("/search needs the text to look for: /search TEXT");
                return None;
            }
            None => {
                self.notice(&format!(
                    "unknown command /{name} (not sent): /help lists the commands; //{name} sends a line that starts with /"
                ));
                return None;
            }
        };
        self.input.submit();
        command
    }

    /// Whether the member list is drawn beside the messages: asked for (F2), known
    /// (`chat.v1.json`), and with room left for the messages.
    pub fn members_shown(&self) -> bool {
        self.show_members && self.session.is_some() && self.terminal_size.0 > MEMBERS_WIDTH * 2
    }

    /// Gives the viewport the message pane's size, so that messages are wrapped at the
    /// width they are drawn in: the terminal's, less the member list's when it is shown.
    /// What the row above the messages says, when there is something to say: the
    /// room's topic, slow mode and whether it is read-only (weechat's title bar).
    pub fn title(&self) -> Option<String> {
        let rules = &self.session.as_ref()?.rules;
        if !rules.worth_a_title() {
            return None;
        }
        // The rules first: a long topic is cut at the edge, and they must not be.
        let mut parts = Vec::new();
        if rules.slow > 0 {
            let every = crate::app::messages::duration_words(rules.slow);
            parts.push(format!("slow mode: one message per {every}"));
        }
        if rules.read_only {
            parts.push("read-only: only moderators speak".to_owned());
        }
        if let Some(topic) = &rules.topic {
            parts.push(topic.clone());
        }
        Some(parts.join(" · "))
    }

    /// How many members a page of the member list holds: the terminal's rows less the
    /// title's, the status bar and the input line, then less the count above the list
    /// and the two rows that say how many are above and below.
    fn member_rows(&self) -> usize {
        usize::from(self.viewport_size().1).saturating_sub(5).max(1)
    }

    pub(crate) fn fit_viewport(&mut self) {
        let (columns, rows) = self.viewport_size();
        self.viewport.resize(&self.scrollback, columns, rows);
    }

    /// Whether the list of open buffers is drawn left of the messages: asked for (F3),
    /// more than one open, and room left for the messages.
    pub fn buffer_list_shown(&self) -> bool {
        self.show_buffers && self.buffer_count() > 1 && self.terminal_size.0 > BUFFERS_WIDTH * 3
    }

    /// Quits; but with messages waiting for a connection, or a line `typed` and not
    /// sent (the quit key pressed over it; `/quit` is no such line), first says what
    /// would be lost, and quits when asked again.
    fn quit(&mut self, typed: bool) -> Option<Command> {
        let waiting = self.messages_on_their_way() + self.parked_messages_on_their_way();
        if (waiting == 0 && !typed) || self.quit_asked {
            // What was on the screen has been read: the other devices of this id
            // should not show it as new.
            self.tell_read();
            return Some(Command::Quit);
        }
        self.quit_asked = true;
        let lost = match (waiting, typed) {
            (0, _) => "the line typed is not sent: Ctrl-C again to quit and drop it".to_owned(),
            (1, false) => "1 message not sent yet: Ctrl-C again to quit and drop it".to_owned(),
            (1, true) => "1 message not sent yet, and the line typed: Ctrl-C again to quit \
                          and drop them"
                .to_owned(),
            (_, false) => {
                format!("{waiting} messages not sent yet: Ctrl-C again to quit and drop them")
            }
            (_, true) => format!(
                "{waiting} messages not sent yet, and the line typed: Ctrl-C again to quit \
                 and drop them"
            ),
        };
        self.notice_again(&lost);
        None
    }

    /// The commands of an event that is not a connection's are for the buffer on
    /// screen.
    fn buffers_route_to_active(&mut self) {
        let active = self.active_buffer();
        self.set_routed(active);
    }

    /// Connections made so far, counted as the network task counts them.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Takes back a line that could not be handed to the network (sending is backed up),
    /// so it is not lost.
    pub fn unsent(&mut self, line: String) {
        if self.requeue(&line) {
            self.notice("sending is backed up: your message goes with the next connection");
            return;
        }
        if self.input.is_empty() {
            self.input.insert(&line);
        }
        self.notice("sending is backed up: your line is kept; press Enter to try again");
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        if let Some(action) = keys::action_for_wheel(mouse.kind) {
            self.act(action, KeyCode::Null);
        }
    }

    fn net(&mut self, news: NetEvent) -> Option<Command> {
        match news {
            NetEvent::Beside(beside) => return self.beside(beside),
            NetEvent::Connecting => {
                self.link = Link::Connecting;
                self.protocol = Protocol::Plain;
            }
            NetEvent::Connected { protocol } => {
                self.protocol = protocol;
                self.connections += 1;
                if self.connected_before {
                    self.notice("connected again");
                } else if self
                    .scrollback
                    .iter()
                    .any(|entry| entry.kind == Kind::Notice)
                {
                    // After failed attempts, say that this one worked.
                    self.notice("connected");
                }
                self.connected_before = true;
                self.link = Link::Connected;
            }
            NetEvent::Retrying { seconds } => self.link = Link::Retrying { seconds },
            NetEvent::Disconnected { reason } => self.notice(&reason),
            NetEvent::GaveUp { reason } => {
                self.notice_again(&format!("{reason}; press F5 to try again"));
                self.link = Link::Stopped;
            }
            NetEvent::Frame(frame) => return self.server_frame(frame),
            NetEvent::Unreadable { text } => {
                let shown: String = text.chars().take(80).collect();
                self.notice(&format!(
                    "the server sent something that is not chat.v1.json: {shown}"
                ));
            }
            NetEvent::Received { text } => {
                self.log_received(&text, None);
                let kind = self.kind_of(&text);
                let ring = matches!(
                    kind,
                    Kind::Said {
                        mentions_me: true,
                        ..
                    }
                ) && self.notify
                    && !self.focused;
                let text = sanitize(&text);
                self.day_line((self.now)());
                self.push(Entry {
                    time: (self.clock)(),
                    text: text.clone(),
                    kind,
                });
                if ring {
                    return Some(Command::Notify(text.replace('\n', " ")));
                }
            }
        }
        None
    }

    fn kind_of(&self, text: &str) -> Kind {
        match Announcement::parse(text) {
            Some(Announcement::Joined(_) | Announcement::Left(_)) => Kind::Presence,
            Some(Announcement::Said { id, text }) => Kind::Said {
                id: id.to_owned(),
                mine: id == self.id,
                prefix: Announcement::said_prefix_len(id),
                mentions_me: id != self.id && self.mentions_me(text),
                pending: false,
            },
            None => Kind::Other,
        }
    }

    /// Whether `text` mentions us: our id as a word of its own ("42", "@42", "#42:", not
    /// "142"), or, over `chat.v1.json`, our name (any case), or one of the extra
    /// highlight words (`--highlight`, any case, as words of their own).
    fn mentions_me(&self, text: &str) -> bool {
        let by_id = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == self.id);
        let name = self
            .session
            .as_ref()
            .and_then(|session| session.my_name.as_ref());
        if by_id {
            return true;
        }
        if name.is_none() && self.highlights.is_empty() {
            return false;
        }
        let text = text.to_lowercase();
        let by_name = name.is_some_and(|name| has_word(&text, &name.as_str().to_lowercase()));
        by_name || self.highlights.iter().any(|word| has_word(&text, word))
    }

    /// A line across the pane when the date of what is shown next (said at `millis`)
    /// is not the date of what was shown last; none before the first.
    fn day_line(&mut self, millis: u64) {
        // A day starts on a minute, in every time zone: within the same minute as the
        // last, the date is not made again (a burst of messages is one minute).
        let minute = millis / 60_000;
        if self
            .last_day
            .as_ref()
            .is_some_and(|(last, _)| *last == minute)
        {
            return;
        }
        let day = (self.event_day)(millis);
        let before = self.last_day.replace((minute, day.clone()));
        if before.as_ref().is_some_and(|(_, last)| *last != day) && !day.is_empty() {
            self.push(Entry {
                time: String::new(),
                text: format!("── {day} ──"),
                kind: Kind::Divider,
            });
        }
    }

    /// Says something about the client itself in the message pane, unless the last
    /// notice said the same: each failed attempt during an outage does; once is enough.
    pub fn notice(&mut self, text: &str) {
        let entry = self.notice_entry(text);
        if !matches!(self.scrollback.back(), Some(last) if last.kind == Kind::Notice && last.text == entry.text)
        {
            self.push(entry);
        }
    }

    /// A notice even if it says what the last one did: the answer to an attempt the
    /// user asked for.
    fn notice_again(&mut self, text: &str) {
        let entry = self.notice_entry(text);
        self.push(entry);
    }

    /// A divider line across the pane, saying `text`.
    fn divider(&mut self, text: &str) {
        self.push(Entry {
            time: String::new(),
            text: sanitize(&format!("── {text} ──")),
            kind: Kind::Divider,
        });
    }

    fn notice_entry(&mut self, text: &str) -> Entry {
        let text = sanitize(&format!("* {text}"));
        if self.viewport.is_scrolled_up() {
            self.notice_below = Some(text.clone());
        }
        Entry {
            time: (self.clock)(),
            text,
            kind: Kind::Notice,
        }
    }

    fn push(&mut self, entry: Entry) {
        self.scrollback.push(entry);
        self.viewport.pushed(&self.scrollback);
    }

    /// The message pane's height in rows.
    pub fn pane_height(&self) -> usize {
        self.viewport.pane_height()
    }

    /// The rows the message pane shows, oldest first: each entry, with its number (see
    /// [`Anchor::At`]) and the range of its rows in view.
    pub fn visible(&self) -> Vec<(u64, &Entry, Range<usize>)> {
        self.viewport.visible(&self.scrollback)
    }

    fn scroll_up(&mut self, rows: usize) {
        if !self.viewport.is_scrolled_up() {
            if self.viewport.all_fits(&self.scrollback) {
                // Everything is on the screen: nothing to scroll to, but perhaps older
                // pages to fetch.
                self.reached_the_top();
                return;
            }
            // Scrolling away from the newest is looking away too.
            self.mark_read();
        }
        self.viewport.scroll_up(&self.scrollback, rows);
        if self.at_the_top() {
            self.reached_the_top();
        }
    }

    /// Whether the pane shows the oldest entry's first row.
    fn at_the_top(&self) -> bool {
        match self.viewport.anchor() {
            Anchor::At { entry, row } => entry <= self.scrollback.first_number() && row == 0,
            Anchor::Bottom => self.viewport.all_fits(&self.scrollback),
        }
    }

    fn scroll_down(&mut self, rows: usize) {
        self.viewport.scroll_down(&self.scrollback, rows);
    }

    fn scroll_to_top(&mut self) {
        self.viewport.scroll_to_top(&self.scrollback);
        if self.at_the_top() {
            self.reached_the_top();
        }
    }

    fn scroll_to_bottom(&mut self) {
        self.viewport.scroll_to_bottom();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyModifiers, MouseEventKind};

    fn noon() -> String {
        "12:00:00".to_owned()
    }

    fn key(code: KeyCode) -> Event {
        Event::Terminal(TerminalEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn ctrl(c: char) -> Event {
        Event::Terminal(TerminalEvent::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::CONTROL,
        )))
    }

    fn received(text: &str) -> Event {
        Event::Net(NetEvent::Received {
            text: text.to_owned(),
        })
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            app.update(key(KeyCode::Char(c)));
        }
    }

    fn connected_app() -> App {
        let mut app = App::new("ws://localhost:8000".into(), "42".into(), 10_000, noon);
        app.update(Event::Terminal(TerminalEvent::Resize(40, 12)));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::Plain,
        }));
        app
    }

    #[test]
    fn enter_sends_the_line_and_empty_lines_are_not_sent() {
        let mut app = connected_app();
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        type_text(&mut app, "hello");
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Some(Command::Send("hello".into()))
        );
        assert!(app.input.is_empty());
    }

    #[test]
    fn ctrl_c_quits() {
        let mut app = connected_app();
        assert_eq!(app.update(ctrl('c')), Some(Command::Quit));
    }

    #[test]
    fn ctrl_c_with_a_line_typed_says_it_would_be_dropped_and_quits_when_pressed_again() {
        let mut app = connected_app();
        type_text(&mut app, "half a thought");
        assert_eq!(app.update(ctrl('c')), None);
        assert_eq!(app.input.text(), "half a thought", "kept until the second");
        let shown: Vec<String> = app
            .scrollback
            .iter()
            .map(|entry| entry.text.clone())
            .collect();
        assert!(
            shown
                .iter()
                .any(|text| text.contains("the line typed is not sent: Ctrl-C again")),
            "{shown:?}"
        );
        assert_eq!(app.update(ctrl('c')), Some(Command::Quit));

        // Any other key in between: asked again.
        let mut app = connected_app();
        type_text(&mut app, "half");
        assert_eq!(app.update(ctrl('c')), None);
        type_text(&mut app, " more");
        assert_eq!(app.update(ctrl('c')), None, "asked again");
        assert_eq!(app.update(ctrl('c')), Some(Command::Quit));
    }

    #[test]
    fn a_dm_to_something_that_is_not_an_id_says_what_an_id_is() {
        // Not connected yet: a chat-server, for all it knows.
        let mut app = App::new("ws://x".into(), "42".into(), 100, noon);
        for (typed, said) in [
            (
                "/msg abc hi",
                "abc is not an id (the id is not a decimal integer): /msg 7 hello",
            ),
            ("/query", "/query needs an id: /query 7"),
        ] {
            type_text(&mut app, typed);
            assert_eq!(app.update(key(KeyCode::Enter)), None, "{typed}");
            let last = app.scrollback.iter().last().map(|entry| entry.text.clone());
            assert!(
                last.as_deref().is_some_and(|text| text.contains(said)),
                "{last:?}"
            );
            app.input.submit();
        }
    }

    #[test]
    fn shell_keys_edit_the_line() {
        let mut app = connected_app();
        type_text(&mut app, "say hello world");
        app.update(ctrl('w'));
        app.update(ctrl('a'));
        app.update(key(KeyCode::Delete));
        app.update(key(KeyCode::Char('S')));
        app.update(ctrl('e'));
        app.update(key(KeyCode::Backspace));
        assert_eq!(app.input.text(), "Say hello");
        app.update(key(KeyCode::Left));
        app.update(key(KeyCode::Left));
        app.update(ctrl('u'));
        assert_eq!(app.input.text(), "lo");
        app.update(key(KeyCode::End));
        app.update(key(KeyCode::Home));
        app.update(key(KeyCode::Right));
        assert_eq!(app.input.before_cursor(), "l");
    }

    fn alt(c: char) -> Event {
        Event::Terminal(TerminalEvent::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::ALT,
        )))
    }

    #[test]
    fn readline_chords_move_and_kill_words_and_never_type_letters() {
        let mut app = connected_app();
        type_text(&mut app, "one two three");
        app.update(alt('b'));
        app.update(alt('b'));
        assert_eq!(app.input.before_cursor(), "one ");
        app.update(alt('d'));
        assert_eq!(app.input.text(), "one  three");
        app.update(alt('f'));
        assert_eq!(app.input.before_cursor(), "one  three");
        app.update(ctrl('y'));
        assert_eq!(app.input.text(), "one  threetwo");
        let ctrl_left = KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL);
        app.update(Event::Terminal(TerminalEvent::Key(ctrl_left)));
        assert_eq!(app.input.before_cursor(), "one  ");
        let ctrl_right = KeyEvent::new(KeyCode::Right, KeyModifiers::CONTROL);
        app.update(Event::Terminal(TerminalEvent::Key(ctrl_right)));
        app.update(ctrl('a'));
        app.update(alt('f'));
        app.update(ctrl('k'));
        assert_eq!(app.input.text(), "one");
        app.update(alt('x'));
        app.update(alt('b'));
        app.update(ctrl('d'));
        assert_eq!(app.input.text(), "ne", "Ctrl-D deletes under the cursor");
        assert_eq!(app.update(ctrl('l')), Some(Command::Redraw));
        app.update(ctrl('u'));
        app.update(ctrl('k'));
        assert_eq!(app.input.text(), "");
        assert_eq!(
            app.update(ctrl('d')),
            Some(Command::Quit),
            "on an empty line"
        );
    }

    #[test]
    fn up_and_down_recall_sent_lines() {
        let mut app = connected_app();
        for line in ["one", "two"] {
            type_text(&mut app, line);
            app.update(key(KeyCode::Enter));
        }
        app.update(key(KeyCode::Up));
        assert_eq!(app.input.text(), "two");
        app.update(key(KeyCode::Up));
        assert_eq!(app.input.text(), "one");
        app.update(key(KeyCode::Down));
        assert_eq!(app.input.text(), "two");
    }

    #[test]
    fn a_paste_lands_in_the_input_without_sending() {
        let mut app = connected_app();
        let paste = Event::Terminal(TerminalEvent::Paste("line one\r\nline two".into()));
        assert_eq!(app.update(paste), None);
        assert_eq!(app.input.text(), "line one\nline two");
    }

    #[test]
    fn slash_commands_are_carried_out_and_never_sent() {
        let mut app = connected_app();
        app.update(received("Client #7: hello"));
        type_text(&mut app, "/nosuch thing");
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        assert_eq!(app.input.text(), "/nosuch thing", "kept, to fix");
        let last = &app.scrollback.back().unwrap().text;
        assert!(
            last.contains("unknown command /nosuch (not sent)"),
            "{last}"
        );

        app.update(ctrl('u'));
        type_text(&mut app, "//nosuch thing");
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Some(Command::Send("/nosuch thing".into()))
        );

        // A plain server has one room: /join stays put.
        type_text(&mut app, "/join ops");
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        assert_eq!(app.room, RoomName::default());
        assert!(app.input.is_empty());
        // A server with rooms: one that speaks chat.v1.json.
        app.session = Some(Session::default());
        type_text(&mut app, "/join no spaces");
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        app.update(ctrl('u'));
        type_text(&mut app, "/join ops");
        let ops = RoomName::parse("ops").unwrap();
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Some(Command::Open {
                buffer: 1,
                room: ops.clone()
            })
        );
        assert_eq!(app.room, ops);

        type_text(&mut app, "/help");
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        let help = &app.scrollback.back().unwrap().text;
        for listed in ["/join ROOM", "/search TEXT", "Alt-Enter", "F2", "Ctrl-R"] {
            assert!(help.contains(listed), "{listed} in {help}");
        }
        type_text(&mut app, "/clear");
        app.update(key(KeyCode::Enter));
        assert!(app.scrollback.is_empty());
        assert_eq!(app.viewport.search(), None);
        type_text(&mut app, "/reconnect");
        assert_eq!(app.update(key(KeyCode::Enter)), Some(Command::Reconnect));
        type_text(&mut app, "/quit");
        assert_eq!(app.update(key(KeyCode::Enter)), Some(Command::Quit));
        app.update(key(KeyCode::Up));
        assert_eq!(app.input.text(), "/quit", "commands are in the history");
    }

    #[test]
    fn alt_enter_starts_a_new_line_in_the_same_message() {
        let mut app = connected_app();
        type_text(&mut app, "one");
        app.update(Event::Terminal(TerminalEvent::Key(KeyEvent::new(
            KeyCode::Enter,
            KeyModifiers::ALT,
        ))));
        type_text(&mut app, "two");
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Some(Command::Send("one\ntwo".into()))
        );
    }

    fn focus(gained: bool) -> Event {
        Event::Terminal(if gained {
            TerminalEvent::FocusGained
        } else {
            TerminalEvent::FocusLost
        })
    }

    #[test]
    fn a_mention_is_highlighted_and_notifies_only_when_unfocused() {
        let mut app = connected_app();
        let mentions = |app: &App| {
            matches!(
                app.scrollback.back().unwrap().kind,
                Kind::Said {
                    mentions_me: true,
                    ..
                }
            )
        };
        assert_eq!(
            app.update(received("Client #7: hey 42, look")),
            None,
            "focused"
        );
        assert!(mentions(&app));
        app.update(focus(false));
        for not_a_mention in ["Client #7: 142 and 420", "Client #42: I am 42"] {
            assert_eq!(app.update(received(not_a_mention)), None);
            assert!(!mentions(&app), "{not_a_mention}");
        }
        assert_eq!(
            app.update(received("Client #7: @42\u{1b}[2J look")),
            Some(Command::Notify("Client #7: @42␛[2J look".into())),
            "made safe"
        );
        app.notify = false;
        assert_eq!(app.update(received("Client #7: #42: again")), None);
        assert!(mentions(&app), "still highlighted");
        app.notify = true;
        app.update(focus(true));
        assert_eq!(app.update(received("Client #7: 42?")), None);
    }

    #[test]
    fn extra_highlight_words_are_mentions_as_words_of_their_own() {
        let mut app = connected_app();
        app.highlights = vec!["deploy".into(), "ünïcode".into()];
        let mentions = |app: &mut App, text: &str| {
            app.update(received(text));
            matches!(
                app.scrollback.back().unwrap().kind,
                Kind::Said {
                    mentions_me: true,
                    ..
                }
            )
        };
        assert!(mentions(&mut app, "Client #7: Deploy done"));
        assert!(mentions(&mut app, "Client #7: who broke the deploy?"));
        assert!(mentions(&mut app, "Client #7: ÜNÏCODE works"));
        assert!(!mentions(&mut app, "Client #7: redeploying"));
        assert!(!mentions(&mut app, "Client #42: deploy"), "not our own");
    }

    #[test]
    fn alt_n_goes_back_through_the_mentions_and_alt_u_to_the_read_marker() {
        let mut app = connected_app();
        for n in 0..10 {
            app.update(received(&said(n)));
        }
        app.update(focus(false));
        app.update(focus(true));
        for n in 10..40 {
            let text = if n == 12 || n == 25 {
                format!("Client #7: {n} @42")
            } else {
                said(n)
            };
            app.update(received(&text));
        }
        app.update(alt('n'));
        assert_eq!(top(&app), ("Client #7: 25 @42".into(), 0));
        app.update(alt('n'));
        assert_eq!(top(&app), ("Client #7: 12 @42".into(), 0));
        app.update(alt('n'));
        assert_eq!(top(&app), ("Client #7: 12 @42".into(), 0), "no older one");
        assert!(
            app.notice_below
                .as_deref()
                .is_some_and(|notice| notice.contains("no older message mentions you")),
            "{:?}",
            app.notice_below
        );
        app.update(key(KeyCode::End));
        app.update(alt('u'));
        let (text, _) = top(&app);
        assert!(text.contains("new since you looked away"), "{text}");
    }

    #[test]
    fn the_read_marker_follows_where_you_looked_away() {
        let mut app = connected_app();
        let markers = |app: &App| -> Vec<bool> {
            app.scrollback
                .iter()
                .filter_map(|entry| match entry.kind {
                    Kind::ReadMarker { latest } => Some(latest),
                    _ => None,
                })
                .collect()
        };
        app.update(received("Client #7: one"));
        app.update(focus(false));
        app.update(focus(true));
        app.update(focus(false));
        assert_eq!(markers(&app), [true], "nothing new: the same place");
        app.update(received("Client #7: two"));
        app.update(focus(true));
        app.update(focus(false));
        assert_eq!(markers(&app), [false, true], "only the latest is drawn");
        assert!(app.scrollback[1].rows(40).is_empty());
        for n in 0..30 {
            app.update(received(&said(n)));
        }
        app.update(key(KeyCode::PageUp));
        assert_eq!(
            markers(&app),
            [false, false, true],
            "scrolling away marks too"
        );
        assert!(matches!(app.viewport.anchor(), Anchor::At { .. }));
    }

    #[test]
    fn search_finds_older_and_older_matches() {
        let mut app = connected_app();
        for n in 0..30 {
            let fruit = if n == 5 || n == 20 { " Apple" } else { "" };
            app.update(received(&format!("Client #7: {n}{fruit}")));
        }
        type_text(&mut app, "/search apple");
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        assert_eq!(top(&app), ("Client #7: 20 Apple".into(), 0));
        assert_eq!(
            app.viewport.search().map(|search| search.query.as_str()),
            Some("apple")
        );
        app.update(ctrl('r'));
        assert_eq!(top(&app), ("Client #7: 5 Apple".into(), 0));
        app.update(ctrl('r'));
        assert_eq!(top(&app), ("Client #7: 5 Apple".into(), 0), "no older one");
        assert!(
            app.scrollback
                .back()
                .unwrap()
                .text
                .contains("no older message contains “apple”")
        );
        app.update(key(KeyCode::Esc));
        assert_eq!(app.viewport.search(), None);
        // Ctrl-R with a line searches for the line.
        type_text(&mut app, "29");
        app.update(ctrl('r'));
        assert_eq!(
            app.viewport.search().map(|search| search.query.as_str()),
            Some("29")
        );
        assert_eq!(
            app.viewport.anchor(),
            Anchor::Bottom,
            "a match on the last screen: at the bottom"
        );
    }

    #[test]
    fn ctrl_r_again_with_the_search_still_in_the_line_goes_older() {
        let mut app = connected_app();
        for n in 0..30 {
            let fruit = if n == 5 || n == 20 { " Apple" } else { "" };
            app.update(received(&format!("Client #7: {n}{fruit}")));
        }
        type_text(&mut app, "apple");
        app.update(ctrl('r'));
        assert_eq!(top(&app), ("Client #7: 20 Apple".into(), 0));
        app.update(ctrl('r'));
        assert_eq!(top(&app), ("Client #7: 5 Apple".into(), 0), "older");
        // Another text in the line: a new search, from the newest.
        app.update(key(KeyCode::Backspace));
        app.update(ctrl('r'));
        assert_eq!(top(&app), ("Client #7: 20 Apple".into(), 0));
    }

    #[test]
    fn a_pasted_line_loses_its_newline_and_keeps_the_inner_ones() {
        let mut app = connected_app();
        let paste = Event::Terminal(TerminalEvent::Paste("one\ntwo\r\n".into()));
        app.update(paste);
        assert_eq!(app.input.text(), "one\ntwo");
    }

    #[test]
    fn a_message_over_the_limit_is_kept_with_a_warning() {
        let mut app = connected_app();
        app.max_message_bytes = 10;
        type_text(&mut app, "eleven byte");
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        assert_eq!(app.input.text(), "eleven byte");
        let last = app.scrollback.back().expect("a notice");
        assert!(
            last.text.contains("11 bytes") && last.text.contains("at most 10"),
            "{}",
            last.text
        );
        app.update(key(KeyCode::Backspace));
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Some(Command::Send("eleven byt".into()))
        );
    }

    #[test]
    fn only_a_later_connection_is_connected_again() {
        let mut app = App::new("ws://x".into(), "1".into(), 100, noon);
        let notices = |app: &App| -> Vec<String> {
            app.scrollback
                .iter()
                .filter(|entry| entry.kind == Kind::Notice)
                .map(|entry| entry.text.clone())
                .collect()
        };
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "cannot connect: refused".into(),
        }));
        app.update(Event::Net(NetEvent::Retrying { seconds: 1 }));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::Plain,
        }));
        assert_eq!(notices(&app), ["* cannot connect: refused", "* connected"]);
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "connection lost".into(),
        }));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::Plain,
        }));
        assert_eq!(notices(&app).last().unwrap(), "* connected again");

        let mut quiet = App::new("ws://x".into(), "1".into(), 100, noon);
        quiet.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::Plain,
        }));
        assert!(
            notices(&quiet).is_empty(),
            "nothing to say on a first success"
        );
    }

    #[test]
    fn offline_the_line_is_kept_with_a_notice() {
        let mut app = connected_app();
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "connection reset".into(),
        }));
        app.update(Event::Net(NetEvent::Retrying { seconds: 3 }));
        type_text(&mut app, "typed offline");
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        assert_eq!(app.input.text(), "typed offline");
        let last = app.scrollback.back().expect("a notice");
        assert_eq!(last.kind, Kind::Notice);
        assert!(last.text.contains("your line is kept"), "{}", last.text);
        let notices = app.scrollback.len();
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        assert_eq!(
            app.scrollback.len(),
            notices,
            "the same notice is not repeated"
        );

        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::Plain,
        }));
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Some(Command::Send("typed offline".into()))
        );
    }

    #[test]
    fn messages_are_classified_and_sanitized() {
        let mut app = connected_app();
        for text in [
            "Client #42 has entered the chat",
            "Client #42: mine",
            "Client #7: theirs \u{1b}[31mred",
            "Client #7 has left the chat",
            "something else",
        ] {
            app.update(received(text));
        }
        let kinds: Vec<&Kind> = app.scrollback.iter().map(|entry| &entry.kind).collect();
        assert_eq!(
            kinds,
            [
                &Kind::Presence,
                &Kind::Said {
                    id: "42".into(),
                    mine: true,
                    prefix: 11,
                    mentions_me: false,
                    pending: false,
                },
                &Kind::Said {
                    id: "7".into(),
                    mine: false,
                    prefix: 10,
                    mentions_me: false,
                    pending: false,
                },
                &Kind::Presence,
                &Kind::Other,
            ]
        );
        assert_eq!(app.scrollback[2].text, "Client #7: theirs ␛[31mred");
    }

    /// The text of the message on the pane's top row, and which of its rows that is.
    fn top(app: &App) -> (String, usize) {
        let visible = app.visible();
        let (_, entry, rows) = visible.first().expect("something shown");
        (entry.text.clone(), rows.start)
    }

    fn said(n: usize) -> String {
        format!("Client #7: {n}")
    }

    #[test]
    fn scrolled_up_the_view_stays_put_and_counts_new_messages() {
        let mut app = connected_app(); // 10 rows of pane
        for n in 0..30 {
            app.update(received(&said(n)));
        }
        assert_eq!(top(&app), (said(20), 0), "at the bottom");
        app.update(key(KeyCode::PageUp));
        // Scrolling away put the read marker under the newest message, a row: a page
        // (the pane less a row) up from there.
        assert_eq!(top(&app), (said(12), 0));
        app.update(received("Client #7: new"));
        app.update(received("Client #7: newer"));
        assert_eq!(top(&app), (said(12), 0), "the view did not move");
        assert_eq!(app.viewport.unseen(), 2);

        app.update(key(KeyCode::PageDown));
        assert_eq!(top(&app), (said(21), 0));
        assert_eq!(app.viewport.unseen(), 2);
        app.update(key(KeyCode::PageDown));
        assert_eq!(
            app.viewport.anchor(),
            Anchor::Bottom,
            "the rest fits: following again"
        );
        assert_eq!(top(&app), (said(23), 0));
        app.update(key(KeyCode::PageUp));
        app.update(key(KeyCode::End));
        assert_eq!(
            (app.viewport.anchor(), app.viewport.unseen()),
            (Anchor::Bottom, 0)
        );
    }

    #[test]
    fn home_and_end_scroll_when_the_input_is_empty_and_edit_it_otherwise() {
        let mut app = connected_app();
        for n in 0..30 {
            app.update(received(&said(n)));
        }
        app.update(key(KeyCode::Home));
        assert_eq!(top(&app), (said(0), 0));
        type_text(&mut app, "abc");
        app.update(key(KeyCode::Home));
        assert_eq!((top(&app), app.input.cursor()), ((said(0), 0), 0));
        app.update(Event::Terminal(TerminalEvent::Key(KeyEvent::new(
            KeyCode::End,
            KeyModifiers::CONTROL,
        ))));
        assert_eq!(app.viewport.anchor(), Anchor::Bottom);
    }

    #[test]
    fn a_scrollback_that_fits_does_not_scroll() {
        let mut app = connected_app();
        for n in 0..5 {
            app.update(received(&said(n)));
        }
        app.update(key(KeyCode::PageUp));
        app.update(key(KeyCode::Home));
        assert_eq!(app.viewport.anchor(), Anchor::Bottom);
        assert_eq!(top(&app), (said(0), 0));
    }

    #[test]
    fn the_mouse_wheel_scrolls() {
        let mut app = connected_app();
        for n in 0..30 {
            app.update(received(&said(n)));
        }
        app.update(wheel(MouseEventKind::ScrollUp));
        app.update(wheel(MouseEventKind::ScrollUp));
        assert_eq!(
            top(&app),
            (said(15), 0),
            "6 rows up, and the read marker's row"
        );
        app.update(wheel(MouseEventKind::ScrollDown));
        assert_eq!(top(&app), (said(18), 0));
    }

    #[test]
    fn scrollback_is_bounded() {
        let mut app = App::new("ws://x".into(), "1".into(), 100, noon);
        for n in 0..250 {
            app.update(received(&said(n)));
        }
        assert_eq!(app.scrollback.len(), 100);
        assert_eq!(app.scrollback[0].text, said(150));
    }

    #[test]
    fn resizing_while_scrolled_up_keeps_the_top_message() {
        let mut app = App::new("ws://x".into(), "1".into(), 1000, noon);
        app.update(Event::Terminal(TerminalEvent::Resize(40, 12)));
        let long = "word ".repeat(12);
        for n in 0..120 {
            let text = if n % 3 == 0 { long.as_str() } else { "short" };
            app.update(received(&format!("Client #7: {n} {text}")));
        }
        app.update(key(KeyCode::PageUp));
        app.update(key(KeyCode::PageUp));
        let (message, _) = top(&app);
        for width in [25, 100, 40, 18] {
            app.update(Event::Terminal(TerminalEvent::Resize(width, 12)));
            assert_eq!(top(&app).0, message, "at {width} columns");
        }
        // Rows into a message that wraps less now are kept within it.
        app.update(Event::Terminal(TerminalEvent::Resize(25, 12)));
        app.update(wheel(MouseEventKind::ScrollUp));
        app.update(Event::Terminal(TerminalEvent::Resize(200, 12)));
        let (_, row) = top(&app);
        assert_eq!(row, 0, "one row at 200 columns");
    }

    fn wheel(kind: MouseEventKind) -> Event {
        Event::Terminal(TerminalEvent::Mouse(MouseEvent {
            kind,
            column: 0,
            row: 0,
            modifiers: KeyModifiers::NONE,
        }))
    }

    #[test]
    fn scrolled_up_to_the_oldest_the_view_moves_on_as_the_scrollback_drops_it() {
        let mut app = App::new("ws://x".into(), "1".into(), 50, noon);
        app.update(Event::Terminal(TerminalEvent::Resize(40, 12)));
        for n in 0..50 {
            app.update(received(&said(n)));
        }
        app.update(key(KeyCode::Home));
        assert_eq!(top(&app), (said(0), 0));
        for n in 50..55 {
            app.update(received(&said(n)));
        }
        assert_eq!(top(&app), (said(5), 0), "the oldest left");
        assert_eq!(app.viewport.unseen(), 5);
    }

    #[test]
    fn the_connection_state_follows_the_network() {
        let mut app = App::new("ws://x".into(), "1".into(), 100, noon);
        assert_eq!(app.link, Link::Connecting);
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::Plain,
        }));
        assert_eq!(app.link, Link::Connected);
        app.update(Event::Net(NetEvent::Retrying { seconds: 4 }));
        assert_eq!(app.link, Link::Retrying { seconds: 4 });
    }
}
