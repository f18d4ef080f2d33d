//! A WebSocket client that only reads, lighter than tokio-tungstenite, for the scenarios
//! where thousands of clients share the machine's two cores with the server they
//! measure: every microsecond a client spends on a frame is taken from the server.
//!
//! It does what a reading client must and no more: the opening handshake (checked:
//! status 101, the accept key, the subprotocol), text frames handed out as borrowed
//! `&str` without a copy or an allocation, pings answered, a close frame ending it. It
//! refuses what the server under test never sends (masked or fragmented frames), loudly.
//! Only `ws://`: the growth scenario starts its own server on loopback.
//!
//! The handshake is async ([`LeanSocket::connect`], on the bench's tokio runtime, which
//! paces thousands of them); the reading after it is not: a [`LeanConnection`] is read
//! by a [`crate::readers::ReadingPool`] thread, without a task to wake per frame.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use url::Url;

/// What a connection's buffer starts with: a few of the benchmark's frames. A welcome
/// or presence batch larger than this grows it.
const BUFFER_BYTES: usize = 2 * 1024;

/// The largest frame accepted, far above anything the server sends (a welcome holds a
/// page of members, a presence batch at most 256 entries).
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The largest handshake response accepted.
const MAX_RESPONSE_BYTES: usize = 8 * 1024;

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// A client's masking key for its pongs, the only frames it sends. A fixed key is
/// enough: masking protects proxies from a page's chosen bytes, not a benchmark.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A connection whose handshake is under way.
pub(crate) struct LeanSocket {
    stream: TcpStream,
    frames: Frames,
}

/// An open connection, past its handshake, to be read without tokio.
pub(crate) struct LeanConnection {
    stream: mio::net::TcpStream,
    /// May already hold frames that came with the handshake's answer.
    frames: Frames,
}

/// A reading thread's buffer, lent to each connection it reads (see
/// [`LeanConnection::read_all`]).
pub(crate) struct ReadBuffer(Frames);

impl ReadBuffer {
    pub(crate) fn new() -> Self {
        Self(Frames::new())
    }
}

/// The bytes read and not yet parsed, and the frames at their front.
struct Frames {
    buffer: Vec<u8>,
    /// The unparsed bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

/// One frame, borrowed from the connection's buffer.
enum Frame<'a> {
    Text(&'a str),
    Ping(&'a [u8]),
    Close,
    /// Binary frames and unasked pongs carry nothing the bench reads.
    Ignored,
}

/// One frame's header, parsed from the front of the unread bytes.
struct Header {
    opcode: u8,
    header_bytes: usize,
    payload_bytes: usize,
}

/// Connects to the first of `addresses` that answers, from `source` on a port the
/// kernel picks; only addresses of `source`'s family are tried.
async fn connect_from(source: IpAddr, addresses: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last_error = None;
    for address in addresses
        .iter()
        .filter(|address| address.is_ipv4() == source.is_ipv4())
    {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(*address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the URL names no address of the source's family",
        )
    }))
}

impl LeanSocket {
    /// Opens `url` (`ws://` only), from address `source` if given (on any port),
    /// asking for `subprotocol`, and checks the answer.
    pub(crate) async fn connect(
        url: &str,
        subprotocol: Option<&str>,
        source: Option<IpAddr>,
    ) -> anyhow::Result<LeanConnection> {
        let parsed = Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
        ensure!(
            parsed.scheme() == "ws",
            "the lean client speaks ws:// only, not {url}"
        );
        let host = parsed.host_str().context("a ws:// URL has a host")?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addresses = parsed.socket_addrs(|| Some(80))?;
        let stream = match source {
            None => TcpStream::connect(&*addresses)
                .await
                .with_context(|| format!("connecting to {url}"))?,
            Some(source) => connect_from(source, &addresses)
                .await
                .with_context(|| format!("connecting to {url} from {source}"))?,
        };
        // Only pongs are written, and they should not wait for an ACK.
        stream.set_nodelay(true)?;
        let mut socket = Self {
            stream,
            frames: Frames::new(),
        };
        socket
            .handshake(&parsed, host, port, subprotocol)
            .await
            .with_context(|| format!("opening {url}"))?;
        // Out of tokio's reactor, still non-blocking, for a reading thread's epoll.
        let stream = mio::net::TcpStream::from_std(socket.stream.into_std()?);
        Ok(LeanConnection {
            stream,
            frames: socket.frames,
        })
    }

