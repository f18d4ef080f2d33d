//! `chat.v2.json`: everything `chat.v1.json` has, and a log people can correct, answer
//! and react to: edits, deletes, reactions, replies and actions are events in the
//! room's log, each with its own offset; typing and read positions are frames beside
//! it. See docs/PROTOCOL.md for the transcripts.
//!
//! The events themselves are [`v1::Event`]s, whose kinds grew the v2 operations, so
//! that one log serves both protocols; [`v1::Event::for_v1`] says what a v1 client is
//! shown of each.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::ClientId;
pub use crate::v1::Role;
use crate::v1::{
    self, BadRequest, DisplayName, Event, EventKind, MAX_NONCE_CHARS, MessageKind, Reaction,
    RoomName,
};

/// The subprotocol name a client asks for and the server selects.
pub const SUBPROTOCOL: &str = "chat.v2.json";

/// The most bytes a reaction's emoji (or `:shortcode:`) may have.
pub const MAX_EMOJI_BYTES: usize = 32;

/// The most different emoji one message may carry.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 20;

/// How often a client sends `typing` while its user types.
pub const TYPING_INTERVAL_MS: u64 = 3_000;

/// How soon after the last one a connection's `typing` counts again: more frequent ones
/// are ignored. Less than [`TYPING_INTERVAL_MS`], so that a client refreshing every 3 s
/// is not dropped when one refresh arrives a little early (chat-bench saw 12-21 % of
/// such refreshes lost at exactly 3 000 ms).
pub const TYPING_MIN_GAP_MS: u64 = 2_500;

/// How long a client shows someone as typing without a refresh.
pub const TYPING_EXPIRES_MS: u64 = 6_000;

/// What a v2 client may send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Message {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<MessageKind>,
    },
    Edit {
        target: u64,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    Delete {
        target: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    React {
        target: u64,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    Unreact {
        target: u64,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    Read {
        offset: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// The direct-message rooms the client's id has.
    Dms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A page of the room's events before (or after) an offset. Offsets and the limit
    /// are read as any integer, so that a negative one is answered, not closed on.
    History {
        #[serde(
            default,
            deserialize_with = "saturating::option",
            skip_serializing_if = "Option::is_none"
        )]
        before: Option<i64>,
        #[serde(
            default,
            deserialize_with = "saturating::option",
            skip_serializing_if = "Option::is_none"
        )]
        after: Option<i64>,
        #[serde(deserialize_with = "saturating::integer")]
        limit: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A page of the room's members (above the server's presence threshold, where
    /// the welcome lists only the first), in join order after the member `after`.
    Members {
        /// Read as any integer, so that a negative one is answered `invalid`, as in
        /// `history`, rather than ending the connection as a malformed request.
        #[serde(
            default,
            deserialize_with = "saturating::option",
            skip_serializing_if = "Option::is_none"
        )]
        after: Option<i64>,
        #[serde(deserialize_with = "saturating::integer")]
        limit: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// The room's messages containing some words, newest first.
    Search {
        text: String,
        #[serde(
            default,
            deserialize_with = "saturating::option",
            skip_serializing_if = "Option::is_none"
        )]
        before: Option<i64>,
        #[serde(deserialize_with = "saturating::integer")]
        limit: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A moderator closes `member`'s connections to the room (close code 4001).
    Kick {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A moderator bans `member` from the room for `seconds`, or until unbanned
    /// (close code 4003; its handshakes get 403).
    Ban {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    Unban {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A moderator keeps `member` from sending for `seconds`, or until unmuted.
    Mute {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    Unmute {
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A moderator sets the room's topic (empty: none).
    Topic {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A moderator lets each member send one message per `seconds` (0: no limit).
    Slow {
        seconds: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A moderator lets only moderators speak (`on`), or everyone again.
    ReadOnly {
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// An owner (or admin) makes `member` a moderator of the room, or a member again.
    Role {
        member: String,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
}

/// The longest reason a kick or ban may give, in bytes: it travels in a close frame,
/// whose reason holds at most 123 bytes.
pub const MAX_REASON_BYTES: usize = 120;

/// The longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 1024;

/// The longest slow mode, ban or mute in seconds: a year (longer: ban without
/// `seconds`).
pub const MAX_MODERATION_SECONDS: u64 = 366 * 24 * 60 * 60;

/// The most events one `history` or `search` page holds.
pub const MAX_PAGE: usize = 200;

/// The most bytes a search's text may have.
pub const MAX_QUERY_BYTES: usize = 256;

/// Which events a `history` page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRange {
    /// The newest `limit` events before this offset.
    Before(u64),
    /// The oldest `limit` events after this offset.
    After(u64),
}

/// Pages' and searches' bounds read as any integer, however large, saturated to an
/// `i64`: one past it would otherwise fail the whole request as not a request (and
/// close the connection), where the protocol answers a bound out of range `invalid`.
mod saturating {
    use serde::Deserialize;
    use serde::de::{self, Deserializer, Visitor};

    struct Saturating;

    impl Visitor<'_> for Saturating {
        type Value = i64;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an integer")
        }

        fn visit_i64<E>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E>(self, value: u64) -> Result<i64, E> {
            Ok(i64::try_from(value).unwrap_or(i64::MAX))
        }

        /// An integer past 64 bits is read by serde_json as a float.
        fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
            if value.fract() != 0.0 || value.is_nan() {
                return Err(E::invalid_value(de::Unexpected::Float(value), &self));
            }
            // `as` saturates.
            Ok(value as i64)
        }
    }

    pub fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        deserializer.deserialize_any(Saturating)
    }

    pub fn option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        struct Integer(#[serde(deserialize_with = "integer")] i64);
        Ok(Option::<Integer>::deserialize(deserializer)?.map(|Integer(value)| value))
    }
}

/// Reads a `history` request's bounds: one of `before` and `after`, an offset of 0 or
/// more, and a limit from 1 to [`MAX_PAGE`].
pub fn page_range(
    before: Option<i64>,
    after: Option<i64>,
    limit: i64,
    nonce: Option<&str>,
) -> Result<(PageRange, usize), Error> {
    let invalid = |message: String| Error::new(nonce, ErrorCode::Invalid, message);
    let limit = page_limit(limit, nonce)?;
    let offset = |value| page_offset(value, nonce);
    let range = match (before, after) {
        (Some(before), None) => PageRange::Before(offset(before)?),
        (None, Some(after)) => PageRange::After(offset(after)?),
        _ => return Err(invalid("give one of before and after".to_owned())),
    };
    Ok((range, limit))
}

/// Reads a page's or a search's bound: an offset of 0 or more.
pub fn page_offset(value: i64, nonce: Option<&str>) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| {
        Error::new(
            nonce,
            ErrorCode::Invalid,
            format!("an offset is 0 or more, not {value}"),
        )
    })
}

/// Reads a page's limit: 1 to [`MAX_PAGE`].
pub fn page_limit(limit: i64, nonce: Option<&str>) -> Result<usize, Error> {
    match usize::try_from(limit) {
        Ok(limit @ 1..=MAX_PAGE) => Ok(limit),
        _ => Err(Error::new(
            nonce,
            ErrorCode::Invalid,
            format!("a limit is 1 to {MAX_PAGE}, not {limit}"),
        )),
    }
}

/// Reads a search's text: at most [`MAX_QUERY_BYTES`], of which its words (runs of
/// letters and digits, lowercased) are the terms a message must have.
pub fn search_words(text: &str, nonce: Option<&str>) -> Result<Vec<String>, Error> {
    let terms = words(text);
    if terms.is_empty() || text.len() > MAX_QUERY_BYTES {
        return Err(Error::new(
            nonce,
            ErrorCode::Invalid,
            format!(
                "a search is 1 to {MAX_QUERY_BYTES} bytes with a word (letters or digits) in it"
            ),
        ));
    }
    Ok(terms)
}

/// A text's words: its runs of letters and digits, lowercased, as search sees them
/// (and as SQLite's FTS5 `unicode61` tokenizer cuts them).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether a message has, for each of `terms`, a word that starts with it: `deploy`
/// finds "Deployed!", `2` finds "note 29".
pub fn matches_words(event: &Event, terms: &[String]) -> bool {
    match &event.kind {
        EventKind::Message { text, state, .. } if !state.deleted => {
            let words = words(text);
            terms
                .iter()
                .all(|term| words.iter().any(|word| word.starts_with(term.as_str())))
        }
        _ => false,
    }
}

/// Brings `page` (events in offset order) to their latest state by applying `ops`, the
/// room's operations in log order (any may target events outside the page).
pub fn apply_all<'a>(page: &mut [Event], ops: impl IntoIterator<Item = &'a Event>) {
    for op in ops {
        let Some(target) = target_of(&op.kind) else {
            continue;
        };
        let Ok(at) = page.binary_search_by_key(&target, |event| event.offset) else {
            continue;
        };
        if apply(op, &mut page[at]) && matches!(op.kind, EventKind::Delete { .. }) {
            for later in &mut page[at + 1..] {
                if matches!(later.kind, EventKind::Edit { target: edited, .. } if edited == target)
                {
                    scrub_edit(later);
                }
            }
        }
    }
}

