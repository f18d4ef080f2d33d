//! What `chat.v2.json` adds to the client: messages their authors correct and take
//! back, reactions under them, replies with the quoted parent, actions (`/me`), who is
//! typing, the read marker where the server says this id stopped reading, older pages
//! fetched when scrolling back past what is loaded, and search on the server.
//!
//! Each message shown is kept in its latest state as a [`RoomEvent`], and the
//! operations on it are applied by the protocol's own rule ([`chat::v2::apply`]), so
//! that the client and the server can never disagree on what an edit or a reaction
//! does. Its entry's text is made again from that state.

use std::collections::BTreeMap;

use chat::v1::{Event as RoomEvent, EventKind, MessageKind};
use chat::v2::{self, Request};

use super::{App, Command, Entry, Kind, Link};
use crate::event::{Beside, Protocol};
use crate::text::sanitize;

/// How many events one page of older history asks for.
pub const PAGE_EVENTS: i64 = 100;

/// How many found messages `/search` asks the server for.
pub const SEARCH_RESULTS: i64 = 20;

/// The most characters of a parent message quoted above its reply.
const QUOTE_CHARS: usize = 60;

/// What `chat.v2.json` has told about the room this client is in.
#[derive(Debug, Default)]
pub struct Conversation {
    /// The messages shown, by offset, in their latest state.
    said: BTreeMap<u64, Shown>,
    /// Who is typing, in the order they started.
    pub typing: Vec<Typist>,
    /// When this client last said it was typing (Unix milliseconds).
    typing_sent: Option<u64>,
    /// What the input line is for, besides a new message.
    pub composing: Composing,
    /// The oldest offset shown, and whether the server has older events.
    oldest: Option<u64>,
    no_older: bool,
    /// The nonce of the page of older history asked for, while it is on its way.
    paging: Option<String>,
    /// The nonce and text of the search asked for, while it is on its way.
    searching: Option<(String, String)>,
    /// Where this id has read up to here, as the server keeps it, and as last told.
    pub(super) read: u64,
    read_told: u64,
    /// After a welcome: the read marker goes before the first event after this offset.
    marker_after: Option<u64>,
    /// Requests sent so far, for their nonces.
    asked: u64,
    /// The offset of the message selected (Alt-Up), which `/reply`, `/react`, `/edit`
    /// and `/delete` act on.
    selected: Option<u64>,
    /// The messages `/search` listed, by offset: an edit or a delete after the search
    /// changes their lines too (a deleted text must not stay on the screen).
    found: BTreeMap<u64, Vec<Shown>>,
}

/// A message in view, in its latest state, and the number of its entry.
#[derive(Debug, Clone)]
struct Shown {
    entry: u64,
    label: String,
    event: RoomEvent,
}

/// Someone typing, until a time (Unix milliseconds) unless they type on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typist {
    pub id: String,
    /// As the view shows them.
    pub label: String,
    until: u64,
}

/// What Enter does with the line, besides saying it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Composing {
    #[default]
    Message,
    /// The line is the new text of our message at this offset (Up, `/edit`).
    Edit { target: u64 },
}

/// A message's entry: its text from its latest state, and the sender's length in it.
pub(super) fn said_line(label: &str, kind: &EventKind) -> (String, usize) {
    let EventKind::Message {
        text, kind, state, ..
    } = kind
    else {
        return (sanitize(label), 0);
    };
    if kind.is_none() && *state == chat::v1::MessageState::default() {
        // Most messages: one line made safe at once (the ingest benchmark's path).
        let line = sanitize(&format!("{label}: {text}"));
        return (line, sanitize(label).len() + 1);
    }
    let (head, body) = if state.deleted {
        (format!("{label}:"), " (deleted)".to_owned())
    } else if *kind == Some(MessageKind::Action) {
        (format!("* {label}"), format!(" {text}"))
    } else {
        (format!("{label}:"), format!(" {text}"))
    };
    let head = sanitize(&head);
    let mut line = format!("{head}{}", sanitize(&body));
    if state.edited && !state.deleted {
        line.push_str(" (edited)");
    }
    if !state.reactions.is_empty() {
        let reactions: Vec<String> = state
            .reactions
            .iter()
            .map(|reaction| format!("{} {}", sanitize(&reaction.emoji), reaction.ids.len()))
            .collect();
        line.push('\n');
        line.push_str(&reactions.join("  "));
    }
    let prefix = head.len();
    (line, prefix)
}

/// "Ada is typing…", "Ada and Bob are typing…", "3 people are typing…".
pub fn typing_line(typing: &[Typist]) -> Option<String> {
    Some(match typing {
        [] => return None,
        [one] => format!("{} is typing…", one.label),
        [one, two] => format!("{} and {} are typing…", one.label, two.label),
        more => format!("{} people are typing…", more.len()),
    })
}

impl App {
    /// Whether the connection speaks `chat.v2.json` now.
    pub(super) fn speaks_v2(&self) -> bool {
        self.protocol == Protocol::V2 && self.link == Link::Connected
    }

    /// A frame for the server beside the messages (an edit, a reaction, typing, a read
    /// position, a page): dropped if it cannot go now, as each says so or is asked again.
    pub(super) fn tell(&mut self, request: &Request) {
        self.frames.push(request.to_json());
    }

    /// A nonce for a request of ours, to know its answer by.
    fn next_nonce(&mut self) -> String {
        self.conversation.asked += 1;
        format!("{}-r{}", self.id, self.conversation.asked)
    }

    /// A new room (or history): nothing of the last one applies.
    pub(super) fn forget_conversation(&mut self) {
        self.conversation = Conversation::default();
    }

    /// Keeps a message just shown as entry `entry`, for the operations to come on it.
    pub(super) fn keep_said(&mut self, event: &RoomEvent, label: &str, entry: u64) {
        if self.protocol != Protocol::V2 {
            return;
        }
        let conversation = &mut self.conversation;
        conversation.said.insert(
            event.offset,
            Shown {
                entry,
                label: label.to_owned(),
                event: event.clone(),
            },
        );
        // The scrollback has dropped what is older than its oldest entry: so does this.
        let first = self.scrollback.first_number();
        if conversation.said.len() > self.scrollback.len()
            && let Some((&offset, shown)) = conversation.said.first_key_value()
            && shown.entry < first
        {
            conversation.said.remove(&offset);
        }
    }

