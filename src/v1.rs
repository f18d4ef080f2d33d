//! `chat.v1.json`, the richer protocol a client asks for with `Sec-WebSocket-Protocol`:
//! every server frame is one JSON object, events carry dense offsets, and a client can
//! resume where it left off. See docs/PROTOCOL.md for transcripts.
//!
//! Also here, because both protocols use them: room names, and the names people go by.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The subprotocol name a client asks for and the server selects.
pub const SUBPROTOCOL: &str = "chat.v1.json";

/// The most characters a message's nonce may have.
pub const MAX_NONCE_CHARS: usize = 64;

/// The most bytes a room name may have.
pub const MAX_ROOM_BYTES: usize = 64;

/// The most bytes the JSON of an event about a text of `text_bytes` can take, in v1 or
/// v2: every byte of the text escaped (a control character is `\u0001`, six bytes), and
/// room to spare for the id, the name, the nonce and the other fields, each at its
/// bound and escaped.
pub fn longest_event(text_bytes: usize) -> usize {
    /// The id, the name and the nonce at their bounds, escaped, and the field names
    /// and numbers: measured at under 1 KiB, rounded up.
    const FIELDS: usize = 2048;
    6 * text_bytes + FIELDS
}

/// What a valid room name looks like, for error messages shown to people.
pub const ROOM_RULES: &str =
    "a room name is 1 to 64 characters, each a letter (A-Z, a-z), a digit, '.', '_' or '-'";

/// A room's name. The default room, the one the tutorial's clients are in, is
/// [`RoomName::default`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

/// Why a string is not a room name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoom {
    #[error("the room name is empty")]
    Empty,
    #[error("the room name has more than {MAX_ROOM_BYTES} characters")]
    TooLong,
    #[error("the room name has a character other than A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
}

impl RoomName {
    /// The default room's name.
    pub const DEFAULT: &str = "main";

