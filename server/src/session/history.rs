//! `history` and `search`, for v2 clients and the HTTP API: answered from the room's
//! history in memory when it holds the page, else from the store (`--data-dir`), read
//! on a blocking thread, or else, clustered, from the room's history stream in Redis.
//! With none of them, what memory no longer holds is gone, and the answers say there is
//! no more.

use std::sync::Arc;

use chat::v1;
use chat::v2::{self, PageRange};
use tokio::sync::Semaphore;
use tracing::{Instrument, warn};

use crate::metrics::Disconnect;
use crate::room::outbox::ANSWERS_AT_ONCE;
use crate::room::wire;
use crate::room::{CatchUp, Member, Protocol, Room, StoreError, StoredPage};

/// How many events a resume streamed from the store reads at a time: what it holds
/// beside the outbox's bound, so few (64 of the largest messages are about 4 MiB; 64
/// of a chat's usual ones, some tens of kilobytes), and still a fraction of a
/// millisecond of the store's time each.
const CATCH_UP_PAGE: u64 = 64;

/// Streams a resuming member's replay from the store when its welcome says so (see
/// [`CatchUp`]), a page at a time, each frame only once the member's outbox is below
/// its high-water mark, until the replay reaches the history in memory and the member
/// goes live. Never completes unless the store fails, which ends the session.
pub async fn catch_up(member: &Member) -> Disconnect {
    let Some(mut told) = member.catch_up() else {
        return std::future::pending().await;
    };
    let since = loop {
        let now = *told.borrow_and_update();
        match now {
            CatchUp::After(since) => break since,
            CatchUp::NotNeeded => return std::future::pending().await,
            CatchUp::Waiting => {}
        }
        if told.changed().await.is_err() {
            return std::future::pending().await;
        }
    };
    // Boxed: only a resuming member streams, and every session waits on this future.
    Box::pin(stream_from_store(member, since)).await
}

/// Streams the replay after `since` from the store, as [`catch_up`] says.
async fn stream_from_store(member: &Member, since: u64) -> Disconnect {
    let room = member.room_handle().clone();
    let Some(store) = room.store().cloned() else {
        return std::future::pending().await;
    };
    let outbox = member.outbox().clone();
    let mut next = since + 1;
    loop {
        let oldest_in_memory = match room.finish_catch_up(member.key(), next) {
            Ok(()) => return std::future::pending().await,
            Err(oldest) => oldest,
        };
        let last = (next + CATCH_UP_PAGE - 1).min(oldest_in_memory - 1);
        let (reading, name) = (store.clone(), room.name().clone());
        let page = match blocking(move || reading.page(&name, next..=last)).await {
            Ok(page) => page,
            Err(error) => {
                warn!(room = %room.name(), %error, "cannot read the history to resume");
                return Disconnect::HistoryUnavailable;
            }
        };
        for event in &page.events {
            let json = match member.protocol() {
                Protocol::V2 => event.to_json(),
                _ => match event.for_v1() {
                    Some(shown) => shown.to_json(),
                    None => continue,
                },
            };
            outbox.below_high_water().await;
            outbox.push(&wire::text(&json));
        }
        next = last + 1;
    }
}

/// What is asked of a room's history.
#[derive(Clone, Debug)]
pub enum Query {
    /// A page of events before or after an offset.
    Page { range: PageRange, limit: usize },
    /// The newest messages before `before` holding every one of `words`.
    Search {
        words: Vec<String>,
        before: u64,
        limit: usize,
    },
}

impl Query {
    /// A `history` request's query.
    pub fn page(
        before: Option<i64>,
        after: Option<i64>,
        limit: i64,
        nonce: Option<&str>,
    ) -> Result<Self, v2::Error> {
        let (range, limit) = v2::page_range(before, after, limit, nonce)?;
        Ok(Self::Page { range, limit })
    }

    /// A `search` request's query: `before` none searches from the newest.
    pub fn search(
        text: &str,
        before: Option<i64>,
        limit: i64,
        nonce: Option<&str>,
    ) -> Result<Self, v2::Error> {
        let words = v2::search_words(text, nonce)?;
        let limit = v2::page_limit(limit, nonce)?;
        let before = match before {
            None => u64::MAX,
            Some(before) => v2::page_offset(before, nonce)?,
        };
        Ok(Self::Search {
            words,
            before,
            limit,
        })
    }

    /// The answer's `type`.
    fn kind(&self) -> &'static str {
        match self {
            Self::Page { .. } => "history",
            Self::Search { .. } => "search",
        }
    }
}

