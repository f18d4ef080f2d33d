//! The real `chat-tui` binary in a pseudo-terminal against a real server speaking
//! `chat.v2.json`, beside a v2 client written in the test: what a person sees of edits,
//! deletes, reactions, replies, actions and typing, the read marker the server keeps,
//! older pages fetched by scrolling back, and search on the server.

use chat_server::Config;
use serde_json::json;
use testkit::TestServer;
use testkit::process::Scratch;
use testkit::terminal::Terminal;
use testkit::v2::{Say, V2, offset};

const UP: &str = "\u{1b}[A";
const ALT_UP: &str = "\u{1b}[1;3A";
const ALT_RIGHT: &str = "\u{1b}[1;3C";
const ALT_LEFT: &str = "\u{1b}[1;3D";
const HOME: &str = "\u{1b}[H";
const BACKSPACE: &str = "\u{7f}";
const FOCUS_LOST: &str = "\u{1b}[O";

fn chat_tui(server: &TestServer, id: &str) -> Terminal {
    let state = std::env::temp_dir().join("chat-tui-tests-state");
    chat_tui_keeping(server, id, &state)
}

/// `chat-tui` keeping the rooms open at quitting in `state` (`XDG_STATE_HOME`).
fn chat_tui_keeping(server: &TestServer, id: &str, state: &std::path::Path) -> Terminal {
    chat_tui_with(server, id, state, &[])
}

/// `chat-tui` with more arguments, its state in `state` (`XDG_STATE_HOME`) and no
/// settings file (`XDG_CONFIG_HOME` is `state` too).
fn chat_tui_with(
    server: &TestServer,
    id: &str,
    state: &std::path::Path,
    more: &[&str],
) -> Terminal {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
    let url = format!("ws://{}", server.address);
    let state = state.to_str().expect("a UTF-8 path");
    let env = [("XDG_STATE_HOME", state), ("XDG_CONFIG_HOME", state)];
    let mut args = vec!["--server", &url, "--id", id];
    args.extend_from_slice(more);
    Terminal::start(binary, &args, &env, (24, 100))
}