    pub fn parse(text: &str) -> Result<Self, InvalidRoom> {
        if text.is_empty() {
            return Err(InvalidRoom::Empty);
        }
        if text.len() > MAX_ROOM_BYTES {
            return Err(InvalidRoom::TooLong);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(InvalidRoom::BadCharacter);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The most characters a display name may have.
pub const MAX_NAME_CHARS: usize = 32;

/// What a valid display name looks like, for error messages shown to people.
pub const NAME_RULES: &str = "a name is 1 to 32 printable characters (spaces inside are fine; \
     no control characters, no line breaks, no invisible direction marks) and no '#', \
     which marks ids";

/// The name a client goes by, shown beside its id: from `?name=`, or from a signed
/// token's `name` claim. Spaces at either end are trimmed; anything that could not be
/// seen for what it is (control characters, line breaks, bidirectional controls and
/// other invisible format characters) is refused rather than shown.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

/// Why a string is not a display name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("the name is empty")]
    Empty,
    #[error("the name has more than {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("the name has an unprintable character, U+{0:04X}")]
    Unprintable(u32),
    #[error("the name has a '#' (or one like it), which marks ids: \"Client #7\", \"Ada (#7)\"")]
    LooksLikeAnId,
}

impl DisplayName {
    pub fn parse(text: &str) -> Result<Self, InvalidName> {
        let text = text.trim();
        if text.is_empty() {
            return Err(InvalidName::Empty);
        }
        if text.chars().count() > MAX_NAME_CHARS {
            return Err(InvalidName::TooLong);
        }
        // An id is shown as `Client #7` or `Ada (#7)`: a name with a `#` (or a
        // look-alike) could pass for another client's id, the operator's `Client #0`.
        if text.contains(['#', '\u{FF03}', '\u{FE5F}']) {
            return Err(InvalidName::LooksLikeAnId);
        }
        let chars: Vec<char> = text.chars().collect();
        for (at, &c) in chars.iter().enumerate() {
            let joins_symbols = c == ZERO_WIDTH_JOINER
                && at > 0
                && chars
                    .get(at + 1)
                    .is_some_and(|&next| is_symbol(chars[at - 1]) && is_symbol(next));
            if !is_printable(c) && !joins_symbols {
                return Err(InvalidName::Unprintable(c.into()));
            }
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const ZERO_WIDTH_JOINER: char = '\u{200D}';

/// Whether `c` shows as itself: not a control character, not a line or paragraph
/// separator, and not one of the invisible characters that reorder, hide or fake
/// text around them (bidi controls, zero-width joiners and spaces, the BOM, tag
/// characters, the Hangul fillers and the braille blank that draw as blanks, the
/// Arabic marks that prefix a number, the Khmer inherent vowels, and the Egyptian,
/// shorthand and musical format controls).
pub(crate) fn is_printable(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{0600}'..='\u{0605}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
        ))
}

/// Whether `c` is a visible symbol outside ASCII, such as an emoji or a skin tone or
/// variation selector after one: a zero-width joiner between two of these draws one
/// emoji (👩‍💻), where between letters it would hide itself ("Ad\u{200D}a" for "Ada").
pub(crate) fn is_symbol(c: char) -> bool {
    !c.is_ascii() && !c.is_alphanumeric() && !c.is_whitespace() && is_printable(c)
}

impl TryFrom<String> for DisplayName {
    type Error = InvalidName;

    fn try_from(text: String) -> Result<Self, InvalidName> {
        Self::parse(&text)
    }
}

impl From<DisplayName> for String {
    fn from(name: DisplayName) -> Self {
        name.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for RoomName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event in a room, as a v1 client receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Grows by exactly 1 per event in the room.
    pub offset: u64,
    /// The server's time, in Unix milliseconds.
    pub ts: u64,
    /// The canonical id of the client the event is about.
    pub id: String,
    /// The name that client goes by, if it gave one (or its token did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Join {
        /// The role the member's token (or the operator's `--admin`) gives it in the
        /// room, when above member's: so that every node and every client knows it.
        #[serde(default, skip_serializing_if = "Role::is_member")]
        role: Role,
        /// chat.v2.json, on a single node: the member's handle while it is in the
        /// room (see [`Present::key`]), so that a member list kept by handle takes
        /// out the connection that left, not another of the same id.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        key: Option<u64>,
    },
    Leave {
        /// As a join's.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        key: Option<u64>,
    },
    Message {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// chat.v2.json: the offset of the message this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
        /// chat.v2.json: an action (`/me waves`) rather than something said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<MessageKind>,
        /// The latest state, as history shows it: edits applied, a delete turned into a
        /// tombstone, reactions gathered. All unset in the live event.
        #[serde(flatten)]
        state: MessageState,
    },
    /// chat.v2.json: the author's new text for message `target`.
    Edit {
        target: u64,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// Set in history once the message it edits is deleted, its text gone too.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    },
    /// chat.v2.json: the author (or, with `moderated`, a moderator) takes message
    /// `target` back.
    Delete {
        target: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// Set when a moderator deleted the message, which may be another's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        moderated: bool,
    },
    /// chat.v2.json: `id` reacts to message `target` with `emoji`.
    React {
        target: u64,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: `id` takes its reaction back.
    Unreact {
        target: u64,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: `id`, a moderator, closed `member`'s connections to the room.
    Kick {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: `member` may not join the room for `seconds` (none: until
    /// unbanned); its connections are closed.
    Ban {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: `member`'s ban is lifted.
    Unban {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: `member` may read but not send for `seconds` (none: until
    /// unmuted).
    Mute {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: `member` may send again.
    Unmute {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: the room's topic is now `text` (empty: none).
    Topic {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: members may send one message per `seconds` (0: no limit).
    Slow {
        seconds: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: only moderators may speak (`on`), or everyone again.
    ReadOnly {
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// chat.v2.json: `member`'s role in the room is now `role`.
    Role {
        member: String,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
}

/// What a client may do in a room, lowest first: each role may do what the roles
/// below it may. `admin` is server-wide; the others are per room.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and speaks.
    #[default]
    Member,
    /// Kicks, bans, mutes, deletes any message, sets the topic and slow mode.
    Moderator,
    /// What a moderator does, and names moderators.
    Owner,
    /// An owner of every room.
    Admin,
}

impl Role {
    /// Whether it is a member's, the least.
    pub fn is_member(&self) -> bool {
        *self == Self::Member
    }

    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Moderator => "moderator",
            Self::Owner => "owner",
            Self::Admin => "admin",
        }
    }
}

impl EventKind {
    /// Whether the event is a moderation event: a v2 client's only, never shown to a
    /// v1 or plain one.
    pub fn is_moderation(&self) -> bool {
        matches!(
            self,
            Self::Kick { .. }
                | Self::Ban { .. }
                | Self::Unban { .. }
                | Self::Mute { .. }
                | Self::Unmute { .. }
                | Self::Topic { .. }
                | Self::Slow { .. }
                | Self::ReadOnly { .. }
                | Self::Role { .. }
        )
    }
}

/// What kind of message: said, or (with `kind: "action"`) done, as IRC's `/me`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Action,
}

/// A message's state after the operations on it, as history and pages show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    /// Its text was replaced by an edit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// Its author deleted it: a tombstone, with no text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Reactions, each emoji once with who reacted, in the order they first came.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
}

/// One emoji on a message, and the ids that reacted with it, first first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub ids: Vec<String>,
}

impl EventKind {
    /// A message as the live event carries it: said, answering nothing.
    pub fn said(text: impl Into<String>, nonce: Option<String>) -> Self {
        Self::Message {
            text: text.into(),
            nonce,
            reply_to: None,
            kind: None,
            state: MessageState::default(),
        }
    }

    /// A join of a member with no role above member's.
    pub fn join() -> Self {
        Self::Join {
            role: Role::Member,
            key: None,
        }
    }

    /// A leave, without a handle.
    pub fn leave() -> Self {
        Self::Leave { key: None }
    }

    /// Names member `key` in a join or a leave (or, with `None`, no member); nothing
    /// for other events.
    pub fn set_member_ref(&mut self, key: Option<u64>) {
        if let Self::Join { key: named, .. } | Self::Leave { key: named } = self {
            *named = key;
        }
    }

    /// What happened to `id`, in the tutorial's protocol, if it can say it (see
    /// [`Event::for_v1`]).
    pub fn plain(&self, id: &str) -> Option<String> {
        let line = match self {
            Self::Join { .. } => crate::Announcement::Joined(id),
            Self::Leave { .. } => crate::Announcement::Left(id),
            Self::Message { text, .. } => crate::Announcement::Said { id, text },
            _ => return None,
        };
        Some(line.to_string())
    }
}

impl Event {
    /// The same event in the tutorial's protocol, if it has a line for it.
    pub fn plain(&self) -> Option<String> {
        let event = self.for_v1()?;
        event.kind.plain(&event.id)
    }

    /// The event as a frame's text: all of it, as chat.v2.json has it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }

    /// The event as a chat.v1.json client (and, through it, a plain one) knows it, if
    /// it can: joins, leaves and messages as they always were; an action as a message
    /// whose text starts with `* `; an edit as a message `(edited) <text>` at the
    /// edit's offset. Deletes and reactions have no v1 form, and neither does a
    /// deleted message or its edits.
    pub fn for_v1(&self) -> Option<std::borrow::Cow<'_, Event>> {
        use std::borrow::Cow;
        let text = match &self.kind {
            // A v1 client has no handles: its bytes stay as they were.
            EventKind::Join { key: None, .. } | EventKind::Leave { key: None } => {
                return Some(Cow::Borrowed(self));
            }
            EventKind::Join { .. } | EventKind::Leave { .. } => {
                let mut shown = self.clone();
                shown.kind.set_member_ref(None);
                return Some(Cow::Owned(shown));
            }
            EventKind::Message {
                reply_to: None,
                kind: None,
                state,
                ..
            } if *state == MessageState::default() => return Some(Cow::Borrowed(self)),
            EventKind::Message { state, .. } if state.deleted => return None,
            EventKind::Message {
                text,
                kind: Some(MessageKind::Action),
                ..
            } => format!("* {text}"),
            EventKind::Message { text, .. } => text.clone(),
            EventKind::Edit { deleted: true, .. } => return None,
            EventKind::Edit { text, .. } => format!("(edited) {text}"),
            // Moderation events are for v2 clients: older ones' bytes do not change.
            _ => return None,
        };
        let nonce = match &self.kind {
            EventKind::Message { nonce, .. } | EventKind::Edit { nonce, .. } => nonce.clone(),
            _ => None,
        };
        Some(Cow::Owned(Event {
            kind: EventKind::said(text, nonce),
            ..self.clone()
        }))
    }
}

/// A member of a room as the welcome lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
    /// When this connection joined, in Unix milliseconds.
    pub since: u64,
    /// The role its join gave it (see [`EventKind::Join`]), when above member's.
    #[serde(default, skip_serializing_if = "Role::is_member")]
    pub role: Role,
    /// In a room above the server's presence threshold (chat.v2.json), this
    /// connection's handle: what a `presence` batch's `left` names, and what a
    /// `members` page goes on `after`. Never written below the threshold.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
}

/// The limits a v1 client should know before sending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_nonce_chars: usize,
    /// Events kept per room for history and resume.
    pub history: usize,
}

/// The first frame a v1 client receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub id: String,
    pub room: String,
    /// Changes whenever the room's history is lost; offsets compare only within one.
    pub epoch: String,
    /// The offset of the room's last event before the newcomer's own join.
    pub offset: u64,
    /// Who is in the room as of `offset`, one entry per connection; above the
    /// server's presence threshold, only the first page of them.
    pub members: Vec<Present>,
    /// Above the presence threshold: how many members there are, and whether
    /// `members` is only the first page of them.
    #[serde(default)]
    pub count: Option<usize>,
    #[serde(default)]
    pub more: Option<bool>,
    /// Whether the history that follows is exactly what the client asked to resume.
    pub recovered: bool,
    /// Whether ids and names are proven by signed tokens; otherwise each client
    /// claims its own, and a name is only what it says it is.
    #[serde(default)]
    pub verified: bool,
    pub limits: Limits,
}

impl Welcome {
    pub fn to_json(&self) -> String {
        WelcomeOut {
            id: &self.id,
            room: &self.room,
            epoch: &self.epoch,
            offset: self.offset,
            members: self.members.iter().collect(),
            count: self.count,
            more: self.more,
            recovered: self.recovered,
            verified: self.verified,
            limits: &self.limits,
        }
        .to_json()
    }
}

/// A welcome as a server writes it, from borrowed parts: a server writes one for every
/// newcomer, and a busy room's member list is not copied for each.
#[derive(Debug, Serialize)]
pub struct WelcomeOut<'a> {
    pub id: &'a str,
    pub room: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
    pub members: Vec<&'a Present>,
    /// Set only above the presence threshold (see [`Welcome::count`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
    pub recovered: bool,
    pub verified: bool,
    pub limits: &'a Limits,
}

/// A welcome with its `type` first, as a reader expects it.
#[derive(Serialize)]
pub struct TaggedWelcome<'a, 'b> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    welcome: &'a WelcomeOut<'b>,
}

impl<'b> WelcomeOut<'b> {
    /// The welcome frame's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.tagged()).expect("a welcome always serializes")
    }

    /// The welcome frame's JSON object, to serialize.
    pub fn tagged(&self) -> TaggedWelcome<'_, 'b> {
        TaggedWelcome {
            kind: "welcome",
            welcome: self,
        }
    }

    /// About how many bytes the frame's text takes, to make room for it at once.
    pub fn size_hint(&self) -> usize {
        let members: usize = self
            .members
            .iter()
            .map(|member| {
                32 + member.id.len()
                    + member
                        .name
                        .as_ref()
                        .map_or(0, |name| 10 + name.as_str().len())
            })
            .sum();
        256 + self.id.len() + self.room.len() + self.epoch.len() + members
    }
}

/// Any frame a v1 server sends, for clients and tests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ServerFrame {
    Welcome(WelcomeFrame),
    Event(Event),
}

/// A welcome as received: [`Welcome`] with its `type`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WelcomeFrame {
    #[serde(rename = "type")]
    pub kind: WelcomeTag,
    #[serde(flatten)]
    pub welcome: Welcome,
}

/// The `type` of a welcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WelcomeTag {
    Welcome,
}

impl ServerFrame {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// What a v1 client may send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Message {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
}

/// Why a client's frame is not a request.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("not a request: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the nonce has more than {MAX_NONCE_CHARS} characters")]
    NonceTooLong,
}

