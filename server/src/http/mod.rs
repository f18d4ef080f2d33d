//! The HTTP side: the page at `/`, `/healthz`, `/metrics`, plain answers to every other
//! request, and the WebSocket handshake on `/ws/<client_id>` (and `/echo`, when enabled)
//! with its checks: id, headers, origin policy and capacity; the page and its headers
//! (`page`), the operator's dashboard at `/admin` and its figures (`admin`), the HTTP
//! API (`api`, `operators`) and the limits per client IP address (`addresses`).
//!
//! May call: `session` (to hand an upgraded connection over), `room` (to find the
//! room a client joins), `shared`, `identity`, `tls`, `config`, `metrics`.

pub mod addresses;
mod admin;
mod api;
mod operators;
pub mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chat::ClientId;
use chat::v1::{self, DisplayName, Role, RoomName};
use chat::v2;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{debug, info, warn};

use crate::http::addresses::{Addresses, Crowded, PendingCaps};
use crate::http::page::Page;
use crate::identity::{self, TokenRefusal, Tokens};
use crate::metrics::Refusal;
use crate::room::rooms::Unavailable;
use crate::room::rules::Sanction;
use crate::room::{Health, Protocol, Resume, SERVER_ROOM, Who};
use crate::session::connection;
use crate::session::socket::Transport;
use crate::shared::Shared;
use crate::tls;

/// What the front door holds besides what every session shares.
pub struct FrontDoor {
    pub shared: Arc<Shared>,
    /// The browser page, made for this server's limits.
    pub page: Page,
    /// The operator's dashboard, and when the server started, which it says.
    pub admin_page: Page,
    pub started: std::time::Instant,
    /// With `--jwt-secret` or a JWKS: what checks each chat client's token.
    pub tokens: Option<Tokens>,
    /// With `--tls-cert`: the certificate every connection is accepted with.
    pub tls: Option<Arc<tls::Tls>>,
    /// One permit per WebSocket session, `config.max_connections` in all.
    pub sessions: Arc<Semaphore>,
    pub addresses: Arc<Addresses>,
    /// Each HTTP API credential's rate.
    pub api_rates: operators::ApiRates,
}

/// The most bytes of request line and headers we buffer (hyper's minimum is 8 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;

type Body = Full<Bytes>;

