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
//! `events` (one row per event, as v1 clients see it) and `members` (who is connected,
//! so that after a crash their leaves can be announced).
//!
//! Owns the database; the rest of the server sees it only as a [`Store`], made by
//! [`open`]. May call: `room` (the seam it plugs into, and the rooms it fans out),
//! `config`, `metrics`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::Duration;

use chat::ClientId;
use chat::v1::{self, DisplayName, EventKind, RoomName};
use chat::v2;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::oneshot;
use tracing::{error, info};

use crate::config::{JOURNAL_BACKLOG_BYTES, MAX_ROOMS};
use crate::metrics::Metrics;
use crate::room::backlog::{Backlog, cost};
use crate::room::{Room, Start, Store, StoreError};

/// The database's file name in the data folder.
pub const FILE_NAME: &str = "chat.sqlite3";

/// The schema this server writes, kept in `PRAGMA user_version`: a database from a
/// newer server is refused rather than misread.
const SCHEMA_VERSION: i64 = 2;

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
        PRIMARY KEY (room, offset)
    ) WITHOUT ROWID;
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

/// The most events one transaction writes, so that one commit does not hold the
/// fan-out of the rest back for long.
const MAX_BATCH: usize = 4096;

/// Rooms whose history the database keeps. Past it, the room heard from longest ago is
/// forgotten, so that clients making up room names cannot grow the file without bound.
pub const MAX_STORED_ROOMS: usize = 10 * MAX_ROOMS;

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
    /// Sent last: answered once everything before it is written.
    Close(oneshot::Sender<()>),
}

