//! What every connection task shares: the settings, the rooms, the node's standing
//! with the cluster, and the server's lifecycle.
//!
//! May call: `room` (the rooms and the cluster's health), `config`, `metrics`.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::room::rooms::Rooms;
use crate::room::{Health, Link};

/// What every connection task needs.
pub struct Shared {
    pub config: Config,
    pub rooms: Rooms,
    /// In a cluster: the health watch of the node's link to Redis (whether it is
    /// reachable, and which connection is current).
    pub cluster_health: Option<watch::Receiver<Health>>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

const READ_BUFFER_BYTES: usize = 512;

impl Shared {
    /// Why the node cannot serve clients now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        // Said to anyone who asks (/healthz, refused handshakes): what went wrong with
        // Redis is for the log, where the broker writes it.
        if let Some(Health::Down(_)) = self
            .cluster_health
            .as_ref()
            .map(|health| health.borrow().clone())
        {
            return Some("cannot reach Redis".to_owned());
        }
        self.rooms.trouble()
    }

    /// Completes when the connection to Redis that a member joined in (`link`) has
    /// ended, even if a new one is up already; never on a single node.
    pub async fn cluster_lost(&self, link: Link) {
        match (link, self.cluster_health.clone()) {
            (Link::Offline, _) => {}
            (Link::Connection(connection), Some(mut health)) => {
                let joined_in = Health::Up { connection };
                // Boxed: every session waits on this future, most of them unclustered.
                let _ = Box::pin(health.wait_for(|health| *health != joined_in)).await;
            }
            (Link::Local, _) | (Link::Connection(_), None) => std::future::pending().await,
        }
    }

    pub fn websocket_config(&self) -> WebSocketConfig {
        // Chosen for many mostly idle connections: tungstenite's defaults reserve 128 KiB
        // of read buffer per connection; chat frames are small, so 512 bytes grow on
        // demand (a frame's whole length is reserved once its header is read). Half of
        // the 1 KiB it was saved about 0.3 KiB of RSS per connection in a room of
        // 16 000, and changed neither the saturated fan-out nor its senders' reads
        // (bench/README.md, "Memory per idle connection").
        // tungstenite writes only control frames (our writer sends the rest), straight
        // into the outbox, so it needs no write buffer.
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(self.config.max_message_bytes))
            .max_frame_size(Some(self.config.max_message_bytes))
    }
}