/// Serves one TCP connection (after its TLS handshake, with `--tls-cert`): HTTP
/// requests until it upgrades to a WebSocket or ends.
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, door: Arc<FrontDoor>) {
    let config = &door.shared.config;
    let caps = PendingCaps {
        per_address: config.max_pending_connections_per_ip,
        total: config.max_pending_connections,
    };
    // Held until the connection upgrades (this future then ends, the session going on
    // in a task of its own) or closes.
    let _waiting = match door.addresses.wait(peer.ip().to_canonical(), caps) {
        Ok(slot) => slot,
        Err(crowded) => return refuse_crowded(stream, crowded, &door),
    };
    let shutdown = door.shared.shutdown.clone();
    let metrics = door.shared.metrics.clone();
    let handshake_timeout = door.shared.config.handshake_timeout;
    // Whether the client reached us over loopback, so is on this machine.
    let local = stream
        .local_addr()
        .is_ok_and(|local| local.ip().to_canonical().is_loopback());
    let client = Client { peer, local };
    let stream = match &door.tls {
        None => Transport::Tcp(stream),
        Some(tls) => {
            let accepted = tokio::select! {
                accepted = tokio::time::timeout(handshake_timeout, accept_tls(stream, tls, &door)) => accepted,
                () = shutdown.cancelled() => return,
            };
            match accepted {
                Ok(Some(tls)) => Transport::Tls(Box::new(tls)),
                Ok(None) => return,
                Err(_) => {
                    metrics.refused(Refusal::Timeout);
                    return;
                }
            }
        }
    };
    let service = service_fn(move |request| {
        let door = door.clone();
        async move { Ok::<_, Infallible>(respond(request, client, &door).await) }
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

/// Refuses a connection past the caps on connections not yet upgraded: a plain 503
/// when the listener speaks plain HTTP, then the connection is closed at once.
///
/// Written without waiting, into the empty send buffer of a new connection, and
/// without reading the request or lingering: holding a refused connection open would
/// spend the descriptors the cap is there to save. A request already sent may make the
/// close a reset that loses the answer; the connection is refused either way.
fn refuse_crowded(stream: TcpStream, crowded: Crowded, door: &FrontDoor) {
    let (reason, body) = match crowded {
        Crowded::Address(most) => (
            Refusal::PerIpPending,
            format!(
                "too many connections from your address waiting for their handshake (at \
                 most {most}); ask the operator about --max-pending-connections-per-ip\n"
            ),
        ),
        Crowded::Server(most) => (
            Refusal::PendingFull,
            format!(
                "the server has too many connections waiting for their handshake (at most \
                 {most}); try again later\n"
            ),
        ),
    };
    door.shared.metrics.refused(reason);
    debug!(
        reason = reason.label(),
        "refused a connection before its request"
    );
    if door.tls.is_none() {
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.try_write(response.as_bytes());
    }
}

/// The TLS handshake, or, for a client that spoke plain HTTP to the TLS port, a plain
/// 400 that says to use https:// and wss://.
async fn accept_tls(
    mut stream: TcpStream,
    tls: &tls::Tls,
    door: &FrontDoor,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    let peeked = stream.peek(&mut first).await.ok()?;
    if peeked == 0 {
        return None;
    }
    if first[0] != tls::HANDSHAKE_RECORD {
        door.shared.metrics.refused(Refusal::NotTls);
        let _ = stream.write_all(&tls::plain_http_refusal()).await;
        connection::linger(stream).await;
        return None;
    }
    match tls.acceptor().accept(stream).await {
        Ok(accepted) => Some(accepted),
        Err(error) => {
            door.shared.metrics.refused(Refusal::TlsHandshake);
            debug!(%error, "TLS handshake failed");
            None
        }
    }
}

/// Where a request came from.
#[derive(Clone, Copy)]
struct Client {
    peer: SocketAddr,
    /// Reached us through a loopback address.
    local: bool,
}

async fn respond(
    request: Request<Incoming>,
    client: Client,
    door: &Arc<FrontDoor>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let peer = client.peer;
    let response = match check_host(request.headers(), &door.shared.config.allowed_hosts) {
        Err(refused) => Err(refused),
        Ok(()) => route(request, &path, client, door).await,
    };
    response.unwrap_or_else(|Refused { reason, response }| {
        door.shared.metrics.refused(reason);
        debug!(%peer, %path, reason = reason.label(), "refused a request");
        *response
    })
}

async fn route(
    request: Request<Incoming>,
    path: &str,
    client: Client,
    door: &Arc<FrontDoor>,
) -> Result<Response<Body>, Refused> {
    Ok(match path {
        "/" => page(request.method(), request.headers(), &door.page),
        "/admin" => page(request.method(), request.headers(), &door.admin_page),
        "/healthz" => health(request.method(), door),
        "/metrics" => {
            let metrics = door.shared.metrics.render();
            plain_get(request.method(), "text/plain; version=0.0.4", &metrics)
        }
        "/echo" if door.shared.config.echo => {
            upgrade(request, Endpoint::Echo, client, door).await?
        }
        "/ws" => return Err(refuse_id(chat::InvalidId::Empty)),
        api::TICKETS => api::ticket(&request, client, door).await?,
        _ if operators::handles(path) => operators::serve(request, path, door).await?,
        _ if path.starts_with(api::PREFIX) => api::serve(&request, path, client, door).await?,
        _ => match path.strip_prefix("/ws/") {
            Some(raw_id) => {
                let id = ClientId::parse(raw_id).map_err(refuse_id)?;
                let seat = seat(&request, id, door).await?;
                upgrade(request, Endpoint::Chat(seat), client, door).await?
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    })
}

/// Refuses a request whose `Host` is a name this server was not told it has. A web page
/// can make a browser send requests to any address under a name its attacker controls
/// (DNS rebinding), but it cannot make the browser send another `Host`.
fn check_host(headers: &HeaderMap, allowed_hosts: &[String]) -> Result<(), Refused> {
    let Some(host) = headers.get(header::HOST) else {
        // Not a browser, which always sends one.
        return Ok(());
    };
    let name = host.to_str().ok().map(|host| split_host(host).0);
    if name.is_some_and(|name| host_allowed(name, allowed_hosts)) {
        return Ok(());
    }
    let shown = String::from_utf8_lossy(host.as_bytes());
    let body = format!(
        "host {shown:?} is not served here: this server answers to IP addresses and \
         localhost; start it with --allowed-host NAME to serve another name\n"
    );
    Err(refused(Refusal::Host, text(StatusCode::FORBIDDEN, &body)))
}

/// A `Host` header's name and port: `[::1]:80` is `::1` and 80, `example.org` is
/// `example.org` and no port.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(bracketed) = host.strip_prefix('[') {
        let (name, rest) = bracketed.split_once(']').unwrap_or((bracketed, ""));
        return (
            name,
            rest.strip_prefix(':').and_then(|port| port.parse().ok()),
        );
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (name, port.parse().ok()),
        _ => (host, None),
    }
}

/// IP literals, `localhost` and its subdomains (which browsers resolve to loopback
/// themselves), and the names listed, where `*` allows all.
fn host_allowed(name: &str, allowed: &[String]) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let lowercase = name.to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok()
        || lowercase == "localhost"
        || lowercase.ends_with(".localhost")
        || allowed
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(name))
}

/// 200 `ok`, or 503 with the reason while a clustered node cannot reach Redis or the
/// history cannot be written.
fn health(method: &Method, door: &FrontDoor) -> Response<Body> {
    match unavailable(&door.shared) {
        None => plain_get(method, "text/plain; charset=utf-8", "ok\n"),
        Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}\n")),
    }
}

