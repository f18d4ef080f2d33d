//! `chat-tui` as a line client for scripts, when stdin or stdout is not a terminal.

use std::process::Stdio;

use testkit::{TestServer, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

fn chat_tui(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chat-tui"))
        .env("XDG_STATE_HOME", scratch_home())
        .env("XDG_CONFIG_HOME", scratch_home())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chat-tui")
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>) -> String {
    within("a line from chat-tui", lines.next_line())
        .await
        .expect("read")
        .expect("a line before the end")
}

#[tokio::test]
async fn sends_stdin_lines_and_prints_each_message_as_one_safe_line() {
    let server = TestServer::start().await;
    let mut client = chat_tui(&["--server", &format!("ws://{}", server.address), "--id", "5"]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(
        next_line(&mut lines).await,
        "Client #5 has entered the chat"
    );

    let mut other = server.join("7", "7").await;
    assert_eq!(
        next_line(&mut lines).await,
        "Client #7 has entered the chat"
    );

    let mut stdin = client.stdin.take().unwrap();
    stdin
        .write_all(b"hello <b>world</b> \xF0\x9F\x8E\x89\n")
        .await
        .unwrap();
    assert_eq!(other.recv().await, "Client #5: hello <b>world</b> 🎉");
    assert_eq!(
        next_line(&mut lines).await,
        "Client #5: hello <b>world</b> 🎉"
    );

    other.send("two\nlines and \u{1b}[31mred\u{7}").await;
    other.recv().await;
    assert_eq!(
        next_line(&mut lines).await,
        "Client #7: two↵lines and ␛[31mred␇"
    );

    // At the end of stdin it closes politely and exits 0.
    drop(stdin);
    let status = within("chat-tui to exit", client.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(other.recv().await, "Client #5 has left the chat");
}

#[tokio::test]
async fn it_exits_non_zero_when_it_cannot_connect() {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let client = chat_tui(&["--server", &format!("ws://{address}"), "--id", "5"]);
    let output = within("chat-tui to exit", client.wait_with_output())
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("chat-tui: cannot connect to"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn without_an_id_it_makes_a_time_based_one_and_says_which() {
    let server = TestServer::start().await;
    let mut client = chat_tui(&["--server", &format!("ws://{}", server.address)]);
    let mut stderr = BufReader::new(client.stderr.take().unwrap()).lines();
    let said = within("the id", stderr.next_line()).await.unwrap().unwrap();
    let id = said
        .strip_prefix("chat-tui: your id is ")
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        id.len() >= 13 && id.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(
        next_line(&mut lines).await,
        format!("Client #{id} has entered the chat")
    );
}

#[tokio::test]
async fn argument_errors_are_claps_own_and_a_bad_url_is_one_line() {
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--id", "abc"],
            &["error: invalid value 'abc' for '--id <ID>': the id is not a decimal integer"],
        ),
        (
            &["--scrollback", "0"],
            &["error: invalid value '0' for '--scrollback"],
        ),
        (
            &["--idd", "4"],
            &[
                "error: unexpected argument '--idd' found",
                "tip: a similar argument exists: '--id'",
            ],
        ),
        (
            &["--no-such-flag"],
            &["error: unexpected argument '--no-such-flag'"],
        ),
    ];
    for (args, says) in cases {
        let output = chat_tui(args).wait_with_output().await.unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for said in says {
            assert!(stderr.contains(said), "{args:?}: {said:?} in {stderr}");
        }
        assert!(!stderr.contains("error: error"), "{stderr}");
    }
    for url in ["ftp://example.org", "not a url"] {
        let output = chat_tui(&["--server", url])
            .wait_with_output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{url}: {stderr}");
        assert!(
            stderr.starts_with("chat-tui: invalid server URL"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_server_shutdown_is_an_error_and_empty_and_oversized_lines_are_not_sent() {
    let server = TestServer::start().await;
    let mut other = server.join("7", "7").await;
    let mut client = chat_tui(&["--server", &format!("ws://{}", server.address), "--id", "5"]);
    assert_eq!(other.recv().await, "Client #5 has entered the chat");
    let mut stdin = client.stdin.take().unwrap();
    stdin
        .write_all(b"\n\nafter two empty lines\n")
        .await
        .unwrap();
    assert_eq!(other.recv().await, "Client #5: after two empty lines");
    let oversized = format!("{}\nafter a long one\n", "x".repeat(64 * 1024 + 1));
    stdin.write_all(oversized.as_bytes()).await.unwrap();
    assert_eq!(other.recv().await, "Client #5: after a long one");

    server.stop().await;
    let output = within("chat-tui to exit", client.wait_with_output())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "chat-tui: a line of 65537 bytes was not sent: the server takes at most 65536",
            "chat-tui: the server closed the connection: 1001 server shutting down"
        ]
    );
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_it_quietly() {
    let server = TestServer::start().await;
    let mut client = chat_tui(&["--server", &format!("ws://{}", server.address), "--id", "5"]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    next_line(&mut lines).await;
    // As `| head -1` does: the reader goes away, and the next message cannot be written.
    drop(lines);
    let mut other = server.join("7", "7").await;
    other.send("anyone?").await;
    let output = within("chat-tui to exit", client.wait_with_output())
        .await
        .unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[tokio::test]
async fn every_line_is_echoed_before_it_closes() {
    let server = TestServer::start().await;
    let mut other = server.join("7", "7").await;
    let mut client = chat_tui(&["--server", &format!("ws://{}", server.address), "--id", "5"]);
    assert_eq!(other.recv().await, "Client #5 has entered the chat");
    let mut stdin = client.stdin.take().unwrap();
    // Within the default rate limit's burst of 40.
    let lines: String = (0..30).map(|n| format!("line {n}\n")).collect();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let output = within("chat-tui to exit", client.wait_with_output())
        .await
        .unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let printed = String::from_utf8_lossy(&output.stdout);
    for n in 0..30 {
        assert_eq!(other.recv().await, format!("Client #5: line {n}"));
        assert!(
            printed.contains(&format!("Client #5: line {n}\n")),
            "echo {n} printed"
        );
    }
    assert_eq!(other.recv().await, "Client #5 has left the chat");
}

#[tokio::test]
async fn the_environment_gives_the_server_and_the_id() {
    let server = TestServer::start().await;
    let mut client = Command::new(env!("CARGO_BIN_EXE_chat-tui"))
        .env("XDG_STATE_HOME", scratch_home())
        .env("XDG_CONFIG_HOME", scratch_home())
        .env("CHAT_SERVER", format!("ws://{}", server.address))
        .env("CHAT_ID", "0042")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(
        next_line(&mut lines).await,
        "Client #42 has entered the chat"
    );
}

#[tokio::test]
async fn help_and_version_are_provided() {
    let help = chat_tui(&["--help"]).wait_with_output().await.unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--id",
        "--server",
        "--scrollback",
        "--no-mouse",
        "--plain",
        "--insecure",
        "CHAT_SERVER",
        // The keys and the commands, from their tables.
        "Ctrl-C",
        "F2",
        "F5",
        "Alt-Enter",
        "PageUp",
        "/join ROOM",
        "/search TEXT",
        "/who",
        "//text",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    let version = chat_tui(&["--version"]).wait_with_output().await.unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("chat-tui "));
}

#[tokio::test]
async fn a_token_and_a_name_are_sent_and_a_refusal_is_said_in_the_servers_words() {
    use chat_server::identity::{JwtSecret, Tokens};
    let secret = JwtSecret::new("a test secret of thirty-two bytes").expect("a secret");
    let server = TestServer::start_with(chat_server::Config {
        jwt_secret: Some(secret.clone()),
        ..chat_server::Config::default()
    })
    .await;
    let url = format!("ws://{}", server.address);
    let id = chat::ClientId::parse("5").expect("an id");
    let ada = chat::v1::DisplayName::parse("Ada").expect("a name");
    let token = Tokens::new(&secret).mint(&id, std::time::Duration::from_secs(60), Some(&ada));

    // The token goes in the Authorization header; the v1 watcher sees the token's
    // name, which a server checking tokens takes over any name the client claims.
    let mut watcher = testkit::v1::V1::connect(
        &server,
        &format!(
            "/ws/9?token={}",
            Tokens::new(&secret).mint(
                &chat::ClientId::parse("9").expect("an id"),
                std::time::Duration::from_secs(60),
                None,
            )
        ),
    )
    .await;
    watcher.seated().await;
    let mut client = chat_tui(&[
        "--server", &url, "--id", "5", "--token", &token, "--name", "Mallory",
    ]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(
        next_line(&mut lines).await,
        "Client #5 has entered the chat"
    );
    let joined = watcher.event().await;
    assert_eq!(joined.id, "5");
    assert_eq!(
        joined.name.as_ref().map(chat::v1::DisplayName::as_str),
        Some("Ada")
    );
    drop(client);

    // From a file (its first line), the same.
    let file = std::env::temp_dir().join(format!("chat-tui-token-{}", std::process::id()));
    std::fs::write(&file, format!("{token}\n")).expect("write the token file");
    let mut client = chat_tui(&[
        "--server",
        &url,
        "--id",
        "5",
        "--token-file",
        file.to_str().expect("a UTF-8 path"),
    ]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(
        next_line(&mut lines).await,
        "Client #5 has entered the chat"
    );
    drop(client);
    let _ = std::fs::remove_file(&file);

    // Without one, the server's reason, and no retrying.
    let refused = Command::new(env!("CARGO_BIN_EXE_chat-tui"))
        .env("XDG_STATE_HOME", scratch_home())
        .env("XDG_CONFIG_HOME", scratch_home())
        .args(["--server", &url, "--id", "5"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run chat-tui");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("HTTP 401"), "{said}");
    assert!(said.contains("this server requires a token"), "{said}");
}

/// Once the reader of its stdout has gone (`| head -1` exited), it leaves at once, not
/// at the next message: the room sees it go while nobody says anything.
#[tokio::test]
async fn it_leaves_as_soon_as_its_reader_has_gone() {
    let server = TestServer::start().await;
    let mut other = server.join("7", "7").await;
    let mut client = chat_tui(&["--server", &format!("ws://{}", server.address), "--id", "5"]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    next_line(&mut lines).await;
    assert_eq!(other.recv().await, "Client #5 has entered the chat");
    drop(lines);
    // stdin stays open: only the reader's going can end it.
    let _stdin = client.stdin.take();
    assert_eq!(other.recv().await, "Client #5 has left the chat");
    let status = within("chat-tui to exit", client.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// A server that limits the rate takes a long burst slowly, but takes every line: the
/// client waits as long as echoes keep coming, and says nothing was lost.
#[tokio::test]
async fn a_slow_but_steady_server_gets_every_line_without_a_warning() {
    let server = TestServer::start_with(chat_server::Config {
        rate_limit: Some(chat_server::RateLimit {
            per_second: 20.0,
            burst: 10,
        }),
        ..chat_server::Config::default()
    })
    .await;
    let mut client = chat_tui(&["--server", &format!("ws://{}", server.address), "--id", "5"]);
    let mut stdin = client.stdin.take().unwrap();
    // About 6 s at 20 a second after the burst: longer than the 5 s patience.
    let lines: String = (0..130).map(|n| format!("line {n}\n")).collect();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.wait_with_output(),
    )
    .await
    .expect("chat-tui to exit")
    .unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.ends_with("Client #5: line 129\n"), "{printed}");
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
