//! The chat's plain `/ws/<id>` protocol on the canonical tokio-tungstenite broadcast
//! design (its `examples/server.rs`, and axum's chat): a task per connection, an
//! unbounded channel per client, and every message cloned into every channel. It is
//! here for `chat-bench` to compare our server with, in the same run; it has none of
//! our limits, and a client that never reads makes it queue without end.
//!
//! `tungstenite-chat [PORT]` listens on 127.0.0.1:PORT (default 8000).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

type Peers = Arc<Mutex<HashMap<SocketAddr, UnboundedSender<Message>>>>;

fn broadcast(peers: &Peers, text: String) {
    let message = Message::text(text);
    for sender in peers.lock().expect("peers").values() {
        let _ = sender.send(message.clone());
    }
}

// The handshake callback's error type is tungstenite's, not ours to box.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, peer: SocketAddr, peers: Peers) {
    // Our server and chat-bench both turn Nagle off; so does this, to compare writes.
    let _ = tcp.set_nodelay(true);
    let mut id = String::new();
    let remember_id =
        |request: &Request, response: Response| match request.uri().path().strip_prefix("/ws/") {
            Some(path_id) if !path_id.is_empty() => {
                id = path_id.to_owned();
                Ok(response)
            }
            _ => {
                let mut refusal = ErrorResponse::new(Some("use /ws/<id>".into()));
                *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
                Err(refusal)
            }
        };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(tcp, remember_id).await else {
        return;
    };
    let (mut outgoing, mut incoming) = socket.split();
    let (sender, mut receiver) = unbounded_channel();
    peers.lock().expect("peers").insert(peer, sender);
    broadcast(&peers, format!("Client #{id} has entered the chat"));

    let forward = async {
        while let Some(message) = receiver.recv().await {
            if outgoing.send(message).await.is_err() {
                break;
            }
        }
    };
    let relay = async {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Text(text) => broadcast(&peers, format!("Client #{id}: {text}")),
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::select! {
        () = forward => {}
        () = relay => {}
    }
    peers.lock().expect("peers").remove(&peer);
    broadcast(&peers, format!("Client #{id} has left the chat"));
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().map_err(std::io::Error::other)?,
        None => 8000,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("tokio-tungstenite chat on {}", listener.local_addr()?);
    let peers = Peers::default();
    loop {
        let (tcp, peer) = listener.accept().await?;
        tokio::spawn(serve(tcp, peer, peers.clone()));
    }
}