/// Why the node cannot serve clients now, in a fixed phrase: anyone may ask, so what
/// went wrong in detail (a Redis or SQLite error, a path) is for the log only.
fn unavailable(shared: &Shared) -> Option<&'static str> {
    shared.unavailable()?;
    let redis_down = shared
        .cluster_health
        .as_ref()
        .is_some_and(|health| matches!(*health.borrow(), Health::Down(_)));
    Some(if redis_down {
        "cannot reach Redis"
    } else {
        "cannot write the history"
    })
}

/// The page, with the headers that keep it to itself (see `page`); 304 when the
/// browser's copy is current.
fn page(method: &Method, request: &HeaderMap, page: &Page) -> Response<Body> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return method_not_allowed();
    }
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|tags| tags.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == page.etag));
    let (status, body) = if current {
        (StatusCode::NOT_MODIFIED, Body::default())
    } else {
        (StatusCode::OK, Body::from(page.body.clone()))
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::ETAG, &page.etag)
        .header(
            header::CONTENT_SECURITY_POLICY,
            &page.content_security_policy,
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .body(body)
        .expect("static response parts are valid")
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
    Chat(Seat),
    Echo,
}

/// Who a chat connection is, where it goes, and how it speaks, from its request.
struct Seat {
    who: Who,
    room: RoomName,
    protocol: Protocol,
    resume: Option<Resume>,
}

