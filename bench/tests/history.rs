//! The history scenario at a tiny size against an in-process `chat-server` with a data
//! folder: the room is filled, written to, paged and searched, with no error. No timing
//! is asserted; the figures belong to the benchmark.

use std::time::Duration;

use chat_bench::{HistoryPlan, Protocol, ServerProbe, Servers};
use chat_server::Config;
use tokio::net::TcpListener;
use url::Url;

/// A v2 server with its history in `folder` (fresh), limits off as for benchmarks.
async fn server(folder: &std::path::Path, history: usize) -> Servers {
    let _ = std::fs::remove_dir_all(folder);
    std::fs::create_dir_all(folder).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = Config {
        rate_limit: None,
        max_connections_per_ip: None,
        handshake_rate_per_ip: None,
        history,
        data_dir: Some(folder.to_owned()),
        ..Config::default()
    };
    tokio::spawn(chat_server::run(listener, config, std::future::pending()));
    Servers {
        protocol: Protocol::V2,
        ..Servers::new(vec![Url::parse(&format!("ws://{address}")).unwrap()])
    }
}

fn plan() -> HistoryPlan {
    HistoryPlan {
        fill: 300,
        fill_rate: None,
        writers: 2,
        write_rate: 50.0,
        readers: 2,
        quiet_readers: false,
        request_rate: 20.0,
        search_every: 3,
        limit: 20,
        duration: Duration::from_secs(2),
        words: 10,
        connect_concurrency: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_room_is_paged_and_searched_while_it_is_written_to() {
    let folder = std::env::temp_dir().join(format!("chat-bench-history-{}", std::process::id()));
    let servers = server(&folder, 200).await;
    // This process is the server: its CPU is readable too.
    let probe = ServerProbe::new(std::process::id()).unwrap();
    let report = chat_bench::history(&servers, &plan(), Some(probe))
        .await
        .unwrap();
    assert_eq!(report.server_history, 200, "{report:?}");
    // 300 messages and at least the four joins.
    assert!(report.latest_offset >= 304, "{report:?}");
    assert!(report.written > 0, "{report:?}");
    // Every client (2 writers, 2 readers) receives every message written.
    assert!(report.deliveries > 0, "{report:?}");
    assert!(report.deliveries <= report.written * 4, "{report:?}");
    for requests in [&report.pages, &report.searches] {
        assert!(requests.answered > 0, "{report:?}");
        assert_eq!(requests.errors, 0, "{report:?}");
    }
    // Every word is in some kept message, so every search finds something.
    assert_eq!(report.searches.empty, 0, "{report:?}");
    assert!(report.pages.events_per_answer > 0.0, "{report:?}");
    assert!(report.server_cpu_us_per_delivery.is_some());
    let _ = std::fs::remove_dir_all(&folder);
}

/// Quiet readers receive but ask nothing: the run to compare the fan-out's CPU with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_readers_ask_nothing() {
    let folder =
        std::env::temp_dir().join(format!("chat-bench-history-quiet-{}", std::process::id()));
    let servers = server(&folder, 1000).await;
    let plan = HistoryPlan {
        fill: 0,
        quiet_readers: true,
        duration: Duration::from_secs(1),
        ..plan()
    };
    let report = chat_bench::history(&servers, &plan, None).await.unwrap();
    assert_eq!(report.pages.answered + report.searches.answered, 0);
    assert!(report.written > 0, "{report:?}");
    let _ = std::fs::remove_dir_all(&folder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_needs_v2() {
    let folder = std::env::temp_dir().join(format!("chat-bench-history-v1-{}", std::process::id()));
    let servers = Servers {
        protocol: Protocol::V1,
        ..server(&folder, 100).await
    };
    let error = chat_bench::history(&servers, &plan(), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--v2"), "{error}");
    let _ = std::fs::remove_dir_all(&folder);
}
