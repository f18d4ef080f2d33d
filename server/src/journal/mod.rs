//! Durable history, with `--data-dir`: every room's events are written to an SQLite
//! database before anyone receives them, so that a restarted server, even one killed
//! with SIGKILL, continues each room's epoch and offsets, and its clients resume with
//! `recovered:true`.
//!
//! One writer thread owns the database connection. Rooms hand it their numbered events
//! in order ([`Store::append`]); it writes whatever has accumulated in one transaction
//! (group commit: the longer a commit takes, the more the next one carries), and only
//! then has each room fan them out. A failed write (a full disk) is retried until it
//! succeeds: meanwhile the server says it is unavailable, refuses new sessions, and
//! stops reading from its clients once the backlog reaches its bound, so nothing that
//! was accepted is dropped.
//!
//! The tables are plain, for `sqlite3` users: `rooms` (name, epoch, last offset),
//! `events` (one row per join, leave and message), `operations` (one row per
//! chat.v2.json edit, delete, react and unreact, by the offset it applies to),
//! `members` (who is connected, so that after a crash their leaves can be announced),
//! `reads` (each id's read position per room), `moderation` (one row per moderation
//! event: kick, ban, mute, topic, slow mode, role; its JSON whole), `rules` (each room's
//! moderation state, field by field, as `room::rules` names them),
//! and `message_index`, a contentless FTS5
//! index of the messages' latest text for search. A delete removes its message's text,
//! and its edits' texts, from all of them in the transaction that writes it, and from
//! the files: freed space is zeroed (`secure_delete`, and FTS5's own `secure-delete`),
//! and the write-ahead log, whose older frames still hold the text, is emptied.
//!
//! Owns the database; the rest of the server sees it only as a [`Store`], made by
//! [`open`]. May call: `room` (the seam it plugs into, and the rooms it fans out),
//! `config`, `metrics`.

use std::collections::HashMap;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::thread;
use std::time::Duration;

use chat::ClientId;
use chat::v1::{self, DisplayName, EventKind, RoomName};
use chat::v2;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::config::{DELIVERY_GRACE, JOURNAL_BACKLOG_BYTES, MAX_HISTORY_BYTES, MAX_ROOMS};
use crate::metrics::Metrics;
use crate::room::backlog::{Backlog, cost};
use crate::room::outbox::drained_by;
use crate::room::rules::{self, Change};
use crate::room::{Room, Start, Store, StoreError, StoredPage};

/// The database's file name in the data folder.
pub const FILE_NAME: &str = "chat.sqlite3";