/// Reads `?room=`, `?since=`, `?epoch=`, the subprotocol the client asks for, and who
/// it is: its token (`?token=` or `Authorization: Bearer`) or a ticket for it
/// (`?ticket=`) with `--jwt-secret` or a JWKS, else the `?name=` it claims.
async fn seat(
    request: &Request<Incoming>,
    id: ClientId,
    door: &FrontDoor,
) -> Result<Seat, Refused> {
    let mut room = RoomName::default();
    let (mut since, mut epoch, mut token, mut ticket, mut name) = (None, None, None, None, None);
    let query = request.uri().query().unwrap_or("");
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "room" => room = RoomName::parse(&value).map_err(refuse_room)?,
            "since" => since = Some(value.into_owned()),
            "epoch" => epoch = Some(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            "ticket" => ticket = Some(value.into_owned()),
            "name" => name = Some(value.into_owned()),
            // Anything else (a cache buster, a token for a proxy) is not ours to judge.
            _ => {}
        }
    }
    let resume = match (since, epoch) {
        (None, None) => None,
        (Some(since), Some(epoch)) => match since.parse() {
            Ok(since) => Some(Resume { since, epoch }),
            Err(_) => return Err(refuse_resume("since must be an offset, 0 or more")),
        },
        _ => return Err(refuse_resume("since and epoch go together")),
    };
    check_direct(&room, &id)?;
    if room.as_str() == SERVER_ROOM {
        let body = "invalid room name: _server is the server's own; choose another\n";
        return Err(refused(
            Refusal::InvalidRoom,
            text(StatusCode::FORBIDDEN, body),
        ));
    }
    // The richest protocol the client asks for.
    let asks_for = |name| has_token(request.headers(), header::SEC_WEBSOCKET_PROTOCOL, name);
    let protocol = if asks_for(v2::SUBPROTOCOL) {
        Protocol::V2
    } else if asks_for(v1::SUBPROTOCOL) {
        Protocol::V1
    } else {
        Protocol::Plain
    };
    let (name, token_role) = match &door.tokens {
        Some(tokens) => match (bearer(request.headers()).or(token.as_deref()), ticket) {
            (Some(token), _) => {
                let verified = tokens
                    .verify_for(token, &id, door.shared.config.max_token_ttl)
                    .await
                    .map_err(refuse_token)?;
                let role = identity::Grants::of(&verified).role_in(room.as_str());
                (verified.name, role)
            }
            // A browser's: its token stays out of the URL (POST /api/v1/tickets). A
            // ticket carries the token's id, name and roles.
            (None, Some(ticket)) => {
                let redeemed = tokens.redeem(&ticket, &id).map_err(refuse_token)?;
                (redeemed.name, redeemed.grants.role_in(room.as_str()))
            }
            (None, None) => return Err(refuse_token(TokenRefusal::Missing)),
        },
        None => {
            // The HTTP API's operator speaks as #0: without tokens, nobody else may
            // claim it (with tokens, only a token for id 0 does).
            if id.as_str() == OPERATOR_ID && !door.shared.config.api_keys.is_empty() {
                let body = "invalid client id: 0 is the operator's (the HTTP API speaks as \
                            #0); connect as another id, for example /ws/42\n";
                return Err(refused(
                    Refusal::InvalidId,
                    text(StatusCode::FORBIDDEN, body),
                ));
            }
            let name = name
                .map(|name| DisplayName::parse(&name))
                .transpose()
                .map_err(refuse_name)?;
            (name, Role::Member)
        }
    };
    let operator_role = match door.shared.config.admins.contains(&id) {
        true => Role::Admin,
        false => Role::Member,
    };
    Ok(Seat {
        who: Who {
            id,
            name,
            role: token_role.max(operator_role),
        },
        room,
        protocol,
        resume,
    })
}

/// The id an operator's API key acts as.
pub const OPERATOR_ID: &str = "0";

/// The token in an `Authorization: Bearer` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// 401 for a token that is missing or not good (with the challenge RFC 6750 asks for),
/// 403 for a good token that is not for this id or names its holder badly.
fn refuse_token(why: TokenRefusal) -> Refused {
    let (reason, status, challenge) = token_answer(&why);
    let mut response = text(status, &format!("{why}\n"));
    if let Some(challenge) = challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    refused(reason, response)
}

/// How a refused token (or ticket) is answered: the reason the metrics count, the
/// status, and for a 401 its `WWW-Authenticate` challenge.
fn token_answer(why: &TokenRefusal) -> (Refusal, StatusCode, Option<&'static str>) {
    let (reason, status) = match why {
        TokenRefusal::Missing => (Refusal::TokenMissing, StatusCode::UNAUTHORIZED),
        TokenRefusal::Expired | TokenRefusal::NotYet | TokenRefusal::TicketExpired => {
            (Refusal::TokenExpired, StatusCode::UNAUTHORIZED)
        }
        TokenRefusal::Invalid(_)
        | TokenRefusal::TooLong(_)
        | TokenRefusal::Critical(_)
        | TokenRefusal::TicketSpent
        | TokenRefusal::TicketInvalid(_) => (Refusal::TokenInvalid, StatusCode::UNAUTHORIZED),
        TokenRefusal::OtherId { .. } => (Refusal::TokenOtherId, StatusCode::FORBIDDEN),
        TokenRefusal::BadName(_) => (Refusal::InvalidName, StatusCode::FORBIDDEN),
    };
    let challenge = match reason {
        _ if status != StatusCode::UNAUTHORIZED => None,
        Refusal::TokenMissing => Some("Bearer realm=\"chat\""),
        _ => Some("Bearer realm=\"chat\", error=\"invalid_token\""),
    };
    (reason, status, challenge)
}

