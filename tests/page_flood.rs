//! The page under a flood, in a test binary of its own: cargo runs test binaries one
//! after another, so no other browser test shares the machine's two cores with it (and
//! its two floods take turns). The soak runs beside the whole suite in CI, though, so
//! the bound is a generous one (`PATIENCE`, 10 s): a page that lays out each message on
//! its own took 42–51 s.
//!
//! Ignored by a bare `cargo test`, like the other browser tests; `.ci/run` runs it.

use std::time::{Duration, Instant};

use chat_server::Config;
use serde_json::json;
use testkit::chromium::*;
use testkit::v2::{Say, V2, offset};
use testkit::{PATIENCE, TestServer};

/// One flood at a time: cargo runs the tests of a binary side by side, and two floods
/// would share the two cores this binary exists to keep to itself.
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A flood is shown as fast as it arrives: every message of a burst within one frame or
/// a few, not one forced layout per message (which took 42–51 s for this burst).
#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn a_flood_is_shown_as_it_arrives_and_the_cap_is_kept() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let driver = ChromeDriver::start().await;
    let server = TestServer::start_with(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let mut talker = server.join("5", "5").await;
    let count_shown = "return document.querySelectorAll('#messages li').length;";

    for (burst, total) in [(5000, 5000), (6000, 11_000)] {
        for n in total - burst..total {
            talker.send(&format!("flood {n}")).await;
        }
        // The talker's own echo of the last message: the server has sent it to the page.
        let last = format!("Client #5: flood {}", total - 1);
        while talker.recv().await != last {}
        let delivered = Instant::now();
        let deadline = delivered + PATIENCE;
        loop {
            let newest = message_at(&page, "last").await;
            if newest.as_str() == Some(last.as_str()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{burst} messages not shown within {PATIENCE:?} of their delivery; the page shows {newest}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "{burst} messages shown {:?} after the last was delivered",
            delivered.elapsed()
        );
    }
    // The page keeps at most 10 000 messages: the newest ones, in order.
    assert_eq!(eval(&page, count_shown).await, json!(10_000));
    let oldest = message_at(&page, "first").await;
    assert_eq!(oldest, json!("Client #5: flood 1000"));
    page.close().await.expect("close");
}

/// The flood of issue 30's point 6 over chat.v2.json: 5 000 messages, one in ten a
/// reply, with a reaction after every ten, each drawn where it belongs; shown within
/// the same bound after the last was delivered (the figure is printed).
#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn a_flood_with_replies_and_reactions_in_the_mix_is_shown_as_it_arrives() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let driver = ChromeDriver::start().await;
    let server = TestServer::start_with(Config {
        rate_limit: None,
        // The talker reads its echoes only at the end.
        max_queue_bytes: 8 * 1024 * 1024,
        ..Config::default()
    })
    .await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let mut talker = V2::connect(&server, "/ws/5").await;
    talker.seated().await;
    talker.say("start", None).await;
    let start = offset(&talker.next_of("message").await);
    // Blocks of eleven events: nine messages, a reply to the block's first, a reaction
    // to it. Nobody else speaks, so the offsets are known in advance.
    const BLOCKS: u64 = 500;
    for block in 0..BLOCKS {
        let first = start + 1 + 11 * block;
        for n in 0..9 {
            talker.say(&format!("flood {block}.{n}"), None).await;
        }
        let reply = Say {
            reply_to: Some(first),
            ..Say::default()
        };
        talker.say_with(&format!("reply {block}"), reply).await;
        talker.react(first, "👍", None).await;
    }
    talker.say("the end", None).await;
    talker
        .next_matching_within(6000, |frame| frame["text"] == "the end")
        .await;
    let delivered = Instant::now();
    let deadline = delivered + PATIENCE;
    loop {
        let newest = message_at(&page, "last").await;
        if newest.as_str() == Some("Client #5: the end") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flood not shown within {PATIENCE:?} of its delivery; the page shows {newest}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "5 000 messages, 500 of them replies, and 500 reactions shown {:?} after the last was delivered",
        delivered.elapsed()
    );
    let drawn = eval(
        &page,
        "return [document.querySelectorAll('#messages li.said').length, \
                 document.querySelectorAll('#messages .reply-quote').length, \
                 Array.from(document.querySelectorAll('#messages .reaction'), r => r.textContent) \
                   .filter(text => text === '👍 1').length, \
                 document.querySelector('#messages li:last-child').previousElementSibling \
                   .querySelector('.reply-quote').textContent];",
    )
    .await;
    assert_eq!(
        drawn,
        json!([5002, 500, 500, "↪ Client #5: flood 499.0"]),
        "start, 4 500 messages and 500 replies, the end; every reaction on its message"
    );
    page.close().await.expect("close");
}
