//! `chat.v2.json` over real sockets on one node: each operation as v2, v1 and plain
//! clients see it, the latest state in a newcomer's replay, every error code, typing,
//! read positions and direct-message rooms.

use std::time::Duration;

use chat_server::Config;
use serde_json::{Value, json};
use testkit::v1::V1;
use testkit::v2::{Say, V2, offset};
use testkit::{Client, TestServer, assert_refused_as, upgrade_request};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Reads `client`'s v1 frames up to the message `marker`, as JSON.
async fn v1_until(client: &mut V1, marker: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame: Value = serde_json::from_str(&client.socket.recv().await).unwrap();
        if frame["text"] == marker {
            return frames;
        }
        frames.push(frame);
    }
}

/// Reads `client`'s frames up to the message `marker`.
async fn v2_until(client: &mut V2, marker: &str) -> Vec<Value> {
    v2_up_to(client, marker).await.0
}

/// Reads `client`'s frames up to the message `marker`, and that message.
async fn v2_up_to(client: &mut V2, marker: &str) -> (Vec<Value>, Value) {
    let mut frames = Vec::new();
    loop {
        let frame = client.frame().await;
        if frame["text"] == marker {
            return (frames, frame);
        }
        frames.push(frame);
    }
}

/// Reads a plain client's lines up to `marker`.
async fn plain_until(client: &mut Client, marker: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = client.recv().await;
        if line == marker {
            return lines;
        }
        lines.push(line);
    }
}

