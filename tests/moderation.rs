//! Moderation over real sockets (issue 31): roles from the operator (`--admin`) and
//! from tokens, and a moderator who kicks (close 4001), bans (close 4003, then 403 at
//! the handshake, also after a restart with `--data-dir` and on another clustered
//! node), mutes, deletes another's message and sets slow mode, a topic and roles; a
//! member who tries any of it is answered with an error; v1 and plain clients see
//! none of these events.

use std::path::Path;

use chat::ClientId;
use chat_server::Config;
use serde_json::{Value, json};
use testkit::process::Scratch;
use testkit::redis::Redis;
use testkit::v2::{V2, offset};
use testkit::{TestServer, assert_refused_as, eventually, tokens};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A server whose admin is `#1`, without tokens and without a rate limit.
fn admin_one() -> Config {
    Config {
        admins: vec![ClientId::parse("1").unwrap()],
        rate_limit: None,
        ..Config::default()
    }
}

/// A WebSocket handshake for `/ws/<id>`, as raw HTTP.
fn handshake(id: &str) -> String {
    format!(
        "GET /ws/{id} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Joins `/ws/<id>` as a v2 client and reads up to its own join.
async fn join(server: &TestServer, id: &str) -> (V2, Value) {
    let mut client = V2::connect(server, &format!("/ws/{id}")).await;
    let (welcome, _) = client.seated().await;
    (client, welcome)
}

/// The next event of `kind` about `member`.
async fn event_about(client: &mut V2, kind: &str, member: &str) -> Value {
    client
        .next_matching(&format!("a {kind} of #{member}"), |frame| {
            frame["type"] == kind && frame["member"] == member && frame["offset"].is_u64()
        })
        .await
}

/// Reads until the close frame; returns its code and reason.
async fn closed(client: V2) -> (CloseCode, String) {
    let mut socket = client.socket;
    let (frame, _) = socket.recv_until_close().await;
    let frame = frame.expect("a close frame");
    (frame.code, frame.reason.to_string())
}

/// `client`'s error answering `nonce`, whose code must be `code`.
async fn refused(client: &mut V2, nonce: &str, code: &str) -> Value {
    let error = client.error_for(nonce).await;
    assert_eq!(error["code"], code, "{error}");
    error
}

#[tokio::test]
async fn a_moderator_moderates_and_a_member_cannot() {
    let server = TestServer::start_with(admin_one()).await;
    let mut plain = server.join("9", "9").await;
    let (mut admin, _) = join(&server, "1").await;
    let (mut moderator, _) = join(&server, "2").await;
    let (mut member, _) = join(&server, "3").await;

    // A member may not moderate, nor name moderators.
    for (nonce, request) in [
        ("k", json!({"type":"kick","member":"2","nonce":"k"})),
        ("b", json!({"type":"ban","member":"2","nonce":"b"})),
        ("m", json!({"type":"mute","member":"2","nonce":"m"})),
        ("t", json!({"type":"topic","text":"mine","nonce":"t"})),
        ("s", json!({"type":"slow","seconds":5,"nonce":"s"})),
        (
            "r",
            json!({"type":"role","member":"3","role":"moderator","nonce":"r"}),
        ),
    ] {
        member.send(&request).await;
        refused(&mut member, nonce, "forbidden").await;
    }
    let said = {
        moderator.say("mine", Some("own")).await;
        offset(
            &member
                .next_matching("the message", |f| f["text"] == "mine")
                .await,
        )
    };
    member.delete(said, Some("not-mine")).await;
    refused(&mut member, "not-mine", "not_yours").await;

    // The admin names a moderator: every v2 client sees it.
    admin
        .send(&json!({"type":"role","member":"2","role":"moderator","nonce":"op"}))
        .await;
    let role = event_about(&mut member, "role", "2").await;
    assert_eq!(
        (&role["id"], &role["role"]),
        (&json!("1"), &json!("moderator"))
    );
    event_about(&mut moderator, "role", "2").await;

    // A moderator may not moderate the admin, here or not.
    moderator
        .send(&json!({"type":"kick","member":"1","nonce":"up"}))
        .await;
    refused(&mut moderator, "up", "forbidden").await;
    drop(admin);
    moderator
        .send(&json!({"type":"ban","member":"1","nonce":"gone"}))
        .await;
    refused(&mut moderator, "gone", "forbidden").await;
    let (mut admin, _) = join(&server, "1").await;

    // Deletes another's message.
    member.say("spam spam", Some("spam")).await;
    let spam = offset(
        &member
            .next_matching("the spam", |f| f["nonce"] == "spam")
            .await,
    );
    moderator.delete(spam, Some("gone")).await;
    let delete = member.next_of("delete").await;
    assert_eq!(
        (&delete["target"], &delete["moderated"], &delete["id"]),
        (&json!(spam), &json!(true), &json!("2"))
    );

    // Mutes: the member reads but cannot send; unmuted, it can.
    moderator
        .send(&json!({"type":"mute","member":"3","nonce":"mute"}))
        .await;
    event_about(&mut member, "mute", "3").await;
    member.say("let me speak", Some("muted")).await;
    refused(&mut member, "muted", "muted").await;
    moderator.send(&json!({"type":"unmute","member":"3"})).await;
    event_about(&mut member, "unmute", "3").await;
    member.say("thanks", Some("thanks")).await;
    member.error_or("message", "thanks").await;

    // Slow mode: one message an hour, the moderator excepted.
    moderator
        .send(&json!({"type":"slow","seconds":3600,"nonce":"slow"}))
        .await;
    member.next_of("slow").await;
    member.say("once", Some("once")).await;
    member.error_or("message", "once").await;
    member.say("twice", Some("twice")).await;
    let slow = refused(&mut member, "twice", "slow").await;
    assert!(slow["message"].as_str().unwrap().contains("3600"), "{slow}");
    moderator.say("I may", Some("may")).await;
    moderator.error_or("message", "may").await;

    // A topic, and the roles, in a newcomer's welcome.
    moderator
        .send(&json!({"type":"topic","text":"Launch day","nonce":"topic"}))
        .await;
    member.next_of("topic").await;
    let (newcomer, welcome) = join(&server, "4").await;
    assert_eq!(welcome["topic"], "Launch day", "{welcome}");
    assert_eq!(welcome["slow"], 3600, "{welcome}");
    assert_eq!(welcome["roles"]["1"], "admin", "{welcome}");
    assert_eq!(welcome["roles"]["2"], "moderator", "{welcome}");
    drop(newcomer);

    // Kicked: the event, then close 4001 with the reason; it may come back.
    moderator
        .send(&json!({"type":"kick","member":"3","reason":"calm down","nonce":"kick"}))
        .await;
    event_about(&mut member, "kick", "3").await;
    assert_eq!(
        closed(member).await,
        (CloseCode::Library(4001), "calm down".to_owned())
    );
    let (member, _) = join(&server, "3").await;

    // Banned: close 4003, and the next handshake is refused with 403.
    moderator
        .send(&json!({"type":"ban","member":"3","seconds":600,"reason":"spam","nonce":"ban"}))
        .await;
    assert_eq!(
        closed(member).await,
        (CloseCode::Library(4003), "spam".to_owned())
    );
    let refusal = assert_refused_as(
        server.address,
        &handshake("3"),
        (403, "#3 is banned from room main until 2"),
        "banned_id",
    )
    .await;
    assert!(refusal.body.contains(": spam"), "{refusal:?}");
    moderator
        .send(&json!({"type":"unban","member":"3","nonce":"unban"}))
        .await;
    event_about(&mut moderator, "unban", "3").await;
    join(&server, "3").await;

    // The plain client saw only joins, leaves and messages.
    admin.say("the end", None).await;
    loop {
        let line = plain.recv().await;
        assert!(line.starts_with("Client #"), "{line}");
        assert!(
            !line.contains("kick") && !line.contains("\"type\""),
            "{line}"
        );
        if line == "Client #1: the end" {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn roles_come_from_the_token_and_are_never_claimed_without_one() {
    let server = tokens::server_with_tokens().await;
    let minted = |id: &str, claims: Value| {
        // The test's own token, with the grants the issue fixes, signed as the
        // server's are.
        let mut payload = json!({"sub": id, "exp": jsonwebtoken_exp()});
        for (key, value) in claims.as_object().unwrap() {
            payload[key] = value.clone();
        }
        sign(&payload)
    };
    let owner = minted("5", json!({"roles": {"main": "owner"}}));
    let mut boss = V2::connect(&server, &format!("/ws/5?token={owner}")).await;
    let (welcome, _) = boss.seated().await;
    assert_eq!(welcome["roles"]["5"], "owner", "{welcome}");
    let plain = tokens::token("6", None);
    let mut six = V2::connect(&server, &format!("/ws/6?token={plain}")).await;
    six.seated().await;
    six.send(&json!({"type":"kick","member":"5","nonce":"k"}))
        .await;
    refused(&mut six, "k", "forbidden").await;
    boss.send(&json!({"type":"kick","member":"6","nonce":"k"}))
        .await;
    assert_eq!(
        closed(six).await,
        (CloseCode::Library(4001), "kicked".to_owned())
    );
    // A browser trades its token for a ticket: the ticket carries the token's roles.
    let moderator = minted("7", json!({"roles": {"main": "moderator"}}));
    let answer = server
        .http(&format!(
            "POST /api/v1/tickets HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {moderator}\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let ticket: Value = serde_json::from_str(&answer.body).unwrap();
    let ticket = ticket["ticket"].as_str().unwrap();
    let mut seven = V2::connect(&server, &format!("/ws/7?ticket={ticket}")).await;
    let (welcome, _) = seven.seated().await;
    assert_eq!(welcome["roles"]["7"], "moderator", "{welcome}");
    seven
        .send(&json!({"type":"topic","text":"from a ticket","nonce":"t"}))
        .await;
    seven.error_or("topic", "t").await;
    server.stop().await;

    // Without tokens, a claim is only a claim: `#1` is no admin here.
    let open = TestServer::start().await;
    let (mut one, _) = join(&open, "1").await;
    one.send(&json!({"type":"topic","text":"mine","nonce":"t"}))
        .await;
    refused(&mut one, "t", "forbidden").await;
    open.stop().await;
}

/// An `exp` ten minutes from now.
fn jsonwebtoken_exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600
}

/// `claims` signed with the test secret, as HS256.
fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(tokens::SECRET.as_bytes()),
    )
    .unwrap()
}

fn durable(folder: &Path) -> Config {
    Config {
        data_dir: Some(folder.to_owned()),
        ..admin_one()
    }
}

#[tokio::test]
async fn a_ban_outlives_a_restart_with_a_data_dir() {
    let data = Scratch::new("moderation");
    let server = TestServer::start_with(durable(data.path())).await;
    let (mut admin, _) = join(&server, "1").await;
    let (member, _) = join(&server, "3").await;
    admin
        .send(&json!({"type":"ban","member":"3","reason":"for good"}))
        .await;
    assert_eq!(
        closed(member).await,
        (CloseCode::Library(4003), "for good".to_owned())
    );
    admin.send(&json!({"type":"topic","text":"kept"})).await;
    admin.next_of("topic").await;
    drop(admin);
    server.stop().await;

    let server = TestServer::start_with(durable(data.path())).await;
    assert_refused_as(
        server.address,
        &handshake("3"),
        (403, "#3 is banned from room main until lifted: for good"),
        "banned_id",
    )
    .await;
    let (mut admin, welcome) = join(&server, "1").await;
    assert_eq!(welcome["topic"], "kept", "{welcome}");
    // The ban is in the log too, for v2 clients' history.
    admin
        .send(&json!({"type":"history","before":offset(&welcome) + 1,"limit":50,"nonce":"h"}))
        .await;
    let page = admin.error_or("history", "h").await;
    let bans: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "ban")
        .collect();
    assert_eq!(bans.len(), 1, "{page}");
    assert_eq!(
        (&bans[0]["member"], &bans[0]["id"]),
        (&json!("3"), &json!("1"))
    );
    server.stop().await;
}

/// Needs `redis-server`: `.ci/run` runs it with `--include-ignored`.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_ban_on_one_node_is_refused_on_the_other_and_after_a_reload() {
    let redis = Redis::start().await;
    let config = || Config {
        admins: vec![ClientId::parse("1").unwrap()],
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        rate_limit: None,
        ..redis.node_config()
    };
    let first = redis.node_with(config()).await;
    let second = redis.node_with(config()).await;
    let (mut admin, _) = join(&first, "1").await;
    let (member, _) = join(&second, "3").await;
    admin
        .send(&json!({"type":"ban","member":"3","seconds":3600,"reason":"flood"}))
        .await;
    assert_eq!(
        closed(member).await,
        (CloseCode::Library(4003), "flood".to_owned())
    );
    assert_refused_as(second.address, &handshake("3"), (403, "flood"), "banned_id").await;
    // A node that loads the room from Redis anew has the ban too.
    let third = redis.node_with(config()).await;
    assert_refused_as(third.address, &handshake("3"), (403, "flood"), "banned_id").await;
    admin.send(&json!({"type":"mute","member":"4"})).await;
    event_about(&mut admin, "mute", "4").await;
    let (mut four, _) = join(&third, "4").await;
    four.say("hello?", Some("q")).await;
    refused(&mut four, "q", "muted").await;
    // A server-wide ban on one node: refused on the others, which had the server's
    // bans loaded already (by the handshakes above) or load them now; and the id's
    // connections on other nodes, in rooms the asked node never loaded, closed.
    let (five, _) = join(&third, "5").await;
    let mut plain_five = second.connect("5?room=elsewhere").await;
    assert_eq!(plain_five.recv().await, "Client #5 has entered the chat");
    let banned = first
        .http(&api(
            "PUT",
            "/api/v1/bans/5",
            Some(API_KEY),
            r#"{"reason":"spam everywhere"}"#,
        ))
        .await;
    assert_eq!(banned.status, 204, "{banned:?}");
    assert_eq!(
        closed(five).await,
        (CloseCode::Library(4003), "spam everywhere".to_owned())
    );
    let (frame, _) = plain_five.recv_until_close().await;
    let frame = frame.expect("a close frame");
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::Library(4003), "spam everywhere")
    );
    for node in [&first, &second, &third] {
        // Another node hears of it when Redis delivers it there.
        eventually("the ban to reach the node", async || {
            (node.http(&handshake("5")).await.status == 403).then_some(())
        })
        .await;
        assert_refused_as(
            node.address,
            &handshake("5"),
            (403, "this server"),
            "banned_id",
        )
        .await;
    }
    first.stop().await;
    second.stop().await;
    third.stop().await;
}