impl Request {
    /// Reads a client's frame. A frame that is not a request is the client's bug, and
    /// closes the connection; a request that cannot be done is answered with an
    /// [`Error`] instead.
    pub fn parse(text: &str) -> Result<Self, BadRequest> {
        let request: Self = serde_json::from_str(text)?;
        match request.nonce() {
            Some(nonce) if nonce.chars().count() > MAX_NONCE_CHARS => Err(BadRequest::NonceTooLong),
            _ => Ok(request),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a request always serializes")
    }

    /// The nonce the client gave, which its answer names.
    pub fn nonce(&self) -> Option<&str> {
        match self {
            Self::Message { nonce, .. }
            | Self::Edit { nonce, .. }
            | Self::Delete { nonce, .. }
            | Self::React { nonce, .. }
            | Self::Unreact { nonce, .. }
            | Self::Read { nonce, .. }
            | Self::Dms { nonce }
            | Self::History { nonce, .. }
            | Self::Members { nonce, .. }
            | Self::Search { nonce, .. }
            | Self::Kick { nonce, .. }
            | Self::Ban { nonce, .. }
            | Self::Unban { nonce, .. }
            | Self::Mute { nonce, .. }
            | Self::Unmute { nonce, .. }
            | Self::Topic { nonce, .. }
            | Self::Slow { nonce, .. }
            | Self::ReadOnly { nonce, .. }
            | Self::Role { nonce, .. } => nonce.as_deref(),
            Self::Typing { nonce } => nonce.as_deref(),
        }
    }

    /// The offset the request names: an operation's target, or the message a message
    /// answers.
    pub fn target(&self) -> Option<u64> {
        match self {
            Self::Message { reply_to, .. } => *reply_to,
            Self::Edit { target, .. }
            | Self::Delete { target, .. }
            | Self::React { target, .. }
            | Self::Unreact { target, .. } => Some(*target),
            _ => None,
        }
    }

    /// The log event this request asks for, from `id`, if it is one; its offset and
    /// time are the room's to give.
    pub fn into_event_kind(self) -> Option<EventKind> {
        Some(match self {
            Self::Message {
                text,
                nonce,
                reply_to,
                kind,
            } => EventKind::Message {
                text,
                nonce,
                reply_to,
                kind,
                state: Default::default(),
            },
            Self::Edit {
                target,
                text,
                nonce,
            } => EventKind::Edit {
                target,
                text,
                nonce,
                deleted: false,
            },
            Self::Delete { target, nonce } => EventKind::Delete {
                target,
                nonce,
                moderated: false,
            },
            Self::React {
                target,
                emoji,
                nonce,
            } => EventKind::React {
                target,
                emoji,
                nonce,
            },
            Self::Unreact {
                target,
                emoji,
                nonce,
            } => EventKind::Unreact {
                target,
                emoji,
                nonce,
            },
            Self::Kick {
                member,
                reason,
                nonce,
            } => EventKind::Kick {
                member,
                reason,
                nonce,
            },
            Self::Ban {
                member,
                seconds,
                reason,
                nonce,
            } => EventKind::Ban {
                member,
                seconds,
                reason,
                nonce,
            },
            Self::Unban { member, nonce } => EventKind::Unban { member, nonce },
            Self::Mute {
                member,
                seconds,
                nonce,
            } => EventKind::Mute {
                member,
                seconds,
                nonce,
            },
            Self::Unmute { member, nonce } => EventKind::Unmute { member, nonce },
            Self::Topic { text, nonce } => EventKind::Topic { text, nonce },
            Self::Slow { seconds, nonce } => EventKind::Slow { seconds, nonce },
            Self::ReadOnly { on, nonce } => EventKind::ReadOnly { on, nonce },
            Self::Role {
                member,
                role,
                nonce,
            } => EventKind::Role {
                member,
                role,
                nonce,
            },
            Self::Typing { .. }
            | Self::Read { .. }
            | Self::Dms { .. }
            | Self::History { .. }
            | Self::Members { .. }
            | Self::Search { .. } => return None,
        })
    }

    /// The role a request needs in the room, above a member's: moderator for the
    /// moderation requests, owner to name moderators.
    pub fn needs(&self) -> Role {
        match self {
            Self::Kick { .. }
            | Self::Ban { .. }
            | Self::Unban { .. }
            | Self::Mute { .. }
            | Self::Unmute { .. }
            | Self::Topic { .. }
            | Self::Slow { .. }
            | Self::ReadOnly { .. } => Role::Moderator,
            Self::Role { .. } => Role::Owner,
            _ => Role::Member,
        }
    }

    /// Whether the request adds something said to the room (a message or an edit),
    /// which a mute, slow mode or a read-only room holds back.
    pub fn speaks(&self) -> bool {
        matches!(self, Self::Message { .. } | Self::Edit { .. })
    }
}

/// Whether every character of `text` shows as itself, as a name's must (emoji joined by
/// a zero-width joiner aside): a topic or a reason reaches every screen.
fn shows_as_itself(text: &str) -> bool {
    text.chars()
        .all(|c| c == '\u{200D}' || crate::v1::is_printable(c))
}

/// Whether a moderation request's values are in bounds: a member that is a client
/// id, a reason and a topic not too long, durations within a year, a role that can be
/// given (moderator or member).
pub fn check_moderation(request: &Request) -> Result<(), Error> {
    let nonce = request.nonce();
    let invalid = |message: String| Err(Error::new(nonce, ErrorCode::Invalid, message));
    let (member, reason, seconds) = match request {
        Request::Kick { member, reason, .. } => (Some(member), reason.as_deref(), None),
        Request::Ban {
            member,
            seconds,
            reason,
            ..
        } => (Some(member), reason.as_deref(), *seconds),
        Request::Mute {
            member, seconds, ..
        } => (Some(member), None, *seconds),
        Request::Unban { member, .. } | Request::Unmute { member, .. } => {
            (Some(member), None, None)
        }
        Request::Role { member, role, .. } => {
            if !matches!(role, Role::Moderator | Role::Member) {
                return invalid("a role given is moderator or member".to_owned());
            }
            (Some(member), None, None)
        }
        Request::Topic { text, .. } => {
            let blank = !text.is_empty() && text.trim().is_empty();
            if text.len() > MAX_TOPIC_BYTES || !shows_as_itself(text) || blank {
                return invalid(format!(
                    "a topic is at most {MAX_TOPIC_BYTES} bytes of printable text (no control \
                     characters, line breaks or invisible direction marks), or empty to clear it"
                ));
            }
            (None, None, None)
        }
        Request::Slow { seconds, .. } => (None, None, Some(*seconds)),
        _ => (None, None, None),
    };
    if let Some(member) = member
        && crate::ClientId::parse(member).map(|id| id.as_str() == member) != Ok(true)
    {
        return invalid(format!(
            "member is a client id in canonical form, not {member:?}"
        ));
    }
    if reason.is_some_and(|reason| reason.len() > MAX_REASON_BYTES || !shows_as_itself(reason)) {
        return invalid(format!(
            "a reason is at most {MAX_REASON_BYTES} bytes of printable text (no control \
             characters, line breaks or invisible direction marks)"
        ));
    }
    if seconds.is_some_and(|seconds| seconds > MAX_MODERATION_SECONDS) {
        return invalid(format!(
            "at most {MAX_MODERATION_SECONDS} seconds; leave seconds out for good"
        ));
    }
    if matches!(
        request,
        Request::Ban {
            seconds: Some(0),
            ..
        } | Request::Mute {
            seconds: Some(0),
            ..
        }
    ) {
        return invalid("seconds is 1 or more; leave it out for good".to_owned());
    }
    Ok(())
}

/// Why a well-formed request was not done: the `code` of an error frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// An edit or delete of another id's message.
    NotYours,
    /// The target is not a message of this room: beyond its last offset, a join, a
    /// leave or an operation, or deleted.
    NoSuchMessage,
    /// The target is older than the history the server keeps operations for.
    TooOld,
    /// The server cannot read the history asked for now (its store or the cluster
    /// failed); try again later.
    Unavailable,
    /// A value is out of bounds: an emoji, an empty edit, a read position beyond the
    /// room's last event, a reply to something that is not a message.
    Invalid,
    /// The asker's role in the room does not allow it: a member's moderation request,
    /// a moderator's naming of moderators, a member speaking in a read-only room.
    Forbidden,
    /// The asker is muted in this room.
    Muted,
    /// Slow mode: the asker spoke less than the room's `seconds` ago.
    Slow,
}