/// The `type`s and `text`s of some frames, for comparing at a glance.
fn shapes(frames: &[Value]) -> Vec<(String, String)> {
    frames
        .iter()
        .map(|frame| {
            (
                frame["type"].as_str().unwrap_or("?").to_owned(),
                frame["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn operations_reach_each_protocol_in_its_form_and_replay_in_their_latest_state() {
    let server = TestServer::start().await;
    let mut pat = server.join("1", "1").await;
    let mut vic = V1::connect(&server, "/ws/2").await;
    vic.seated().await;
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    ada.seated().await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    ada.next_of("join").await;

    // Each step waits for its event, so that the log's order is the one written here.
    let mut live = Vec::new();
    ada.say("tpyo", Some("n1")).await;
    let typo = offset(&bob.next_of("message").await);
    ada.edit(typo, "typo", Some("n2")).await;
    live.push(bob.next_of("edit").await);
    bob.react(typo, "👍", None).await;
    live.push(bob.next_of("react").await);
    ada.react(typo, "👍", None).await;
    live.push(bob.next_of("react").await);
    bob.react(typo, "🎉", None).await;
    live.push(bob.next_of("react").await);
    bob.unreact(typo, "🎉", None).await;
    live.push(bob.next_of("unreact").await);
    let reply = Say {
        reply_to: Some(typo),
        ..Say::default()
    };
    bob.say_with("re", reply).await;
    live.push(bob.next_of("message").await);
    let action = Say {
        action: true,
        ..Say::default()
    };
    ada.say_with("waves", action).await;
    live.push(bob.next_of("message").await);
    ada.say("secret", None).await;
    live.push(bob.next_of("message").await);
    let secret = offset(live.last().unwrap());
    ada.edit(secret, "secret2", None).await;
    ada.delete(secret, Some("n3")).await;
    ada.say("end", None).await;
    live.extend(v2_until(&mut bob, "end").await);
    let edit = &live[0];
    assert_eq!(
        (&edit["type"], &edit["target"], &edit["text"], &edit["id"]),
        (&json!("edit"), &json!(typo), &json!("typo"), &json!("7"))
    );
    assert_eq!(offset(edit), typo + 1, "an operation has its own offset");
    let types: Vec<&str> = live.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "edit", "react", "react", "react", "unreact", "message", "message", "message", "edit",
            "delete"
        ],
        "{live:?}"
    );
    assert_eq!(live[5]["reply_to"], typo);
    assert_eq!(live[6]["kind"], "action");
    assert_eq!(live[9]["nonce"], "n3", "the sender's nonce comes back");
    for pair in live.windows(2) {
        assert_eq!(offset(&pair[1]), offset(&pair[0]) + 1, "dense: {pair:?}");
    }

    // A v1 client sees what it can show, and nothing it cannot.
    let seen: Vec<Value> = v1_until(&mut vic, "end")
        .await
        .into_iter()
        .filter(|frame| frame["type"] != "join")
        .collect();
    assert_eq!(
        shapes(&seen),
        [
            ("message".into(), "tpyo".into()),
            ("message".into(), "(edited) typo".into()),
            ("message".into(), "re".into()),
            ("message".into(), "* waves".into()),
            ("message".into(), "secret".into()),
            ("message".into(), "(edited) secret2".into()),
        ]
    );
    assert_eq!(offset(&seen[1]), typo + 1);
    assert!(seen[2].get("reply_to").is_none() && seen[3].get("kind").is_none());

    // A plain client, its three kinds of line.
    assert_eq!(pat.recv().await, "Client #2 has entered the chat");
    assert_eq!(pat.recv().await, "Client #7 has entered the chat");
    assert_eq!(pat.recv().await, "Client #8 has entered the chat");
    assert_eq!(
        plain_until(&mut pat, "Client #7: end").await,
        [
            "Client #7: tpyo",
            "Client #7: (edited) typo",
            "Client #8: re",
            "Client #7: * waves",
            "Client #7: secret",
            "Client #7: (edited) secret2",
        ]
    );

    // A newcomer's replay: the latest state, the operations still in the log.
    let mut cy = V2::connect(&server, "/ws/9").await;
    let (_, replayed) = cy.seated().await;
    let at = |offset: u64| {
        replayed
            .iter()
            .find(|event| event["offset"] == offset)
            .unwrap_or_else(|| panic!("{offset} replayed: {replayed:?}"))
    };
    let message = at(typo);
    assert_eq!(
        (&message["text"], &message["edited"], &message["reactions"]),
        (
            &json!("typo"),
            &json!(true),
            &json!([{"emoji": "👍", "ids": ["8", "7"]}])
        )
    );
    assert_eq!(at(typo + 1)["type"], "edit");
    assert_eq!(
        (&at(secret)["text"], &at(secret)["deleted"]),
        (&json!(""), &json!(true)),
        "a tombstone"
    );
    assert_eq!(
        (&at(secret + 1)["text"], &at(secret + 1)["deleted"]),
        (&json!(""), &json!(true)),
        "its edit lost its text too"
    );
    for pair in replayed.windows(2) {
        assert_eq!(offset(&pair[1]), offset(&pair[0]) + 1, "dense: {pair:?}");
    }

    // A v1 newcomer is not told the deleted text either.
    let mut late = V1::connect(&server, "/ws/10").await;
    let welcome = late.welcome().await;
    loop {
        let text = late.socket.recv().await;
        assert!(!text.contains("secret"), "{text}");
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["offset"] == welcome.offset + 1 {
            break;
        }
    }
}

#[tokio::test]
async fn each_refused_request_is_answered_by_code_and_the_room_goes_on() {
    let config = Config {
        history: 40,
        ..Config::default()
    };
    let server = TestServer::start_with(config).await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    let (_, replayed) = bob.seated().await;
    let join = offset(&replayed[0]);
    ada.say("first", None).await;
    let first = offset(&bob.next_of("message").await);
    ada.say("gone", None).await;
    let gone = offset(&bob.next_of("message").await);
    ada.delete(gone, None).await;
    bob.next_of("delete").await;

    let asked = std::cell::Cell::new(0);
    let code = async |client: &mut V2, request: Value| {
        asked.set(asked.get() + 1);
        let nonce = format!("n{}", asked.get());
        let mut request = request;
        request["nonce"] = json!(nonce);
        client.send(&request).await;
        let error = client.error_for(&nonce).await;
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        error["code"].as_str().unwrap().to_owned()
    };
    let cases = [
        (
            json!({"type": "edit", "target": first, "text": "mine"}),
            "not_yours",
        ),
        (json!({"type": "delete", "target": first}), "not_yours"),
        (
            json!({"type": "edit", "target": 999, "text": "x"}),
            "no_such_message",
        ),
        (
            json!({"type": "react", "target": join, "emoji": "👍"}),
            "no_such_message",
        ),
        (
            json!({"type": "react", "target": gone, "emoji": "👍"}),
            "no_such_message",
        ),
        (
            json!({"type": "unreact", "target": 0, "emoji": "👍"}),
            "no_such_message",
        ),
        (
            json!({"type": "react", "target": first, "emoji": "a"}),
            "invalid",
        ),
        (
            json!({"type": "react", "target": first, "emoji": "👍👍"}),
            "invalid",
        ),
        (json!({"type": "read", "offset": 999}), "invalid"),
        (
            json!({"type": "message", "text": "re", "reply_to": join}),
            "invalid",
        ),
        (
            json!({"type": "message", "text": "re", "reply_to": 999}),
            "invalid",
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(code(&mut bob, request.clone()).await, expected, "{request}");
    }
    assert_eq!(
        code(
            &mut ada,
            json!({"type": "edit", "target": first, "text": ""})
        )
        .await,
        "invalid"
    );
    for emoji in 0..20u32 {
        let emoji = char::from_u32(0x1F600 + emoji).unwrap().to_string();
        bob.react(first, &emoji, None).await;
    }
    let one_too_many = json!({"type": "react", "target": first, "emoji": "🦀"});
    assert_eq!(code(&mut bob, one_too_many).await, "invalid");
    // A reaction that would change nothing is refused, not logged.
    let again = json!({"type": "react", "target": first, "emoji": "\u{1F600}"});
    assert_eq!(code(&mut bob, again).await, "invalid");
    let never = json!({"type": "unreact", "target": first, "emoji": "🦀"});
    assert_eq!(code(&mut bob, never).await, "invalid");
    let typing_nonce = json!({"type": "typing", "nonce": "t"});
    bob.send(&typing_nonce).await; // a nonce is allowed on every request

    // Past the history kept, a message can no longer be changed.
    for n in 0..40 {
        ada.say(&n.to_string(), None).await;
    }
    ada.say("end", None).await;
    v2_until(&mut bob, "end").await;
    let old = json!({"type": "edit", "target": first, "text": "late"});
    assert_eq!(code(&mut ada, old).await, "too_old");

    // None of it reached the log: the next event is the next message.
    ada.say("still here", None).await;
    let refused = v2_until(&mut bob, "still here").await;
    assert!(refused.is_empty(), "{refused:?}");
}

#[tokio::test]
async fn a_frame_that_is_not_a_request_closes_with_1008_and_only_that_one() {
    let server = TestServer::start().await;
    for bad in [
        r#"{"type":"edit","target":-1,"text":"x"}"#,
        r#"{"type":"shout"}"#,
        r#"{"type":"typing","at":1}"#,
        "not json",
    ] {
        let mut ada = V2::connect(&server, "/ws/7").await;
        ada.seated().await;
        let mut bob = V2::connect(&server, "/ws/8").await;
        bob.seated().await;
        ada.next_of("join").await;
        bob.socket.send(bad).await;
        let (close, _) = bob.socket.recv_until_close().await;
        let close = close.expect("a close frame");
        assert_eq!(close.code, CloseCode::Policy, "{bad}");
        assert!(close.reason.contains("chat.v2.json"), "{close:?}");
        assert_eq!(ada.next_of("leave").await["id"], "8");
        ada.say("alive", None).await;
        assert_eq!(ada.next_of("message").await["text"], "alive");
    }
}

#[tokio::test]
async fn typing_reaches_the_other_v2_clients_at_most_once_per_interval() {
    // Default flags, and longer than the typing interval, its longest timer.
    let server = TestServer::start().await;
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    ada.seated().await;
    let mut ada_phone = V2::connect(&server, "/ws/7").await;
    ada_phone.seated().await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    let mut vic = V1::connect(&server, "/ws/2").await;
    vic.seated().await;
    ada.typing().await;
    ada.typing().await;
    ada.typing().await;
    ada.say("done", None).await;
    let seen = v2_until(&mut bob, "done").await;
    let typing: Vec<&Value> = seen.iter().filter(|f| f["type"] == "typing").collect();
    assert_eq!(
        typing,
        [&json!({"type": "typing", "id": "7", "name": "Ada"})]
    );
    let own = v2_until(&mut ada_phone, "done").await;
    assert!(own.iter().all(|f| f["type"] != "typing"), "{own:?}");
    assert_eq!(
        vic.event().await.kind,
        chat::v1::EventKind::said("done", None)
    );

    tokio::time::sleep(Duration::from_millis(chat::v2::TYPING_INTERVAL_MS + 200)).await;
    ada.typing().await;
    ada.say("again", None).await;
    let seen = v2_until(&mut bob, "again").await;
    assert_eq!(shapes(&seen), [("typing".into(), String::new())]);
}

#[tokio::test]
async fn a_read_position_moves_forward_reaches_the_ids_other_connections_and_the_welcome() {
    let server = TestServer::start().await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    let (welcome, _) = ada.seated().await;
    assert_eq!(welcome["read"], 0);
    let mut ada_phone = V2::connect(&server, "/ws/7").await;
    ada_phone.seated().await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    bob.say("hi", None).await;
    let hi = offset(&ada.next_of("message").await);
    ada.read(hi).await;
    assert_eq!(
        ada_phone.next_of("read").await,
        json!({"type": "read", "offset": hi})
    );
    ada.read(hi - 1).await; // backwards: kept where it was, said to nobody
    ada.say("end", None).await;
    let seen = v2_until(&mut ada_phone, "end").await;
    assert!(seen.iter().all(|f| f["type"] != "read"), "{seen:?}");
    let seen = v2_until(&mut bob, "end").await;
    assert!(seen.iter().all(|f| f["type"] != "read"), "{seen:?}");
    let seen = v2_until(&mut ada, "end").await;
    assert!(seen.iter().all(|f| f["type"] != "read"), "not to itself");

    let mut ada_laptop = V2::connect(&server, "/ws/7").await;
    let (welcome, _) = ada_laptop.seated().await;
    assert_eq!(welcome["read"], hi);
    let (bobs, _) = V2::connect(&server, "/ws/8").await.seated().await;
    assert_eq!(bobs["read"], 0, "read positions are per id");
}

#[tokio::test]
async fn a_direct_room_is_for_its_two_ids_and_listed_with_unread_counts() {
    let server = TestServer::start().await;
    assert_refused_as(
        server.address,
        &upgrade_request("/ws/9?room=dm.7.8"),
        (403, "for #7 and #8 only; yours with #7 is dm.7.9"),
        "not_your_room",
    )
    .await;
    for bad in ["dm.8.7", "dm.07.8", "dm.x"] {
        assert_refused_as(
            server.address,
            &upgrade_request(&format!("/ws/7?room={bad}")),
            (403, "a direct-message room is dm.<id>.<id>"),
            "invalid_room",
        )
        .await;
    }
    let mut ada = V2::connect(&server, "/ws/7?room=dm.7.8").await;
    ada.seated().await;
    ada.say("psst", None).await;
    ada.say("are you there?", None).await;
    ada.next_matching("own message", |f| f["text"] == "are you there?")
        .await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    bob.dms(Some("d1")).await;
    let listed = bob.next_of("dms").await;
    assert_eq!(listed["nonce"], "d1");
    let rooms = listed["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1, "{listed}");
    assert_eq!(
        (
            &rooms[0]["room"],
            &rooms[0]["with"],
            &rooms[0]["read"],
            &rooms[0]["unread"]
        ),
        (&json!("dm.7.8"), &json!("7"), &json!(0), &json!(2))
    );
    let mut bob_dm = V2::connect(&server, "/ws/8?room=dm.7.8").await;
    let (_, replayed) = bob_dm.seated().await;
    let last = offset(replayed.last().unwrap());
    bob_dm.read(last).await;
    bob_dm.say("yes", None).await;
    bob_dm.next_of("message").await;
    bob.dms(None).await;
    let listed = bob.next_of("dms").await;
    assert_eq!(listed["rooms"][0]["unread"], 0, "{listed}");
    let mut carol = V2::connect(&server, "/ws/9").await;
    carol.seated().await;
    carol.dms(None).await;
    assert_eq!(carol.next_of("dms").await["rooms"], json!([]));
}

/// A message in a direct-message room is told, as a `dm` notice, to both ids' v2
/// connections in other rooms: the recipient's, so that a new conversation shows at
/// once, and the author's other devices'. Connections in the room itself hear the
/// message, not a notice; v1 and plain clients, and other ids, hear nothing of it.
#[tokio::test]
async fn a_direct_message_is_told_to_both_ids_connections_in_other_rooms() {
    let server = TestServer::start().await;
    let mut bob = V2::connect(&server, "/ws/8").await;
    bob.seated().await;
    let mut bob_v1 = V1::connect(&server, "/ws/8").await;
    bob_v1.seated().await;
    let mut ada_laptop = V2::connect(&server, "/ws/7").await;
    ada_laptop.seated().await;
    let mut carol = V2::connect(&server, "/ws/9").await;
    carol.seated().await;
    let mut ada = V2::connect(&server, "/ws/7?room=dm.7.8").await;
    ada.seated().await;

    ada.say("psst", None).await;
    let psst = offset(
        &ada.next_matching("own message", |f| f["text"] == "psst")
            .await,
    );
    let notice = bob.next_of("dm").await;
    assert_eq!(notice["room"], "dm.7.8", "{notice}");
    assert_eq!(notice["with"], "7", "{notice}");
    assert_eq!(notice["id"], "7", "{notice}");
    assert_eq!(notice["at"], psst, "{notice}");
    assert!(notice["ts"].as_u64().unwrap() > 0, "{notice}");
    let own = ada_laptop.next_of("dm").await;
    assert_eq!(
        (&own["with"], &own["id"]),
        (&json!("8"), &json!("7")),
        "{own}"
    );

    // The room's own members, the other protocols and other ids: nothing.
    ada.say("end", None).await;
    bob_v1
        .socket
        .send(r#"{"type":"message","text":"end"}"#)
        .await;
    let seen = v1_until(&mut bob_v1, "end").await;
    assert!(seen.iter().all(|f| f["type"] != "dm"), "{seen:?}");
    carol.say("end", None).await;
    let seen = v2_until(&mut carol, "end").await;
    assert!(seen.iter().all(|f| f["type"] != "dm"), "{seen:?}");
    let seen = v2_until(&mut ada, "end").await;
    assert!(seen.iter().all(|f| f["type"] != "dm"), "{seen:?}");
    // A second message, a second notice, once per connection.
    let seen = v2_until(&mut bob, "end").await;
    let notices: Vec<&Value> = seen.iter().filter(|f| f["type"] == "dm").collect();
    assert_eq!(notices.len(), 1, "{seen:?}");
    assert_eq!(notices[0]["at"], psst + 1, "{seen:?}");

    // A connection that has gone is forgotten; the others still hear.
    drop(bob);
    ada.say("anyone?", None).await;
    let notices = [
        ada_laptop.next_of("dm").await,
        ada_laptop.next_of("dm").await,
    ];
    assert_eq!(
        notices.map(|notice| notice["at"].clone()),
        [json!(psst + 1), json!(psst + 2)]
    );
}

/// A message resent with its nonce on another connection of the same id (the page's
/// resend after a stalled link, whose first copy still got through) is said once; the
/// same nonce from another id, or without one, is another message.
#[tokio::test]
async fn a_message_said_again_with_its_nonce_is_said_once() {
    let server = TestServer::start().await;
    let mut watcher = V2::connect(&server, "/ws/9").await;
    watcher.seated().await;
    let mut stalled = V2::connect(&server, "/ws/7").await;
    stalled.seated().await;
    let mut resent = V1::connect(&server, "/ws/7").await;
    resent.seated().await;
    let mut other = V2::connect(&server, "/ws/8").await;
    other.seated().await;

    stalled.say("once", Some("n-1")).await;
    resent
        .socket
        .send(r#"{"type":"message","text":"once","nonce":"n-1"}"#)
        .await;
    other.say("once", Some("n-1")).await;
    stalled.say("end", None).await;
    let seen = v2_until(&mut watcher, "end").await;
    let said: Vec<(&Value, &Value)> = seen
        .iter()
        .filter(|frame| frame["text"] == "once")
        .map(|frame| (&frame["id"], &frame["nonce"]))
        .collect();
    assert_eq!(
        said,
        [(&json!("7"), &json!("n-1")), (&json!("8"), &json!("n-1"))],
        "{seen:?}"
    );
}

/// A session's frames in the order a test met them, as docs/PROTOCOL.md shows them.
#[derive(Default)]
struct Transcript {
    lines: Vec<String>,
}

impl Transcript {
    /// A heading line before the next frames.
    fn say(&mut self, heading: &str) {
        self.lines.push(format!("\n{heading}\n"));
    }

    /// Sends `request`, as written: JSON objects keep the order their writer chose.
    async fn send(&mut self, who: &str, client: &mut V2, request: &str) {
        self.lines.push(format!("{who:<11} > {request}"));
        client.socket.send(request).await;
    }

    /// The client's next frame of type `kind`, recorded as it came; the frames before
    /// it are not shown.
    async fn recv(&mut self, who: &str, client: &mut V2, kind: &str) -> Value {
        for _ in 0..testkit::v2::MAX_SKIPPED {
            let text = client.socket.recv().await;
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                self.lines.push(format!("{who:<11} < {text}"));
                return frame;
            }
        }
        panic!("{who} got no {kind} frame");
    }

    /// The client's next frame, whatever it is, recorded.
    async fn recv_any(&mut self, who: &str, client: &mut V2) -> Value {
        let text = client.socket.recv().await;
        self.lines.push(format!("{who:<11} < {text}"));
        serde_json::from_str(&text).unwrap()
    }

    /// The transcript as markdown: fenced blocks between the headings.
    fn markdown(&self) -> String {
        let mut markdown = String::new();
        let mut open = false;
        for line in &self.lines {
            if line.starts_with('\n') {
                if open {
                    markdown.push_str("```\n");
                }
                markdown.push_str(line);
                markdown.push_str("\n```\n");
                open = true;
            } else {
                markdown.push_str(line);
                markdown.push('\n');
            }
        }
        if open {
            markdown.push_str("```\n");
        }
        markdown
    }
}

/// `text` with what changes from run to run (times, epochs) masked.
fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["\"ts\":", "\"since\":", "\"epoch\":\""]
        .iter()
        .filter_map(|key| rest.find(key).map(|at| (at, key.len())))
        .min()
        .map(|(at, len)| at + len)
    {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        out.push('…');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

const TRANSCRIPT_BEGIN: &str = "<!-- v2 transcript: begin (written by tests/v2.rs) -->\n";
const TRANSCRIPT_END: &str = "<!-- v2 transcript: end -->";

/// docs/PROTOCOL.md's v2 transcript is this session, recorded: every request type and
/// every error code, as a v2, a v1 and a plain client see them.
/// `UPDATE_DOCS=1 cargo test -p chat-e2e --test v2 transcript` writes it there.
#[tokio::test]
async fn the_protocol_guide_shows_this_recorded_transcript() {
    let server = TestServer::start().await;
    let mut t = Transcript::default();
    let mut pat = server.join("1", "1").await;
    let mut vic = V1::connect(&server, "/ws/2").await;
    vic.seated().await;

    t.say("**Ada and Bob join with v2.** The welcome is v1's, with `read`: this id's read position in the room.");
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    t.recv("ada(v2)", &mut ada, "welcome").await;
    t.recv("ada(v2)", &mut ada, "join").await;
    t.recv("ada(v2)", &mut ada, "join").await;
    t.recv("ada(v2)", &mut ada, "join").await;
    let mut bob = V2::connect(&server, "/ws/8?name=Bob").await;
    bob.seated().await;
    t.recv("ada(v2)", &mut ada, "join").await;

    t.say("**A message, and its edit.** Every operation is an event with its own offset. v1 and plain clients see an edit as a message.");
    t.send(
        "ada(v2)",
        &mut ada,
        r#"{"type":"message","text":"hello, tpyo","nonce":"a-1"}"#,
    )
    .await;
    let hello = offset(&t.recv("bob(v2)", &mut bob, "message").await);
    let edit =
        format!(r#"{{"type":"edit","target":{hello},"text":"hello, typo fixed","nonce":"a-2"}}"#);
    t.send("ada(v2)", &mut ada, &edit).await;
    t.recv("bob(v2)", &mut bob, "edit").await;
    v1_line(&mut t, &mut vic, "(edited) hello, typo fixed").await;
    plain_line(&mut t, &mut pat, "Client #7: (edited) hello, typo fixed").await;

    t.say("**Reactions, a reply, an action.** v1 and plain clients are sent no reactions, a reply without `reply_to`, and an action as `* waves`.");
    for request in [
        format!(r#"{{"type":"react","target":{hello},"emoji":"👍"}}"#),
        format!(r#"{{"type":"react","target":{hello},"emoji":":tada:"}}"#),
        format!(r#"{{"type":"unreact","target":{hello},"emoji":":tada:"}}"#),
    ] {
        t.send("bob(v2)", &mut bob, &request).await;
        let kind = if request.contains("unreact") {
            "unreact"
        } else {
            "react"
        };
        t.recv("ada(v2)", &mut ada, kind).await;
    }
    let reply = format!(r#"{{"type":"message","text":"hi Ada","reply_to":{hello},"nonce":"b-1"}}"#);
    t.send("bob(v2)", &mut bob, &reply).await;
    t.recv("ada(v2)", &mut ada, "message").await;
    t.send(
        "bob(v2)",
        &mut bob,
        r#"{"type":"message","text":"waves","kind":"action"}"#,
    )
    .await;
    t.recv("ada(v2)", &mut ada, "message").await;
    v1_line(&mut t, &mut vic, "hi Ada").await;
    v1_line(&mut t, &mut vic, "* waves").await;
    plain_line(&mut t, &mut pat, "Client #8: * waves").await;

    t.say("**Typing** reaches the room's other v2 clients, not the typer's other connections, at most once per 2.5 s per connection (a client sends it every 3 s while its user types, and shows it for 6 s, or until that id's next message or leave).");
    t.send("ada(v2)", &mut ada, r#"{"type":"typing"}"#).await;
    t.recv("bob(v2)", &mut bob, "typing").await;

    t.say("**A delete.** The text is gone from memory, the data directory and Redis; the message stays as a tombstone, so that offsets stay dense. v1 and plain clients are sent nothing.");
    t.send(
        "ada(v2)",
        &mut ada,
        r#"{"type":"message","text":"oops, wrong room","nonce":"a-3"}"#,
    )
    .await;
    let oops = offset(&t.recv("bob(v2)", &mut bob, "message").await);
    t.send(
        "ada(v2)",
        &mut ada,
        &format!(r#"{{"type":"delete","target":{oops},"nonce":"a-4"}}"#),
    )
    .await;
    t.recv("bob(v2)", &mut bob, "delete").await;

    t.say("**Read positions.** Bob has read up to the delete: his other connection is told, and his next welcome carries it. Others are not told (no read receipts).");
    let mut bob_phone = V2::connect(&server, "/ws/8").await;
    bob_phone.seated().await;
    let read = oops + 1;
    t.send(
        "bob(v2)",
        &mut bob,
        &format!(r#"{{"type":"read","offset":{read}}}"#),
    )
    .await;
    t.recv("bob(phone)", &mut bob_phone, "read").await;

    t.say(
        "**Refused requests are answered, not closed**, each with a code and the nonce it answers.",
    );
    let refusals = [
        format!(r#"{{"type":"edit","target":{hello},"text":"mine now","nonce":"b-2"}}"#),
        format!(r#"{{"type":"react","target":{oops},"emoji":"👍","nonce":"b-3"}}"#),
        format!(r#"{{"type":"react","target":{hello},"emoji":"+1","nonce":"b-4"}}"#),
        r#"{"type":"read","offset":999,"nonce":"b-5"}"#.to_owned(),
    ];
    for request in refusals {
        t.send("bob(v2)", &mut bob, &request).await;
        t.recv("bob(v2)", &mut bob, "error").await;
    }

    t.say("**Direct messages.** `dm.7.8` is for ids 7 and 8 only (anyone else is refused with 403 at the handshake); each message there is told to both ids' connections in other rooms as a `dm` notice, and `dms` lists one's own, with unread counts.");
    let mut ada_dm = V2::connect(&server, "/ws/7?room=dm.7.8").await;
    ada_dm.seated().await;
    t.send(
        "ada(dm)",
        &mut ada_dm,
        r#"{"type":"message","text":"psst"}"#,
    )
    .await;
    t.recv("ada(dm)", &mut ada_dm, "message").await;
    t.recv("bob(v2)", &mut bob, "dm").await;
    t.send("bob(v2)", &mut bob, r#"{"type":"dms","nonce":"b-6"}"#)
        .await;
    t.recv("bob(v2)", &mut bob, "dms").await;

    t.say("**A newcomer's replay** shows each message in its latest state (edited, reacted to, deleted), and the operations still in the log.");
    let mut cy = V2::connect(&server, "/ws/9").await;
    let welcome = t.recv("cy(v2)", &mut cy, "welcome").await;
    let last = offset(&welcome);
    let first = hello;
    for _ in 0..first - 1 {
        cy.frame().await;
    }
    for at in first..=last {
        let frame = t.recv_any("cy(v2)", &mut cy).await;
        assert_eq!(offset(&frame), at);
    }

    t.say("**Paging and search.** A page of the events before (or after) an offset, in their latest state, and whether there are more; a search for messages with words starting so, newest first.");
    t.send(
        "cy(v2)",
        &mut cy,
        r#"{"type":"history","before":7,"limit":2,"nonce":"c-1"}"#,
    )
    .await;
    t.recv("cy(v2)", &mut cy, "history").await;
    t.send(
        "cy(v2)",
        &mut cy,
        r#"{"type":"search","text":"typo fix","limit":5,"nonce":"c-2"}"#,
    )
    .await;
    t.recv("cy(v2)", &mut cy, "search").await;
    t.send(
        "cy(v2)",
        &mut cy,
        r#"{"type":"history","before":-1,"limit":500,"nonce":"c-3"}"#,
    )
    .await;
    t.recv("cy(v2)", &mut cy, "error").await;

    t.say("**Too old to change.** With `--history 3` and no `--data-dir`, a message that has left the history can no longer be edited, deleted or reacted to (with `--data-dir` it can: the store has it).");
    let small = TestServer::start_with(Config {
        history: 3,
        ..Config::default()
    })
    .await;
    let mut ada = V2::connect(&small, "/ws/7").await;
    ada.seated().await;
    for text in ["one", "two", "three", "four"] {
        ada.say(text, None).await;
    }
    v2_until(&mut ada, "four").await;
    t.send(
        "ada(v2)",
        &mut ada,
        r#"{"type":"edit","target":2,"text":"ONE","nonce":"a-5"}"#,
    )
    .await;
    t.recv("ada(v2)", &mut ada, "error").await;

    t.say("**A store that cannot be read** (with `--data-dir`, a database damaged under the running server) is answered `unavailable`; the session goes on.");
    let data = testkit::process::Scratch::new("transcript");
    let durable = TestServer::start_with(Config {
        data_dir: Some(data.path().to_owned()),
        ..Config::default()
    })
    .await;
    let mut ada = V2::connect(&durable, "/ws/7").await;
    ada.seated().await;
    rusqlite::Connection::open(data.path().join("chat.sqlite3"))
        .unwrap()
        .execute_batch("DROP TABLE message_index")
        .unwrap();
    t.send(
        "ada(v2)",
        &mut ada,
        r#"{"type":"search","text":"anything","limit":5,"nonce":"a-6"}"#,
    )
    .await;
    t.recv("ada(v2)", &mut ada, "error").await;

    let path = testkit::repository().join("docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(&path).expect("docs/PROTOCOL.md");
    let start = doc.find(TRANSCRIPT_BEGIN).expect("the begin marker") + TRANSCRIPT_BEGIN.len();
    let end = start + doc[start..].find(TRANSCRIPT_END).expect("the end marker");
    let recorded = t.markdown();
    for code in [
        "not_yours",
        "no_such_message",
        "too_old",
        "invalid",
        "unavailable",
    ] {
        assert!(
            recorded.contains(&format!("\"code\":\"{code}\"")),
            "{code}: {recorded}"
        );
    }
    for request in [
        "message", "edit", "delete", "react", "unreact", "typing", "read", "dms", "history",
        "search",
    ] {
        let sent = format!("> {{\"type\":\"{request}\"");
        assert!(recorded.contains(&sent), "{request}");
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{recorded}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).expect("write docs/PROTOCOL.md");
        return;
    }
    assert_eq!(
        masked(&doc[start..end]),
        masked(&recorded),
        "docs/PROTOCOL.md's v2 transcript is not what the server does: \
         run UPDATE_DOCS=1 cargo test -p chat-e2e --test v2 transcript"
    );
}

/// Records the v1 client's next message, which must say `text`.
async fn v1_line(t: &mut Transcript, vic: &mut V1, text: &str) {
    loop {
        let frame = vic.socket.recv().await;
        let parsed: Value = serde_json::from_str(&frame).unwrap();
        if parsed["text"] == text {
            t.lines.push(format!("{:<11} < {frame}", "vic(v1)"));
            return;
        }
    }
}

/// Records the plain client's line `line`, skipping those before it.
async fn plain_line(t: &mut Transcript, pat: &mut Client, line: &str) {
    while pat.recv().await != line {}
    t.lines.push(format!("{:<11} < {line}", "pat(plain)"));
}

/// Pages from `client` until there are no more, `before` the newest first; returns the
/// offsets, oldest first.
async fn page_back(client: &mut V2, from: u64, limit: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut before = from;
    for page in 0.. {
        let nonce = format!("p{page}");
        client
            .send(&json!({"type": "history", "before": before, "limit": limit, "nonce": nonce}))
            .await;
        let answer = client
            .next_matching("a history page", |f| {
                f["type"] == "history" && f["nonce"] == nonce
            })
            .await;
        let events = answer["events"].as_array().unwrap();
        assert!(events.len() as u64 <= limit);
        let mut got: Vec<u64> = events.iter().map(offset).collect();
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 1),
            "in order: {got:?}"
        );
        if let Some(&first) = got.first() {
            before = first;
        }
        got.extend(offsets);
        offsets = got;
        if answer["more"] == false {
            return offsets;
        }
        assert!(!events.is_empty(), "more, but an empty page");
    }
    unreachable!()
}

#[tokio::test]
async fn history_pages_back_and_forth_through_memory_and_search_finds_messages() {
    let server = TestServer::start_with(Config {
        history: 400,
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let mut ada = V2::connect(&server, "/ws/7").await;
    ada.seated().await;
    for n in 0..500 {
        ada.say(
            &format!("line {n} {}", if n % 50 == 0 { "Needle" } else { "hay" }),
            None,
        )
        .await;
    }
    ada.say("end", None).await;
    let (_, end) = v2_up_to(&mut ada, "end").await;
    let last = offset(&end);

    // Back from the newest: everything memory keeps (the last 400), once, in order.
    let offsets = page_back(&mut ada, last + 1, 150).await;
    assert_eq!(offsets, (last - 399..=last).collect::<Vec<_>>());

    // Forward from an offset: the oldest after it first.
    ada.send(&json!({"type": "history", "after": last - 10, "limit": 5}))
        .await;
    let forward = ada.next_of("history").await;
    let got: Vec<u64> = forward["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(offset)
        .collect();
    assert_eq!(got, (last - 9..=last - 5).collect::<Vec<_>>());
    assert_eq!(forward["more"], true);

    // Search: newest first, paged, case-insensitive; a deleted message is forgotten.
    ada.send(&json!({"type": "search", "text": "needle", "limit": 3, "nonce": "s1"}))
        .await;
    let found = ada.next_of("search").await;
    let texts: Vec<&str> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["line 450 Needle", "line 400 Needle", "line 350 Needle"]
    );
    assert_eq!(found["more"], true, "line 300 and 250 and 200 and 150 too");
    let newest = offset(&found["events"][0]);
    let oldest_found = offset(&found["events"][2]);
    ada.delete(newest, None).await;
    ada.next_of("delete").await;
    ada.send(
        &json!({"type": "search", "text": "NEEDLE line", "before": oldest_found, "limit": 200}),
    )
    .await;
    let rest = ada.next_of("search").await;
    let rest: Vec<&str> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        rest,
        [
            "line 300 Needle",
            "line 250 Needle",
            "line 200 Needle",
            "line 150 Needle"
        ]
    );
    ada.send(&json!({"type": "search", "text": "needle", "limit": 1}))
        .await;
    let after_delete = ada.next_of("search").await;
    assert_eq!(
        after_delete["events"][0]["text"], "line 400 Needle",
        "the deleted one is gone"
    );

    // Bad requests are answered, not closed.
    for (request, says) in [
        (
            json!({"type": "history", "before": -1, "limit": 10}),
            "0 or more",
        ),
        (
            json!({"type": "history", "before": 5, "limit": 100000}),
            "a limit is 1 to 200",
        ),
        (
            json!({"type": "history", "before": 5, "limit": 0}),
            "a limit is 1 to 200",
        ),
        (
            json!({"type": "history", "limit": 10}),
            "one of before and after",
        ),
        (
            json!({"type": "history", "before": 5, "after": 1, "limit": 10}),
            "one of before and after",
        ),
        (
            json!({"type": "search", "text": "  ", "limit": 10}),
            "a search is",
        ),
        (
            json!({"type": "search", "text": "x", "before": -5, "limit": 10}),
            "0 or more",
        ),
        // Past 64 bits (a float to serde_json), and past i64: out of range, not
        // malformed.
        (
            json!({"type": "history", "before": 5, "limit": u64::MAX}),
            "a limit is 1 to 200",
        ),
        (
            serde_json::from_str(
                r#"{"type": "history", "before": 5, "limit": 100000000000000000000}"#,
            )
            .unwrap(),
            "a limit is 1 to 200",
        ),
        (
            serde_json::from_str(
                r#"{"type": "search", "text": "x", "before": -100000000000000000000, "limit": 10}"#,
            )
            .unwrap(),
            "0 or more",
        ),
    ] {
        let mut request = request;
        request["nonce"] = json!("bad");
        ada.send(&request).await;
        let error = ada.error_for("bad").await;
        assert_eq!(error["code"], "invalid", "{request}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    ada.say("still open", None).await;
    ada.next_matching("the echo", |f| f["text"] == "still open")
        .await;
}

#[tokio::test]
async fn with_tokens_a_direct_room_keeps_out_every_proven_id_but_its_two() {
    let server = testkit::tokens::server_with_tokens().await;
    let token = |id: &str| testkit::tokens::token(id, None);
    assert_refused_as(
        server.address,
        &upgrade_request(&format!("/ws/9?room=dm.7.8&token={}", token("9"))),
        (403, "for #7 and #8 only"),
        "not_your_room",
    )
    .await;
    // Claiming 7 with 9's token is refused as any token for another id is.
    let claimed = raw_http_status(
        &server,
        &upgrade_request(&format!("/ws/7?room=dm.7.8&token={}", token("9"))),
    )
    .await;
    assert_eq!(claimed, 403);
    let mut ada = V2::connect(&server, &format!("/ws/7?room=dm.7.8&token={}", token("7"))).await;
    let (welcome, _) = ada.seated().await;
    assert_eq!(welcome["verified"], true);
}

async fn raw_http_status(server: &TestServer, request: &str) -> u16 {
    testkit::raw_http(server.address, request).await.status
}