/// An API key for the tests' operator.
const API_KEY: &str = "an operator key of at least thirty-two bytes";

/// An HTTP request to the API, with the operator's key unless `key` is `None`.
fn api(method: &str, path: &str, key: Option<&str>, body: &str) -> String {
    let auth = key.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// From an operator's review: refusals of a credential are the API's JSON errors (not
/// the WebSocket's plain words about tokens), the dashboard's once-a-second read does
/// not use up the key's rate (a bot sharing the key could lock the operator out), and
/// a bot may post a message as long as the WebSocket takes.
#[tokio::test]
async fn refusals_are_json_the_dashboard_is_not_rated_and_long_posts_go() {
    let server = TestServer::start_with(Config {
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        api_rate: chat_server::RateLimit {
            per_second: 1.0 / 60.0,
            burst: 2,
        },
        ..admin_one()
    })
    .await;
    for key in [None, Some("not the key at all")] {
        let refused = server.http(&api("GET", "/api/v1/rooms", key, "")).await;
        assert_eq!(refused.status, 401, "{refused:?}");
        assert_eq!(refused.header("content-type"), Some("application/json"));
        let error: Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(error["type"], "error", "{error}");
    }
    let long = "x".repeat(20_000);
    let body = json!({"text": long, "nonce": "long-1"}).to_string();
    let posted = server
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(API_KEY),
            &body,
        ))
        .await;
    assert_eq!(posted.status, 200, "{posted:?}");
    // The burst (2) is spent by the post and this list; the next call waits...
    server
        .http(&api("GET", "/api/v1/rooms", Some(API_KEY), ""))
        .await;
    let waited = server
        .http(&api("GET", "/api/v1/rooms", Some(API_KEY), ""))
        .await;
    assert_eq!(waited.status, 429, "{waited:?}");
    // ...but the dashboard still reads.
    for _ in 0..3 {
        let stats = server
            .http(&api("GET", "/api/v1/admin/stats", Some(API_KEY), ""))
            .await;
        assert_eq!(stats.status, 200, "{stats:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn operators_list_kick_and_ban_through_the_api() {
    let server = TestServer::start_with(Config {
        api_keys: chat_server::ApiKeys::parse(&format!("# ops\n{API_KEY}\n")).unwrap(),
        ..admin_one()
    })
    .await;
    let (mut watcher, _) = join(&server, "2").await;
    let (member, _) = join(&server, "3").await;

    let missing = server.http(&api("GET", "/api/v1/rooms", None, "")).await;
    assert_eq!(missing.status, 401, "{missing:?}");
    let wrong = server
        .http(&api("GET", "/api/v1/rooms", Some("not a key"), ""))
        .await;
    assert_eq!(wrong.status, 401, "{wrong:?}");

    let rooms = server
        .http(&api("GET", "/api/v1/rooms", Some(API_KEY), ""))
        .await;
    assert_eq!(rooms.status, 200, "{rooms:?}");
    let rooms: Value = serde_json::from_str(&rooms.body).unwrap();
    assert_eq!(rooms, json!([{"room":"main","members":2}]));
    let members = server
        .http(&api("GET", "/api/v1/rooms/main/members", Some(API_KEY), ""))
        .await;
    let members: Value = serde_json::from_str(&members.body).unwrap();
    let ids: Vec<&Value> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids, [&json!("2"), &json!("3")], "{members}");

    let kicked = server
        .http(&api(
            "DELETE",
            "/api/v1/rooms/main/members/3",
            Some(API_KEY),
            r#"{"reason":"take a break"}"#,
        ))
        .await;
    assert_eq!(kicked.status, 204, "{kicked:?}");
    let kick = event_about(&mut watcher, "kick", "3").await;
    assert_eq!(kick["id"], "0", "an API key acts as client id 0");
    assert_eq!(kick["reason"], "take a break", "{kick}");
    assert_eq!(
        closed(member).await,
        (CloseCode::Library(4001), "take a break".to_owned())
    );

    let banned = server
        .http(&api(
            "PUT",
            "/api/v1/rooms/main/bans/3",
            Some(API_KEY),
            r#"{"seconds":60,"reason":"bot spam"}"#,
        ))
        .await;
    assert_eq!(banned.status, 204, "{banned:?}");
    assert_refused_as(
        server.address,
        &handshake("3"),
        (403, "bot spam"),
        "banned_id",
    )
    .await;
    let bans = server
        .http(&api("GET", "/api/v1/rooms/main/bans", Some(API_KEY), ""))
        .await;
    let bans: Value = serde_json::from_str(&bans.body).unwrap();
    assert_eq!(bans[0]["id"], "3", "{bans}");
    assert_eq!(bans[0]["reason"], "bot spam", "{bans}");
    assert!(bans[0]["until"].is_u64(), "{bans}");
    let lifted = server
        .http(&api(
            "DELETE",
            "/api/v1/rooms/main/bans/3",
            Some(API_KEY),
            "",
        ))
        .await;
    assert_eq!(lifted.status, 204, "{lifted:?}");
    join(&server, "3").await;
    server.stop().await;
}

