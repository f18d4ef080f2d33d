//! All of the history, not the newest megabyte, over real sockets with `--data-dir`:
//! paging back from the newest event to the first across a restart, a resume from
//! further back than memory holds, and search over everything the store keeps.

use chat_server::Config;
use serde_json::{Value, json};
use testkit::TestServer;
use testkit::process::Scratch;
use testkit::v1::V1;
use testkit::v2::{V2, offset};

/// How many messages the tests write: far more than the history in memory holds (1 MiB).
const MESSAGES: u64 = 50_000;

fn durable(folder: &std::path::Path) -> Config {
    Config {
        data_dir: Some(folder.to_owned()),
        history: 100_000,
        rate_limit: None,
        ..Config::default()
    }
}

/// Sends `count` messages from `client`, `label` and their number in the text, then
/// waits for the echo of the last; returns its offset.
async fn fill(client: &mut V2, label: &str, count: u64) -> u64 {
    for n in 0..count {
        client.say(&format!("{label} {n}"), None).await;
    }
    let last = format!("{label} {}", count - 1);
    let echo = client
        .next_matching_within(count as usize + 10, |f| f["text"] == last.as_str())
        .await;
    offset(&echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_back_from_the_newest_reaches_the_first_event_once_each_across_a_restart() {
    let data = Scratch::new("paging");
    let server = TestServer::start_with(durable(data.path())).await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    let last = fill(&mut ada, "m", MESSAGES).await;
    server.stop().await;

    let server = TestServer::start_with(durable(data.path())).await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    let (welcome, _) = bob.seated().await;
    let newest = offset(&welcome);
    assert!(newest > last, "the leave of Ada as the server stopped");
    let mut seen: Vec<u64> = Vec::new();
    let mut before = newest + 1;
    let mut pages = 0;
    loop {
        bob.send(
            &json!({"type": "history", "before": before, "limit": 200, "nonce": pages.to_string()}),
        )
        .await;
        let page = bob.next_of("history").await;
        pages += 1;
        let events = page["events"].as_array().unwrap();
        let offsets: Vec<u64> = events.iter().map(offset).collect();
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
        if let Some(&first) = offsets.first() {
            assert_eq!(*offsets.last().unwrap(), before - 1, "no gap between pages");
            before = first;
        }
        seen.splice(0..0, offsets);
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(
        seen,
        (1..=newest).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(pages, newest.div_ceil(200));

    // Forward from the start, too.
    bob.send(&json!({"type": "history", "after": 0, "limit": 3}))
        .await;
    let first = bob.next_of("history").await;
    let texts: Vec<&Value> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["text"])
        .collect();
    assert_eq!(
        texts,
        [&Value::Null, &json!("m 0"), &json!("m 1")],
        "the join, then m 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_further_back_than_memory_is_streamed_from_the_store_exactly() {
    let data = Scratch::new("deep-resume");
    let server = TestServer::start_with(durable(data.path())).await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    let (welcome, _) = ada.seated().await;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    let mut vic = V1::connect(&server, "/ws/2").await;
    let vic_welcome = vic.seated().await;
    let since = vic_welcome.offset + 1; // Vic's own join
    drop(vic);
    let last = fill(&mut ada, "m", MESSAGES).await;
    server.stop().await;

    let server = TestServer::start_with(durable(data.path())).await;
    for v2 in [true, false] {
        let path = format!("/ws/2?since={since}&epoch={epoch}");
        let mut frames: Vec<Value> = Vec::new();
        let welcome: Value;
        if v2 {
            let mut back = V2::connect(&server, &path).await;
            welcome = back.welcome().await;
            loop {
                let frame = back.frame().await;
                let done = frame["type"] == "join" && frame["id"] == "2";
                frames.push(frame);
                if done {
                    break;
                }
            }
        } else {
            let mut back = V1::connect(&server, &path).await;
            let text = back.socket.recv().await;
            welcome = serde_json::from_str(&text).unwrap();
            loop {
                let frame: Value = serde_json::from_str(&back.socket.recv().await).unwrap();
                let done = frame["type"] == "join" && frame["id"] == "2";
                frames.push(frame);
                if done {
                    break;
                }
            }
        }
        assert_eq!(welcome["recovered"], true, "{welcome}");
        let offsets: Vec<u64> = frames.iter().map(offset).collect();
        assert_eq!(offsets[0], since + 1, "from the first event missed");
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "once each, in order"
        );
        assert!(*offsets.last().unwrap() > last, "through to its own join");
        let said = frames.iter().filter(|f| f["type"] == "message").count() as u64;
        assert_eq!(said, MESSAGES);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_covers_everything_the_store_keeps_and_forgets_what_is_deleted() {
    let data = Scratch::new("search");
    let server = TestServer::start_with(durable(data.path())).await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    ada.say("the first needle", None).await;
    let first = offset(&ada.next_of("message").await);
    fill(&mut ada, "hay", 20_000).await;
    ada.say("the second needle", None).await;
    let second = offset(&ada.next_of("message").await);
    server.stop().await;

    let server = TestServer::start_with(durable(data.path())).await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    let search = async |ada: &mut V2, request: Value| {
        ada.send(&request).await;
        let found = ada.next_of("search").await;
        let offsets: Vec<u64> = found["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(offset)
            .collect();
        (offsets, found["more"].clone())
    };
    let request = json!({"type": "search", "text": "NEEDLE", "limit": 1});
    assert_eq!(search(&mut ada, request).await, (vec![second], json!(true)));
    let request = json!({"type": "search", "text": "needle", "before": second, "limit": 1});
    assert_eq!(
        search(&mut ada, request).await,
        (vec![first], json!(false)),
        "older than memory holds"
    );
    ada.delete(first, None).await;
    ada.next_of("delete").await;
    let request = json!({"type": "search", "text": "needle", "limit": 10});
    assert_eq!(
        search(&mut ada, request).await,
        (vec![second], json!(false))
    );
    // Paging shows the tombstone.
    ada.send(&json!({"type": "history", "after": first - 1, "limit": 1}))
        .await;
    let page = ada.next_of("history").await;
    assert_eq!(
        (&page["events"][0]["text"], &page["events"][0]["deleted"]),
        (&json!(""), &json!(true))
    );
}

/// A store that cannot be read (here, a table dropped under the running server, as a
/// damaged database would fail) is answered `unavailable`, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_read_is_answered_unavailable() {
    let data = Scratch::new("unavailable");
    let server = TestServer::start_with(Config {
        history: 1000,
        ..durable(data.path())
    })
    .await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    fill(&mut ada, "m", 1500).await;
    let database = rusqlite::Connection::open(data.path().join("chat.sqlite3")).unwrap();
    database
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    database
        .execute_batch("DROP TABLE operations; DROP TABLE message_index;")
        .unwrap();
    for request in [
        json!({"type": "history", "before": 300, "limit": 10, "nonce": "h"}),
        json!({"type": "search", "text": "m", "limit": 10, "nonce": "s"}),
    ] {
        let nonce = request["nonce"].as_str().unwrap().to_owned();
        ada.send(&request).await;
        let error = ada.error_for(&nonce).await;
        assert_eq!(error["code"], "unavailable", "{error}");
        assert_eq!(
            error["message"],
            "cannot read the history now; try again later"
        );
    }
    ada.send(&json!({"type": "history", "after": 1400, "limit": 5, "nonce": "mem"}))
        .await;
    assert_eq!(
        ada.error_or("history", "mem").await["events"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

/// Issue 34's rerun: in a room of large messages, a page of 100 (chat-tui's) or even
/// 20 (the page's) was one frame larger than the asker's queue bound, and the client
/// that asked was closed as a slow consumer; the HTTP API answered 47 MiB at once. An
/// answer now carries at most half the queue bound of events, and says there is more:
/// paging back through 30 messages of 60 KB (and 10 of control characters, six times
/// longer as JSON) with limit 200 gets each once, in order, and nobody is closed.
/// Search and the HTTP API are bounded the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_large_messages_fit_the_askers_queue_and_page_on() {
    let data = Scratch::new("paging-large");
    let server = TestServer::start_with(durable(data.path())).await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    for n in 0..40 {
        let filler = if n % 4 == 3 {
            "\u{1}".repeat(10_000)
        } else {
            "x".repeat(60_000)
        };
        ada.say(&format!("large {n} {filler}"), None).await;
    }
    let last = offset(
        &ada.next_matching_within(50, |f| {
            f["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("large 39 "))
        })
        .await,
    );
    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    let mut seen: Vec<u64> = Vec::new();
    let mut before = last + 1;
    let mut pages = 0;
    loop {
        bob.send(&json!({"type": "history", "before": before, "limit": 200}))
            .await;
        let page = bob.next_of("history").await;
        pages += 1;
        let offsets: Vec<u64> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(offset)
            .collect();
        assert!(!offsets.is_empty(), "{page}");
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
        assert_eq!(*offsets.last().unwrap(), before - 1, "no gap between pages");
        before = offsets[0];
        seen.splice(0..0, offsets);
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(pages > 2, "the answers were cut to fit: {pages} pages");

    bob.send(&json!({"type": "search", "text": "large", "limit": 200}))
        .await;
    let found = bob.next_of("search").await;
    let count = found["events"].as_array().unwrap().len();
    assert!(
        count > 0 && count < 40 && found["more"] == true,
        "{count} {}",
        found["more"]
    );
    // Bob is still here: a message reaches him.
    ada.say("still there?", None).await;
    bob.next_matching("still there?", |f| f["text"] == "still there?")
        .await;

    let page = testkit::raw_http(
        server.address,
        &format!(
            "GET /api/v1/rooms/main/events?before={}&limit=200 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            last + 1
        ),
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.len() < 1 << 20, "{} bytes", page.body.len());
    let page: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(page["more"], true);
}

/// A moderator deletes another's message older than memory holds, read from the store,
/// as it would one in memory; a member still may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_deletes_anothers_message_older_than_memory() {
    let data = Scratch::new("moderated-old");
    let server = TestServer::start_with(Config {
        admins: vec![chat::ClientId::parse("1").unwrap()],
        ..durable(data.path())
    })
    .await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    bob.say("spam from long ago", Some("old")).await;
    let old = offset(&bob.error_or("message", "old").await);
    // A mebibyte and more of long messages pushes it out of memory.
    let long = "x".repeat(60_000);
    for n in 0..24 {
        bob.say(&long, Some(&format!("long{n}"))).await;
        bob.error_or("message", &format!("long{n}")).await;
    }
    let mut carol = V2::connect(&server, "/ws/9").await;
    carol.seated().await;
    carol.delete(old, Some("not-mine")).await;
    let error = carol.error_for("not-mine").await;
    assert_eq!(error["code"], "not_yours", "{error}");
    let mut admin = V2::connect(&server, "/ws/1").await;
    admin.seated().await;
    admin.delete(old, Some("gone")).await;
    let delete = admin.error_or("delete", "gone").await;
    assert_eq!(
        (&delete["target"], &delete["moderated"], &delete["id"]),
        (&json!(old), &json!(true), &json!("1"))
    );
    server.stop().await;
}

/// A client that asks for pages faster than they come is told to wait past four on
/// their way at once, rather than having the server read and hold every page it asked
/// for (each up to half its queue): before, 24 such clients grew a server to 1.2 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_asked_for_back_to_back_past_four_on_their_way_are_refused_not_held() {
    let data = Scratch::new("paging-at-once");
    let server = TestServer::start_with(durable(data.path())).await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    // About 3 MB: the older pages are read from the store.
    let padding = "p".repeat(1000);
    for n in 0..3000 {
        ada.say(&format!("m {n} {padding}"), None).await;
    }
    ada.next_matching_within(3100, |frame| {
        frame["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("m 2999 "))
    })
    .await;

    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    const ASKED: usize = 60;
    for n in 0..ASKED {
        bob.send(
            &json!({"type": "history", "before": 100 + n, "limit": 200, "nonce": n.to_string()}),
        )
        .await;
    }
    let (mut pages, mut refused) = (0, 0);
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < ASKED {
        let frame = bob
            .next_matching("an answer", |frame| {
                frame["type"] == "history" || frame["type"] == "error"
            })
            .await;
        let nonce: usize = frame["nonce"].as_str().unwrap().parse().unwrap();
        assert!(answered.insert(nonce), "one answer each: {frame}");
        if frame["type"] == "history" {
            pages += 1;
        } else {
            assert_eq!(frame["code"], "unavailable", "{frame}");
            let message = frame["message"].as_str().unwrap();
            assert!(message.contains("already on their way"), "{message}");
            refused += 1;
        }
    }
    assert!(
        pages >= 4,
        "the first four are read: {pages} pages, {refused} refused"
    );
    assert!(refused > 0, "{pages} pages, none refused");

    // Asked one at a time, every page comes.
    for n in 0..10 {
        bob.send(&json!({"type": "history", "before": 200 + n, "limit": 200, "nonce": "again"}))
            .await;
        let page = bob.error_or("history", "again").await;
        assert_eq!(page["type"], "history", "{page}");
    }
}

/// Paging forward from before the oldest event kept starts at the oldest kept: cut at
/// the offset asked for, the page was short, or empty with `more` true, and a client
/// paging forward from 0 never got on. In memory, and from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_after_an_offset_older_than_what_is_kept_starts_at_the_oldest_kept() {
    let data = Scratch::new("paging-after-forgotten");
    for config in [
        Config {
            history: 100,
            rate_limit: None,
            ..Config::default()
        },
        Config {
            history: 1000,
            ..durable(data.path())
        },
    ] {
        let kept = config.history as u64;
        let server = TestServer::start_with(config).await;
        let mut ada = V2::connect(&server, "/ws/7").await;
        ada.seated().await;
        let last = fill(&mut ada, "m", 3 * kept + 50).await;
        let oldest = last - kept + 1;
        for after in [0, oldest - 3, oldest - 2] {
            ada.send(&json!({"type": "history", "after": after, "limit": 5, "nonce": "f"}))
                .await;
            let page = ada.error_or("history", "f").await;
            let offsets: Vec<u64> = page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(offset)
                .collect();
            assert_eq!(
                offsets,
                (oldest..oldest + 5).collect::<Vec<_>>(),
                "after {after}, {kept} kept: {page}"
            );
            assert_eq!(page["more"], true);
        }
        // From there on, forward to the newest: every kept event once.
        let mut after = oldest - 1;
        let mut seen = Vec::new();
        loop {
            ada.send(&json!({"type": "history", "after": after, "limit": 200, "nonce": "on"}))
                .await;
            let page = ada.error_or("history", "on").await;
            let offsets: Vec<u64> = page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(offset)
                .collect();
            after = *offsets.last().expect("a page with more has events");
            seen.extend(offsets);
            if page["more"] == false {
                break;
            }
        }
        assert_eq!(seen, (oldest..=last).collect::<Vec<_>>(), "{kept} kept");
        server.stop().await;
    }
}
