//! What `chat.v1.json` adds to the client: the room's history on connect, under a
//! divider; after a reconnect, what was missed (or a gap line); names; who is here;
//! and the messages you send, shown at once as on their way, confirmed by their
//! nonce, and sent again once if a lost connection may have lost them.

use std::cell::RefCell;
use std::collections::BTreeMap;

use chat::v1::{DisplayName, Event as RoomEvent, EventKind, Role, ServerFrame, Welcome};
use chat::v2;

use super::{App, Command, Entry, Kind, Link, messages};
use crate::event::{Protocol, RoomRules};
use crate::text::sanitize;

/// A message is sent at most this many times: once, and once more after a reconnect
/// whose resumed history does not have it.
const MOST_SENDS: u8 = 2;

/// What the `chat.v1.json` connections so far have told, kept across reconnects.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Whether ids and names are proven by tokens (otherwise names are claimed).
    pub verified: bool,
    /// Who is in the room, by id.
    pub members: BTreeMap<String, Member>,
    /// The name the server knows us by, if any.
    pub my_name: Option<DisplayName>,
    room: String,
    epoch: String,
    /// The last event shown.
    pub(super) last_offset: u64,
    /// The welcome's offset: events up to it are history.
    pub(super) live_from: u64,
    /// A divider to draw before the next history event, if one comes.
    divider: Option<String>,
    unconfirmed: Vec<Unconfirmed>,
    /// Sent so far, for nonces.
    sent: u64,
    /// When each id last said something here (Unix milliseconds), for the smart filter.
    last_said: BTreeMap<String, u64>,
    nonce_seed: String,
    /// Roles, topic, slow mode and read-only: from the v2 welcome, then its events.
    pub rules: RoomRules,
    /// Above the server's presence threshold: the room's count and the paging of its
    /// members (see [`super::members`]).
    pub(super) big: Option<super::members::BigRoom>,
    /// The member list by handle, to apply pages and batches by.
    pub(super) handles: super::members::Handles,
    /// `members` requests sent so far, for their nonces.
    pub(super) members_asked: u64,
    /// Bumped at each change of `members`, for `roster`'s cache.
    generation: u64,
    /// The roster as last sorted: drawn every frame, sorted again only after a change
    /// (with 16 000 members a sort is milliseconds).
    roster_cache: RefCell<Option<RosterCache>>,
}

/// [`Session::roster`] as of a `generation`, roles, proof of names and viewer.
#[derive(Debug, Clone)]
struct RosterCache {
    generation: u64,
    roles: BTreeMap<String, Role>,
    verified: bool,
    my_id: String,
    lines: std::sync::Arc<[String]>,
}

/// One person in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Connections with this id.
    pub connections: usize,
    pub name: Option<DisplayName>,
}

/// A message of ours the server has not sent back yet.
#[derive(Debug, Clone)]
struct Unconfirmed {
    nonce: String,
    frame: String,
    /// The number of its entry (see [`super::Anchor::At`]).
    entry: u64,
    sends: u8,
    /// The connection it was last sent on (0: not sent yet).
    sent_on: u64,
}

impl Session {
    /// How `id` is shown: its name, marked with `~` when names are claimed rather than
    /// proven (as IRC marks an ident it could not check), or the tutorial's `Client #id`.
    pub fn label(&self, id: &str, name: Option<&DisplayName>) -> String {
        match name {
            Some(name) if self.verified => name.to_string(),
            Some(name) => format!("~{name}"),
            None => format!("Client #{id}"),
        }
    }

    /// [`Session::label`] with the id beside a name: `~Ada (#42)`, `Client #7`.
    pub fn label_with_id(&self, id: &str, name: Option<&DisplayName>) -> String {
        match name {
            Some(_) => format!("{} (#{id})", self.label(id, name)),
            None => self.label(id, None),
        }
    }

    /// A member named in a moderation event: `Bo (#9)` while its name is known here,
    /// else `#9`.
    pub fn member_label(&self, id: &str) -> String {
        match self.members.get(id).and_then(|member| member.name.as_ref()) {
            Some(name) => self.label_with_id(id, Some(name)),
            None => format!("#{id}"),
        }
    }

    /// Who is here, one line each, sorted as shown: owners and admins first, marked
    /// `&`, then moderators, `@` (weechat's marks for Matrix power levels), then
    /// everyone else: `&Ada (#42)`, `@~Bo (#7)`, `Client #9`.
    pub fn roster(&self, my_id: &str) -> Vec<String> {
        self.sorted_roster(my_id).to_vec()
    }

    /// [`Session::roster`], sorted once per change of the members, the roles or the
    /// proof of names.
    pub fn sorted_roster(&self, my_id: &str) -> std::sync::Arc<[String]> {
        let mut cache = self.roster_cache.borrow_mut();
        if let Some(cached) = cache.as_ref()
            && cached.generation == self.generation
            && cached.verified == self.verified
            && cached.my_id == my_id
            && cached.roles == self.rules.roles
        {
            return cached.lines.clone();
        }
        let lines: std::sync::Arc<[String]> = self.sort_roster(my_id).into();
        *cache = Some(RosterCache {
            generation: self.generation,
            roles: self.rules.roles.clone(),
            verified: self.verified,
            my_id: my_id.to_owned(),
            lines: lines.clone(),
        });
        lines
    }

    fn sort_roster(&self, my_id: &str) -> Vec<String> {
        let mut lines: Vec<(Role, String)> = self
            .members
            .iter()
            .map(|(id, member)| {
                let role = self.rules.roles.get(id).copied().unwrap_or_default();
                let mark = match role {
                    Role::Admin | Role::Owner => "&",
                    Role::Moderator => "@",
                    Role::Member => "",
                };
                let label = self.label_with_id(id, member.name.as_ref());
                let you = if id == my_id { " (you)" } else { "" };
                (role, format!("{mark}{label}{you}"))
            })
            .collect();
        lines.sort_by_key(|(role, line)| {
            let rank = std::cmp::Reverse(*role).max(std::cmp::Reverse(Role::Owner));
            (
                rank,
                line.trim_start_matches(['&', '@', '~']).to_lowercase(),
            )
        });
        lines.into_iter().map(|(_, line)| line).collect()
    }

    /// Counts a connection of `id` in (`change` 1) or out (-1); true when that brings
    /// the id into the room or takes it out, false for another connection of an id
    /// that stays.
    pub(super) fn arrived(&mut self, id: &str, name: Option<&DisplayName>, change: isize) -> bool {
        let member = self.members.entry(id.to_owned()).or_insert(Member {
            connections: 0,
            name: None,
        });
        let was_here = member.connections > 0;
        let before = member.connections;
        member.connections = member.connections.saturating_add_signed(change);
        if name.is_some() {
            member.name = name.cloned();
        }
        let is_here = member.connections > 0;
        self.handles.connections = (self.handles.connections + member.connections) - before;
        if !is_here {
            self.members.remove(id);
        }
        self.members_changed();
        was_here != is_here
    }

