//! The HTTP API's writes and lists, for bots and operators (issue 31): the rooms with
//! their member counts, a room's members, kicks and bans. Each request carries
//! `Authorization: Bearer` with an operator's API key (`--api-key-file`, an admin's
//! rights, acting as client id 0) or a token (`--jwt-secret`) whose claims make it a
//! bot, an admin or a moderator of the room; each credential has its own rate
//! (`--api-rate`). Missing or bad credentials: 401; not allowed: 403; too fast: 429.
//!
//! - `POST /api/v1/rooms/{room}/messages` `{"text":T,"nonce":N}` -> `{"offset":O}`:
//!   the same nonce from the same sender again answers the same offset, posting
//!   nothing (as long as the room's history in memory holds the message).
//! - `GET /api/v1/rooms` -> `[{"room":R,"members":K}, ...]`
//! - `GET /api/v1/rooms/{room}/members` -> `[{"id":I,"name":N?,"role":R}, ...]`
//! - `DELETE /api/v1/rooms/{room}/members/{id}` `{"reason":R?}` (kick) -> 204
//! - `PUT /api/v1/rooms/{room}/bans/{id}` `{"seconds":S?,"reason":R?}` -> 204
//! - `DELETE /api/v1/rooms/{room}/bans/{id}` -> 204
//! - `GET /api/v1/rooms/{room}/bans` -> `[{"id":I,"until":MS?,"reason":R?}, ...]`
//! - `PUT` and `DELETE /api/v1/rooms/{room}/mutes/{id}` `{"seconds":S?}` -> 204
//! - `PUT /api/v1/rooms/{room}/roles/{id}` `{"role":"moderator"|"member"}` -> 204
//! - `PUT /api/v1/rooms/{room}/topic` `{"text":T}` -> 204
//! - `DELETE /api/v1/rooms/{room}/messages/{offset}` -> 204
//! - `PUT` and `DELETE /api/v1/bans/{id}` (admins only): a server-wide ban, kept as the
//!   bans of the server's own room (`SERVER_ROOM`), checked at every handshake; every
//!   node that hears of it closes the member's connections in every room (4003).
//! - `GET /api/v1/bans` (admins only) -> the server-wide bans, as a room's are listed.
//! - `GET /api/v1/openapi.json`: the OpenAPI document of the whole API.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use chat::ClientId;
use chat::v1::{Role, RoomName};
use chat::v2;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::api::{error, json_response, refuse_token_as_json};
use super::{Body, FrontDoor, Refused, bearer, refused};
use crate::config::RateLimit;
use crate::identity::{self, TokenRefusal};
use crate::metrics::Refusal;
use crate::room::{Posting, SERVER_ROOM, Who};

/// The OpenAPI 3 document of `/api/v1/`, served as it is in the repository.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Where it is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Where the rooms are listed.
pub const ROOMS: &str = "/api/v1/rooms";

/// The most bytes of a request body read, but a message's: a moderator's reason or a
/// duration is short.
const MAX_BODY_BYTES: usize = 4096;

/// The most credentials whose rate is remembered: past it, those idle longest go.
const MAX_METERED: usize = 10_000;

/// Each credential's token bucket: tokens left, and when last filled.
#[derive(Default)]
pub struct ApiRates {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl ApiRates {
    /// Takes one request from `credential`'s bucket; when it is empty, how many
    /// seconds until it holds one.
    fn take(&self, credential: &str, rate: RateLimit) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if buckets.len() >= MAX_METERED && !buckets.contains_key(credential) {
            let full = f64::from(rate.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate.per_second < full
            });
        }
        let (tokens, at) = buckets
            .entry(credential.to_owned())
            .or_insert((f64::from(rate.burst), now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate.per_second)
            .min(f64::from(rate.burst));
        *at = now;
        if *tokens < 1.0 {
            return Err(((1.0 - *tokens) / rate.per_second).ceil().max(1.0) as u64);
        }
        *tokens -= 1.0;
        Ok(())
    }
}

/// Where the server-wide bans are.
const SERVER_BANS: &str = "/api/v1/bans/";

/// Where they are listed.
const SERVER_BAN_LIST: &str = "/api/v1/bans";

/// Whether a call counts against its credential's rate (`--api-rate`): the
/// dashboard's once-a-second read does not, so that a busy bot sharing the operator's
/// key cannot lock the operator out of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rated {
    Yes,
    No,
}