/// Answers `query` to a v2 member, from a task of its own: the store is read on a
/// blocking thread.
pub fn answer_member(member: &Member, query: Query, nonce: Option<String>) {
    let room = member.room_handle().clone();
    let outbox = member.outbox().clone();
    let Some(on_its_way) = outbox.begin_answer() else {
        let error = v2::Error::new(
            nonce.as_deref(),
            v2::ErrorCode::Unavailable,
            format!(
                "{ANSWERS_AT_ONCE} history or search answers are already on their way to you; ask again once one has come"
            ),
        );
        outbox.push(&wire::json(&error, 128 + error.message.len()));
        return;
    };
    let answering = async move {
        let frame = match answer(&room, query, nonce.as_deref()).await {
            Ok(json) => wire::text_bytes(&json),
            Err(error) => wire::json(&error, 128 + error.message.len()),
        };
        // An answer is at most half the bound (see `Room::answer_bytes`): pushed once
        // the queue is at most half full, it never overflows a client that reads.
        outbox.below_high_water().await;
        outbox.push(&frame);
        drop(on_its_way);
    };
    tokio::spawn(answering.in_current_span());
}

/// The JSON answer to `query` in `room`, or why there is none.
pub async fn answer(
    room: &Arc<Room>,
    query: Query,
    nonce: Option<&str>,
) -> Result<Vec<u8>, v2::Error> {
    let kind = query.kind();
    match query {
        Query::Page { range, limit } => page(room, range, limit, nonce).await,
        Query::Search {
            words,
            before,
            limit,
        } => search(room, words, before, limit, nonce).await,
    }
    .map_err(|error| unavailable(room, kind, nonce, &error))
}

async fn page(
    room: &Arc<Room>,
    range: PageRange,
    limit: usize,
    nonce: Option<&str>,
) -> Result<Vec<u8>, StoreError> {
    let mut memory = room.page(range, limit);
    let kept_elsewhere = room.store().is_some() || room.cluster().is_some();
    // A page after an offset older than anything kept starts at the oldest kept, as
    // the oldest `limit` after it: cut from the offset asked for, it would be short,
    // or empty with more to come, and a client paging forward would not get on.
    if let PageRange::After(after) = range
        && !kept_elsewhere
        && after + 1 < memory.oldest_kept
        && memory.oldest_kept <= memory.room_last
    {
        memory = room.page(PageRange::After(memory.oldest_kept - 1), limit);
    }
    let more_after = memory.last < memory.room_last;
    if memory.complete || !kept_elsewhere {
        let more = match range {
            PageRange::Before(_) if kept_elsewhere => memory.first > 1,
            PageRange::Before(_) => memory.complete && memory.first > memory.oldest_kept,
            PageRange::After(_) => more_after,
        };
        let payloads = memory.frames.iter().map(|frame| wire::payload(frame));
        return Ok(page_json(
            "history",
            nonce,
            room,
            Keep::of(range),
            payloads,
            more,
        ));
    }
    let (mut first, mut last) = (memory.first, memory.last);
    let mut stored = read_kept(room, first, last).await?;
    if let PageRange::After(_) = range
        && first < stored.oldest
        && stored.oldest <= memory.room_last
    {
        // As for memory above: from the oldest the store keeps.
        first = stored.oldest;
        last = first.saturating_add(limit as u64 - 1).min(memory.room_last);
        stored = read_kept(room, first, last).await?;
    }
    let more = match range {
        PageRange::Before(_) => stored.oldest != 0 && first > stored.oldest,
        PageRange::After(_) => last < memory.room_last,
    };
    let keep = Keep::of(range);
    Ok(page_of_events(
        "history",
        nonce,
        room,
        keep,
        &stored.events,
        more,
    ))
}

/// Offsets `first` to `last` of `room`, from the store with `--data-dir`, else from
/// the cluster.
async fn read_kept(room: &Arc<Room>, first: u64, last: u64) -> Result<StoredPage, StoreError> {
    match (room.store(), room.cluster()) {
        (Some(store), _) => {
            let (store, name) = (store.clone(), room.name().clone());
            blocking(move || store.page(&name, first..=last)).await
        }
        (None, Some(cluster)) => cluster.page(room.name(), first..=last).await,
        (None, None) => unreachable!("kept elsewhere"),
    }
}

/// From the store's index with `--data-dir`, else from memory.
async fn search(
    room: &Arc<Room>,
    words: Vec<String>,
    before: u64,
    limit: usize,
    nonce: Option<&str>,
) -> Result<Vec<u8>, StoreError> {
    let Some(store) = room.store().cloned() else {
        let (found, more) = room.search(&words, before, limit);
        let payloads = found.iter().map(|frame| wire::payload(frame));
        return Ok(page_json(
            "search",
            nonce,
            room,
            Keep::First,
            payloads,
            more,
        ));
    };
    let name = room.name().clone();
    let (found, more) = blocking(move || store.search(&name, &words, before, limit)).await?;
    Ok(page_of_events(
        "search",
        nonce,
        room,
        Keep::First,
        &found,
        more,
    ))
}

