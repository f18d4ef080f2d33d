//! The operator's dashboard at `/admin` (issue 35), in real Chromium: closed without
//! credentials, refused with a wrong key, live with the operator's key (a join shows
//! within its next sample), a kick from the busiest rooms' member list, and axe-core
//! in both themes.

use chat_server::{ApiKeys, Config};
use fantoccini::Locator;
use serde_json::json;
use testkit::TestServer;
use testkit::chromium::*;
use testkit::v2::V2;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const KEY: &str = "an-operators-key-of-at-least-32-bytes-0123456789";

async fn server_with_a_key() -> TestServer {
    TestServer::start_with(Config {
        api_keys: ApiKeys::parse(KEY).expect("a good key"),
        ..Config::default()
    })
    .await
}

/// Types `keys` into the element with this `id`, as key presses.
async fn type_into(page: &Page, id: &str, keys: &str) {
    page.find(Locator::Id(id))
        .await
        .unwrap_or_else(|error| panic!("#{id}: {error}"))
        .send_keys(keys)
        .await
        .expect("type");
}

async fn shown(page: &Page, id: &str) -> bool {
    eval(
        page,
        &format!("return !document.getElementById('{id}').hidden;"),
    )
    .await
        == json!(true)
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn the_dashboard_asks_for_a_key_and_shows_a_join_live() {
    let driver = ChromeDriver::start().await;
    let server = server_with_a_key().await;
    let page = driver.open(1100, 800).await;
    page.goto(&format!("http://{}/admin", server.address))
        .await
        .expect("load the dashboard");
    // Without credentials: the sign-in form, and nothing of the figures.
    wait_for_value(
        &page,
        "the sign-in form",
        "return !document.getElementById('sign-in').hidden;",
        json!(true),
    )
    .await;
    assert!(!shown(&page, "dashboard").await);
    // The figures themselves are not served without a key, nor with a wrong one.
    let stats = format!("http://{}/api/v1/admin/stats", server.address);
    let status = eval(
        &page,
        &format!("return fetch('{stats}').then(r => r.status);"),
    )
    .await;
    assert_eq!(status, json!(401));

    // A wrong key, typed and entered from the keyboard: refused, in the server's words.
    type_into(&page, "key", "not-the-key\u{E007}").await;
    wait_for(&page, "the refusal", |why: &str| {
        why.starts_with("Refused: ")
    })
    .await;
    assert!(!shown(&page, "dashboard").await);

    type_into(&page, "key", &format!("{KEY}\u{E007}")).await;
    wait_for_value(
        &page,
        "the dashboard",
        "return !document.getElementById('dashboard').hidden;",
        json!(true),
    )
    .await;
    wait_for_value(
        &page,
        "no connection yet",
        "return document.getElementById('connections').textContent;",
        json!("0"),
    )
    .await;
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    ada.seated().await;
    // Live: the next sample has the join, without a reload.
    wait_for_value(
        &page,
        "one connection",
        "return document.getElementById('connections').textContent;",
        json!("1"),
    )
    .await;
    wait_for_value(
        &page,
        "main in the busiest rooms",
        "return Array.from(document.querySelectorAll('#busiest tr'), r => r.cells[0].textContent + ' ' + r.cells[1].textContent);",
        json!(["main 1"]),
    )
    .await;
    let violations = accessibility_violations(&page).await;
    assert!(violations.is_empty(), "light: {violations:#?}");

    // Moderation from there: main's members, and a kick through the API.
    eval(
        &page,
        "document.querySelector('#busiest button').click(); return null;",
    )
    .await;
    wait_for_value(
        &page,
        "main's members",
        "return Array.from(document.querySelectorAll('#members li span'), s => s.textContent);",
        json!(["Ada #7 (member)"]),
    )
    .await;
    eval(
        &page,
        "document.querySelector('#members button[aria-label=\"Kick #7\"]').click(); return null;",
    )
    .await;
    let mut socket = ada.socket;
    let (frame, _) = socket.recv_until_close().await;
    let frame = frame.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Library(4001), "{frame:?}");
    wait_for_value(
        &page,
        "the kick said",
        "return document.getElementById('members-why').textContent;",
        json!("#7 was kicked."),
    )
    .await;
    screenshot(&page, "admin.png").await;

    // Signed out: the key is forgotten, and a reload asks again.
    eval(
        &page,
        "document.getElementById('sign-out').click(); return null;",
    )
    .await;
    page.refresh().await.expect("reload");
    wait_for_value(
        &page,
        "the sign-in form again",
        "return !document.getElementById('sign-in').hidden;",
        json!(true),
    )
    .await;
    page.close().await.expect("close");
    server.stop().await;
}

/// The dark theme passes axe-core too, with every panel filled.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn the_dashboard_passes_axe_core_in_the_dark_theme() {
    let driver = ChromeDriver::start().await;
    let server = server_with_a_key().await;
    let page = driver.open_themed(1100, 800, false, Theme::Dark).await;
    page.goto(&format!("http://{}/admin", server.address))
        .await
        .expect("load the dashboard");
    let violations = accessibility_violations(&page).await;
    assert!(violations.is_empty(), "dark, signed out: {violations:#?}");
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    type_into(&page, "key", &format!("{KEY}\u{E007}")).await;
    wait_for_value(
        &page,
        "one connection",
        "return document.getElementById('connections').textContent;",
        json!("1"),
    )
    .await;
    eval(
        &page,
        "document.querySelector('#busiest button').click(); return null;",
    )
    .await;
    wait_for_value(
        &page,
        "the members",
        "return document.querySelectorAll('#members li').length;",
        json!(1),
    )
    .await;
    let violations = accessibility_violations(&page).await;
    assert!(violations.is_empty(), "dark: {violations:#?}");
    screenshot(&page, "admin-dark.png").await;
    page.close().await.expect("close");
    server.stop().await;
}

/// Waits until the sign-in form's reason satisfies `done`.
async fn wait_for(page: &Page, what: &str, done: impl Fn(&str) -> bool) {
    testkit::within(what, async {
        loop {
            let why = eval(
                page,
                "return document.getElementById('sign-in-why').textContent;",
            )
            .await;
            if why.as_str().is_some_and(&done) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await;
}
