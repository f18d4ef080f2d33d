//! The defaults soak: the real `chat-server` binary with no flags, and a quiet client of
//! every kind we ship or claim to work with, left idle for longer than two of the
//! default ping intervals. Nobody is closed, nobody reconnects, and afterwards everyone
//! still chats.
//!
//! The same with durable history: `--data-dir` and nothing else, a message a second for
//! as long, then SIGKILL, and every message is still there.
//!
//! Ignored by a bare `cargo test` (they take 80 s, and the first needs Chromium and port
//! 8000); `.ci/run` runs them beside the other tests.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use testkit::chromium::{ChromeDriver, chat_server_binary, chat_tui_binary, port_8000, say};
use testkit::chromium::{client_id, type_keys, wait_for_message};
use testkit::process::{Scratch, ServerProcess};
use testkit::terminal::Terminal;
use testkit::v1::V1;
use testkit::{PATIENCE, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Longer than two of the default 30 s ping intervals, and than the 30 s ping timeout
/// counted from the second ping.
const SOAK: Duration = Duration::from_secs(80);

/// Lines something printed, collected as they come.
type Lines = Arc<Mutex<Vec<String>>>;

fn lines_containing(lines: &Lines, text: &str) -> Vec<String> {
    let lines = lines.lock().unwrap();
    lines
        .iter()
        .filter(|line| line.contains(text))
        .cloned()
        .collect()
}

async fn wait_for_line(lines: &Lines, what: &str, text: &str) {
    let deadline = Instant::now() + PATIENCE;
    while lines_containing(lines, text).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what} never printed {text:?}: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Splits a client's socket into the half to send with and the text frames it
/// receives, collected as they come by a task that reads all along (and so answers the
/// server's pings, as a client's library does), then `(disconnected)`.
fn reading(socket: Socket) -> (futures_util::stream::SplitSink<Socket, Message>, Lines) {
    let (sending, mut receiving) = socket.split();
    let heard = Lines::default();
    let frames = heard.clone();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = receiving.next().await {
            if let Message::Text(text) = frame {
                frames.lock().unwrap().push(text.to_string());
            }
        }
        frames.lock().unwrap().push("(disconnected)".into());
    });
    (sending, heard)
}

/// Sleeps for [`SOAK`], and checks that none of `clients` heard anything meanwhile.
async fn idle_for_the_soak(clients: &[(&str, &Lines)]) {
    let before: Vec<usize> = clients
        .iter()
        .map(|(_, heard)| heard.lock().unwrap().len())
        .collect();
    tokio::time::sleep(SOAK).await;
    for ((who, heard), before) in clients.iter().zip(before) {
        let during = heard.lock().unwrap()[before..].to_vec();
        assert!(
            during.is_empty(),
            "{who}, while everyone was idle: {during:?}"
        );
    }
}

