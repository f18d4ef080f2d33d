//! The HTTP side: the page at `/`, `/healthz`, `/metrics`, plain answers to every other
//! request, and the WebSocket handshake on `/ws/<client_id>` (and `/echo`, when enabled)
//! with its checks: id, headers, origin policy and capacity.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

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
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{debug, warn};

use crate::metrics::Refusal;
use crate::{Shared, connection};

/// The browser client, embedded so an installed binary needs no files beside it.
const PAGE: &str = include_str!("../../client/index.html");

/// The most bytes of request line and headers we buffer (hyper's minimum is 8 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;

type Body = Full<Bytes>;

/// Serves one TCP connection: HTTP requests until it upgrades to a WebSocket or ends.
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let metrics = shared.metrics.clone();
    let handshake_timeout = shared.config.handshake_timeout;
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(request, peer, &shared)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                if error.is_timeout() {
                    metrics.refused(Refusal::Timeout);
                } else if error.is_parse_too_large() {
                    metrics.refused(Refusal::HeadersTooLarge);
                }
                debug!(%peer, %error, "http connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {}
    }
}

fn respond(request: Request<Incoming>, peer: SocketAddr, shared: &Arc<Shared>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let response = match path.as_str() {
        "/" => return page(request.method()),
        "/healthz" => return health(request.method(), shared),
        "/metrics" => {
            let metrics = shared.metrics.render();
            return plain_get(request.method(), "text/plain; version=0.0.4", &metrics);
        }
        "/echo" if shared.config.echo => upgrade(request, Endpoint::Echo, peer, shared),
        "/ws" => Err(refuse_id(chat::InvalidId::Empty)),
        _ => match path.strip_prefix("/ws/") {
            Some(raw_id) => ClientId::parse(raw_id)
                .map_err(refuse_id)
                .and_then(|id| upgrade(request, Endpoint::Chat(id), peer, shared)),
            None => return text(StatusCode::NOT_FOUND, "not found\n"),
        },
    };
    response.unwrap_or_else(|Refused { reason, response }| {
        shared.metrics.refused(reason);
        debug!(%peer, %path, reason = reason.label(), "refused a websocket request");
        *response
    })
}

/// 200 `ok`, or 503 with the reason while a clustered node cannot reach Redis.
fn health(method: &Method, shared: &Shared) -> Response<Body> {
    match shared.unavailable() {
        None => plain_get(method, "text/plain; charset=utf-8", "ok\n"),
        Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}\n")),
    }
}

fn page(method: &Method) -> Response<Body> {
    match *method {
        Method::GET | Method::HEAD => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from(PAGE))
            .expect("static response parts are valid"),
        _ => method_not_allowed(),
    }
}

fn plain_get(method: &Method, content_type: &'static str, body: &str) -> Response<Body> {
    match *method {
        Method::GET | Method::HEAD => {
            let mut response = text(StatusCode::OK, body);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        _ => method_not_allowed(),
    }
}

fn method_not_allowed() -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

/// A request that is not upgraded: why, for the metrics, and the answer. Boxed, as the
/// refusal path is rare and should not make every `Result` large.
struct Refused {
    reason: Refusal,
    response: Box<Response<Body>>,
}

fn refused(reason: Refusal, response: Response<Body>) -> Refused {
    Refused {
        reason,
        response: Box::new(response),
    }
}

fn refuse_id(error: chat::InvalidId) -> Refused {
    let body = format!(
        "invalid client id: {error}\n{rules}; connect to /ws/<client_id>, for example /ws/42\n",
        rules = chat::ID_RULES
    );
    refused(Refusal::InvalidId, text(StatusCode::FORBIDDEN, &body))
}

/// What an upgraded connection becomes.
enum Endpoint {
    Chat(ClientId),
    Echo,
}

/// Answers the WebSocket handshake and hands the upgraded socket to a new session.
fn upgrade(
    mut request: Request<Incoming>,
    endpoint: Endpoint,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<Response<Body>, Refused> {
    let accept = check_handshake(&request, &shared.config.allowed_origins)?;
    if let Some(reason) = shared.unavailable() {
        let body = format!("the chat is unavailable: {reason}; try again later\n");
        return Err(refused(
            Refusal::Unavailable,
            text(StatusCode::SERVICE_UNAVAILABLE, &body),
        ));
    }
    let Some(slot) = shared.sessions.try_reserve() else {
        let body = format!(
            "the server is full ({} connections); try again later\n",
            shared.config.max_connections
        );
        return Err(refused(
            Refusal::Full,
            text(StatusCode::SERVICE_UNAVAILABLE, &body),
        ));
    };

    let on_upgrade = hyper::upgrade::on(&mut request);
    let session_shared = shared.clone();
    shared.tasks.spawn(async move {
        let shared = session_shared;
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                warn!(%peer, %error, "websocket upgrade failed");
                return;
            }
        };
        // Back to the TcpStream itself: the session splits it into a read half for
        // tungstenite and a write half for its writer.
        let hyper::upgrade::Parts { io, read_buf, .. } =
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => parts,
                Err(_) => {
                    warn!(%peer, "upgraded connection is not a TCP stream");
                    return;
                }
            };
        // A copy, and the view dropped: `read_buf` shares hyper's whole 8 KiB read
        // buffer, which would otherwise live as long as the session.
        let already_read = read_buf.to_vec();
        drop(read_buf);
        let tcp = io.into_inner();
        match endpoint {
            Endpoint::Chat(id) => {
                let member = shared.room.join(id);
                connection::serve(tcp, already_read, member, peer, shared).await;
            }
            Endpoint::Echo => connection::echo(tcp, already_read, peer, shared).await,
        }
    });

    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::default())
        .expect("handshake response parts are valid"))
}

