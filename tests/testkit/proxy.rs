//! A TCP proxy on 127.0.0.1 that a test can cut and restore, to lose a client's
//! connection while the server goes on: what a flaky network does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Forwards every connection to a backend, until told otherwise.
pub struct Proxy {
    pub address: SocketAddr,
    state: Arc<State>,
    accepting: AbortHandle,
}

#[derive(Default)]
struct State {
    /// New connections are closed at once.
    refusing: AtomicBool,
    /// What clients send is dropped on the floor (the connections stay up).
    swallowing: AtomicBool,
    pipes: Mutex<Vec<AbortHandle>>,
}

impl Proxy {
    pub async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.refusing.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(backend).await else {
                    continue;
                };
                let pipe = tokio::spawn(pipe(client, server, shared.clone()));
                shared.pipes.lock().unwrap().push(pipe.abort_handle());
            }
        })
        .abort_handle();
        Self {
            address,
            state,
            accepting,
        }
    }

    /// From now on, what clients send never reaches the server, as when a network
    /// goes quiet before a connection is known to be dead.
    pub fn swallow(&self) {
        self.state.swallowing.store(true, Ordering::SeqCst);
    }

    /// Drops every connection through the proxy, and refuses new ones until
    /// [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        for pipe in self.state.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    /// Forwards new connections again, faithfully.
    pub fn restore(&self) {
        self.state.swallowing.store(false, Ordering::SeqCst);
        self.state.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (mut from_client, mut to_server) = (client, server);
    let (mut client_read, mut client_write) = from_client.split();
    let (mut server_read, mut server_write) = to_server.split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await?;
            if read == 0 {
                return server_write.shutdown().await;
            }
            if !state.swallowing.load(Ordering::SeqCst) {
                server_write.write_all(&buffer[..read]).await?;
            }
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    let _: (std::io::Result<()>, std::io::Result<u64>) = tokio::join!(upstream, downstream);
}
