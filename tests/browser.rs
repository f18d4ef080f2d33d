//! The browser page in a real browser: Debian's chromium, driven through chromedriver.
//!
//! Ignored by a bare `cargo test` so that it stays hermetic; `.ci/run` installs chromium
//! and chromium-driver and runs these with `cargo test -- --include-ignored`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chat_server::Config;
use fantoccini::Locator;
use serde_json::{Value, json};
use testkit::chromium::*;
use testkit::{TestServer, eventually, within};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn two_pages_a_websocket_client_and_chat_tui_chat_together() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let address = server.address;
    let url = format!("http://{address}/");

    let first = driver.open(900, 600).await;
    first.goto(&url).await.expect("load the page");
    let first_id = client_id(&first).await;
    assert!(first_id.len() >= 13, "a Date.now() id: {first_id}");
    wait_for_message(&first, &format!("Client #{first_id} has entered the chat")).await;
    wait_for_status(&first, "connected").await;
    let focused = eval(&first, "return document.activeElement.id;").await;
    assert_eq!(focused, json!("messageText"), "the input has the focus");

    let second = driver.open(900, 600).await;
    second.goto(&url).await.expect("load the page");
    let second_id = client_id(&second).await;
    assert_ne!(first_id, second_id);
    wait_for_message(
        &second,
        &format!("Client #{second_id} has entered the chat"),
    )
    .await;
    wait_for_message(&first, &format!("Client #{second_id} has entered the chat")).await;

    let mut plain = server.join("900", "900").await;
    // A scratch XDG_STATE_HOME and XDG_CONFIG_HOME: nothing read from or written to
    // the user's home.
    let home = std::env::temp_dir().join(format!("chat-tui-home-{}", std::process::id()));
    let home = home.to_str().expect("a UTF-8 path");
    let mut tui = Command::new(chat_tui_binary())
        .env("XDG_STATE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .args([
            "--plain",
            "--server",
            &format!("ws://{address}"),
            "--id",
            "901",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-tui");
    let mut tui_lines = BufReader::new(tui.stdout.take().expect("stdout")).lines();
    let mut tui_line = async || {
        within("a line from chat-tui", tui_lines.next_line())
            .await
            .expect("read")
            .expect("a line")
    };
    assert_eq!(tui_line().await, "Client #901 has entered the chat");
    wait_for_message(&first, "Client #901 has entered the chat").await;
    assert_eq!(plain.recv().await, "Client #901 has entered the chat");

    // Typed in one page, it reaches everyone verbatim, markup and emoji included.
    let text = "<b>not bold</b> & 🎉 ünïcode";
    say(&first, text).await;
    let expected = format!("Client #{first_id}: {text}");
    wait_for_message(&second, &expected).await;
    assert_eq!(plain.recv().await, expected);
    assert_eq!(tui_line().await, expected);
    let injected = eval(
        &second,
        "return document.querySelectorAll('#messages b').length;",
    )
    .await;
    assert_eq!(
        injected,
        json!(0),
        "network text is inserted as text, never as HTML"
    );
    // The page shows messages at its next animation frame: wait for it.
    wait_for_message(&first, &expected).await;
    let mine = eval(
        &first,
        "return document.querySelector('#messages li:last-child').className;",
    )
    .await;
    assert!(
        mine.as_str().unwrap().contains("mine"),
        "own messages are marked: {mine}"
    );
    assert_eq!(
        input_value(&first).await,
        "",
        "the input is cleared after sending"
    );

    // Real key presses work too.
    type_keys(&second, "typed on the keyboard\u{E007}").await;
    let typed = format!("Client #{second_id}: typed on the keyboard");
    wait_for_message(&first, &typed).await;
    assert_eq!(plain.recv().await, typed);
    assert_eq!(tui_line().await, typed);

    // Messages from the other clients show up in the pages.
    plain.send("from a plain client").await;
    wait_for_message(&second, "Client #900: from a plain client").await;
    screenshot(&first, "chat.png").await;

    // Closing a page is a leave.
    second.close().await.expect("close the second page");
    wait_for_message(&first, &format!("Client #{second_id} has left the chat")).await;

    // The server goes away: the page says so, keeps what is typed, and comes back.
    drop(plain);
    drop(tui);
    server.stop().await;
    wait_for_status(&first, "reconnecting").await;
    say(&first, "typed while offline").await;
    assert_eq!(
        input_value(&first).await,
        "typed while offline",
        "kept, not lost"
    );
    let notice = first.find(Locator::Id("notice")).await.expect("#notice");
    assert!(
        notice
            .text()
            .await
            .expect("text")
            .contains("your message is kept")
    );
    screenshot(&first, "offline.png").await;

    let listener = TcpListener::bind(address).await.expect("rebind the port");
    let server = TestServer::start_on(listener, Config::default());
    let joined_again = format!("Client #{first_id} has entered the chat");
    wait_until(&first, "a second join", |shown| {
        shown.iter().filter(|text| **text == joined_again).count() == 2
    })
    .await;
    wait_for_status(&first, "connected").await;
    // Without --data-dir the new server has none of the old one's history: said so.
    wait_until(&first, "the restart said", |shown| {
        shown.iter().any(|text| {
            *text == "The server started again without its history: what was said before is gone."
        })
    })
    .await;
    let mut plain = server.join("902", "902").await;
    press_enter(&first).await;
    assert_eq!(
        plain.recv().await,
        format!("Client #{first_id}: typed while offline")
    );
    first.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn the_page_fits_a_phone_screen() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let page = driver.open_phone(375, 740).await;
    load_the_chat(&page, &server).await;
    say(
        &page,
        &"a long line without spaces ".repeat(3).replace(' ', "_"),
    )
    .await;
    wait_until(&page, "the long line", |shown| shown.len() == 2).await;
    let width = eval(&page, "return window.innerWidth;").await;
    assert_eq!(width, json!(375), "the phone's viewport");
    let overflow = eval(
        &page,
        "return document.documentElement.scrollWidth - window.innerWidth;",
    )
    .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "no sideways scrolling: {overflow}"
    );
    // The header is one row: everything shown in it starts at the same height.
    let rows = eval(
        &page,
        "const shown = Array.from(document.querySelectorAll('header > *')) \
           .filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 1); \
         return [shown.length, new Set(shown.map(e => Math.round(e.getBoundingClientRect().top / 8))).size];",
    )
    .await;
    assert!(
        rows[0].as_i64().unwrap() >= 3,
        "the id, the status, who is here: {rows}"
    );
    assert_eq!(rows[1], json!(1), "one row: {rows}");
    screenshot(&page, "phone.png").await;
    page.close().await.expect("close");
}