fn refuse_name(error: v1::InvalidName) -> Refused {
    let body = format!(
        "invalid name: {error}\n{rules}; for example /ws/42?name=Ada\n",
        rules = v1::NAME_RULES
    );
    refused(Refusal::InvalidName, text(StatusCode::FORBIDDEN, &body))
}

/// Refuses a direct-message room to anyone but its two ids, and a `dm.` name that is
/// not one: 403, as for any room name that cannot be used.
fn check_direct(room: &RoomName, id: &ClientId) -> Result<(), Refused> {
    match v2::direct_members(room) {
        None => Ok(()),
        Some(Ok((first, second))) if *id == first || *id == second => Ok(()),
        Some(Ok((first, second))) => {
            let body = format!(
                "this direct-message room is for #{first} and #{second} only; \
                 yours with #{first} is {}\n",
                v2::direct_room(id, &first).map_or_else(
                    || "too long a name for a room".to_owned(),
                    |room| room.to_string()
                )
            );
            Err(refused(
                Refusal::NotYourRoom,
                text(StatusCode::FORBIDDEN, &body),
            ))
        }
        Some(Err(())) => {
            let body = format!("invalid room name: {}\n", v2::DIRECT_RULES);
            Err(refused(
                Refusal::InvalidRoom,
                text(StatusCode::FORBIDDEN, &body),
            ))
        }
    }
}

fn refuse_room(error: v1::InvalidRoom) -> Refused {
    let body = format!(
        "invalid room name: {error}\n{rules}; for example /ws/42?room=ops\n",
        rules = v1::ROOM_RULES
    );
    refused(Refusal::InvalidRoom, text(StatusCode::FORBIDDEN, &body))
}

fn refuse_resume(why: &str) -> Refused {
    let body = format!(
        "invalid resume: {why}; resume with ?since=<offset>&epoch=<epoch> from the events \
         and the welcome you received\n"
    );
    refused(Refusal::InvalidResume, text(StatusCode::BAD_REQUEST, &body))
}