    /// Notes an event's offset as shown: the oldest one is where older pages start.
    pub(super) fn saw_offset(&mut self, offset: u64) {
        let oldest = self.conversation.oldest.get_or_insert(offset);
        *oldest = (*oldest).min(offset);
    }

    /// Puts the read marker the welcome's `read` asked for before this event, if due.
    pub(super) fn marker_before(&mut self, offset: u64) {
        if self
            .conversation
            .marker_after
            .is_some_and(|read| offset > read)
        {
            self.conversation.marker_after = None;
            self.mark_read_with("── new since you last read ──");
        }
    }

    /// The quote line above a reply: its parent's sender and the start of its text.
    pub(super) fn quote_of(&self, parent: u64) -> Entry {
        let text = match self.conversation.said.get(&parent) {
            Some(shown) => {
                let (line, _) = said_line(&shown.label, &shown.event.kind);
                let first = line.lines().next().unwrap_or_default();
                let mut quoted: String = first.chars().take(QUOTE_CHARS).collect();
                if first.chars().count() > QUOTE_CHARS {
                    quoted.push('…');
                }
                quoted
            }
            None => "an earlier message".to_owned(),
        };
        Entry {
            time: String::new(),
            text: format!("↳ {text}"),
            kind: Kind::Quote,
        }
    }

    /// An edit, a delete, a reaction or its undoing, on a message shown: applied by the
    /// protocol's rule, and its entry made again.
    pub(super) fn operation(&mut self, event: &RoomEvent) {
        let Some(target) = v2::target_of(&event.kind) else {
            return;
        };
        self.relist_found(event, target);
        let Some(shown) = self.conversation.said.get_mut(&target) else {
            return;
        };
        if !v2::apply(event, &mut shown.event) {
            return;
        }
        let (text, prefix) = said_line(&shown.label, &shown.event.kind);
        let number = shown.entry;
        if let Some(entry) = self.scrollback.by_number_mut(number) {
            entry.text = text;
            if let Kind::Said { prefix: old, .. } = &mut entry.kind {
                *old = prefix;
            }
        }
        // The viewport measures rows as it draws: a message that grew a row of
        // reactions is drawn whole, and one scrolled to keeps its place.
        self.viewport.resize(
            &self.scrollback,
            self.viewport_size().0,
            self.viewport_size().1,
        );
    }

    /// An edit or a delete as the log says it, with the start of the message it
    /// changes if that is shown (before the change); reactions are not logged.
    pub(super) fn operation_line(&self, event: &RoomEvent) -> Option<String> {
        let session = self.session.as_ref()?;
        let who = session.label(&event.id, event.name.as_ref());
        let was = |target: &u64| {
            self.conversation
                .said
                .get(target)
                .and_then(|shown| match &shown.event.kind {
                    EventKind::Message { text, .. } => {
                        let start: String = text.chars().take(40).collect();
                        let more = if text.chars().count() > 40 { "…" } else { "" };
                        Some(format!(" “{start}{more}”"))
                    }
                    _ => None,
                })
                .unwrap_or_default()
        };
        match &event.kind {
            // In history, an edit of a message deleted since has lost its text; the
            // delete is logged.
            EventKind::Edit { deleted: true, .. } => None,
            EventKind::Edit { target, text, .. } => {
                Some(format!("{who} edited their message{}: {text}", was(target)))
            }
            EventKind::Delete { target, .. } => {
                Some(format!("{who} deleted their message{}", was(target)))
            }
            _ => None,
        }
    }

    /// Someone's news beside the log.
    pub(super) fn beside(&mut self, beside: Beside) -> Option<Command> {
        match beside {
            Beside::Read { offset } => self.read_position(offset),
            Beside::Rules(rules) => {
                if let Some(session) = self.session.as_mut() {
                    session.rules = rules;
                    // The title row above the messages may come or go.
                    self.fit_viewport();
                }
            }
            Beside::Presence {
                offset,
                count,
                truncated,
                joined,
                left,
            } => {
                if let Some(session) = self.session.as_mut() {
                    session.last_offset = session.last_offset.max(offset);
                    self.presence(count, truncated, &joined, &left);
                }
            }
            Beside::Members {
                nonce,
                count,
                members,
                more,
            } => self.members_answer(nonce.as_deref(), count, &members, more),
            Beside::Typing { id, name } => {
                if id != self.id {
                    let label = self.session.as_ref().map_or_else(
                        || format!("Client #{id}"),
                        |session| session.label(&id, name.as_ref()),
                    );
                    let until = (self.now)() + v2::TYPING_EXPIRES_MS;
                    let typing = &mut self.conversation.typing;
                    match typing.iter_mut().find(|typist| typist.id == id) {
                        Some(typist) => typist.until = until,
                        None => typing.push(Typist { id, label, until }),
                    }
                }
            }
            Beside::Page {
                search: false,
                nonce,
                events,
                more,
            } if nonce.is_some() && nonce == self.conversation.paging => {
                self.conversation.paging = None;
                self.older_page(events, more);
            }
            Beside::Page {
                search: true,
                nonce: Some(nonce),
                events,
                more,
            } if self
                .conversation
                .searching
                .as_ref()
                .is_some_and(|(asked, _)| *asked == nonce) =>
            {
                let (_, query) = self.conversation.searching.take()?;
                self.found(&query, &events, more);
            }
            Beside::Page { .. } => {}
            Beside::DirectRooms { rooms } => {
                // Only the rooms with news are opened: one read, or closed with /part,
                // stays closed until someone writes there again.
                let news = rooms.into_iter().filter(|room| room.unread > 0);
                self.listed_dms.extend(news);
            }
            Beside::DirectMessage { room, with } => {
                // Opened like a listed room with news: it joins, and its welcome
                // brings the message and where this id has read to.
                self.listed_dms.push(v2::DirectRoom {
                    room,
                    with,
                    offset: 0,
                    read: 0,
                    unread: 1,
                });
            }
            Beside::Refused { nonce, message, .. } => {
                if nonce.is_some() && nonce == self.conversation.paging {
                    self.conversation.paging = None;
                }
                if let Some(nonce) = &nonce {
                    self.members_refused(nonce);
                }
                if let Some(nonce) = &nonce
                    && self
                        .conversation
                        .searching
                        .as_ref()
                        .is_some_and(|(asked, _)| asked == nonce)
                {
                    self.conversation.searching = None;
                }
                if let Some(nonce) = &nonce {
                    self.refused_message(nonce);
                }
                self.notice_again(&format!("the server refused: {message}"));
            }
        }
        None
    }