/// The page opened straight from disk talks to `ws://localhost:8000`, as the tutorial's
/// does; so does the tutorial's original page, unchanged. Needs port 8000 free.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn pages_opened_from_disk_work_against_port_8000() {
    let listener = port_8000().await;
    let server = TestServer::start_on(listener, Config::default());
    let driver = ChromeDriver::start().await;
    let mut watcher = server.join("900", "900").await;
    let root = testkit::repository();

    for page_file in ["client/index.html", "tests/tutorial_page.html"] {
        let page = driver.open(900, 600).await;
        let url = format!("file://{}", root.join(page_file).display());
        page.goto(&url).await.expect("open the file");
        let id = client_id(&page).await;
        let joined = format!("Client #{id} has entered the chat");
        wait_for_message(&page, &joined).await;
        assert_eq!(watcher.recv().await, joined, "{page_file}");

        type_keys(&page, "hello from disk\u{E007}").await;
        let said = format!("Client #{id}: hello from disk");
        assert_eq!(watcher.recv().await, said, "{page_file}");
        wait_for_message(&page, &said).await;

        page.close().await.expect("close");
        assert_eq!(
            watcher.recv().await,
            format!("Client #{id} has left the chat")
        );
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn the_pane_stays_at_the_bottom_unless_scrolled_up() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start_with(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let page = driver.open(600, 400).await;
    load_the_chat(&page, &server).await;

    let mut talker = server.join("5", "5").await;
    for n in 0..40 {
        talker.send(&format!("line {n}")).await;
    }
    wait_for_message(&page, "Client #5: line 39").await;
    let distance_from_bottom = "const m = document.getElementById('messages'); return m.scrollHeight - m.scrollTop - m.clientHeight;";
    assert!(
        eval(&page, distance_from_bottom).await.as_f64().unwrap() < 2.0,
        "pinned to the newest"
    );

    // Scrolled up, new messages do not move the view, and a button counts them.
    eval(
        &page,
        "document.getElementById('messages').scrollTop = 0; return 0;",
    )
    .await;
    talker.send("while you read").await;
    talker.send("and another").await;
    wait_for_message(&page, "Client #5: and another").await;
    let scroll_top = eval(
        &page,
        "return document.getElementById('messages').scrollTop;",
    )
    .await;
    assert_eq!(scroll_top.as_f64(), Some(0.0), "the view did not move");
    let button = page
        .find(Locator::Id("new-below"))
        .await
        .expect("#new-below");
    assert!(
        button.is_displayed().await.expect("visible?"),
        "the new-messages button shows"
    );
    assert_eq!(button.text().await.expect("text"), "2 new ↓");

    button.click().await.expect("click");
    assert!(
        eval(&page, distance_from_bottom).await.as_f64().unwrap() < 2.0,
        "back at the newest"
    );
    page.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn the_page_is_served_with_a_strict_policy_and_works_under_it() {
    let server = TestServer::start().await;
    let get = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let response = testkit::raw_http(server.address, get).await;
    assert_eq!(response.status, 200);
    let policy = response
        .header("content-security-policy")
        .expect("a Content-Security-Policy");
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    let etag = response.header("etag").expect("an ETag").to_owned();
    let again = format!("GET / HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {etag}\r\n\r\n");
    assert_eq!(testkit::raw_http(server.address, &again).await.status, 304);

    // Under that policy the page runs its script (it connects and chats), has its style
    // (the message list scrolls by itself), and has its icon without asking for one.
    let driver = ChromeDriver::start().await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    wait_for_status(&page, "connected").await;
    say(&page, "under a strict policy").await;
    let id = client_id(&page).await;
    wait_for_message(&page, &format!("Client #{id}: under a strict policy")).await;
    let styled = eval(
        &page,
        "return getComputedStyle(document.getElementById('messages')).overflowY;",
    )
    .await;
    assert_eq!(styled, json!("auto"), "the inline style applied");
    let icon = eval(
        &page,
        "var icon = document.querySelector('link[rel=icon]'); return icon && icon.href.slice(0, 5);",
    )
    .await;
    assert_eq!(icon, json!("data:"));
    // Folding, unfolding and the growing input work under it too, and nothing the
    // page did, from its load on, was refused.
    say(&page, &"a tall message\n".repeat(20)).await;
    wait_for_value(
        &page,
        "the tall message to arrive folded",
        "return document.querySelectorAll('#messages .folded .unfold').length;",
        json!(1),
    )
    .await;
    page.find(Locator::Css("#messages .unfold"))
        .await
        .expect("a folded message")
        .click()
        .await
        .expect("unfold it");
    wait_for_value(
        &page,
        "the message to unfold",
        "return document.querySelectorAll('#messages .folded').length;",
        json!(0),
    )
    .await;
    let refused: Vec<String> = console(&page)
        .await
        .into_iter()
        .filter(|line| line.contains("Content Security Policy"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    page.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn in_forced_colours_the_buttons_keep_their_outline() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    emulate_forced_colours(&page).await;
    let forced = eval(
        &page,
        "return matchMedia('(forced-colors: active)').matches;",
    )
    .await;
    assert_eq!(forced, json!(true), "the emulation took");
    let send = eval(
        &page,
        "const style = getComputedStyle(document.querySelector('#compose button')); \
         return [style.borderTopStyle, parseFloat(style.borderTopWidth) >= 1, \
                 style.borderTopColor !== style.backgroundColor];",
    )
    .await;
    assert_eq!(
        send,
        json!(["solid", true, true]),
        "the Send button is outlined"
    );
    screenshot(&page, "forced-colours.png").await;
    page.close().await.expect("close");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn the_room_comes_from_the_address() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let mut in_ops = server.join("7?room=ops", "7").await;
    let mut in_main = server.join("8", "8").await;
    let page = driver.open(900, 600).await;
    page.goto(&format!("http://{}/#room=ops", server.address))
        .await
        .expect("load the page");
    let id = client_id(&page).await;
    let joined = format!("Client #{id} has entered the chat");
    wait_for_message(&page, &joined).await;
    assert_eq!(in_ops.recv().await, joined);
    wait_for_status(&page, "connected").await;
    let detail = text_of(&page, "status-detail").await;
    assert!(detail.contains("room ops"), "{detail}");
    say(&page, "in ops").await;
    assert_eq!(in_ops.recv().await, format!("Client #{id}: in ops"));
    in_main.expect_silence().await;
    page.close().await.expect("close");
    server.stop().await;
}

/// Stops `server`, waits until `page` has a long wait before its next attempt, and starts
/// a server on the same address again: returns it and when the page will try next.
async fn outage_with_a_long_countdown(page: &Page, server: TestServer) -> (TestServer, f64) {
    let address = server.address;
    server.stop().await;
    wait_for_status(page, "reconnecting").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let retry_at = loop {
        // The waits double with each failed attempt: 0.5–1 s, 1–2, 2–4, 4–8 s.
        let left = eval(page, "return [retryAt - Date.now(), retryAt];").await;
        if left[0].as_f64().unwrap_or(0.0) > 3000.0 {
            break left[1].as_f64().expect("retryAt");
        }
        assert!(Instant::now() < deadline, "the wait never grew: {left}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listener = TcpListener::bind(address).await.expect("rebind the port");
    (TestServer::start_on(listener, Config::default()), retry_at)
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn retry_now_and_a_network_coming_back_reconnect_at_once() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    wait_for_status(&page, "connected").await;

    let (server, retry_at) = outage_with_a_long_countdown(&page, server).await;
    // The countdown ticks beside the status, which a screen reader hears: the status
    // itself does not change while the page waits.
    let counting_from = eval(
        &page,
        "window.statusChanges = 0; \
         new MutationObserver(() => window.statusChanges++).observe( \
           document.getElementById('status'), {childList: true, characterData: true, subtree: true}); \
         return document.getElementById('status-detail').textContent;",
    )
    .await;
    // Until the countdown has ticked: the status had its chance to be rewritten too.
    let counted = eventually("the countdown to go on", async || {
        let counted = eval(
            &page,
            "return [window.statusChanges, document.getElementById('status-detail').textContent];",
        )
        .await;
        (counted[1] != counting_from).then_some(counted)
    })
    .await;
    assert_eq!(
        counted[0],
        json!(0),
        "the status was not rewritten each second"
    );
    let button = page.find(Locator::Id("retry")).await.expect("#retry");
    assert!(
        button.is_displayed().await.expect("shown"),
        "Retry now is offered"
    );
    button.click().await.expect("click Retry now");
    wait_for_status(&page, "connected").await;
    let now = eval(&page, "return Date.now();").await;
    assert!(
        now.as_f64().expect("a time") < retry_at,
        "before the countdown ended"
    );
    let button = page.find(Locator::Id("retry")).await.expect("#retry");
    assert!(!button.is_displayed().await.expect("hidden"));

    // The browser saying the network is back does the same.
    let (_server, retry_at) = outage_with_a_long_countdown(&page, server).await;
    eval(
        &page,
        "window.dispatchEvent(new Event('online')); return null;",
    )
    .await;
    wait_for_status(&page, "connected").await;
    let now = eval(&page, "return Date.now();").await;
    assert!(
        now.as_f64().expect("a time") < retry_at,
        "before the countdown ended"
    );
    page.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn a_smaller_window_keeps_the_pane_pinned_and_your_own_message_brings_you_down() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start_with(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let page = driver.open(600, 500).await;
    load_the_chat(&page, &server).await;
    let mut talker = server.join("5", "5").await;
    for n in 0..40 {
        talker.send(&format!("line {n}")).await;
    }
    wait_for_message(&page, "Client #5: line 39").await;
    let distance = "const m = document.getElementById('messages'); return m.scrollHeight - m.scrollTop - m.clientHeight;";
    let at_bottom = async || eval(&page, distance).await.as_f64().expect("a distance") < 2.0;
    assert!(at_bottom().await);

    // A smaller window: still at the newest.
    page.set_window_size(600, 300).await.expect("resize");
    eventually("the pane to stay pinned on a resize", async || {
        at_bottom().await.then_some(())
    })
    .await;

    // PageUp from the input scrolls the messages.
    let input = page.find(Locator::Id("messageText")).await.expect("input");
    input.send_keys("\u{E00E}").await.expect("PageUp");
    assert!(!at_bottom().await, "PageUp scrolled up");

    // Scrolled up, your own message brings you back down to it.
    say(&page, "my own").await;
    let id = client_id(&page).await;
    wait_for_message(&page, &format!("Client #{id}: my own")).await;
    eventually("your own message to bring you down", async || {
        at_bottom().await.then_some(())
    })
    .await;
    let button = page
        .find(Locator::Id("new-below"))
        .await
        .expect("#new-below");
    assert!(
        !button.is_displayed().await.expect("hidden"),
        "nothing new below"
    );
    page.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs chromium, chromium-driver and axe-core; .ci/run runs it"]
async fn axe_core_finds_nothing_in_either_theme_at_desktop_and_phone_widths() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let mut other = server.join("7", "7").await;
    for theme in [Theme::Light, Theme::Dark] {
        for (width, height, phone) in [(1000, 700, false), (390, 800, true)] {
            let page = driver.open_themed(width, height, phone, theme).await;
            load_the_chat(&page, &server).await;
            let dark = eval(
                &page,
                "return matchMedia('(prefers-color-scheme: dark)').matches;",
            )
            .await;
            assert_eq!(dark, json!(theme == Theme::Dark), "{theme:?}");
            say(&page, "a message of mine").await;
            other.send("and one of someone else's").await;
            wait_for_message(&page, "Client #7: and one of someone else's").await;
            // A direction control shown, and a folded tall message with its button.
            other
                .send(&format!("\u{202E}{}", "tall\n".repeat(20)))
                .await;
            within("the folded message", async {
                // Earlier pages' tall messages are in the history too.
                while eval(&page, "return document.querySelectorAll('.unfold').length;").await
                    == json!(0)
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            wait_for_status(&page, "connected").await;
            // The "who is here" panel open, with the name field in it.
            click(&page, "people-toggle").await;
            let name = format!(
                "axe-{}-{}.png",
                if theme == Theme::Dark {
                    "dark"
                } else {
                    "light"
                },
                if phone { "phone" } else { "desktop" }
            );
            screenshot(&page, &name).await;
            let violations = accessibility_violations(&page).await;
            assert!(
                violations.is_empty(),
                "{theme:?} {width}px: {violations:#?}"
            );
            page.close().await.expect("close the page");
        }
    }
    server.stop().await;
}

/// Text that would reorder itself is isolated and shows its controls, a tall message is
/// folded until asked for, and a message over the server's limit is kept, whether the
/// page knew the limit or the server had to refuse it.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn hostile_and_tall_text_is_contained_and_an_oversized_message_is_kept() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start_with(Config {
        max_message_bytes: 200,
        ..Config::default()
    })
    .await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let id = client_id(&page).await;
    let mut other = server.join("7", "7").await;

    other.send("invoice_\u{202E}fdp.exe").await;
    other.recv().await; // its own echo
    wait_for_message(&page, "Client #7: invoice_U+202Efdp.exe").await;
    let shown = eval(
        &page,
        "const li = document.querySelector('#messages li:last-child'); \
         return [li.dir, getComputedStyle(li).unicodeBidi, getComputedStyle(li).overflowY, \
                 li.querySelector('.control').textContent];",
    )
    .await;
    assert_eq!(shown, json!(["auto", "isolate", "clip", "U+202E"]));

    let tall = "line\n".repeat(30);
    other.send(&tall).await;
    other.recv().await;
    let folded = "const li = document.querySelector('#messages li:last-child'); \
                  return [li.classList.contains('folded'), li.getBoundingClientRect().height < 300];";
    wait_for_value(
        &page,
        "the tall message to be shown folded",
        folded,
        json!([true, true]),
    )
    .await;
    page.find(Locator::Css("#messages li:last-child .unfold"))
        .await
        .expect("an unfold button")
        .click()
        .await
        .expect("unfold");
    assert_eq!(eval(&page, folded).await, json!([false, false]), "unfolded");

    // Whitespace alone is folded too.
    other.send(&"\n".repeat(40)).await;
    other.recv().await;
    wait_for_value(
        &page,
        "the blank message to be folded",
        folded,
        json!([true, true]),
    )
    .await;

    // Over the limit the page knows: not sent, kept, and said.
    let long = "x".repeat(300);
    say(&page, &long).await;
    assert_eq!(input_value(&page).await, long, "the text is kept");
    let notice = page.find(Locator::Id("notice")).await.expect("#notice");
    assert!(notice.is_displayed().await.expect("shown"));
    let said = notice.text().await.expect("notice text");
    assert!(
        said.contains("Too long to send: ") && said.contains("at most 200"),
        "{said}"
    );
    other.expect_silence().await;

    // A limit the page did not know: the server closes with 1009, and the text comes back.
    eval(&page, "maxMessageBytes = 1e9; return null;").await;
    press_enter(&page).await;
    within("the refused text to come back", async {
        while input_value(&page).await != long {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let said = notice.text().await.expect("notice text");
    assert!(
        said.contains("refused your last message as too long"),
        "{said}"
    );
    assert_eq!(
        other.recv().await,
        format!("Client #{id} has left the chat"),
        "nothing of the refused message reached the room"
    );
    wait_for_status(&page, "connected").await;
    let said = notice.text().await.expect("notice text");
    assert!(
        said.contains("refused"),
        "the notice outlives the reconnection: {said}"
    );
    page.close().await.expect("close");
    server.stop().await;
}

/// Whether the page's message `text` is marked as still on its way.
async fn is_sending(page: &Page, text: &str) -> Value {
    page.execute(
        "const item = Array.from(document.querySelectorAll('#messages li.mine')) \
           .find(li => li.textContent.includes(arguments[0])); \
         return item ? item.classList.contains('sending') : null;",
        vec![json!(text)],
    )
    .await
    .expect("read the message's mark")
}

/// How many of the page's messages are exactly `text`.
async fn shown_times(page: &Page, text: &str) -> usize {
    messages(page)
        .await
        .iter()
        .filter(|shown| *shown == text)
        .count()
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn over_v1_the_page_shows_the_history_who_is_here_and_when() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let mut seven = server.join("7", "7").await;
    seven.send("before you came").await;
    seven.send("and again").await;
    seven.recv().await;
    seven.recv().await;

    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let id = client_id(&page).await;
    wait_for_message(&page, "Client #7: and again").await;
    let shown = messages(&page).await;
    let history = shown
        .iter()
        .position(|text| text == "Client #7: before you came")
        .expect("the history is shown");
    let own_join = format!("Client #{id} has entered the chat");
    assert!(
        history < shown.iter().position(|text| *text == own_join).unwrap(),
        "the history comes before your own join: {shown:?}"
    );
    let details = eval(
        &page,
        "const items = Array.from(document.querySelectorAll('#messages li.said')); \
         const last = items[items.length - 1]; \
         return [items[0].classList.contains('grouped'), last.classList.contains('grouped'), \
                 items[0].querySelector('time').textContent.length > 0, \
                 items[0].querySelector('.who').className, \
                 getComputedStyle(items[0].querySelector('.who')).display, \
                 getComputedStyle(last.querySelector('.who')).display];",
    )
    .await;
    assert_eq!(
        details,
        json!([false, true, true, "who c7", "inline", "none"]),
        "a sender line, in #7's colour (its id's hash, 55, mod 8), and a time on the first of a run"
    );

    assert_eq!(text_of(&page, "people-toggle").await, "2 here");
    click(&page, "people-toggle").await;
    let listed = text_of(&page, "people-list").await;
    assert!(
        listed.contains("Client #7") && listed.contains(&format!("Client #{id} (you)")),
        "{listed}"
    );
    // A second connection of #7 (another window) neither enters nor leaves.
    let seven_again = server.join("7", "7").await;
    while seven.recv().await != "Client #7 has entered the chat" {}
    seven_again.close().await;
    assert_eq!(seven.recv().await, "Client #7 has left the chat");
    seven.send("still here").await;
    wait_for_message(&page, "Client #7: still here").await;
    assert_eq!(
        shown_times(&page, "Client #7 has entered the chat").await,
        1,
        "the first connection's, from the history"
    );
    assert_eq!(shown_times(&page, "Client #7 has left the chat").await, 0);
    assert_eq!(text_of(&page, "people-toggle").await, "2 here");

    seven.close().await;
    wait_for_message(&page, "Client #7 has left the chat").await;
    let count = "return document.getElementById('people-toggle').textContent;";
    wait_for_value(
        &page,
        "the count to follow the leave",
        count,
        json!("1 here"),
    )
    .await;
    page.close().await.expect("close");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn over_v1_the_page_resumes_without_losing_or_repeating_and_shows_a_gap() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start_with(Config {
        history: 4,
        ..Config::default()
    })
    .await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let id = client_id(&page).await;
    let mut seven = server.join("7", "7").await;
    seven.send("before the drop").await;
    wait_for_message(&page, "Client #7: before the drop").await;
    let left = format!("Client #{id} has left the chat");

    // The connection drops; something is said meanwhile; the page comes back.
    eval(&page, "ws.close(); return null;").await;
    while seven.recv().await != left {}
    seven.send("while you were away").await;
    wait_for_message(&page, "Client #7: while you were away").await;
    wait_for_status(&page, "connected").await;
    assert_eq!(
        shown_times(&page, "Client #7: while you were away").await,
        1
    );
    assert_eq!(
        shown_times(&page, "Client #7: before the drop").await,
        1,
        "nothing twice"
    );
    assert_eq!(
        shown_times(&page, &left).await,
        1,
        "your own leave, which you missed"
    );
    let gap = "Some messages from while you were away could not be recovered.";
    assert_eq!(shown_times(&page, gap).await, 0, "recovered");

    // Away for longer than the room keeps: the page says so.
    eval(&page, "ws.close(); return null;").await;
    while seven.recv().await != left {}
    for n in 0..6 {
        seven.send(&format!("missed {n}")).await;
    }
    wait_for_message(&page, "Client #7: missed 5").await;
    wait_for_message(&page, gap).await;
    page.close().await.expect("close");
    server.stop().await;
}

/// Messages the server never read before it went are sent again once the page is back,
/// each once; one the server had already sent back is not.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn over_v1_messages_lost_with_the_connection_are_sent_again_once() {
    let driver = ChromeDriver::start().await;
    // One message a minute: the second waits, unread, in the socket.
    let server = TestServer::start_with(Config {
        rate_limit: Some(chat_server::RateLimit {
            per_second: chat_server::RateLimit::MIN_PER_SECOND,
            burst: 1,
        }),
        ..Config::default()
    })
    .await;
    let address = server.address;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let id = client_id(&page).await;
    for text in ["first", "second", "third"] {
        say(&page, text).await;
    }
    within("the first to be sent back", async {
        while is_sending(&page, "first").await != json!(false) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        is_sending(&page, "second").await,
        json!(true),
        "unread by the server"
    );
    assert_eq!(is_sending(&page, "third").await, json!(true));

    server.stop().await;
    let listener = TcpListener::bind(address).await.expect("rebind the port");
    let server = TestServer::start_on(listener, Config::default());
    let mut watcher = server.join("900", "900").await;
    assert_eq!(
        watcher.recv().await,
        format!("Client #{id} has entered the chat")
    );
    assert_eq!(watcher.recv().await, format!("Client #{id}: second"));
    assert_eq!(watcher.recv().await, format!("Client #{id}: third"));
    watcher.expect_silence().await;
    within("the resent messages to be marked sent", async {
        while is_sending(&page, "third").await != json!(false) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for text in ["first", "second", "third"] {
        assert_eq!(
            shown_times(&page, &format!("Client #{id}: {text}")).await,
            1,
            "{text}"
        );
    }
    // Where the server put them, as every other page shows them: after the page's
    // return to the room, not where they were typed.
    let shown = messages(&page).await;
    let position = |text: &str| shown.iter().rposition(|shown| shown == text);
    let rejoined = position(&format!("Client #{id} has entered the chat"));
    let second = position(&format!("Client #{id}: second"));
    assert!(rejoined.is_some() && second > rejoined, "{shown:?}");
    page.close().await.expect("close");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn unread_messages_are_counted_in_the_title_and_notifications_wait_for_a_click() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let mut seven = server.join("7", "7").await;

    // Permission is asked for only after a click (the browser's prompt cannot be
    // answered here, so the request is recorded instead).
    let asked = "return window.askedToNotify || 0;";
    eval(
        &page,
        "Notification.requestPermission = () => { \
           window.askedToNotify = (window.askedToNotify || 0) + 1; \
           return Promise.resolve('denied'); }; return null;",
    )
    .await;
    assert_eq!(eval(&page, asked).await, json!(0), "not asked on load");
    click(&page, "notify").await;
    assert_eq!(eval(&page, asked).await, json!(1), "asked after the click");

    let set_hidden = "Object.defineProperty(document, 'hidden', \
                        { configurable: true, get: () => arguments[0] }); \
                      document.dispatchEvent(new Event('visibilitychange'));";
    page.execute(set_hidden, vec![json!(true)])
        .await
        .expect("hide");
    seven.send("one").await;
    seven.send("two").await;
    let title = "return document.title;";
    wait_for_value(&page, "the title to count two", title, json!("(2) Chat")).await;
    page.execute(set_hidden, vec![json!(false)])
        .await
        .expect("show");
    assert_eq!(eval(&page, title).await, json!("Chat"));
    wait_for_message(&page, "Client #7: two").await;
    let shown = messages(&page).await;
    let divider = shown
        .iter()
        .position(|text| text == "new messages")
        .expect("a divider");
    assert_eq!(shown[divider + 1], "Client #7: one", "{shown:?}");
    page.close().await.expect("close");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn shift_enter_starts_a_new_line_and_enter_sends() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let id = client_id(&page).await;
    let mut watcher = server.join("900", "900").await;
    // Shift is held until the null key releases it.
    type_keys(
        &page,
        "first line\u{E008}\u{E007}\u{E000}second line\u{E007}",
    )
    .await;
    assert_eq!(
        watcher.recv().await,
        format!("Client #{id}: first line\nsecond line")
    );
    assert_eq!(input_value(&page).await, "");
    page.close().await.expect("close");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn a_name_typed_in_the_page_is_shown_marked_unverified_with_the_id_in_a_tooltip() {
    let driver = ChromeDriver::start().await;
    let server = TestServer::start().await;
    let page = driver.open(900, 600).await;
    load_the_chat(&page, &server).await;
    let id = client_id(&page).await;

    // A name, typed in the "who is here" panel and confirmed with Enter, is used from
    // a new connection at once, shown as one line rather than a leave and a join.
    click(&page, "people-toggle").await;
    page.find(Locator::Id("name"))
        .await
        .expect("#name")
        .send_keys("Ada\u{E007}")
        .await
        .expect("type a name");
    wait_for_message(&page, &format!("Client #{id} is now ~Ada")).await;
    let mut grace = testkit::v1::V1::connect(&server, "/ws/7?name=Grace").await;
    grace.seated().await;
    grace.say("hello Ada", None).await;
    wait_for_message(&page, "~Grace: hello Ada").await;
    let tooltip = eval(
        &page,
        "const who = document.querySelector('#messages li.said:last-child .who'); \
         return [who.textContent, who.title];",
    )
    .await;
    assert_eq!(
        tooltip,
        json!([
            "~Grace",
            "Client #7 · name not verified: anyone can claim it"
        ])
    );
    say(&page, "hi Grace").await;
    // Past Grace's own message, the page's.
    let heard = loop {
        let event = grace.event().await;
        if event.id == id {
            break event;
        }
    };
    assert_eq!(
        heard.name.as_ref().map(chat::v1::DisplayName::as_str),
        Some("Ada")
    );
    let listed = text_of(&page, "people-list").await;
    assert!(
        listed.contains("~Grace (#7)") && listed.contains(&format!("~Ada (#{id}) (you)")),
        "{listed}"
    );
    screenshot(&page, "names.png").await;

    // The name is kept for the next visit.
    page.refresh().await.expect("reload");
    wait_for_value(
        &page,
        "the name to be kept",
        "return document.getElementById('name').value;",
        json!("Ada"),
    )
    .await;
    page.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn over_https_a_token_in_the_address_proves_the_id_and_name_and_leaves_the_address() {
    use chat_server::identity::{JwtSecret, Tokens};
    let scratch = testkit::process::Scratch::new("browser-tls");
    let ca = testkit::tls::TestCa::new("browser test CA");
    let (files, spki) = ca.issue_for_browser(scratch.path(), &["localhost"]);
    let secret = JwtSecret::new("a test secret of thirty-two bytes").expect("a secret");
    let server = TestServer::start_with(Config {
        tls: Some(files),
        jwt_secret: Some(secret.clone()),
        ..Config::default()
    })
    .await;
    let port = server.address.port();
    let tokens = Tokens::new(&secret);
    let ada = chat::v1::DisplayName::parse("Ada").expect("a name");
    let id = chat::ClientId::parse("42").expect("an id");
    let token = tokens.mint(&id, Duration::from_secs(600), Some(&ada));

    let driver = ChromeDriver::start().await;
    let page = driver.open_trusting(900, 600, &spki).await;
    page.goto(&format!("https://localhost:{port}/#room=ops&token={token}"))
        .await
        .expect("load the page over https");
    wait_for_message(&page, "Ada (#42) has entered the chat").await;
    let address = eval(
        &page,
        "return [location.href, document.getElementById('ws-id').textContent, \
                 document.getElementById('name').value, document.getElementById('name').readOnly];",
    )
    .await;
    assert_eq!(
        address,
        json!([
            format!("https://localhost:{port}/#room=ops"),
            "42",
            "Ada",
            true
        ]),
        "the token is gone from the address; the id and name are the token's"
    );
    let history_length = eval(&page, "return history.length;").await;
    assert_eq!(
        history_length,
        json!(2),
        "the blank page the browser opened with, and this one: the address was replaced, \
         so no entry with the token is left to go back to"
    );

    // A v1 client over wss in the same room hears the page, named and verified.
    let watcher_token = tokens.mint(
        &chat::ClientId::parse("7").expect("an id"),
        Duration::from_secs(600),
        None,
    );
    let connector = tokio_tungstenite::Connector::Rustls(ca.client_config());
    let request = testkit::v1::request(&format!(
        "wss://localhost:{port}/ws/7?room=ops&token={watcher_token}"
    ));
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
            .await
            .expect("wss");
    let mut watcher = testkit::v1::V1 {
        socket: testkit::Client { socket },
    };
    let welcome = watcher.seated().await;
    assert!(welcome.verified);
    say(&page, "over https").await;
    let said = watcher.event().await;
    assert_eq!(
        (
            said.id.as_str(),
            said.name.as_ref().map(|name| name.as_str())
        ),
        ("42", Some("Ada"))
    );
    wait_for_message(&page, "Ada: over https").await;
    page.close().await.expect("close");

    // An expired token: the page says so in a user's words, and stops retrying.
    let expired = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let now = jsonwebtoken::get_current_timestamp();
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "43", "exp": now - 600}),
            &EncodingKey::from_secret(b"a test secret of thirty-two bytes"),
        )
        .expect("sign")
    };
    let page = driver.open_trusting(900, 600, &spki).await;
    page.goto(&format!("https://localhost:{port}/#token={expired}"))
        .await
        .expect("load the page");
    wait_for_status(&page, "signed out").await;
    let notice = text_of(&page, "notice").await;
    assert!(notice.contains("Your sign-in has expired"), "{notice}");
    // Nothing retries by itself now, but Retry does: the server refuses it once more.
    let expired = testkit::refused_total("token_expired");
    let expired_refusals = || testkit::tls::metric(server.address, &ca, &expired);
    assert_eq!(
        eval(&page, "return [countdown === null, refused];").await,
        json!([true, true]),
        "no countdown to another attempt"
    );
    let before = expired_refusals().await;
    click(&page, "retry").await;
    within("Retry to try again", async {
        while expired_refusals().await <= before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    wait_for_status(&page, "signed out").await;
    page.close().await.expect("close");
}