/// The answer to a request that was not done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "error")]
pub struct Error {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(nonce: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            nonce: nonce.map(str::to_owned),
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an error always serializes")
    }
}

/// Someone is typing: sent to the room's other v2 connections, not logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "typing")]
pub struct Typing {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
}

/// Where this id has read up to in this room: sent to its other connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "read")]
pub struct ReadPosition {
    pub offset: u64,
}

/// A direct-message room of the asking id, as the `dms` answer lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectRoom {
    pub room: String,
    /// The other id.
    pub with: String,
    /// The offset of the room's last event.
    pub offset: u64,
    /// The asking id's read position there.
    pub read: u64,
    /// Messages from the other id after `read`, as far as the server can count them.
    pub unread: u64,
}

/// A new message in one of the id's direct-message rooms, told to its connections in
/// other rooms (and its other connections', if it wrote it): a badge's news, with
/// `dms` the full account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "dm")]
pub struct DirectNotice {
    pub room: String,
    /// The other id of the room, from the told id's side.
    pub with: String,
    /// Who wrote the message, and the name they go by, if any.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
    /// The message's offset in `room`: not named `offset`, which beside the log only
    /// `read` carries, so that no client takes the notice for an event of its room.
    pub at: u64,
    pub ts: u64,
}

/// The most members a `members` page, or a welcome's first page, lists.
pub const MAX_MEMBERS_PAGE: usize = 100;

