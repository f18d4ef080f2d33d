//! The HTTP read API over real sockets: a room's events a page at a time, search, and
//! what is refused (bad bounds, unknown rooms, missing tokens, other people's DMs).

use chat_server::Config;
use serde_json::{Value, json};
use testkit::tokens::{server_with_tokens, token};
use testkit::v2::{V2, offset};
use testkit::{HttpResponse, TestServer, raw_http};

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

fn json_of(response: &HttpResponse) -> Value {
    serde_json::from_str(&response.body).unwrap_or_else(|error| panic!("{error}: {response:?}"))
}

#[tokio::test]
async fn events_and_search_page_through_a_room_and_bad_requests_are_answered() {
    let server = TestServer::start_with(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    for n in 0..30 {
        ada.say(&format!("note {n}"), None).await;
    }
    ada.say("the end", None).await;
    let last = offset(
        &ada.next_matching("the end", |f| f["text"] == "the end")
            .await,
    );

    let page = raw_http(
        server.address,
        &get(
            &format!("/api/v1/rooms/main/events?before={}&limit=10", last + 1),
            None,
        ),
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.header("content-type"), Some("application/json"));
    let page = json_of(&page);
    let offsets: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(offset)
        .collect();
    assert_eq!(offsets, (last - 9..=last).collect::<Vec<_>>());
    assert_eq!(
        (&page["type"], &page["more"]),
        (&json!("history"), &json!(true))
    );

    let forward = json_of(
        &raw_http(
            server.address,
            &get("/api/v1/rooms/main/events?after=0&limit=2", None),
        )
        .await,
    );
    assert_eq!(forward["events"][0]["type"], "join");
    assert_eq!(forward["events"][1]["text"], "note 0");

    let found = json_of(
        &raw_http(
            server.address,
            &get("/api/v1/rooms/main/search?q=NOTE%202&limit=5", None),
        )
        .await,
    );
    let texts: Vec<&str> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["note 29", "note 28", "note 27", "note 26", "note 25"]
    );
    assert_eq!(found["more"], true, "note 24 to 20, 12 and 2 as well");
    assert_eq!(found["type"], "search");

    for (path, status, says) in [
        ("/api/v1/rooms/main/events?before=-1", 400, "0 or more"),
        (
            "/api/v1/rooms/main/events?before=5&limit=100000",
            400,
            "a limit is 1 to 200",
        ),
        (
            "/api/v1/rooms/main/events?before=abc",
            400,
            "before is an integer",
        ),
        (
            "/api/v1/rooms/main/events?before=-",
            400,
            "before is an integer",
        ),
        // Past 64 bits: out of range, not "not an integer".
        (
            "/api/v1/rooms/main/events?before=-9223372036854775809",
            400,
            "0 or more",
        ),
        (
            "/api/v1/rooms/main/events?before=5&limit=99999999999999999999999999999999999999999",
            400,
            "a limit is 1 to 200",
        ),
        ("/api/v1/rooms/main/events", 400, "one of before and after"),
        ("/api/v1/rooms/main/search?q=&limit=5", 400, "a search is"),
        (
            "/api/v1/rooms/nowhere/events?before=5",
            404,
            "there is no room nowhere",
        ),
        (
            "/api/v1/rooms/no%20pe/events?before=5",
            400,
            "invalid room name",
        ),
        ("/api/v1/rooms/main/other", 404, "use /events or /search"),
        (
            "/api/v1/rooms/dm.7.8/events?after=0",
            403,
            "only on a server with --jwt-secret",
        ),
    ] {
        let response = raw_http(server.address, &get(path, None)).await;
        assert_eq!(response.status, status, "{path}: {response:?}");
        let error = json_of(&response);
        assert_eq!(error["type"], "error", "{path}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{path}: {error}"
        );
    }
    let post = raw_http(
        server.address,
        "POST /api/v1/rooms/main/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(json_of(&post)["type"], "error", "JSON, as the other errors");
}

#[tokio::test]
async fn with_tokens_a_reader_shows_one_and_a_direct_room_is_for_its_two() {
    let server = server_with_tokens().await;
    let mut ada = V2::connect(
        &server,
        &format!("/ws/7?room=dm.7.8&token={}", token("7", None)),
    )
    .await;
    ada.seated().await;
    ada.say("psst", None).await;
    ada.next_of("message").await;

    let path = "/api/v1/rooms/dm.7.8/events?before=100&limit=5";
    let missing = raw_http(server.address, &get(path, None)).await;
    assert_eq!(missing.status, 401, "{missing:?}");
    assert!(missing.header("www-authenticate").is_some());
    let forged = raw_http(server.address, &get(path, Some("a.b.c"))).await;
    assert_eq!(forged.status, 401, "{forged:?}");
    let carol = raw_http(server.address, &get(path, Some(&token("9", None)))).await;
    assert_eq!(carol.status, 403, "{carol:?}");
    assert!(carol.body.contains("for #7 and #8 only"), "{carol:?}");
    let bob = raw_http(server.address, &get(path, Some(&token("8", None)))).await;
    assert_eq!(bob.status, 200, "{bob:?}");
    assert_eq!(
        json_of(&bob)["events"].as_array().unwrap().last().unwrap()["text"],
        "psst"
    );
}

// On paused time, so that no token comes back between the reads.
#[tokio::test(start_paused = true)]
async fn reads_count_against_the_addresss_handshake_rate() {
    let server = TestServer::start_with(Config {
        handshake_rate_per_ip: Some(chat_server::RateLimit {
            per_second: 1.0,
            burst: 3,
        }),
        ..Config::default()
    })
    .await;
    let path = "/api/v1/rooms/main/events?after=0&limit=1";
    for _ in 0..3 {
        assert_eq!(raw_http(server.address, &get(path, None)).await.status, 200);
    }
    let refused = raw_http(server.address, &get(path, None)).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
}