/// The schema this server writes, kept in `PRAGMA user_version`: a database from a
/// newer server is refused rather than misread.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS rooms (
        name TEXT PRIMARY KEY,
        epoch TEXT NOT NULL,
        last_offset INTEGER NOT NULL,
        last_ts INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rooms_by_age ON rooms (last_ts);
    CREATE TABLE IF NOT EXISTS events (
        room TEXT NOT NULL,
        offset INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        client TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('join', 'leave', 'message')),
        text TEXT,
        nonce TEXT,
        name TEXT,
        reply_to INTEGER,
        kind TEXT,
        PRIMARY KEY (room, offset)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS operations (
        room TEXT NOT NULL,
        offset INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        client TEXT NOT NULL,
        name TEXT,
        type TEXT NOT NULL CHECK (type IN ('edit', 'delete', 'react', 'unreact')),
        target INTEGER NOT NULL,
        text TEXT,
        emoji TEXT,
        nonce TEXT,
        moderated INTEGER,
        PRIMARY KEY (room, offset)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS moderation (
        room TEXT NOT NULL,
        offset INTEGER NOT NULL,
        type TEXT NOT NULL,
        member TEXT,
        event TEXT NOT NULL,
        PRIMARY KEY (room, offset)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rules (
        room TEXT NOT NULL,
        field TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (room, field)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS operations_by_target ON operations (room, target);
    CREATE TABLE IF NOT EXISTS reads (
        room TEXT NOT NULL,
        client TEXT NOT NULL,
        offset INTEGER NOT NULL,
        PRIMARY KEY (room, client)
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE IF NOT EXISTS message_index USING fts5(
        text, content = '', contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 0'
    );
    CREATE TABLE IF NOT EXISTS members (
        room TEXT NOT NULL,
        key INTEGER NOT NULL,
        client TEXT NOT NULL,
        since INTEGER NOT NULL,
        name TEXT,
        PRIMARY KEY (room, key)
    ) WITHOUT ROWID;
";

/// What turns a database of schema 1 (before names) into schema 2.
const NAMES_MIGRATION: &str = "
    ALTER TABLE events ADD COLUMN name TEXT;
    ALTER TABLE members ADD COLUMN name TEXT;
";

/// What turns a database of schema 2 (chat.v1.json) into schema 3 (chat.v2.json): the
/// messages' new columns; the new tables are made by [`SCHEMA`], and the messages
/// already kept are indexed for search.
const V2_MIGRATION: &str = "
    ALTER TABLE events ADD COLUMN reply_to INTEGER;
    ALTER TABLE events ADD COLUMN kind TEXT;
";

/// What turns a database of schema 3 into schema 4 (moderation): a moderator's
/// delete is marked; the new tables are made by [`SCHEMA`].
const MODERATION_MIGRATION: &str = "
    ALTER TABLE operations ADD COLUMN moderated INTEGER;
";

/// Has FTS5 take a deleted row's entries out of the index at once, rather than mark
/// them deleted until its segments are next merged: nothing in the file ties a deleted
/// message to its words any more. The words themselves may stay as keys in a segment
/// until it is merged (only `'optimize'`, which rewrites the whole index, takes them
/// out at once: too slow for the writer of a large index). Kept in the index's own
/// config, so setting it again on every start is harmless.
const FTS_SECURE_DELETE: &str =
    "INSERT INTO message_index (message_index, rank) VALUES ('secure-delete', 1);";

/// Indexes every message kept, after [`V2_MIGRATION`].
const INDEX_KEPT_MESSAGES: &str = "
    INSERT INTO message_index (rowid, text)
    SELECT (rooms.rowid << 40) + events.offset, events.text
    FROM events JOIN rooms ON rooms.name = events.room
    WHERE events.type = 'message' AND events.text IS NOT NULL AND events.text != '';
";

/// A message's row in `message_index`: its room's rowid, then its offset, so that one
/// room's messages are one range of rowids.
fn index_key(room_rowid: i64, offset: u64) -> i64 {
    (room_rowid << OFFSET_BITS) + offset as i64
}

/// The bits of an index key that hold the offset: a trillion events per room.
const OFFSET_BITS: u32 = 40;

/// The most events one transaction writes, so that one commit does not hold the
/// fan-out of the rest back for long.
const MAX_BATCH: usize = 4096;

/// Rooms whose history the database keeps. Past it, the room heard from longest ago is
/// forgotten, so that clients making up room names cannot grow the file without bound.
pub const MAX_STORED_ROOMS: usize = 10 * MAX_ROOMS;

/// How long a statement waits for the database while another connection holds it.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a failed write is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The data folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use the data folder {}: {error}", folder.display())]
    Folder { folder: PathBuf, error: io::Error },
    #[error("cannot use the database {}: {error}", path.display())]
    Database {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error(
        "the data folder {} is in use by another chat-server (it holds {LOCK_FILE_NAME}); \
         stop that one, or give this one another --data-dir",
        folder.display()
    )]
    InUse { folder: PathBuf },
    #[error(
        "the database {} was written by a newer chat-server (schema {version}; this one knows {SCHEMA_VERSION})",
        path.display()
    )]
    Newer { path: PathBuf, version: i64 },
}

enum Command {
    Append(Append),
    Read(Read),
    /// Sent last: answered once everything before it is written.
    Close(oneshot::Sender<()>),
}

/// The handle every room and session shares; the writer thread owns the database.
pub struct Journal {
    commands: mpsc::Sender<Command>,
    backlog: Arc<Backlog>,
    /// Why the journal cannot write now, while it cannot.
    trouble: Arc<Mutex<Option<String>>>,
    /// Loads rooms and answers pages and searches while the writer writes: SQLite's
    /// write-ahead log lets a reader see the last commit without waiting for the next.
    readers: Readers,
    /// Events kept per room.
    history: usize,
    /// Locked while the journal is open: a second server on the same folder would
    /// write the same rooms' offsets and fail every write after the first.
    _folder_lock: std::fs::File,
}

/// The file in the data folder that the server running on it keeps locked.
const LOCK_FILE_NAME: &str = "chat-server.lock";

/// Opens (or makes) the database in `folder` and starts its writer, which keeps
/// `history` events per room: the store every room of the server writes to.
pub fn open(
    folder: &Path,
    history: usize,
    history_bytes: usize,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn Store>, OpenError> {
    Ok(Journal::open(folder, history, history_bytes, metrics)?)
}

impl Journal {
    /// Opens (or makes) the database in `folder` and starts its writer, which keeps
    /// `history` events per room, and at most `history_bytes` of them.
    fn open(
        folder: &Path,
        history: usize,
        history_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, OpenError> {
        std::fs::create_dir_all(folder).map_err(|error| OpenError::Folder {
            folder: folder.into(),
            error,
        })?;
        let folder_error = |error| OpenError::Folder {
            folder: folder.into(),
            error,
        };
        let folder_lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(folder.join(LOCK_FILE_NAME))
            .map_err(folder_error)?;
        match folder_lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse {
                    folder: folder.into(),
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(folder_error(error)),
        }
        let path = folder.join(FILE_NAME);
        let database = |error| OpenError::Database {
            path: path.clone(),
            error,
        };
        let writer = open_database(&path).map_err(database)?;
        let version: i64 = writer
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(database)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::Newer { path, version });
        }
        migrate(&writer, version).map_err(database)?;
        let readers = Readers::open(&path).map_err(database)?;
        let (commands, received) = mpsc::channel();
        let journal = Arc::new(Self {
            commands,
            backlog: Arc::new(Backlog::new(
                JOURNAL_BACKLOG_BYTES,
                metrics.clone(),
                Metrics::journal_backlog,
            )),
            trouble: Arc::default(),
            readers,
            history,
            _folder_lock: folder_lock,
        });
        let writing = DatabaseWriter {
            database: writer,
            backlog: journal.backlog.clone(),
            trouble: journal.trouble.clone(),
            history,
            history_bytes: history_bytes as u64,
            stored: HashMap::new(),
            metrics,
            // A run killed before it could empty the log may have left a deleted text in
            // it: emptied after the first write, when nothing else reads yet.
            unpurged_log: true,
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        thread::Builder::new()
            .name("journal".into())
            .spawn(move || writing.run(received))
            .map_err(|error| OpenError::Folder {
                folder: folder.into(),
                error,
            })?;
        info!(database = %path.display(), "history is kept on disk");
        Ok(journal)
    }

    /// The room `name` as the database left it, or `None` if it holds nothing of it.
    fn read_room(&self, name: &RoomName) -> rusqlite::Result<Option<Start>> {
        let reader = self.readers.take();
        let room = reader
            .query_row(
                "SELECT epoch, last_offset FROM rooms WHERE name = ?1",
                [name.as_str()],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?)),
            )
            .optional()?;
        let Some((epoch, offset)) = room else {
            return Ok(None);
        };
        let events = read_newest(&reader, name, self.history)?;
        let reads = reader
            .prepare_cached("SELECT client, offset FROM reads WHERE room = ?1")?
            .query_map([name.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<HashMap<String, u64>>>()?;
        let present = reader
            .prepare("SELECT key, client, since, name FROM members WHERE room = ?1 ORDER BY key")?
            .query_map([name.as_str()], |row| {
                let present = v1::Present {
                    id: row.get(1)?,
                    name: read_name(row, 3)?,
                    since: row.get(2)?,
                    role: v1::Role::Member,
                    key: None,
                };
                Ok((row.get(0)?, present))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let rules = read_rules(&reader, name.as_str())?;
        Ok(Some(Start {
            epoch,
            offset,
            events,
            present,
            reads,
            rules,
        }))
    }
}

impl Store for Journal {
    fn append(&self, room: &Arc<Room>, key: u64, event: v1::Event) {
        self.backlog.add(cost(&event));
        let append = Command::Append(Append {
            room: room.clone(),
            key,
            event,
        });
        // The writer stops only after `close`, when no session is left to append.
        let _ = self.commands.send(append);
    }

    fn load(&self, name: &RoomName) -> Result<Option<Start>, StoreError> {
        Ok(self.read_room(name)?)
    }

    fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    fn save_read(&self, room: &RoomName, id: &str, offset: u64) {
        let read = Command::Read(Read {
            room: room.clone(),
            id: id.to_owned(),
            offset,
        });
        let _ = self.commands.send(read);
    }

    fn page(
        &self,
        room: &RoomName,
        offsets: RangeInclusive<u64>,
    ) -> Result<StoredPage, StoreError> {
        let reader = self.readers.take();
        let (first, last) = (*offsets.start(), *offsets.end());
        let mut events = read_range(&reader, room, first, last)?;
        let ops = read_operations_on(&reader, room, first, last)?;
        v2::apply_all(&mut events, &ops);
        let oldest = reader.query_row(
            "SELECT min(offset) FROM (SELECT min(offset) AS offset FROM events WHERE room = ?1
             UNION ALL SELECT min(offset) FROM operations WHERE room = ?1
             UNION ALL SELECT min(offset) FROM moderation WHERE room = ?1)",
            [room.as_str()],
            |row| row.get::<_, Option<u64>>(0),
        )?;
        Ok(StoredPage {
            events,
            oldest: oldest.unwrap_or(0),
        })
    }

    fn search(
        &self,
        room: &RoomName,
        words: &[String],
        before: u64,
        limit: usize,
    ) -> Result<(Vec<v1::Event>, bool), StoreError> {
        let reader = self.readers.take();
        let rowid: Option<i64> = reader
            .query_row(
                "SELECT rowid FROM rooms WHERE name = ?1",
                [room.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        let Some(rowid) = rowid else {
            return Ok((Vec::new(), false));
        };
        let before = before.min(1 << OFFSET_BITS);
        let offsets: Vec<u64> = reader
            .prepare_cached(
                "SELECT rowid FROM message_index WHERE message_index MATCH ?1
                 AND rowid >= ?2 AND rowid < ?3 ORDER BY rowid DESC LIMIT ?4",
            )?
            .query_map(
                params![
                    fts_query(words),
                    index_key(rowid, 0),
                    index_key(rowid, before),
                    limit as i64 + 1
                ],
                |row| row.get::<_, i64>(0),
            )?
            .map(|key| key.map(|key| (key - index_key(rowid, 0)) as u64))
            .collect::<rusqlite::Result<_>>()?;
        let more = offsets.len() > limit;
        let mut found = read_messages_at(&reader, room, &offsets[..offsets.len().min(limit)])?;
        found.reverse();
        Ok((found, more))
    }

    fn direct_rooms(&self, id: &ClientId) -> Result<Vec<v2::DirectRoom>, StoreError> {
        let reader = self.readers.take();
        let rooms = reader
            .prepare_cached(DIRECT_ROOMS)?
            .query_map([id.as_str()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    v2::DirectRoom {
                        room: String::new(),
                        with: String::new(),
                        offset: row.get(2)?,
                        read: row.get(3)?,
                        unread: row.get(4)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // The query picks names by their form; the protocol's own rule keeps those
        // that are direct rooms of `id`, in canonical form.
        let direct = rooms
            .into_iter()
            .filter_map(|(name, with, found)| {
                let room = RoomName::parse(&name).ok()?;
                let (first, second) = v2::direct_members(&room)?.ok()?;
                let other = match (*id == first, *id == second) {
                    (true, _) => second,
                    (_, true) => first,
                    _ => return None,
                };
                (other.as_str() == with).then_some(v2::DirectRoom {
                    room: name,
                    with,
                    ..found
                })
            })
            .collect();
        Ok(direct)
    }

    fn trouble(&self) -> Option<String> {
        lock(&self.trouble).clone()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, written) = oneshot::channel();
            if self.commands.send(Command::Close(done)).is_ok() {
                let _ = written.await;
            }
        })
    }
}

/// How many read connections the journal keeps. With one, a room's load after a
/// restart, a page and a direct-message list each waited behind whatever search was
/// running (8–21 ms at p99 over a million messages, `chat-bench --v2 history`). They
/// run on tokio's blocking threads, so a few connections let them overlap.
const READERS: usize = 4;

/// The journal's read connections: a read takes one that is free, or waits for one.
struct Readers {
    connections: Vec<Mutex<Connection>>,
    /// Where a read waits when every connection is busy: turns spread the waiting.
    next: AtomicUsize,
}

impl Readers {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        let connections = (0..READERS)
            .map(|_| open_database(path).map(Mutex::new))
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
        })
    }

    fn take(&self) -> MutexGuard<'_, Connection> {
        for connection in &self.connections {
            match connection.try_lock() {
                Ok(free) => return free,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        lock(&self.connections[turn])
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each holder does one query or one assignment: nothing is left half-done.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_database(path: &Path) -> rusqlite::Result<Connection> {
    let database = Connection::open(path)?;
    database.busy_timeout(BUSY_TIMEOUT)?;
    // Write-ahead logging lets the reader load rooms during a write. `synchronous =
    // NORMAL` makes a commit durable once it is in the log, which a killed process
    // cannot undo; only a power cut could take back the last commits (never corrupt
    // the file), and it spares each commit an fsync.
    database.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    database.pragma_update(None, "synchronous", "NORMAL")?;
    // Deleted and replaced content is overwritten with zeros rather than left in the
    // pages' free space, where a deleted message's text would stay in the file.
    database.pragma_update(None, "secure_delete", true)?;
    Ok(database)
}

/// The direct-message rooms of id `?1`, by their names' form, `dm.?1.<with>` or
/// `dm.<with>.?1`: name, the other id, last offset, `?1`'s read position and the
/// messages from the other id after it that are not deleted (a delete nulls the text).
/// Ids are digits and '-', which GLOB takes literally.
const DIRECT_ROOMS: &str = "
    SELECT name, other, last_offset, read,
        (SELECT count(*) FROM events
         WHERE events.room = direct.name AND events.offset > direct.read
           AND events.type = 'message' AND events.client = direct.other
           AND events.text IS NOT NULL)
    FROM (
        SELECT rooms.name AS name, rooms.last_offset AS last_offset,
            coalesce(reads.offset, 0) AS read,
            CASE WHEN rooms.name GLOB 'dm.' || ?1 || '.*'
                THEN substr(rooms.name, length(?1) + 5)
                ELSE substr(rooms.name, 4, length(rooms.name) - length(?1) - 4)
            END AS other
        FROM rooms LEFT JOIN reads ON reads.room = rooms.name AND reads.client = ?1
        WHERE rooms.name GLOB 'dm.' || ?1 || '.*' OR rooms.name GLOB 'dm.*.' || ?1
    ) AS direct
    ORDER BY name
";

/// The columns [`read_event`] reads, in its order.
const EVENT_COLUMNS: &str = "offset, ts, client, type, text, nonce, name, reply_to, kind";

/// The columns [`read_operation`] reads, in its order.
const OPERATION_COLUMNS: &str =
    "offset, ts, client, type, text, nonce, name, target, emoji, moderated";

/// The moderation fields of `room`.
fn read_rules(reader: &Connection, room: &str) -> rusqlite::Result<Vec<(String, String)>> {
    reader
        .prepare_cached("SELECT field, value FROM rules WHERE room = ?1")?
        .query_map([room], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

/// A moderation event's row, as the event it was (its JSON whole).
fn read_moderation(row: &rusqlite::Row<'_>) -> rusqlite::Result<v1::Event> {
    let json: String = row.get(1)?;
    serde_json::from_str(&json).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(error))
    })
}

/// Room `room`'s events from `first` to `last`, joins, leaves and messages with
/// operations, in offset order, as they were written (deleted texts aside).
fn read_range(
    reader: &Connection,
    room: &RoomName,
    first: u64,
    last: u64,
) -> rusqlite::Result<Vec<v1::Event>> {
    let range = |table: &str, columns: &str| {
        format!(
            "SELECT {columns} FROM {table} WHERE room = ?1 AND offset BETWEEN ?2 AND ?3
             ORDER BY offset"
        )
    };
    let mut events: Vec<v1::Event> = reader
        .prepare_cached(&range("events", EVENT_COLUMNS))?
        .query_map(params![room.as_str(), first, last], read_event)?
        .collect::<rusqlite::Result<_>>()?;
    let operations: Vec<v1::Event> = reader
        .prepare_cached(&range("operations", OPERATION_COLUMNS))?
        .query_map(params![room.as_str(), first, last], read_operation)?
        .collect::<rusqlite::Result<_>>()?;
    let moderation: Vec<v1::Event> = reader
        .prepare_cached(&range("moderation", "offset, event"))?
        .query_map(params![room.as_str(), first, last], read_moderation)?
        .collect::<rusqlite::Result<_>>()?;
    events.extend(operations);
    events.extend(moderation);
    events.sort_by_key(|event| event.offset);
    Ok(events)
}

/// Room `room`'s newest `count` events, oldest first, as far back as the history in
/// memory can hold ([`MAX_HISTORY_BYTES`]): a room's rows on disk can take far more,
/// and a load read them all (63 MiB for a room of 64 KiB messages) only for the room
/// to forget most of them at once.
fn read_newest(
    reader: &Connection,
    room: &RoomName,
    count: usize,
) -> rusqlite::Result<Vec<v1::Event>> {
    let newest = |table: &str, columns: &str| {
        format!("SELECT {columns} FROM {table} WHERE room = ?1 ORDER BY offset DESC LIMIT ?2")
    };
    // Newest first, until the texts read pass the budget: the oldest offset read, if
    // that cut the read short, or 0.
    fn within_budget(
        rows: impl Iterator<Item = rusqlite::Result<v1::Event>>,
    ) -> rusqlite::Result<(Vec<v1::Event>, u64)> {
        let (mut events, mut bytes) = (Vec::new(), 0);
        for event in rows {
            let event = event?;
            bytes += crate::room::backlog::cost(&event);
            let oldest = event.offset;
            events.push(event);
            if bytes > MAX_HISTORY_BYTES {
                return Ok((events, oldest));
            }
        }
        Ok((events, 0))
    }
    let mut statement = reader.prepare_cached(&newest("events", EVENT_COLUMNS))?;
    let (mut events, events_cut) =
        within_budget(statement.query_map(params![room.as_str(), count as i64], read_event)?)?;
    let mut statement = reader.prepare_cached(&newest("operations", OPERATION_COLUMNS))?;
    let (operations, operations_cut) =
        within_budget(statement.query_map(params![room.as_str(), count as i64], read_operation)?)?;
    events.extend(operations);
    // Few and small: never what passes the budget.
    let moderation: Vec<v1::Event> = reader
        .prepare_cached(&newest("moderation", "offset, event"))?
        .query_map(params![room.as_str(), count as i64], read_moderation)?
        .collect::<rusqlite::Result<_>>()?;
    events.extend(moderation);
    // Where either read stopped short, the other's older rows would leave a gap.
    let cut = events_cut.max(operations_cut);
    events.retain(|event| event.offset >= cut);
    events.sort_by_key(|event| std::cmp::Reverse(event.offset));
    events.truncate(count);
    events.reverse();
    Ok(events)
}

/// The operations on room `room`'s events from `first` to `last`, in log order:
/// what brings those events to their latest state.
fn read_operations_on(
    reader: &Connection,
    room: &RoomName,
    first: u64,
    last: u64,
) -> rusqlite::Result<Vec<v1::Event>> {
    reader
        .prepare_cached(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations
             WHERE room = ?1 AND target BETWEEN ?2 AND ?3 ORDER BY offset"
        ))?
        .query_map(params![room.as_str(), first, last], read_operation)?
        .collect()
}

/// Room `room`'s messages at `offsets`, oldest first, their edits, deletes and
/// reactions applied: two queries, however many offsets (a search's hits, scattered
/// over the whole history), where a range read per hit made a search of 100 hits 400
/// queries.
fn read_messages_at(
    reader: &Connection,
    room: &RoomName,
    offsets: &[u64],
) -> rusqlite::Result<Vec<v1::Event>> {
    let listed = serde_json::to_string(offsets).expect("numbers serialize");
    let mut messages: Vec<v1::Event> = reader
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room = ?1 AND offset IN (SELECT value FROM json_each(?2)) ORDER BY offset"
        ))?
        .query_map(params![room.as_str(), listed], read_event)?
        .collect::<rusqlite::Result<_>>()?;
    let operations: Vec<v1::Event> = reader
        .prepare_cached(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations
             WHERE room = ?1 AND target IN (SELECT value FROM json_each(?2)) ORDER BY offset"
        ))?
        .query_map(params![room.as_str(), listed], read_operation)?
        .collect::<rusqlite::Result<_>>()?;
    v2::apply_all(&mut messages, &operations);
    Ok(messages)
}

