//! The `chat-server` binary as a user meets it: flags, help, and a clear error when the
//! port is taken.

use std::net::TcpListener;
use std::process::Command;

fn chat_server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chat-server"))
}

#[test]
fn a_taken_port_is_a_one_line_error_without_a_panic() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let output = chat_server()
        .args(["--port", &port.to_string()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run chat-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("chat-server:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn help_and_version_are_provided() {
    let help = chat_server().arg("--help").output().expect("run");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--host", "--port", "CHAT_HOST", "CHAT_PORT"] {
        assert!(help.contains(flag), "--help mentions {flag}: {help}");
    }
    let version = chat_server().arg("--version").output().expect("run");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("chat-server "));
}

#[test]
fn bad_flags_are_refused_with_a_usage_error() {
    let output = chat_server()
        .args(["--port", "http"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--port"));
}

#[test]
fn settings_that_cannot_work_are_refused_at_start() {
    for (flag, value) in [
        ("--ping-interval", "0"),
        ("--ping-timeout", "0"),
        ("--ping-timeout", "0.01"),
        ("--ping-interval", "1e30"),
        ("--rate-limit", "1e-30"),
        ("--rate-limit", "-1"),
        ("--rate-limit", "NaN"),
        ("--presence-ttl", "0.5"),
        ("--handshake-timeout", "0"),
        ("--message-timeout", "0"),
        ("--max-connections", "0"),
        ("--handshake-rate-per-ip", "inf"),
        // Issue 34's rerun: past the cap this exited 1, from the check at start.
        ("--history", "1000001"),
    ] {
        let output = chat_server()
            .args([&format!("{flag}={value}"), "--port", "0"])
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
    }
}

#[test]
fn the_port_can_come_from_the_environment() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let output = chat_server()
        .env("CHAT_PORT", port.to_string())
        .env("CHAT_HOST", "127.0.0.1")
        .output()
        .expect("run chat-server");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("127.0.0.1:{port}")),
        "CHAT_PORT was used"
    );
}

/// A `chat-server` process on a free port, its stderr collected line by line.
struct ServerProcess {
    child: std::process::Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `command` (which runs chat-server with `--port 0`) and waits for its port.
    fn start(mut command: Command) -> Self {
        use std::io::BufRead;
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start chat-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("chat page:").nth(1) {
                    let port = rest.trim().trim_end_matches('/').rsplit(':').next();
                    let _ = port_tx.send(port.and_then(|port| port.parse::<u16>().ok()));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let port = port_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("chat-server printed its address")
            .expect("a port");
        Self { child, port, log }
    }

    fn log_lines_containing(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    /// Waits until a line of the log contains `text`; fails after a generous bound.
    fn wait_for_log(&self, text: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.log_lines_containing(text) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "chat-server never logged {text:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// CPU time the process has used, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.child.id())
    }
}

/// CPU time the process `pid` has used, all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn join(
    port: u16,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::StreamExt;
    let url = format!("ws://127.0.0.1:{port}/ws/{id}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
        .await
        .expect("a first frame in time");
    match first {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
            assert_eq!(text, format!("Client #{id} has entered the chat"))
        }
        other => panic!("expected the join, got {other:?}"),
    }
    socket
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let mut command = chat_server();
    command.args(["--port", "0"]);
    let mut server = ServerProcess::start(command);
    let mut client = join(server.port, "1").await;

    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
    .expect("a close frame");
    assert_eq!(closed.code, CloseCode::Away);
    assert_eq!(closed.reason, "server shutting down");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "still running");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_quietly_and_recovers() {
    // A hard limit of 40 open files, so the server cannot raise it; the held connections
    // stay in their handshake for as long as the test runs, so the streak of failed
    // accepts lasts until they are let go.
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "ulimit -n 40 && exec \"$0\" --port 0 --handshake-timeout 3600",
        env!("CARGO_BIN_EXE_chat-server"),
    ]);
    let server = ServerProcess::start(command);

    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect"));
    }
    // The event: the server has run out and said so.
    server.wait_for_log("accept failed");

    // Spinning on accept would take as much CPU as any busy process gets; backing off
    // takes next to none. A busy loop of our own, measured over the same window, is
    // the yardstick, so what the rest of the machine is doing does not matter: the
    // window lasts until the yardstick has had half a second of CPU.
    let mut yardstick = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("start a busy loop");
    let (server_before, yardstick_before) = (server.cpu_ticks(), cpu_ticks(yardstick.id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let yardstick_used = loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let used = cpu_ticks(yardstick.id()) - yardstick_before;
        if used >= 50 {
            break used;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the busy loop got {used} ticks of CPU in a minute"
        );
    };
    let server_used = server.cpu_ticks() - server_before;
    let _ = yardstick.kill();
    let _ = yardstick.wait();
    assert!(
        server_used * 5 < yardstick_used,
        "the server used {server_used} ticks of CPU while a busy loop used {yardstick_used}"
    );
    assert_eq!(
        server.log_lines_containing("accept failed"),
        1,
        "one log line for the whole streak"
    );

    drop(held);
    let _client = join(server.port, "1").await;
}

