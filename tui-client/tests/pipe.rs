//! `chat-tui` as a line client for scripts, when stdin or stdout is not a terminal.

use std::process::Stdio;

use testkit::{TestServer, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

fn chat_tui(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chat-tui"))
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
async fn bad_arguments_are_one_line_errors() {
    for args in [
        &["--id", "abc"][..],
        &["--id", "1.5"],
        &["--server", "ftp://example.org"],
        &["--server", "not a url"],
        &["--scrollback", "0"],
        &["--no-such-flag"],
    ] {
        let output = chat_tui(args).wait_with_output().await.unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("chat-tui: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn the_environment_gives_the_server_and_the_id() {
    let server = TestServer::start().await;
    let mut client = Command::new(env!("CARGO_BIN_EXE_chat-tui"))
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
        "Ctrl-C",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    let version = chat_tui(&["--version"]).wait_with_output().await.unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("chat-tui "));
}