/// Collects the lines `reader` gives into a shared list, in a task of its own.
fn collect_lines(reader: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Lines {
    let lines = Lines::default();
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// `chat-server` with no flags at all: 127.0.0.1:8000 and every default. Another test
/// may hold port 8000 for a while, so this waits its turn.
async fn default_server() -> (Child, Lines) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        drop(port_8000().await);
        let mut server = Command::new(chat_server_binary())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chat-server");
        let log = collect_lines(server.stderr.take().expect("stderr"));
        let started = Instant::now();
        loop {
            if !lines_containing(&log, "chat page:").is_empty() {
                return (server, log);
            }
            if let Some(status) = server.try_wait().expect("wait") {
                assert!(Instant::now() < deadline, "chat-server exited {status}");
                eprintln!("chat-server exited ({status}); port 8000 taken again? retrying");
                break;
            }
            assert!(started.elapsed() < PATIENCE, "chat-server never started");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes 80 s and needs chromium, chromium-driver and port 8000; .ci/run runs it"]
async fn soak_quiet_clients_of_every_kind_stay_connected_with_the_default_flags() {
    let (mut server, log) = default_server().await;

    // A plain WebSocket client (tungstenite answers pings by itself while it reads).
    let (socket, _) = within(
        "the watcher's handshake",
        tokio_tungstenite::connect_async("ws://127.0.0.1:8000/ws/1"),
    )
    .await
    .expect("connect the watcher");
    let (mut watcher_out, heard) = reading(socket);
    wait_for_line(&heard, "the watcher", "Client #1 has entered the chat").await;

    // A chat.v1.json client: its welcome, its own join, and then only live events.
    let request = testkit::v1::request("ws://127.0.0.1:8000/ws/6");
    let (json_socket, _) = within(
        "the v1 client's handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("connect the v1 client");
    let (mut json_out, heard_as_json) = reading(json_socket);
    wait_for_line(&heard, "the watcher", "Client #6 has entered the chat").await;

    // chat-tui in a terminal, and in pipe mode.
    // A scratch XDG_STATE_HOME and XDG_CONFIG_HOME: nothing read from or written to
    // the user's home.
    let home = std::env::temp_dir().join(format!("chat-tui-home-{}", std::process::id()));
    let home = home.to_str().expect("a UTF-8 path");
    let scratch = [("XDG_STATE_HOME", home), ("XDG_CONFIG_HOME", home)];
    let mut terminal = Terminal::start(&chat_tui_binary(), &["--id", "2"], &scratch, (30, 100));
    terminal.wait_for("● connected · id 2").await;
    let mut pipe = Command::new(chat_tui_binary())
        .env("XDG_STATE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .args(["--plain", "--id", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-tui --plain");
    let piped = collect_lines(pipe.stdout.take().expect("stdout"));
    let mut pipe_input = pipe.stdin.take().expect("stdin");

    // Our page, served by the server, and the tutorial's page opened from disk.
    let driver = ChromeDriver::start().await;
    let page = driver.open(900, 600).await;
    page.goto("http://127.0.0.1:8000/")
        .await
        .expect("open the page");
    let page_id = client_id(&page).await;
    let tutorial = driver.open(900, 600).await;
    let tutorial_file = testkit::repository().join("tests/tutorial_page.html");
    tutorial
        .goto(&format!("file://{}", tutorial_file.display()))
        .await
        .expect("open the tutorial's page");
    let tutorial_id = client_id(&tutorial).await;

    for id in ["2", "3", &page_id, &tutorial_id] {
        wait_for_line(
            &heard,
            "the watcher",
            &format!("Client #{id} has entered the chat"),
        )
        .await;
    }
    for id in ["2", "3", &page_id, &tutorial_id] {
        let joined = format!(r#""id":"{id}","type":"join""#);
        wait_for_line(&heard_as_json, "the v1 client", &joined).await;
    }
    let before = heard.lock().unwrap().len();
    eprintln!("six clients joined; idling for {SOAK:?}");
    idle_for_the_soak(&[("the watcher", &heard), ("the v1 client", &heard_as_json)]).await;
    assert_eq!(
        lines_containing(&log, " joined").len(),
        6,
        "{:?}",
        log.lock().unwrap()
    );
    let left = lines_containing(&log, " left");
    assert!(left.is_empty(), "{left:?}");
    assert!(
        server.try_wait().expect("wait").is_none(),
        "the server is running"
    );
    terminal.wait_for("● connected · id 2").await;

    // Everyone still hears the room...
    let after_soak = "Client #1: still here after the soak";
    watcher_out
        .send(Message::text("still here after the soak"))
        .await
        .expect("send");
    terminal.wait_for(after_soak).await;
    wait_for_line(&piped, "chat-tui --plain", after_soak).await;
    wait_for_line(
        &heard_as_json,
        "the v1 client",
        r#""id":"1","type":"message","text":"still here after the soak""#,
    )
    .await;
    wait_for_message(&page, after_soak).await;
    wait_for_message(&tutorial, after_soak).await;

    // ...and is heard by it.
    terminal.type_keys("from the terminal\r");
    pipe_input
        .write_all(b"from the pipe\n")
        .await
        .expect("write to chat-tui --plain");
    say(&page, "from the page").await;
    let request = chat::v1::Request::Message {
        text: "from json".into(),
        nonce: Some("soak-1".into()),
    };
    json_out
        .send(Message::text(request.to_json()))
        .await
        .expect("send from the v1 client");
    type_keys(&tutorial, "from the tutorial page\u{E007}").await;
    let expected: BTreeSet<String> = [
        "Client #2: from the terminal".to_owned(),
        "Client #3: from the pipe".to_owned(),
        format!("Client #{page_id}: from the page"),
        format!("Client #{tutorial_id}: from the tutorial page"),
        "Client #6: from json".to_owned(),
    ]
    .into();
    for line in &expected {
        wait_for_line(&heard, "the watcher", line).await;
    }
    let everything: Vec<String> = heard.lock().unwrap()[before..].to_vec();
    assert_eq!(everything.len(), 1 + expected.len(), "{everything:?}");

    page.close().await.expect("close the page");
    tutorial.close().await.expect("close the tutorial's page");
    drop(pipe_input);
    let _ = server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes 80 s; .ci/run runs it"]
async fn soak_durable_history_with_the_default_flags_outlives_the_timers_and_sigkill() {
    let data = Scratch::new("durable-soak");
    let folder = data.path().to_str().expect("a UTF-8 path");
    let mut server = ServerProcess::start(&["--data-dir", folder]).await;
    let mut reader = V1::connect_url(&server.url("/ws/1")).await;
    let first = reader.seated().await;
    let (talker, _) = tokio_tungstenite::connect_async(server.url("/ws/2"))
        .await
        .expect("connect the talker");
    let (mut talker_out, mut talker_in) = talker.split();
    tokio::spawn(async move { while let Some(Ok(_)) = talker_in.next().await {} });
    assert_eq!(reader.event().await.kind, chat::v1::EventKind::join());

    // One message a second, through two ping intervals and a ping timeout.
    let started = Instant::now();
    let mut said = 0;
    let mut last = None;
    while started.elapsed() < SOAK {
        said += 1;
        talker_out
            .send(Message::text(format!("message {said}")))
            .await
            .expect("the talker sends");
        let event = reader.event().await;
        assert_eq!(
            event.kind,
            chat::v1::EventKind::said(format!("message {said}"), None)
        );
        last = Some(event);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let last = last.expect("something was said");
    eprintln!(
        "{said} messages said in {:?}; killing the server",
        started.elapsed()
    );
    server.kill().await;

    let server = ServerProcess::start(&["--data-dir", folder]).await;
    let path = format!("/ws/1?since={}&epoch={}", last.offset, first.epoch);
    let mut back = V1::connect_url(&server.url(&path)).await;
    let welcome = back.welcome().await;
    assert!(welcome.recovered, "{welcome:?}");
    assert_eq!(welcome.epoch, first.epoch);
    let mut newcomer = V1::connect_url(&server.url("/ws/3")).await;
    let welcome = newcomer.welcome().await;
    let mut messages = 0;
    loop {
        let event = newcomer.event().await;
        if event.offset > welcome.offset {
            break;
        }
        if matches!(event.kind, chat::v1::EventKind::Message { .. }) {
            messages += 1;
        }
    }
    assert_eq!(
        messages, said,
        "every message is in the history after the kill"
    );
}

/// The real `chat-server` with TLS and tokens and no other flag: a `chat.v1.json`
/// client over wss (its token in the query, as the page sends it), a plain one (its
/// token in the header) and `chat-tui --ca-cert --token` in a pty stay connected for
/// longer than the timers, then chat. A token is checked when a client connects; a
/// session outlives the token's expiry no more than its own connection does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes 80 s; .ci/run runs it"]
async fn soak_tls_and_tokens_with_the_default_flags_outlive_the_timers() {
    use chat_server::identity::{JwtSecret, Tokens};
    use testkit::tls::TestCa;
    const SECRET: &str = "a soak secret of thirty-two bytes";
    let scratch = Scratch::new("soak-tls");
    let ca = TestCa::new("soak CA");
    let files = ca.issue_into(scratch.path(), &["localhost"]);
    let ca_file = ca.write(scratch.path());
    let secret_file = scratch.path().join("secret");
    std::fs::write(&secret_file, SECRET).expect("write the secret");
    let port = testkit::process::free_port();
    let mut server = Command::new(chat_server_binary())
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .arg("--jwt-secret-file")
        .arg(&secret_file)
        .args(["--port", &port.to_string()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-server");
    let log = collect_lines(server.stderr.take().expect("stderr"));
    wait_for_line(
        &log,
        "chat-server",
        "terminal client: chat-tui --server wss://",
    )
    .await;
    let tokens = Tokens::new(&JwtSecret::new(SECRET).expect("a secret"));
    let token = |id: &str, name: Option<&str>| {
        let name = name.map(|name| chat::v1::DisplayName::parse(name).expect("a name"));
        tokens.mint(
            &chat::ClientId::parse(id).expect("an id"),
            Duration::from_secs(3600),
            name.as_ref(),
        )
    };
    let connector = || tokio_tungstenite::Connector::Rustls(ca.client_config());

    // A chat.v1.json client over wss, reading all along (and so answering pings).
    let request = testkit::v1::request(&format!(
        "wss://localhost:{port}/ws/6?token={}",
        token("6", Some("Ada"))
    ));
    let (json_socket, _) = within(
        "the v1 client's handshake",
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector())),
    )
    .await
    .expect("connect the v1 client");
    let (mut json_out, heard_as_json) = reading(json_socket);
    wait_for_line(&heard_as_json, "the v1 client", r#""verified":true"#).await;

    // A plain client, its token in the Authorization header.
    let mut request = format!("wss://localhost:{port}/ws/1")
        .into_client_request()
        .expect("a request");
    let bearer = format!("Bearer {}", token("1", None));
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&bearer).expect("a header"),
    );
    let (plain_socket, _) = within(
        "the plain client's handshake",
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector())),
    )
    .await
    .expect("connect the plain client");
    let (mut plain_out, heard) = reading(plain_socket);
    wait_for_line(&heard, "the plain client", "Client #1 has entered the chat").await;

    // chat-tui in a terminal, verifying the server against the CA, proving its id.
    // A scratch XDG_STATE_HOME and XDG_CONFIG_HOME: nothing read from or written to
    // the user's home.
    let home = std::env::temp_dir().join(format!("chat-tui-home-{}", std::process::id()));
    let home = home.to_str().expect("a UTF-8 path");
    let mut terminal = Terminal::start(
        &chat_tui_binary(),
        &[
            "--server",
            &format!("wss://localhost:{port}"),
            "--id",
            "2",
            "--ca-cert",
            ca_file.to_str().expect("a UTF-8 path"),
        ],
        &[
            ("CHAT_TOKEN", &token("2", Some("Grace"))),
            ("XDG_STATE_HOME", home),
            ("XDG_CONFIG_HOME", home),
        ],
        (30, 100),
    );
    terminal.wait_for("● connected · id 2").await;
    wait_for_line(&heard, "the plain client", "Client #2 has entered the chat").await;
    eprintln!("three clients over TLS with tokens; idling for {SOAK:?}");
    idle_for_the_soak(&[
        ("the plain client", &heard),
        ("the v1 client", &heard_as_json),
    ])
    .await;
    assert!(
        lines_containing(&log, " left").is_empty(),
        "{:?}",
        log.lock().unwrap()
    );
    terminal.wait_for("● connected · id 2").await;

    terminal.type_keys("from the terminal\r");
    plain_out
        .send(Message::text("from the plain client"))
        .await
        .expect("send");
    let request = chat::v1::Request::Message {
        text: "from json".into(),
        nonce: None,
    };
    json_out
        .send(Message::text(request.to_json()))
        .await
        .expect("send");
    for line in [
        "Client #2: from the terminal",
        "Client #1: from the plain client",
        "Client #6: from json",
    ] {
        wait_for_line(&heard, "the plain client", line).await;
    }
    wait_for_line(
        &heard_as_json,
        "the v1 client",
        r#""name":"Grace","type":"message","text":"from the terminal""#,
    )
    .await;
    terminal.wait_for("Ada: from json").await;
    terminal.wait_for("Client #1: from the plain client").await;
    let _ = server.kill().await;
}