/// Answers the WebSocket handshake and hands the upgraded socket to a new session.
async fn upgrade(
    mut request: Request<Incoming>,
    endpoint: Endpoint,
    client: Client,
    door: &Arc<FrontDoor>,
) -> Result<Response<Body>, Refused> {
    let peer = client.peer;
    let accept = check_handshake(&request, client, &door.shared.config.allowed_origins)?;
    if let Some(reason) = unavailable(&door.shared) {
        let body = format!("the chat is unavailable: {reason}; try again later\n");
        return Err(refused(
            Refusal::Unavailable,
            text(StatusCode::SERVICE_UNAVAILABLE, &body),
        ));
    }
    let mut address_slot = door
        .addresses
        .admit(peer.ip().to_canonical())
        .map_err(refuse_address)?;
    if let Endpoint::Chat(seat) = &endpoint {
        address_slot
            .enter(&seat.room, door.shared.config.max_rooms_per_ip)
            .map_err(refuse_address)?;
    }
    let Ok(slot) = door.sessions.clone().try_acquire_owned() else {
        let body = format!(
            "the server is full ({} connections); try again later\n",
            door.shared.config.max_connections
        );
        return Err(refused(
            Refusal::Full,
            text(StatusCode::SERVICE_UNAVAILABLE, &body),
        ));
    };
    let seated = match endpoint {
        Endpoint::Chat(seat) => match door.shared.rooms.get(&seat.room).await {
            Ok(room) => Some((seat, room)),
            Err(unavailable) => {
                let (reason, body) = match unavailable {
                    Unavailable::TooManyRooms => {
                        (Refusal::TooManyRooms, format!("{unavailable}\n"))
                    }
                    // The store's error is for the log, not for whoever asked.
                    Unavailable::History(error) => {
                        warn!(%peer, %error, "cannot read a room's history");
                        (
                            Refusal::Unavailable,
                            "cannot read the room's history; try again later\n".to_owned(),
                        )
                    }
                };
                return Err(refused(
                    reason,
                    text(StatusCode::SERVICE_UNAVAILABLE, &body),
                ));
            }
        },
        Endpoint::Echo => None,
    };
    if let Some((seat, room)) = &seated {
        // A newcomer's welcome and history come from the room as Redis has it.
        if !door.shared.rooms.load_from_cluster(room).await {
            return Err(refused(
                Refusal::Unavailable,
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot load the room from Redis; try again later\n",
                ),
            ));
        }
        // The room's bans, as its log and the store (or Redis) have them, and the
        // server's.
        if let Some(ban) = room.ban_of(&seat.who.id) {
            return Err(refuse_banned(&seat.who.id, room.name(), &ban));
        }
        if let Some(ban) = server_ban(&seat.who.id, door).await? {
            let body = ban.banned_words(&seat.who.id, None) + "\n";
            info!(id = %seat.who.id, "refused an id banned from the server");
            return Err(refused(Refusal::Banned, text(StatusCode::FORBIDDEN, &body)));
        }
    }
    let protocol = seated.as_ref().map(|(seat, _)| seat.protocol);

    let on_upgrade = hyper::upgrade::on(&mut request);
    let shared = door.shared.clone();
    let tasks = door.shared.tasks.clone();
    door.shared.tasks.spawn(async move {
        let slots = (slot, address_slot);
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                warn!(%peer, %error, "websocket upgrade failed");
                return;
            }
        };
        // Back to the connection itself: the session splits it into a read half for
        // tungstenite and a write half for its writer.
        let hyper::upgrade::Parts { io, read_buf, .. } =
            match upgraded.downcast::<TokioIo<Transport>>() {
                Ok(parts) => parts,
                Err(_) => {
                    warn!(%peer, "upgraded connection is not ours");
                    return;
                }
            };
        // A copy, and the view dropped: `read_buf` shares hyper's whole 8 KiB read
        // buffer, which would otherwise live as long as the session.
        let already_read = read_buf.to_vec();
        drop(read_buf);
        let transport = io.into_inner();
        // The session runs in a task of its own, and this one ends: a future keeps
        // room for every variable it ever held, so what the upgrade needed (the seat,
        // hyper's parts) would otherwise stay beside the session's future for as long
        // as the connection lasts, about 600 bytes of each.
        match seated {
            Some((seat, room)) => {
                let member = room.join(seat.who, seat.protocol, seat.resume.as_ref());
                tasks.spawn(connection::serve(
                    transport,
                    already_read,
                    member,
                    peer,
                    shared,
                    slots,
                ));
            }
            None => {
                tasks.spawn(connection::echo(
                    transport,
                    already_read,
                    peer,
                    shared,
                    slots,
                ));
            }
        }
    });

    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(subprotocol) = protocol.and_then(Protocol::subprotocol) {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, subprotocol);
    }
    Ok(response
        .body(Body::default())
        .expect("handshake response parts are valid"))
}

/// `id`'s server-wide ban, if it has one: from the server's own room, loaded (from the
/// store, or Redis) on first use.
async fn server_ban(id: &ClientId, door: &FrontDoor) -> Result<Option<Sanction>, Refused> {
    let name = RoomName::parse(SERVER_ROOM).expect("a room name");
    let unavailable = || {
        refused(
            Refusal::Unavailable,
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the server's bans; try again later\n",
            ),
        )
    };
    let room = door
        .shared
        .rooms
        .get(&name)
        .await
        .map_err(|_| unavailable())?;
    if !door.shared.rooms.load_from_cluster(&room).await {
        return Err(unavailable());
    }
    Ok(room.ban_of(id))
}

/// 403 for a banned id: that it is banned, until when, and why.
fn refuse_banned(id: &ClientId, room: &RoomName, ban: &Sanction) -> Refused {
    let body = ban.banned_words(id, Some(room)) + "\n";
    info!(%id, %room, "refused a banned id");
    refused(Refusal::Banned, text(StatusCode::FORBIDDEN, &body))
}