/// A search's FTS5 query: every term, as the start of a word.
fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|term| format!("\"{}\"*", term.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// An operation's row, as the event it was.
fn read_operation(row: &rusqlite::Row<'_>) -> rusqlite::Result<v1::Event> {
    let kind: String = row.get(3)?;
    let target: u64 = row.get(7)?;
    let nonce: Option<String> = row.get(5)?;
    let emoji = || {
        row.get::<_, Option<String>>(8)
            .map(Option::unwrap_or_default)
    };
    let kind = match kind.as_str() {
        "edit" => {
            // A deleted message's edits lost their text with it.
            let text: Option<String> = row.get(4)?;
            EventKind::Edit {
                target,
                deleted: text.is_none(),
                text: text.unwrap_or_default(),
                nonce,
            }
        }
        "delete" => EventKind::Delete {
            target,
            nonce,
            moderated: row.get::<_, Option<bool>>(9)?.unwrap_or(false),
        },
        "react" => EventKind::React {
            target,
            emoji: emoji()?,
            nonce,
        },
        _ => EventKind::Unreact {
            target,
            emoji: emoji()?,
            nonce,
        },
    };
    Ok(v1::Event {
        offset: row.get(0)?,
        ts: row.get(1)?,
        id: row.get(2)?,
        name: read_name(row, 6)?,
        kind,
    })
}

fn read_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<v1::Event> {
    let kind: String = row.get(3)?;
    let kind = match kind.as_str() {
        "join" => EventKind::join(),
        "leave" => EventKind::leave(),
        _ => EventKind::Message {
            text: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
            nonce: row.get(5)?,
            reply_to: row.get(7)?,
            kind: row
                .get::<_, Option<String>>(8)?
                .filter(|kind| kind == "action")
                .map(|_| v1::MessageKind::Action),
            state: v1::MessageState::default(),
        },
    };
    Ok(v1::Event {
        offset: row.get(0)?,
        ts: row.get(1)?,
        id: row.get(2)?,
        name: read_name(row, 6)?,
        kind,
    })
}

/// A stored name, checked again as it is read: one no client could have had (a
/// hand-edited database) is left out rather than shown.
fn read_name(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Option<DisplayName>> {
    let name: Option<String> = row.get(column)?;
    Ok(name.and_then(|name| DisplayName::parse(&name).ok()))
}

/// The writer thread's side.
struct DatabaseWriter {
    database: Connection,
    backlog: Arc<Backlog>,
    trouble: Arc<Mutex<Option<String>>>,
    history: usize,
    /// The most bytes of a room's rows kept, as [`ROW_BYTES`] counts them.
    history_bytes: u64,
    /// What each room's kept rows take, and the last offset counted, by the room's
    /// rowid: summed when the room is first written in this run, then kept up to date
    /// by each write. Forgotten when a write fails, since the transaction's changes are
    /// rolled back, and when rooms are forgotten, since a rowid can be used again.
    stored: HashMap<i64, (u64, u64)>,
    metrics: Arc<Metrics>,
    /// A delete took a text out, and the write-ahead log may still hold it.
    unpurged_log: bool,
    /// The runtime the sessions run on, whose timers a fan-out waits with; `None`
    /// when the journal was opened outside one (then nothing waits).
    runtime: Option<tokio::runtime::Handle>,
}

/// One event on its way to the database.
struct Append {
    room: Arc<Room>,
    key: u64,
    event: v1::Event,
}

/// A read position on its way to the database.
struct Read {
    room: RoomName,
    id: String,
    offset: u64,
}

impl DatabaseWriter {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut reads = Vec::new();
        let mut closed = None;
        while closed.is_none() {
            let Ok(first) = commands.recv() else {
                return;
            };
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(append) => batch.push(append),
                    Command::Read(read) => reads.push(read),
                    Command::Close(done) => closed = Some(done),
                }
                if closed.is_none() && batch.len() + reads.len() < MAX_BATCH {
                    next = commands.try_recv().ok();
                }
            }
            if !batch.is_empty() || !reads.is_empty() {
                self.write_until_done(&batch, &reads);
                self.fan_out(&mut batch);
                reads.clear();
            }
        }
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    /// Writes `batch`, trying again until it is written: the events are the server's
    /// word to its clients, and are never dropped.
    fn write_until_done(&mut self, batch: &[Append], reads: &[Read]) {
        let mut failing = false;
        let Written { purged, first_kept } = loop {
            let kept = Kept {
                events: self.history,
                bytes: self.history_bytes,
            };
            let stored = &mut self.stored;
            let written = self
                .database
                .transaction()
                .and_then(|transaction| write(transaction, batch, reads, kept, stored));
            match written {
                Ok(written) => break written,
                Err(write_error) => {
                    self.stored.clear();
                    if !failing {
                        error!(
                            %write_error,
                            events = batch.len(),
                            "cannot write the history; refusing new sessions and retrying every second"
                        );
                    }
                    failing = true;
                    // Said to anyone who asks (/healthz, refused handshakes): the
                    // error itself is for the log.
                    *lock(&self.trouble) = Some("cannot write the history".to_owned());
                    thread::sleep(RETRY_EVERY);
                }
            }
        };
        if failing {
            info!("history written again; accepting sessions");
            *lock(&self.trouble) = None;
        }
        // Before the fan-out: a welcome in it says how far back the store reaches.
        for Append { room, .. } in batch {
            if let Some(&first) = first_kept.get(room.name()) {
                room.stored_from(first);
            }
        }
        self.unpurged_log |= purged;
        if self.unpurged_log {
            self.unpurged_log = !empty_the_log(&self.database);
        }
        self.metrics.journal_written(batch.len());
    }

    /// Has each room fan out what was just written, in order, each event only once
    /// its room's members have room for it (see `room::outbox::drained_by`): a batch
    /// can hold megabytes (the whole backlog, after a full disk recovers), which pushed
    /// at once would overflow the outboxes of clients reading at full speed. Each
    /// event is released from the backlog as it goes, so senders read on meanwhile.
    fn fan_out(&self, batch: &mut Vec<Append>) {
        let deadline = tokio::time::Instant::now() + DELIVERY_GRACE;
        for Append { room, key, event } in batch.drain(..) {
            let full = room.full_outboxes();
            if !full.is_empty()
                && let Some(runtime) = &self.runtime
            {
                // This thread is not the runtime's: it blocks here, as it does on the
                // disk, and the sessions go on.
                runtime.block_on(drained_by(full, deadline));
            }
            let bytes = cost(&event);
            room.fan_out(key, event);
            self.backlog.release(bytes);
        }
    }
}