/// Every operation of the OpenAPI document the server serves is answered (not 404),
/// and every route the server answers is in the document.
#[tokio::test]
async fn the_openapi_document_and_the_routes_agree() {
    let server = TestServer::start_with(Config {
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        ..admin_one()
    })
    .await;
    join(&server, "2").await;
    let served = server
        .http(&api("GET", "/api/v1/openapi.json", None, ""))
        .await;
    assert_eq!(served.status, 200, "{served:?}");
    let document: Value = serde_json::from_str(&served.body).unwrap();
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete"] {
            if item.get(method).is_some() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    documented.sort();
    // The routes the server answers: server/src/http/api.rs and operators.rs.
    let mut routes = [
        "GET /api/v1/openapi.json",
        "GET /api/v1/admin/stats",
        "POST /api/v1/tickets",
        "GET /api/v1/rooms",
        "GET /api/v1/rooms/{room}/events",
        "GET /api/v1/rooms/{room}/search",
        "GET /api/v1/rooms/{room}/members",
        "POST /api/v1/rooms/{room}/messages",
        "DELETE /api/v1/rooms/{room}/members/{id}",
        "PUT /api/v1/rooms/{room}/bans/{id}",
        "PUT /api/v1/bans/{id}",
        "GET /api/v1/bans",
        "GET /api/v1/rooms/{room}/bans",
        "DELETE /api/v1/rooms/{room}/messages/{offset}",
        "PUT /api/v1/rooms/{room}/mutes/{id}",
        "DELETE /api/v1/rooms/{room}/mutes/{id}",
        "PUT /api/v1/rooms/{room}/roles/{id}",
        "PUT /api/v1/rooms/{room}/topic",
        "DELETE /api/v1/bans/{id}",
        "DELETE /api/v1/rooms/{room}/bans/{id}",
    ]
    .map(str::to_owned)
    .to_vec();
    routes.sort();
    assert_eq!(documented, routes);
    for route in &routes {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{room}", "main")
            .replace("{id}", "9")
            .replace("{offset}", "1")
            .replace("/search", "/search?q=x");
        let body = if method == "POST" {
            r#"{"text":"hi","nonce":"n"}"#
        } else {
            ""
        };
        let answer = server.http(&api(method, &path, Some(API_KEY), body)).await;
        // Answered by the API (tickets need --jwt-secret, and say so; message 1 is
        // a join, no message), not by the router's "not found".
        let routed = !(answer.status == 404 && answer.body == "not found\n");
        assert!(routed, "{route}: {answer:?}");
        assert_ne!(answer.status, 405, "{route}: {answer:?}");
    }
    server.stop().await;
}