/// The answer to `members`: the room's members after `after` in join order, as of
/// `offset` (every event up to it was sent to the client before this answer).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "members")]
pub struct MembersOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a str>,
    pub offset: u64,
    pub count: usize,
    pub members: Vec<&'a crate::v1::Present>,
    /// Whether more members follow the last one listed.
    pub more: bool,
}

/// A member gone, in a presence batch: its handle, and its id for a client that
/// listed it without one (from a welcome below the threshold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    #[serde(rename = "ref")]
    pub key: u64,
    pub id: String,
}

/// Above the presence threshold, the joins and leaves of one interval as one event
/// in the room's log: applied in order after a welcome and its pages, they keep a
/// client's member list exact.
#[derive(Debug, Serialize)]
pub struct PresenceOut<'a> {
    pub offset: u64,
    pub ts: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Members in the room after this event.
    pub count: usize,
    pub joined: &'a [crate::v1::Present],
    pub left: &'a [Gone],
    /// Set when there were more joins and leaves than a batch lists: then it lists
    /// none, and a client that keeps the member list pages it again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The answer to `dms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "dms")]
pub struct DirectRooms {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub rooms: Vec<DirectRoom>,
}

/// The answer to `history` or `search`, as a client reads it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Page {
    /// `history` or `search`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub nonce: Option<String>,
    /// In offset order for `history`, newest first for `search`.
    pub events: Vec<Event>,
    /// Whether there are more beyond these.
    pub more: bool,
}

/// A v2 welcome: the v1 welcome, the newcomer's read position, and the room's
/// moderation: who has a role above member's, the topic, slow mode and read-only.
#[derive(Serialize)]
pub struct WelcomeOut<'a, 'b> {
    #[serde(flatten)]
    pub welcome: v1::TaggedWelcome<'a, 'b>,
    pub read: u64,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub roles: std::collections::BTreeMap<&'a str, Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    pub slow: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Why a reaction's emoji is refused.
pub const EMOJI_RULES: &str = "an emoji is one emoji (a single grapheme, at most 32 bytes) \
     or a :shortcode: of letters, digits, '_', '+' and '-'";

/// Whether `emoji` may be a reaction: one emoji-like grapheme cluster of at most
/// [`MAX_EMOJI_BYTES`], or a `:shortcode:`.
pub fn is_reaction(emoji: &str) -> bool {
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES {
        return false;
    }
    if let Some(code) = emoji
        .strip_prefix(':')
        .and_then(|rest| rest.strip_suffix(':'))
    {
        return !code.is_empty()
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b));
    }
    let mut graphemes = emoji.graphemes(true);
    if graphemes.next().is_none() || graphemes.next().is_some() {
        return false;
    }
    let mut chars = emoji.chars();
    let first = chars.next().expect("not empty");
    let rest: Vec<char> = chars.collect();
    // A keycap (1️⃣) starts with its digit; anything else with a visible symbol, not
    // with what only modifies one (a joiner, a variation selector, a skin tone, a
    // combining mark), which alone shows as nothing.
    let keycap = matches!(first, '0'..='9' | '#' | '*') && rest.last() == Some(&'\u{20E3}');
    let visible = keycap || (v1::is_symbol(first) && !modifies(first));
    visible
        && rest.iter().all(|&c| {
            v1::is_printable(c)
                // Joiners, variation selectors, the keycap mark, and the tags of a
                // subdivision flag (🏴󠁧󠁢󠁥󠁮󠁧󠁿), inside one emoji.
                || matches!(c, '\u{200D}' | '\u{FE0F}' | '\u{20E3}' | '\u{E0020}'..='\u{E007F}')
        })
}

/// Whether `c` only modifies the character before it.
fn modifies(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{200B}'..='\u{200F}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FE20}'..='\u{FE2F}'
            | '\u{1F3FB}'..='\u{1F3FF}'
            | '\u{E0000}'..='\u{E01EF}'
    )
}

/// Whether `request`, from `id`, may be done to `target`, the latest state of the
/// event it names (`None` when the room has no such event). `oldest` is the first
/// offset the room still keeps and `last` its last one.
pub fn check(
    id: &str,
    request: &Request,
    target: Option<&Event>,
    window: (u64, u64),
) -> Result<(), Error> {
    check_as(id, false, request, target, window)
}

