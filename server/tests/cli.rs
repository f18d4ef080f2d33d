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
