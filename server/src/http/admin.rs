//! The operator's dashboard's figures: `GET /api/v1/admin/stats`, once a second from
//! the page at `/admin`, for the operator's API key or an admin's token. Totals, not
//! rates: the page keeps the samples and draws the rates, so any number of open
//! dashboards cost the server one snapshot each per second.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{Body, FrontDoor};
use crate::metrics;
use crate::room::Health;

/// Where the dashboard reads.
pub const STATS: &str = "/api/v1/admin/stats";

/// How many of the busiest rooms are listed.
const BUSIEST: usize = 10;

/// The version and the commit, as `--version` says them.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHAT_BUILD_COMMIT"),
    ")"
);

#[derive(Serialize)]
struct Stats {
    version: &'static str,
    uptime_seconds: u64,
    rooms: usize,
    #[serde(flatten)]
    figures: metrics::Snapshot,
    /// `null` on a single node.
    cluster: Option<Cluster>,
    busiest: Vec<Busy>,
}

#[derive(Serialize)]
struct Cluster {
    up: bool,
}

#[derive(Serialize)]
struct Busy {
    room: String,
    members: usize,
}

/// The figures as they are now, as JSON (for a caller the API found to be an admin).
pub fn stats(door: &FrontDoor) -> Response<Body> {
    let shared = &door.shared;
    let (busiest, rooms) = shared.rooms.busiest(BUSIEST);
    let stats = Stats {
        version: VERSION,
        uptime_seconds: door.started.elapsed().as_secs(),
        rooms,
        figures: shared.metrics.snapshot(),
        cluster: shared.cluster_health.as_ref().map(|health| Cluster {
            up: matches!(*health.borrow(), Health::Up { .. }),
        }),
        busiest: busiest
            .into_iter()
            .map(|(room, members)| Busy {
                room: room.to_string(),
                members,
            })
            .collect(),
    };
    let body = serde_json::to_vec(&stats).expect("the figures serialize");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