/// What a room's history keeps on disk: its last `events`, and of those no more than
/// `bytes` (as [`ROW_BYTES`] counts them).
#[derive(Clone, Copy)]
struct Kept {
    events: usize,
    bytes: u64,
}

/// What a write did beside writing.
struct Written {
    /// A delete took a text out.
    purged: bool,
    /// The oldest offset each room written to keeps now.
    first_kept: HashMap<RoomName, u64>,
}

/// Writes one batch in one transaction: the events, who joined and left, the search
/// index, what deletes take back, read positions, each room's last offset; and forgets
/// what is past the history's bounds, in events and in bytes.
fn write(
    transaction: Transaction<'_>,
    batch: &[Append],
    reads: &[Read],
    kept: Kept,
    stored: &mut HashMap<i64, (u64, u64)>,
) -> rusqlite::Result<Written> {
    let history = kept.events;
    let mut first_kept = HashMap::new();
    let mut purged = false;
    let mut last: HashMap<&RoomName, (&Room, &v1::Event)> = HashMap::new();
    let mut rowids: HashMap<&RoomName, i64> = HashMap::new();
    let mut new_rooms = false;
    for Append { room, key, event } in batch {
        let rowid = match rowids.get(room.name()) {
            Some(rowid) => *rowid,
            None => {
                let (rowid, new) = room_rowid(&transaction, room, event)?;
                new_rooms |= new;
                rowids.insert(room.name(), rowid);
                rowid
            }
        };
        if history > 0 {
            purged |= write_event(&transaction, room.name(), rowid, event)?;
        }
        let name = room.name().as_str();
        let who = event.name.as_ref().map(DisplayName::as_str);
        match event.kind {
            EventKind::Join { .. } => {
                transaction
                    .prepare_cached(
                        "INSERT OR REPLACE INTO members (room, key, client, since, name)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![name, key, event.id, event.ts, who])?;
            }
            EventKind::Leave { .. } => {
                transaction
                    .prepare_cached("DELETE FROM members WHERE room = ?1 AND key = ?2")?
                    .execute(params![name, key])?;
            }
            _ => {}
        }
        last.insert(room.name(), (room, event));
    }
    for Read { room, id, offset } in reads {
        transaction
            .prepare_cached(
                "INSERT INTO reads (room, client, offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room, client) DO UPDATE SET offset = max(offset, excluded.offset)",
            )?
            .execute(params![room.as_str(), id, offset])?;
    }
    {
        let mut update = transaction
            .prepare_cached("UPDATE rooms SET last_offset = ?2, last_ts = ?3 WHERE name = ?1")?;
        for (name, (_, event)) in &last {
            update.execute(params![name.as_str(), event.offset, event.ts])?;
            let rowid = rowids[name];
            let by_count = event.offset.saturating_sub(history as u64) + 1;
            let first = first_within_bytes(
                &transaction,
                name,
                (rowid, event.offset),
                by_count,
                kept.bytes,
                stored,
            )?;
            forget_before(&transaction, name, rowid, first)?;
            first_kept.insert((*name).clone(), first);
        }
    }
    if new_rooms {
        forget_rooms_past_the_bound(&transaction)?;
        stored.clear();
    }
    transaction.commit()?;
    Ok(Written { purged, first_kept })
}

/// What a row of `events` or `operations` is counted as against a room's byte budget:
/// its texts, and about what SQLite and the search index spend on a row besides.
const ROW_BYTES: &str =
    "(64 + length(CAST(client AS BLOB)) + coalesce(length(CAST(name AS BLOB)), 0)
     + coalesce(length(CAST(text AS BLOB)), 0) + coalesce(length(CAST(nonce AS BLOB)), 0))";