    async fn handshake(
        &mut self,
        url: &Url,
        host: &str,
        port: u16,
        subprotocol: Option<&str>,
    ) -> anyhow::Result<()> {
        let key = generate_key();
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(protocol) = subprotocol {
            request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).await?;

        // Read until the blank line; whatever follows it is the first frames.
        let head_end = loop {
            let answer = self.frames.unparsed();
            if let Some(at) = find(answer, b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(
                answer.len() < MAX_RESPONSE_BYTES,
                "an answer of over {MAX_RESPONSE_BYTES} bytes"
            );
            let read = self.stream.read(self.frames.room()).await?;
            ensure!(read > 0, "the server closed during the handshake");
            self.frames.filled(read);
        };
        let head = std::str::from_utf8(&self.frames.unparsed()[..head_end])
            .context("a non-UTF-8 answer")?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        ensure!(
            status.starts_with("HTTP/1.1 101"),
            "the server answered {status:?}"
        );
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|line| {
                let (field, value) = line.split_once(':')?;
                field.eq_ignore_ascii_case(name).then(|| value.trim())
            })
        };
        let expected = derive_accept_key(key.as_bytes());
        ensure!(
            header("sec-websocket-accept") == Some(expected.as_str()),
            "a wrong Sec-WebSocket-Accept"
        );
        if let Some(protocol) = subprotocol {
            let selected = header("sec-websocket-protocol");
            ensure!(
                selected == Some(protocol),
                "the server does not offer {protocol} (it selected {selected:?})"
            );
        }
        self.frames.start += head_end;
        Ok(())
    }
}

impl LeanConnection {
    pub(crate) fn stream(&mut self) -> &mut mio::net::TcpStream {
        &mut self.stream
    }

    /// Reads what the socket holds, handing each text frame to `on_text` and answering
    /// pings: `false` once the server has closed or the connection has ended.
    ///
    /// For an edge-triggered epoll: it reads until the socket is empty, and takes a
    /// read that did not fill the room it was given as the sign of that (the next bytes
    /// bring a new edge), sparing the read that would only say `WouldBlock`. Not when
    /// `closing` (the event said the peer shut down or failed): a FIN or RST that came
    /// with the data ends a short read and brings no edge of its own, so it is read.
    ///
    /// Most reads leave no part of a frame behind: those read into `lent`, the reading
    /// thread's buffer, warm in the cache, rather than into this connection's own, one
    /// of thousands and cold, which the kernel's copy and the parsing would each fetch
    /// anew. A read that leaves part of a frame keeps the buffer it read into, and the
    /// thread takes this connection's in its place.
    pub(crate) fn read_all(
        &mut self,
        lent: &mut ReadBuffer,
        on_text: &mut dyn FnMut(&str),
        closing: bool,
    ) -> anyhow::Result<bool> {
        let lends = !self.frames.is_mid_frame();
        if lends {
            std::mem::swap(&mut self.frames, &mut lent.0);
        }
        let read = self.read_frames(on_text, closing);
        if lends && !self.frames.is_mid_frame() {
            std::mem::swap(&mut self.frames, &mut lent.0);
        }
        read
    }

    fn read_frames(
        &mut self,
        on_text: &mut dyn FnMut(&str),
        closing: bool,
    ) -> anyhow::Result<bool> {
        loop {
            if !self.handle_frames(on_text)? {
                return Ok(false);
            }
            let room = self.frames.room();
            let offered = room.len();
            let read = match (&self.stream).read(room) {
                Ok(0) if self.frames.is_mid_frame() => {
                    bail!("the connection ended inside a frame")
                }
                Ok(0) => return Ok(false),
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(false);
                }
                Err(error) => bail!(error),
            };
            self.frames.filled(read);
            if read < offered && !closing {
                return self.handle_frames(on_text);
            }
        }
    }

    /// Hands out every whole frame read so far: `false` after a close.
    fn handle_frames(&mut self, on_text: &mut dyn FnMut(&str)) -> anyhow::Result<bool> {
        while let Some(frame) = self.frames.next()? {
            match frame {
                Frame::Text(text) => on_text(text),
                Frame::Ping(payload) => {
                    let pong = masked(OPCODE_PONG, payload);
                    // A reading client's send buffer holds at most a few pongs, so a
                    // pong that does not fit at once means something is badly wrong.
                    let written = (&self.stream).write(&pong)?;
                    ensure!(written == pong.len(), "a pong could not be written at once");
                }
                Frame::Close => return Ok(false),
                Frame::Ignored => {}
            }
        }
        Ok(true)
    }
}

