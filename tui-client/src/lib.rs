//! `chat-tui`, the terminal client. Reserved here; it is built in its own issue.
