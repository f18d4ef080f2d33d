//! One WebSocket session, from the handshake's upgrade to the close frame: the
//! connection task (`connection`), its pings and their timeout (`keepalive`), the socket and its writer
//! (`socket`), and the rate limits on what the client sends (`meter`).
//!
//! May call: `room` (the member a session is, and its outbox), `shared`, `config`,
//! `metrics`.

pub mod connection;
pub mod keepalive;
pub mod meter;
pub mod socket;