/// The row of the screen that holds `text`, and the row under it.
fn row_and_next(tui: &Terminal, text: &str) -> (String, String) {
    let contents = tui.contents();
    let rows: Vec<&str> = contents.lines().collect();
    let at = rows
        .iter()
        .position(|row| row.contains(text))
        .unwrap_or_else(|| panic!("{text:?} is not on the screen:\n{contents}"));
    (
        rows[at].to_owned(),
        rows.get(at + 1).copied().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_reactions_replies_actions_and_typing() {
    let server = TestServer::start().await;
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    ada.seated().await;
    let mut tui = chat_tui(&server, "42");
    tui.wait_for("Client #42 has entered the chat").await;
    tui.wait_for("● connected").await;

    // Typing says so (at once, then at most every 3 s), before anything is sent.
    tui.type_keys("hello, tpyo");
    let typing = ada.next_of("typing").await;
    assert_eq!(typing["id"], "42", "{typing}");
    tui.type_keys("\r");
    let sent = ada.next_of("message").await;
    assert_eq!(sent["text"], "hello, tpyo");
    let mine = offset(&sent);
    tui.wait_for("Client #42: hello, tpyo").await;
    testkit::eventually("the message echoed", async || {
        (!tui.contents().contains("sending…")).then_some(())
    })
    .await;

    // Up on an empty line puts the last message in the line; Enter saves the edit.
    tui.type_keys(UP);
    tui.wait_for("editing your message").await;
    tui.wait_for("› hello, tpyo").await;
    tui.type_keys(&BACKSPACE.repeat(4));
    tui.type_keys("typo fixed\r");
    let edit = ada.next_of("edit").await;
    assert_eq!(
        (&edit["target"], &edit["text"]),
        (&json!(mine), &json!("hello, typo fixed"))
    );
    tui.wait_for("Client #42: hello, typo fixed (edited)").await;

    // A reaction shows under the message.
    ada.react(mine, ":thumbsup:", None).await;
    ada.next_of("react").await;
    tui.wait_for(":thumbsup: 1").await;
    let (message, under) = row_and_next(&tui, "hello, typo fixed (edited)");
    assert!(under.contains(":thumbsup: 1"), "{message:?} then {under:?}");

    // A reply shows its parent quoted above it; an action is what someone does.
    ada.say_with(
        "glad you fixed it",
        Say {
            reply_to: Some(mine),
            ..Say::default()
        },
    )
    .await;
    ada.next_of("message").await;
    tui.wait_for("~Ada: glad you fixed it").await;
    let (quote, reply) = row_and_next(&tui, "↳ Client #42: hello, typo fixed");
    assert!(
        reply.contains("~Ada: glad you fixed it"),
        "{quote:?} then {reply:?}"
    );
    ada.say_with(
        "waves",
        Say {
            action: true,
            ..Say::default()
        },
    )
    .await;
    let waved = ada.next_of("message").await;
    tui.wait_for("* ~Ada waves").await;

    // /react on the newest message of someone else's, /reply to it, /me.
    tui.type_keys("/react :tada:\r");
    let react = ada.next_of("react").await;
    assert_eq!(
        (&react["target"], &react["emoji"], &react["id"]),
        (&waved["offset"], &json!(":tada:"), &json!("42"))
    );
    tui.wait_for(":tada: 1").await;
    tui.type_keys("/reply hi Ada\r");
    let reply = ada.next_of("message").await;
    assert_eq!(
        (&reply["text"], &reply["reply_to"]),
        (&json!("hi Ada"), &waved["offset"])
    );
    tui.wait_for("↳ * ~Ada waves").await;
    tui.type_keys("/me nods\r");
    let action = ada.next_of("message").await;
    assert_eq!(
        (&action["text"], &action["kind"]),
        (&json!("nods"), &json!("action"))
    );
    tui.wait_for("* Client #42 nods").await;

    // Alt-Up selects a message (the newest, then each above it): /reply answers it.
    testkit::eventually("our messages echoed", async || {
        (!tui.contents().contains("sending…")).then_some(())
    })
    .await;
    tui.type_keys(&ALT_UP.repeat(3));
    tui.wait_for("selected: /reply").await;
    tui.type_keys("/reply about that wave\r");
    let answer = ada.next_of("message").await;
    assert_eq!(
        (&answer["text"], &answer["reply_to"]),
        (&json!("about that wave"), &waved["offset"])
    );
    tui.wait_for("Client #42: about that wave").await;
    // The selection was used: /delete takes back the last of ours, once its echo has
    // made it one (before, it is on its way, and the last is the one before it).
    let action = answer;
    testkit::eventually("the answer echoed", async || {
        (!tui.contents().contains("sending…")).then_some(())
    })
    .await;

    // /delete takes the last one back.
    tui.type_keys("/delete\r");
    let delete = ada.next_of("delete").await;
    assert_eq!(delete["target"], action["offset"]);
    tui.wait_for("Client #42: (deleted)").await;
    assert!(
        tui.contents().contains("* Client #42 nods"),
        "{}",
        tui.contents()
    );

    // Someone typing is shown until they say something.
    ada.typing().await;
    tui.wait_for("~Ada is typing…").await;
    ada.say("done", None).await;
    tui.wait_for("~Ada: done").await;
    assert!(!tui.contents().contains("is typing"), "{}", tui.contents());

    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// A server keeping only `history` events in memory and all of them in `data`.
async fn durable(data: &Scratch, history: usize) -> TestServer {
    TestServer::start_with(Config {
        data_dir: Some(data.path().to_owned()),
        history,
        rate_limit: None,
        ..Config::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_marker_older_pages_and_search_come_from_the_server() {
    let data = Scratch::new("tui-v2-pages");
    let server = durable(&data, 1000).await;
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    ada.seated().await;
    // m0..m19, then 30 messages of 40 kB that push them out of the 1 MiB the server
    // holds in memory (its store keeps them), then m20..m49.
    let mut offsets = Vec::new();
    for n in 0..20 {
        ada.say(&format!("m{n} said"), None).await;
        offsets.push(offset(&ada.next_of("message").await));
    }
    for n in 0..30 {
        ada.say(&format!("big{n} {}", "x".repeat(40_000)), None)
            .await;
        ada.next_of("message").await;
    }
    for n in 20..50 {
        ada.say(&format!("m{n} said"), None).await;
        offsets.push(offset(&ada.next_of("message").await));
    }
    // Id 42 read up to m39 on another device (its other connection hears it).
    let mut phone = V2::connect(&server, "/ws/42").await;
    phone.seated().await;
    let mut tablet = V2::connect(&server, "/ws/42").await;
    tablet.seated().await;
    phone.read(offsets[39]).await;
    assert_eq!(tablet.next_of("read").await["offset"], json!(offsets[39]));
    drop((phone, tablet));

    let mut tui = chat_tui(&server, "42");
    tui.wait_for("m49 said").await;
    let (marker, next) = row_and_next(&tui, "── new since you last read ──");
    assert!(next.contains("~Ada: m40 said"), "{marker:?} then {next:?}");

    // Looking away tells the server how far this id has read: its other connection
    // hears it.
    let mut phone = V2::connect(&server, "/ws/42").await;
    phone.seated().await;
    tui.type_keys(FOCUS_LOST);
    let read = phone.next_of("read").await;
    assert!(
        read["offset"].as_u64() > Some(offsets[49]),
        "read up to the newest shown: {read}"
    );

    // The welcome replayed only what memory holds: scrolling back past the oldest
    // fetches the pages before it from the server, down to the first.
    assert!(!tui.contents().contains("m0 said"));
    testkit::eventually("the first message, paged in", async || {
        tui.type_keys(HOME);
        tui.contents().contains("~Ada: m0 said").then_some(())
    })
    .await;
    tui.wait_for("~Ada (#7) has entered the chat").await;

    // /search asks the server, over all it keeps.
    tui.type_keys("\u{1b}[F/search m1\r");
    tui.wait_for("search “m1”: 11 messages, newest first").await;
    tui.wait_for("│ ").await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rooms_and_a_direct_message_open_at_once() {
    let server = TestServer::start().await;
    let mut ada = V2::connect(&server, "/ws/7?room=ops&name=Ada").await;
    ada.seated().await;
    let mut tui = chat_tui(&server, "42");
    tui.wait_for("● connected · id 42 · #main").await;

    // /join opens a buffer beside the others.
    tui.type_keys("/join ops\r");
    tui.wait_for("● connected · id 42 · #ops 1:#main").await;
    ada.next_of("join").await;
    tui.type_keys("/join dev\r");
    tui.wait_for("● connected · id 42 · #dev 1:#main 2:#ops")
        .await;
    // /msg ID TEXT opens them and says TEXT there, once the buffer has joined.
    tui.type_keys("/msg 7 first words\r");
    tui.wait_for("● connected · id 42 · #dm.7.42 1:#main 2:#ops 3:#dev")
        .await;
    tui.wait_for("Client #42: first words").await;
    testkit::eventually("the first words echoed", async || {
        (!tui.contents().contains("sending…")).then_some(())
    })
    .await;

    // The list of open buffers, left of the messages (F3 hides it).
    tui.wait_for("4 #dm.7.42").await;
    tui.wait_for("2 #ops").await;

    // What is said in a room not on screen is counted in the hotlist.
    ada.say("anyone in ops?", None).await;
    let asked = ada.next_of("message").await;
    tui.wait_for("2:#ops(1)").await;
    tui.wait_for("2 #ops 1").await;
    tui.type_keys("\u{1b}OR");
    testkit::eventually("the list hidden", async || {
        (!tui.contents().contains("2 #ops 1")).then_some(())
    })
    .await;
    tui.type_keys("\u{1b}OR");
    tui.wait_for("2 #ops 1").await;
    let mut dm = V2::connect(&server, "/ws/7?room=dm.7.42&name=Ada").await;
    dm.seated().await;
    dm.say("psst", None).await;
    dm.next_of("message").await;
    tui.wait_for("~Ada: psst").await;

    // Alt-2: #ops, where the message is; react, reply and edit there.
    tui.type_keys("\u{1b}2");
    tui.wait_for("● connected · id 42 · #ops 1:#main 3:#dev 4:#dm.7.42")
        .await;
    tui.wait_for("~Ada: anyone in ops?").await;
    tui.type_keys("/react :wave:\r");
    let react = ada.next_of("react").await;
    assert_eq!(react["target"], asked["offset"]);
    tui.wait_for(":wave: 1").await;
    tui.type_keys("/reply me\r");
    let reply = ada.next_of("message").await;
    assert_eq!(
        (&reply["text"], &reply["reply_to"]),
        (&json!("me"), &asked["offset"])
    );
    tui.wait_for("↳ ~Ada: anyone in ops?").await;
    testkit::eventually("the reply echoed", async || {
        (!tui.contents().contains("sending…")).then_some(())
    })
    .await;
    tui.type_keys(UP);
    tui.wait_for("› me").await;
    tui.type_keys(" too\r");
    let edit = ada.next_of("edit").await;
    assert_eq!(
        (&edit["target"], &edit["text"]),
        (&reply["offset"], &json!("me too"))
    );
    tui.wait_for("Client #42: me too (edited)").await;

    // Ctrl-N and Ctrl-P go round the buffers; Alt-4 is the direct messages.
    tui.type_keys("\u{e}");
    tui.wait_for("● connected · id 42 · #dev").await;
    tui.type_keys("\u{10}");
    tui.wait_for("● connected · id 42 · #ops").await;
    // Alt-Right and Alt-Left too, as in weechat.
    tui.type_keys(ALT_RIGHT);
    tui.wait_for("● connected · id 42 · #dev").await;
    tui.type_keys(ALT_LEFT);
    tui.wait_for("● connected · id 42 · #ops").await;
    tui.type_keys("\u{1b}4");
    tui.wait_for("● connected · id 42 · #dm.7.42").await;
    tui.type_keys("just us\r");
    assert_eq!(dm.next_of("message").await["text"], "just us");

    // /part closes the buffer on screen; the room sees us leave.
    tui.type_keys("\u{1b}2/part\r");
    tui.wait_for("● connected · id 42 · #main 2:#dev 3:#dm.7.42")
        .await;
    let left = ada.next_of("leave").await;
    assert_eq!(left["id"], "42");
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_open_at_quitting_are_open_again_on_the_next_start() {
    let server = TestServer::start().await;
    let state = Scratch::new("tui-rooms");
    let mut tui = chat_tui_keeping(&server, "42", state.path());
    tui.wait_for("● connected · id 42 · #main").await;
    tui.type_keys("/join ops\r");
    tui.wait_for("● connected · id 42 · #ops 1:#main").await;
    tui.type_keys("/query 7\r");
    tui.wait_for("● connected · id 42 · #dm.7.42 1:#main 2:#ops")
        .await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());

    let mut ops = V2::connect(&server, "/ws/8?room=ops").await;
    ops.seated().await;
    let mut tui = chat_tui_keeping(&server, "42", state.path());
    tui.wait_for("● connected · id 42 · #main 2:#ops 3:#dm.7.42")
        .await;
    // Connected there too: the room sees the join.
    let joined = ops.next_of("join").await;
    assert_eq!(joined["id"], "42");
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_waiting_at_the_start_are_in_the_hotlist() {
    let server = TestServer::start().await;
    let mut ada = V2::connect(&server, "/ws/7?room=dm.7.42&name=Ada").await;
    ada.seated().await;
    ada.say("are you there?", None).await;
    ada.next_of("message").await;
    let state = Scratch::new("tui-dms");
    let mut tui = chat_tui_keeping(&server, "42", state.path());
    // The server lists the direct messages of 42: opened beside, counted.
    tui.wait_for("● connected · id 42 · #main 2:#dm.7.42(1)")
        .await;
    tui.type_keys("\u{1b}2");
    tui.wait_for("~Ada: are you there?").await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_started_while_running_opens_its_buffer_at_once() {
    let server = TestServer::start().await;
    let state = Scratch::new("tui-dm-notice");
    let mut tui = chat_tui_keeping(&server, "42", state.path());
    tui.wait_for("● connected · id 42 · #main").await;
    // Nobody has written to 42 yet: the first `dms` list is empty.
    let mut ada = V2::connect(&server, "/ws/7?room=dm.7.42&name=Ada").await;
    ada.seated().await;
    ada.say("got a minute?", None).await;
    ada.next_of("message").await;
    // The server's `dm` notice, long before the next `dms` (30 s): opened, and counted
    // as calling for us (`!`), as everything said to us in a direct message is.
    tui.wait_for("● connected · id 42 · #main 2:#dm.7.42(1)!")
        .await;
    let joined = ada.next_of("join").await;
    assert_eq!(joined["id"], "42");
    // Its welcome has the message; a second one is counted, and not opened twice.
    ada.say("it's about the release", None).await;
    tui.wait_for("● connected · id 42 · #main 2:#dm.7.42(2)!")
        .await;
    assert!(!tui.contents().contains("3:#dm"), "{}", tui.contents());
    let mut phone = V2::connect(&server, "/ws/42?room=dm.7.42").await;
    phone.seated().await;
    tui.type_keys("\u{1b}2");
    tui.wait_for("~Ada: got a minute?").await;
    tui.wait_for("~Ada: it's about the release").await;
    // Back to main: what the buffer showed is read, and 42's other devices are told.
    tui.type_keys("\u{1b}1");
    tui.wait_for("● connected · id 42 · #main 2:#dm.7.42 ")
        .await;
    let read = phone.next_of("read").await;
    let newest = ada.next_of("message").await;
    // Up to the newest event shown, the phone's own join after the message.
    assert!(
        read["offset"].as_u64() > newest["offset"].as_u64(),
        "{read} {newest}"
    );
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// Issue 31, point 5: a kick is said to the one kicked, in plain words, and chat-tui
/// does not reconnect into it on its own; F5 joins again. A moderator's command is a
/// request, and its event a line everyone sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_is_said_and_not_undone_by_a_reconnect() {
    let server = TestServer::start_with(Config {
        admins: vec![chat::ClientId::parse("42").unwrap()],
        ..Config::default()
    })
    .await;
    let mut bob = V2::connect(&server, "/ws/9?name=Bob").await;
    bob.seated().await;
    let mut tui = chat_tui(&server, "42");
    tui.wait_for("● connected · id 42 · #main").await;
    bob.next_of("join").await;
    // 42 is the operator's admin (--admin): its /kick goes.
    tui.type_keys("/kick 9 calm down\r");
    let kick = bob.next_of("kick").await;
    assert_eq!(
        (&kick["member"], &kick["reason"]),
        (&json!("9"), &json!("calm down"))
    );
    tui.wait_for("Client #42 removed ~Bob (#9) from the room (calm down)")
        .await;

    // And 42 is kicked in turn, by another admin's request over the API's sibling.
    let mut admin = V2::connect(&server, "/ws/42?room=main").await;
    admin.seated().await;
    admin
        .send(&json!({"type": "kick", "member": "42", "reason": "your turn", "nonce": "k"}))
        .await;
    tui.wait_for("a moderator removed you from this room (“your turn”); you may come back")
        .await;
    tui.wait_for("✕ not connected (F5: try again)").await;
    tui.type_keys("\u{1b}[15~");
    tui.wait_for("● connected · id 42 · #main").await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_directory_has_a_file_per_room_with_edits_and_deletes() {
    let server = TestServer::start().await;
    let state = Scratch::new("tui-log-state");
    let logs = Scratch::new("tui-logs");
    let logs_path = logs.path().to_str().expect("a UTF-8 path");
    let mut ada = V2::connect(&server, "/ws/7?room=ops&name=Ada").await;
    ada.seated().await;
    let mut tui = chat_tui_with(&server, "42", state.path(), &["--log", logs_path]);
    tui.wait_for("● connected · id 42 · #main").await;
    tui.type_keys("/join ops\r");
    tui.wait_for("● connected · id 42 · #ops 1:#main").await;
    ada.next_of("join").await;
    ada.say("helo", None).await;
    let said = offset(&ada.next_of("message").await);
    ada.edit(said, "hello", None).await;
    ada.next_of("edit").await;
    ada.delete(said, None).await;
    ada.next_of("delete").await;
    tui.wait_for("~Ada: (deleted)").await;
    let ops = logs.path().join("ops.log");
    let logged = testkit::eventually("the delete in ops.log", async || {
        let logged = std::fs::read_to_string(&ops).ok()?;
        logged.contains("deleted their message").then_some(logged)
    })
    .await;
    let lines: Vec<&str> = logged.lines().map(|line| &line[20..]).collect();
    assert_eq!(
        lines,
        [
            "#ops ~Ada (#7) has entered the chat",
            "#ops Client #42 has entered the chat",
            "#ops ~Ada: helo",
            "#ops ~Ada edited their message “helo”: hello",
            "#ops ~Ada deleted their message “hello”",
        ],
        "{logged}"
    );
    let main = std::fs::read_to_string(logs.path().join("main.log")).expect("main.log");
    assert!(
        main.contains("#main Client #42 has entered the chat") && !main.contains("#ops"),
        "{main}"
    );
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_completes_the_names_and_ids_of_who_is_here() {
    let server = TestServer::start().await;
    let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
    ada.seated().await;
    let mut bob = V2::connect(&server, "/ws/700?name=Bob").await;
    bob.seated().await;
    let mut tui = chat_tui(&server, "42");
    tui.wait_for("● connected").await;
    // At the start of the line, a name and `: `.
    tui.type_keys("ad\t");
    tui.wait_for("› Ada:").await;
    tui.type_keys("hi\r");
    assert_eq!(ada.next_of("message").await["text"], "Ada: hi");
    // An id after `@`; Tab again, the next that fits.
    // (The screen does not show the space after 7: the second Tab is what tells.)
    tui.type_keys("ping @7\t\t");
    tui.wait_for("› ping @700").await;
    tui.type_keys("\r");
    assert_eq!(ada.next_of("message").await["text"], "ping @700 ");
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}
