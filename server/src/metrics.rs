//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{CLUSTER_BACKLOG_BYTES, JOURNAL_BACKLOG_BYTES};

/// Declares a reason enum, the list of its reasons in declaration order, and each
/// reason's label, from one list: the counters are indexed by `reason as usize`, and
/// this way no reordering can pair a count with another reason's label.
macro_rules! reasons {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The label value, also used in logs.
            pub fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }
        }
    };
}

reasons! {
    /// Why a WebSocket session ended, as counted in `chat_disconnects_total{reason}`.
    Disconnect {
        ClientClosed => "client_closed",
        Dropped => "dropped",
        Binary => "binary_frame",
        TooBig => "message_too_big",
        InvalidUtf8 => "invalid_utf8",
        ProtocolViolation => "protocol_violation",
        SlowConsumer => "slow_consumer",
        PingTimeout => "ping_timeout",
        UnfinishedMessage => "unfinished_message",
        InvalidRequest => "invalid_request",
        InvalidV2Request => "invalid_v2_request",
        ShuttingDown => "shutdown",
        BrokerLost => "broker_lost",
        HistoryUnavailable => "history_unavailable",
        Kicked => "kicked",
        Banned => "banned",
    }
}

reasons! {
    /// Why a request was refused, as counted in `chat_refused_handshakes_total{reason}`.
    Refusal {
        InvalidId => "invalid_id",
        NotWebSocket => "not_websocket",
        BadVersion => "bad_version",
        MissingKey => "missing_key",
        Origin => "origin",
        Full => "full",
        Timeout => "timeout",
        HeadersTooLarge => "headers_too_large",
        Unavailable => "unavailable",
        HttpVersion => "http_version",
        Host => "host",
        PerIpConnections => "per_ip_connections",
        PerIpRate => "per_ip_rate",
        PerIpRooms => "per_ip_rooms",
        PerIpPending => "per_ip_pending",
        PendingFull => "pending_full",
        InvalidRoom => "invalid_room",
        NotYourRoom => "not_your_room",
        InvalidResume => "invalid_resume",
        TooManyRooms => "too_many_rooms",
        TokenMissing => "token_missing",
        TokenExpired => "token_expired",
        TokenInvalid => "token_invalid",
        TokenOtherId => "token_other_id",
        InvalidName => "invalid_name",
        NotTls => "not_tls",
        TlsHandshake => "tls_handshake",
        Banned => "banned_id",
    }
}

/// Every counter the server keeps. Relaxed atomics: each is independent, and a scrape
/// that is a few increments behind is still right.
#[derive(Default)]
pub struct Metrics {
    connections: AtomicU64,
    connections_total: AtomicU64,
    messages_received: AtomicU64,
    received_bytes: AtomicU64,
    deliveries: AtomicU64,
    delivered_bytes: AtomicU64,
    disconnects: [AtomicU64; Disconnect::ALL.len()],
    refusals: [AtomicU64; Refusal::ALL.len()],
    broker_up: AtomicU64,
    broker_published: AtomicU64,
    broker_received: AtomicU64,
    broker_read: AtomicU64,
    broker_partitions: AtomicU64,
    broker_reconnects: AtomicU64,
    broker_lag_micros: AtomicU64,
    broker_backlog_bytes: AtomicU64,
    history_bytes: AtomicU64,
    history_written: AtomicU64,
    history_commits: AtomicU64,
    history_backlog_bytes: AtomicU64,
}