/// Whether `path` (with `method`) is one of this module's routes.
pub fn handles(path: &str) -> bool {
    path == ROOMS
        || path == OPENAPI_PATH
        || path == super::admin::STATS
        || path == SERVER_BAN_LIST
        || path
            .strip_prefix(SERVER_BANS)
            .is_some_and(|id| !id.contains('/'))
        || matches!(
            route_of(path),
            Some(
                (_, "members" | "bans" | "messages", _)
                    | (_, "mutes" | "roles", Some(_))
                    | (_, "topic", None)
            )
        )
}

/// `/api/v1/rooms/{room}/{what}[/{id}]` in parts; a server-wide ban is the server's
/// room's.
fn route_of(path: &str) -> Option<(&str, &str, Option<&str>)> {
    if path == SERVER_BAN_LIST {
        return Some((SERVER_ROOM, "bans", None));
    }
    if let Some(id) = path.strip_prefix(SERVER_BANS) {
        return Some((SERVER_ROOM, "bans", Some(id)));
    }
    let rest = path.strip_prefix("/api/v1/rooms/")?;
    let mut parts = rest.splitn(3, '/');
    let room = parts.next()?;
    let what = parts.next()?;
    let id = parts.next();
    Some((room, what, id))
}

/// Serves one request of this module's routes.
pub async fn serve(
    request: Request<Incoming>,
    path: &str,
    door: &FrontDoor,
) -> Result<Response<Body>, Refused> {
    let method = request.method().clone();
    if path == OPENAPI_PATH {
        if !matches!(method, Method::GET | Method::HEAD) {
            return Ok(super::method_not_allowed());
        }
        return Ok(json_response(StatusCode::OK, OPENAPI.as_bytes().to_vec()));
    }
    if path == super::admin::STATS {
        if !matches!(method, Method::GET | Method::HEAD) {
            return Ok(super::method_not_allowed());
        }
        let who = caller(&request, None, door, Rated::No).await?;
        if who.role != Role::Admin {
            let message = "the dashboard is for the operator's API key or an admin's token";
            return Ok(error(StatusCode::FORBIDDEN, "forbidden", message));
        }
        return Ok(super::admin::stats(door));
    }
    let (room, what, id) = match route_of(path) {
        Some((room, what, id)) => (Some(room), what, id),
        None => (None, "rooms", None),
    };
    let server_wide = path.starts_with(SERVER_BANS) || path == SERVER_BAN_LIST;
    if room == Some(SERVER_ROOM) && !server_wide {
        let message = "_server is the server's own room: use /api/v1/bans/{id}";
        return Ok(error(StatusCode::NOT_FOUND, "no_such_room", message));
    }
    let room = match room.map(RoomName::parse).transpose() {
        Ok(room) => room,
        Err(why) => {
            let message = format!("invalid room name: {why}; {}", chat::v1::ROOM_RULES);
            return Ok(error(StatusCode::BAD_REQUEST, "invalid", &message));
        }
    };
    let who = caller(&request, room.as_ref(), door, Rated::Yes).await?;
    // A token's holder banned from the server uses none of it (the operator's key
    // speaks as #0, whom nobody bans).
    if who.id.as_str() != super::OPERATOR_ID
        && let Some(ban) = super::server_ban(&who.id, door).await?
    {
        let message = ban.banned_words(&who.id, None);
        return Ok(error(StatusCode::FORBIDDEN, "banned", &message));
    }
    // A direct-message room is its two ids' (and the operator's, who moderates it).
    if let Some(Ok((first, second))) = room.as_ref().and_then(v2::direct_members)
        && who.role < Role::Admin
        && who.id != first
        && who.id != second
    {
        let message = format!("this direct-message room is for #{first} and #{second} only");
        return Ok(error(StatusCode::FORBIDDEN, "forbidden", &message));
    }
    if server_wide && who.role < Role::Admin {
        let message = "only an admin bans from the whole server";
        return Ok(error(StatusCode::FORBIDDEN, "forbidden", message));
    }
    let allowed = match (what, id) {
        ("rooms", None) | ("members", None) | ("bans", None) => {
            [Method::GET, Method::HEAD].as_slice()
        }
        ("members" | "messages", Some(_)) => &[Method::DELETE],
        ("messages", None) => &[Method::POST],
        ("topic", None) | ("roles", Some(_)) => &[Method::PUT],
        _ => &[Method::PUT, Method::DELETE],
    };
    if !allowed.contains(&method) {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid",
            "method not allowed",
        );
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        if let Ok(allow) = HeaderValue::from_str(&names.join(", ")) {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        return Ok(response);
    }
    let Some(room) = room else {
        return Ok(list_rooms(&who, door).await);
    };
    let moderation = match (what, id) {
        ("messages", None) => return Ok(post(request, &room, &who, door).await),
        ("bans", None) => return Ok(list_bans(&room, &who, door).await),
        ("members", None) => return Ok(list_members(&room, &who, door).await),
        ("topic", _) => match read_json::<TopicBody>(request, MAX_BODY_BYTES).await {
            Ok(Some(topic)) => v2::Request::Topic {
                text: topic.text,
                nonce: Some(api_nonce()),
            },
            Ok(None) => {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    r#"send {"text":T}"#,
                ));
            }
            Err(message) => return Ok(error(StatusCode::BAD_REQUEST, "invalid", &message)),
        },
        ("messages", Some(offset)) => match offset.parse() {
            Ok(target) => v2::Request::Delete {
                target,
                nonce: Some(api_nonce()),
            },
            Err(_) => {
                let message = format!("a message is named by its offset, not {offset:?}");
                return Ok(error(StatusCode::BAD_REQUEST, "invalid", &message));
            }
        },
        (_, Some(id)) => match member_request(what, &method, id, request).await {
            Ok(moderation) => moderation,
            Err(message) => return Ok(error(StatusCode::BAD_REQUEST, "invalid", &message)),
        },
        (_, None) => return Ok(error(StatusCode::NOT_FOUND, "invalid", "no such call")),
    };
    moderate(&room, &who, moderation, door).await
}

