//! The chat's wire protocol, shared by `chat-server`, `chat-tui` and the tests.
//!
//! The protocol is the FastAPI tutorial's, byte for byte: a client connects to
//! `/ws/<client_id>`, every text frame it sends is relayed to everyone as
//! `Client #<id>: <text>`, and joins and leaves are announced as
//! `Client #<id> has entered the chat` and `Client #<id> has left the chat`.
//!
//! Layout:
//! - [`ClientId`]: parsing and canonical display of the decimal ids in the path.
//! - [`Announcement`]: the three frame formats the server sends, and parsing them back.
//! - [`v1`]: `chat.v1.json`, the negotiated JSON protocol, and room names.
//! - [`backoff`]: the retry policy of every reconnect loop.
//! - `config_file` (feature `cli`): settings files under the binaries' flags.
//! - `about` (feature `cli`): completions, the manual page and `--version`, from clap.

#[cfg(feature = "cli")]
pub mod about;
pub mod backoff;
#[cfg(feature = "cli")]
pub mod config_file;
pub mod v1;
pub mod v2;

use std::fmt;

/// The most digits an id may have. Generous enough for `Date.now()` (13 digits) and the
/// tutorial's own 23-digit example, small enough that a path cannot make us hold megabytes.
pub const MAX_ID_DIGITS: usize = 64;

/// What a valid id looks like, for error messages shown to people.
pub const ID_RULES: &str =
    "a client id is a decimal integer: an optional + or - sign followed by 1 to 64 digits";

/// A client id in canonical form: no `+`, no leading zeros, and no `-` on zero.
///
/// Ids are arbitrary-precision integers, as in the tutorial's Python server, so they are
/// kept as text rather than squeezed into a machine integer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

/// Why a string is not a client id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("the id is empty")]
    Empty,
    #[error("the id has more than {MAX_ID_DIGITS} digits")]
    TooLong,
    #[error("the id is not a decimal integer")]
    NotAnInteger,
}

impl ClientId {
    /// Parses an id as written in the URL path: `007`, `+5`, `-0` and `-5` are all valid
    /// and become `7`, `5`, `0` and `-5`.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let (negative, digits) = match text.as_bytes().first() {
            None => return Err(InvalidId::Empty),
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            Some(_) => (false, text),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidId::NotAnInteger);
        }
        if digits.len() > MAX_ID_DIGITS {
            return Err(InvalidId::TooLong);
        }
        let significant = digits.trim_start_matches('0');
        let canonical = match (negative, significant) {
            (_, "") => "0".to_owned(),
            (true, significant) => format!("-{significant}"),
            (false, significant) => significant.to_owned(),
        };
        Ok(Self(canonical))
    }

    /// The canonical text of the id, as it appears in announcements.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ClientId {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// One frame sent by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement<'a> {
    /// `Client #<id> has entered the chat`
    Joined(&'a str),
    /// `Client #<id>: <text>`
    Said { id: &'a str, text: &'a str },
    /// `Client #<id> has left the chat`
    Left(&'a str),
}

const PREFIX: &str = "Client #";
const JOINED_SUFFIX: &str = " has entered the chat";
const LEFT_SUFFIX: &str = " has left the chat";

impl<'a> Announcement<'a> {
    /// How many bytes of a `Client #<id>: <text>` frame come before the text's `: `,
    /// the part a client draws as the sender's name.
    pub fn said_prefix_len(id: &str) -> usize {
        PREFIX.len() + id.len() + ":".len()
    }

    /// The longest `Client #<id>: <text>` frame a text of `text_bytes` bytes can become,
    /// for any id.
    pub fn longest_said(text_bytes: usize) -> usize {
        PREFIX.len() + "-".len() + MAX_ID_DIGITS + ": ".len() + text_bytes
    }

    /// Recognises a frame the server sent. Returns `None` for text in any other shape,
    /// which a client should still show, verbatim.
    ///
    /// The id is a run of digits with an optional `-`, so what follows it decides the
    /// kind unambiguously: `": "` starts a message, anything else must be a whole suffix.
    pub fn parse(frame: &'a str) -> Option<Self> {
        let rest = frame.strip_prefix(PREFIX)?;
        let sign = usize::from(rest.starts_with('-'));
        let id_len = sign + rest[sign..].bytes().take_while(u8::is_ascii_digit).count();
        if id_len == sign {
            return None;
        }
        let (id, after) = rest.split_at(id_len);
        if let Some(text) = after.strip_prefix(": ") {
            Some(Self::Said { id, text })
        } else if after == JOINED_SUFFIX {
            Some(Self::Joined(id))
        } else if after == LEFT_SUFFIX {
            Some(Self::Left(id))
        } else {
            None
        }
    }

    /// The id of the client the frame is about.
    pub fn id(&self) -> &'a str {
        match *self {
            Self::Joined(id) | Self::Left(id) | Self::Said { id, .. } => id,
        }
    }
}