/// A token for `id` with `claims` besides its `sub` and `exp`, signed with the test
/// secret.
fn token_with(id: &str, claims: Value) -> String {
    let mut payload = json!({"sub": id, "exp": jsonwebtoken_exp()});
    for (key, value) in claims.as_object().unwrap() {
        payload[key] = value.clone();
    }
    sign(&payload)
}

#[tokio::test]
async fn a_bot_posts_once_however_often_it_retries() {
    let server = TestServer::start_with(Config {
        jwt_secret: Some(tokens::secret()),
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let reader = tokens::token("2", None);
    let mut watcher = V2::connect(&server, &format!("/ws/2?token={reader}")).await;
    watcher.seated().await;
    let bot = token_with("500", json!({"bot": true}));
    let body = r#"{"text":"deploy finished","nonce":"deploy-1"}"#;
    let first = server
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(&bot),
            body,
        ))
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    let again = server
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(&bot),
            body,
        ))
        .await;
    assert_eq!(again.body, first.body, "the same offset");
    let posted: Value = serde_json::from_str(&first.body).unwrap();
    let seen = watcher.next_of("message").await;
    assert_eq!(
        (&seen["offset"], &seen["id"], &seen["text"]),
        (&posted["offset"], &json!("500"), &json!("deploy finished"))
    );
    // Once: the next message the watcher sees is the next one posted.
    let next = server
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(&bot),
            r#"{"text":"and done","nonce":"deploy-2"}"#,
        ))
        .await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(watcher.next_of("message").await["text"], "and done");
    // The same nonce for another text is a bot's bug, said, not hidden by the first
    // message's offset.
    let reused = server
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(&bot),
            r#"{"text":"something else","nonce":"deploy-2"}"#,
        ))
        .await;
    assert_eq!(reused.status, 400, "{reused:?}");
    assert!(
        reused.body.contains("was used for another message"),
        "{reused:?}"
    );

    // A token that is neither a bot's nor an admin's may not post; no token: 401.
    let plain = tokens::token("3", None);
    let denied = server
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(&plain),
            body,
        ))
        .await;
    assert_eq!(denied.status, 403, "{denied:?}");
    let missing = server
        .http(&api("POST", "/api/v1/rooms/main/messages", None, body))
        .await;
    assert_eq!(missing.status, 401, "{missing:?}");
    server.stop().await;
}