/// The handle every room and session shares; the writer thread owns the database.
pub struct Journal {
    commands: mpsc::Sender<Command>,
    backlog: Arc<Backlog>,
    /// Why the journal cannot write now, while it cannot.
    trouble: Arc<Mutex<Option<String>>>,
    /// Loads rooms while the writer writes: SQLite's write-ahead log lets a reader
    /// see the last commit without waiting for the next.
    reader: Mutex<Connection>,
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
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn Store>, OpenError> {
    Ok(Journal::open(folder, history, metrics)?)
}

impl Journal {
    /// Opens (or makes) the database in `folder` and starts its writer, which keeps
    /// `history` events per room.
    fn open(folder: &Path, history: usize, metrics: Arc<Metrics>) -> Result<Arc<Self>, OpenError> {
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
        let reader = open_database(&path).map_err(database)?;
        let (commands, received) = mpsc::channel();
        let journal = Arc::new(Self {
            commands,
            backlog: Arc::new(Backlog::new(
                JOURNAL_BACKLOG_BYTES,
                metrics.clone(),
                Metrics::journal_backlog,
            )),
            trouble: Arc::default(),
            reader: Mutex::new(reader),
            history,
            _folder_lock: folder_lock,
        });
        let writing = DatabaseWriter {
            database: writer,
            backlog: journal.backlog.clone(),
            trouble: journal.trouble.clone(),
            history,
            metrics,
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
        let reader = lock(&self.reader);
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
        let mut events = reader
            .prepare(
                "SELECT offset, ts, client, type, text, nonce, name FROM events
                 WHERE room = ?1 ORDER BY offset DESC LIMIT ?2",
            )?
            .query_map(params![name.as_str(), self.history as i64], read_event)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        events.reverse();
        let present = reader
            .prepare("SELECT key, client, since, name FROM members WHERE room = ?1 ORDER BY key")?
            .query_map([name.as_str()], |row| {
                let present = v1::Present {
                    id: row.get(1)?,
                    name: read_name(row, 3)?,
                    since: row.get(2)?,
                };
                Ok((row.get(0)?, present))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(Start {
            epoch,
            offset,
            events,
            present,
            reads: HashMap::new(),
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

    // TODO(wave4 journal): keep read positions.
    fn save_read(&self, _room: &RoomName, _id: &str, _offset: u64) {}

    // TODO(wave4 journal): list direct-message rooms.
    fn direct_rooms(&self, _id: &ClientId) -> Result<Vec<v2::DirectRoom>, StoreError> {
        Ok(Vec::new())
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each holder does one query or one assignment: nothing is left half-done.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_database(path: &Path) -> rusqlite::Result<Connection> {
    let database = Connection::open(path)?;
    database.busy_timeout(Duration::from_secs(5))?;
    // Write-ahead logging lets the reader load rooms during a write. `synchronous =
    // NORMAL` makes a commit durable once it is in the log, which a killed process
    // cannot undo; only a power cut could take back the last commits (never corrupt
    // the file), and it spares each commit an fsync.
    database.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    database.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(database)
}

fn read_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<v1::Event> {
    let kind: String = row.get(3)?;
    let kind = match kind.as_str() {
        "join" => EventKind::Join,
        "leave" => EventKind::Leave,
        _ => EventKind::said(
            row.get::<_, Option<String>>(4)?.unwrap_or_default(),
            row.get(5)?,
        ),
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
    metrics: Arc<Metrics>,
}

/// One event on its way to the database.
struct Append {
    room: Arc<Room>,
    key: u64,
    event: v1::Event,
}

impl DatabaseWriter {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut closed = None;
        while closed.is_none() {
            let Ok(first) = commands.recv() else {
                return;
            };
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(append) => batch.push(append),
                    Command::Close(done) => closed = Some(done),
                }
                if closed.is_none() && batch.len() < MAX_BATCH {
                    next = commands.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.write_until_done(&batch);
                self.fan_out(&mut batch);
            }
        }
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    /// Writes `batch`, trying again until it is written: the events are the server's
    /// word to its clients, and are never dropped.
    fn write_until_done(&mut self, batch: &[Append]) {
        let mut failing = false;
        loop {
            let written = self
                .database
                .transaction()
                .and_then(|transaction| write(transaction, batch, self.history));
            match written {
                Ok(()) => break,
                Err(write_error) => {
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
        }
        if failing {
            info!("history written again; accepting sessions");
            *lock(&self.trouble) = None;
        }
        self.metrics.journal_written(batch.len());
    }

    /// Has each room fan out what was just written, in order.
    fn fan_out(&self, batch: &mut Vec<Append>) {
        let mut bytes = 0;
        for Append { room, key, event } in batch.drain(..) {
            bytes += cost(&event);
            room.fan_out(key, event);
        }
        self.backlog.release(bytes);
    }
}

/// Writes one batch in one transaction: the events, who joined and left, each room's
/// last offset; and forgets what is past the history's bounds.
fn write(transaction: Transaction<'_>, batch: &[Append], history: usize) -> rusqlite::Result<()> {
    let mut last: HashMap<&RoomName, (&Room, &v1::Event)> = HashMap::new();
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO events (room, offset, ts, client, type, text, nonce, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut joined = transaction.prepare_cached(
            "INSERT OR REPLACE INTO members (room, key, client, since, name)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut left =
            transaction.prepare_cached("DELETE FROM members WHERE room = ?1 AND key = ?2")?;
        for Append { room, key, event } in batch {
            let name = room.name().as_str();
            let who = event.name.as_ref().map(DisplayName::as_str);
            let (kind, text, nonce) = match &event.kind {
                EventKind::Join => ("join", None, None),
                EventKind::Leave => ("leave", None, None),
                EventKind::Message { text, nonce, .. } => ("message", Some(text), nonce.as_ref()),
                // TODO(journal helper): the v2 operations' own columns.
                _ => ("message", None, None),
            };
            if history > 0 {
                insert.execute(params![
                    name,
                    event.offset,
                    event.ts,
                    event.id,
                    kind,
                    text,
                    nonce,
                    who
                ])?;
            }
            match event.kind {
                EventKind::Join => joined.execute(params![name, key, event.id, event.ts, who])?,
                EventKind::Leave => left.execute(params![name, key])?,
                _ => 0,
            };
            last.insert(room.name(), (room, event));
        }
    }
    let mut new_rooms = false;
    {
        let mut update = transaction
            .prepare_cached("UPDATE rooms SET last_offset = ?2, last_ts = ?3 WHERE name = ?1")?;
        let mut insert = transaction.prepare_cached(
            "INSERT INTO rooms (name, epoch, last_offset, last_ts) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut forget =
            transaction.prepare_cached("DELETE FROM events WHERE room = ?1 AND offset <= ?2")?;
        for (name, (room, event)) in &last {
            let name = name.as_str();
            if update.execute(params![name, event.offset, event.ts])? == 0 {
                insert.execute(params![name, room.epoch(), event.offset, event.ts])?;
                new_rooms = true;
            }
            let oldest_kept = event.offset.saturating_sub(history as u64);
            forget.execute(params![name, oldest_kept])?;
        }
    }
    if new_rooms {
        forget_rooms_past_the_bound(&transaction)?;
    }
    transaction.commit()
}

/// Brings a database of schema `version` (0 for a new one) to [`SCHEMA_VERSION`].
fn migrate(database: &Connection, version: i64) -> rusqlite::Result<()> {
    if version == 1 {
        database.execute_batch(NAMES_MIGRATION)?;
    }
    database.execute_batch(SCHEMA)?;
    database.pragma_update(None, "user_version", SCHEMA_VERSION)
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
        for table in [
            "DELETE FROM events WHERE room = ?1",
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
                "INSERT INTO events VALUES ('main', 2, 6, '8', 'join', NULL, NULL, 'Ada')",
                [],
            )
            .unwrap();
        let events: Vec<v1::Event> = database
            .prepare("SELECT offset, ts, client, type, text, nonce, name FROM events")
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
                    "INSERT INTO events VALUES (?1, 1, 0, '1', 'join', NULL, NULL, NULL)",
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
}
