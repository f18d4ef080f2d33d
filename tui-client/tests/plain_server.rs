//! The full-screen `chat-tui` against a server that speaks only the tutorial's plain
//! protocol (it does not offer `chat.v1.json`), as the tutorial's FastAPI server does:
//! a stand-in for it here, one room for everyone, so that no Python is needed.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use testkit::terminal::Terminal;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// A plain-protocol chat server on a free port: each `/ws/<id>` connection is
/// announced, and each of its lines goes to everyone as `Client #<id>: <line>`; every
/// line said is also kept in `said`.
struct PlainServer {
    url: String,
    said: Arc<Mutex<Vec<String>>>,
}

impl PlainServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("address"));
        let said = Arc::new(Mutex::new(Vec::new()));
        let (room, _) = broadcast::channel::<String>(64);
        let kept = said.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let room = room.clone();
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut path = String::new();
                    // The callback's type is tungstenite's, large error and all.
                    #[allow(clippy::result_large_err)]
                    let remember_path = |request: &Request, response: Response| {
                        path = request.uri().path().to_owned();
                        Ok(response)
                    };
                    let Ok(mut socket) =
                        tokio_tungstenite::accept_hdr_async(stream, remember_path).await
                    else {
                        return;
                    };
                    let id = path.trim_start_matches("/ws/").to_owned();
                    let mut heard = room.subscribe();
                    let _ = room.send(format!("Client #{id} has entered the chat"));
                    loop {
                        tokio::select! {
                            frame = socket.next() => match frame {
                                Some(Ok(Message::Text(text))) => {
                                    let line = format!("Client #{id}: {text}");
                                    kept.lock().unwrap().push(line.clone());
                                    let _ = room.send(line);
                                }
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                            line = heard.recv() => match line {
                                Ok(line) => {
                                    if socket.send(Message::text(line)).await.is_err() {
                                        break;
                                    }
                                }
                                Err(_) => break,
                            },
                        }
                    }
                    let _ = room.send(format!("Client #{id} has left the chat"));
                });
            }
        });
        Self { url, said }
    }
}

fn chat_tui(args: &[&str]) -> Terminal {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
    let home = scratch_home();
    let env = [("XDG_STATE_HOME", &*home), ("XDG_CONFIG_HOME", &*home)];
    Terminal::start(binary, args, &env, (24, 100))
}

/// `/join` against a server without rooms says so and stays put: the next line goes
/// where the status bar says it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_on_a_server_without_rooms_says_so_and_stays_put() {
    let server = PlainServer::start().await;
    let mut tui = chat_tui(&["--server", &server.url, "--id", "5"]);
    tui.wait_for("● connected · id 5 · #main").await;
    tui.type_keys("/join secret\r");
    tui.wait_for("this server has no rooms").await;
    tui.type_keys("still in main\r");
    tui.wait_for("Client #5: still in main").await;
    let screen = tui.contents();
    assert!(screen.contains("● connected · id 5 · #main"), "{screen}");
    assert!(!screen.contains("#secret"), "{screen}");
    assert_eq!(*server.said.lock().unwrap(), ["Client #5: still in main"]);
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
}

/// The tutorial's server still gets one room and the plain protocol; the commands of
/// `chat.v2.json` say they need it and send nothing, and Up goes back through the lines
/// sent, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_of_chat_v2_json_say_so_on_a_plain_server() {
    let server = PlainServer::start().await;
    let mut tui = chat_tui(&["--server", &server.url, "--id", "5"]);
    tui.wait_for("● connected · id 5 · #main").await;
    tui.type_keys("first line\r");
    tui.wait_for("Client #5: first line").await;
    for command in [
        "/edit better",
        "/delete",
        "/react :tada:",
        "/reply yes",
        "/me waves",
    ] {
        // Refused, the command stays in the line, as an unknown one does.
        tui.type_keys(&format!("\u{15}{command}\r"));
        let name = command.split(' ').next().unwrap();
        tui.wait_for(&format!(
            "{name} needs a chat.v2.json server: this server does not speak chat.v2.json"
        ))
        .await;
    }
    // Up on an empty line: the last line sent (there is no message to edit).
    tui.type_keys("\u{15}\u{1b}[A");
    tui.wait_for("› first line").await;
    tui.type_keys("\u{15}last line\r");
    tui.wait_for("Client #5: last line").await;
    assert_eq!(
        *server.said.lock().unwrap(),
        ["Client #5: first line", "Client #5: last line"]
    );
    tui.type_keys("\u{3}");
    assert!(tui.wait_for_exit().await.success());
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