    pub(super) fn members_changed(&mut self) {
        self.generation += 1;
    }
}

impl App {
    /// One `chat.v1.json` frame.
    pub(super) fn server_frame(&mut self, frame: ServerFrame) -> Option<Command> {
        match frame {
            ServerFrame::Welcome(frame) => {
                self.welcome(frame.welcome);
                None
            }
            ServerFrame::Event(event) => self.room_event(event),
        }
    }

    fn welcome(&mut self, welcome: Welcome) {
        self.max_message_bytes = welcome.limits.max_message_bytes;
        if self.session.is_none() {
            self.session = Some(Session {
                nonce_seed: format!("{:06x}", fastrand::u32(..0xff_ffff)),
                ..Session::default()
            });
            // The member list may show now.
            self.fit_viewport();
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let room_changed = session.room != welcome.room;
        let first = session.epoch.is_empty() || room_changed;
        // What was on its way to the room left behind is not sent to this one.
        let abandoned: Vec<u64> = if room_changed {
            session
                .unconfirmed
                .drain(..)
                .map(|waiting| waiting.entry)
                .collect()
        } else {
            Vec::new()
        };
        session.room = welcome.room;
        let same_history = session.epoch == welcome.epoch && !room_changed;
        let new_history = !same_history;
        let missed = welcome.offset.saturating_sub(session.last_offset);
        if !same_history {
            session.last_offset = 0;
        }
        session.epoch = welcome.epoch;
        session.live_from = welcome.offset;
        session.verified = welcome.verified;
        session.divider = if first {
            Some("earlier messages".to_owned())
        } else if welcome.recovered && missed > 0 {
            let messages = if missed == 1 { "event" } else { "events" };
            Some(format!("{missed} {messages} while you were away"))
        } else {
            None
        };
        self.welcome_members(
            &welcome.members,
            welcome.count,
            welcome.more.unwrap_or(false),
        );
        if !first && !welcome.recovered {
            self.divider(if new_history {
                // A new epoch: the server restarted without its history (or lost it).
                "a gap: the server started again without its history; what was said before is gone"
            } else {
                "a gap: what was said while you were away could not all be recovered"
            });
        }
        for number in abandoned {
            self.mark_not_sent(number);
        }
        if new_history {
            // Offsets of another room or history name other messages.
            self.forget_conversation();
        }
        self.conversation.typing.clear();
        // This id's direct messages, to open beside (the list is asked of the first
        // chat.v2.json connection to be welcomed, then now and then: see `tick`).
        if self.protocol == Protocol::V2 && self.dms_asked.is_none() {
            self.dms_asked = Some((self.now)());
            self.tell(&chat::v2::Request::Dms { nonce: None });
        }
    }

    fn room_event(&mut self, event: RoomEvent) -> Option<Command> {
        let session = self.session.as_mut()?;
        if event.offset <= session.last_offset {
            // Shown before the reconnection.
            return None;
        }
        session.last_offset = event.offset;
        let logged = self
            .logged
            .entry((session.room.clone(), session.epoch.clone()))
            .or_insert(0);
        let log = event.offset > *logged;
        *logged = (*logged).max(event.offset);
        let history = event.offset <= session.live_from;
        if history && let Some(divider) = session.divider.take() {
            self.divider(&divider);
        }
        self.saw_offset(event.offset);
        if v2::target_of(&event.kind).is_none() {
            self.marker_before(event.offset);
        }
        let session = self.session.as_mut()?;
        let name = event.name.as_ref();
        match &event.kind {
            EventKind::Join { key, .. } | EventKind::Leave { key } => {
                let (joined, key) = (matches!(event.kind, EventKind::Join { .. }), *key);
                // A token's role comes with its holder's join.
                if let EventKind::Join { role, .. } = event.kind
                    && !role.is_member()
                {
                    let known = session.rules.roles.entry(event.id.clone()).or_default();
                    *known = (*known).max(role);
                }
                // A second connection of someone who is here (another window, or
                // a seat on a node that died and is reaped after its client came back
                // through another) neither enters nor leaves: as on IRC, people come
                // and go, not their connections.
                let comes_or_goes = history || session.one_presence(&event.id, name, key, joined);
                if !joined {
                    self.not_typing(&event.id);
                }
                let session = self.session.as_mut()?;
                let mine = event.id == self.id;
                // Our own join is the first live event; a later one of our id is
                // another connection's, which may go by another name.
                if mine && joined && event.offset == session.live_from + 1 {
                    session.my_name = event.name.clone();
                }
                let who = session.label_with_id(&event.id, name);
                let what = if joined {
                    "has entered the chat"
                } else {
                    "has left the chat"
                };
                let text = format!("{who} {what}");
                if log {
                    self.log_received(&text, Some(event.ts));
                }
                // The smart filter's noise: someone else who had not spoken lately.
                let quiet = !mine
                    && self
                        .session
                        .as_ref()?
                        .last_said
                        .get(&event.id)
                        .is_none_or(|said| {
                            event.ts.saturating_sub(*said) > super::SMART_FILTER_MINUTES * 60_000
                        });
                let kind = if quiet {
                    Kind::QuietPresence {
                        hidden: self.smart_filter,
                    }
                } else {
                    Kind::Presence
                };
                if comes_or_goes {
                    self.day_line(event.ts);
                    self.push(Entry {
                        time: (self.event_time)(event.ts),
                        text: sanitize(&text),
                        kind,
                    });
                }
                // Our own join is the first live event: what did not come back by
                // then may have been lost with the connection, and goes again.
                let live_join = mine && joined && !history;
                return live_join.then(|| self.resend()).flatten();
            }
            EventKind::Message {
                text,
                nonce,
                reply_to,
                kind,
                ..
            } => {
                let label = session.label(&event.id, name);
                let line = match kind {
                    Some(chat::v1::MessageKind::Action) => format!("* {label} {text}"),
                    None => format!("{label}: {text}"),
                };
                if log {
                    self.log_received(&line, Some(event.ts));
                }
                self.not_typing(&event.id);
                if let Some(session) = self.session.as_mut() {
                    match session.last_said.get_mut(&event.id) {
                        Some(said) => *said = event.ts,
                        None => {
                            session.last_said.insert(event.id.clone(), event.ts);
                        }
                    }
                }
                if let Some(nonce) = nonce
                    && let Some(entry) = self.confirm(nonce, event.ts)
                {
                    self.keep_said(&event, &label, entry);
                    return None;
                }
                self.day_line(event.ts);
                if let Some(parent) = reply_to {
                    let quote = self.quote_of(*parent);
                    self.push(quote);
                }
                let mine = event.id == self.id;
                let mentions_me = !mine && self.mentions_me(text);
                // Everything said to us in a direct-message room calls for us, as a
                // mention does (weechat's private buffers): counted with `!`, and rung.
                let calls_us =
                    mentions_me || (!mine && chat::v2::direct_members(&self.room).is_some());
                // New to this id: past the read position the server keeps (chat.v2.json),
                // or else said since the client came.
                let unread = if self.protocol == Protocol::V2 {
                    event.offset > self.conversation.read
                } else {
                    !history
                };
                if !mine && unread {
                    self.fresh.push((event.offset, calls_us));
                }
                let (shown, prefix) = messages::said_line(&label, &event.kind);
                let number = self.scrollback.next_number();
                self.push(Entry {
                    time: (self.event_time)(event.ts),
                    text: shown,
                    kind: Kind::Said {
                        id: event.id.clone(),
                        mine,
                        prefix,
                        mentions_me,
                        pending: false,
                    },
                });
                self.keep_said(&event, &label, number);
                let ring = calls_us && self.notify && !self.focused && !history;
                if ring {
                    return Some(Command::Notify(sanitize(&line).replace('\n', " ")));
                }
            }
            // chat.v2.json's operations, on the messages shown (a v1 server sends none:
            // it shows an edit as a message).
            EventKind::Edit { .. }
            | EventKind::Delete { .. }
            | EventKind::React { .. }
            | EventKind::Unreact { .. } => {
                if log && let Some(line) = self.operation_line(&event) {
                    self.log_received(&line, Some(event.ts));
                }
                self.operation(&event);
            }
            // Moderation (chat.v2.json): a line each, in the moderator's name.
            kind => {
                let what = moderation_words(kind, &|member| session.member_label(member))?;
                // The welcome's rules are the room's as of its offset: only what
                // follows changes them.
                if !history {
                    session.rules.follow(kind);
                    self.fit_viewport();
                }
                let session = self.session.as_ref()?;
                let text = format!("{} {what}", session.label_with_id(&event.id, name));
                if log {
                    self.log_received(&text, Some(event.ts));
                }
                self.day_line(event.ts);
                self.push(Entry {
                    time: (self.event_time)(event.ts),
                    text: sanitize(&text),
                    kind: Kind::Other,
                });
            }
        }
        None
    }

    /// Our messages waiting for a connection: those quitting would drop. (One sent on
    /// the connection there is now is sent; quitting closes that connection politely.)
    pub(super) fn messages_on_their_way(&self) -> usize {
        let connected = self.protocol > Protocol::Plain && self.link == Link::Connected;
        self.session.as_ref().map_or(0, |session| {
            session
                .unconfirmed
                .iter()
                .filter(|waiting| !(connected && waiting.sent_on == self.connections))
                .count()
        })
    }

    /// Marks the message sent with `nonce` as confirmed, if it is ours: the number of
    /// its entry.
    fn confirm(&mut self, nonce: &str, ts: u64) -> Option<u64> {
        let session = self.session.as_mut()?;
        let index = session
            .unconfirmed
            .iter()
            .position(|waiting| waiting.nonce == nonce)?;
        let waiting = session.unconfirmed.remove(index);
        let time = (self.event_time)(ts);
        if let Some(entry) = self.entry_mut(waiting.entry) {
            entry.time = time;
            if let Kind::Said { pending, .. } = &mut entry.kind {
                *pending = false;
            }
        }
        Some(waiting.entry)
    }

    /// Sends the messages a lost connection may have lost: those sent on an earlier
    /// connection (or not sent at all) that did not come back in the resumed history,
    /// each at most [`MOST_SENDS`] times in all.
    fn resend(&mut self) -> Option<Command> {
        let connection = self.connections;
        let session = self.session.as_mut()?;
        let mut frames = Vec::new();
        let mut given_up = Vec::new();
        session.unconfirmed.retain_mut(|waiting| {
            if waiting.sent_on == connection {
                return true;
            }
            if waiting.sends >= MOST_SENDS {
                given_up.push(waiting.entry);
                return false;
            }
            waiting.sends += 1;
            waiting.sent_on = connection;
            frames.push(waiting.frame.clone());
            true
        });
        for number in &given_up {
            self.mark_not_sent(*number);
        }
        if !given_up.is_empty() {
            self.notice(&format!(
                "{} of your messages never came back from the server, after two tries: marked \"not sent\"",
                given_up.len()
            ));
        }
        (!frames.is_empty()).then_some(Command::Resend(frames))
    }

    /// The line in the input, said over `chat.v1.json`: shown at once as on its way,
    /// sent now if connected, and otherwise as soon as the connection is back.
    pub(super) fn say_v1(&mut self, reply_to: Option<u64>, action: bool) -> Option<Command> {
        let escaped = usize::from(self.input.text().starts_with("//"));
        let text = self.input.text()[escaped..].to_owned();
        self.say_text(text, reply_to, action)
    }

    /// Says `text` (the input line is taken as sent), answering message `reply_to`, or
    /// as an action (`/me`).
    pub(super) fn say_text(
        &mut self,
        text: String,
        reply_to: Option<u64>,
        action: bool,
    ) -> Option<Command> {
        let id = self.id.clone();
        let session = self.session.as_mut()?;
        session.sent += 1;
        let nonce = format!("{id}-{}-{}", session.nonce_seed, session.sent);
        let frame = self.message_request(text.clone(), nonce.clone(), reply_to, action);
        let session = self.session.as_mut()?;
        if frame.len() > self.max_message_bytes {
            let limit = self.max_message_bytes;
            self.notice(&format!(
                "your message is {} bytes as sent and the server takes at most {limit}: it is kept, to shorten",
                frame.len()
            ));
            return None;
        }
        let label = session.label(&id, session.my_name.as_ref());
        let connected = self.protocol > Protocol::Plain && self.link == Link::Connected;
        let number = self.scrollback.next_number();
        session.unconfirmed.push(Unconfirmed {
            nonce,
            frame: frame.clone(),
            entry: number,
            sends: u8::from(connected),
            sent_on: if connected { self.connections } else { 0 },
        });
        let shape = EventKind::Message {
            text,
            nonce: None,
            reply_to,
            kind: action.then_some(chat::v1::MessageKind::Action),
            state: Default::default(),
        };
        let (line, prefix) = messages::said_line(&label, &shape);
        if let Some(parent) = reply_to {
            let quote = self.quote_of(parent);
            self.push(quote);
        }
        let number = self.scrollback.next_number();
        if let Some(waiting) = self
            .session
            .as_mut()
            .and_then(|session| session.unconfirmed.last_mut())
        {
            waiting.entry = number;
        }
        self.stopped_typing();
        self.push(Entry {
            time: "sending…".to_owned(),
            text: line,
            kind: Kind::Said {
                id,
                mine: true,
                prefix,
                mentions_me: false,
                pending: true,
            },
        });
        self.input.submit();
        self.scroll_to_bottom();
        if connected {
            Some(Command::Send(frame))
        } else if self.connected_before {
            self.notice("not connected: your message goes as soon as the connection is back");
            None
        } else {
            // A buffer just opened (`/msg ID TEXT`, or at start): not cut off, joining.
            self.notice("joining: your message goes once the room is joined");
            None
        }
    }

    /// Says `text` in the buffer on screen, which may have just been opened (`/msg ID
    /// TEXT`): shown at once as on its way, and sent now if connected, or else by the
    /// resend at its connection's own join, as a message said while offline is.
    pub(super) fn say_when_joined(&mut self, text: String) -> Option<Command> {
        if self.session.is_none() {
            // The session its welcome would make, for this room: the message waits in
            // it, and the welcome keeps it (the same room). It is shown under the name
            // this id has in the other rooms, as the welcome will say it.
            let (my_name, verified) = self.known_elsewhere().unwrap_or_default();
            self.session = Some(Session {
                nonce_seed: format!("{:06x}", fastrand::u32(..0xff_ffff)),
                room: self.room.to_string(),
                my_name,
                verified,
                ..Session::default()
            });
        }
        self.say_text(text, None, false)
    }

    /// Puts a `chat.v1.json` frame that could not be handed to the network back among
    /// those to send with the next connection; false if it is not one of ours.
    pub(super) fn requeue(&mut self, frame: &str) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        let Some(waiting) = session
            .unconfirmed
            .iter_mut()
            .find(|waiting| waiting.frame == frame)
        else {
            return false;
        };
        waiting.sends = waiting.sends.saturating_sub(1);
        waiting.sent_on = 0;
        true
    }