/// Checks a WebSocket handshake request; returns the `Sec-WebSocket-Accept` value.
fn check_handshake(
    request: &Request<Incoming>,
    allowed_origins: &[String],
) -> Result<String, Refused> {
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
        return Err(refused(Refusal::NotWebSocket, response));
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
        return Err(refused(Refusal::BadVersion, response));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        let response = text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        return Err(refused(Refusal::MissingKey, response));
    };
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    if !origin_allowed(origin, host, allowed_origins) {
        let body = "cross-origin WebSocket requests are refused; \
                    the server's --allowed-origin flag can allow this origin\n";
        return Err(refused(Refusal::Origin, text(StatusCode::FORBIDDEN, body)));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The origin policy against cross-site WebSocket hijacking. Allowed: no `Origin` (not
/// a browser), `Origin: null` (a page opened from disk), an origin whose host and port
/// are the ones the request was sent to (the page this server served), and the origins
/// in `allowed`, where `*` allows all.
fn origin_allowed(origin: Option<&[u8]>, host: Option<&[u8]>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    if origin == "null"
        || allowed
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let Some(origin_host) = url.host_str() else {
        return false;
    };
    let Some(host) = host.and_then(|host| std::str::from_utf8(host).ok()) else {
        return false;
    };
    // Host is `name[:port]`; the port is left out when it is the scheme's default.
    let scheme_default = match url.scheme() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let (host_name, host_port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
            (name, port.parse::<u16>().ok())
        }
        _ => (host, None),
    };
    origin_host.eq_ignore_ascii_case(host_name)
        && url.port_or_known_default() == host_port.or(scheme_default)
}

/// Whether the request asks for a WebSocket: `Connection: upgrade` (one token of a
/// list, in any case) and `Upgrade: websocket`.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|candidate| candidate.trim().eq_ignore_ascii_case(token))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body.to_owned()))
        .expect("plain response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(origin: Option<&str>, host: &str, extra: &[&str]) -> bool {
        let extra: Vec<String> = extra.iter().map(|origin| (*origin).to_owned()).collect();
        origin_allowed(origin.map(str::as_bytes), Some(host.as_bytes()), &extra)
    }

    #[test]
    fn terminal_clients_pages_from_disk_and_our_own_page_are_allowed() {
        assert!(allowed(None, "localhost:8000", &[]));
        assert!(allowed(Some("null"), "localhost:8000", &[]));
        assert!(allowed(
            Some("http://localhost:8000"),
            "localhost:8000",
            &[]
        ));
        assert!(allowed(
            Some("http://LOCALHOST:8000"),
            "localhost:8000",
            &[]
        ));
        assert!(allowed(
            Some("http://127.0.0.1:9000"),
            "127.0.0.1:9000",
            &[]
        ));
        assert!(allowed(
            Some("https://chat.example.org"),
            "chat.example.org",
            &[]
        ));
        assert!(allowed(
            Some("http://chat.example.org"),
            "chat.example.org:80",
            &[]
        ));
        assert!(allowed(Some("http://[::1]:8000"), "[::1]:8000", &[]));
    }

    #[test]
    fn other_origins_are_refused_unless_listed() {
        assert!(!allowed(Some("http://evil.example"), "localhost:8000", &[]));
        assert!(!allowed(
            Some("http://localhost:8001"),
            "localhost:8000",
            &[]
        ));
        assert!(!allowed(Some("http://localhost"), "localhost:8000", &[]));
        assert!(!allowed(
            Some("https://chat.example.org"),
            "chat.example.org:80",
            &[]
        ));
        assert!(!allowed(Some("garbage"), "localhost:8000", &[]));
        assert!(allowed(
            Some("http://app.example"),
            "localhost:8000",
            &["http://app.example"]
        ));
        assert!(allowed(
            Some("http://evil.example"),
            "localhost:8000",
            &["*"]
        ));
    }
}