/// Needs `redis-server`: `.ci/run` runs it with `--include-ignored`.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_bot_posts_on_any_clustered_node() {
    let redis = Redis::start().await;
    let config = || Config {
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        rate_limit: None,
        ..redis.node_config()
    };
    let first = redis.node_with(config()).await;
    let second = redis.node_with(config()).await;
    let (mut watcher, _) = join(&first, "2").await;
    let body = r#"{"text":"from the other node","nonce":"x"}"#;
    let posted = second
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(API_KEY),
            body,
        ))
        .await;
    assert_eq!(posted.status, 200, "{posted:?}");
    let again = second
        .http(&api(
            "POST",
            "/api/v1/rooms/main/messages",
            Some(API_KEY),
            body,
        ))
        .await;
    assert_eq!(again.body, posted.body);
    let posted: Value = serde_json::from_str(&posted.body).unwrap();
    let seen = watcher.next_of("message").await;
    assert_eq!(
        (&seen["offset"], &seen["text"]),
        (&posted["offset"], &json!("from the other node"))
    );
    watcher.say("after", Some("after")).await;
    let after = watcher.error_or("message", "after").await;
    assert_eq!(offset(&after), offset(&seen) + 1, "posted once");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn an_admin_bans_from_the_whole_server_and_it_outlives_a_restart() {
    let data = Scratch::new("server-ban");
    let config = || Config {
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        ..durable(data.path())
    };
    let server = TestServer::start_with(config()).await;
    let mut elsewhere = V2::connect(&server, "/ws/3?room=ops").await;
    elsewhere.seated().await;
    let banned = server
        .http(&api(
            "PUT",
            "/api/v1/bans/3",
            Some(API_KEY),
            r#"{"reason":"abuse"}"#,
        ))
        .await;
    assert_eq!(banned.status, 204, "{banned:?}");
    assert_eq!(
        closed(elsewhere).await,
        (CloseCode::Library(4003), "abuse".to_owned())
    );
    let listed = server
        .http(&api("GET", "/api/v1/bans", Some(API_KEY), ""))
        .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let listed: Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed, json!([{"id": "3", "reason": "abuse"}]));
    assert_refused_as(
        server.address,
        &handshake("3?room=any"),
        (403, "#3 is banned from this server until lifted: abuse"),
        "banned_id",
    )
    .await;
    // Nobody joins or reads the server's own room.
    assert_refused_as(
        server.address,
        &handshake("4?room=_server"),
        (403, "_server"),
        "invalid_room",
    )
    .await;
    server.stop().await;

    let server = TestServer::start_with(config()).await;
    assert_refused_as(
        server.address,
        &handshake("3"),
        (403, "this server"),
        "banned_id",
    )
    .await;
    let lifted = server
        .http(&api("DELETE", "/api/v1/bans/3", Some(API_KEY), ""))
        .await;
    assert_eq!(lifted.status, 204, "{lifted:?}");
    join(&server, "3").await;
    server.stop().await;
}