impl Frames {
    fn new() -> Self {
        Self {
            buffer: vec![0; BUFFER_BYTES],
            start: 0,
            end: 0,
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }

    fn is_mid_frame(&self) -> bool {
        self.end > self.start
    }

    /// Where the next read goes: the unparsed bytes moved to the front first, and the
    /// buffer grown if they fill it (or shrunk back once a big frame is past).
    fn room(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buffer.len() {
            self.buffer.resize(self.buffer.len() * 2, 0);
        } else if self.buffer.len() > BUFFER_BYTES && self.end == 0 {
            // A big welcome or batch is past, and nothing of the next frame is here
            // yet: thousands of clients should not each keep its room.
            self.buffer.truncate(BUFFER_BYTES);
            self.buffer.shrink_to_fit();
        }
        &mut self.buffer[self.end..]
    }

    fn filled(&mut self, read: usize) {
        self.end += read;
    }

    /// The whole frame at the front of the unparsed bytes, if they hold one.
    fn next(&mut self) -> anyhow::Result<Option<Frame<'_>>> {
        let Some(header) = self.header()? else {
            return Ok(None);
        };
        let frame_bytes = header.header_bytes + header.payload_bytes;
        if self.end - self.start < frame_bytes {
            return Ok(None);
        }
        let payload = self.start + header.header_bytes..self.start + frame_bytes;
        self.start += frame_bytes;
        let payload = &self.buffer[payload];
        Ok(Some(match header.opcode {
            OPCODE_TEXT => {
                Frame::Text(std::str::from_utf8(payload).context("a text frame that is not UTF-8")?)
            }
            OPCODE_PING => Frame::Ping(payload),
            OPCODE_CLOSE => Frame::Close,
            _ => Frame::Ignored,
        }))
    }

    /// The header at the front of the unparsed bytes, if they hold all of it.
    fn header(&self) -> anyhow::Result<Option<Header>> {
        let unread = self.unparsed();
        let [first, second, ..] = *unread else {
            return Ok(None);
        };
        ensure!(second & 0x80 == 0, "a masked frame from the server");
        let (extended_bytes, payload_bytes) = match second & 0x7f {
            126 => (
                2,
                unread
                    .get(2..4)
                    .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
            ),
            127 => (
                8,
                unread
                    .get(2..10)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8"))),
            ),
            length => (0, Some(u64::from(length))),
        };
        let Some(payload_bytes) = payload_bytes else {
            return Ok(None);
        };
        ensure!(
            payload_bytes <= MAX_FRAME_BYTES as u64,
            "a frame of {payload_bytes} bytes"
        );
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0f);
        ensure!(first & 0x70 == 0, "a frame with reserved bits set");
        ensure!(
            fin && opcode != OPCODE_CONTINUATION,
            "a fragmented message, which this client does not read"
        );
        ensure!(
            matches!(opcode, OPCODE_TEXT | OPCODE_BINARY)
                || (matches!(opcode, OPCODE_CLOSE | OPCODE_PING | OPCODE_PONG)
                    && payload_bytes <= 125),
            "a frame of opcode {opcode:#x} and {payload_bytes} bytes"
        );
        Ok(Some(Header {
            opcode,
            header_bytes: 2 + extended_bytes,
            payload_bytes: payload_bytes as usize,
        }))
    }
}

