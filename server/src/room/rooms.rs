//! Every room of this server, made on first use and forgotten when the server has too
//! many and they are empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat::v1::RoomName;

use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::room::{Cluster, Room, RoomSettings, Start, Store};

/// The most rooms at once. Past it, empty rooms are forgotten (with their history) to
/// make place for new ones, and if none is empty a new room is refused.
pub const MAX_ROOMS: usize = 1000;

pub struct Rooms {
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    settings: Arc<RoomSettings>,
    metrics: Arc<Metrics>,
    /// Part of every room's epoch, so that a restarted server's rooms never pass for
    /// the last run's, whose history is gone.
    run: String,
    /// How many rooms this run has made: the rest of a room's epoch, so that a room
    /// forgotten and made again does not pass for the old one.
    made: AtomicU64,
    /// Set on a clustered node: every room goes through it.
    cluster: Option<Arc<dyn Cluster>>,
    /// Set with durable history: rooms are loaded from it, and write to it.
    journal: Option<Arc<Journal>>,
}

/// Why a room cannot be had now.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The server has [`MAX_ROOMS`] and none is empty.
    #[error("this server has {MAX_ROOMS} rooms with people in them; try again later")]
    TooManyRooms,
    #[error("cannot read the room's history: {0}")]
    History(#[from] rusqlite::Error),
}

impl Rooms {
    /// The rooms of a new server; on a clustered node every room goes through
    /// `cluster`; with a `journal`, every room keeps its history there.
    pub fn new(
        settings: RoomSettings,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<dyn Cluster>>,
        journal: Option<Arc<Journal>>,
    ) -> Result<Self, Unavailable> {
        let rooms = Self {
            rooms: Mutex::new(HashMap::new()),
            settings: Arc::new(settings),
            metrics,
            run: format!("{:08x}", fastrand::u32(..)),
            made: AtomicU64::new(0),
            cluster,
            journal,
        };
        let name = RoomName::default();
        let default = rooms.make(name.clone())?;
        rooms.lock().insert(name, default);
        Ok(rooms)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        // Every change is a single insert or retain, complete before the guard drops.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A room as its journal left it, or new.
    ///
    /// Loading reads the database on the caller's thread: a few milliseconds for a
    /// full history, once per room per run, while the rooms' lock keeps two sessions
    /// from loading one room twice.
    fn make(&self, name: RoomName) -> Result<Arc<Room>, Unavailable> {
        let stored = match &self.journal {
            Some(journal) => journal.load(&name)?,
            None => None,
        };
        let start = stored.unwrap_or_else(|| {
            let made = self.made.fetch_add(1, Ordering::Relaxed);
            Start::new(format!("{}-{made}", self.run))
        });
        let store = self
            .journal
            .clone()
            .map(|journal| journal as Arc<dyn Store>);
        Ok(Room::new(
            name,
            start,
            self.settings.clone(),
            self.metrics.clone(),
            self.cluster.clone(),
            store,
        ))
    }

    /// The room named `name`, made now if need be.
    pub fn get(&self, name: &RoomName) -> Result<Arc<Room>, Unavailable> {
        let mut rooms = self.lock();
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        if rooms.len() >= MAX_ROOMS {
            let default = RoomName::default();
            rooms.retain(|name, room| *name == default || !room.is_idle());
            if rooms.len() >= MAX_ROOMS {
                return Err(Unavailable::TooManyRooms);
            }
        }
        let room = self.make(name.clone())?;
        rooms.insert(name.clone(), room.clone());
        Ok(room)
    }

    /// How many members are connected to this node, in every room.
    pub fn members(&self) -> usize {
        self.lock().values().map(|room| room.len()).sum()
    }
}