#[tokio::test]
async fn each_credential_has_its_own_rate() {
    let other = "another operator key, thirty-two bytes or more";
    let server = TestServer::start_with(Config {
        api_keys: chat_server::ApiKeys::parse(&format!("{API_KEY}\n{other}")).unwrap(),
        api_rate: chat_server::RateLimit {
            per_second: chat_server::RateLimit::MIN_PER_SECOND,
            burst: 2,
        },
        ..admin_one()
    })
    .await;
    for _ in 0..2 {
        let listed = server
            .http(&api("GET", "/api/v1/rooms", Some(API_KEY), ""))
            .await;
        assert_eq!(listed.status, 200, "{listed:?}");
    }
    let third = server
        .http(&api("GET", "/api/v1/rooms", Some(API_KEY), ""))
        .await;
    assert_eq!(third.status, 429, "{third:?}");
    assert_eq!(third.header("retry-after"), Some("60"), "one a minute");
    let theirs = server
        .http(&api("GET", "/api/v1/rooms", Some(other), ""))
        .await;
    assert_eq!(theirs.status, 200, "another key is not slowed: {theirs:?}");
    server.stop().await;
}

#[tokio::test]
async fn operators_mute_name_moderators_set_the_topic_and_delete_through_the_api() {
    let server = TestServer::start_with(Config {
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        ..admin_one()
    })
    .await;
    let (mut member, _) = join(&server, "3").await;
    member.say("regrettable", Some("oops")).await;
    let said = offset(&member.error_or("message", "oops").await);
    let call = |method: &str, path: &str, body: &str| api(method, path, Some(API_KEY), body);

    let muted = server
        .http(&call(
            "PUT",
            "/api/v1/rooms/main/mutes/3",
            r#"{"seconds":600}"#,
        ))
        .await;
    assert_eq!(muted.status, 204, "{muted:?}");
    event_about(&mut member, "mute", "3").await;
    member.say("hello?", Some("q")).await;
    refused(&mut member, "q", "muted").await;
    let unmuted = server
        .http(&call("DELETE", "/api/v1/rooms/main/mutes/3", ""))
        .await;
    assert_eq!(unmuted.status, 204, "{unmuted:?}");

    let named = server
        .http(&call(
            "PUT",
            "/api/v1/rooms/main/roles/3",
            r#"{"role":"moderator"}"#,
        ))
        .await;
    assert_eq!(named.status, 204, "{named:?}");
    assert_eq!(
        event_about(&mut member, "role", "3").await["role"],
        "moderator"
    );
    let owner = server
        .http(&call(
            "PUT",
            "/api/v1/rooms/main/roles/3",
            r#"{"role":"owner"}"#,
        ))
        .await;
    assert_eq!(owner.status, 400, "only moderator or member: {owner:?}");

    let topic = server
        .http(&call(
            "PUT",
            "/api/v1/rooms/main/topic",
            r#"{"text":"Release day"}"#,
        ))
        .await;
    assert_eq!(topic.status, 204, "{topic:?}");
    assert_eq!(member.next_of("topic").await["text"], "Release day");

    let deleted = server
        .http(&call(
            "DELETE",
            &format!("/api/v1/rooms/main/messages/{said}"),
            "",
        ))
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let delete = member.next_of("delete").await;
    assert_eq!(
        (&delete["target"], &delete["moderated"]),
        (&json!(said), &json!(true))
    );
    let again = server
        .http(&call(
            "DELETE",
            &format!("/api/v1/rooms/main/messages/{said}"),
            "",
        ))
        .await;
    assert_eq!(again.status, 404, "deleted already: {again:?}");
    server.stop().await;
}