/// What a call on member `id` asks: a kick, a ban or its lifting, a mute or its
/// lifting, a role.
async fn member_request(
    what: &str,
    method: &Method,
    id: &str,
    request: Request<Incoming>,
) -> Result<v2::Request, String> {
    let member = ClientId::parse(id)
        .map_err(|why| format!("invalid client id: {why}"))?
        .to_string();
    let nonce = Some(api_nonce());
    Ok(match (what, method) {
        ("members", _) => {
            let kick: KickBody = read_json(request, MAX_BODY_BYTES)
                .await?
                .unwrap_or_default();
            v2::Request::Kick {
                member,
                reason: kick.reason,
                nonce,
            }
        }
        ("bans", &Method::DELETE) => v2::Request::Unban { member, nonce },
        ("mutes", &Method::DELETE) => v2::Request::Unmute { member, nonce },
        ("bans", _) => {
            let ban: BanBody = read_json(request, MAX_BODY_BYTES)
                .await?
                .unwrap_or_default();
            v2::Request::Ban {
                member,
                seconds: ban.seconds,
                reason: ban.reason,
                nonce,
            }
        }
        ("mutes", _) => {
            let mute: MuteBody = read_json(request, MAX_BODY_BYTES)
                .await?
                .unwrap_or_default();
            v2::Request::Mute {
                member,
                seconds: mute.seconds,
                nonce,
            }
        }
        _ => {
            let role: RoleBody = read_json(request, MAX_BODY_BYTES)
                .await?
                .ok_or(r#"send {"role":"moderator"|"member"}"#)?;
            v2::Request::Role {
                member,
                role: role.role,
                nonce,
            }
        }
    })
}

/// Does `moderation` in `room` as `who`, answered once it is in the log.
async fn moderate(
    room: &RoomName,
    who: &Who,
    moderation: v2::Request,
    door: &FrontDoor,
) -> Result<Response<Body>, Refused> {
    let room = match loaded_for(room, who, door).await {
        Ok(room) => room,
        Err(response) => return Ok(*response),
    };
    Ok(match room.moderate(who, moderation) {
        Ok(told) => {
            // Answered once in the log, so that what follows the answer sees it.
            let logged = match told {
                Some(told) => tokio::time::timeout(POST_TIMEOUT, told).await.is_ok(),
                None => true,
            };
            if !logged {
                let message = "the change could not be confirmed in time; ask again";
                return Ok(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    message,
                ));
            }
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Err(refused) => refusal(&refused),
    })
}

/// A nonce for a moderation request made over HTTP, by which its answer waits for
/// its event.
fn api_nonce() -> String {
    format!("api-{:016x}", fastrand::u64(..))
}

/// A message's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    text: String,
    nonce: String,
}