/// `bytes` as people write a bound: `8 MiB`, `256 KiB`, or `1000 bytes`.
fn binary_bytes(bytes: usize) -> String {
    match bytes {
        0 => "0 bytes".to_owned(),
        _ if bytes.is_multiple_of(1024 * 1024) => format!("{} MiB", bytes / (1024 * 1024)),
        _ if bytes.is_multiple_of(1024) => format!("{} KiB", bytes / 1024),
        _ => format!("{bytes} bytes"),
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

/// Moves a gauge up by `change`, or down when it is negative.
fn adjust(gauge: &AtomicU64, change: i64) {
    if change >= 0 {
        add(gauge, change as u64);
    } else {
        gauge.fetch_sub(change.unsigned_abs(), Ordering::Relaxed);
    }
}

/// The figures the operator's dashboard shows, as they are now.
#[derive(Debug, serde::Serialize)]
pub struct Snapshot {
    pub connections: u64,
    pub connections_total: u64,
    pub messages_received: u64,
    pub deliveries: u64,
    /// By reason label, as `/metrics` names them.
    pub disconnects: std::collections::BTreeMap<&'static str, u64>,
    pub refusals: std::collections::BTreeMap<&'static str, u64>,
    pub history_bytes: u64,
    pub journal_backlog_bytes: u64,
    pub journal_backlog_limit: usize,
    pub broker_backlog_bytes: u64,
    pub broker_backlog_limit: usize,
}

impl Metrics {
    /// The dashboard's figures (`/metrics` has them all, for Prometheus).
    pub fn snapshot(&self) -> Snapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let by_label = |labels: Vec<&'static str>, counters: &[AtomicU64]| {
            labels.into_iter().zip(counters.iter().map(read)).collect()
        };
        Snapshot {
            connections: read(&self.connections),
            connections_total: read(&self.connections_total),
            messages_received: read(&self.messages_received),
            deliveries: read(&self.deliveries),
            disconnects: by_label(
                Disconnect::ALL
                    .iter()
                    .map(|reason| reason.label())
                    .collect(),
                &self.disconnects,
            ),
            refusals: by_label(
                Refusal::ALL.iter().map(|reason| reason.label()).collect(),
                &self.refusals,
            ),
            history_bytes: read(&self.history_bytes),
            journal_backlog_bytes: read(&self.history_backlog_bytes),
            journal_backlog_limit: JOURNAL_BACKLOG_BYTES,
            broker_backlog_bytes: read(&self.broker_backlog_bytes),
            broker_backlog_limit: CLUSTER_BACKLOG_BYTES,
        }
    }

    pub fn connected(&self) {
        add(&self.connections, 1);
        add(&self.connections_total, 1);
    }

    pub fn disconnected(&self, reason: Disconnect) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        add(&self.disconnects[reason as usize], 1);
    }

    pub fn received(&self, bytes: usize) {
        add(&self.messages_received, 1);
        add(&self.received_bytes, bytes as u64);
    }

    pub fn delivered(&self, recipients: usize, frame_bytes: usize) {
        add(&self.deliveries, recipients as u64);
        add(&self.delivered_bytes, (recipients * frame_bytes) as u64);
    }

    pub fn refused(&self, reason: Refusal) {
        add(&self.refusals[reason as usize], 1);
    }

    /// History grew (or, negative, shrank) by `bytes`.
    pub fn history_bytes(&self, bytes: i64) {
        adjust(&self.history_bytes, bytes);
    }

    /// The journal wrote `events` in one commit.
    pub fn journal_written(&self, events: usize) {
        add(&self.history_written, events as u64);
        add(&self.history_commits, 1);
    }

    /// Events waiting for the journal grew (or, negative, shrank) by `bytes`.
    pub fn journal_backlog(&self, bytes: i64) {
        adjust(&self.history_backlog_bytes, bytes);
    }

    pub fn broker_health(&self, up: bool) {
        self.broker_up.store(u64::from(up), Ordering::Relaxed);
    }

    pub fn broker_published(&self, messages: usize) {
        add(&self.broker_published, messages as u64);
    }

    pub fn broker_received(&self, lag: std::time::Duration) {
        add(&self.broker_received, 1);
        add(&self.broker_lag_micros, lag.as_micros() as u64);
    }

    /// Events handed to Redis and not yet back grew (or, negative, shrank) by `bytes`.
    pub fn broker_backlog(&self, bytes: i64) {
        adjust(&self.broker_backlog_bytes, bytes);
    }

    /// Entries read from the partitions' streams, for rooms loaded here or not.
    pub fn broker_read(&self, entries: usize) {
        add(&self.broker_read, entries as u64);
    }

    /// How many partitions this node reads now.
    pub fn broker_partitions(&self, partitions: usize) {
        self.broker_partitions
            .store(partitions as u64, Ordering::Relaxed);
    }

    pub fn broker_reconnect(&self) {
        add(&self.broker_reconnects, 1);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(text, "{name}{labels} {value}");
            }
        };
        let history_backlog_help = format!(
            "Bytes of events waiting to be written (with --data-dir); sessions stop \
             reading their clients while it is over {}.",
            binary_bytes(JOURNAL_BACKLOG_BYTES)
        );
        let broker_backlog_help = format!(
            "Bytes of events handed to Redis and not yet back from it (clustered nodes \
             only); sessions stop reading their clients while it is over {}.",
            binary_bytes(CLUSTER_BACKLOG_BYTES)
        );
        let unlabelled: [(&str, &str, &str, &AtomicU64); 18] = [
            (
                "chat_connections",
                "gauge",
                "WebSocket sessions open now.",
                &self.connections,
            ),
            (
                "chat_connections_total",
                "counter",
                "WebSocket sessions opened.",
                &self.connections_total,
            ),
            (
                "chat_messages_received_total",
                "counter",
                "Text messages received from clients.",
                &self.messages_received,
            ),
            (
                "chat_received_bytes_total",
                "counter",
                "Bytes of text received from clients.",
                &self.received_bytes,
            ),
            (
                "chat_deliveries_total",
                "counter",
                "Frames queued for clients by the fan-out.",
                &self.deliveries,
            ),
            (
                "chat_delivered_bytes_total",
                "counter",
                "Bytes of frame payload queued for clients by the fan-out.",
                &self.delivered_bytes,
            ),
            (
                "chat_history_bytes",
                "gauge",
                "Bytes of frames kept in the rooms' histories.",
                &self.history_bytes,
            ),
            (
                "chat_history_events_written_total",
                "counter",
                "Events written to the data folder's database (with --data-dir).",
                &self.history_written,
            ),
            (
                "chat_history_commits_total",
                "counter",
                "Transactions that wrote them: events per commit is the group-commit batch.",
                &self.history_commits,
            ),
            (
                "chat_history_backlog_bytes",
                "gauge",
                &history_backlog_help,
                &self.history_backlog_bytes,
            ),
            (
                "chat_broker_up",
                "gauge",
                "1 while this node is connected to Redis (clustered nodes only).",
                &self.broker_up,
            ),
            (
                "chat_broker_published_total",
                "counter",
                "Events published to Redis.",
                &self.broker_published,
            ),
            (
                "chat_broker_received_total",
                "counter",
                "Events received from Redis for a room loaded on this node.",
                &self.broker_received,
            ),
            (
                "chat_broker_read_total",
                "counter",
                "Entries read from the partitions' streams (events, typing, read positions), \
                 for rooms with members on this node or not: what interest-based reading \
                 keeps down.",
                &self.broker_read,
            ),
            (
                "chat_broker_partitions",
                "gauge",
                "Partitions whose stream this node reads now (--redis-partitions).",
                &self.broker_partitions,
            ),
            (
                "chat_broker_reconnects_total",
                "counter",
                "Connections to Redis lost or failed.",
                &self.broker_reconnects,
            ),
            (
                "chat_broker_lag_microseconds_total",
                "counter",
                "Sum of the time from publishing to receiving, over the events received; \
                 divide by chat_broker_received_total for the mean lag.",
                &self.broker_lag_micros,
            ),
            (
                "chat_broker_backlog_bytes",
                "gauge",
                &broker_backlog_help,
                &self.broker_backlog_bytes,
            ),
        ];
        for (name, kind, help, counter) in unlabelled {
            metric(name, kind, help, &[(String::new(), read(counter))]);
        }
        let by_reason = |labels: &[&str], counters: &[AtomicU64]| -> Vec<(String, u64)> {
            labels
                .iter()
                .zip(counters)
                .map(|(label, counter)| (format!("{{reason=\"{label}\"}}"), read(counter)))
                .collect()
        };
        let disconnects: Vec<&str> = Disconnect::ALL
            .iter()
            .map(|reason| reason.label())
            .collect();
        metric(
            "chat_disconnects_total",
            "counter",
            "WebSocket sessions ended, by reason.",
            &by_reason(&disconnects, &self.disconnects),
        );
        let refusals: Vec<&str> = Refusal::ALL.iter().map(|reason| reason.label()).collect();
        metric(
            "chat_refused_handshakes_total",
            "counter",
            "Requests refused: WebSocket handshakes, and any request for a host not served, \
             by reason.",
            &by_reason(&refusals, &self.refusals),
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_written_as_people_write_them() {
        assert_eq!(binary_bytes(8 * 1024 * 1024), "8 MiB");
        assert_eq!(binary_bytes(256 * 1024), "256 KiB");
        assert_eq!(binary_bytes(1000), "1000 bytes");
    }

    #[test]
    fn the_backlog_help_states_the_bounds_in_force() {
        let text = Metrics::default().render();
        assert!(text.contains("while it is over 8 MiB."), "{text}");
        assert!(text.contains("while it is over 256 KiB."), "{text}");
    }

    /// The counters are indexed by `reason as usize`: the macro must list the reasons in
    /// declaration order, or counts would be exposed under another reason's label.
    #[test]
    fn the_reason_lists_are_in_declaration_order_with_distinct_labels() {
        for (index, reason) in Disconnect::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{reason:?}");
        }
        for (index, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{reason:?}");
        }
        let mut labels: Vec<&str> = Disconnect::ALL
            .iter()
            .map(|reason| reason.label())
            .collect();
        labels.extend(Refusal::ALL.iter().map(|reason| reason.label()));
        let count = labels.len();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), count);
    }

    #[test]
    fn every_counter_is_exposed_with_its_type() {
        let metrics = Metrics::default();
        metrics.connected();
        metrics.connected();
        metrics.disconnected(Disconnect::SlowConsumer);
        metrics.received(5);
        metrics.delivered(3, 10);
        metrics.refused(Refusal::Origin);
        let text = metrics.render();
        for line in [
            "# TYPE chat_connections gauge",
            "chat_connections 1",
            "chat_connections_total 2",
            "chat_messages_received_total 1",
            "chat_received_bytes_total 5",
            "chat_deliveries_total 3",
            "chat_delivered_bytes_total 30",
            "chat_disconnects_total{reason=\"slow_consumer\"} 1",
            "chat_disconnects_total{reason=\"ping_timeout\"} 0",
            "chat_refused_handshakes_total{reason=\"origin\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
