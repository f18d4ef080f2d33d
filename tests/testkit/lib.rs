//! Helpers for the end-to-end tests: a real `chat-server` on 127.0.0.1:0, in-process, and
//! WebSocket and raw-HTTP clients that fail loudly instead of hanging; [`chromium`] for
//! the tests that drive a real browser, [`terminal`] for those that run `chat-tui` in a pty,
//! [`redis`] for the clustered ones.
//!
//! Nothing here asserts that something did *not* happen within some wall-clock time: on a
//! busy machine anything can take longer. A test waits for events (frames, close codes,
//! log lines, a metric reaching a value) with [`PATIENCE`] as its failure bound, or runs
//! on paused time (`#[tokio::test(start_paused = true)]`) where the server runs in this
//! process, so that the server's timers move only when everything in the process waits.

pub mod chromium;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod terminal;
pub mod tls;
pub mod tokens;
pub mod v1;
pub mod v2;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chat_server::Config;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The repository's root folder, where `client/` and `target/` are.
pub fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
}

/// How long a test waits for something it expects before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Waits for `future`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Asks `check` again every 20 ms until it answers `Some`, and returns that; fails the
/// test with `what` after [`PATIENCE`]. For what a test can only poll for: a gauge, a
/// health status, a port that starts listening, a line in a log file.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    within(what, async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A handshake request for `url` (`ws://` or `wss://`) that asks for `subprotocol`.
pub fn request_asking(
    url: &str,
    subprotocol: &'static str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(subprotocol),
    );
    request
}

/// Connects to `url` asking for `subprotocol`, and checks that the server selected it.
pub async fn connect_asking(url: &str, subprotocol: &'static str) -> Client {
    let (socket, response) = within(
        "the handshake",
        tokio_tungstenite::connect_async(request_asking(url, subprotocol)),
    )
    .await
    .unwrap_or_else(|error| match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => panic!(
            "connecting to {url}: {}: {}",
            response.status(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
        ),
        error => panic!("connecting to {url}: {error}"),
    });
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|value| value.to_str().ok()),
        Some(subprotocol),
        "the server selected {subprotocol}"
    );
    Client { socket }
}