fn refuse_address(why: addresses::Refused) -> Refused {
    match why {
        addresses::Refused::TooManySessions(max) => {
            let body = format!(
                "too many connections from your address (at most {max}); \
                 close one, or ask the operator about --max-connections-per-ip\n"
            );
            refused(
                Refusal::PerIpConnections,
                text(StatusCode::SERVICE_UNAVAILABLE, &body),
            )
        }
        addresses::Refused::TooFast(wait) => {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let body = format!(
                "too many connection attempts from your address; try again in {seconds} s\n"
            );
            let mut response = text(StatusCode::TOO_MANY_REQUESTS, &body);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            refused(Refusal::PerIpRate, response)
        }
        addresses::Refused::RoomLimit(max) => {
            let body = format!(
                "too many rooms from your address (at most {max} at once); leave one, or \
                 ask the operator about --max-rooms-per-ip\n"
            );
            refused(
                Refusal::PerIpRooms,
                text(StatusCode::SERVICE_UNAVAILABLE, &body),
            )
        }
    }
}

/// Checks a WebSocket handshake request; returns the `Sec-WebSocket-Accept` value.
fn check_handshake(
    request: &Request<Incoming>,
    client: Client,
    allowed_origins: &[String],
) -> Result<String, Refused> {
    let headers = request.headers();
    if request.version() < Version::HTTP_11 {
        // RFC 6455 §4.1; hyper would not upgrade such a connection anyway.
        let response = text(
            StatusCode::BAD_REQUEST,
            "WebSocket handshakes need HTTP/1.1 or later\n",
        );
        return Err(refused(Refusal::HttpVersion, response));
    }
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
    if !origin_allowed(origin, host, client.local, allowed_origins) {
        let body = "cross-origin WebSocket requests are refused; \
                    the server's --allowed-origin flag can allow this origin\n";
        return Err(refused(Refusal::Origin, text(StatusCode::FORBIDDEN, body)));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The origin policy against cross-site WebSocket hijacking. Allowed: no `Origin` (not
/// a browser), an origin whose host and port are the ones the request was sent to (the
/// page this server served), the origins in `allowed`, where `*` allows all, and, from
/// a client on this machine (`local`), `null` and `file://`, which a page opened from
/// disk sends. A sandboxed iframe on any web site also sends `null`, which is why a
/// server reached over the network refuses it unless `null` is listed.
fn origin_allowed(
    origin: Option<&[u8]>,
    host: Option<&[u8]>,
    local: bool,
    allowed: &[String],
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    if allowed
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    if origin == "null" || origin == "file://" {
        return local;
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
    let (host_name, host_port) = split_host(host);
    // An IPv6 origin is bracketed (`[::1]`), as the name `split_host` gives is not.
    let origin_host = origin_host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(origin_host);
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
        origin_allowed(
            origin.map(str::as_bytes),
            Some(host.as_bytes()),
            true,
            &extra,
        )
    }

    fn allowed_from_afar(origin: &str, extra: &[&str]) -> bool {
        let extra: Vec<String> = extra.iter().map(|origin| (*origin).to_owned()).collect();
        origin_allowed(
            Some(origin.as_bytes()),
            Some(b"chat.example.org"),
            false,
            &extra,
        )
    }

    #[test]
    fn pages_from_disk_are_allowed_only_from_this_machine_unless_listed() {
        assert!(allowed(Some("file://"), "localhost:8000", &[]));
        assert!(!allowed_from_afar("null", &[]));
        assert!(!allowed_from_afar("file://", &[]));
        assert!(allowed_from_afar("null", &["null"]));
        assert!(allowed_from_afar("null", &["*"]));
        assert!(allowed_from_afar("https://chat.example.org", &[]));
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed() {
        let listed = ["chat.example.org".to_owned()];
        for host in [
            "127.0.0.1:8000",
            "10.1.2.3",
            "[::1]:8000",
            "localhost:8000",
            "LocalHost",
            "app.localhost:8000",
            "localhost.",
            "chat.example.org:443",
            "CHAT.example.org",
        ] {
            assert!(host_allowed(split_host(host).0, &listed), "{host}");
        }
        for host in [
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8000",
            "",
        ] {
            assert!(!host_allowed(split_host(host).0, &listed), "{host}");
        }
        assert!(host_allowed(
            split_host("anything.example").0,
            &["*".to_owned()]
        ));
        assert_eq!(split_host("[::1]:8000"), ("::1", Some(8000)));
        assert_eq!(split_host("example.org:443"), ("example.org", Some(443)));
        assert_eq!(split_host("example.org"), ("example.org", None));
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