/// [`check`], for a moderator (`moderator`) who may also delete others' messages.
pub fn check_as(
    id: &str,
    moderator: bool,
    request: &Request,
    target: Option<&Event>,
    (oldest, last): (u64, u64),
) -> Result<(), Error> {
    let nonce = request.nonce();
    let refuse = |code, message: &str| Err(Error::new(nonce, code, message));
    let (offset, own_only) = match request {
        Request::Message { reply_to, .. } => match reply_to {
            Some(offset) => (*offset, false),
            None => return Ok(()),
        },
        Request::Edit { target, text, .. } => {
            if text.is_empty() {
                return refuse(ErrorCode::Invalid, "an edit needs a text; delete instead");
            }
            (*target, true)
        }
        Request::Delete { target, .. } => (*target, !moderator),
        Request::React { target, emoji, .. } | Request::Unreact { target, emoji, .. } => {
            if !is_reaction(emoji) {
                return refuse(ErrorCode::Invalid, EMOJI_RULES);
            }
            (*target, false)
        }
        Request::Read { offset, .. } => {
            if *offset > last {
                return refuse(
                    ErrorCode::Invalid,
                    &format!("the room's last offset is {last}"),
                );
            }
            return Ok(());
        }
        Request::Typing { .. }
        | Request::Dms { .. }
        | Request::History { .. }
        | Request::Members { .. }
        | Request::Search { .. }
        | Request::Kick { .. }
        | Request::Ban { .. }
        | Request::Unban { .. }
        | Request::Mute { .. }
        | Request::Unmute { .. }
        | Request::Topic { .. }
        | Request::Slow { .. }
        | Request::ReadOnly { .. }
        | Request::Role { .. } => return Ok(()),
    };
    let is_reply = matches!(request, Request::Message { .. });
    if offset == 0 || offset > last {
        let code = if is_reply {
            ErrorCode::Invalid
        } else {
            ErrorCode::NoSuchMessage
        };
        return refuse(code, &format!("there is no message {offset} in this room"));
    }
    let Some(target) = target else {
        if is_reply {
            // Older than the history kept: an offset that was a message or not, the
            // reply is a message either way.
            return Ok(());
        }
        if offset < oldest {
            return refuse(
                ErrorCode::TooOld,
                &format!("message {offset} is older than the history kept ({oldest} on)"),
            );
        }
        return refuse(
            ErrorCode::NoSuchMessage,
            &format!("there is no message {offset} in this room"),
        );
    };
    let EventKind::Message { state, .. } = &target.kind else {
        let code = if is_reply {
            ErrorCode::Invalid
        } else {
            ErrorCode::NoSuchMessage
        };
        return refuse(code, &format!("{offset} is not a message"));
    };
    if state.deleted && !is_reply {
        return refuse(
            ErrorCode::NoSuchMessage,
            &format!("message {offset} was deleted"),
        );
    }
    if own_only && target.id != id {
        return refuse(
            ErrorCode::NotYours,
            &format!("message {offset} is #{}'s, not yours", target.id),
        );
    }
    let mine = |emoji: &String| {
        state
            .reactions
            .iter()
            .find(|reaction| &reaction.emoji == emoji)
            .map(|reaction| reaction.ids.iter().any(|who| who == id))
    };
    match request {
        Request::React { emoji, .. } => match mine(emoji) {
            Some(true) => {
                return refuse(
                    ErrorCode::Invalid,
                    &format!("you already reacted to message {offset} with {emoji}"),
                );
            }
            None if state.reactions.len() >= MAX_REACTIONS_PER_MESSAGE => {
                return refuse(
                    ErrorCode::Invalid,
                    &format!(
                        "a message carries at most {MAX_REACTIONS_PER_MESSAGE} different emoji"
                    ),
                );
            }
            _ => {}
        },
        Request::Unreact { emoji, .. } if mine(emoji) != Some(true) => {
            return refuse(
                ErrorCode::Invalid,
                &format!("you have not reacted to message {offset} with {emoji}"),
            );
        }
        _ => {}
    }
    Ok(())
}

/// Applies operation `op` (an edit, delete, react or unreact) to `target`, the latest
/// state of the event it names, as every node and every replay does, in log order.
/// Returns whether it changed anything: an operation the rules refuse (someone else's
/// edit, anything on a tombstone) changes nothing, whatever its sender was told.
pub fn apply(op: &Event, target: &mut Event) -> bool {
    let EventKind::Message {
        text,
        nonce,
        reply_to,
        kind,
        state,
    } = &mut target.kind
    else {
        return false;
    };
    if state.deleted {
        return false;
    }
    let own = op.id == target.id;
    match &op.kind {
        EventKind::Edit { text: new, .. } if own => {
            new.clone_into(text);
            state.edited = true;
        }
        EventKind::Delete { moderated, .. } if own || *moderated => {
            *text = String::new();
            *nonce = None;
            *reply_to = None;
            *kind = None;
            state.edited = false;
            state.deleted = true;
            state.reactions = Vec::new();
        }
        EventKind::React { emoji, .. } => {
            let full = state.reactions.len() >= MAX_REACTIONS_PER_MESSAGE;
            match state.reactions.iter_mut().find(|r| &r.emoji == emoji) {
                Some(reaction) if reaction.ids.contains(&op.id) => return false,
                Some(reaction) => reaction.ids.push(op.id.clone()),
                None if full => return false,
                None => state.reactions.push(Reaction {
                    emoji: emoji.clone(),
                    ids: vec![op.id.clone()],
                }),
            }
        }
        EventKind::Unreact { emoji, .. } => {
            let Some(at) = state.reactions.iter().position(|r| &r.emoji == emoji) else {
                return false;
            };
            let ids = &mut state.reactions[at].ids;
            let before = ids.len();
            ids.retain(|who| who != &op.id);
            if ids.len() == before {
                return false;
            }
            if ids.is_empty() {
                state.reactions.remove(at);
            }
        }
        _ => return false,
    }
    true
}

/// The offset an operation applies to, if `kind` is one.
pub fn target_of(kind: &EventKind) -> Option<u64> {
    match kind {
        EventKind::Edit { target, .. }
        | EventKind::Delete { target, .. }
        | EventKind::React { target, .. }
        | EventKind::Unreact { target, .. } => Some(*target),
        _ => None,
    }
}