/// Which events an answer keeps when not all fit in its bytes: either way the client
/// asks on from the last one it got, and `more` says there is more.
#[derive(Clone, Copy)]
enum Keep {
    /// A page before an offset: its newest.
    Newest,
    /// A page after an offset, oldest first, and a search, newest first: its first.
    First,
}

impl Keep {
    fn of(range: PageRange) -> Self {
        match range {
            PageRange::Before(_) => Self::Newest,
            PageRange::After(_) => Self::First,
        }
    }
}

/// [`page_json`] around events read from storage, which have no frames yet.
fn page_of_events(
    kind: &str,
    nonce: Option<&str>,
    room: &Room,
    keep: Keep,
    events: &[v1::Event],
    more: bool,
) -> Vec<u8> {
    let events: Vec<String> = events.iter().map(v1::Event::to_json).collect();
    let payloads = events.iter().map(String::as_bytes);
    page_json(kind, nonce, room, keep, payloads, more)
}

/// An answer's JSON with as many of `events` (in the answer's order) as fit in the
/// room's answer bytes (`Room::answer_bytes`), at least one: a page of a hundred
/// 64 KiB messages would overflow the asking client's queue, and an HTTP reader's
/// memory.
fn page_json<'a>(
    kind: &str,
    nonce: Option<&str>,
    room: &Room,
    keep: Keep,
    events: impl Iterator<Item = &'a [u8]>,
    more: bool,
) -> Vec<u8> {
    let events: Vec<&[u8]> = events.collect();
    let budget = room.answer_bytes();
    let kept = match keep {
        Keep::Newest => &events[events.len() - fitting(events.iter().rev(), budget)..],
        Keep::First => &events[..fitting(events.iter(), budget)],
    };
    let more = more || kept.len() < events.len();
    wire::page_json(kind, nonce, kept.iter().copied(), more)
}

/// How many of `events`, taken in order, fit in `budget` bytes (each counted with its
/// comma): at least one, if there is one.
fn fitting<'a>(events: impl ExactSizeIterator<Item = &'a &'a [u8]>, budget: usize) -> usize {
    let total = events.len();
    let mut bytes = 0;
    events
        .take_while(|event| {
            bytes += event.len() + 1;
            bytes <= budget
        })
        .count()
        .max(1)
        .min(total)
}

/// Does an edit, delete or reaction on a message older than memory holds, with
/// `--data-dir`: the target is read from the store, in its latest state, on a blocking
/// thread, checked as any request is, and the operation logged from a task of its own.
pub fn change_old_message(member: &Member, request: v2::Request) {
    let speaker = member.speaker();
    let outbox = member.outbox().clone();
    let changing = async move {
        let room = speaker.room().clone();
        let Some(store) = room.store().cloned() else {
            return;
        };
        let nonce = request.nonce().map(str::to_owned);
        let Some(target) = request.target() else {
            return;
        };
        let name = room.name().clone();
        let read = blocking(move || store.page(&name, target..=target)).await;
        let done = match read {
            Ok(page) => {
                let stored = page.events.into_iter().find(|event| event.offset == target);
                // What the store no longer keeps is too old, as for memory.
                let oldest = if page.oldest == 0 {
                    u64::MAX
                } else {
                    page.oldest
                };
                speaker.change_old_message(request, stored, oldest)
            }
            Err(error) => Err(unavailable(
                &room,
                "an old message",
                nonce.as_deref(),
                &error,
            )),
        };
        if let Err(error) = done {
            outbox.push(&wire::json(&error, 128 + error.message.len()));
        }
    };
    tokio::spawn(changing.in_current_span());
}

/// Reads of the store running at once, across every session of the process: the
/// store has four reading connections, and a read waiting for one would hold a
/// blocking thread (and, with glibc's allocator, grow an arena of its own) while it
/// waits. Past these, reads wait here, as tasks, in turn.
static READS_AT_ONCE: Semaphore = Semaphore::const_new(8);

/// Runs a read of the store on a blocking thread, in turn with the others.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let _turn = READS_AT_ONCE
        .acquire()
        .await
        .map_err(|closed| -> StoreError { Box::new(closed) })?;
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|failed| -> StoreError { Box::new(failed) })?
}

/// The error for a read the store could not do.
fn unavailable(room: &Arc<Room>, kind: &str, nonce: Option<&str>, error: &StoreError) -> v2::Error {
    warn!(room = %room.name(), %error, "cannot read the history for {kind}");
    v2::Error::new(
        nonce,
        v2::ErrorCode::Unavailable,
        "cannot read the history now; try again later",
    )
}
