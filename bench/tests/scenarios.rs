//! Small runs of each scenario against an in-process `chat-server`: every delivery
//! arrives. No timing is asserted; the figures belong to the benchmark, not the tests.

use std::time::Duration;

use chat_bench::{
    FanoutPlan, IdlePlan, Pace, Protocol, ResumePlan, ServerProbe, Servers, TYPING_PERIOD,
};
use chat_server::Config;
use tokio::net::TcpListener;
use url::Url;

async fn server() -> Servers {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = Config {
        rate_limit: None,
        ..Config::default()
    };
    tokio::spawn(chat_server::run(listener, config, std::future::pending()));
    Servers::new(vec![Url::parse(&format!("ws://{address}")).unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_fanout_loses_nothing() {
    let servers = server().await;
    let plan = FanoutPlan {
        clients: 30,
        senders: 3,
        messages: 50,
        pace: Pace::Window(8),
        connect_concurrency: 8,
        timeout: Duration::from_secs(30),
        padding: 0,
        typing_share: 0.0,
        typing_every: TYPING_PERIOD,
        react_every: 0,
    };
    // This process is the server: its CPU and memory are readable too.
    let probe = ServerProbe::new(std::process::id()).unwrap();
    let report = chat_bench::fanout(&servers, &plan, Some(probe))
        .await
        .unwrap();
    assert_eq!(report.expected_deliveries, 30 * 3 * 50);
    assert_eq!(report.received_deliveries, report.expected_deliveries);
    assert_eq!(report.lost_deliveries, 0);
    assert!(report.latency.max_us >= report.latency.p50_us);
    assert!(report.server_cpu_us_per_delivery.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_fanout_loses_nothing_spread_or_aligned() {
    let servers = server().await;
    for pace in [Pace::Rate(50.0), Pace::Aligned(50.0)] {
        let plan = FanoutPlan {
            clients: 10,
            senders: 2,
            messages: 10,
            pace,
            connect_concurrency: 4,
            timeout: Duration::from_secs(30),
            padding: 0,
            typing_share: 0.0,
            typing_every: TYPING_PERIOD,
            react_every: 0,
        };
        let report = chat_bench::fanout(&servers, &plan, None).await.unwrap();
        assert_eq!(report.received_deliveries, 10 * 2 * 10, "{pace:?}");
        assert_eq!(report.lost_deliveries, 0, "{pace:?}");
    }
}

/// Over chat.v2.json, typing clients and reactions are counted apart: the deliveries
/// are the messages, all of them, and every other client reads each typing frame and
/// each reaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_fanout_with_typers_and_reactions_counts_them_apart() {
    let servers = Servers {
        protocol: Protocol::V2,
        ..server().await
    };
    let plan = FanoutPlan {
        clients: 10,
        senders: 2,
        messages: 40,
        // 8 s of sending: every typer types at least twice.
        pace: Pace::Rate(5.0),
        connect_concurrency: 4,
        timeout: Duration::from_secs(60),
        padding: 0,
        typing_share: 0.2,
        typing_every: TYPING_PERIOD,
        react_every: 10,
    };
    let report = chat_bench::fanout(&servers, &plan, None).await.unwrap();
    assert_eq!(report.received_deliveries, 10 * 2 * 40, "{report:?}");
    assert_eq!(report.lost_deliveries, 0);
    let mix = &report.mix;
    assert_eq!(mix.typers, 2);
    assert!(mix.typing_sent >= 2 * 2, "{mix:?}");
    assert!(mix.typing_received > 0, "{mix:?}");
    // Each typing frame reaches at most the 9 other clients.
    assert!(mix.typing_received <= mix.typing_sent * 9, "{mix:?}");
    assert!(mix.reactions_sent >= 1, "{mix:?}");
    assert!(mix.reactions_received > 0, "{mix:?}");
    assert!(mix.reactions_received <= mix.reactions_sent * 10, "{mix:?}");
    assert_eq!(mix.errors_received, 0, "{mix:?}");
}

/// The mix is v2's: asked for over v1, the run is refused before it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_reactions_need_v2() {
    let servers = Servers {
        protocol: Protocol::V1,
        ..server().await
    };
    let plan = FanoutPlan {
        clients: 4,
        senders: 1,
        messages: 1,
        pace: Pace::Window(1),
        connect_concurrency: 4,
        timeout: Duration::from_secs(30),
        padding: 0,
        typing_share: 0.5,
        typing_every: TYPING_PERIOD,
        react_every: 0,
    };
    let error = chat_bench::fanout(&servers, &plan, None).await.unwrap_err();
    assert!(error.to_string().contains("--v2"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_see_every_join_and_churn_rounds_complete() {
    let servers = server().await;
    let plan = IdlePlan {
        clients: 40,
        connect_concurrency: 8,
        hold: Duration::ZERO,
        churn_rounds: 2,
    };
    let probe = ServerProbe::new(std::process::id()).unwrap();
    let report = chat_bench::idle(&servers, &plan, Some(probe))
        .await
        .unwrap();
    assert_eq!(report.clients, 40);
    assert_eq!(report.join_deliveries, 40 * 41 / 2 + 40);
    assert_eq!(report.server_rss_after_churn_kib.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_resume_recovers_every_client_and_reads_memory_once_the_room_is_quiet() {
    let servers = Servers {
        protocol: Protocol::V1,
        ..server().await
    };
    let plan = ResumePlan {
        clients: 30,
        missed_messages: 10,
        connect_concurrency: 8,
    };
    let probe = ServerProbe::new(std::process::id()).unwrap();
    let report = chat_bench::resume(&servers, &plan, Some(probe))
        .await
        .unwrap();
    assert_eq!(report.recovered, 30);
    // Each missed at least the 10 messages and the talker's join; the leaves and
    // rejoins around them depend on timing.
    assert!(report.replayed_per_client >= 11.0, "{report:?}");
    assert!(report.server_rss_connected_kib.is_some());
    assert!(report.server_rss_after_resume_kib.is_some());
}

/// The comparison server (`tungstenite-chat`) speaks the same protocol, so that
/// `bench/compare.py` keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comparison_server_loses_nothing_either() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut comparison = tokio::process::Command::new(env!("CARGO_BIN_EXE_tungstenite-chat"))
        .arg(port.to_string())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "it never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let servers = Servers::new(vec![Url::parse(&format!("ws://127.0.0.1:{port}")).unwrap()]);
    let plan = FanoutPlan {
        clients: 20,
        senders: 2,
        messages: 20,
        pace: Pace::Aligned(50.0),
        connect_concurrency: 4,
        timeout: Duration::from_secs(30),
        padding: 0,
        typing_share: 0.0,
        typing_every: TYPING_PERIOD,
        react_every: 0,
    };
    let probe = ServerProbe::new(comparison.id().unwrap()).unwrap();
    let report = chat_bench::fanout(&servers, &plan, Some(probe))
        .await
        .unwrap();
    assert_eq!(report.received_deliveries, 20 * 2 * 20);
    assert_eq!(report.lost_deliveries, 0);
    comparison.kill().await.unwrap();
}
