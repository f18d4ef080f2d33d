//! The HTTP side: the page at `/`, plain answers to every other request, and the
//! WebSocket handshake on `/ws/<client_id>`, after which the session takes over.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat::ClientId;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, warn};

use crate::{Shared, connection};

/// The browser client, embedded so an installed binary needs no files beside it.
const PAGE: &str = include_str!("../../client/index.html");

/// A client that has not sent its request headers by then is cut off (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes of request line and headers we buffer (hyper's minimum is 8 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;

type Body = Full<Bytes>;

/// Serves one TCP connection: HTTP requests until it upgrades to a WebSocket or ends.
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(request, peer, &shared)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                debug!(%peer, %error, "http connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {}
    }
}

fn respond(request: Request<Incoming>, peer: SocketAddr, shared: &Arc<Shared>) -> Response<Body> {
    let path = request.uri().path();
    if path == "/" {
        return match *request.method() {
            Method::GET | Method::HEAD => Response::builder()
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Body::from(PAGE))
                .expect("static response parts are valid"),
            _ => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                response
            }
        };
    }
    let Some(raw_id) = path.strip_prefix("/ws/") else {
        if path == "/ws" {
            return text(
                StatusCode::FORBIDDEN,
                &invalid_id_body(chat::InvalidId::Empty),
            );
        }
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let id = match ClientId::parse(raw_id) {
        Ok(id) => id,
        Err(error) => return text(StatusCode::FORBIDDEN, &invalid_id_body(error)),
    };
    upgrade(request, id, peer, shared)
}

fn invalid_id_body(error: chat::InvalidId) -> String {
    format!(
        "invalid client id: {error}\n{rules}; connect to /ws/<client_id>, for example /ws/42\n",
        rules = chat::ID_RULES
    )
}

/// Answers the WebSocket handshake and hands the upgraded socket to a new session.
fn upgrade(
    mut request: Request<Incoming>,
    id: ClientId,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Response<Body> {
    let headers = request.headers();
    if request.method() != Method::GET || !is_websocket_upgrade(headers) {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: connect with a WebSocket client, e.g. ws://HOST/ws/42\n",
        );
        let response_headers = response.headers_mut();
        response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        response_headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        response_headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13\n",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());

    let on_upgrade = hyper::upgrade::on(&mut request);
    let session_shared = shared.clone();
    shared.tasks.spawn(async move {
        let shared = session_shared;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                warn!(%peer, %error, "websocket upgrade failed");
                return;
            }
        };
        // Unwrapping hyper's boxed stream back into the TcpStream spares a layer of
        // dynamic dispatch on every read and write of the session.
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => {
                warn!(%peer, "upgraded connection is not a TCP stream");
                return;
            }
        };
        let socket = WebSocketStream::from_partially_read(
            parts.io.into_inner(),
            parts.read_buf.to_vec(),
            Role::Server,
            Some(shared.websocket_config()),
        )
        .await;
        let member = shared.room.join(id);
        connection::serve(socket, member, peer, shared.shutdown.clone()).await;
    });

    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::default())
        .expect("handshake response parts are valid")
}

/// Whether the request asks for a WebSocket: `Connection: upgrade` (one token of a
/// list, in any case) and `Upgrade: websocket`.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade_websocket = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"));
    connection_upgrade && upgrade_websocket
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body.to_owned()))
        .expect("plain response parts are valid")
}