    /// `/who`: who is here, as a notice.
    pub(super) fn who(&mut self) {
        let Some(session) = &self.session else {
            self.notice(
                "/who needs a server that speaks chat.v1.json; this one does not say who is here",
            );
            return;
        };
        let roster = session.sorted_roster(&self.id);
        let count = session.here();
        let unlisted = match session.unlisted() {
            0 => String::new(),
            more => format!(" and {more} more"),
        };
        self.notice(&format!("{count} here: {}{unlisted}", roster.join(", ")));
    }

    /// Marks one of our messages as given up on: in its time column, "not sent".
    /// A message of ours the server refused (muted, slow mode, a read-only room): it
    /// is not sent, and not sent again after a reconnect. Returns whether `nonce` was
    /// one.
    pub(super) fn refused_message(&mut self, nonce: &str) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        let Some(at) = session
            .unconfirmed
            .iter()
            .position(|waiting| waiting.nonce == nonce)
        else {
            return false;
        };
        let refused = session.unconfirmed.remove(at);
        self.mark_not_sent(refused.entry);
        true
    }

    fn mark_not_sent(&mut self, number: u64) {
        if let Some(entry) = self.entry_mut(number) {
            entry.time = "not sent".to_owned();
        }
    }

    fn entry_mut(&mut self, number: u64) -> Option<&mut Entry> {
        self.scrollback.by_number_mut(number)
    }
}