    /// The server's read position for this id here: after a welcome, where the read
    /// marker goes; later, another connection of ours read on.
    fn read_position(&mut self, offset: u64) {
        let conversation = &mut self.conversation;
        let fresh = conversation.oldest.is_none() && conversation.read == 0;
        conversation.read = conversation.read.max(offset);
        conversation.read_told = conversation.read_told.max(offset);
        let (live_from, last) = self
            .session
            .as_ref()
            .map_or((0, 0), |session| (session.live_from, session.last_offset));
        if fresh && offset > 0 && offset < live_from {
            conversation.marker_after = Some(offset);
        } else if !fresh && offset >= last {
            // Read to the end on another device: nothing here is new any more.
            conversation.marker_after = None;
            if let Some(number) = self.viewport.marker()
                && let Some(entry) = self.scrollback.by_number_mut(number)
            {
                entry.kind = Kind::ReadMarker { latest: false };
            }
        }
    }

    /// Tells the server this id has read everything shown, if that is news to it.
    pub(super) fn tell_read(&mut self) {
        if self.protocol != Protocol::V2 {
            return;
        }
        let Some(last) = self.session.as_ref().map(|session| session.last_offset) else {
            return;
        };
        if last > self.conversation.read_told {
            self.conversation.read_told = last;
            self.tell(&Request::Read {
                offset: last,
                nonce: None,
            });
        }
    }

    /// Typing into the line: says so to the room, at most every 3 s
    /// ([`v2::TYPING_INTERVAL_MS`]), and never for a `/command`.
    pub(super) fn typed(&mut self) {
        if !self.speaks_v2() || self.input.text().starts_with('/') || self.input.is_empty() {
            return;
        }
        let now = (self.now)();
        let due = self
            .conversation
            .typing_sent
            .is_none_or(|sent| now.saturating_sub(sent) >= v2::TYPING_INTERVAL_MS);
        if due {
            self.conversation.typing_sent = Some(now);
            self.tell(&Request::Typing { nonce: None });
        }
    }

    /// Sent: the next keystroke says "typing" again at once.
    pub(super) fn stopped_typing(&mut self) {
        self.conversation.typing_sent = None;
    }

    /// A second passed: who stopped typing 6 s ago is no longer shown as typing.
    pub(super) fn tick(&mut self) {
        let now = (self.now)();
        self.conversation.typing.retain(|typist| typist.until > now);
        // A direct message someone starts while this runs has no room open here to
        // arrive in: the list is asked again now and then, as the page does.
        let due = self
            .dms_asked
            .is_some_and(|asked| now.saturating_sub(asked) >= super::DMS_EVERY_MS);
        if due && self.protocol == Protocol::V2 && self.link == Link::Connected {
            self.dms_asked = Some(now);
            self.tell(&Request::Dms { nonce: None });
        }
    }

    /// `id` said something or left: no longer typing.
    pub(super) fn not_typing(&mut self, id: &str) {
        self.conversation.typing.retain(|typist| typist.id != id);
    }

    /// The pane reached the oldest entry: asks for the page before it, if there is one.
    pub(super) fn reached_the_top(&mut self) {
        let conversation = &self.conversation;
        if !self.speaks_v2() || conversation.paging.is_some() || conversation.no_older {
            return;
        }
        let Some(oldest) = conversation.oldest.filter(|oldest| *oldest > 1) else {
            return;
        };
        if self.scrollback.len() >= self.scrollback_cap() {
            self.notice("the scrollback is full (--scrollback): no older messages are loaded");
            return;
        }
        let nonce = self.next_nonce();
        self.conversation.paging = Some(nonce.clone());
        self.tell(&Request::History {
            before: i64::try_from(oldest).ok(),
            after: None,
            limit: PAGE_EVENTS,
            nonce: Some(nonce),
        });
    }

    /// Whether a page of older history is on its way.
    pub fn loading_older(&self) -> bool {
        self.conversation.paging.is_some()
    }

    /// A page of older events: put before the oldest entry, newest first, as far as the
    /// scrollback has room.
    fn older_page(&mut self, events: Vec<RoomEvent>, more: bool) {
        self.conversation.no_older = !more || events.is_empty();
        for event in events.iter().rev() {
            if self
                .conversation
                .oldest
                .is_some_and(|oldest| event.offset >= oldest)
            {
                continue;
            }
            let Some(session) = self.session.as_ref() else {
                return;
            };
            let label = session.label(&event.id, event.name.as_ref());
            let entry = match &event.kind {
                EventKind::Join { .. } | EventKind::Leave { .. } => {
                    let what = if matches!(event.kind, EventKind::Join { .. }) {
                        "has entered the chat"
                    } else {
                        "has left the chat"
                    };
                    let who = session.label_with_id(&event.id, event.name.as_ref());
                    Entry {
                        time: (self.event_time)(event.ts),
                        text: sanitize(&format!("{who} {what}")),
                        kind: Kind::Presence,
                    }
                }
                EventKind::Message { .. } => {
                    let (text, prefix) = said_line(&label, &event.kind);
                    Entry {
                        time: (self.event_time)(event.ts),
                        text,
                        kind: Kind::Said {
                            id: event.id.clone(),
                            mine: event.id == self.id,
                            prefix,
                            mentions_me: false,
                            pending: false,
                        },
                    }
                }
                // In a page, messages come in their latest state: what was done to
                // them is done.
                _ => {
                    self.saw_offset(event.offset);
                    continue;
                }
            };
            let Some(number) = self.scrollback.push_front(entry) else {
                self.conversation.no_older = true;
                self.notice("the scrollback is full (--scrollback): no older messages are loaded");
                return;
            };
            self.saw_offset(event.offset);
            if matches!(event.kind, EventKind::Message { .. }) {
                self.keep_said(event, &label, number);
            }
        }
    }

