//! A WebSocket client that only reads, lighter than tokio-tungstenite, for the scenarios
//! where thousands of clients share the machine's two cores with the server they
//! measure: every microsecond a client spends on a frame is taken from the server.
//!
//! It does what a reading client must and no more: the opening handshake (checked:
//! status 101, the accept key, the subprotocol), text frames handed out as borrowed
//! `&str` without a copy or an allocation, pings answered, a close frame ending it. It
//! refuses what the server under test never sends (masked or fragmented frames), loudly.
//! Only `ws://`: the growth scenario starts its own server on loopback.

use std::io;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

pub(crate) struct LeanSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
    /// The frame handed out last, consumed at the next call.
    handed_out: usize,
}

/// One frame's header, parsed from the front of the unread bytes.
struct Header {
    opcode: u8,
    header_bytes: usize,
    payload_bytes: usize,
}

impl LeanSocket {
    /// Opens `url` (`ws://` only), asking for `subprotocol`, and checks the answer.
    pub(crate) async fn connect(url: &str, subprotocol: Option<&str>) -> anyhow::Result<Self> {
        let parsed = Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
        ensure!(
            parsed.scheme() == "ws",
            "the lean client speaks ws:// only, not {url}"
        );
        let host = parsed.host_str().context("a ws:// URL has a host")?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addresses = parsed.socket_addrs(|| Some(80))?;
        let stream = TcpStream::connect(&*addresses)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        // Only pongs are written, and they should not wait for an ACK.
        stream.set_nodelay(true)?;
        let mut socket = Self {
            stream,
            buffer: vec![0; BUFFER_BYTES],
            start: 0,
            end: 0,
            handed_out: 0,
        };
        socket
            .handshake(&parsed, host, port, subprotocol)
            .await
            .with_context(|| format!("opening {url}"))?;
        Ok(socket)
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
            if let Some(at) = find(&self.buffer[..self.end], b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(
                self.end < MAX_RESPONSE_BYTES,
                "an answer of over {MAX_RESPONSE_BYTES} bytes"
            );
            self.fill()
                .await?
                .context("the server closed during the handshake")?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).context("a non-UTF-8 answer")?;
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
        self.start = head_end;
        Ok(())
    }

    /// The next text frame's payload, answering pings on the way; `None` once the
    /// server closes or the connection ends.
    pub(crate) async fn next_text(&mut self) -> anyhow::Result<Option<&str>> {
        self.start += std::mem::take(&mut self.handed_out);
        loop {
            let Some(header) = self.header()? else {
                if self.fill().await?.is_none() {
                    return Ok(None);
                }
                continue;
            };
            let frame_bytes = header.header_bytes + header.payload_bytes;
            if self.end - self.start < frame_bytes {
                if self.fill().await?.is_none() {
                    return Ok(None);
                }
                continue;
            }
            let payload = self.start + header.header_bytes..self.start + frame_bytes;
            match header.opcode {
                OPCODE_TEXT => {
                    self.handed_out = frame_bytes;
                    let text = std::str::from_utf8(&self.buffer[payload])
                        .context("a text frame that is not UTF-8")?;
                    return Ok(Some(text));
                }
                OPCODE_PING => {
                    let pong = masked(OPCODE_PONG, &self.buffer[payload]);
                    self.stream.write_all(&pong).await?;
                }
                OPCODE_CLOSE => return Ok(None),
                // Binary frames and unasked pongs carry nothing the bench reads.
                _ => {}
            }
            self.start += frame_bytes;
        }
    }

    /// The header at the front of the unread bytes, if they hold all of it.
    fn header(&self) -> anyhow::Result<Option<Header>> {
        let unread = &self.buffer[self.start..self.end];
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

    /// Reads more, making room first: `None` when the connection has ended.
    async fn fill(&mut self) -> anyhow::Result<Option<usize>> {
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
        match self.stream.read(&mut self.buffer[self.end..]).await {
            Ok(0) if self.end > 0 => bail!("the connection ended inside a frame"),
            Ok(0) => Ok(None),
            Ok(read) => {
                self.end += read;
                Ok(Some(read))
            }
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => Ok(None),
            Err(error) => bail!(error),
        }
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

    use futures_util::SinkExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::{Protocol, Servers};

    /// A chat-server in this process that pings every 100 ms and closes a connection
    /// whose ping goes a second unanswered.
    async fn pinging_server() -> Servers {
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
            protocol: Protocol::V2,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_short_and_long_frames_and_answers_pings_meanwhile() {
        let servers = pinging_server().await;
        let mut reader = LeanSocket::connect(&servers.endpoint(0, 1), Protocol::V2.subprotocol())
            .await
            .unwrap();
        let welcome = reader.next_text().await.unwrap().unwrap();
        assert!(welcome.starts_with(r#"{"type":"welcome""#), "{welcome}");
        let said = ["short".to_owned(), "a".repeat(200), "b".repeat(5000)];
        let expected = said.clone();
        let reading = tokio::spawn(async move {
            let mut heard = Vec::new();
            while heard.len() < expected.len() {
                let text = reader.next_text().await.unwrap().expect("still open");
                if let Some((_, id, text)) = crate::quick_message(text)
                    && id == "2"
                {
                    heard.push(text.to_owned());
                }
            }
            heard
        });
        // Twenty-five pings: unanswered, the first would have closed the reader's
        // connection a second and a half ago.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // The sender comes now, so that only the reader has to last through them.
        let mut sender = servers.connect(&servers.endpoint(1, 2)).await.unwrap();
        for text in &said {
            sender.send(servers.message(text.clone())).await.unwrap();
        }
        let heard = tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("every message read")
            .unwrap();
        assert_eq!(heard, said);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subprotocol_the_server_does_not_select_is_an_error() {
        let servers = pinging_server().await;
        let error = LeanSocket::connect(&servers.endpoint(0, 1), Some("chat.v9.json"))
            .await
            .err()
            .expect("refused");
        assert!(format!("{error:#}").contains("chat.v9.json"), "{error:#}");
    }
}