/// Forgets an edit's text once the message it edits is deleted.
pub fn scrub_edit(edit: &mut Event) {
    if let EventKind::Edit {
        text,
        nonce,
        deleted,
        ..
    } = &mut edit.kind
    {
        *text = String::new();
        *nonce = None;
        *deleted = true;
    }
}

/// Why a `dm.` room name is not a direct-message room.
pub const DIRECT_RULES: &str = "a direct-message room is dm.<id>.<id>: two client ids in \
     canonical form (no '+', no leading zeros), the lower first";

/// The two ids a direct-message room is for: `Some(Ok(..))` for `dm.<a>.<b>` with two
/// canonical ids in numeric order, `Some(Err(()))` for any other name starting with
/// `dm.`, `None` for a room that is not direct.
#[allow(clippy::result_unit_err)]
pub fn direct_members(room: &RoomName) -> Option<Result<(ClientId, ClientId), ()>> {
    let name = room.as_str();
    if !name
        .get(..3)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("dm."))
    {
        return None;
    }
    // `DM.7.8` would look like `dm.7.8` and be anyone's: it is no room at all.
    let Some(rest) = name.strip_prefix("dm.") else {
        return Some(Err(()));
    };
    let parsed = (|| {
        let (a, b) = rest.split_once('.')?;
        let (first, second) = (ClientId::parse(a).ok()?, ClientId::parse(b).ok()?);
        let canonical = first.as_str() == a && second.as_str() == b;
        (canonical && numeric_order(&first, &second) != Ordering::Greater)
            .then_some((first, second))
    })();
    Some(parsed.ok_or(()))
}

/// The direct-message room of two ids, if its name fits in a room name.
pub fn direct_room(a: &ClientId, b: &ClientId) -> Option<RoomName> {
    let (first, second) = match numeric_order(a, b) {
        Ordering::Greater => (b, a),
        _ => (a, b),
    };
    RoomName::parse(&format!("dm.{first}.{second}")).ok()
}

/// Orders canonical ids as the integers they are.
pub fn numeric_order(a: &ClientId, b: &ClientId) -> Ordering {
    let (a, b) = (a.as_str(), b.as_str());
    match (a.strip_prefix('-'), b.strip_prefix('-')) {
        (Some(a), Some(b)) => magnitude(b, a),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => magnitude(a, b),
    }
}

