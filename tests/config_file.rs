//! chat-server's settings file, completions, manual and version, through the binary as
//! an operator runs it: `--config FILE`, `config check|default|show`, `completions`,
//! `man`, `--version`; and chat-tui's completions, manual and version, made alike.

use std::path::Path;
use std::process::{Command, Output};

use futures_util::{SinkExt, StreamExt};
use testkit::chromium::{chat_server_binary, chat_tui_binary};
use testkit::process::{Scratch, ServerProcess};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Runs chat-server with `args` and none of the CHAT_ variables CI sets for other tests.
fn chat_server(args: &[&str], env: &[(&str, &str)]) -> Output {
    run(Command::new(chat_server_binary()), args, env)
}

/// Runs chat-tui with `args`, its homes in a scratch folder (no user's settings file is
/// read) and none of the CHAT_ variables.
fn chat_tui(args: &[&str]) -> Output {
    let home = Scratch::new("chat-tui-home");
    let mut command = Command::new(chat_tui_binary());
    command
        .env("XDG_STATE_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path());
    run(command, args, &[])
}

/// Runs `command` with `args`, `env` and none of the other CHAT_ variables.
fn run(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Output {
    for (name, _) in std::env::vars() {
        if name.starts_with("CHAT_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run chat-server")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

fn write(folder: &Path, name: &str, text: &str) -> String {
    let path = folder.join(name);
    std::fs::write(&path, text).expect("write the settings file");
    path.to_string_lossy().into_owned()
}

#[test]
fn the_default_file_round_trips_and_checks_good() {
    let scratch = Scratch::new("config-default");
    let default = stdout(&chat_server(&["config", "default"], &[]));
    // Every flag of `--help` is a key of the file.
    let help = stdout(&chat_server(&["--help"], &[]));
    // The options' own lines: "  -p, --port <PORT>" or "      --echo"; not the prose.
    let flags = help.lines().filter_map(|line| {
        let line = line.trim_start();
        let line = match line.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => line,
        };
        let word = line.strip_prefix("--")?.split_whitespace().next()?;
        Some(word.to_owned())
    });
    let flags: Vec<String> = flags.collect();
    assert!(flags.len() > 20, "the options were found: {flags:?}");
    for key in flags {
        if ["help", "version", "config"].contains(&key.as_str()) {
            continue;
        }
        assert!(
            default.contains(&format!("\n{key} = ")) || default.contains(&format!("\n# {key} = ")),
            "--{key} has no key in the default file"
        );
    }
    let file = write(scratch.path(), "default.toml", &default);
    let shown = stdout(&chat_server(&["--config", &file, "config", "show"], &[]));
    assert_eq!(
        shown, default,
        "read back, the default file prints the same"
    );
    let checked = stdout(&chat_server(&["config", "check", &file], &[]));
    assert!(checked.ends_with(": good\n"), "{checked}");
}

#[test]
fn flags_beat_variables_beat_the_file_beats_the_defaults() {
    let scratch = Scratch::new("config-precedence");
    let file = write(scratch.path(), "chat.toml", "port = 9000\nhistory = 7\n");
    let port_of = |output: &Output| -> String {
        stdout(output)
            .lines()
            .find(|line| line.starts_with("port = "))
            .expect("a port line")
            .to_owned()
    };
    let show = ["--config", file.as_str(), "config", "show"];
    assert_eq!(port_of(&chat_server(&show, &[])), "port = 9000");
    assert_eq!(
        port_of(&chat_server(&show, &[("CHAT_PORT", "9100")])),
        "port = 9100"
    );
    let mut flagged = vec!["--port", "9200"];
    flagged.extend(show);
    assert_eq!(
        port_of(&chat_server(&flagged, &[("CHAT_PORT", "9100")])),
        "port = 9200"
    );
    // The file named by the variable, too.
    let shown = stdout(&chat_server(&["config", "show"], &[("CHAT_CONFIG", &file)]));
    assert!(shown.contains("\nhistory = 7\n"), "{shown}");
    // And what no source sets is the default.
    assert!(shown.contains("\nmax-queue-bytes = 1048576\n"), "{shown}");
}

/// A `--redis-url` that names no Redis stops the server at once with what was expected,
/// rather than leaving it unhealthy, retrying what can never work. (`timeout`: a server
/// that did not check would run on.)
#[test]
fn a_redis_url_that_names_no_redis_stops_the_server_with_the_forms_expected() {
    for url in [
        "http://127.0.0.1:6379",
        "redis-cluster://127.0.0.1:7000",
        "redis+cluster://",
        "redis+sentinel://127.0.0.1:26379",
    ] {
        let binary = chat_server_binary();
        let binary = binary.to_str().expect("a UTF-8 path");
        let args = ["10", binary, "--port", "0", "--redis-url", url];
        let output = run(Command::new("timeout"), &args, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && output.status.code() != Some(124),
            "{url}: exit {:?}: {stderr}",
            output.status
        );
        assert!(
            stderr.contains(&format!("--redis-url {url}"))
                && stderr.contains("expected redis://host:port[/db], redis+cluster://"),
            "{url}: {stderr}"
        );
    }
}

#[test]
fn bad_files_are_refused_with_their_line() {
    let scratch = Scratch::new("config-bad");
    let cases = [
        (
            "port = 8000\n\nmax-mesage-bytes = 5\n",
            "bad.toml:3: unknown setting \"max-mesage-bytes\"; did you mean \"max-message-bytes\"?",
        ),
        (
            "# comment\nport = 90000\n",
            "bad.toml:2: port: invalid value '90000' for '--port <PORT>'",
        ),
        (
            "echo = \"yes\"\n",
            "bad.toml:1: echo: expected true or false",
        ),
        (
            "ping-interval = 0.01\n",
            "bad.toml:1: ping-interval: invalid value",
        ),
        (
            "[server]\nport = 1\n",
            "bad.toml:1: unknown setting \"server\"",
        ),
        ("port = \n", "line 1"),
    ];
    for (text, expected) in cases {
        let file = write(scratch.path(), "bad.toml", text);
        let checked = chat_server(&["config", "check", &file], &[]);
        let said = String::from_utf8_lossy(&checked.stderr);
        assert_eq!(checked.status.code(), Some(1), "{text:?}: {said}");
        assert!(said.contains(expected), "{text:?}: {said}");
        // A server given it does not start, and says the same.
        let run = chat_server(&["--config", &file, "--port", "0"], &[]);
        let said = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{text:?}: {said}");
        assert!(said.contains(expected), "{text:?}: {said}");
    }
    let missing = chat_server(&["--config", "/nonexistent/chat.toml"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/chat.toml")
    );
}

#[tokio::test]
async fn a_running_server_uses_the_file() {
    let scratch = Scratch::new("config-run");
    let file = write(scratch.path(), "chat.toml", "max-message-bytes = 100\n");
    let server = ServerProcess::start(&["--config", &file]).await;
    let (mut client, _) = tokio_tungstenite::connect_async(server.url("/ws/1"))
        .await
        .expect("connect");
    client.next().await.expect("the join").expect("a frame");
    client
        .send(Message::text("x".repeat(200)))
        .await
        .expect("send");
    let close = loop {
        match client.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(
        close.map(|frame| frame.code),
        Some(CloseCode::Size),
        "200 bytes are over the file's 100"
    );
}

/// Checks what `program` prints about itself: each completion script loads in its shell
/// (where the shell is installed), the manual names every flag (`flag`, one of them), and
/// `--version` names the commit.
fn check_about(program: &str, flag: &str, run: impl Fn(&[&str]) -> Output) {
    for (shell, check) in [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")] {
        let script = stdout(&run(&["completions", shell]));
        assert!(script.contains(program), "{shell}");
        let Ok(mut child) = Command::new(shell)
            .arg(check)
            .stdin(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("{shell} is not installed here: its script is not checked");
            continue;
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write the script");
        assert!(
            child.wait().expect("the shell ends").success(),
            "{shell} refuses {program}'s script"
        );
    }
    let manual = stdout(&run(&["man"]));
    assert!(manual.contains(&format!(".TH {program} 1")), "{manual}");
    assert!(
        manual.contains(&flag.replace('-', "\\-")),
        "every flag is in the manual: {flag}"
    );
    let version = stdout(&run(&["--version"]));
    let commit = version
        .strip_prefix(&format!("{program} "))
        .and_then(|rest| rest.split("(commit ").nth(1))
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("no commit in {version:?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version}"
    );
}

#[test]
fn completions_load_in_their_shells_and_the_manual_renders() {
    check_about("chat-server", "--max-message-bytes", |args| {
        chat_server(args, &[])
    });
}

#[test]
fn chat_tui_prints_its_completions_and_manual_whatever_its_settings_file() {
    check_about("chat-tui", "--time-format", chat_tui);
    // A settings file has no say in what is printed about the flags, even a broken one.
    let scratch = Scratch::new("chat-tui-broken");
    let broken = write(scratch.path(), "config.toml", "no-such-setting = 1\n");
    let manual = chat_tui(&["--config", &broken, "man"]);
    assert!(manual.status.success(), "{manual:?}");
    let refused = chat_tui(&["--config", &broken, "--plain"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "config.toml:1: unknown setting \"no-such-setting\"; `chat-tui --help` lists them all"
        ),
        "{refused:?}"
    );
}