/// A `chat-server` running in this process on a free loopback port.
pub struct TestServer {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, config)
    }

    pub fn start_on(listener: TcpListener, config: Config) -> Self {
        let address = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(chat_server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }

    /// Connects as `/ws/<id>` and checks that the first frame is the client's own join.
    pub async fn join(&self, id: &str, canonical: &str) -> Client {
        let mut client = self.connect(id).await;
        assert_eq!(
            client.recv().await,
            format!("Client #{canonical} has entered the chat")
        );
        client
    }

    /// Joins as `/ws/1` and then `/ws/2`, and checks that the first saw the second
    /// join: the two clients most tests begin with, one to act and one to watch.
    pub async fn join_two(&self) -> (Client, Client) {
        let mut first = self.join("1", "1").await;
        let second = self.join("2", "2").await;
        assert_eq!(first.recv().await, "Client #2 has entered the chat");
        (first, second)
    }

    /// Connects as `/ws/<id>` without reading anything.
    pub async fn connect(&self, id: &str) -> Client {
        let url = self.url(&format!("/ws/{id}"));
        let (socket, _) = within("the handshake", tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
        Client { socket }
    }

    /// Sends a raw HTTP request and returns the whole response.
    pub async fn http(&self, request: &str) -> HttpResponse {
        raw_http(self.address, request).await
    }

    /// Sends `request` and checks that it is refused with `status` and a body that says
    /// `says`; see [`assert_refused`].
    pub async fn refuses(&self, request: &str, status: u16, says: &str) -> HttpResponse {
        assert_refused(self.address, request, status, says).await
    }

    /// The value of the metric `name` (with its labels, if any) now.
    pub async fn metric(&self, name: &str) -> u64 {
        metric(self.address, name).await
    }

    /// Stops the server the way Ctrl-C does and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within("the server to stop", &mut self.task)
            .await
            .expect("server task")
            .expect("server result");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A WebSocket client of the chat.
pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, text: &str) {
        within("a send", self.socket.send(Message::text(text)))
            .await
            .expect("send");
    }

    /// The next text frame, skipping pings and pongs; fails on anything else.
    pub async fn recv(&mut self) -> String {
        loop {
            match within("a text frame", self.socket.next()).await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes, returning its close frame and the texts before it.
    pub async fn recv_until_close(&mut self) -> (Option<CloseFrame>, Vec<String>) {
        let mut texts = Vec::new();
        loop {
            match within("the close frame", self.socket.next()).await {
                Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                Some(Ok(Message::Close(frame))) => return (frame, texts),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?} after {texts:?}"),
            }
        }
    }

    /// Reads `count` pings, failing on any other frame: what a quiet client sees while
    /// the server keeps it alive. Each is answered: tungstenite queues the pong and
    /// sends it with the next read. The server's pings are the clock here, so a test
    /// that counts them does not depend on how fast the machine is.
    pub async fn read_pings(&mut self, count: usize) {
        for read in 0..count {
            match within("a ping", self.socket.next()).await {
                Some(Ok(Message::Ping(_))) => {}
                other => panic!("expected only pings, got {other:?} after {read}"),
            }
        }
    }

    /// Checks that nothing arrives for a short while. On its own this proves little on
    /// a busy machine (what should not come may just be late); on paused time, with the
    /// server in this process, the wait ends only once every task in the process is
    /// idle, and so whatever was coming has come.
    pub async fn expect_silence(&mut self) {
        if let Ok(frame) =
            tokio::time::timeout(Duration::from_millis(200), self.socket.next()).await
        {
            panic!("expected silence, got {frame:?}");
        }
    }

    pub async fn close(mut self) {
        within("a close", self.socket.close(None))
            .await
            .expect("close");
        // Read the server's echo so the close handshake completes.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.socket.next()).await {}
    }
}

/// A client that sends `messages` texts of 30 000 bytes, numbered, as fast as the server
/// reads them, and reads as many texts back meanwhile (its echoes, when it is alone in
/// sending): only the server can hold it back. Returns the texts, and the sending and
/// reading tasks.
pub fn flood(
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    messages: usize,
) -> (Vec<String>, JoinHandle<()>, JoinHandle<()>) {
    let (mut sends, mut reads) = socket.split();
    let texts: Vec<String> = (0..messages)
        .map(|n| format!("{n} {}", "y".repeat(30_000)))
        .collect();
    let flood = texts.clone();
    let sending = tokio::spawn(async move {
        for text in flood {
            sends
                .send(Message::text(text))
                .await
                .expect("the flood sends");
        }
    });
    let reading = tokio::spawn(async move {
        let mut echoes = 0;
        while echoes < messages {
            match reads.next().await {
                Some(Ok(Message::Text(_))) => echoes += 1,
                Some(Ok(_)) => {}
                other => panic!("the flooding client's connection: {other:?}"),
            }
        }
    });
    (texts, sending, reading)
}

/// Has every client, joined in order as ids `1..=n`, send `messages` messages at once,
/// and checks that all of them see one identical order in which each sender's messages
/// keep theirs.
pub async fn assert_one_order(clients: &mut [Client], messages: usize) {
    let count = clients.len();
    // Drain the joins that followed each client's own.
    for (index, client) in clients.iter_mut().enumerate() {
        for later in index + 2..=count {
            assert_eq!(
                client.recv().await,
                format!("Client #{later} has entered the chat")
            );
        }
    }
    // Everyone sends concurrently, so the messages interleave at the server.
    let received: Vec<Vec<String>> =
        futures_util::future::join_all(clients.iter_mut().map(|client| async move {
            for n in 0..messages {
                client.send(&n.to_string()).await;
            }
            let mut seen = Vec::new();
            while seen.len() < count * messages {
                seen.push(client.recv().await);
            }
            seen
        }))
        .await;
    for other in &received[1..] {
        assert!(*other == received[0], "every client sees the same order");
    }
    for id in 1..=count {
        let prefix = format!("Client #{id}: ");
        let from_sender: Vec<usize> = received[0]
            .iter()
            .filter_map(|frame| frame.strip_prefix(&prefix))
            .map(|n| n.parse().expect("a number"))
            .collect();
        assert_eq!(
            from_sender,
            (0..messages).collect::<Vec<_>>(),
            "client {id}"
        );
    }
}

/// Checks that the room still works for `watcher` after some client misbehaved.
pub async fn room_still_works(server: &TestServer, watcher: &mut Client) {
    let mut fresh = server.join("77", "77").await;
    assert_eq!(watcher.recv().await, "Client #77 has entered the chat");
    fresh.send("still alive").await;
    assert_eq!(fresh.recv().await, "Client #77: still alive");
    assert_eq!(watcher.recv().await, "Client #77: still alive");
}

/// Joins as `id`, has it do `misbehave`, and checks the close code it gets, that the
/// watcher sees only its join and leave, and that the room still works.
pub async fn closes_with(
    server: &TestServer,
    misbehave: impl AsyncFnOnce(&mut Client),
    code: CloseCode,
) -> String {
    let (mut watcher, mut culprit) = server.join_two().await;
    misbehave(&mut culprit).await;
    let (frame, texts) = culprit.recv_until_close().await;
    let frame = frame.expect("a close frame");
    assert_eq!(frame.code, code, "{frame:?}");
    assert!(texts.is_empty(), "nothing was relayed: {texts:?}");
    assert_eq!(watcher.recv().await, "Client #2 has left the chat");
    room_still_works(server, &mut watcher).await;
    frame.reason.to_string()
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    /// The value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The value of the metric `name` (with its labels, if any) in a `/metrics` body.
    pub fn metric(&self, name: &str) -> u64 {
        self.body
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
    }
}

/// The request for `/metrics`.
pub const METRICS_REQUEST: &str = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// The name of the counter of requests refused for `reason`.
pub fn refused_total(reason: &str) -> String {
    format!("chat_refused_handshakes_total{{reason=\"{reason}\"}}")
}

/// Writes `request` as-is and reads one response: its head, then `Content-Length` bytes.
pub async fn raw_http(address: SocketAddr, request: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    within("an HTTP response", read_response(&mut stream)).await
}

async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> HttpResponse {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(
            read > 0,
            "connection closed before the response head: {raw:?}"
        );
        raw.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(raw[..head_end].to_vec()).expect("ascii head");
    let mut response = HttpResponse {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}")),
        head,
        body: String::new(),
    };
    if response.status == 101 {
        // What follows is WebSocket frames, not a body.
        return response;
    }
    let length: usize = response
        .header("content-length")
        .map_or(0, |length| length.parse().expect("content-length"));
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..read]);
    }
    response.body = String::from_utf8(body).expect("utf-8 body");
    response
}

