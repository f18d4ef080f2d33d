//! Everything that can happen to the client: terminal input and news from the network.

/// One thing for [`crate::app::App::update`] to react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key, a mouse action, a paste or a resize, as crossterm reports them.
    Terminal(crossterm::event::Event),
    /// What the connection task saw.
    Net(NetEvent),
}

/// News from the connection task in `net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A connection attempt has started.
    Connecting,
    /// The WebSocket handshake succeeded; `v1` when the server selected
    /// `chat.v1.json`, otherwise the tutorial's plain protocol is spoken.
    Connected { v1: bool },
    /// A text frame of the plain protocol arrived. The text is raw, unsanitized.
    Received { text: String },
    /// A `chat.v1.json` frame arrived, read. Its texts are raw, unsanitized.
    Frame(chat::v1::ServerFrame),
    /// A `chat.v1.json` frame that is not the protocol's (raw).
    Unreadable { text: String },
    /// The connection failed or was lost; `reason` says so in words for people, raw.
    Disconnected { reason: String },
    /// The next attempt starts in this many seconds.
    Retrying { seconds: u64 },
    /// The connection failed in a way that will not fix itself (`reason`, raw): no
    /// more attempts until the user asks.
    GaveUp { reason: String },
}