/// What a moderation event says, after the moderator's name: "kicked Bo (#9) (spam)",
/// each member as `label` shows it.
fn moderation_words(kind: &EventKind, label: &dyn Fn(&str) -> String) -> Option<String> {
    let because = |reason: &Option<String>| {
        reason
            .as_deref()
            .filter(|reason| !reason.is_empty())
            .map_or(String::new(), |reason| format!(" ({reason})"))
    };
    let lasting = |seconds: &Option<u64>| match seconds {
        Some(seconds) => format!(" for {}", super::messages::duration_words(*seconds)),
        None => String::new(),
    };
    Some(match kind {
        EventKind::Kick { member, reason, .. } => {
            format!("removed {} from the room{}", label(member), because(reason))
        }
        EventKind::Ban {
            member,
            seconds,
            reason,
            ..
        } => format!(
            "banned {}{}{}",
            label(member),
            lasting(seconds),
            because(reason)
        ),
        EventKind::Unban { member, .. } => format!("lifted the ban of {}", label(member)),
        EventKind::Mute {
            member, seconds, ..
        } => format!("muted {}{}", label(member), lasting(seconds)),
        EventKind::Unmute { member, .. } => format!("let {} speak again", label(member)),
        EventKind::Topic { text, .. } if text.is_empty() => "cleared the topic".to_owned(),
        EventKind::Topic { text, .. } => format!("set the topic: {text}"),
        EventKind::Slow { seconds: 0, .. } => "ended slow mode".to_owned(),
        EventKind::Slow { seconds, .. } => format!(
            "set slow mode: one message per {} each",
            super::messages::duration_words(*seconds)
        ),
        EventKind::ReadOnly { on: true, .. } => {
            "made the room read-only: only moderators speak".to_owned()
        }
        EventKind::ReadOnly { on: false, .. } => "let everyone speak again".to_owned(),
        EventKind::Role { member, role, .. } => {
            format!("made {} {}", label(member), role_words(*role))
        }
        _ => return None,
    })
}

