//! `wss://` through a TLS front end with a self-signed certificate: refused by default,
//! accepted with `--insecure`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

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
    let child = Command::new(env!("CARGO_BIN_EXE_chat-tui"))
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