/// How long a post waits for its message to be written (or back from Redis).
const POST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Posts a message as `who`, once per nonce, and answers its offset.
async fn post(
    request: Request<Incoming>,
    room: &RoomName,
    who: &Who,
    door: &FrontDoor,
) -> Response<Body> {
    // A message as long as the WebSocket takes, each character escaped at worst.
    let most = door.shared.config.max_message_bytes.saturating_mul(6) + MAX_BODY_BYTES;
    let body: MessageBody = match read_json(request, most).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            let message = r#"send {"text":T,"nonce":N}"#;
            return error(StatusCode::BAD_REQUEST, "invalid", message);
        }
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid", &message),
    };
    let room = match loaded_for(room, who, door).await {
        Ok(room) => room,
        Err(response) => return *response,
    };
    let posting = match room.post(who, body.text, body.nonce) {
        Ok(posting) => posting,
        Err(refused) => return refusal(&refused),
    };
    let offset = match posting {
        Posting::Done(offset) => Some(offset),
        Posting::Waiting(told) => tokio::time::timeout(POST_TIMEOUT, told)
            .await
            .ok()
            .and_then(Result::ok),
    };
    match offset {
        Some(offset) => json_response(
            StatusCode::OK,
            json!({ "offset": offset }).to_string().into_bytes(),
        ),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the message could not be confirmed in time; post it again with the same nonce",
        ),
    }
}

/// The room, made or loaded here, and as the cluster has it.
/// [`loaded`], for `who` to post or moderate in: refused (403) if `who` is banned
/// from it.
async fn loaded_for(
    room: &RoomName,
    who: &Who,
    door: &FrontDoor,
) -> Result<std::sync::Arc<crate::room::Room>, Box<Response<Body>>> {
    let room = loaded(room, door).await?;
    match banned_from(&room, who) {
        Some(refusal) => Err(Box::new(refusal)),
        None => Ok(room),
    }
}

/// 403 for `who` if it is banned from `room` (the operator's key never is).
fn banned_from(room: &crate::room::Room, who: &Who) -> Option<Response<Body>> {
    if who.id.as_str() == super::OPERATOR_ID {
        return None;
    }
    let ban = room.ban_of(&who.id)?;
    let message = ban.banned_words(&who.id, Some(room.name()));
    Some(error(StatusCode::FORBIDDEN, "banned", &message))
}

async fn loaded(
    room: &RoomName,
    door: &FrontDoor,
) -> Result<std::sync::Arc<crate::room::Room>, Box<Response<Body>>> {
    let room = match door.shared.rooms.get(room).await {
        Ok(room) => room,
        Err(unavailable) => {
            let message = unavailable.to_string();
            let response = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message);
            return Err(Box::new(response));
        }
    };
    if !door.shared.rooms.load_from_cluster(&room).await {
        let message = "cannot load the room from Redis; try again later";
        let response = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        return Err(Box::new(response));
    }
    Ok(room)
}

/// A refused request's answer: 403 for what the caller's role (or a mute) does not
/// allow, 404 for no such message, 409 for one too old to change, 429 in slow mode,
/// 503 when the room cannot take it now, else 400.
fn refusal(refused: &v2::Error) -> Response<Body> {
    let status = match refused.code {
        v2::ErrorCode::Forbidden | v2::ErrorCode::Muted | v2::ErrorCode::NotYours => {
            StatusCode::FORBIDDEN
        }
        v2::ErrorCode::NoSuchMessage => StatusCode::NOT_FOUND,
        v2::ErrorCode::TooOld => StatusCode::CONFLICT,
        v2::ErrorCode::Slow => StatusCode::TOO_MANY_REQUESTS,
        v2::ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let code = serde_json::to_value(refused.code).unwrap_or_default();
    error(status, code.as_str().unwrap_or("invalid"), &refused.message)
}

/// A mute's body.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    seconds: Option<u64>,
}

/// A role's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
}

/// A topic's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicBody {
    text: String,
}

/// A kick's body: `{"reason":R?}`, which may be empty.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KickBody {
    reason: Option<String>,
}

/// A ban's body: `{"seconds":S?,"reason":R?}`; an empty body bans until lifted.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    seconds: Option<u64>,
    reason: Option<String>,
}