    /// `/search TEXT` on a `chat.v2.json` server: asks it, over all it keeps.
    pub(super) fn search_on_server(&mut self, query: &str) {
        let nonce = self.next_nonce();
        self.conversation.searching = Some((nonce.clone(), query.to_owned()));
        self.tell(&Request::Search {
            text: query.to_owned(),
            before: None,
            limit: SEARCH_RESULTS,
            nonce: Some(nonce),
        });
    }

    /// The server's answer to `/search`: the messages found, newest first, under a line.
    fn found(&mut self, query: &str, events: &[RoomEvent], more: bool) {
        if events.is_empty() {
            self.notice_again(&format!("no message contains “{query}”"));
            return;
        }
        let count = events.len();
        let messages = if count == 1 { "message" } else { "messages" };
        let more = if more { ", and older ones" } else { "" };
        self.divider(&format!(
            "search “{query}”: {count} {messages}, newest first{more}"
        ));
        for event in events {
            let label = self.session.as_ref().map_or_else(
                || format!("Client #{}", event.id),
                |session| session.label(&event.id, event.name.as_ref()),
            );
            let entry = self.scrollback.next_number();
            self.push(Entry {
                time: String::new(),
                text: self.found_line(&label, event),
                kind: Kind::Quote,
            });
            let listings = self.conversation.found.entry(event.offset).or_default();
            listings.push(Shown {
                entry,
                label,
                event: event.clone(),
            });
        }
        // What the scrollback has dropped is no longer listed.
        let first = self.scrollback.first_number();
        self.conversation.found.retain(|_, listings| {
            listings.retain(|listed| listed.entry >= first);
            !listings.is_empty()
        });
        self.scroll_to_bottom();
    }

    /// A found message's line under `/search`'s divider.
    fn found_line(&self, label: &str, event: &RoomEvent) -> String {
        let (text, _) = said_line(label, &event.kind);
        let text = text.replace('\n', " ");
        format!("│ {} {text}", (self.event_time)(event.ts))
    }

    /// An edit or a delete on a message `/search` listed: its lines made again.
    fn relist_found(&mut self, event: &RoomEvent, target: u64) {
        let Some(mut listings) = self.conversation.found.remove(&target) else {
            return;
        };
        for listed in &mut listings {
            if !v2::apply(event, &mut listed.event) {
                continue;
            }
            let line = self.found_line(&listed.label, &listed.event);
            if let Some(entry) = self.scrollback.by_number_mut(listed.entry) {
                entry.text = line;
            }
        }
        self.conversation.found.insert(target, listings);
        // Its rows measured again (see `operation`).
        let (columns, rows) = self.viewport_size();
        self.viewport.resize(&self.scrollback, columns, rows);
    }

    /// Alt-Up: selects the message above the selected one, or the newest.
    pub(super) fn select_older(&mut self) {
        if !self.needs_v2("selecting a message") {
            return;
        }
        let said = &self.conversation.said;
        let above = match self.conversation.selected {
            None => said.keys().next_back(),
            Some(at) => said.range(..at).map(|(offset, _)| offset).next_back(),
        };
        if let Some(&offset) = above {
            self.conversation.selected = Some(offset);
        }
        self.show_selected();
    }

    /// Alt-Down: selects the message below the selected one; past the newest, none.
    pub(super) fn select_newer(&mut self) {
        let Some(at) = self.conversation.selected else {
            return;
        };
        let below = self.conversation.said.range(at + 1..).next();
        self.conversation.selected = below.map(|(offset, _)| *offset);
        if self.conversation.selected.is_none() {
            self.scroll_to_bottom();
        }
        self.show_selected();
    }

    fn show_selected(&mut self) {
        if let Some(entry) = self.selected_entry() {
            self.viewport.show(&self.scrollback, entry);
        }
    }

    /// Esc: no message selected any more; false if none was.
    pub(super) fn unselect(&mut self) -> bool {
        self.conversation.selected.take().is_some()
    }

    /// The number of the selected message's entry, to draw it so.
    pub fn selected_entry(&self) -> Option<u64> {
        let offset = self.conversation.selected?;
        Some(self.conversation.said.get(&offset)?.entry)
    }

    /// The selected message, taken (a command acts on it once), if it is still shown
    /// and not deleted, and ours when `mine`.
    fn take_selected(&mut self, mine: bool) -> Option<(u64, String)> {
        let offset = self.conversation.selected?;
        let shown = self.conversation.said.get(&offset)?;
        let EventKind::Message { text, state, .. } = &shown.event.kind else {
            return None;
        };
        if state.deleted || (mine && shown.event.id != self.id) {
            return None;
        }
        let text = text.clone();
        self.conversation.selected = None;
        Some((offset, text))
    }

    /// The message `/edit` and `/delete` act on: our selected one, or our last.
    fn my_message(&mut self) -> Option<(u64, String)> {
        self.take_selected(true).or_else(|| self.my_last_message())
    }

    /// The message `/reply` and `/react` act on: the selected one, or the newest of
    /// someone else's.
    pub(super) fn answered_message(&mut self) -> Option<u64> {
        self.take_selected(false)
            .map(|(offset, _)| offset)
            .or_else(|| self.their_last_message())
    }

    /// Our newest message still shown and not deleted, for Up and `/edit`/`/delete`.
    fn my_last_message(&self) -> Option<(u64, String)> {
        self.conversation
            .said
            .iter()
            .rev()
            .find_map(|(offset, shown)| match &shown.event.kind {
                EventKind::Message { text, state, .. }
                    if shown.event.id == self.id && !state.deleted =>
                {
                    Some((*offset, text.clone()))
                }
                _ => None,
            })
    }

