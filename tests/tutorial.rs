//! Our clients against the tutorial's own FastAPI server (`tests/tutorial/main.py`, run
//! by uvicorn): the compatibility contract seen from the other side.
//!
//! Ignored by a bare `cargo test`: it needs Python with `fastapi` and `uvicorn`, which
//! `.ci/run` installs in its virtualenv and names in `CHAT_TUTORIAL_PYTHON`, and
//! chromium for the page.

use std::process::Stdio;

use testkit::chromium::{
    ChromeDriver, chat_tui_binary, client_id, is_shown, messages, type_keys, wait_for_message,
};
use testkit::process::{free_port, wait_until_listening};
use testkit::{Client, within};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// The tutorial's server on a free port, stopped when dropped.
struct Tutorial {
    port: u16,
    _uvicorn: Child,
}

impl Tutorial {
    async fn start() -> Self {
        let python = std::env::var("CHAT_TUTORIAL_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = free_port();
        let uvicorn = Command::new(&python)
            .args(["-m", "uvicorn", "main:app", "--port", &port.to_string()])
            .current_dir(testkit::repository().join("tests/tutorial"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{python} -m uvicorn: {error}"));
        let what = format!("uvicorn (does {python} have fastapi and uvicorn?)");
        wait_until_listening(port, &what).await;
        Self {
            port,
            _uvicorn: uvicorn,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// A plain client with this `id`, past its own join.
    async fn watcher(&self, id: &str) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(format!("{}/ws/{id}", self.url()))
            .await
            .expect("connect the watcher");
        let mut watcher = Client { socket };
        assert_eq!(
            watcher.recv().await,
            format!("Client #{id} has entered the chat")
        );
        watcher
    }
}

#[tokio::test]
#[ignore = "needs python3 with fastapi and uvicorn; .ci/run installs them"]
async fn chat_tui_in_a_pipe_delivers_every_line_to_the_tutorials_server() {
    let tutorial = Tutorial::start().await;
    let mut watcher = tutorial.watcher("7").await;

    // A scratch XDG_STATE_HOME and XDG_CONFIG_HOME: nothing read from or written to
    // the user's home.
    let home = std::env::temp_dir().join(format!("chat-tui-home-{}", std::process::id()));
    let home = home.to_str().expect("a UTF-8 path");
    let mut pipe = Command::new(chat_tui_binary())
        .env("XDG_STATE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .args(["--server", &tutorial.url(), "--id", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-tui");
    let lines: String = (0..300).map(|n| format!("line {n}\n")).collect();
    let mut stdin = pipe.stdin.take().expect("stdin");
    stdin.write_all(lines.as_bytes()).await.expect("write");
    // The end of stdin right after the last line: uvicorn drops what arrives just
    // before a close, so chat-tui must wait for its echoes before closing.
    drop(stdin);
    let output = within("chat-tui to exit", pipe.wait_with_output())
        .await
        .expect("chat-tui");
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(watcher.recv().await, "Client #5 has entered the chat");
    for n in 0..300 {
        assert_eq!(watcher.recv().await, format!("Client #5: line {n}"));
    }
    assert_eq!(watcher.recv().await, "Client #5 has left the chat");
}

/// The full-screen chat-tui asks the tutorial's server for chat.v1.json, is not given
/// it, and chats in the tutorial's protocol.
#[tokio::test]
#[ignore = "needs python3 with fastapi and uvicorn; .ci/run installs them"]
async fn chat_tui_in_a_terminal_speaks_plain_text_with_the_tutorials_server() {
    let tutorial = Tutorial::start().await;
    let mut watcher = tutorial.watcher("7").await;
    // A scratch XDG_STATE_HOME and XDG_CONFIG_HOME: nothing read from or written to
    // the user's home.
    let home = std::env::temp_dir().join(format!("chat-tui-home-{}", std::process::id()));
    let home = home.to_str().expect("a UTF-8 path");
    let mut tui = testkit::terminal::Terminal::start(
        &chat_tui_binary(),
        &["--server", &tutorial.url(), "--id", "5"],
        &[("XDG_STATE_HOME", home), ("XDG_CONFIG_HOME", home)],
        (24, 100),
    );
    tui.wait_for("● connected · id 5").await;
    // The server accepted the first attempt, which asked for chat.v1.json, before the
    // client saw that it was not given it: the watcher sees that attempt come and go.
    // (Which the server announces first, that attempt's leave or the second join, is
    // up to it.)
    let mut announced = vec![
        watcher.recv().await,
        watcher.recv().await,
        watcher.recv().await,
    ];
    announced.sort();
    assert_eq!(
        announced,
        [
            "Client #5 has entered the chat",
            "Client #5 has entered the chat",
            "Client #5 has left the chat"
        ]
    );
    tui.type_keys("hello tutorial\r");
    assert_eq!(watcher.recv().await, "Client #5: hello tutorial");
    tui.wait_for("Client #5: hello tutorial").await;
    watcher.send("hi five").await;
    tui.wait_for("Client #7: hi five").await;
    let screen = tui.contents();
    assert!(
        !screen.contains("here (F2)"),
        "no member list without v1:\n{screen}"
    );
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// Our page, opened from disk and pointed at the tutorial's server with `#server=`, asks
/// for chat.v1.json, is not given it, and speaks the tutorial's protocol.
#[tokio::test]
#[ignore = "needs python3 with fastapi and uvicorn, and chromium; .ci/run installs them"]
async fn our_page_speaks_plain_text_with_the_tutorials_server() {
    let tutorial = Tutorial::start().await;
    let mut watcher = tutorial.watcher("7").await;

    let driver = ChromeDriver::start().await;
    let page = driver.open(900, 600).await;
    let file = testkit::repository().join("client/index.html");
    page.goto(&format!(
        "file://{}#server={}",
        file.display(),
        tutorial.url()
    ))
    .await
    .expect("open the page");
    let id = client_id(&page).await;
    let joined = format!("Client #{id} has entered the chat");
    wait_for_message(&page, &joined).await;
    // The chat.v1.json attempt, which the browser dropped, then the plain connection.
    assert_eq!(watcher.recv().await, joined);
    assert_eq!(
        watcher.recv().await,
        format!("Client #{id} has left the chat")
    );
    assert_eq!(watcher.recv().await, joined);
    type_keys(&page, "hello, tutorial\u{E007}").await;
    assert_eq!(
        watcher.recv().await,
        format!("Client #{id}: hello, tutorial")
    );
    watcher.send("hello, page").await;
    wait_for_message(&page, "Client #7: hello, page").await;
    assert_eq!(
        messages(&page).await,
        [
            joined,
            format!("Client #{id}: hello, tutorial"),
            "Client #7: hello, page".to_owned()
        ],
        "the tutorial's text, and no history"
    );
    assert!(
        !is_shown(&page, "people").await,
        "the tutorial's server does not say who is here"
    );
    page.close().await.expect("close");
}