/// A request's JSON body; `None` when it is empty.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    most: usize,
) -> Result<Option<T>, String> {
    let limited = http_body_util::Limited::new(request.into_body(), most);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| format!("a body is at most {most} bytes"))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map_err(|why| format!("not the JSON body expected: {why}"))
}

/// Who calls, from its credential: an API key is an admin acting as client id 0; a
/// token is its id, with the role its claims give in `room`, and must make it a bot,
/// an admin, or (for a room's calls) one of the room's moderators.
async fn caller(
    request: &Request<Incoming>,
    room: Option<&RoomName>,
    door: &FrontDoor,
    rated: Rated,
) -> Result<Who, Refused> {
    let credential =
        bearer(request.headers()).ok_or_else(|| refuse_token_as_json(TokenRefusal::Missing))?;
    let config = &door.shared.config;
    let who = if config.api_keys.holds(credential) {
        Who {
            id: ClientId::parse(super::OPERATOR_ID).expect("0 is an id"),
            name: None,
            role: Role::Admin,
        }
    } else {
        let Some(tokens) = &door.tokens else {
            return Err(refuse_token_as_json(TokenRefusal::Invalid(
                "not an API key of this server (--api-key-file), and it takes no tokens".to_owned(),
            )));
        };
        // Three dot-separated parts make a JWT; anything else was meant as a key.
        if credential.split('.').count() != 3 {
            return Err(refuse_token_as_json(TokenRefusal::Invalid(
                "it is neither one of this server's API keys (--api-key-file) nor a JWT".to_owned(),
            )));
        }
        let verified = tokens
            .verify(credential, config.max_token_ttl)
            .await
            .map_err(refuse_token_as_json)?;
        let grants = identity::Grants::of(&verified);
        let (id, name) = (verified.id, verified.name);
        // An admin's claim holds everywhere, for calls on no room too (the dashboard).
        let role = match room {
            _ if grants.admin => Role::Admin,
            Some(room) => grants.role_in(room.as_str()),
            None => Role::Member,
        };
        let operator = config.admins.contains(&id);
        if !(grants.bot || grants.admin || operator || role >= Role::Moderator) {
            return Err(refused(
                Refusal::NotYourRoom,
                error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the API is for tokens with a bot or admin claim, or (for a room's calls) \
                     that room's moderators and owners",
                ),
            ));
        }
        let role = if operator { Role::Admin } else { role };
        Who { id, name, role }
    };
    let took = match rated {
        Rated::Yes => door.api_rates.take(credential, config.api_rate),
        Rated::No => Ok(()),
    };
    if let Err(seconds) = took {
        let message =
            format!("too many API requests with this credential; try again in {seconds} s");
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too_fast", &message);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Err(refused(Refusal::PerIpRate, response));
    }
    Ok(who)
}

async fn list_rooms(who: &Who, door: &FrontDoor) -> Response<Body> {
    // Who talks to whom is theirs: direct-message rooms are listed to admins only.
    let private = |room: &RoomName| v2::direct_members(room).is_some() && who.role < Role::Admin;
    let rooms: Vec<_> = door
        .shared
        .rooms
        .loaded()
        .into_iter()
        .filter(|room| room.name().as_str() != SERVER_ROOM && !private(room.name()))
        .map(|room| json!({"room": room.name().as_str(), "members": room.present().len()}))
        .collect();
    json_response(StatusCode::OK, json!(rooms).to_string().into_bytes())
}

async fn list_bans(room: &RoomName, who: &Who, door: &FrontDoor) -> Response<Body> {
    let room = match loaded_for(room, who, door).await {
        Ok(room) => room,
        Err(response) => return *response,
    };
    json_response(StatusCode::OK, json!(room.bans()).to_string().into_bytes())
}

async fn list_members(room: &RoomName, who: &Who, door: &FrontDoor) -> Response<Body> {
    let Some(room) = door.shared.rooms.existing(room).await else {
        let message = format!("there is no room {room} here");
        return error(StatusCode::NOT_FOUND, "no_such_room", &message);
    };
    if let Some(refusal) = banned_from(&room, who) {
        return refusal;
    }
    let members: Vec<_> = room
        .present()
        .into_iter()
        .map(|(present, role)| {
            let mut member =
                json!({"id": present.id, "role": role.as_str(), "since": present.since});
            if let Some(name) = present.name {
                member["name"] = json!(name.as_str());
            }
            member
        })
        .collect();
    json_response(StatusCode::OK, json!(members).to_string().into_bytes())
}