/// Sends `signal` (a name `kill` knows, such as `HUP`) to the server.
fn signal(server: &ServerProcess, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
}

/// Waits for the server to exit, within a generous bound.
fn exit_status(server: &mut ServerProcess) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "still running");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sighup_without_tls_is_logged_and_the_server_keeps_serving() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let mut command = chat_server();
    command.args(["--port", "0"]);
    let mut server = ServerProcess::start(command);
    let mut client = join(server.port, "1").await;
    // What systemd's `ExecReload` sends; its default action would end the process.
    signal(&server, "HUP");
    server.wait_for_log("nothing to reload");
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    client
        .send(Message::text("still here"))
        .await
        .expect("send");
    let echo = tokio::time::timeout(std::time::Duration::from_secs(10), client.next())
        .await
        .expect("the echo in time");
    assert!(
        matches!(&echo, Some(Ok(Message::Text(text))) if text.as_str() == "Client #1: still here"),
        "{echo:?}"
    );
    join(server.port, "2").await;
    signal(&server, "TERM");
    let status = exit_status(&mut server);
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start_and_says_why() {
    let folder = std::env::temp_dir().join(format!("chat-cli-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    let data_dir = folder.to_str().expect("a UTF-8 path");
    let mut command = chat_server();
    command.args(["--port", "0", "--data-dir", data_dir]);
    let mut first = ServerProcess::start(command);

    // Run with a bound: a second server that wrongly starts would never exit.
    let mut second = chat_server()
        .args(["--port", "0", "--data-dir", data_dir])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server started on a data folder in use");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("in use by another chat-server"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The lock goes with the server that held it.
    signal(&first, "TERM");
    assert!(exit_status(&mut first).success());
    let mut command = chat_server();
    command.args(["--port", "0", "--data-dir", data_dir]);
    let mut third = ServerProcess::start(command);
    signal(&third, "TERM");
    assert!(exit_status(&mut third).success());
    let _ = std::fs::remove_dir_all(&folder);
}

#[tokio::test]
async fn a_log_that_cannot_be_written_costs_log_lines_not_the_server() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let port = TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port();
    // Every write to stderr fails (ENOSPC), as with `2>file` on a full disk.
    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut server = chat_server()
        .args(["--port", &port.to_string()])
        .stderr(full)
        .spawn()
        .expect("start chat-server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut client = loop {
        assert!(
            server.try_wait().expect("wait").is_none(),
            "chat-server exited"
        );
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break join(port, "1").await;
        }
        assert!(std::time::Instant::now() < deadline, "never listened");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    client.send(Message::text("hello")).await.expect("send");
    let echo = tokio::time::timeout(std::time::Duration::from_secs(10), client.next())
        .await
        .expect("the echo in time");
    assert!(
        matches!(&echo, Some(Ok(Message::Text(text))) if text.as_str() == "Client #1: hello"),
        "{echo:?}"
    );
    let sent = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "still running");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