/// A request that would change nothing (lifting a ban that does not hold, the topic it
/// already is, kicking someone who is not here) is answered with why, and not logged:
/// the audit trail records changes only.
#[tokio::test]
async fn moderation_that_changes_nothing_is_answered_and_not_logged() {
    let server = TestServer::start_with(Config {
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        ..admin_one()
    })
    .await;
    let (mut admin, _) = join(&server, "1").await;
    admin.say("before", Some("before")).await;
    let before = offset(&admin.error_or("message", "before").await);
    for (request, says) in [
        (
            json!({"type":"unban","member":"5","nonce":"n"}),
            "#5 is not banned here",
        ),
        (
            json!({"type":"unmute","member":"5","nonce":"n"}),
            "#5 is not muted here",
        ),
        (
            json!({"type":"role","member":"5","role":"member","nonce":"n"}),
            "#5 is a member here already",
        ),
        (
            json!({"type":"topic","text":"","nonce":"n"}),
            "the room has no topic already",
        ),
        (
            json!({"type":"slow","seconds":0,"nonce":"n"}),
            "slow mode is off already",
        ),
        (
            json!({"type":"read_only","on":false,"nonce":"n"}),
            "the room is not read-only",
        ),
        (
            json!({"type":"kick","member":"5","nonce":"n"}),
            "#5 is not in this room",
        ),
    ] {
        admin.send(&request).await;
        let error = refused(&mut admin, "n", "invalid").await;
        assert_eq!(error["message"], says, "{request}");
    }
    admin.say("after", Some("after")).await;
    let after = offset(&admin.error_or("message", "after").await);
    assert_eq!(after, before + 1, "nothing logged in between");
    // Over HTTP the same: lifting a ban that does not hold is a clear 400.
    let lifted = server
        .http(&api(
            "DELETE",
            "/api/v1/rooms/main/bans/5",
            Some(API_KEY),
            "",
        ))
        .await;
    assert_eq!(lifted.status, 400, "{lifted:?}");
    assert!(lifted.body.contains("#5 is not banned here"), "{lifted:?}");
    server.stop().await;
}

/// The HTTP API speaks as #0: with an operator's key configured and no tokens, nobody
/// may claim id 0 over a WebSocket; without a key, 0 is an id like any other.
#[tokio::test]
async fn id_0_is_the_operators_when_there_is_one() {
    let server = TestServer::start_with(Config {
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        ..admin_one()
    })
    .await;
    assert_refused_as(
        server.address,
        &handshake("0"),
        (403, "0 is the operator's"),
        "invalid_id",
    )
    .await;
    server.stop().await;
    let open = TestServer::start().await;
    let mut zero = open.join("0", "0").await;
    zero.send("hello").await;
    assert_eq!(zero.recv().await, "Client #0: hello");
    open.stop().await;
}

/// A token's role travels with its holder's join: a node where the holder is not
/// connected knows it too, lists it, and a moderator there cannot act on an owner.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_tokens_role_is_known_on_every_node() {
    let redis = Redis::start().await;
    let config = || Config {
        jwt_secret: Some(tokens::secret()),
        rate_limit: None,
        ..redis.node_config()
    };
    let first = redis.node_with(config()).await;
    let second = redis.node_with(config()).await;
    let owner = token_with("3", json!({"roles": {"main": "owner"}}));
    let mut olly = V2::connect(&second, &format!("/ws/3?token={owner}")).await;
    olly.seated().await;
    let moderator = token_with("2", json!({"roles": {"main": "moderator"}}));
    let mut mo = V2::connect(&first, &format!("/ws/2?token={moderator}")).await;
    let (welcome, _) = mo.seated().await;
    assert_eq!(welcome["roles"]["3"], "owner", "{welcome}");
    for (nonce, request) in [
        ("k", json!({"type":"kick","member":"3","nonce":"k"})),
        ("m", json!({"type":"mute","member":"3","nonce":"m"})),
    ] {
        mo.send(&request).await;
        refused(&mut mo, nonce, "forbidden").await;
    }
    // Its join, to those already there, says it too.
    let other = token_with("4", json!({"roles": {"main": "moderator"}}));
    let _four = V2::connect(&second, &format!("/ws/4?token={other}")).await;
    let join = event_about_join(&mut mo, "4").await;
    assert_eq!(join["role"], "moderator", "{join}");
    first.stop().await;
    second.stop().await;
}

