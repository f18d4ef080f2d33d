//! The real `chat-tui` binary in a pseudo-terminal in a room above the server's
//! presence threshold (docs/PROTOCOL.md, "Big rooms"): its welcome lists only the first
//! 100 members, so the member list (F2) is whole only once it has paged the rest, and
//! right again after a truncated batch only once it has paged again.

use std::collections::BTreeSet;

use chat_server::Config;
use testkit::TestServer;
use testkit::terminal::Terminal;
use testkit::v2::V2;

const F2: &str = "\u{1b}OQ";

/// Who the member list (the rightmost pane, a `│ ` rule before each row) shows, by
/// id, and the count above it.
fn member_list(tui: &Terminal) -> (Option<usize>, BTreeSet<String>) {
    let contents = tui.contents();
    let mut count = None;
    let mut ids = BTreeSet::new();
    for row in contents.lines() {
        let Some(at) = row.rfind("│ ") else {
            continue;
        };
        let cell = row[at + "│ ".len()..].trim();
        if let Some(here) = cell.strip_suffix(" here") {
            count = here.parse().ok();
        } else if let Some(id) = cell.strip_prefix("Client #") {
            ids.insert(id.trim_end_matches(" (you)").to_owned());
        }
    }
    (count, ids)
}

async fn list_becomes(tui: &Terminal, what: &str, wanted: &BTreeSet<String>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (count, ids) = member_list(tui);
        if count == Some(wanted.len()) && ids == *wanted {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = wanted.difference(&ids).collect();
            let extra: Vec<_> = ids.difference(wanted).collect();
            panic!(
                "{what}: the list shows {} (count {count:?}), not the {} connected; \
                 missing {missing:?}, not there {extra:?}",
                ids.len(),
                wanted.len()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_rooms_member_list_is_paged_whole_and_again_after_a_truncated_batch() {
    // Above five connections presence is batched, and a batch lists at most three
    // changes: dropping twenty at once is a truncated batch.
    let server = TestServer::start_with(Config {
        presence_batch_above: 5,
        presence_batch_entries: 3,
        handshake_rate_per_ip: None,
        // 230 handshakes at once from one address: past the default 128 waiting.
        max_pending_connections_per_ip: None,
        rate_limit: None,
        ..Config::default()
    })
    .await;
    // 230 others: the welcome lists 100, two pages the rest.
    let mut joining = tokio::task::JoinSet::new();
    for id in 1000..1230u64 {
        let url = server.url(&format!("/ws/{id}"));
        joining.spawn(async move {
            let mut client = V2::connect_url(&url).await;
            client.welcome().await;
            (id, client)
        });
    }
    let mut others: Vec<(u64, V2)> = joining.join_all().await;
    others.sort_by_key(|(id, _)| *id);
    let mut watcher = V2::connect(&server, "/ws/999").await;
    watcher.welcome().await;

    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
    let scratch = testkit::process::Scratch::new("chat-tui-big-room");
    let state = scratch.path().to_str().expect("a UTF-8 path").to_owned();
    let url = format!("ws://{}", server.address);
    let env = [
        ("XDG_STATE_HOME", state.as_str()),
        ("XDG_CONFIG_HOME", state.as_str()),
    ];
    // Tall enough for every member a row.
    let mut tui = Terminal::start(binary, &["--server", &url, "--id", "42"], &env, (300, 100));
    tui.wait_for("● connected").await;
    tui.type_keys(F2);

    let mut connected: BTreeSet<String> = others.iter().map(|(id, _)| id.to_string()).collect();
    connected.extend(["999".to_owned(), "42".to_owned()]);
    list_becomes(&tui, "the list paged whole", &connected).await;

    // Twenty of the first page go at once: the batch that says so lists nobody.
    for (id, client) in others.drain(..20) {
        connected.remove(&id.to_string());
        drop(client);
    }
    watcher
        .next_matching("a truncated batch", |frame| {
            frame["type"] == "presence" && frame["truncated"] == true
        })
        .await;
    list_becomes(&tui, "the list paged again", &connected).await;
    drop(others);
}
