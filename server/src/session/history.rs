//! A v2 client's `history` and `search`: answered from the room's history in memory
//! when it holds the page, else from the store (`--data-dir`), read on a blocking
//! thread. Without a store, what memory no longer holds is gone, and the answers say
//! there is no more.

use std::sync::Arc;

use chat::v2::{self, PageRange};
use tracing::{Instrument, warn};

use crate::room::wire;
use crate::room::{Member, Room, StoreError};

/// Reads a `search` request's text, `before` (none: from the newest) and limit.
pub fn search_request(
    text: &str,
    before: Option<i64>,
    limit: i64,
    nonce: Option<&str>,
) -> Result<(Vec<String>, u64, usize), v2::Error> {
    let words = v2::search_words(text, nonce)?;
    let limit = v2::page_limit(limit, nonce)?;
    let before = match before {
        None => u64::MAX,
        Some(before) => u64::try_from(before).map_err(|_| {
            v2::Error::new(
                nonce,
                v2::ErrorCode::Invalid,
                format!("an offset is 0 or more, not {before}"),
            )
        })?,
    };
    Ok((words, before, limit))
}

/// Answers `history` for `range`.
pub fn page(member: &Member, range: PageRange, limit: usize, nonce: Option<String>) {
    let room = member.room_handle().clone();
    let outbox = member.outbox().clone();
    let memory = room.page(range, limit);
    let more_after = memory.last < memory.room_last;
    let store = room.store().cloned();
    let store = match store {
        Some(store) if !memory.complete => store,
        _ => {
            let more = match range {
                PageRange::Before(_) if store.is_some() => memory.first > 1,
                PageRange::Before(_) => memory.complete && memory.first > memory.oldest_kept,
                PageRange::After(_) => more_after,
            };
            let payloads = memory.frames.iter().map(|frame| wire::payload(frame));
            outbox.push(&wire::page("history", nonce.as_deref(), payloads, more));
            return;
        }
    };
    let (first, last) = (memory.first, memory.last);
    let answer = async move {
        let name = room.name().clone();
        let read = tokio::task::spawn_blocking(move || store.page(&name, first..=last)).await;
        let frame = match flatten(read) {
            Ok(stored) => {
                let more = match range {
                    PageRange::Before(_) => stored.oldest != 0 && first > stored.oldest,
                    PageRange::After(_) => more_after,
                };
                let events: Vec<String> =
                    stored.events.iter().map(|event| event.to_json()).collect();
                let payloads = events.iter().map(String::as_bytes);
                wire::page("history", nonce.as_deref(), payloads, more)
            }
            Err(error) => unavailable(&room, nonce.as_deref(), &error),
        };
        outbox.push(&frame);
    };
    tokio::spawn(answer.in_current_span());
}

/// Answers `search`: from the store's index with `--data-dir`, else from memory.
pub fn search(
    member: &Member,
    words: Vec<String>,
    before: u64,
    limit: usize,
    nonce: Option<String>,
) {
    let room = member.room_handle().clone();
    let outbox = member.outbox().clone();
    let Some(store) = room.store().cloned() else {
        let (found, more) = room.search(&words, before, limit);
        let payloads = found.iter().map(|frame| wire::payload(frame));
        outbox.push(&wire::page("search", nonce.as_deref(), payloads, more));
        return;
    };
    let answer = async move {
        let name = room.name().clone();
        let read =
            tokio::task::spawn_blocking(move || store.search(&name, &words, before, limit)).await;
        let frame = match flatten(read) {
            Ok((found, more)) => {
                let events: Vec<String> = found.iter().map(|event| event.to_json()).collect();
                let payloads = events.iter().map(String::as_bytes);
                wire::page("search", nonce.as_deref(), payloads, more)
            }
            Err(error) => unavailable(&room, nonce.as_deref(), &error),
        };
        outbox.push(&frame);
    };
    tokio::spawn(answer.in_current_span());
}

/// A blocking read's result, whether it failed or its thread did.
fn flatten<T>(
    read: Result<Result<T, StoreError>, tokio::task::JoinError>,
) -> Result<T, StoreError> {
    read.map_err(|failed| -> StoreError { Box::new(failed) })?
}

/// The error frame for a read the store could not do.
fn unavailable(room: &Arc<Room>, nonce: Option<&str>, error: &StoreError) -> wire::Frame {
    warn!(room = %room.name(), %error, "cannot read the history");
    let error = v2::Error::new(
        nonce,
        v2::ErrorCode::Unavailable,
        "cannot read the history now; try again later",
    );
    wire::json(&error, 128)
}