/// The join of `id` that `client` sees next.
async fn event_about_join(client: &mut V2, id: &str) -> Value {
    client
        .next_matching(&format!("the join of #{id}"), |frame| {
            frame["type"] == "join" && frame["id"] == id
        })
        .await
}

/// From a review as users: a banned token's holder used the HTTP API as if it were
/// not (posted, set the topic, lifted its own ban, read the room); a muted member
/// still reacted and was shown typing; an owner's "deop" of a moderator by token was
/// logged as done; a bot posted into, and listed, others' direct messages.
#[tokio::test]
async fn bans_mutes_and_tokens_hold_over_the_api_and_in_reactions() {
    let server = TestServer::start_with(Config {
        jwt_secret: Some(tokens::secret()),
        api_keys: chat_server::ApiKeys::parse(API_KEY).unwrap(),
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let owner = token_with("3", json!({"roles": {"main": "owner"}}));
    let mut olly = V2::connect(&server, &format!("/ws/3?token={owner}")).await;
    olly.seated().await;
    let moderator = token_with("2", json!({"roles": {"main": "moderator"}}));
    let mut mo = V2::connect(&server, &format!("/ws/2?token={moderator}")).await;
    mo.seated().await;

    // The owner cannot take a token's role away, and is told so, not logged.
    olly.send(&json!({"type":"role","member":"2","role":"member","nonce":"deop"}))
        .await;
    let error = refused(&mut olly, "deop", "invalid").await;
    assert_eq!(
        error["message"],
        "#2 is a moderator by their token; a role given here cannot take that away"
    );

    // Banned from the room, the moderator's token does nothing there over HTTP.
    olly.send(&json!({"type":"ban","member":"2","nonce":"ban"}))
        .await;
    olly.error_or("ban", "ban").await;
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/rooms/main/messages",
            r#"{"text":"still here","nonce":"n"}"#,
        ),
        ("PUT", "/api/v1/rooms/main/topic", r#"{"text":"mine now"}"#),
        ("DELETE", "/api/v1/rooms/main/bans/2", ""),
        ("GET", "/api/v1/rooms/main/events?before=99&limit=5", ""),
        ("GET", "/api/v1/rooms/main/members", ""),
        ("GET", "/api/v1/rooms/main/bans", ""),
    ] {
        let answer = server
            .http(&api(method, path, Some(&moderator), body))
            .await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert!(
            answer.body.contains("#2 is banned from room main"),
            "{answer:?}"
        );
    }

    // An admin's token opens the operator's dashboard, as the API key does.
    let admin = token_with("7", json!({"admin": true}));
    let stats = server
        .http(&api("GET", "/api/v1/admin/stats", Some(&admin), ""))
        .await;
    assert_eq!(stats.status, 200, "{stats:?}");

    // Banned from the server, a bot's token does nothing anywhere.
    let bot = token_with("9", json!({"bot": true}));
    let banned = server
        .http(&api("PUT", "/api/v1/bans/9", Some(API_KEY), ""))
        .await;
    assert_eq!(banned.status, 204, "{banned:?}");
    let answer = server
        .http(&api(
            "POST",
            "/api/v1/rooms/other/messages",
            Some(&bot),
            r#"{"text":"hi","nonce":"n"}"#,
        ))
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.body.contains("#9 is banned from this server"),
        "{answer:?}"
    );

    // A bot does not post into, nor list, others' direct messages.
    let mut five = V2::connect(
        &server,
        &format!("/ws/5?room=dm.5.6&token={}", tokens::token("5", None)),
    )
    .await;
    five.seated().await;
    let other_bot = token_with("8", json!({"bot": true}));
    let answer = server
        .http(&api(
            "POST",
            "/api/v1/rooms/dm.5.6/messages",
            Some(&other_bot),
            r#"{"text":"psst","nonce":"n"}"#,
        ))
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let listed = server
        .http(&api("GET", "/api/v1/rooms", Some(&other_bot), ""))
        .await;
    assert!(!listed.body.contains("dm.5.6"), "{listed:?}");
    let listed = server
        .http(&api("GET", "/api/v1/rooms", Some(API_KEY), ""))
        .await;
    assert!(listed.body.contains("dm.5.6"), "the operator's: {listed:?}");

    // Muted: no reactions, no typing.
    let member = tokens::token("4", None);
    let mut four = V2::connect(&server, &format!("/ws/4?token={member}")).await;
    four.seated().await;
    olly.say("an announcement", Some("a")).await;
    let announcement = offset(&olly.error_or("message", "a").await);
    olly.send(&json!({"type":"mute","member":"4","nonce":"mute"}))
        .await;
    olly.error_or("mute", "mute").await;
    four.react(announcement, ":still_talking:", Some("r")).await;
    refused(&mut four, "r", "muted").await;
    four.typing().await;
    olly.say("after", Some("after")).await;
    let next = olly
        .next_matching("the next message or typing", |frame| {
            frame["type"] == "typing" || frame["nonce"] == "after"
        })
        .await;
    assert_eq!(next["nonce"], "after", "no typing from the muted: {next}");
    server.stop().await;
}