    /// The newest message of someone else's, for `/reply` and `/react`.
    pub(super) fn their_last_message(&self) -> Option<u64> {
        self.conversation
            .said
            .iter()
            .rev()
            .find_map(|(offset, shown)| match &shown.event.kind {
                EventKind::Message { state, .. } if shown.event.id != self.id && !state.deleted => {
                    Some(*offset)
                }
                _ => None,
            })
    }

    /// Up on an empty line: our last message in the line, to edit; false when there is
    /// none to edit (then Up goes back through the lines sent, as before).
    pub(super) fn start_edit(&mut self) -> bool {
        if !self.speaks_v2() {
            return false;
        }
        let Some((target, text)) = self.my_last_message() else {
            return false;
        };
        self.input.clear();
        self.input.insert(&text);
        self.conversation.composing = Composing::Edit { target };
        true
    }

    /// Whether an edit is in the line.
    pub fn editing(&self) -> bool {
        matches!(self.conversation.composing, Composing::Edit { .. })
    }

    /// Esc while editing: the edit is given up, and the line emptied.
    pub(super) fn cancel_edit(&mut self) -> bool {
        if !self.editing() {
            return false;
        }
        self.conversation.composing = Composing::Message;
        self.input.clear();
        true
    }

    /// Enter while editing: the line is the message's new text.
    pub(super) fn submit_edit(&mut self, target: u64) -> Option<Command> {
        let text = self.input.text().to_owned();
        self.conversation.composing = Composing::Message;
        self.input.clear();
        self.edit(target, &text);
        None
    }

    fn edit(&mut self, target: u64, text: &str) {
        if text.trim().is_empty() {
            self.notice("an edit cannot be empty: /delete takes a message back");
            return;
        }
        self.tell(&Request::Edit {
            target,
            text: text.to_owned(),
            nonce: None,
        });
        self.stopped_typing();
    }

    /// `/edit [TEXT]`: with text, our last message becomes it; without, it is put in
    /// the line to edit.
    pub(super) fn edit_command(&mut self, argument: &str) {
        if !self.needs_v2("/edit") {
            return;
        }
        if argument.is_empty() {
            self.input.submit();
            let Some((target, text)) = self.my_message() else {
                self.notice("you have no message here to edit");
                return;
            };
            self.input.insert(&text);
            self.conversation.composing = Composing::Edit { target };
            return;
        }
        match self.my_message() {
            Some((target, _)) => self.edit(target, argument),
            None => self.notice("you have no message here to edit"),
        }
        self.input.submit();
    }

    /// `/delete`: takes our selected or last message back.
    pub(super) fn delete_command(&mut self) {
        if !self.needs_v2("/delete") {
            return;
        }
        match self.my_message() {
            Some((target, _)) => self.tell(&Request::Delete {
                target,
                nonce: None,
            }),
            None => self.notice("you have no message here to delete"),
        }
        self.input.submit();
    }

