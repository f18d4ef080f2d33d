//! One WebSocket session, from the handshake's upgrade to the close frame: the
//! connection task (`connection`), its pings and their timeout (`keepalive`), the socket and its writer
//! (`socket`), the rate limits on what the client sends (`meter`), and the answers to
//! `history` and `search`, from memory or the store (`history`).
//!
//! May call: `room` (the member a session is, and its outbox), `shared`, `config`,
//! `metrics`.

pub mod connection;
pub mod history;
pub mod keepalive;
pub mod meter;
pub mod socket;
