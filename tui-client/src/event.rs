//! Everything that can happen to the client: terminal input and news from the network.

/// One thing for [`crate::app::App::update`] to react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key, a mouse action, a paste or a resize, as crossterm reports them.
    Terminal(crossterm::event::Event),
    /// What the connection task of the buffer on screen saw (tests send this).
    Net(NetEvent),
    /// What the connection task of this buffer saw (see `app::BufferId`).
    Room(u64, NetEvent),
    /// A second has passed: what shows for a while (someone typing) may end.
    Tick,
}

/// Which protocol a connection speaks, poorest first: each speaks what the one before
/// it does, and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// The tutorial's plain lines: one room, no history, no names.
    Plain,
    /// `chat.v1.json`: rooms, history, resuming, names.
    V1,
    /// `chat.v2.json`: and edits, deletes, reactions, replies, actions, typing, read
    /// positions, pages of older history and search on the server.
    V2,
}

/// News from the connection task in `net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A connection attempt has started.
    Connecting,
    /// The WebSocket handshake succeeded, and the server selected this protocol.
    Connected { protocol: Protocol },
    /// A text frame of the plain protocol arrived. The text is raw, unsanitized.
    Received { text: String },
    /// A `chat.v1.json` frame arrived, read. Its texts are raw, unsanitized.
    Frame(chat::v1::ServerFrame),
    /// A `chat.v2.json` frame beside the room's log (raw texts).
    Beside(Beside),
    /// A `chat.v1.json` (or v2) frame that is not the protocol's (raw).
    Unreadable { text: String },
    /// The connection failed or was lost; `reason` says so in words for people, raw.
    Disconnected { reason: String },
    /// The next attempt starts in this many seconds.
    Retrying { seconds: u64 },
    /// The connection failed in a way that will not fix itself (`reason`, raw): no
    /// more attempts until the user asks.
    GaveUp { reason: String },
}

/// What `chat.v2.json` sends beside the room's events: nothing here has an offset of its
/// own. Its texts are raw, unsanitized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beside {
    /// This id has read up to `offset` (the welcome's `read`, or another connection's).
    Read { offset: u64 },
    /// Someone is typing.
    Typing {
        id: String,
        name: Option<chat::v1::DisplayName>,
    },
    /// A page of older events (`history`, in offset order) or of found messages
    /// (`search`, newest first), and whether there are more.
    Page {
        search: bool,
        nonce: Option<String>,
        events: Vec<chat::v1::Event>,
        more: bool,
    },
    /// This id's direct-message rooms (the answer to `dms`), raw as the server listed
    /// them.
    DirectRooms { rooms: Vec<chat::v2::DirectRoom> },
    /// A message in this id's direct-message room with `with`, told because this
    /// connection is in another room: the room's buffer opens if it is not open.
    DirectMessage { room: String, with: String },
    /// The room's moderation as the v2 welcome tells it: roles above member's, the
    /// topic, slow mode and read-only. Moderation events change it from there.
    Rules(RoomRules),
    /// Above the server's presence threshold: who joined and who left in one
    /// interval, as one event of the log at `offset`, and how many members the room
    /// has after it. Applied to the member list without a line for each; `truncated`:
    /// more came and went than a batch lists, and the list must be paged again.
    Presence {
        offset: u64,
        count: usize,
        truncated: bool,
        joined: Vec<chat::v1::Present>,
        left: Vec<chat::v2::Gone>,
    },
    /// A page of the room's members (the answer to `members`), in join order, as of
    /// the last event before it; `more`: members follow the last one listed.
    Members {
        nonce: Option<String>,
        count: usize,
        members: Vec<chat::v1::Present>,
        more: bool,
    },
    /// A request was refused; nothing was logged.
    Refused {
        nonce: Option<String>,
        code: chat::v2::ErrorCode,
        message: String,
    },
}

/// A room's moderation, as chat-tui shows it: who has a role above member's (in the
/// member list), the topic, slow mode and whether the room is read-only (above the
/// messages).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RoomRules {
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, chat::v1::Role>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub slow: u64,
    #[serde(default)]
    pub read_only: bool,
}

impl RoomRules {
    /// Follows a moderation event: a role given, the topic, slow mode or read-only
    /// set. Anything else changes nothing.
    pub fn follow(&mut self, kind: &chat::v1::EventKind) {
        use chat::v1::{EventKind, Role};
        match kind {
            EventKind::Role { member, role, .. } if *role == Role::Member => {
                self.roles.remove(member);
            }
            EventKind::Role { member, role, .. } => {
                self.roles.insert(member.clone(), *role);
            }
            EventKind::Topic { text, .. } => {
                self.topic = Some(text.clone()).filter(|text| !text.is_empty());
            }
            EventKind::Slow { seconds, .. } => self.slow = *seconds,
            EventKind::ReadOnly { on, .. } => self.read_only = *on,
            _ => {}
        }
    }

    /// Whether there is anything to say above the messages.
    pub fn worth_a_title(&self) -> bool {
        self.topic.is_some() || self.slow > 0 || self.read_only
    }
}