/// The oldest offset room `name` (row `rowid`, last offset `last`) can keep: no older
/// than `by_count` (what its budget in events keeps), within its budget in bytes, and
/// never past its newest row. Updates `stored` to what is kept from there.
///
/// Only the rows the room gives up are read (oldest first, along the primary key), and
/// those written since its last write are summed: a write costs no scan of the history,
/// but for one sum of the room's rows the first time this run writes to it. A delete
/// that takes a text out leaves the sum higher than the rows: the room then keeps a
/// little less than its budget, never more.
fn first_within_bytes(
    transaction: &Transaction<'_>,
    name: &RoomName,
    (rowid, last): (i64, u64),
    by_count: u64,
    budget: u64,
    stored: &mut HashMap<i64, (u64, u64)>,
) -> rusqlite::Result<u64> {
    let room = name.as_str();
    let (before, counted_to) = match stored.get(&rowid) {
        Some(&(bytes, counted_to)) => (bytes, counted_to as i64),
        None => (0, -1),
    };
    let written: i64 = transaction
        .prepare_cached(&format!(
            "SELECT (SELECT coalesce(sum({ROW_BYTES}), 0) FROM events
                     WHERE room = ?1 AND offset > ?2)
                  + (SELECT coalesce(sum({ROW_BYTES} + {EMOJI_BYTES}), 0) FROM operations
                     WHERE room = ?1 AND offset > ?2)"
        ))?
        .query_row(params![room, counted_to], |row| row.get(0))?;
    let mut total = before + written as u64;
    let oldest_first = |table: &str, extra: &str| {
        format!("SELECT offset, {ROW_BYTES} + {extra} FROM {table} WHERE room = ?1 ORDER BY offset")
    };
    let mut events = transaction.prepare_cached(&oldest_first("events", "0"))?;
    let mut operations = transaction.prepare_cached(&oldest_first("operations", EMOJI_BYTES))?;
    let mut events = events.query_map([room], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let mut operations = operations.query_map([room], |row| Ok((row.get(0)?, row.get(1)?)))?;
    // Each table's next row, as (offset, bytes).
    let mut event: Option<(u64, i64)> = events.next().transpose()?;
    let mut operation: Option<(u64, i64)> = operations.next().transpose()?;
    let mut first = last;
    // The two tables share one offset space: merged, oldest first.
    loop {
        let take_event = match (event, operation) {
            (Some((e, _)), Some((o, _))) => e < o,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let (offset, bytes) = if take_event {
            event.expect("checked")
        } else {
            operation.expect("checked")
        };
        if offset >= last || (offset >= by_count && total <= budget) {
            first = offset;
            break;
        }
        total = total.saturating_sub(bytes as u64);
        if take_event {
            event = events.next().transpose()?;
        } else {
            operation = operations.next().transpose()?;
        }
    }
    stored.insert(rowid, (total, last));
    Ok(first.max(by_count))
}

/// What an operation's emoji adds to [`ROW_BYTES`].
const EMOJI_BYTES: &str = "coalesce(length(CAST(emoji AS BLOB)), 0)";

/// Moves every commit into the database file and empties the write-ahead log, whose
/// older frames still hold the texts a delete just took out; returns whether it could.
/// It does not wait: while a reader is in the log, the writer (which every room waits
/// on) would wait with it, so it gives up at once and is tried again after the next
/// write. Deletes are rare, and each costs one checkpoint.
fn empty_the_log(database: &Connection) -> bool {
    let checkpoint = database.busy_timeout(Duration::ZERO).and_then(|()| {
        database.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        })
    });
    if let Err(timeout_error) = database.busy_timeout(BUSY_TIMEOUT) {
        warn!(%timeout_error, "cannot set the database's busy timeout again");
    }
    match checkpoint {
        Ok(0) => true,
        // A reader was in the way.
        Ok(_)
        | Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error {
                code: rusqlite::ErrorCode::DatabaseBusy,
                ..
            },
            _,
        )) => false,
        Err(checkpoint_error) => {
            warn!(%checkpoint_error, "cannot empty the write-ahead log after a delete");
            false
        }
    }
}

/// The rowid of `room`'s row, made now (as of `event`) if it has none; and whether it
/// was made.
fn room_rowid(
    transaction: &Transaction<'_>,
    room: &Room,
    event: &v1::Event,
) -> rusqlite::Result<(i64, bool)> {
    let name = room.name().as_str();
    let found = transaction
        .prepare_cached("SELECT rowid FROM rooms WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()?;
    if let Some(rowid) = found {
        return Ok((rowid, false));
    }
    transaction
        .prepare_cached(
            "INSERT INTO rooms (name, epoch, last_offset, last_ts) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![name, room.epoch(), event.offset, event.ts])?;
    Ok((transaction.last_insert_rowid(), true))
}

/// Writes one event of room `name` (whose row is `rowid`): a join, leave or message in
/// `events`, an operation in `operations`, and what it changes in the search index; a
/// delete also takes the text out of its message and the message's edits, and says so.
fn write_event(
    transaction: &Transaction<'_>,
    name: &RoomName,
    rowid: i64,
    event: &v1::Event,
) -> rusqlite::Result<bool> {
    let room = name.as_str();
    let who = event.name.as_ref().map(DisplayName::as_str);
    if event.kind.is_moderation() {
        write_moderation(transaction, room, event)?;
        return Ok(false);
    }
    let mut moderated = None;
    let (kind, target, text, emoji, nonce) = match &event.kind {
        EventKind::Join { .. } | EventKind::Leave { .. } | EventKind::Message { .. } => {
            let (kind, text, nonce, reply_to, action) = match &event.kind {
                EventKind::Join { .. } => ("join", None, None, None, None),
                EventKind::Leave { .. } => ("leave", None, None, None, None),
                EventKind::Message {
                    text,
                    nonce,
                    reply_to,
                    kind,
                    ..
                } => (
                    "message",
                    Some(text),
                    nonce.as_ref(),
                    *reply_to,
                    kind.map(|_| "action"),
                ),
                _ => unreachable!("matched above"),
            };
            transaction
                .prepare_cached(
                    "INSERT INTO events (room, offset, ts, client, type, text, nonce, name,
                     reply_to, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    room,
                    event.offset,
                    event.ts,
                    event.id,
                    kind,
                    text,
                    nonce,
                    who,
                    reply_to,
                    action
                ])?;
            if let Some(text) = text.filter(|text| !text.is_empty()) {
                transaction
                    .prepare_cached("INSERT INTO message_index (rowid, text) VALUES (?1, ?2)")?
                    .execute(params![index_key(rowid, event.offset), text])?;
            }
            return Ok(false);
        }
        EventKind::Edit {
            target,
            text,
            nonce,
            ..
        } => ("edit", target, Some(text), None, nonce.as_ref()),
        EventKind::Delete {
            target,
            nonce,
            moderated: by_moderator,
        } => {
            moderated = by_moderator.then_some(true);
            ("delete", target, None, None, nonce.as_ref())
        }
        EventKind::React {
            target,
            emoji,
            nonce,
        } => ("react", target, None, Some(emoji), nonce.as_ref()),
        EventKind::Unreact {
            target,
            emoji,
            nonce,
        } => ("unreact", target, None, Some(emoji), nonce.as_ref()),
        _ => unreachable!("moderation events are written above"),
    };
    transaction
        .prepare_cached(
            "INSERT INTO operations (room, offset, ts, client, name, type, target, text,
             emoji, nonce, moderated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            room,
            event.offset,
            event.ts,
            event.id,
            who,
            kind,
            target,
            text,
            emoji,
            nonce,
            moderated
        ])?;
    // The rules of `chat::v2::apply`: only the author's edit or delete (or a
    // moderator's delete) of a message that is not deleted changes it.
    let own_message = |transaction: &Transaction<'_>| {
        transaction
            .prepare_cached(
                "SELECT 1 FROM events WHERE room = ?1 AND offset = ?2 AND type = 'message'
                 AND (client = ?3 OR ?4) AND text IS NOT NULL",
            )?
            .exists(params![room, target, event.id, moderated.is_some()])
    };
    match &event.kind {
        EventKind::Edit { text, .. } if own_message(transaction)? => {
            transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO message_index (rowid, text) VALUES (?1, ?2)",
                )?
                .execute(params![index_key(rowid, *target), text])?;
        }
        EventKind::Delete { .. } if own_message(transaction)? => {
            transaction
                .prepare_cached(
                    "UPDATE events SET text = NULL, nonce = NULL, reply_to = NULL, kind = NULL
                     WHERE room = ?1 AND offset = ?2",
                )?
                .execute(params![room, target])?;
            transaction
                .prepare_cached(
                    "UPDATE operations SET text = NULL, nonce = NULL
                     WHERE room = ?1 AND target = ?2 AND type = 'edit'",
                )?
                .execute(params![room, target])?;
            transaction
                .prepare_cached("DELETE FROM message_index WHERE rowid = ?1")?
                .execute([index_key(rowid, *target)])?;
            return Ok(true);
        }
        _ => {}
    }
    Ok(false)
}

