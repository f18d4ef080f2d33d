//! `chat-tui`, the terminal client, in the Elm style: events go into a pure `update`,
//! and the view is drawn from the state.
//!
//! Layout:
//! - [`app`]: the state and `update`; no I/O.
//! - [`ui`]: the view, drawn from `App` with ratatui.
//! - [`scrollback`]: the messages kept for the pane, and their cap.
//! - [`viewport`]: where the pane is in them and how it moves.
//! - [`event`]: the events `update` takes.
//! - [`input`]: the line editor behind the input line.
//! - [`complete`]: Tab completion of names and ids.
//! - [`link`]: URLs as OSC 8 hyperlinks, made safe.
//! - [`keys`]: the key bindings and the `/commands`, as the tables everything else reads.
//! - [`time_format`]: the time column's format (`--time-format`) and width.
//! - [`text`]: network text made safe to draw, and wrapping by display width.
//! - [`net`]: the socket, reconnects and backoff; the only module that touches the network.
//! - [`pipe`]: the line mode for scripts.
//! - [`sgr`]: the escape sequences as every terminal reads them (basic colour codes).
//!
//! `main.rs` holds the flags, the terminal's set-up and restoration, and the event loop.

pub mod app;
pub mod complete;
pub mod event;
pub mod input;
pub mod keys;
pub mod link;
pub mod net;
pub mod pipe;
pub mod scrollback;
pub mod sgr;
pub mod text;
pub mod time_format;
pub mod ui;
pub mod viewport;

pub use keys::keys_markdown;