impl Request {
    pub fn parse(text: &str) -> Result<Self, BadRequest> {
        let request: Self = serde_json::from_str(text)?;
        match &request {
            Self::Message {
                nonce: Some(nonce), ..
            } if nonce.chars().count() > MAX_NONCE_CHARS => Err(BadRequest::NonceTooLong),
            _ => Ok(request),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a request always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_printable_and_short() {
        for good in [
            "Ada",
            "Ada Lovelace",
            "  Zoë  ",
            "李小龍",
            "🦀 crab",
            "Dev 👩\u{200D}💻",
            "👨\u{200D}👩\u{200D}👧",
            "🏳\u{FE0F}\u{200D}🌈",
            "👩🏽\u{200D}🚀",
            &"n".repeat(32),
        ] {
            let name = DisplayName::parse(good).unwrap();
            assert_eq!(name.as_str(), good.trim());
        }
        assert_eq!(DisplayName::parse(" \t "), Err(InvalidName::Empty));
        assert_eq!(
            DisplayName::parse(&"n".repeat(33)),
            Err(InvalidName::TooLong)
        );
        for fake in [
            "Client #0",
            "client #12",
            "Client  #1",
            "Client ＃1",
            "Owen (#1)",
        ] {
            assert_eq!(DisplayName::parse(fake), Err(InvalidName::LooksLikeAnId));
        }
        assert!(DisplayName::parse("Client Services").is_ok());
        for (bad, code) in [
            ("a\u{1b}[31mb", 0x1b),
            ("two\nlines", 0x0a),
            ("evil\u{202E}txt.exe", 0x202e),
            ("zero\u{200B}width", 0x200b),
            ("del\u{7f}", 0x7f),
            ("tag\u{E0001}", 0xe0001),
            ("\u{3164}", 0x3164),
            ("Ada\u{3164}", 0x3164),
            ("\u{0600}12", 0x0600),
            // Found by issue 34's adversarial rerun: format characters and blanks.
            ("A\u{1D173}da", 0x1d173),
            ("A\u{13430}da", 0x13430),
            ("A\u{1BCA0}da", 0x1bca0),
            ("A\u{17B4}da", 0x17b4),
            ("\u{2800}", 0x2800),
            ("Ada\u{2028}Bob", 0x2028),
            ("Ad\u{200D}a", 0x200d),
            ("\u{200D}🦀", 0x200d),
            ("🦀\u{200D}", 0x200d),
        ] {
            assert_eq!(
                DisplayName::parse(bad),
                Err(InvalidName::Unprintable(code)),
                "{bad:?}"
            );
        }
        let parsed: Result<DisplayName, _> = serde_json::from_str("\"a\\u0007b\"");
        assert!(parsed.is_err(), "a name read from JSON is checked too");
    }

    #[test]
    fn room_names_follow_the_rules() {
        for good in ["main", "ops", "a", "Team-1.dev_x", &"r".repeat(64)] {
            assert_eq!(RoomName::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(RoomName::parse(""), Err(InvalidRoom::Empty));
        assert_eq!(RoomName::parse(&"r".repeat(65)), Err(InvalidRoom::TooLong));
        for bad in ["a b", "é", "a/b", "a%20", "ops?", "x\u{0}"] {
            assert_eq!(
                RoomName::parse(bad),
                Err(InvalidRoom::BadCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn events_read_as_the_protocol_says_and_back() {
        let said = Event {
            offset: 7,
            ts: 1_700_000_000_000,
            id: "42".into(),
            name: Some(DisplayName::parse("Ada").unwrap()),
            kind: EventKind::said("hi \"there\"", Some("n1".into())),
        };
        let json: serde_json::Value = serde_json::from_str(&said.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "message", "offset": 7, "ts": 1_700_000_000_000u64,
                               "id": "42", "name": "Ada", "text": "hi \"there\"", "nonce": "n1"})
        );
        assert_eq!(
            said.to_json(),
            r#"{"offset":7,"ts":1700000000000,"id":"42","name":"Ada","type":"message","text":"hi \"there\"","nonce":"n1"}"#,
            "v1's bytes, in v1's order"
        );
        assert_eq!(said.plain().unwrap(), "Client #42: hi \"there\"");
        let joined = Event {
            offset: 1,
            ts: 5,
            id: "-3".into(),
            name: None,
            kind: EventKind::join(),
        };
        assert_eq!(
            joined.to_json(),
            r#"{"offset":1,"ts":5,"id":"-3","type":"join"}"#
        );
        assert_eq!(joined.plain().unwrap(), "Client #-3 has entered the chat");
        for event in [said, joined] {
            assert_eq!(
                ServerFrame::parse(&event.to_json()).unwrap(),
                ServerFrame::Event(event)
            );
        }
    }

    #[test]
    fn a_welcome_has_its_type_and_parses_back() {
        let welcome = Welcome {
            id: "1".into(),
            room: "main".into(),
            epoch: "e1".into(),
            offset: 3,
            members: vec![Present {
                id: "2".into(),
                name: Some(DisplayName::parse("Grace").unwrap()),
                since: 9,
                role: Default::default(),
                key: None,
            }],
            count: None,
            more: None,
            recovered: false,
            verified: true,
            limits: Limits {
                max_message_bytes: 65536,
                max_nonce_chars: 64,
                history: 1000,
            },
        };
        let text = welcome.to_json();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["type"], "welcome");
        assert_eq!(json["members"][0]["since"], 9);
        assert_eq!(json["members"][0]["name"], "Grace");
        assert_eq!(json["verified"], true);
        match ServerFrame::parse(&text).unwrap() {
            ServerFrame::Welcome(frame) => assert_eq!(frame.welcome, welcome),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_are_strict() {
        assert_eq!(
            Request::parse(r#"{"type":"message","text":"hi"}"#).unwrap(),
            Request::Message {
                text: "hi".into(),
                nonce: None
            }
        );
        let with_nonce = Request::parse(r#"{"type":"message","text":"","nonce":"abc"}"#);
        assert!(matches!(with_nonce, Ok(Request::Message { nonce: Some(n), .. }) if n == "abc"));
        for bad in [
            "hello",
            "{}",
            r#"{"type":"shout","text":"hi"}"#,
            r#"{"type":"message"}"#,
            r#"{"type":"message","text":5}"#,
            r#"{"type":"message","text":"hi","extra":1}"#,
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"type":"message","text":"hi","nonce":"{}"}}"#,
            "n".repeat(65)
        );
        assert!(matches!(
            Request::parse(&long),
            Err(BadRequest::NonceTooLong)
        ));
    }
}