    /// `/kick`, `/ban`, `/unban`, `/mute`, `/unmute`, `/topic`, `/slow`, `/op`, `/deop`:
    /// a moderator's request (chat.v2.json), which the room logs for all to see, or
    /// refuses with an error that is shown. A word that is not right stays in the line.
    pub(super) fn moderate(&mut self, name: &str, argument: &str) {
        if !self.needs_v2(&format!("/{name}")) {
            return;
        }
        let mut words = argument.split_whitespace();
        let first = words.next().unwrap_or("");
        // `#9`, as the screen shows an id, or `9`.
        let member = chat::ClientId::parse(first.strip_prefix('#').unwrap_or(first))
            .map(|id| id.to_string());
        let rest = |words: std::str::SplitWhitespace<'_>| {
            let said = words.collect::<Vec<_>>().join(" ");
            (!said.is_empty()).then_some(said)
        };
        let needs_id = |command: &str, example: &str| {
            format!("/{command} needs the id of whom it is for: /{command} 9{example}")
        };
        let request = match (name, member) {
            ("topic", _) => Ok(Request::Topic {
                text: argument.trim().to_owned(),
                nonce: None,
            }),
            ("slow", _) => match first {
                "off" | "0" => Ok(0),
                word => typed_duration(word).ok_or_else(|| {
                    "/slow needs how long between two messages of one member: /slow 30s, /slow off"
                        .to_owned()
                }),
            }
            .map(|seconds| Request::Slow {
                seconds,
                nonce: None,
            }),
            ("kick", Ok(member)) => Ok(Request::Kick {
                member,
                reason: rest(words),
                nonce: None,
            }),
            ("ban" | "mute", Ok(member)) => {
                let words: Vec<&str> = words.collect();
                // A word that begins with a digit is a duration, or a mistake: never a
                // reason, nor a ban until lifted by accident.
                let (seconds, reason) = match words.as_slice() {
                    [number, unit, rest @ ..] if spelled_duration(number, unit).is_some() => {
                        (spelled_duration(number, unit), rest)
                    }
                    [word, rest @ ..] if word.starts_with(|c: char| c.is_ascii_digit()) => {
                        match typed_duration(word) {
                            Some(seconds) => (Some(seconds), rest),
                            None => {
                                self.notice(&format!(
                                    "{word} is not a duration: give 90s, 10m, 2h, 7d or 2w \
                                     (none: until lifted)"
                                ));
                                return;
                            }
                        }
                    }
                    rest => (None, rest),
                };
                let reason = reason.join(" ");
                match name {
                    "ban" => Ok(Request::Ban {
                        member,
                        seconds,
                        reason: (!reason.is_empty()).then_some(reason),
                        nonce: None,
                    }),
                    _ if !reason.is_empty() => Err(
                        "/mute takes no reason: /mute 9 10m, or /mute 9 (until /unmute)".to_owned(),
                    ),
                    _ => Ok(Request::Mute {
                        member,
                        seconds,
                        nonce: None,
                    }),
                }
            }
            ("unban", Ok(member)) => Ok(Request::Unban {
                member,
                nonce: None,
            }),
            ("unmute", Ok(member)) => Ok(Request::Unmute {
                member,
                nonce: None,
            }),
            ("op" | "deop", Ok(member)) => Ok(Request::Role {
                member,
                role: if name == "op" {
                    chat::v1::Role::Moderator
                } else {
                    chat::v1::Role::Member
                },
                nonce: None,
            }),
            ("kick", Err(_)) => Err(needs_id("kick", " spamming")),
            ("ban", Err(_)) => Err(needs_id("ban", " 1h spamming")),
            ("mute", Err(_)) => Err(needs_id("mute", " 10m")),
            (command, Err(_)) => Err(needs_id(command, "")),
            (command, Ok(_)) => Err(format!("/{command} is not a moderator's command")),
        };
        match request {
            Ok(request) => {
                self.tell(&request);
                self.input.submit();
            }
            Err(why) => self.notice(&why),
        }
    }

    /// `/react EMOJI`: reacts to the newest message of someone else's, or takes our
    /// reaction back if it is there already.
    pub(super) fn react_command(&mut self, emoji: &str) {
        if !self.needs_v2("/react") {
            return;
        }
        if emoji.is_empty() {
            self.notice("/react needs an emoji: /react 👍");
            return;
        }
        match self.answered_message() {
            Some(target) => {
                let mine = self.conversation.said.get(&target).is_some_and(|shown| {
                    matches!(&shown.event.kind, EventKind::Message { state, .. }
                    if state.reactions.iter().any(|reaction| {
                        reaction.emoji == emoji && reaction.ids.contains(&self.id)
                    }))
                });
                let (emoji, nonce) = (emoji.to_owned(), None);
                self.tell(&if mine {
                    Request::Unreact {
                        target,
                        emoji,
                        nonce,
                    }
                } else {
                    Request::React {
                        target,
                        emoji,
                        nonce,
                    }
                });
            }
            None => self.notice("there is no message of someone else's here to react to"),
        }
        self.input.submit();
    }

    /// Says whether the connection speaks `chat.v2.json`, which `command` needs; if it
    /// does not, says so (and the line stays, to send once it does).
    pub(super) fn needs_v2(&mut self, command: &str) -> bool {
        if self.speaks_v2() {
            return true;
        }
        let why = if self.link == Link::Connected {
            "this server does not speak chat.v2.json"
        } else {
            "not connected"
        };
        self.notice(&format!("{command} needs a chat.v2.json server: {why}"));
        false
    }

    /// Which frame a new message goes in: `chat.v2.json`'s, with a reply's parent or as
    /// an action, or `chat.v1.json`'s.
    pub(super) fn message_request(
        &self,
        text: String,
        nonce: String,
        reply_to: Option<u64>,
        action: bool,
    ) -> String {
        if self.protocol == Protocol::V2 || reply_to.is_some() || action {
            Request::Message {
                text,
                nonce: Some(nonce),
                reply_to,
                kind: action.then_some(MessageKind::Action),
            }
            .to_json()
        } else {
            chat::v1::Request::Message {
                text,
                nonce: Some(nonce),
            }
            .to_json()
        }
    }
}