/// A client's frame: masked, as RFC 6455 requires of clients.
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    // Control frames carry at most 125 bytes, so the length fits the first byte.
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len().min(125) as u8];
    frame.extend_from_slice(&MASK);
    frame.extend(
        payload
            .iter()
            .take(125)
            .zip(MASK.iter().cycle())
            .map(|(byte, mask)| byte ^ mask),
    );
    frame
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::readers::ReadingPool;
    use crate::{Protocol, Servers};

    /// A chat-server in this process that pings every 100 ms and closes a connection
    /// whose ping goes a second unanswered.
    async fn pinging_server(protocol: Protocol) -> Servers {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let config = chat_server::Config {
            rate_limit: None,
            ping_interval: Duration::from_millis(100),
            ping_timeout: Duration::from_secs(1),
            ..chat_server::Config::default()
        };
        tokio::spawn(chat_server::run(listener, config, std::future::pending()));
        Servers {
            urls: vec![Url::parse(&format!("ws://{address}")).unwrap()],
            room: None,
            protocol,
        }
    }

    /// Adds a lean client of `servers` as id 1 to `pool`; its texts come out of the
    /// receiver.
    async fn lean_client(servers: &Servers, pool: &ReadingPool) -> mpsc::UnboundedReceiver<String> {
        let connection = LeanSocket::connect(
            &servers.endpoint(0, 1),
            servers.protocol.subprotocol(),
            None,
        )
        .await
        .unwrap();
        let (heard, texts) = mpsc::unbounded_channel();
        pool.add(
            connection,
            1,
            Box::new(move |text| {
                let _ = heard.send(text.to_owned());
            }),
        )
        .unwrap();
        texts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_short_and_long_frames_and_answers_pings_meanwhile() {
        let servers = pinging_server(Protocol::V2).await;
        let pool = ReadingPool::new(2).unwrap();
        let mut texts = lean_client(&servers, &pool).await;
        let welcome = texts.recv().await.unwrap();
        assert!(welcome.starts_with(r#"{"type":"welcome""#), "{welcome}");
        // Twenty-five pings: unanswered, the first would have closed the reader's
        // connection a second and a half ago.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // The sender comes now, so that only the reader has to last through them.
        let mut sender = servers.connect(&servers.endpoint(1, 2)).await.unwrap();
        let said = ["short".to_owned(), "a".repeat(200), "b".repeat(5000)];
        for text in &said {
            sender.send(servers.message(text.clone())).await.unwrap();
        }
        let mut heard = Vec::new();
        while heard.len() < said.len() {
            let text = tokio::time::timeout(Duration::from_secs(10), texts.recv())
                .await
                .expect("every message read")
                .expect("still open");
            if let Some((_, id, text)) = crate::quick_message(&text)
                && id == "2"
            {
                heard.push(text.to_owned());
            }
        }
        assert_eq!(heard, said);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_all_ends_the_connections_and_the_room_hears_them_leave() {
        let servers = pinging_server(Protocol::Plain).await;
        let pool = ReadingPool::new(2).unwrap();
        let mut texts = lean_client(&servers, &pool).await;
        assert_eq!(
            texts.recv().await.unwrap(),
            "Client #1 has entered the chat"
        );
        let mut witness = servers.connect(&servers.endpoint(1, 2)).await.unwrap();
        let mut next_text = async || loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), witness.next())
                .await
                .expect("a frame within 5 s")
                .expect("open")
                .unwrap();
            if let Ok(text) = frame.into_text() {
                break text.to_string();
            }
        };
        assert_eq!(next_text().await, "Client #2 has entered the chat");
        pool.drop_all().await.unwrap();
        assert_eq!(next_text().await, "Client #1 has left the chat");
        // Its reader is gone with it: the texts' sender is dropped, after what was
        // heard before (the witness's join).
        let heard_before = tokio::time::timeout(Duration::from_secs(5), async {
            let mut heard = Vec::new();
            while let Some(text) = texts.recv().await {
                heard.push(text);
            }
            heard
        })
        .await
        .expect("the reader dropped");
        assert_eq!(heard_before, ["Client #2 has entered the chat"]);
    }

    /// Accepts a connection and answers its WebSocket handshake.
    fn accept_handshake(listener: &std::net::TcpListener) -> std::net::TcpStream {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).unwrap();
            request.push(byte[0]);
        }
        let request = String::from_utf8(request).unwrap();
        let key = request
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = derive_accept_key(key.trim().as_bytes());
        write!(
            socket,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .unwrap();
        socket
    }

    /// Two connections read by one thread: the first is left holding part of a frame
    /// while the second reads whole ones, into the buffer the thread lends, before and
    /// after the first's frame is completed. Every frame comes out whole, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_split_across_reads_comes_out_whole_beside_another_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let long = "x".repeat(300);
        let mut long_frame = vec![0x81, 126, 0x01, 0x2c];
        long_frame.extend_from_slice(long.as_bytes());
        let server = std::thread::spawn(move || {
            let pause = || std::thread::sleep(Duration::from_millis(200));
            let mut first = accept_handshake(&listener);
            let mut second = accept_handshake(&listener);
            first.write_all(&long_frame[..100]).unwrap();
            pause();
            second.write_all(&[0x81, 1, b'b']).unwrap();
            pause();
            first.write_all(&long_frame[100..]).unwrap();
            pause();
            second.write_all(&[0x81, 1, b'c']).unwrap();
            pause();
            first.write_all(&[0x81, 1, b'd']).unwrap();
            pause();
        });
        let url = format!("ws://{address}");
        let pool = ReadingPool::new(1).unwrap();
        let (heard, mut texts) = mpsc::unbounded_channel();
        for client in ["first", "second"] {
            let connection = LeanSocket::connect(&url, None, None).await.unwrap();
            let heard = heard.clone();
            let on_text = move |text: &str| {
                let _ = heard.send(format!("{client}: {text}"));
            };
            pool.add(connection, 1, Box::new(on_text)).unwrap();
        }
        let mut all = Vec::new();
        while all.len() < 4 {
            let text = tokio::time::timeout(Duration::from_secs(5), texts.recv())
                .await
                .expect("every frame read");
            all.push(text.unwrap());
        }
        let long = format!("first: {long}");
        assert_eq!(all, ["second: b", &long, "second: c", "first: d"]);
        server.join().unwrap();
    }

    /// A server that answers the handshake, later sends "a", then, while the reader
    /// is still inside `on_text("a")`, sends "b" and a FIN without a close frame: "b"
    /// and the FIN come to the reader as one edge.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fin_that_comes_with_the_last_frame_ends_the_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut socket = accept_handshake(&listener);
            std::thread::sleep(Duration::from_millis(200));
            socket.write_all(&[0x81, 1, b'a']).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            socket.write_all(&[0x81, 1, b'b']).unwrap();
            socket.shutdown(std::net::Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        let connection = LeanSocket::connect(&format!("ws://{address}"), None, None)
            .await
            .unwrap();
        let pool = ReadingPool::new(1).unwrap();
        let (heard, mut texts) = mpsc::unbounded_channel();
        pool.add(
            connection,
            1,
            Box::new(move |text| {
                if text == "a" {
                    std::thread::sleep(Duration::from_millis(300));
                }
                let _ = heard.send(text.to_owned());
            }),
        )
        .unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(text) = texts.recv().await {
                all.push(text);
            }
        })
        .await
        .expect("the connection ended with the FIN");
        assert_eq!(all, ["a", "b"]);
        server.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subprotocol_the_server_does_not_select_is_an_error() {
        let servers = pinging_server(Protocol::V2).await;
        let error = LeanSocket::connect(&servers.endpoint(0, 1), Some("chat.v9.json"), None)
            .await
            .err()
            .expect("refused");
        assert!(format!("{error:#}").contains("chat.v9.json"), "{error:#}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connects_from_the_address_it_is_given_or_says_why_not() {
        let servers = pinging_server(Protocol::V2).await;
        let source = IpAddr::from([127, 0, 0, 3]);
        let subprotocol = servers.protocol.subprotocol();
        let connection = LeanSocket::connect(&servers.endpoint(0, 1), subprotocol, Some(source))
            .await
            .unwrap();
        assert_eq!(connection.stream.local_addr().unwrap().ip(), source);

        let elsewhere = IpAddr::from([192, 0, 2, 1]);
        let error = LeanSocket::connect(&servers.endpoint(0, 2), subprotocol, Some(elsewhere))
            .await
            .err()
            .expect("a documentation address, none of this machine's");
        assert!(format!("{error:#}").contains("from 192.0.2.1"), "{error:#}");
        let error = LeanSocket::connect(
            &servers.endpoint(0, 2),
            subprotocol,
            Some("::1".parse().unwrap()),
        )
        .await
        .err()
        .expect("no IPv6 address to connect to");
        assert!(
            format!("{error:#}").contains("no address of the source's family"),
            "{error:#}"
        );
    }
}