impl fmt::Display for Announcement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Joined(id) => write!(f, "{PREFIX}{id}{JOINED_SUFFIX}"),
            Self::Said { id, text } => write!(f, "{PREFIX}{id}: {text}"),
            Self::Left(id) => write!(f, "{PREFIX}{id}{LEFT_SUFFIX}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_message_frame_has_the_longest_id() {
        let id = format!("-{}", "9".repeat(MAX_ID_DIGITS));
        let text = "x".repeat(100);
        let frame = Announcement::Said {
            id: &id,
            text: &text,
        }
        .to_string();
        assert_eq!(frame.len(), Announcement::longest_said(100));
        let said = Announcement::Said {
            id: "42",
            text: "hi",
        }
        .to_string();
        assert_eq!(&said[..Announcement::said_prefix_len("42")], "Client #42:");
    }

    fn canonical(text: &str) -> String {
        ClientId::parse(text).expect(text).to_string()
    }

    #[test]
    fn ids_are_shown_in_canonical_form() {
        assert_eq!(canonical("7"), "7");
        assert_eq!(canonical("007"), "7");
        assert_eq!(canonical("+5"), "5");
        assert_eq!(canonical("-0"), "0");
        assert_eq!(canonical("+000"), "0");
        assert_eq!(canonical("-5"), "-5");
        assert_eq!(canonical("-0042"), "-42");
        assert_eq!(canonical("1764134400000"), "1764134400000");
        assert_eq!(
            canonical("99999999999999999999999"),
            "99999999999999999999999"
        );
    }

    #[test]
    fn ids_up_to_the_digit_bound_are_accepted() {
        let longest = "9".repeat(MAX_ID_DIGITS);
        assert_eq!(canonical(&longest), longest);
        assert_eq!(canonical(&format!("-{longest}")), format!("-{longest}"));
        assert_eq!(
            ClientId::parse(&"1".repeat(MAX_ID_DIGITS + 1)),
            Err(InvalidId::TooLong)
        );
    }

    #[test]
    fn anything_but_a_decimal_integer_is_refused() {
        assert_eq!(ClientId::parse(""), Err(InvalidId::Empty));
        for bad in [
            "abc", "1.5", "5x", "x5", "+", "-", "--5", "+-5", " 5", "5 ", "1_000", "0x10", "5/6",
            "٣", "１",
        ] {
            assert_eq!(
                ClientId::parse(bad),
                Err(InvalidId::NotAnInteger),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn announcements_use_the_tutorials_exact_words() {
        assert_eq!(
            Announcement::Joined("1").to_string(),
            "Client #1 has entered the chat"
        );
        assert_eq!(
            Announcement::Said {
                id: "1",
                text: "Hello from client 1"
            }
            .to_string(),
            "Client #1: Hello from client 1"
        );
        assert_eq!(
            Announcement::Left("-2").to_string(),
            "Client #-2 has left the chat"
        );
    }

    #[test]
    fn announcements_parse_back() {
        let samples = [
            Announcement::Joined("42"),
            Announcement::Left("-7"),
            Announcement::Said { id: "3", text: "" },
            Announcement::Said {
                id: "3",
                text: "Client #4 has left the chat",
            },
            Announcement::Said {
                id: "0",
                text: "multi\nline: 你好 🎉",
            },
        ];
        for sample in samples {
            let frame = sample.to_string();
            assert_eq!(Announcement::parse(&frame), Some(sample));
        }
    }

    #[test]
    fn other_text_is_not_an_announcement() {
        for text in [
            "",
            "hello",
            "Client #",
            "Client #x: hi",
            "Client #-: hi",
            "Client #5 has entered the chat!",
            "Client #5 has left",
            "Client #5:no space",
            "client #5: lower case",
        ] {
            assert_eq!(Announcement::parse(text), None, "{text:?}");
        }
    }
}
