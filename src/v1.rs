//! `chat.v1.json`, the richer protocol a client asks for with `Sec-WebSocket-Protocol`:
//! every server frame is one JSON object, events carry dense offsets, and a client can
//! resume where it left off. See PROTOCOL.md for transcripts.
//!
//! Also here, because both protocols use them: room names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The subprotocol name a client asks for and the server selects.
pub const SUBPROTOCOL: &str = "chat.v1.json";

/// The most characters a message's nonce may have.
pub const MAX_NONCE_CHARS: usize = 64;

/// The most bytes a room name may have.
pub const MAX_ROOM_BYTES: usize = 64;

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
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Join,
    Leave,
    Message {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
}

impl EventKind {
    /// What happened to `id`, in the tutorial's protocol.
    pub fn plain(&self, id: &str) -> String {
        match self {
            Self::Join => crate::Announcement::Joined(id),
            Self::Leave => crate::Announcement::Left(id),
            Self::Message { text, .. } => crate::Announcement::Said { id, text },
        }
        .to_string()
    }
}

impl Event {
    /// The same event in the tutorial's protocol.
    pub fn plain(&self) -> String {
        self.kind.plain(&self.id)
    }

    /// The event as a v1 frame's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }
}

/// A member of a room as the welcome lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    pub id: String,
    /// When this connection joined, in Unix milliseconds.
    pub since: u64,
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
    /// Who is in the room as of `offset`, one entry per connection.
    pub members: Vec<Present>,
    /// Whether the history that follows is exactly what the client asked to resume.
    pub recovered: bool,
    pub limits: Limits,
}

impl Welcome {
    pub fn to_json(&self) -> String {
        /// The welcome with its `type` first, as a reader expects it.
        #[derive(Serialize)]
        struct Tagged<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            welcome: &'a Welcome,
        }
        let tagged = Tagged {
            kind: "welcome",
            welcome: self,
        };
        serde_json::to_string(&tagged).expect("a welcome always serializes")
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
            kind: EventKind::Message {
                text: "hi \"there\"".into(),
                nonce: Some("n1".into()),
            },
        };
        let json: serde_json::Value = serde_json::from_str(&said.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "message", "offset": 7, "ts": 1_700_000_000_000u64,
                               "id": "42", "text": "hi \"there\"", "nonce": "n1"})
        );
        assert_eq!(said.plain(), "Client #42: hi \"there\"");
        let joined = Event {
            offset: 1,
            ts: 5,
            id: "-3".into(),
            kind: EventKind::Join,
        };
        assert_eq!(
            joined.to_json(),
            r#"{"offset":1,"ts":5,"id":"-3","type":"join"}"#
        );
        assert_eq!(joined.plain(), "Client #-3 has entered the chat");
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
                since: 9,
            }],
            recovered: false,
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