fn magnitude(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::MessageState;

    fn event(offset: u64, id: &str, kind: EventKind) -> Event {
        Event {
            offset,
            ts: offset * 10,
            id: id.into(),
            name: None,
            kind,
        }
    }

    fn said(offset: u64, id: &str, text: &str) -> Event {
        event(offset, id, EventKind::said(text, None))
    }

    #[test]
    fn requests_read_as_the_spec_writes_them() {
        let cases = [
            (
                r#"{"type":"message","text":"hi","reply_to":3,"kind":"action","nonce":"n"}"#,
                Request::Message {
                    text: "hi".into(),
                    nonce: Some("n".into()),
                    reply_to: Some(3),
                    kind: Some(MessageKind::Action),
                },
            ),
            (
                r#"{"type":"edit","target":9,"text":"fixed","nonce":"e"}"#,
                Request::Edit {
                    target: 9,
                    text: "fixed".into(),
                    nonce: Some("e".into()),
                },
            ),
            (
                r#"{"type":"delete","target":9}"#,
                Request::Delete {
                    target: 9,
                    nonce: None,
                },
            ),
            (
                r#"{"type":"react","target":9,"emoji":"👍"}"#,
                Request::React {
                    target: 9,
                    emoji: "👍".into(),
                    nonce: None,
                },
            ),
            (r#"{"type":"typing"}"#, Request::Typing { nonce: None }),
            (
                r#"{"type":"read","offset":4}"#,
                Request::Read {
                    offset: 4,
                    nonce: None,
                },
            ),
            (
                r#"{"type":"dms","nonce":"d"}"#,
                Request::Dms {
                    nonce: Some("d".into()),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Request::parse(text).unwrap(), expected, "{text}");
            assert_eq!(Request::parse(&expected.to_json()).unwrap(), expected);
        }
        for bad in [
            r#"{"type":"edit","target":-1,"text":"x"}"#,
            r#"{"type":"edit","target":1}"#,
            r#"{"type":"typing","extra":1}"#,
            r#"{"type":"message","text":"x","kind":"shout"}"#,
            r#"{"type":"react","target":"9","emoji":"👍"}"#,
            "[]",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"type":"delete","target":1,"nonce":"{}"}}"#,
            "n".repeat(65)
        );
        assert!(matches!(
            Request::parse(&long),
            Err(BadRequest::NonceTooLong)
        ));
    }

    #[test]
    fn events_carry_their_operation_and_v1_sees_what_it_can() {
        let edit = event(
            12,
            "7",
            EventKind::Edit {
                target: 9,
                text: "fixed".into(),
                nonce: None,
                deleted: false,
            },
        );
        assert_eq!(
            edit.to_json(),
            r#"{"offset":12,"ts":120,"id":"7","type":"edit","target":9,"text":"fixed"}"#
        );
        assert_eq!(
            serde_json::from_str::<Event>(&edit.to_json()).unwrap(),
            edit
        );
        assert_eq!(edit.plain().unwrap(), "Client #7: (edited) fixed");
        assert_eq!(
            edit.for_v1().unwrap().to_json(),
            r#"{"offset":12,"ts":120,"id":"7","type":"message","text":"(edited) fixed"}"#
        );
        let action = event(
            3,
            "7",
            EventKind::Message {
                text: "waves".into(),
                nonce: Some("n".into()),
                reply_to: Some(2),
                kind: Some(MessageKind::Action),
                state: MessageState::default(),
            },
        );
        assert_eq!(
            action.to_json(),
            r#"{"offset":3,"ts":30,"id":"7","type":"message","text":"waves","nonce":"n","reply_to":2,"kind":"action"}"#
        );
        assert_eq!(
            action.for_v1().unwrap().to_json(),
            r#"{"offset":3,"ts":30,"id":"7","type":"message","text":"* waves","nonce":"n"}"#
        );
        for hidden in [
            EventKind::Delete {
                moderated: false,
                target: 9,
                nonce: None,
            },
            EventKind::React {
                target: 9,
                emoji: "👍".into(),
                nonce: None,
            },
            EventKind::Unreact {
                target: 9,
                emoji: "👍".into(),
                nonce: None,
            },
        ] {
            let op = event(13, "7", hidden);
            assert!(op.for_v1().is_none() && op.plain().is_none(), "{op:?}");
            assert_eq!(serde_json::from_str::<Event>(&op.to_json()).unwrap(), op);
        }
    }

    #[test]
    fn operations_apply_in_log_order_by_the_rules() {
        let mut message = said(9, "7", "tpyo");
        let edit = |id: &str, text: &str| {
            event(
                10,
                id,
                EventKind::Edit {
                    target: 9,
                    text: text.into(),
                    nonce: None,
                    deleted: false,
                },
            )
        };
        let react = |id: &str, emoji: &str| {
            event(
                11,
                id,
                EventKind::React {
                    target: 9,
                    emoji: emoji.into(),
                    nonce: None,
                },
            )
        };
        let unreact = |id: &str, emoji: &str| {
            event(
                12,
                id,
                EventKind::Unreact {
                    target: 9,
                    emoji: emoji.into(),
                    nonce: None,
                },
            )
        };
        assert!(!apply(&edit("8", "mine now"), &mut message), "not 8's");
        assert!(apply(&edit("7", "typo"), &mut message));
        assert!(apply(&react("8", "👍"), &mut message));
        assert!(apply(&react("9", "👍"), &mut message));
        assert!(!apply(&react("9", "👍"), &mut message), "once per id");
        assert!(apply(&react("9", ":tada:"), &mut message));
        assert!(apply(&unreact("8", "👍"), &mut message));
        assert!(!apply(&unreact("8", "👍"), &mut message));
        assert_eq!(
            message.to_json(),
            r#"{"offset":9,"ts":90,"id":"7","type":"message","text":"typo","edited":true,"reactions":[{"emoji":"👍","ids":["9"]},{"emoji":":tada:","ids":["9"]}]}"#
        );
        assert_eq!(
            message.plain().unwrap(),
            "Client #7: typo",
            "v1 replays the latest text"
        );
        let delete = event(
            13,
            "7",
            EventKind::Delete {
                moderated: false,
                target: 9,
                nonce: None,
            },
        );
        assert!(!apply(&delete, &mut said(1, "8", "not 7's")));
        assert!(apply(&delete, &mut message));
        assert_eq!(
            message.to_json(),
            r#"{"offset":9,"ts":90,"id":"7","type":"message","text":"","deleted":true}"#
        );
        assert!(message.for_v1().is_none());
        assert!(
            !apply(&edit("7", "back"), &mut message),
            "a tombstone stays"
        );
        assert!(!apply(&react("8", "👍"), &mut message));
        let mut old_edit = edit("7", "secret");
        scrub_edit(&mut old_edit);
        assert_eq!(
            old_edit.to_json(),
            r#"{"offset":10,"ts":100,"id":"7","type":"edit","target":9,"text":"","deleted":true}"#
        );
        assert!(old_edit.for_v1().is_none());
    }

    #[test]
    fn requests_are_checked_against_their_target() {
        let mine = said(5, "7", "hello");
        let join = event(4, "7", EventKind::join());
        let mut gone = said(6, "7", "bye");
        gone.kind = EventKind::Message {
            text: String::new(),
            nonce: None,
            reply_to: None,
            kind: None,
            state: MessageState {
                deleted: true,
                ..MessageState::default()
            },
        };
        let window = (3, 8);
        let edit = |target| Request::Edit {
            target,
            text: "x".into(),
            nonce: Some("n".into()),
        };
        let code = |request: &Request, target: Option<&Event>, id: &str| {
            check(id, request, target, window).err().map(|error| {
                assert_eq!(error.nonce.as_deref(), request.nonce());
                error.code
            })
        };
        assert_eq!(code(&edit(5), Some(&mine), "7"), None);
        assert_eq!(code(&edit(5), Some(&mine), "8"), Some(ErrorCode::NotYours));
        assert_eq!(
            code(&edit(4), Some(&join), "7"),
            Some(ErrorCode::NoSuchMessage)
        );
        assert_eq!(
            code(&edit(6), Some(&gone), "7"),
            Some(ErrorCode::NoSuchMessage)
        );
        assert_eq!(code(&edit(9), None, "7"), Some(ErrorCode::NoSuchMessage));
        assert_eq!(code(&edit(0), None, "7"), Some(ErrorCode::NoSuchMessage));
        assert_eq!(code(&edit(2), None, "7"), Some(ErrorCode::TooOld));
        let empty = Request::Edit {
            target: 5,
            text: String::new(),
            nonce: None,
        };
        assert_eq!(code(&empty, Some(&mine), "7"), Some(ErrorCode::Invalid));
        let react = |emoji: &str| Request::React {
            target: 5,
            emoji: emoji.into(),
            nonce: None,
        };
        assert_eq!(code(&react("👍"), Some(&mine), "8"), None, "anyone reacts");
        assert_eq!(
            code(&react("a"), Some(&mine), "8"),
            Some(ErrorCode::Invalid)
        );
        let reply = |to| Request::Message {
            text: "re".into(),
            nonce: None,
            reply_to: Some(to),
            kind: None,
        };
        assert_eq!(code(&reply(5), Some(&mine), "8"), None);
        assert_eq!(code(&reply(4), Some(&join), "8"), Some(ErrorCode::Invalid));
        assert_eq!(code(&reply(99), None, "8"), Some(ErrorCode::Invalid));
        let read = |offset| Request::Read {
            offset,
            nonce: None,
        };
        assert_eq!(code(&read(8), None, "8"), None);
        assert_eq!(code(&read(9), None, "8"), Some(ErrorCode::Invalid));
    }

    #[test]
    fn moderation_requests_read_as_the_issue_writes_them_and_are_bounded() {
        let cases = [
            r#"{"type":"kick","member":"7","reason":"calm down","nonce":"k"}"#,
            r#"{"type":"ban","member":"7","seconds":600,"reason":"spam","nonce":"b"}"#,
            r#"{"type":"ban","member":"7","nonce":"b"}"#,
            r#"{"type":"unban","member":"7","nonce":"u"}"#,
            r#"{"type":"mute","member":"7","seconds":60,"nonce":"m"}"#,
            r#"{"type":"unmute","member":"7","nonce":"u"}"#,
            r#"{"type":"topic","text":"Launch day","nonce":"t"}"#,
            r#"{"type":"slow","seconds":5,"nonce":"s"}"#,
            r#"{"type":"read_only","on":true,"nonce":"r"}"#,
            r#"{"type":"role","member":"7","role":"moderator","nonce":"r"}"#,
        ];
        for text in cases {
            let request = Request::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(request.to_json(), text);
            assert!(request.needs() >= Role::Moderator, "{text}");
            assert_eq!(check_moderation(&request), Ok(()), "{text}");
            let kind = request.into_event_kind().unwrap();
            assert!(kind.is_moderation(), "{text}");
            let event = Event {
                offset: 3,
                ts: 30,
                id: "1".into(),
                name: None,
                kind,
            };
            assert!(
                event.for_v1().is_none() && event.plain().is_none(),
                "{text}"
            );
            assert_eq!(
                serde_json::from_str::<Event>(&event.to_json()).unwrap(),
                event
            );
        }
        for bad in [
            r#"{"type":"kick","member":"07"}"#,
            r#"{"type":"kick","member":"x"}"#,
            r#"{"type":"ban","member":"7","seconds":0}"#,
            r#"{"type":"ban","member":"7","seconds":999999999}"#,
            r#"{"type":"role","member":"7","role":"owner"}"#,
            r#"{"type":"topic","text":"a\u0007b"}"#,
            r#"{"type":"topic","text":"evil \u202etxt.exe"}"#,
            r#"{"type":"topic","text":"   "}"#,
            r#"{"type":"kick","member":"7","reason":"zero\u200bwidth"}"#,
        ] {
            let request = Request::parse(bad).unwrap();
            assert_eq!(
                check_moderation(&request).map_err(|error| error.code),
                Err(ErrorCode::Invalid),
                "{bad}"
            );
        }
        let reason = format!(
            r#"{{"type":"kick","member":"7","reason":"{}"}}"#,
            "r".repeat(121)
        );
        assert!(check_moderation(&Request::parse(&reason).unwrap()).is_err());
        assert!(Request::parse(r#"{"type":"role","member":"7","role":"boss"}"#).is_err());
        let family = Request::parse(r#"{"type":"topic","text":"Family day 👨‍👩‍👧"}"#).unwrap();
        assert_eq!(check_moderation(&family), Ok(()), "emoji joined by a ZWJ");
    }

    #[test]
    fn a_moderators_delete_takes_anyones_message_back() {
        let mut message = said(9, "7", "spam");
        let delete = |moderated| {
            event(
                10,
                "8",
                EventKind::Delete {
                    target: 9,
                    nonce: None,
                    moderated,
                },
            )
        };
        assert!(!apply(&delete(false), &mut message), "not 8's");
        assert!(apply(&delete(true), &mut message));
        assert!(matches!(&message.kind, EventKind::Message { state, .. } if state.deleted));
        let refused = |moderator| {
            let request = Request::Delete {
                target: 9,
                nonce: None,
            };
            check_as(
                "8",
                moderator,
                &request,
                Some(&said(9, "7", "spam")),
                (1, 9),
            )
            .err()
            .map(|error| error.code)
        };
        assert_eq!(refused(false), Some(ErrorCode::NotYours));
        assert_eq!(refused(true), None);
    }

    #[test]
    fn reactions_are_one_emoji_or_a_shortcode() {
        for good in [
            "👍",
            "❤️",
            "👩🏽\u{200D}🚀",
            "🇫🇷",
            ":tada:",
            ":+1:",
            "✅",
            "1\u{FE0F}\u{20E3}",
            "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
        ] {
            assert!(is_reaction(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "👍👍",
            ":",
            "::",
            ":ta da:",
            " ",
            "\u{1b}[31m",
            "👍 ",
            &"🎉".repeat(9),
            "\u{202E}",
            "\u{200D}",
            "\u{200D}\u{200D}",
            "\u{FE0F}",
            "\u{301}",
            "\u{1F3FB}",
            "1",
            "\u{E0067}",
        ] {
            assert!(!is_reaction(bad), "{bad:?}");
        }
    }

    #[test]
    fn direct_rooms_name_two_ids_in_order() {
        let id = |text| ClientId::parse(text).unwrap();
        let room = |text| RoomName::parse(text).unwrap();
        assert_eq!(direct_members(&room("main")), None);
        assert_eq!(
            direct_members(&room("dm.7.12")),
            Some(Ok((id("7"), id("12"))))
        );
        assert_eq!(
            direct_members(&room("dm.-5.3")),
            Some(Ok((id("-5"), id("3"))))
        );
        assert_eq!(
            direct_members(&room("dm.7.7")),
            Some(Ok((id("7"), id("7"))))
        );
        for bad in [
            "dm.12.7", "dm.07.9", "dm.7", "dm.a.b", "dm.7.8.9", "dm.-3.-5", "DM.7.8", "Dm.7.8",
        ] {
            assert_eq!(direct_members(&room(bad)), Some(Err(())), "{bad}");
        }
        assert_eq!(direct_room(&id("12"), &id("7")), Some(room("dm.7.12")));
        assert_eq!(direct_room(&id("-2"), &id("-10")), Some(room("dm.-10.-2")));
        assert_eq!(
            direct_room(&id(&"9".repeat(61)), &id("1")),
            None,
            "too long"
        );
    }
}