/// Writes a moderation event of `room`, and what it changes in the room's rules.
fn write_moderation(
    transaction: &Transaction<'_>,
    room: &str,
    event: &v1::Event,
) -> rusqlite::Result<()> {
    let json = event.to_json();
    let kind = serde_json::from_str::<serde_json::Value>(&json)
        .ok()
        .and_then(|value| Some(value.get("type")?.as_str()?.to_owned()))
        .unwrap_or_default();
    let member = match &event.kind {
        EventKind::Kick { member, .. }
        | EventKind::Ban { member, .. }
        | EventKind::Unban { member, .. }
        | EventKind::Mute { member, .. }
        | EventKind::Unmute { member, .. }
        | EventKind::Role { member, .. } => Some(member.as_str()),
        _ => None,
    };
    transaction
        .prepare_cached(
            "INSERT INTO moderation (room, offset, type, member, event)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![room, event.offset, kind, member, json])?;
    if let Some(change) = rules::change(event) {
        write_rule(transaction, room, &change)?;
    }
    Ok(())
}

/// Keeps one change of `room`'s rules.
fn write_rule(transaction: &Transaction<'_>, room: &str, change: &Change) -> rusqlite::Result<()> {
    match &change.value {
        Some(value) => transaction
            .prepare_cached(
                "INSERT OR REPLACE INTO rules (room, field, value) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![room, change.field, value])?,
        None => transaction
            .prepare_cached("DELETE FROM rules WHERE room = ?1 AND field = ?2")?
            .execute(params![room, change.field])?,
    };
    Ok(())
}

/// Forgets room `name`'s events (and their index entries) before offset `first_kept`.
fn forget_before(
    transaction: &Transaction<'_>,
    name: &RoomName,
    rowid: i64,
    first_kept: u64,
) -> rusqlite::Result<()> {
    let room = name.as_str();
    let forgotten = transaction
        .prepare_cached("DELETE FROM events WHERE room = ?1 AND offset < ?2")?
        .execute(params![room, first_kept])?;
    transaction
        .prepare_cached("DELETE FROM operations WHERE room = ?1 AND offset < ?2")?
        .execute(params![room, first_kept])?;
    transaction
        .prepare_cached("DELETE FROM moderation WHERE room = ?1 AND offset < ?2")?
        .execute(params![room, first_kept])?;
    if forgotten > 0 {
        transaction
            .prepare_cached("DELETE FROM message_index WHERE rowid >= ?1 AND rowid < ?2")?
            .execute(params![index_key(rowid, 0), index_key(rowid, first_kept)])?;
    }
    Ok(())
}

/// Brings a database of schema `version` (0 for a new one) to [`SCHEMA_VERSION`], in
/// one transaction: a server stopped halfway leaves the old schema whole, rather than
/// columns added under the old version, which the next start would add again and fail.
fn migrate(database: &Connection, version: i64) -> rusqlite::Result<()> {
    let transaction = database.unchecked_transaction()?;
    if version == 1 {
        transaction.execute_batch(NAMES_MIGRATION)?;
    }
    if (1..=2).contains(&version) {
        transaction.execute_batch(V2_MIGRATION)?;
    }
    if version == 3 {
        transaction.execute_batch(MODERATION_MIGRATION)?;
    }
    transaction.execute_batch(SCHEMA)?;
    transaction.execute_batch(FTS_SECURE_DELETE)?;
    if (1..=2).contains(&version) {
        transaction.execute_batch(INDEX_KEPT_MESSAGES)?;
    }
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    transaction.commit()
}

/// Forgets the rooms heard from longest ago while there are more than
/// [`MAX_STORED_ROOMS`].
fn forget_rooms_past_the_bound(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    let stored: usize =
        transaction.query_row("SELECT count(*) FROM rooms", [], |row| row.get(0))?;
    for _ in MAX_STORED_ROOMS..stored {
        let oldest: String = transaction.query_row(
            "SELECT name FROM rooms ORDER BY last_ts LIMIT 1",
            [],
            |row| row.get(0),
        )?;
        let rowid: i64 = transaction.query_row(
            "SELECT rowid FROM rooms WHERE name = ?1",
            [&oldest],
            |row| row.get(0),
        )?;
        transaction.execute(
            "DELETE FROM message_index WHERE rowid >= ?1 AND rowid < ?2",
            params![index_key(rowid, 0), index_key(rowid + 1, 0)],
        )?;
        for table in [
            "DELETE FROM events WHERE room = ?1",
            "DELETE FROM operations WHERE room = ?1",
            "DELETE FROM moderation WHERE room = ?1",
            "DELETE FROM reads WHERE room = ?1",
            "DELETE FROM members WHERE room = ?1",
            "DELETE FROM rooms WHERE name = ?1",
        ] {
            transaction.execute(table, [&oldest])?;
        }
        info!(room = %oldest, "forgot the history of the room heard from longest ago");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_from_before_names_is_migrated_and_keeps_its_events() {
        let database = Connection::open_in_memory().unwrap();
        // Schema 1, as the server before names wrote it.
        database
            .execute_batch(
                "CREATE TABLE rooms (name TEXT PRIMARY KEY, epoch TEXT NOT NULL,
                     last_offset INTEGER NOT NULL, last_ts INTEGER NOT NULL);
                 CREATE TABLE events (room TEXT NOT NULL, offset INTEGER NOT NULL,
                     ts INTEGER NOT NULL, client TEXT NOT NULL, type TEXT NOT NULL,
                     text TEXT, nonce TEXT, PRIMARY KEY (room, offset)) WITHOUT ROWID;
                 CREATE TABLE members (room TEXT NOT NULL, key INTEGER NOT NULL,
                     client TEXT NOT NULL, since INTEGER NOT NULL,
                     PRIMARY KEY (room, key)) WITHOUT ROWID;
                 INSERT INTO events VALUES ('main', 1, 5, '7', 'message', 'old', NULL);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        migrate(&database, 1).unwrap();
        let version: i64 = database
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        database
            .execute(
                "INSERT INTO events (room, offset, ts, client, type, name)
                 VALUES ('main', 2, 6, '8', 'join', 'Ada')",
                [],
            )
            .unwrap();
        let events: Vec<v1::Event> = database
            .prepare(&format!("SELECT {EVENT_COLUMNS} FROM events"))
            .unwrap()
            .query_map([], read_event)
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(events[0].plain().unwrap(), "Client #7: old");
        assert_eq!(events[0].name, None);
        assert_eq!(events[1].name, Some(DisplayName::parse("Ada").unwrap()));
    }

    #[test]
    fn past_the_bound_the_rooms_heard_from_longest_ago_are_forgotten() {
        let mut database = Connection::open_in_memory().unwrap();
        database.execute_batch(SCHEMA).unwrap();
        let transaction = database.transaction().unwrap();
        let extra = 3;
        for n in 0..MAX_STORED_ROOMS + extra {
            // Room n was last heard from at time n, except that room 0 is the newest.
            let last_ts = if n == 0 { u64::MAX >> 1 } else { n as u64 };
            transaction
                .execute(
                    "INSERT INTO rooms VALUES (?1, 'e', 1, ?2)",
                    params![format!("r{n}"), last_ts],
                )
                .unwrap();
            transaction
                .execute(
                    "INSERT INTO events (room, offset, ts, client, type) VALUES (?1, 1, 0, '1', 'join')",
                    [format!("r{n}")],
                )
                .unwrap();
        }
        forget_rooms_past_the_bound(&transaction).unwrap();
        let count = |table: &str| -> usize {
            transaction
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .unwrap()
        };
        assert_eq!(count("rooms"), MAX_STORED_ROOMS);
        assert_eq!(count("events"), MAX_STORED_ROOMS);
        let forgotten: usize = transaction
            .query_row(
                "SELECT count(*) FROM rooms WHERE name IN ('r1', 'r2', 'r3')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(forgotten, 0, "the three heard from longest ago");
    }

    fn event(offset: u64, id: &str, kind: EventKind) -> v1::Event {
        v1::Event {
            offset,
            ts: offset * 10,
            id: id.into(),
            name: None,
            kind,
        }
    }

    /// A database of the current schema with room `main` (rowid 1) in it.
    fn database() -> Connection {
        let database = Connection::open_in_memory().unwrap();
        migrate(&database, 0).unwrap();
        database
            .execute("INSERT INTO rooms VALUES ('main', 'e', 0, 0)", [])
            .unwrap();
        database
    }

    fn write_all(database: &mut Connection, events: &[v1::Event]) {
        let transaction = database.transaction().unwrap();
        for event in events {
            write_event(&transaction, &RoomName::default(), 1, event).unwrap();
        }
        transaction.commit().unwrap();
    }

    fn search(database: &Connection, text: &str) -> Vec<u64> {
        let terms = v2::search_words(text, None).unwrap();
        database
            .prepare("SELECT rowid FROM message_index WHERE message_index MATCH ?1 ORDER BY rowid")
            .unwrap()
            .query_map([fts_query(&terms)], |row| row.get::<_, i64>(0))
            .unwrap()
            .map(|key| (key.unwrap() - index_key(1, 0)) as u64)
            .collect()
    }

    #[test]
    fn every_kind_of_event_reads_back_as_it_was_written() {
        let mut database = database();
        let message = EventKind::Message {
            text: "waves".into(),
            nonce: Some("n".into()),
            reply_to: Some(1),
            kind: Some(v1::MessageKind::Action),
            state: v1::MessageState::default(),
        };
        let events = [
            event(1, "7", EventKind::join()),
            event(2, "7", message),
            event(
                3,
                "7",
                EventKind::Edit {
                    target: 2,
                    text: "waves!".into(),
                    nonce: None,
                    deleted: false,
                },
            ),
            event(
                4,
                "8",
                EventKind::React {
                    target: 2,
                    emoji: "👍".into(),
                    nonce: Some("r".into()),
                },
            ),
            event(
                5,
                "8",
                EventKind::Unreact {
                    target: 2,
                    emoji: "👍".into(),
                    nonce: None,
                },
            ),
            event(6, "9", EventKind::said("hi", None)),
            event(
                7,
                "9",
                EventKind::Delete {
                    moderated: false,
                    target: 6,
                    nonce: None,
                },
            ),
            event(8, "7", EventKind::leave()),
        ];
        write_all(&mut database, &events);
        let read = read_range(&database, &RoomName::default(), 1, 8).unwrap();
        assert_eq!(read[..5], events[..5]);
        assert_eq!(
            read[5].kind,
            EventKind::said("", None),
            "the deleted text is gone"
        );
        assert_eq!(read[6..], events[6..]);
        assert_eq!(
            read_newest(&database, &RoomName::default(), 3).unwrap(),
            read[5..]
        );
        // In their latest state, as a page shows them.
        let mut page = read_range(&database, &RoomName::default(), 2, 6).unwrap();
        v2::apply_all(
            &mut page,
            &read_operations_on(&database, &RoomName::default(), 2, 6).unwrap(),
        );
        assert_eq!(
            page[0].to_json(),
            r#"{"offset":2,"ts":20,"id":"7","type":"message","text":"waves!","nonce":"n","reply_to":1,"kind":"action","edited":true}"#
        );
        assert_eq!(
            page[4].to_json(),
            r#"{"offset":6,"ts":60,"id":"9","type":"message","text":"","deleted":true}"#
        );
    }

    #[test]
    fn a_delete_takes_the_text_out_of_every_table_and_the_index() {
        let mut database = database();
        write_all(
            &mut database,
            &[
                event(
                    1,
                    "7",
                    EventKind::said("the launch code is swordfish", Some("n1".into())),
                ),
                event(
                    2,
                    "7",
                    EventKind::Edit {
                        target: 1,
                        text: "the code is marlin".into(),
                        nonce: None,
                        deleted: false,
                    },
                ),
                event(3, "8", EventKind::said("swordfish? marlin?", None)),
                event(
                    4,
                    "8",
                    EventKind::Delete {
                        moderated: false,
                        target: 1,
                        nonce: None,
                    },
                ),
            ],
        );
        assert_eq!(
            search(&database, "marlin"),
            [1, 3],
            "someone else's delete changes nothing"
        );
        write_all(
            &mut database,
            &[event(
                5,
                "7",
                EventKind::Delete {
                    moderated: false,
                    target: 1,
                    nonce: None,
                },
            )],
        );
        for table in ["events", "operations"] {
            let found: i64 = database
                .query_row(
                    &format!("SELECT count(*) FROM {table} WHERE room = 'main' AND offset < 3
                              AND (text LIKE '%swordfish%' OR text LIKE '%marlin%' OR nonce IS NOT NULL)"),
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(found, 0, "{table}");
        }
        assert_eq!(search(&database, "marlin"), [3]);
        assert_eq!(search(&database, "swordfish"), [3]);
        assert_eq!(search(&database, "launch"), Vec::<u64>::new());
        let edit = &read_range(&database, &RoomName::default(), 2, 2).unwrap()[0];
        assert!(
            matches!(&edit.kind, EventKind::Edit { deleted: true, text, .. } if text.is_empty())
        );
    }

    #[test]
    fn search_finds_words_by_their_start_in_the_latest_text() {
        let mut database = database();
        write_all(
            &mut database,
            &[
                event(1, "7", EventKind::said("Deployed the café build", None)),
                event(2, "7", EventKind::said("note 29", None)),
                event(
                    3,
                    "7",
                    EventKind::Edit {
                        target: 2,
                        text: "note 30".into(),
                        nonce: None,
                        deleted: false,
                    },
                ),
            ],
        );
        assert_eq!(search(&database, "deploy"), [1]);
        assert_eq!(search(&database, "CAFÉ build"), [1]);
        assert_eq!(
            search(&database, "note 2"),
            Vec::<u64>::new(),
            "edited away"
        );
        assert_eq!(search(&database, "note 3"), [2]);
        assert_eq!(
            search(&database, "\"quoted\" (or) NOT"),
            Vec::<u64>::new(),
            "no FTS syntax"
        );
    }

    /// A search's hits, scattered, read at once: each message in its latest state.
    #[test]
    fn messages_at_scattered_offsets_are_read_with_their_operations() {
        let mut database = database();
        let mut events: Vec<v1::Event> = (1..=40)
            .map(|offset| event(offset, "7", EventKind::said(format!("m{offset}"), None)))
            .collect();
        let edit = EventKind::Edit {
            target: 30,
            text: "m30 again".into(),
            nonce: None,
            deleted: false,
        };
        let react = EventKind::React {
            target: 3,
            emoji: "👍".into(),
            nonce: None,
        };
        events.push(event(41, "7", edit));
        events.push(event(42, "8", react));
        write_all(&mut database, &events);
        let found = read_messages_at(&database, &RoomName::default(), &[30, 3, 17]).unwrap();
        let texts: Vec<_> = found
            .iter()
            .map(|event| match &event.kind {
                EventKind::Message { text, state, .. } => {
                    (event.offset, text.clone(), state.clone())
                }
                other => panic!("not a message: {other:?}"),
            })
            .collect();
        assert_eq!(
            texts
                .iter()
                .map(|(offset, text, _)| (*offset, text.as_str()))
                .collect::<Vec<_>>(),
            [(3, "m3"), (17, "m17"), (30, "m30 again")]
        );
        assert_ne!(
            texts[0].2,
            v1::MessageState::default(),
            "the reaction is applied"
        );
        assert_eq!(texts[1].2, v1::MessageState::default());
    }

    #[test]
    fn a_chat_v1_database_is_migrated_and_its_messages_indexed() {
        let database = Connection::open_in_memory().unwrap();
        database
            .execute_batch(
                "CREATE TABLE rooms (name TEXT PRIMARY KEY, epoch TEXT NOT NULL,
                     last_offset INTEGER NOT NULL, last_ts INTEGER NOT NULL);
                 CREATE TABLE events (room TEXT NOT NULL, offset INTEGER NOT NULL,
                     ts INTEGER NOT NULL, client TEXT NOT NULL,
                     type TEXT NOT NULL CHECK (type IN ('join', 'leave', 'message')),
                     text TEXT, nonce TEXT, name TEXT, PRIMARY KEY (room, offset)) WITHOUT ROWID;
                 CREATE TABLE members (room TEXT NOT NULL, key INTEGER NOT NULL,
                     client TEXT NOT NULL, since INTEGER NOT NULL, name TEXT,
                     PRIMARY KEY (room, key)) WITHOUT ROWID;
                 INSERT INTO rooms VALUES ('main', 'e', 2, 6);
                 INSERT INTO events VALUES ('main', 1, 5, '7', 'join', NULL, NULL, NULL);
                 INSERT INTO events VALUES ('main', 2, 6, '7', 'message', 'kept from v1', 'n', 'Ada');
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        let schema = |database: &Connection| -> String {
            database
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE name = 'events'",
                    [],
                    |row| row.get(0),
                )
                .unwrap()
        };
        let before = schema(&database);
        migrate(&database, 2).unwrap();
        assert_eq!(
            schema(&database),
            before.replace("name TEXT,", "name TEXT, reply_to INTEGER, kind TEXT,"),
            "the table is altered in place, not rebuilt"
        );
        let version: i64 = database
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let read = read_range(&database, &RoomName::default(), 1, 2).unwrap();
        assert_eq!(
            read[1].kind,
            EventKind::said("kept from v1", Some("n".into()))
        );
        assert_eq!(search(&database, "kept"), [2]);
    }

    /// A folder of its own for one test's database, removed afterwards.
    struct Folder(PathBuf);

    impl Folder {
        fn new(name: &str) -> Self {
            Self(std::env::temp_dir().join(format!(
                "chat-journal-{name}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            )))
        }

        fn journal(&self) -> Arc<Journal> {
            Journal::open(&self.0, 100, 1 << 30, Arc::default()).expect("open the journal")
        }

        /// Which of the database's files holds `text`, if any.
        fn holding(&self, text: &str) -> Option<String> {
            [FILE_NAME.to_owned(), format!("{FILE_NAME}-wal")]
                .into_iter()
                .find(|file| {
                    let bytes = std::fs::read(self.0.join(file)).unwrap_or_default();
                    bytes
                        .windows(text.len())
                        .any(|window| window == text.as_bytes())
                })
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Room `name` with no members, for the journal to fan out to.
    fn room(name: &str) -> Arc<Room> {
        let settings = crate::room::RoomSettings {
            max_queue_bytes: 1 << 20,
            history: 100,
            max_history_bytes: 1 << 20,
            limits: v1::Limits {
                max_message_bytes: 4096,
                max_nonce_chars: v1::MAX_NONCE_CHARS,
                history: 100,
            },
            verified: false,
            directory: Default::default(),
            admins: Vec::new(),
            presence_batch_above: 0,
            presence_batch_entries: 0,
        };
        Room::new(
            RoomName::parse(name).expect("a room name"),
            Start::new("e".into()),
            Arc::new(settings),
            Arc::default(),
            None,
            None,
        )
    }

    /// Hands `events` of `room` to the journal's writer.
    fn append_all(journal: &Journal, room: &Arc<Room>, events: &[v1::Event]) {
        for event in events {
            journal.append(room, 0, event.clone());
        }
    }

    #[tokio::test]
    async fn a_deleted_text_leaves_the_database_files() {
        // The texts, as the tables held them. (The search index keeps words, not texts:
        // see FTS_SECURE_DELETE for what it keeps of them.)
        const SAID: &str = "the code is zanzibar0451";
        const EDITED: &str = "no, it is quokka9917";
        const NONCE: &str = "nonce-of-the-secret";
        let folder = Folder::new("purge");
        let main = room("main");
        let journal = folder.journal();
        append_all(
            &journal,
            &main,
            &[
                event(1, "7", EventKind::join()),
                event(2, "7", EventKind::said(SAID, Some(NONCE.into()))),
                event(3, "7", EventKind::said("stays", None)),
                event(
                    4,
                    "7",
                    EventKind::Edit {
                        target: 2,
                        text: EDITED.into(),
                        nonce: None,
                        deleted: false,
                    },
                ),
            ],
        );
        journal.close().await;
        drop(journal);
        let journal = folder.journal();
        assert!(folder.holding(SAID).is_some(), "written before the delete");
        let delete = EventKind::Delete {
            moderated: false,
            target: 2,
            nonce: None,
        };
        append_all(&journal, &main, &[event(5, "7", delete)]);
        journal.close().await;
        for gone in [SAID, EDITED, NONCE] {
            assert_eq!(folder.holding(gone), None, "{gone}");
        }
        assert!(folder.holding("stays").is_some());
    }

    #[tokio::test]
    async fn read_positions_are_kept_and_only_move_forward() {
        let folder = Folder::new("reads");
        let main = room("main");
        let journal = folder.journal();
        append_all(
            &journal,
            &main,
            &(1..=8)
                .map(|offset| event(offset, "7", EventKind::said("hi", None)))
                .collect::<Vec<_>>(),
        );
        journal.save_read(main.name(), "7", 5);
        journal.save_read(main.name(), "7", 3);
        journal.save_read(main.name(), "8", 8);
        journal.save_read(&RoomName::parse("other").unwrap(), "7", 2);
        journal.close().await;
        let reads = journal.load(main.name()).unwrap().unwrap().reads;
        assert_eq!(
            reads,
            HashMap::from([("7".to_owned(), 5), ("8".to_owned(), 8)])
        );
    }

    #[tokio::test]
    async fn direct_rooms_list_the_other_id_and_the_messages_from_it_not_yet_read() {
        let folder = Folder::new("dms");
        let journal = folder.journal();
        let id = |id: &str| ClientId::parse(id).unwrap();
        let with_9 = room("dm.7.9");
        let delete = |target| EventKind::Delete {
            moderated: false,
            target,
            nonce: None,
        };
        append_all(
            &journal,
            &with_9,
            &[
                event(1, "7", EventKind::join()),
                event(2, "9", EventKind::join()),
                event(3, "9", EventKind::said("one", None)),
                event(4, "7", EventKind::said("mine", None)),
                event(5, "9", EventKind::said("two", None)),
                event(6, "9", EventKind::said("gone", None)),
                event(7, "9", EventKind::said("three", None)),
                event(8, "9", delete(6)),
                // 7's delete of 9's message deletes nothing: still unread.
                event(9, "7", delete(7)),
            ],
        );
        // dm.13.7 is no direct room (the lower id comes first); dm.7.13 is.
        for (name, from) in [
            ("dm.-3.7", "-3"),
            ("dm.3.7", "3"),
            ("dm.7.7", "7"),
            ("dm.7.13", "13"),
            ("dm.13.7", "13"),
            ("dm.17.70", "17"),
            ("main", "7"),
        ] {
            append_all(
                &journal,
                &room(name),
                &[
                    event(1, from, EventKind::join()),
                    event(2, from, EventKind::said("hi", None)),
                ],
            );
        }
        journal.save_read(with_9.name(), "7", 3);
        journal.close().await;
        let mut found = journal.direct_rooms(&id("7")).unwrap();
        found.sort_by(|a, b| a.room.cmp(&b.room));
        let direct = |room: &str, with: &str, offset, read, unread| v2::DirectRoom {
            room: room.into(),
            with: with.into(),
            offset,
            read,
            unread,
        };
        assert_eq!(
            found,
            [
                direct("dm.-3.7", "-3", 2, 0, 1),
                direct("dm.3.7", "3", 2, 0, 1),
                direct("dm.7.13", "13", 2, 0, 1),
                direct("dm.7.7", "7", 2, 0, 1),
                direct("dm.7.9", "9", 9, 3, 2),
            ]
        );
        assert_eq!(
            journal.direct_rooms(&id("9")).unwrap(),
            [direct("dm.7.9", "7", 9, 0, 1)]
        );
        assert!(journal.direct_rooms(&id("1")).unwrap().is_empty());
    }
}