/// A number of seconds as people say it: "90 s", "10 min", "2 h", "3 days".
pub(crate) fn duration_words(seconds: u64) -> String {
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        7200..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// A duration as typed after a command: `90`, `90s`, `10m`, `2h`, `3d`, `2w`; seconds.
pub(crate) fn typed_duration(word: &str) -> Option<u64> {
    let (digits, unit) = match word.char_indices().last()? {
        (at, 's' | 'm' | 'h' | 'd' | 'w') => (&word[..at], &word[at..]),
        _ => (word, "s"),
    };
    let number: u64 = digits.parse().ok()?;
    number
        .checked_mul(unit_seconds(unit)?)
        .filter(|seconds| *seconds > 0)
}

/// A duration spelled in two words: `10 minutes`, `2 h`, `1 day`; seconds.
fn spelled_duration(number: &str, unit: &str) -> Option<u64> {
    let number: u64 = number.parse().ok()?;
    let unit = match unit.to_lowercase().trim_end_matches('s') {
        "" | "sec" | "second" => "s",
        "min" | "minute" => "m",
        "h" | "hr" | "hour" => "h",
        "d" | "day" => "d",
        "w" | "wk" | "week" => "w",
        _ => return None,
    };
    number
        .checked_mul(unit_seconds(unit)?)
        .filter(|seconds| *seconds > 0)
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, NetEvent};
    use chat::v1::{Limits, ServerFrame, Welcome, WelcomeFrame, WelcomeTag};
    use crossterm::event::{Event as TerminalEvent, KeyCode, KeyEvent};

    fn v2_app(welcome_offset: u64) -> App {
        let mut app = App::new("ws://x".into(), "42".into(), 1000, || "12:00:00".into());
        app.event_time = |ts| format!("t{ts}");
        app.now = || 1_000_000;
        app.update(Event::Terminal(TerminalEvent::Resize(80, 12)));
        app.update(Event::Net(NetEvent::Connecting));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::V2,
        }));
        let welcome = Welcome {
            id: "42".into(),
            room: "main".into(),
            epoch: "e1".into(),
            offset: welcome_offset,
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
        };
        app.update(Event::Net(NetEvent::Frame(ServerFrame::Welcome(
            WelcomeFrame {
                kind: WelcomeTag::Welcome,
                welcome,
            },
        ))));
        app
    }

    fn event(offset: u64, id: &str, kind: EventKind) -> RoomEvent {
        RoomEvent {
            offset,
            ts: offset,
            id: id.into(),
            name: None,
            kind,
        }
    }

    fn frame(event: RoomEvent) -> Event {
        Event::Net(NetEvent::Frame(ServerFrame::Event(event)))
    }

    fn key(code: KeyCode) -> Event {
        Event::Terminal(TerminalEvent::Key(KeyEvent::from(code)))
    }

    fn texts(app: &App) -> Vec<String> {
        app.scrollback
            .iter()
            .map(|entry| entry.text.clone())
            .collect()
    }

    #[test]
    fn the_log_gets_edits_and_deletes_at_their_own_times() {
        let mut app = v2_app(0);
        app.keep_received();
        app.update(frame(event(1, "7", EventKind::said("helo", None))));
        app.update(frame(event(
            2,
            "7",
            EventKind::Edit {
                target: 1,
                text: "hello".into(),
                nonce: None,
                deleted: false,
            },
        )));
        app.update(frame(event(
            3,
            "7",
            EventKind::Delete {
                moderated: false,
                target: 1,
                nonce: None,
            },
        )));
        app.update(frame(event(
            4,
            "7",
            EventKind::React {
                target: 1,
                emoji: ":x:".into(),
                nonce: None,
            },
        )));
        let logged: Vec<(Option<u64>, String)> = app
            .take_received()
            .into_iter()
            .map(|received| (received.millis, received.text))
            .collect();
        assert_eq!(
            logged,
            [
                (Some(1), "Client #7: helo".to_owned()),
                (
                    Some(2),
                    "Client #7 edited their message “helo”: hello".to_owned()
                ),
                (
                    Some(3),
                    "Client #7 deleted their message “hello”".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn reaching_the_top_asks_for_the_page_before_and_puts_it_in_front() {
        let mut app = v2_app(40);
        for offset in 21..=40 {
            app.update(frame(event(
                offset,
                "7",
                EventKind::said(format!("m{offset}"), None),
            )));
        }
        app.take_frames();
        app.update(key(KeyCode::Home));
        let asked = app.take_frames();
        let [request] = asked.as_slice() else {
            panic!("one request: {asked:?}");
        };
        let Ok(Request::History {
            before: Some(21),
            nonce: Some(nonce),
            ..
        }) = Request::parse(request)
        else {
            panic!("{request}");
        };
        assert!(app.loading_older());
        app.update(key(KeyCode::Home));
        assert!(app.take_frames().is_empty(), "asked once");
        let page = (11..21)
            .map(|offset| event(offset, "7", EventKind::said(format!("m{offset}"), None)))
            .collect();
        app.update(Event::Net(NetEvent::Beside(Beside::Page {
            search: false,
            nonce: Some(nonce),
            events: page,
            more: false,
        })));
        assert!(!app.loading_older());
        assert_eq!(texts(&app)[0], "Client #7: m11");
        assert_eq!(texts(&app)[10], "── earlier messages ──");
        app.update(key(KeyCode::Home));
        assert!(app.take_frames().is_empty(), "no more before");
    }

    #[test]
    fn a_message_found_by_search_and_deleted_since_leaves_the_listing_too() {
        let mut app = v2_app(0);
        app.take_frames();
        app.update(Event::Terminal(TerminalEvent::Paste(
            "/search secret".into(),
        )));
        app.update(key(KeyCode::Enter));
        let asked = app.take_frames();
        let [request] = asked.as_slice() else {
            panic!("one request: {asked:?}");
        };
        let Ok(Request::Search {
            nonce: Some(nonce), ..
        }) = Request::parse(request)
        else {
            panic!("{request}");
        };
        // Older than the history shown: only the listing has them.
        let found = vec![
            event(6, "7", EventKind::said("the secret plan", None)),
            event(5, "8", EventKind::said("a secret too", None)),
        ];
        app.update(Event::Net(NetEvent::Beside(Beside::Page {
            search: true,
            nonce: Some(nonce),
            events: found,
            more: false,
        })));
        let listed = |app: &App| -> Vec<String> {
            texts(app)
                .into_iter()
                .filter(|text| text.starts_with("│ "))
                .collect()
        };
        assert_eq!(
            listed(&app),
            [
                "│ t6 Client #7: the secret plan",
                "│ t5 Client #8: a secret too"
            ]
        );
        app.update(frame(event(
            9,
            "7",
            EventKind::Delete {
                moderated: false,
                target: 6,
                nonce: None,
            },
        )));
        app.update(frame(event(
            10,
            "8",
            EventKind::Edit {
                target: 5,
                text: "nothing to see".into(),
                nonce: None,
                deleted: false,
            },
        )));
        let after = listed(&app);
        assert!(
            !after.iter().any(|line| line.contains("secret plan")),
            "{after:?}"
        );
        assert_eq!(
            after[1], "│ t5 Client #8: nothing to see (edited)",
            "{after:?}"
        );
    }

    #[test]
    fn a_big_rooms_presence_batch_changes_the_member_list_without_a_line_each() {
        let mut app = v2_app(3);
        let lines = texts(&app).len();
        let batch = |offset, joined: &[(&str, u64)], left: &[(&str, u64)]| {
            Event::Net(NetEvent::Beside(Beside::Presence {
                offset,
                count: 0,
                truncated: false,
                joined: joined
                    .iter()
                    .map(|(id, key)| chat::v1::Present {
                        id: (*id).to_owned(),
                        name: None,
                        since: 1,
                        role: chat::v1::Role::Member,
                        key: Some(*key),
                    })
                    .collect(),
                left: left
                    .iter()
                    .map(|(id, key)| v2::Gone {
                        key: *key,
                        id: (*id).to_owned(),
                    })
                    .collect(),
            }))
        };
        app.update(batch(4, &[("42", 1), ("7", 2), ("8", 3), ("8", 4)], &[]));
        app.update(batch(5, &[("9", 5)], &[("8", 3), ("7", 2)]));
        let session = app.session.as_ref().unwrap();
        let here: Vec<(&str, usize)> = session
            .members
            .iter()
            .map(|(id, member)| (id.as_str(), member.connections))
            .collect();
        assert_eq!(here, [("42", 1), ("8", 1), ("9", 1)]);
        assert_eq!(session.last_offset, 5);
        assert_eq!(
            texts(&app)[lines..],
            [format!("* {}", crate::app::members::BIG_ROOM)],
            "no line for each join or leave: one saying so"
        );
    }

    #[test]
    fn someone_typing_shows_for_six_seconds_unless_they_type_on_or_speak() {
        static NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut app = v2_app(0);
        app.now = || NOW.load(std::sync::atomic::Ordering::Relaxed);
        let at = |millis| NOW.store(millis, std::sync::atomic::Ordering::Relaxed);
        let typing = |id: &str| {
            Event::Net(NetEvent::Beside(Beside::Typing {
                id: id.into(),
                name: None,
            }))
        };
        let line = |app: &App| typing_line(&app.conversation.typing);
        at(1_000);
        app.update(typing("7"));
        app.update(typing("8"));
        app.update(typing("42"));
        assert_eq!(
            line(&app).as_deref(),
            Some("Client #7 and Client #8 are typing…"),
            "not ourselves"
        );
        at(5_000);
        app.update(typing("8"));
        at(7_000);
        app.update(Event::Tick);
        assert_eq!(line(&app).as_deref(), Some("Client #8 is typing…"));
        app.update(frame(event(1, "8", EventKind::said("there", None))));
        assert_eq!(line(&app), None, "said something");

        // Ours: on the first key, then not again within 3 s.
        app.take_frames();
        for (millis, key_char) in [(8_000, 'a'), (10_999, 'b'), (11_000, 'c')] {
            at(millis);
            app.update(key(KeyCode::Char(key_char)));
        }
        let told = app.take_frames();
        assert_eq!(told, [r#"{"type":"typing"}"#, r#"{"type":"typing"}"#]);
    }

    #[test]
    fn the_welcome_s_read_position_puts_the_marker_above_the_first_unread() {
        let mut app = v2_app(5);
        app.update(Event::Net(NetEvent::Beside(Beside::Read { offset: 3 })));
        for offset in 1..=5 {
            app.update(frame(event(
                offset,
                "7",
                EventKind::said(format!("m{offset}"), None),
            )));
        }
        let texts = texts(&app);
        let marker = texts
            .iter()
            .position(|text| text == "── new since you last read ──")
            .expect("a marker");
        assert_eq!(texts[marker + 1], "Client #7: m4");
        // Looking away tells the server how far the pane has been read.
        app.take_frames();
        app.update(Event::Terminal(TerminalEvent::FocusLost));
        assert_eq!(app.take_frames(), [r#"{"type":"read","offset":5}"#]);
        // And so does quitting, for what came since.
        app.update(frame(event(6, "7", EventKind::said("m6", None))));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), crossterm::event::KeyModifiers::CONTROL);
        let quit = app.update(Event::Terminal(TerminalEvent::Key(ctrl_c)));
        assert_eq!(quit, Some(Command::Quit));
        assert_eq!(app.take_frames(), [r#"{"type":"read","offset":6}"#]);
    }

    #[test]
    fn read_to_the_end_on_another_device_the_marker_goes() {
        let mut app = v2_app(5);
        app.update(Event::Net(NetEvent::Beside(Beside::Read { offset: 3 })));
        for offset in 1..=6 {
            app.update(frame(event(
                offset,
                "7",
                EventKind::said(format!("m{offset}"), None),
            )));
        }
        let markers = |app: &App| {
            app.scrollback
                .iter()
                .filter(|entry| entry.kind == Kind::ReadMarker { latest: true })
                .count()
        };
        assert_eq!(markers(&app), 1);
        app.update(Event::Net(NetEvent::Beside(Beside::Read { offset: 5 })));
        assert_eq!(markers(&app), 1, "not to the end yet");
        app.update(Event::Net(NetEvent::Beside(Beside::Read { offset: 6 })));
        assert_eq!(markers(&app), 0);
        app.take_frames();
        app.update(Event::Terminal(TerminalEvent::FocusLost));
        assert!(
            !app.take_frames()
                .iter()
                .any(|frame| frame.contains("\"read\"")),
            "the server knows already"
        );
    }

    #[test]
    fn what_v2_adds_is_drawn_safe_too() {
        let kind = EventKind::Message {
            text: "hi\u{1b}[2J".into(),
            nonce: None,
            reply_to: Some(1),
            kind: Some(MessageKind::Action),
            state: chat::v1::MessageState {
                edited: true,
                deleted: false,
                reactions: vec![chat::v1::Reaction {
                    emoji: "\u{1b}]0;x\u{7}".into(),
                    ids: vec!["7".into()],
                }],
            },
        };
        let (line, prefix) = said_line("~Ada\u{9b}", &kind);
        assert_eq!(line, "* ~Ada� hi␛[2J (edited)\n␛]0;x␇ 1");
        assert_eq!(&line[..prefix], "* ~Ada�");
    }

    #[test]
    fn up_edits_our_last_message_and_esc_or_another_line_gives_it_up() {
        let mut app = v2_app(0);
        app.update(frame(event(1, "42", EventKind::said("tpyo", None))));
        app.update(frame(event(2, "7", EventKind::said("theirs", None))));
        app.take_frames();
        app.update(key(KeyCode::Up));
        assert_eq!((app.input.text(), app.editing()), ("tpyo", true));
        app.update(key(KeyCode::Esc));
        assert_eq!((app.input.text(), app.editing()), ("", false));
        assert!(app.take_frames().is_empty(), "nothing sent");
        // Up again, a changed text, Enter: the edit of message 1.
        app.update(key(KeyCode::Up));
        for _ in 0..3 {
            app.update(key(KeyCode::Backspace));
        }
        app.update(Event::Terminal(TerminalEvent::Paste("ypo".into())));
        app.take_frames();
        assert_eq!(app.update(key(KeyCode::Enter)), None);
        assert_eq!(
            app.take_frames(),
            [r#"{"type":"edit","target":1,"text":"typo"}"#]
        );
        // Up then Up again (the line has text): the history, and no longer an edit.
        app.update(key(KeyCode::Up));
        assert!(app.editing());
        app.update(key(KeyCode::Up));
        assert!(!app.editing());
        // The server's edit shows in the message.
        app.update(frame(event(
            3,
            "42",
            EventKind::Edit {
                target: 1,
                text: "typo".into(),
                nonce: None,
                deleted: false,
            },
        )));
        assert_eq!(texts(&app)[0], "Client #42: typo (edited)");
    }
}
