//! The HTTP read API, for bots and exports: a room's events a page at a time, and
//! search, as v2 clients get them over the WebSocket.
//!
//! - `GET /api/v1/rooms/{room}/events?before=O|after=O&limit=L`
//! - `GET /api/v1/rooms/{room}/search?q=WORDS[&before=O]&limit=L`
//!
//! - `POST /api/v1/tickets` with `Authorization: Bearer <token>`: a ticket that opens
//!   one WebSocket (`/ws/<id>?ticket=`) as the token's id and name, within 30 s, so
//!   that a browser never puts its token in a URL.
//!
//! The reads answer `{"type":"history"|"search","events":[...],"more":bool}`, or an error
//! as `{"type":"error","code":C,"message":M}` with a matching status. The identity rules
//! are the WebSocket's: with `--jwt-secret` a bearer token is required, and a
//! direct-message room is readable only by its two ids. Each request counts against
//! its address's handshake rate (`--handshake-rate-per-ip`).

use chat::ClientId;
use chat::v1::RoomName;
use chat::v2;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::{
    Body, Client, FrontDoor, Refused, bearer, refuse_address, refuse_token, refused, token_answer,
};
use crate::identity::TokenRefusal;
use crate::metrics::Refusal;
use crate::session::history::{self, Query};

/// The WebSocket's refusal of a token, as the API's JSON error whose code is the
/// metrics' name for it.
pub(super) fn refuse_token_as_json(why: TokenRefusal) -> Refused {
    let (reason, status, challenge) = token_answer(&why);
    let mut response = error(status, reason.label(), &why.to_string());
    if let Some(challenge) = challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    refused(reason, response)
}

/// Where the API's paths start.
pub const PREFIX: &str = "/api/v1/rooms/";

/// Where a token is traded for a ticket.
pub const TICKETS: &str = "/api/v1/tickets";

/// Answers `POST /api/v1/tickets`: `{"ticket":T,"expires_in":S}` for a good bearer
/// token, else an error whose `code` says why (`token_expired`, `token_invalid`,
/// `token_missing`, `token_other_id`, `invalid_name`), as the metrics count it.
pub async fn ticket(
    request: &Request<Incoming>,
    client: Client,
    door: &FrontDoor,
) -> Result<Response<Body>, Refused> {
    if request.method() != Method::POST {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "invalid", "use POST");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    // Each ticket is a handshake to come: it counts against its address's rate now.
    drop(
        door.addresses
            .admit(client.peer.ip().to_canonical())
            .map_err(refuse_address)?,
    );
    let Some(tokens) = &door.tokens else {
        let message = "this server does not check tokens: connect to /ws/<id> without one";
        return Ok(error(StatusCode::NOT_FOUND, "no_tokens", message));
    };
    let refuse = refuse_token_as_json;
    let token = bearer(request.headers()).ok_or_else(|| refuse(TokenRefusal::Missing))?;
    let max_ttl = door.shared.config.max_token_ttl;
    let holder = tokens.verify(token, max_ttl).await.map_err(refuse)?.id;
    let ticket = tokens
        .ticket(token, &holder, max_ttl)
        .await
        .map_err(refuse)?;
    let mut response = json_response(
        StatusCode::OK,
        serde_json::to_vec(&ticket).expect("a ticket serializes"),
    );
    // A ticket is good once: nothing on the way should keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Serves one API request whose path starts with [`PREFIX`].
pub async fn serve(
    request: &Request<Incoming>,
    path: &str,
    client: Client,
    door: &FrontDoor,
) -> Result<Response<Body>, Refused> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        // In JSON, as the API's other errors are.
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid",
            "the read API takes GET (or HEAD)",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    // A read counts as a handshake against its address's rate; it holds no place.
    drop(
        door.addresses
            .admit(client.peer.ip().to_canonical())
            .map_err(refuse_address)?,
    );
    let rest = &path[PREFIX.len()..];
    let Some((room, what)) = rest.split_once('/') else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "invalid",
            "use /api/v1/rooms/{room}/events or /search",
        ));
    };
    let room = match RoomName::parse(room) {
        Ok(room) => room,
        Err(why) => {
            let message = format!("invalid room name: {why}; {}", chat::v1::ROOM_RULES);
            return Err(refused(
                Refusal::InvalidRoom,
                error(StatusCode::BAD_REQUEST, "invalid", &message),
            ));
        }
    };
    if room.as_str() == crate::room::SERVER_ROOM {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "no_such_room",
            "_server is the server's own room: its bans are not read here",
        ));
    }
    let reader = check_reader(request, &room, door).await?;
    let nonce: Option<&str> = None;
    let params = Params::read(request.uri().query().unwrap_or(""));
    let query = match what {
        "events" => params.numbers().and_then(|(before, after, limit)| {
            Query::page(before, after, limit, nonce).map_err(|error| error.message)
        }),
        "search" => params.numbers().and_then(|(before, after, limit)| {
            if after.is_some() {
                return Err("search pages back: use before".to_owned());
            }
            Query::search(params.q.as_deref().unwrap_or(""), before, limit, nonce)
                .map_err(|error| error.message)
        }),
        _ => {
            return Ok(error(
                StatusCode::NOT_FOUND,
                "invalid",
                "use /events or /search",
            ));
        }
    };
    let query = match query {
        Ok(query) => query,
        Err(message) => return Ok(error(StatusCode::BAD_REQUEST, "invalid", &message)),
    };
    let Some(room) = door.shared.rooms.existing(&room).await else {
        let message = format!("there is no room {room} here");
        return Ok(error(StatusCode::NOT_FOUND, "no_such_room", &message));
    };
    // A banned reader reads no more than it could over a WebSocket.
    if let Some(reader) = &reader {
        let banned = match room.ban_of(reader) {
            Some(ban) => Some(ban.banned_words(reader, Some(room.name()))),
            None => super::server_ban(reader, door)
                .await?
                .map(|ban| ban.banned_words(reader, None)),
        };
        if let Some(message) = banned {
            return Ok(error(StatusCode::FORBIDDEN, "banned", &message));
        }
    }
    Ok(match history::answer(&room, query, nonce).await {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(failed) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &failed.message,
        ),
    })
}

