//! The real `chat-tui` binary in a real pseudo-terminal, against a real in-process
//! server: what a person sees and types.

use chat_server::Config;
use testkit::TestServer;
use testkit::terminal::Terminal;

/// `chat-tui` in a 24x100 pty.
struct Tui;

impl Tui {
    fn start(args: &[&str]) -> Terminal {
        Self::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Terminal {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
        let home = scratch_home();
        let mut env = env.to_vec();
        env.push(("XDG_STATE_HOME", &home));
        env.push(("XDG_CONFIG_HOME", &home));
        Terminal::start(binary, args, &env, (24, 100))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_with_a_websocket_client_and_survives_a_server_restart() {
    let server = TestServer::start().await;
    let address = server.address;
    let mut tui = Tui::start(&["--server", &format!("ws://{address}"), "--id", "42"]);
    tui.wait_for("Client #42 has entered the chat").await;
    tui.wait_for("● connected · id 42").await;

    let mut other = server.join("7", "7").await;
    tui.wait_for("Client #7 has entered the chat").await;

    // What is typed reaches the other client.
    tui.type_keys("hello from the terminal\r");
    assert_eq!(other.recv().await, "Client #42: hello from the terminal");

    // What the other client says appears, made harmless.
    other.send("hi \u{1b}[2J\u{1b}]0;title\u{7} there").await;
    tui.wait_for("Client #7: hi ␛[2J␛]0;title␇ there").await;

    // The server goes away: the client says so and counts down.
    drop(other);
    server.stop().await;
    tui.wait_for("reconnecting in").await;

    // It comes back on the same port: the client reconnects by itself.
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("rebind the port");
    let server = TestServer::start_on(listener, Config::default());
    tui.wait_for("connected again").await;
    tui.wait_for("● connected").await;
    let mut other = server.join("8", "8").await;
    tui.type_keys("back again\r");
    let mut seen = other.recv().await;
    if seen != "Client #42: back again" {
        // The reconnect may have raced the join; then the join came first.
        seen = other.recv().await;
    }
    assert_eq!(seen, "Client #42: back again");

    // Ctrl-C quits and gives the terminal back as it was.
    tui.type_keys("\u{3}");
    let status = tui.wait_for_exit().await;
    assert!(status.success(), "{status:?}");
    let parser = tui.screen();
    let screen = parser.screen();
    assert!(!screen.alternate_screen(), "left the alternate screen");
    assert!(!screen.hide_cursor(), "the cursor is visible");
    assert!(!screen.bracketed_paste(), "bracketed paste is off");
    assert_eq!(
        screen.mouse_protocol_mode(),
        vt100::MouseProtocolMode::None,
        "mouse capture is off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_trying_while_the_server_is_down() {
    // Reserve a port, then free it, so nothing listens there.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let mut tui = Tui::start(&["--server", &format!("ws://{address}"), "--id", "5"]);
    tui.wait_for("cannot connect to").await;
    tui.wait_for("reconnecting in").await;

    // Typing offline keeps the line, with a notice.
    tui.type_keys("not lost\r");
    tui.wait_for("your line is kept").await;
    tui.wait_for("› not lost").await;

    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("bind the port");
    let server = TestServer::start_on(listener, Config::default());
    let mut watcher = server.join("9", "9").await;
    tui.wait_for("Client #5 has entered the chat").await;
    assert_eq!(watcher.recv().await, "Client #5 has entered the chat");
    tui.type_keys("\r");
    assert_eq!(watcher.recv().await, "Client #5: not lost");

    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_does_not_freeze_the_input() {
    let server = TestServer::start_with(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let mut tui = Tui::start(&["--server", &format!("ws://{}", server.address), "--id", "1"]);
    tui.wait_for("Client #1 has entered the chat").await;
    let mut flood = server.join("2", "2").await;
    for n in 0..10_000 {
        flood.send(&format!("burst {n}")).await;
    }
    // Typing during the burst still lands, and the last message is shown.
    tui.type_keys("typed during the burst");
    tui.wait_for("Client #2: burst 9999").await;
    tui.wait_for("› typed during the burst").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paste_waits_in_the_input_and_no_mouse_or_alt_m_leaves_the_mouse_alone() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut tui = Tui::start(&["--server", &url, "--id", "1"]);
    tui.wait_for("● connected").await;
    assert_ne!(
        tui.screen().screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None,
        "the wheel scrolls by default"
    );
    let mut watcher = server.join("2", "2").await;
    tui.wait_for("Client #2 has entered the chat").await;

    // A bracketed paste with a newline lands in the input; nothing is sent until Enter.
    tui.type_keys("\u{1b}[200~pasted\nlines\u{1b}[201~");
    tui.wait_for("› pasted↵lines").await;
    tui.type_keys("\r");
    assert_eq!(watcher.recv().await, "Client #1: pasted\nlines");
    // Had the paste gone on its own as well, its copy would come before this line.
    tui.type_keys("after the paste\r");
    assert_eq!(watcher.recv().await, "Client #1: after the paste");
    tui.type_keys("\u{3}");
    tui.wait_for_exit().await;

    let mut no_mouse = Tui::start(&["--server", &url, "--id", "3", "--no-mouse"]);
    no_mouse.wait_for("● connected").await;
    assert_eq!(
        no_mouse.screen().screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None,
        "--no-mouse leaves selection to the terminal"
    );
    // Alt-M takes the mouse, and gives it back.
    no_mouse.type_keys("\u{1b}m");
    no_mouse.wait_for("the mouse is chat-tui's").await;
    assert_ne!(
        no_mouse.screen().screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None
    );
    no_mouse.type_keys("\u{1b}m");
    no_mouse.wait_for("the mouse is the terminal's").await;
    assert_eq!(
        no_mouse.screen().screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_gives_the_terminal_back_and_shows_the_message() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut tui = Tui::start_with_env(
        &["--server", &url, "--id", "1"],
        &[("CHAT_TUI_TEST_PANIC", "1"), ("RUST_BACKTRACE", "0")],
    );
    let status = tui.wait_for_exit().await;
    assert!(!status.success());
    tui.wait_for("CHAT_TUI_TEST_PANIC is set").await;
    let parser = tui.screen();
    let screen = parser.screen();
    assert!(!screen.alternate_screen(), "left the alternate screen");
    assert!(!screen.hide_cursor(), "the cursor is visible");
    assert!(!screen.bracketed_paste(), "bracketed paste is off");
    assert_eq!(screen.mouse_protocol_mode(), vt100::MouseProtocolMode::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_color_drops_the_colours_and_keeps_bold_and_reverse() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    for (no_color, coloured) in [("1", false), ("", true)] {
        let mut tui =
            Tui::start_with_env(&["--server", &url, "--id", "1"], &[("NO_COLOR", no_color)]);
        tui.wait_for("● connected").await;
        tui.type_keys("mine\r");
        tui.wait_for("Client #1: mine").await;
        let (bold_and_reversed, fg) = {
            let parser = tui.screen();
            let screen = parser.screen();
            let row = (0..24)
                .find(|&row| {
                    screen
                        .contents_between(row, 0, row, 100)
                        .contains("Client #1: mine")
                })
                .expect("the message's row");
            // `Client #1:` after the time column: the sender, bold and reversed.
            let sender = screen.cell(row, 9).expect("a cell");
            (sender.bold() && sender.inverse(), sender.fgcolor())
        };
        assert!(bold_and_reversed, "NO_COLOR={no_color:?}");
        assert_eq!(
            fg != vt100::Color::Default,
            coloured,
            "NO_COLOR={no_color:?}"
        );
        tui.type_keys("\u{3}");
        tui.wait_for_exit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_fix_itself_is_said_and_not_retried_until_f5() {
    let server = TestServer::start().await;
    let address = server.address;
    // What the notice says.
    let cases = [
        (
            format!("ws://{address}/wrong/path"),
            &["nothing is served at /wrong/path/ws/1 on this server (HTTP 404)"][..],
        ),
        (
            format!("wss://{address}"),
            &["the server did not answer in TLS: use ws:// for a server without TLS"],
        ),
        (
            "ws://no-such-host.invalid:8000".to_owned(),
            &[
                "cannot find the host no-such-host.invalid (",
                "): check the name in --server",
            ],
        ),
    ];
    for (url, said) in cases {
        // Wide, so that the notices are not wrapped.
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
        let home = scratch_home();
        let scratch = [("XDG_STATE_HOME", &*home), ("XDG_CONFIG_HOME", &*home)];
        let mut tui = Terminal::start(
            binary,
            &["--server", &url, "--id", "1"],
            &scratch,
            (24, 250),
        );
        for piece in said {
            tui.wait_for(piece).await;
        }
        tui.wait_for("✕ not connected (F5: try again)").await;
        assert!(!tui.contents().contains("reconnecting in"), "{url}");
        // F5 tries once more, and says so again.
        tui.type_keys("\u{1b}[15~");
        testkit::within("F5 to try again and say so", async {
            while tui.contents().matches("press F5").count() < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        tui.wait_for("✕ not connected (F5: try again)").await;
        tui.type_keys("\u{3}");
        tui.wait_for_exit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_slash_commands_and_the_log() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let log = std::env::temp_dir().join(format!("chat-tui-log-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_path = log.to_str().expect("a UTF-8 path");
    let mut tui = Tui::start(&[
        "--server", &url, "--id", "1", "--room", "ops", "--log", log_path,
    ]);
    tui.wait_for("● connected · id 1 · #ops").await;
    let (socket, _) = tokio_tungstenite::connect_async(format!("{url}/ws/2?room=ops"))
        .await
        .expect("join ops");
    let mut ops = testkit::Client { socket };
    ops.recv().await;
    ops.send("in ops").await;
    assert_eq!(ops.recv().await, "Client #2: in ops");
    tui.wait_for("Client #2: in ops").await;

    // Not a command: kept, and nothing reaches the room.
    tui.type_keys("/frobnicate\r");
    tui.wait_for("unknown command /frobnicate (not sent)").await;
    // Sent escaped, it reaches the room once: had the unknown command gone too, a
    // second copy would come before the leave awaited below (and be in the log).
    tui.type_keys("\u{15}//frobnicate\r");
    assert_eq!(ops.recv().await, "Client #1: /frobnicate");
    // Its echo is in the log only once the client has read it, before leaving #ops:
    // until then the line shows as on its way.
    tui.wait_for("Client #1: /frobnicate").await;
    testkit::within("the echo of //frobnicate", async {
        while tui.contents().contains("sending…") {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;

    // /join opens #main beside #ops, which stays open (listed as 1 in the status bar).
    let mut main = server.join("3", "3").await;
    tui.type_keys("/join main\r");
    assert_eq!(main.recv().await, "Client #1 has entered the chat");
    tui.wait_for("● connected · id 1 · #main 1:#ops").await;
    // #main's history, then our join there, before quitting.
    tui.wait_for("Client #3 has entered the chat").await;
    tui.wait_for("Client #1 has entered the chat").await;
    ops.send("still in ops").await;
    assert_eq!(ops.recv().await, "Client #2: still in ops");
    tui.wait_for("1:#ops(1)").await;
    tui.type_keys("/quit\r");
    assert!(tui.wait_for_exit().await.success());

    let logged = std::fs::read_to_string(&log).expect("the log");
    let lines: Vec<&str> = logged.lines().collect();
    let texts: Vec<&str> = lines.iter().map(|line| &line[20..]).collect();
    assert_eq!(
        texts,
        [
            "#ops Client #1 has entered the chat",
            "#ops Client #2 has entered the chat",
            "#ops Client #2: in ops",
            "#ops Client #1: /frobnicate",
            // #main's history, received on joining it.
            "#main Client #3 has entered the chat",
            "#main Client #1 has entered the chat",
            // #ops, open beside it.
            "#ops Client #2: still in ops",
        ],
        "{logged}"
    );
    // `YYYY-MM-DD HH:MM:SS ` before each.
    assert!(
        lines
            .iter()
            .all(|line| line.as_bytes()[4] == b'-' && line.as_bytes()[19] == b' ')
    );
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dumb_terminal_gets_the_line_mode() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
    let home = scratch_home();
    let mut tui = Terminal::start(
        binary,
        &["--server", &url, "--id", "1"],
        &[
            ("TERM", "dumb"),
            ("XDG_STATE_HOME", &home),
            ("XDG_CONFIG_HOME", &home),
        ],
        (24, 100),
    );
    tui.wait_for("Client #1 has entered the chat").await;
    assert!(
        !tui.screen().screen().alternate_screen(),
        "no full-screen drawing"
    );
    let mut other = server.join("2", "2").await;
    tui.type_keys("typed in a dumb terminal\r");
    assert_eq!(other.recv().await, "Client #1: typed in a dumb terminal");
    tui.type_keys("\u{4}");
    tui.wait_for_exit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_while_unfocused_rings_and_notifies() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut other = server.join("2", "2").await;
    for (args, notifies) in [
        (&["--id", "1"][..], true),
        (&["--id", "1", "--no-notify"], false),
    ] {
        let mut tui = Tui::start(&[&["--server", &url][..], args].concat());
        tui.wait_for("● connected").await;
        other.recv().await;
        // The welcome taken (its history shown), or a focus report that came first
        // would be forgotten with the welcome's new conversation.
        tui.wait_for("Client #1 has entered the chat").await;
        // Focus reports, as a terminal sends them once asked (CSI ? 1004 h).
        tui.type_keys("\u{1b}[O");
        // The report went through the client's event queue once the marker shows; the
        // message must come after it.
        tui.wait_for("── new since you looked away ──").await;
        other.send("hey 1, look").await;
        other.recv().await;
        tui.wait_for("Client #2: hey 1, look").await;
        // Focus back, then a key: once the key shows, the focus report was taken.
        tui.type_keys("\u{1b}[Ix");
        tui.wait_for("› x").await;
        other.send("focused again, 1").await;
        other.recv().await;
        tui.wait_for("Client #2: focused again, 1").await;
        let (bells, oscs) = {
            let parser = tui.screen();
            let signals = parser.callbacks();
            (signals.bells, signals.oscs.clone())
        };
        if notifies {
            assert_eq!(bells, 1, "{oscs:?}");
            assert!(
                oscs.contains(&"9;Client #2: hey 1, look".to_owned()),
                "{oscs:?}"
            );
            assert!(
                oscs.contains(&"777;notify;chat-tui;Client #2: hey 1, look".to_owned()),
                "{oscs:?}"
            );
        } else {
            assert_eq!((bells, oscs.len()), (0, 0), "{oscs:?}");
        }
        // Ctrl-U empties the line first: Ctrl-C over a typed line asks before dropping it.
        tui.type_keys("\u{15}\u{3}");
        tui.wait_for_exit().await;
        other.recv().await;
    }
}

/// Over `chat.v1.json`: the history under a divider, names, a message on its way, and
/// after a lost connection what was missed, once, and what was lost, sent again once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_v1_history_names_and_a_lost_connection_lose_and_repeat_nothing() {
    use chat::v1::EventKind;
    let server = TestServer::start().await;
    let proxy = testkit::proxy::Proxy::start(server.address).await;
    let mut grace = testkit::v1::V1::connect(&server, "/ws/7?name=Grace").await;
    grace.seated().await;
    grace.say("before you came", None).await;
    grace.event().await;

    let url = format!("ws://{}", proxy.address);
    let mut tui = Tui::start(&["--server", &url, "--id", "42", "--name", "Ada"]);
    tui.wait_for("── earlier messages ──").await;
    tui.wait_for("~Grace: before you came").await;
    tui.wait_for("~Ada (#42) has entered the chat").await;
    tui.wait_for("· 2 here (F2) ·").await;
    let joined = grace.event().await;
    assert_eq!(joined.name.as_ref().map(|name| name.as_str()), Some("Ada"));

    tui.type_keys("first\r");
    let first = grace.event().await;
    assert!(
        matches!(&first.kind, EventKind::Message { text, nonce: Some(_), .. } if text == "first"),
        "{first:?}"
    );
    tui.wait_for("~Ada: first").await;

    // The network goes quiet: the next message is shown as on its way, and never
    // arrives; then the connection drops, and Grace talks while Ada is away.
    proxy.swallow();
    tui.type_keys("lost in transit\r");
    tui.wait_for("sending… ~Ada: lost in transit").await;
    proxy.cut();
    tui.wait_for("reconnecting in").await;
    let left = grace.event().await;
    assert_eq!((left.id.as_str(), &left.kind), ("42", &EventKind::leave()));
    grace.say("while you were away", None).await;
    grace.event().await;

    proxy.restore();
    tui.type_keys("\u{1b}[15~"); // F5: now
    tui.wait_for("── 2 events while you were away ──").await;
    tui.wait_for("~Grace: while you were away").await;
    // Back: the lost message goes again, once, and comes back confirmed.
    let rejoined = grace.event().await;
    assert_eq!(rejoined.kind, EventKind::join());
    let resent = grace.event().await;
    assert!(
        matches!(&resent.kind, EventKind::Message { text, .. } if text == "lost in transit"),
        "{resent:?}"
    );
    testkit::within("the resent message to be confirmed", async {
        while tui.contents().contains("sending…") {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    // Nothing else went: the next message Grace sees is the next one typed.
    tui.type_keys("after the resend\r");
    let next = grace.event().await;
    assert!(
        matches!(&next.kind, EventKind::Message { text, .. } if text == "after the resend"),
        "{next:?}"
    );
    tui.wait_for("~Ada: after the resend").await;
    let screen = tui.contents();
    for once in [
        "~Ada: lost in transit",
        "~Grace: while you were away",
        "~Grace: before you came",
    ] {
        assert_eq!(screen.matches(once).count(), 1, "{once} once:\n{screen}");
    }

    tui.type_keys("/who\r");
    tui.wait_for("2 here: ~Ada (#42) (you), ~Grace (#7)").await;
    tui.type_keys("\u{1b}OQ"); // F2: the member list beside the messages
    tui.wait_for("│ 2 here").await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// Emoji sequences that this terminal (vt100, which counts character by character, as
/// many terminals and older tmux do) draws at another width than Unicode gives them are
/// measured at start and drawn in a simpler form, so that nothing after them shifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_this_terminal_draws_at_another_width_are_drawn_simply_and_rows_stay_aligned() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut tui = Tui::start(&["--server", &url, "--id", "42"]);
    tui.wait_for("● connected · id 42").await;
    let mut seven = server.join("7", "7").await;
    seven
        .send("\u{2764}\u{fe0f} \u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467} 1\u{fe0f}\u{20e3} \u{1f1eb}\u{1f1f7} end")
        .await;
    tui.wait_for("Client #7: ❤ 👨👩👧 1 🇫🇷 end").await;
    let row = tui
        .contents()
        .lines()
        .find(|line| line.contains("Client #7: ❤"))
        .expect("the row")
        .to_owned();
    assert!(
        row.ends_with("🇫🇷 end"),
        "nothing after the emoji moved: {row:?}"
    );

    // The input line too: the cursor sits right after what is drawn.
    tui.type_keys("x\u{2764}\u{fe0f}y");
    tui.wait_for("› x❤y").await;
    // The cursor is placed after the text is drawn, maybe in a later write.
    testkit::within("the cursor after `› x❤y`", async {
        while tui.screen().screen().cursor_position() != (23, 5) {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    // Ctrl-C over a typed line asks first; the second quits.
    tui.type_keys("\u{3}");
    tui.wait_for("the line typed is not sent: Ctrl-C again")
        .await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// Ctrl-L redraws without asking the terminal where the cursor is: the answer would go
/// to the event reader, and crossterm, waiting 2 s for it, made the client quit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_l_redraws_and_the_client_keeps_running() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut tui = Tui::start(&["--server", &url, "--id", "1"]);
    tui.wait_for("● connected · id 1").await;
    tui.type_keys("\u{c}");
    // Typed after the redraw: shown only if the client is still reading keys.
    tui.type_keys("still here");
    tui.wait_for("› still here").await;
    let mut other = server.join("2", "2").await;
    tui.wait_for("Client #2 has entered the chat").await;
    tui.type_keys("\r");
    assert_eq!(other.recv().await, "Client #1: still here");
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// The process id of the `chat-tui` whose arguments include `marker`, from `/proc`.
fn pid_of_chat_tui_with(marker: &str) -> u32 {
    let entries = std::fs::read_dir("/proc").expect("/proc");
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let command = std::fs::read(entry.path().join("cmdline")).ok()?;
            let command = String::from_utf8_lossy(&command);
            let mut words = command.split('\0');
            let program = words.next()?;
            (program.ends_with("chat-tui") && words.any(|word| word == marker)).then_some(pid)
        })
        .next()
        .expect("the chat-tui process")
}

/// `kill -TERM`, `-HUP` and `-INT` end the client as Ctrl-C does: the terminal comes back
/// from raw mode, the alternate screen, mouse reporting and bracketed paste.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_gives_the_terminal_back() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    for (signal, number) in [("TERM", 15), ("HUP", 1), ("INT", 2)] {
        let id = format!("{number}000");
        let mut tui = Tui::start(&["--server", &url, "--id", &id]);
        tui.wait_for(&format!("● connected · id {id}")).await;
        let pid = pid_of_chat_tui_with(&id);
        let killed = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let status = tui.wait_for_exit().await;
        assert_eq!(status.exit_code(), 128 + number, "SIG{signal}");
        // The last of its output may still be on its way to the screen.
        testkit::within("the main screen back", async {
            while tui.screen().screen().alternate_screen() {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        })
        .await;
        let parser = tui.screen();
        let screen = parser.screen();
        assert!(!screen.alternate_screen(), "SIG{signal}: alternate screen");
        assert!(!screen.hide_cursor(), "SIG{signal}: cursor");
        assert!(!screen.bracketed_paste(), "SIG{signal}: bracketed paste");
        assert_eq!(
            screen.mouse_protocol_mode(),
            vt100::MouseProtocolMode::None,
            "SIG{signal}: mouse"
        );
    }
}

/// Waits until the screen shows `text` at least `count` times.
async fn wait_for_count(tui: &Terminal, text: &str, count: usize) {
    testkit::within(&format!("{count} of {text:?}"), async {
        while tui.contents().matches(text).count() < count {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
}

/// A message sent just before `/join` reaches the room it was typed in, and is shown as
/// delivered, not "not sent": that room stays open in its buffer, and the echo comes
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_just_before_join_is_delivered_and_not_marked_not_sent() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut main = server.join("3", "3").await;
    let mut tui = Tui::start(&["--server", &url, "--id", "1"]);
    tui.wait_for("● connected · id 1 · #main").await;
    assert_eq!(main.recv().await, "Client #1 has entered the chat");
    tui.type_keys("last words\r/join other\r");
    assert_eq!(main.recv().await, "Client #1: last words");
    tui.wait_for("● connected · id 1 · #other 1:#main").await;
    // Our join in #other, after its welcome.
    wait_for_count(&tui, "Client #1 has entered the chat", 1).await;
    // Back to #main (Alt-1): the message, delivered.
    tui.type_keys("\u{1b}1");
    tui.wait_for("● connected · id 1 · #main 2:#other").await;
    let screen = tui.contents();
    assert!(screen.contains("Client #1: last words"), "{screen}");
    assert!(!screen.contains("not sent"), "{screen}");
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// Quitting with messages on their way says so first; asked again, it quits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitting_with_unsent_messages_asks_first() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut tui = Tui::start(&["--server", &url, "--id", "1"]);
    tui.wait_for("● connected · id 1").await;
    server.stop().await;
    tui.wait_for("reconnecting in").await;
    tui.type_keys("queued one\r");
    tui.wait_for("sending… Client #1: queued one").await;
    tui.type_keys("\u{3}");
    tui.wait_for("1 message not sent yet: Ctrl-C again to quit and drop it")
        .await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// With the member list shown (F2), messages are wrapped at the pane's narrower width:
/// nothing is cut off at its edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_member_list_shown_long_messages_wrap_and_keep_their_end() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut tui = Tui::start(&["--server", &url, "--id", "1"]);
    tui.wait_for("● connected · id 1").await;
    tui.type_keys("\u{1b}OQ"); // F2
    tui.wait_for("│ 1 here").await;
    let mut other = server.join("7", "7").await;
    // 85 characters with its `Client #7: `, ending in a word of its own.
    let text = format!("{} the-ends", "word ".repeat(13));
    assert_eq!(format!("Client #7: {text}").chars().count(), 85);
    other.send(&text).await;
    tui.wait_for("│ 2 here").await;
    tui.wait_for("the-ends").await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// `--log` writes each event once, with its room: the history a server sends again on
/// every start and every `/join` is not logged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_has_each_event_once_with_its_room() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let log = std::env::temp_dir().join(format!("chat-tui-once-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_path = log.to_str().expect("a UTF-8 path");
    let args = [
        "--server", &url, "--id", "1", "--room", "ops", "--log", log_path,
    ];
    let entered = "Client #1 has entered the chat";

    let mut first = Tui::start(&args);
    wait_for_count(&first, entered, 1).await;
    first.type_keys("\u{3}");
    assert!(first.wait_for_exit().await.success());

    // Again: #ops's history (the first run's join and leave), then this join.
    let mut tui = Tui::start(&args);
    wait_for_count(&tui, entered, 2).await;
    tui.type_keys("/join main\r");
    tui.wait_for("● connected · id 1 · #main").await;
    wait_for_count(&tui, entered, 1).await;
    // Back to #ops, closed (/part) and opened again: its history again, three joins.
    tui.type_keys("/join ops\r");
    tui.wait_for("● connected · id 1 · #ops 2:#main").await;
    tui.type_keys("/part\r");
    tui.wait_for("● connected · id 1 · #main").await;
    tui.type_keys("/join ops\r");
    tui.wait_for("● connected · id 1 · #ops 1:#main").await;
    wait_for_count(&tui, entered, 3).await;
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());

    let logged = std::fs::read_to_string(&log).expect("the log");
    let texts: Vec<&str> = logged.lines().map(|line| &line[20..]).collect();
    assert_eq!(
        texts,
        [
            "#ops Client #1 has entered the chat",
            "#ops Client #1 has left the chat",
            "#ops Client #1 has entered the chat",
            "#main Client #1 has entered the chat",
            "#ops Client #1 has left the chat",
            "#ops Client #1 has entered the chat",
        ],
        "{logged}"
    );
    let _ = std::fs::remove_file(&log);
}

/// A scratch `XDG_STATE_HOME` and `XDG_CONFIG_HOME` for the chat-tui this test starts:
/// nothing is read from or written to the user's home (the rooms open at quitting, a
/// settings file).
fn scratch_home() -> String {
    std::env::temp_dir()
        .join(format!("chat-tui-home-{}", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

/// `--time-format` writes the time column in the format given; a wider one makes the
/// column wider, and the messages start after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_column_takes_the_format_given() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let mut tui = Tui::start(&[
        "--server",
        &url,
        "--id",
        "42",
        "--time-format",
        "%Y/%m/%d %H.%M",
    ]);
    tui.wait_for("Client #42 has entered the chat").await;
    let contents = tui.contents();
    let row = contents
        .lines()
        .find(|row| row.contains("Client #42 has entered the chat"))
        .expect("the join on screen");
    let (time, rest) = row.split_at("2026/12/04 13.05 ".len());
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999/99/99 99.99 ", "{row:?}");
    assert_eq!(rest, "Client #42 has entered the chat", "{row:?}");
    tui.type_keys("\u{3}");
    tui.wait_for_exit().await;

    // A format chrono cannot write is refused at the start, with the flag's name.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_chat-tui"))
        .env("XDG_STATE_HOME", scratch_home())
        .env("XDG_CONFIG_HOME", scratch_home())
        .args(["--time-format", "%Q", "--plain"])
        .output()
        .expect("run chat-tui");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("--time-format") && said.contains("not a strftime format"),
        "{said}"
    );
}

/// `--hyperlinks always`: a URL someone sends is an OSC 8 link to itself, made safe;
/// another scheme stays text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_hyperlinks_where_asked_for() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.address);
    let tui = Tui::start(&["--server", &url, "--id", "1", "--hyperlinks", "always"]);
    tui.wait_for("● connected").await;
    let mut other = server.join("2", "2").await;
    other
        .send("read https://example.com/a?b=c, or javascript:alert(1) or https://x.example/\u{1b}]8;;evil\u{7}")
        .await;
    tui.wait_for("Client #2: read https://example.com/a?b=c, or")
        .await;
    let links: Vec<String> = {
        let screen = tui.screen();
        screen
            .callbacks()
            .oscs
            .iter()
            // `8;id=…;URL` opens a link (the id ties a wrapped URL's rows together);
            // `8;;` closes it.
            .filter(|osc| osc.starts_with("8;id="))
            .filter_map(|osc| osc.splitn(3, ';').nth(2).map(str::to_owned))
            .collect()
    };
    assert_eq!(
        links,
        [
            "https://example.com/a?b=c",
            "https://x.example/%E2%90%9B]8;;evil%E2%90%87",
        ],
        "each link once, the second's escape made harmless"
    );
    // The text on the screen is as without links.
    tui.wait_for("https://x.example/␛]8;;evil␇").await;
}

/// `$XDG_CONFIG_HOME/chat-tui/config.toml` gives the settings the flags leave unset:
/// server, id, name, rooms, keys, highlight words, the smart filter; a mistake in it is
/// told with the file and the line, and nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_file_gives_what_the_flags_do_not() {
    let server = TestServer::start().await;
    let home = testkit::process::Scratch::new("tui-config");
    let home_path = home.path().to_str().expect("a UTF-8 path").to_owned();
    let folder = home.path().join("chat-tui");
    std::fs::create_dir_all(&folder).expect("the settings folder");
    std::fs::write(
        folder.join("config.toml"),
        format!(
            "server = \"ws://{}\"\nid = 42\nname = \"Grace\"\nrooms = [\"ops\", \"dev\"]\n\
             key = [\"older-mention=Alt-P\"]\nhighlight = [\"deploy\"]\nsmart-filter = true\n\
             time-format = \"%H.%M.%S\"\n",
            server.address
        ),
    )
    .expect("write the settings");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
    let scratch = [
        ("XDG_STATE_HOME", &*home_path),
        ("XDG_CONFIG_HOME", &*home_path),
    ];
    // A flag comes before the file.
    let mut tui = Terminal::start(binary, &["--room", "main"], &scratch, (24, 100));
    tui.wait_for("● connected · id 42 · #main 2:#ops 3:#dev")
        .await;
    tui.wait_for("~Grace (#42) has entered the chat").await;
    // Alt-P is Alt-N's now too.
    tui.type_keys("\u{1b}p");
    tui.wait_for("no message mentions you here").await;
    let mut other = server.join("7", "7").await;
    other.send("the deploy is done").await;
    tui.wait_for("Client #7: the deploy is done").await;
    // The smart filter is on: 7 had not spoken before coming in.
    assert!(
        !tui.contents().contains("Client #7 has entered the chat"),
        "{}",
        tui.contents()
    );
    tui.type_keys("\u{1b}j");
    tui.wait_for("Client #7 has entered the chat").await;
    // The highlight word made it a mention: Alt-P shows it, and again says there is
    // none older.
    tui.type_keys("\u{1b}p\u{1b}p");
    tui.wait_for("no older message mentions you here").await;
    tui.type_keys("\u{3}");
    tui.wait_for_exit().await;

    // A mistake: the file and its line, and exit status 2.
    std::fs::write(
        folder.join("config.toml"),
        "server = \"ws://localhost:1\"\n\nid = \"forty-two\"\n",
    )
    .expect("write the settings");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_chat-tui"))
        .env("XDG_STATE_HOME", &home_path)
        .env("XDG_CONFIG_HOME", &home_path)
        .arg("--plain")
        .output()
        .expect("run chat-tui");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    let expected = format!("chat-tui: {}:3: id: ", folder.join("config.toml").display());
    assert!(said.starts_with(&expected), "{said}");
    std::fs::write(folder.join("config.toml"), "\nroom = \"ops\"\nkeys = []\n")
        .expect("write the settings");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_chat-tui"))
        .env("XDG_STATE_HOME", &home_path)
        .env("XDG_CONFIG_HOME", &home_path)
        .arg("--plain")
        .output()
        .expect("run chat-tui");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("config.toml:3: unknown setting \"keys\"; did you mean \"key\"?"),
        "{said}"
    );
}