/// The value of an unlabelled metric (`name value`) of the server at `address`.
pub async fn metric(address: SocketAddr, name: &str) -> u64 {
    raw_http(address, METRICS_REQUEST).await.metric(name)
}

/// Waits until the metric `name` of the server at `address` reads a value that
/// `wanted` accepts, and returns it; fails after [`PATIENCE`] with the last value read.
pub async fn metric_until(address: SocketAddr, name: &str, wanted: impl Fn(u64) -> bool) -> u64 {
    let mut last = None;
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let value = metric(address, name).await;
            if wanted(value) {
                return value;
            }
            last = Some(value);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{name} never read as wanted; last {last:?}"))
}

/// Waits until the gauge `name` has reached `bound` and then has not changed for
/// `steady`, and returns it: where a bounded backlog stops once its senders are no
/// longer read. Reaching the bound is the event waited for; the steady spell only
/// lets an overshoot past it show, so a slow machine cannot make this return early
/// with a value below the bound.
pub async fn settled_gauge(address: SocketAddr, name: &str, bound: u64, steady: Duration) -> u64 {
    let mut value = metric_until(address, name, |value| value >= bound).await;
    let mut since = Instant::now();
    let deadline = Instant::now() + PATIENCE;
    while since.elapsed() < steady {
        assert!(Instant::now() < deadline, "{name} never settled");
        tokio::time::sleep(steady / 15).await;
        let now = metric(address, name).await;
        if now != value {
            (value, since) = (now, Instant::now());
        }
    }
    value
}

/// Waits until the gauge `name` reads zero.
pub async fn drained_gauge(address: SocketAddr, name: &str) {
    metric_until(address, name, |value| value == 0).await;
}

/// Sends `request` to the server at `address` and checks that it is refused with
/// `status` and a body that contains `says` (what the refusal tells the client to do);
/// returns the response for further checks.
pub async fn assert_refused(
    address: SocketAddr,
    request: &str,
    status: u16,
    says: &str,
) -> HttpResponse {
    let response = raw_http(address, request).await;
    assert_eq!(response.status, status, "{request:?}: {response:?}");
    assert!(
        response.body.contains(says),
        "{request:?}: the body says {says:?}: {:?}",
        response.body
    );
    response
}

/// [`assert_refused`], and checks that the refusal was counted under `reason`, once.
pub async fn assert_refused_as(
    address: SocketAddr,
    request: &str,
    (status, says): (u16, &str),
    reason: &str,
) -> HttpResponse {
    let before = metric(address, &refused_total(reason)).await;
    let response = assert_refused(address, request, status, says).await;
    assert_eq!(
        metric(address, &refused_total(reason)).await,
        before + 1,
        "{request:?} is counted as {reason}"
    );
    response
}

/// The request for `/healthz`.
pub const HEALTH_REQUEST: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Waits until `/healthz` of the server at `address` answers `status`, and returns the
/// body, which says why when it is not 200.
pub async fn wait_for_health(address: SocketAddr, status: u16) -> String {
    eventually(&format!("/healthz to answer {status}"), async || {
        TcpStream::connect(address).await.ok()?;
        let response = raw_http(address, HEALTH_REQUEST).await;
        (response.status == status).then_some(response.body)
    })
    .await
}

/// A WebSocket handshake request for `path`.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Reads `client`'s frames as fast as they come, in a task of its own, until `wanted`
/// texts that `counts` accepts have arrived, and returns those texts; or, if the
/// server closes the connection first, how it closed and how many had arrived. What a
/// client reading at full speed sees, for the tests of who may be evicted.
pub fn read_at_full_speed(
    mut client: Client,
    wanted: usize,
    counts: impl Fn(&str) -> bool + Send + 'static,
) -> JoinHandle<Result<Vec<String>, String>> {
    tokio::spawn(async move {
        let mut texts = Vec::new();
        while texts.len() < wanted {
            match within("a frame at full speed", client.socket.next()).await {
                Some(Ok(Message::Text(text))) if counts(&text) => texts.push(text.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("closed with {frame:?} after {}", texts.len()));
                }
                Some(Ok(_)) => {}
                other => return Err(format!("{other:?} after {}", texts.len())),
            }
        }
        Ok(texts)
    })
}

/// The WebSocket of a test's client, as [`Client`] holds it.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
