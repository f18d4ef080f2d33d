//! `wss://`: through a TLS front end with a self-signed certificate (refused by
//! default, accepted with `--insecure`), and to our own server's TLS with a private CA
//! (`--ca-cert`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use chat_server::Config;
use testkit::process::Scratch;
use testkit::terminal::Terminal;
use testkit::tls::TestCa;
use testkit::{TestServer, within};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// Terminates TLS with a fresh self-signed certificate for `localhost` and forwards the
/// plain bytes to `backend`.
async fn tls_front_end(backend: SocketAddr) -> SocketAddr {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a self-signed certificate");
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                let mut server = TcpStream::connect(backend).await.expect("backend");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    address
}

async fn run_chat_tui(args: &[&str]) -> std::process::Output {
    let home = scratch_home();
    let child = Command::new(env!("CARGO_BIN_EXE_chat-tui"))
        .env("XDG_STATE_HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chat-tui");
    within("chat-tui to exit", child.wait_with_output())
        .await
        .expect("output")
}

#[tokio::test]
async fn wss_checks_the_certificate_unless_insecure_is_asked_for() {
    let server = TestServer::start().await;
    let front = tls_front_end(server.address).await;
    let url = format!("wss://localhost:{}", front.port());

    let refused = run_chat_tui(&["--server", &url, "--id", "3"]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");

    let accepted = run_chat_tui(&["--server", &url, "--id", "3", "--insecure"]).await;
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert_eq!(stdout, "Client #3 has entered the chat\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_our_own_tls_server_ca_cert_is_trusted_and_a_wrong_host_is_refused() {
    let scratch = Scratch::new("tui-tls");
    let ca = TestCa::new("chat test CA");
    let server = TestServer::start_with(Config {
        tls: Some(ca.issue_into(scratch.path(), &["localhost"])),
        ..Config::default()
    })
    .await;
    let ca_file = ca.write(scratch.path());
    let ca_path = ca_file.to_str().expect("a UTF-8 path");
    let port = server.address.port();
    let url = format!("wss://localhost:{port}");

    let trusted = run_chat_tui(&["--server", &url, "--id", "3", "--ca-cert", ca_path]).await;
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&trusted.stdout),
        "Client #3 has entered the chat\n"
    );

    // The certificate is for localhost, not for the address.
    let by_address = format!("wss://127.0.0.1:{port}");
    let wrong_host =
        run_chat_tui(&["--server", &by_address, "--id", "3", "--ca-cert", ca_path]).await;
    assert!(!wrong_host.status.success());
    let said = String::from_utf8_lossy(&wrong_host.stderr);
    assert!(
        said.contains("the server's certificate is not for the host 127.0.0.1"),
        "{said}"
    );

    // Without the CA, the web's authorities do not vouch for it, and chat-tui says
    // which flag would.
    let untrusted = run_chat_tui(&["--server", &url, "--id", "3"]).await;
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(said.contains("--ca-cert"), "{said}");

    // Plain ws:// to the TLS port: the server's own words come through.
    let plain = run_chat_tui(&["--server", &format!("ws://localhost:{port}"), "--id", "3"]).await;
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(said.contains("this server speaks TLS only"), "{said}");

    // And in a terminal, the chat over wss.
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_chat-tui"));
    let home = scratch_home();
    let mut tui = Terminal::start(
        binary,
        &["--server", &url, "--id", "42", "--ca-cert", ca_path],
        &[("XDG_STATE_HOME", &home), ("XDG_CONFIG_HOME", &home)],
        (24, 100),
    );
    tui.wait_for("Client #42 has entered the chat").await;
    tui.type_keys("over wss\r");
    tui.wait_for("Client #42: over wss").await;
    tui.type_keys("\u{3}");
    tui.wait_for_exit().await;
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