fn role_words(role: chat::v1::Role) -> &'static str {
    match role {
        chat::v1::Role::Member => "a member",
        chat::v1::Role::Moderator => "a moderator",
        chat::v1::Role::Owner => "an owner",
        chat::v1::Role::Admin => "an admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, NetEvent, Protocol};
    use chat::v1::{Limits, Present, Request, WelcomeFrame, WelcomeTag};
    use crossterm::event::{Event as TerminalEvent, KeyCode, KeyEvent};

    fn noon() -> String {
        "12:00:00".to_owned()
    }

    fn at(ts: u64) -> String {
        format!("t{ts}")
    }

    fn app() -> App {
        let mut app = App::new("ws://localhost:8000".into(), "42".into(), 1000, noon);
        app.event_time = at;
        app.update(Event::Terminal(TerminalEvent::Resize(80, 24)));
        app
    }

    #[test]
    fn roles_mark_the_member_list_and_the_topic_is_a_title_above_the_messages() {
        use crate::event::{Beside, RoomRules};
        let mut app = app();
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::V2,
        }));
        app.update(welcome(
            3,
            &[("1", Some("Ada")), ("9", None), ("42", None)],
            false,
        ));
        let rules = RoomRules {
            roles: [("1".to_owned(), Role::Owner)].into(),
            topic: Some("Launch \u{1b}[31mday".into()),
            ..RoomRules::default()
        };
        app.update(Event::Net(NetEvent::Beside(Beside::Rules(rules))));
        let roster = |app: &App| app.session.as_ref().unwrap().roster("42");
        assert_eq!(
            roster(&app),
            ["&~Ada (#1)", "Client #42 (you)", "Client #9"]
        );
        // Named in moderation lines as the member list names them.
        let session = app.session.as_ref().unwrap();
        assert_eq!(session.member_label("1"), "~Ada (#1)");
        assert_eq!(session.member_label("77"), "#77");
        // A moderator by its token: its join says so.
        let token_join = EventKind::Join {
            role: Role::Moderator,
            key: None,
        };
        app.update(event(4, "5", None, token_join));
        assert_eq!(
            roster(&app),
            ["&~Ada (#1)", "@Client #5", "Client #42 (you)", "Client #9"]
        );
        app.update(event(5, "5", None, EventKind::leave()));
        for offset in 6..=8 {
            app.update(event(offset, "9", None, EventKind::said("hi", None)));
        }
        app.update(event(
            9,
            "1",
            Some("Ada"),
            EventKind::Role {
                member: "9".into(),
                role: Role::Moderator,
                nonce: None,
            },
        ));
        app.update(event(
            10,
            "1",
            Some("Ada"),
            EventKind::Slow {
                seconds: 30,
                nonce: None,
            },
        ));
        assert_eq!(
            roster(&app),
            ["&~Ada (#1)", "@Client #9", "Client #42 (you)"]
        );
        let rows = |app: &App| {
            let backend = ratatui::backend::TestBackend::new(100, 6);
            let mut terminal = ratatui::Terminal::new(backend).unwrap();
            terminal
                .draw(|frame| crate::ui::render(app, frame))
                .unwrap();
            let buffer = terminal.backend().buffer().clone();
            (0..buffer.area.height)
                .map(|y| {
                    (0..buffer.area.width)
                        .map(|x| buffer[(x, y)].symbol().to_owned())
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        };
        app.update(Event::Terminal(TerminalEvent::Resize(100, 6)));
        let shown = rows(&app);
        assert!(
            shown[0].starts_with(" #main slow mode: one message per 30 s · Launch ␛[31mday"),
            "{shown:?}"
        );
        // The last event is on screen below the title, not under it.
        assert!(shown[3].contains("set slow mode"), "{shown:?}");
        for kind in [
            EventKind::Topic {
                text: String::new(),
                nonce: None,
            },
            EventKind::Slow {
                seconds: 0,
                nonce: None,
            },
            EventKind::Role {
                member: "9".into(),
                role: Role::Member,
                nonce: None,
            },
        ] {
            let offset = app.session.as_ref().unwrap().last_offset + 1;
            app.update(event(offset, "1", Some("Ada"), kind));
        }
        assert_eq!(app.title(), None);
        assert!(!rows(&app)[0].starts_with(" #main"), "no title row now");
        assert_eq!(
            roster(&app),
            ["&~Ada (#1)", "Client #42 (you)", "Client #9"]
        );
    }

    fn welcome(offset: u64, members: &[(&str, Option<&str>)], recovered: bool) -> Event {
        let welcome = Welcome {
            id: "42".into(),
            room: "main".into(),
            epoch: "e1".into(),
            offset,
            members: members
                .iter()
                .map(|(id, name)| Present {
                    id: (*id).into(),
                    name: name.map(|name| DisplayName::parse(name).unwrap()),
                    since: 1,
                    role: Default::default(),
                    key: None,
                })
                .collect(),
            count: None,
            more: None,
            recovered,
            verified: false,
            limits: Limits {
                max_message_bytes: 1000,
                max_nonce_chars: 64,
                history: 100,
            },
        };
        Event::Net(NetEvent::Frame(ServerFrame::Welcome(WelcomeFrame {
            kind: WelcomeTag::Welcome,
            welcome,
        })))
    }

    fn event(offset: u64, id: &str, name: Option<&str>, kind: EventKind) -> Event {
        Event::Net(NetEvent::Frame(ServerFrame::Event(RoomEvent {
            offset,
            ts: offset * 1000,
            id: id.into(),
            name: name.map(|name| DisplayName::parse(name).unwrap()),
            kind,
        })))
    }

    fn said(text: &str, nonce: Option<&str>) -> EventKind {
        EventKind::said(text, nonce.map(str::to_owned))
    }

    fn connected(app: &mut App) {
        app.update(Event::Net(NetEvent::Connecting));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::V1,
        }));
    }

    fn lines(app: &App) -> Vec<String> {
        app.scrollback
            .iter()
            .map(|entry| format!("{} {}", entry.time, entry.text))
            .collect()
    }

    fn type_and_send(app: &mut App, text: &str) -> Option<Command> {
        app.update(Event::Terminal(TerminalEvent::Paste(text.into())));
        app.update(Event::Terminal(TerminalEvent::Key(KeyEvent::from(
            KeyCode::Enter,
        ))))
    }

    #[test]
    fn the_history_comes_under_a_divider_with_its_own_times_and_claimed_names_marked() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(2, &[("7", Some("Grace"))], false));
        app.update(event(1, "7", Some("Grace"), EventKind::join()));
        app.update(event(2, "7", Some("Grace"), said("before you came", None)));
        app.update(event(3, "42", None, EventKind::join()));
        assert_eq!(
            lines(&app),
            [
                " ── earlier messages ──",
                "t1000 ~Grace (#7) has entered the chat",
                "t2000 ~Grace: before you came",
                "t3000 Client #42 has entered the chat",
            ]
        );
        assert!(matches!(
            app.scrollback[2].kind,
            Kind::Said {
                prefix: 7,
                mine: false,
                ..
            }
        ));
        app.update(event(
            4,
            "7",
            Some("Grace"),
            said("hi 42 and grace fans", None),
        ));
        assert!(matches!(
            app.scrollback[4].kind,
            Kind::Said {
                mentions_me: true,
                ..
            }
        ));
    }

    #[test]
    fn a_message_is_shown_at_once_as_on_its_way_and_confirmed_by_its_echo_once() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", None, EventKind::join()));
        let Some(Command::Send(frame)) = type_and_send(&mut app, "hello") else {
            panic!("sent");
        };
        let Ok(Request::Message { text, nonce }) = Request::parse(&frame) else {
            panic!("{frame}");
        };
        assert_eq!(text, "hello");
        assert_eq!(lines(&app).last().unwrap(), "sending… Client #42: hello");
        assert!(matches!(
            app.scrollback.back().unwrap().kind,
            Kind::Said { pending: true, .. }
        ));
        app.update(event(2, "42", None, said("hello", nonce.as_deref())));
        assert_eq!(lines(&app).last().unwrap(), "t2000 Client #42: hello");
        assert!(matches!(
            app.scrollback.back().unwrap().kind,
            Kind::Said { pending: false, .. }
        ));
        assert_eq!(app.scrollback.len(), 2, "shown once");
    }

    #[test]
    fn a_message_the_server_refused_is_not_sent_and_not_sent_again() {
        use crate::event::Beside;
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", None, EventKind::join()));
        let Some(Command::Send(frame)) = type_and_send(&mut app, "let me speak") else {
            panic!("sent");
        };
        let Ok(Request::Message { nonce, .. }) = Request::parse(&frame) else {
            panic!("{frame}");
        };
        app.update(Event::Net(NetEvent::Beside(Beside::Refused {
            nonce,
            code: chat::v2::ErrorCode::Muted,
            message: "you are muted in this room: you can read, not send".into(),
        })));
        let shown = lines(&app);
        assert!(
            shown
                .iter()
                .any(|line| line == "not sent Client #42: let me speak"),
            "{shown:?}"
        );
        assert!(shown.last().unwrap().contains("you are muted"), "{shown:?}");
        // The next connection does not send it again.
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "connection reset".into(),
        }));
        connected(&mut app);
        app.update(welcome(1, &[], true));
        assert_eq!(app.update(event(2, "42", None, EventKind::join())), None);
    }

    #[test]
    fn after_a_reconnect_what_was_missed_comes_under_a_line_and_what_was_lost_goes_once_more() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", None, EventKind::join()));
        let Some(Command::Send(lost)) = type_and_send(&mut app, "lost with the connection") else {
            panic!("sent");
        };
        // The connection goes before the echo; offline, the next one waits.
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "connection reset".into(),
        }));
        app.update(Event::Net(NetEvent::Retrying { seconds: 1 }));
        assert_eq!(type_and_send(&mut app, "typed while away"), None);
        assert!(
            lines(&app)
                .last()
                .unwrap()
                .contains("as soon as the connection is back")
        );

        connected(&mut app);
        app.update(welcome(3, &[("7", None)], true));
        app.update(event(2, "42", None, EventKind::leave()));
        app.update(event(3, "7", None, said("while you were away", None)));
        let resent = app.update(event(4, "42", None, EventKind::join()));
        let Some(Command::Resend(frames)) = resent else {
            panic!("{resent:?}");
        };
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[0], lost,
            "the same nonce: the server's history can tell"
        );
        assert!(frames[1].contains("typed while away"));
        let shown = lines(&app);
        let divider = shown
            .iter()
            .position(|line| line == " ── 2 events while you were away ──")
            .expect("a divider");
        assert_eq!(shown[divider + 2], "t3000 Client #7: while you were away");

        // Another reconnect before the echoes: each goes once more at most.
        connected(&mut app);
        app.update(welcome(4, &[("7", None)], true));
        let again = app.update(event(5, "42", None, EventKind::join()));
        let Some(Command::Resend(frames)) = again else {
            panic!("{again:?}");
        };
        assert_eq!(frames.len(), 1, "only the one sent once so far");
        connected(&mut app);
        app.update(welcome(5, &[("7", None)], true));
        assert_eq!(app.update(event(6, "42", None, EventKind::join())), None);
        assert!(lines(&app).iter().any(|line| line.starts_with("not sent")));
    }

    #[test]
    fn a_message_sent_just_before_join_is_confirmed_in_its_own_buffer() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", None, EventKind::join()));
        let Some(Command::Send(frame)) = type_and_send(&mut app, "last words") else {
            panic!("sent");
        };
        let Ok(Request::Message { nonce, .. }) = Request::parse(&frame) else {
            panic!("{frame}");
        };
        // /join opens a buffer beside this one: nothing is left, nothing is lost.
        let other = chat::v1::RoomName::parse("other").unwrap();
        assert_eq!(
            type_and_send(&mut app, "/join other"),
            Some(Command::Open {
                buffer: 1,
                room: other.clone()
            })
        );
        assert_eq!(app.room, other);
        // The echo comes on the first buffer's connection, while it is not on screen.
        let Event::Net(echo) = event(2, "42", None, said("last words", nonce.as_deref())) else {
            unreachable!()
        };
        assert_eq!(app.update(Event::Room(0, echo)), None);
        assert_eq!(app.routed(), 0);
        assert_eq!(type_and_send(&mut app, "/join main"), None, "shown again");
        assert_eq!(app.room.as_str(), "main");
        let shown = lines(&app);
        assert!(
            shown.contains(&"t2000 Client #42: last words".to_owned()),
            "{shown:?}"
        );
        assert!(
            !shown.iter().any(|line| line.contains("not sent")),
            "{shown:?}"
        );
    }

    #[test]
    fn a_line_says_when_the_day_changes_between_two_messages() {
        let mut app = app();
        // A day of ten minutes, for the test.
        let minute = 60_000;
        app.event_day = |ts| format!("day {}", ts / 600_000);
        app.event_time = |ts| format!("m{}", ts / 60_000);
        connected(&mut app);
        app.update(welcome(0, &[], false));
        let at = |minutes: u64, id: &str, kind: EventKind| {
            Event::Net(NetEvent::Frame(ServerFrame::Event(RoomEvent {
                offset: minutes + 1,
                ts: minutes * minute,
                id: id.into(),
                name: None,
                kind,
            })))
        };
        app.update(at(1, "7", EventKind::join()));
        app.update(at(2, "7", said("late", None)));
        app.update(at(9, "7", said("later", None)));
        app.update(at(10, "7", said("next morning", None)));
        app.update(at(11, "7", EventKind::leave()));
        app.update(at(25, "7", EventKind::join()));
        assert_eq!(
            lines(&app),
            [
                "m1 Client #7 has entered the chat",
                "m2 Client #7: late",
                "m9 Client #7: later",
                " ── day 1 ──",
                "m10 Client #7: next morning",
                "m11 Client #7 has left the chat",
                " ── day 2 ──",
                "m25 Client #7 has entered the chat",
            ]
        );
    }

    #[test]
    fn the_smart_filter_hides_the_comings_and_goings_of_the_quiet() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        let minute = 60_000;
        let at = |ts: u64, id: &str, kind: EventKind| {
            Event::Net(NetEvent::Frame(ServerFrame::Event(RoomEvent {
                offset: ts / 1000,
                ts,
                id: id.into(),
                name: None,
                kind,
            })))
        };
        app.update(at(minute, "42", EventKind::join()));
        app.update(at(2 * minute, "7", EventKind::join()));
        app.update(at(3 * minute, "8", EventKind::join()));
        app.update(at(4 * minute, "7", said("hi", None)));
        app.update(at(5 * minute, "7", EventKind::leave()));
        app.update(at(6 * minute, "8", EventKind::leave()));
        app.update(at(20 * minute, "7", EventKind::join()));
        let shown = |app: &App| -> Vec<String> {
            app.scrollback
                .iter()
                .filter(|entry| !entry.rows(80).is_empty())
                .map(|entry| entry.text.clone())
                .collect()
        };
        let everything = shown(&app);
        assert_eq!(everything.len(), 7, "{everything:?}");
        app.update(Event::Terminal(TerminalEvent::Key(KeyEvent::new(
            KeyCode::Char('j'),
            crossterm::event::KeyModifiers::ALT,
        ))));
        assert!(app.smart_filter);
        let filtered = shown(&app);
        assert_eq!(
            &filtered[..4],
            [
                "Client #42 has entered the chat",
                "Client #7: hi",
                "Client #7 has left the chat",
                "* joins and leaves of people who had not spoken in 10 minutes: hidden (Alt-J)",
            ],
            "ours, and 7 leaving a minute after speaking; not 8, nor 7 back 15 minutes later"
        );
        assert_eq!(filtered.len(), 4, "{filtered:?}");
        app.set_smart_filter(false);
        assert_eq!(shown(&app).len(), 8);
    }

    /// A user review: the first `/msg` to a new DM showed as `Client #2: …` with "not
    /// connected", although the buffer was only joining and the id had a name.
    #[test]
    fn msg_to_a_new_dm_shows_the_text_under_this_ids_name_while_joining() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", Some("Ada"), EventKind::join()));
        type_and_send(&mut app, "/msg 7 are you there?");
        let shown = lines(&app);
        assert!(
            shown.contains(&"sending… ~Ada: are you there?".to_owned()),
            "{shown:?}"
        );
        assert!(
            !shown.iter().any(|line| line.contains("not connected")),
            "{shown:?}"
        );
    }

    #[test]
    fn msg_opens_the_direct_messages_and_sends_the_text_once_joined() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", None, EventKind::join()));
        let dm = chat::v1::RoomName::parse("dm.7.42").unwrap();
        assert_eq!(
            type_and_send(&mut app, "/msg 7 are you there?"),
            Some(Command::Open {
                buffer: 1,
                room: dm.clone()
            })
        );
        assert_eq!(app.room, dm);
        assert!(app.input.is_empty(), "said, not left in the line");
        assert!(
            lines(&app).contains(&"sending… Client #42: are you there?".to_owned()),
            "{:?}",
            lines(&app)
        );
        // The buffer's connection joins: the message goes, once.
        let news = |event: Event| match event {
            Event::Net(news) => Event::Room(1, news),
            other => other,
        };
        app.update(news(Event::Net(NetEvent::Connected {
            protocol: Protocol::V1,
        })));
        let Event::Net(NetEvent::Frame(ServerFrame::Welcome(mut frame))) = welcome(0, &[], false)
        else {
            unreachable!()
        };
        frame.welcome.room = "dm.7.42".into();
        app.update(Event::Room(1, NetEvent::Frame(ServerFrame::Welcome(frame))));
        let Some(Command::Resend(frames)) =
            app.update(news(event(1, "42", None, EventKind::join())))
        else {
            panic!("sent at the join");
        };
        assert_eq!(frames.len(), 1);
        let Ok(Request::Message { text, nonce, .. }) = Request::parse(&frames[0]) else {
            panic!("{frames:?}");
        };
        assert_eq!(text, "are you there?");
        app.update(news(event(2, "42", None, said(&text, nonce.as_deref()))));
        assert!(
            lines(&app).contains(&"t2000 Client #42: are you there?".to_owned()),
            "confirmed: {:?}",
            lines(&app)
        );
        // Open already and connected: sent at once.
        assert_eq!(type_and_send(&mut app, "/join main"), None);
        let Some(Command::Send(frame)) = type_and_send(&mut app, "/msg 7 again") else {
            panic!("sent at once");
        };
        assert!(frame.contains("again"), "{frame}");
        assert_eq!((app.room.as_str(), app.routed()), ("dm.7.42", 1));
    }

    #[test]
    fn the_log_gets_each_event_once_with_its_own_time_and_room() {
        let mut app = app();
        app.keep_received();
        for _ in 0..2 {
            // The same history on each connection, as after a reconnect or a /join back.
            connected(&mut app);
            app.update(welcome(2, &[], false));
            app.update(event(1, "7", None, EventKind::join()));
            app.update(event(2, "7", None, said("hi", None)));
        }
        let received = app.take_received();
        assert_eq!(received.len(), 2, "{received:?}");
        assert_eq!(received[1].millis, Some(2000));
        assert_eq!(received[1].room, "main");
        let now = chrono::Local::now();
        let said_at = chrono::DateTime::from_timestamp_millis(2000)
            .unwrap()
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S");
        assert_eq!(
            received[1].line(now),
            format!("{said_at} #main Client #7: hi")
        );
    }

    #[test]
    fn quitting_asks_first_only_for_messages_waiting_for_a_connection() {
        let ctrl_c = Event::Terminal(TerminalEvent::Key(KeyEvent::new(
            KeyCode::Char('c'),
            crossterm::event::KeyModifiers::CONTROL,
        )));
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        type_and_send(&mut app, "on the wire");
        assert_eq!(
            app.update(ctrl_c.clone()),
            Some(Command::Quit),
            "sent on this connection"
        );

        let mut app = app_offline_with_a_message();
        assert_eq!(app.update(ctrl_c.clone()), None);
        assert!(
            lines(&app)
                .last()
                .unwrap()
                .contains("1 message not sent yet: Ctrl-C again to quit and drop it")
        );
        assert_eq!(app.update(ctrl_c), Some(Command::Quit));
    }

    fn app_offline_with_a_message() -> App {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(Event::Net(NetEvent::Disconnected {
            reason: "connection reset".into(),
        }));
        app.update(Event::Net(NetEvent::Retrying { seconds: 1 }));
        assert_eq!(type_and_send(&mut app, "waiting"), None);
        app
    }

    #[test]
    fn a_gap_is_said_when_the_room_no_longer_has_what_was_missed() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", None, EventKind::join()));
        connected(&mut app);
        app.update(welcome(10, &[], false));
        assert!(
            lines(&app)
                .last()
                .unwrap()
                .contains("a gap: what was said while you were away could not all be recovered")
        );
    }

    #[test]
    fn moderators_commands_are_requests_and_their_events_are_lines() {
        let mut app = app();
        app.update(Event::Net(NetEvent::Connecting));
        app.update(Event::Net(NetEvent::Connected {
            protocol: Protocol::V2,
        }));
        app.update(welcome(0, &[], false));
        app.take_frames();
        let send = |app: &mut App, typed: &str| {
            app.update(Event::Terminal(crossterm::event::Event::Paste(
                typed.to_owned(),
            )));
            app.update(Event::Terminal(crossterm::event::Event::Key(
                KeyEvent::from(KeyCode::Enter),
            )));
            app.take_frames()
        };
        for (typed, sent) in [
            (
                "/kick 9 calm down",
                r#"{"type":"kick","member":"9","reason":"calm down"}"#,
            ),
            (
                "/ban 9 2h spam links",
                r#"{"type":"ban","member":"9","seconds":7200,"reason":"spam links"}"#,
            ),
            ("/ban 09", r#"{"type":"ban","member":"9"}"#),
            (
                "/mute 9 10m",
                r#"{"type":"mute","member":"9","seconds":600}"#,
            ),
            ("/unmute 9", r#"{"type":"unmute","member":"9"}"#),
            ("/unban 9", r#"{"type":"unban","member":"9"}"#),
            (
                "/topic Release day",
                r#"{"type":"topic","text":"Release day"}"#,
            ),
            ("/slow 30s", r#"{"type":"slow","seconds":30}"#),
            ("/slow off", r#"{"type":"slow","seconds":0}"#),
            (
                "/op 9",
                r#"{"type":"role","member":"9","role":"moderator"}"#,
            ),
            ("/deop 9", r#"{"type":"role","member":"9","role":"member"}"#),
            (
                "/ban #9 10 minutes flooding",
                r#"{"type":"ban","member":"9","seconds":600,"reason":"flooding"}"#,
            ),
            (
                "/mute 9 2w",
                r#"{"type":"mute","member":"9","seconds":1209600}"#,
            ),
            ("/kick #9", r#"{"type":"kick","member":"9"}"#),
        ] {
            assert_eq!(send(&mut app, typed), [sent.to_owned()], "{typed}");
            assert!(app.input.is_empty(), "{typed}");
        }
        assert!(send(&mut app, "/kick somebody").is_empty());
        assert!(
            lines(&app)
                .last()
                .unwrap()
                .contains("/kick needs the id of whom it is for: /kick 9 spamming")
        );
        assert_eq!(app.input.text(), "/kick somebody", "kept, to fix");
        // A duration that is not one is said, not taken for a reason or for "forever".
        for (typed, says) in [
            ("/ban 9 1y spam", "1y is not a duration"),
            ("/ban 9 1h30m", "1h30m is not a duration"),
            ("/mute 9 0s", "0s is not a duration"),
            ("/mute 9 10m extra words", "/mute takes no reason"),
        ] {
            app.input.clear();
            assert!(send(&mut app, typed).is_empty(), "{typed}");
            let shown = lines(&app);
            assert!(shown.last().unwrap().contains(says), "{typed}: {shown:?}");
            assert_eq!(app.input.text(), typed, "kept, to fix");
        }
        app.input.clear();

        let moderated = |offset, kind| {
            Event::Net(NetEvent::Frame(ServerFrame::Event(RoomEvent {
                offset,
                ts: 1,
                id: "1".into(),
                name: None,
                kind,
            })))
        };
        app.update(moderated(
            1,
            EventKind::Ban {
                member: "9".into(),
                seconds: Some(7200),
                reason: Some("spam".into()),
                nonce: None,
            },
        ));
        app.update(moderated(
            2,
            EventKind::Topic {
                text: "Release day".into(),
                nonce: None,
            },
        ));
        let shown = lines(&app);
        assert!(
            shown
                .iter()
                .any(|line| line.ends_with("Client #1 banned #9 for 2 h (spam)")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|line| line.ends_with("Client #1 set the topic: Release day")),
            "{shown:?}"
        );
    }

    #[test]
    fn a_server_that_started_again_without_its_history_is_said_as_such() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(0, &[], false));
        app.update(event(1, "42", None, EventKind::join()));
        connected(&mut app);
        let Event::Net(NetEvent::Frame(ServerFrame::Welcome(mut restarted))) =
            welcome(1, &[], false)
        else {
            unreachable!("a welcome")
        };
        restarted.welcome.epoch = "e2".into();
        app.update(Event::Net(NetEvent::Frame(ServerFrame::Welcome(restarted))));
        let shown = lines(&app);
        assert!(
            shown.iter().any(|line| line.contains(
                "a gap: the server started again without its history; what was said before is gone"
            )),
            "{shown:?}"
        );
    }

    #[test]
    fn another_connection_of_someone_here_neither_enters_nor_leaves() {
        let mut app = app();
        connected(&mut app);
        // Back through another node while the dead one's seat is still listed.
        app.update(welcome(5, &[("42", None), ("7", None)], false));
        let before = app.scrollback.len();
        app.update(event(6, "42", None, EventKind::join()));
        app.update(event(7, "7", None, EventKind::join()));
        app.update(event(8, "42", None, EventKind::leave()));
        app.update(event(9, "7", None, EventKind::leave()));
        assert_eq!(app.scrollback.len(), before, "{:?}", lines(&app));
        app.update(event(10, "7", None, EventKind::leave()));
        app.update(event(11, "9", None, EventKind::join()));
        assert_eq!(
            lines(&app)[before..],
            [
                "t10000 Client #7 has left the chat",
                "t11000 Client #9 has entered the chat"
            ]
        );
    }

    #[test]
    fn an_id_on_two_connections_goes_by_the_name_of_the_one_that_stays() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(2, &[("7", Some("Ann")), ("9", None)], false));
        let with_ref = |key, joined| match joined {
            true => EventKind::Join {
                role: Role::Member,
                key: Some(key),
            },
            false => EventKind::Leave { key: Some(key) },
        };
        // Below, each with its handle: Bob comes on 7's second connection, and goes.
        app.update(event(3, "7", Some("Bob"), with_ref(10, true)));
        let name = |app: &App| app.session.as_ref().unwrap().member_label("7");
        assert_eq!(name(&app), "~Bob (#7)");
        app.update(event(4, "7", Some("Bob"), with_ref(10, false)));
        assert_eq!(
            name(&app),
            "~Ann (#7)",
            "the connection that stays is Ann's"
        );
        // Listed without a handle: the leave's name says which one went.
        app.update(event(5, "9", Some("Cy"), with_ref(11, true)));
        app.update(event(6, "9", Some("Cy"), with_ref(11, false)));
        assert_eq!(app.session.as_ref().unwrap().member_label("9"), "#9");
        app.update(event(7, "7", Some("Dee"), EventKind::join()));
        app.update(event(8, "7", Some("Ann"), EventKind::leave()));
        assert_eq!(name(&app), "~Dee (#7)");
        // Another connection of our own id is not us: our name is our own join's.
        app.update(event(9, "42", Some("Eve"), EventKind::join()));
        assert_eq!(app.session.as_ref().unwrap().my_name, None);
    }

    #[test]
    fn who_is_here_follows_the_welcome_the_joins_and_the_leaves() {
        let mut app = app();
        connected(&mut app);
        app.update(welcome(
            2,
            &[("7", Some("Grace")), ("7", Some("Grace")), ("9", None)],
            false,
        ));
        app.update(event(3, "42", Some("Ada"), EventKind::join()));
        app.update(event(4, "9", None, EventKind::leave()));
        app.update(event(5, "7", Some("Grace"), EventKind::leave()));
        app.update(Event::Terminal(TerminalEvent::Paste("/who".into())));
        app.update(Event::Terminal(TerminalEvent::Key(KeyEvent::from(
            KeyCode::Enter,
        ))));
        assert_eq!(
            app.scrollback.back().unwrap().text,
            "* 2 here: ~Ada (#42) (you), ~Grace (#7)",
            "Grace had two connections and closed one"
        );
        app.update(Event::Terminal(TerminalEvent::Key(KeyEvent::from(
            KeyCode::F(2),
        ))));
        assert!(app.show_members);
    }
}