/// With `--jwt-secret` or a JWKS, the reader must show a good token, whose id is
/// returned; a direct-message room is for its two ids only.
async fn check_reader(
    request: &Request<Incoming>,
    room: &RoomName,
    door: &FrontDoor,
) -> Result<Option<ClientId>, Refused> {
    // The operator's API key reads any room.
    if bearer(request.headers()).is_some_and(|key| door.shared.config.api_keys.holds(key)) {
        return Ok(None);
    }
    let Some(tokens) = &door.tokens else {
        // Over HTTP nobody even claims an id: without tokens, a direct-message room is
        // not for reading here at all.
        if v2::direct_members(room).is_some() {
            let message = "direct-message rooms are read over HTTP only on a server with \
                           --jwt-secret, with a token for one of their two ids";
            return Err(refused(
                Refusal::NotYourRoom,
                error(StatusCode::FORBIDDEN, "forbidden", message),
            ));
        }
        return Ok(None);
    };
    let token = bearer(request.headers()).ok_or_else(|| refuse_token(TokenRefusal::Missing))?;
    let holder = tokens
        .verify(token, door.shared.config.max_token_ttl)
        .await
        .map_err(refuse_token)?
        .id;
    match v2::direct_members(room) {
        Some(Ok((first, second))) if holder != first && holder != second => {
            let message = format!("this direct-message room is for #{first} and #{second} only");
            Err(refused(
                Refusal::NotYourRoom,
                error(StatusCode::FORBIDDEN, "forbidden", &message),
            ))
        }
        _ => Ok(Some(holder)),
    }
}

/// The query string's parameters, as text.
#[derive(Default)]
struct Params {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
    q: Option<String>,
}

impl Params {
    fn read(query: &str) -> Self {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = Some(value.into_owned());
            match &*key {
                "before" => params.before = value,
                "after" => params.after = value,
                "limit" => params.limit = value,
                "q" => params.q = value,
                _ => {}
            }
        }
        params
    }

    /// `before`, `after` and `limit` (50 when not given) as integers.
    fn numbers(&self) -> Result<(Option<i64>, Option<i64>, i64), String> {
        let number = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|text| {
                    // However large, saturated: one past 64 bits is out of range
                    // (answered as such below), not "not an integer".
                    let digits = text.strip_prefix('-').unwrap_or(text);
                    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                        return Err(format!("{name} is an integer, not {text:?}"));
                    }
                    Ok(text.parse::<i64>().unwrap_or(if text.starts_with('-') {
                        i64::MIN
                    } else {
                        i64::MAX
                    }))
                })
                .transpose()
        };
        let limit = number("limit", &self.limit)?.unwrap_or(50);
        Ok((
            number("before", &self.before)?,
            number("after", &self.after)?,
            limit,
        ))
    }
}

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error answer: `{"type":"error","code":..,"message":..}`, in that order, as the
/// WebSocket's error frames have it.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let body = format!(
        r#"{{"type":"error","code":{},"message":{}}}"#,
        quoted(code),
        quoted(message)
    );
    json_response(status, body.into_bytes())
}
