//! Every room of this server, made on first use and forgotten when the server has too
//! many and they are empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat::v1::RoomName;

use crate::config::MAX_ROOMS;
use crate::metrics::Metrics;
use crate::room::{Cluster, Room, RoomSettings, Start, Store, StoreError};

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
    store: Option<Arc<dyn Store>>,
}

/// Why a room cannot be had now.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The server has [`MAX_ROOMS`] and none is empty.
    #[error("this server has {MAX_ROOMS} rooms with people in them; try again later")]
    TooManyRooms,
    #[error("cannot read the room's history: {0}")]
    History(#[source] StoreError),
}

impl Rooms {
    /// The rooms of a new server; on a clustered node every room goes through
    /// `cluster`; with a `store`, every room keeps its history there.
    pub fn new(
        settings: RoomSettings,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<dyn Cluster>>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Self, Unavailable> {
        let rooms = Self {
            rooms: Mutex::new(HashMap::new()),
            settings: Arc::new(settings),
            metrics,
            run: format!("{:08x}", fastrand::u32(..)),
            made: AtomicU64::new(0),
            cluster,
            store,
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
        let stored = match &self.store {
            Some(store) => store.load(&name).map_err(Unavailable::History)?,
            None => None,
        };
        let start = stored.unwrap_or_else(|| {
            let made = self.made.fetch_add(1, Ordering::Relaxed);
            Start::new(format!("{}-{made}", self.run))
        });
        Ok(Room::new(
            name,
            start,
            self.settings.clone(),
            self.metrics.clone(),
            self.cluster.clone(),
            self.store.clone(),
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

    /// Loads `room` from the cluster, on a clustered node, unless it is loaded: a
    /// newcomer's welcome and history come from there. `false` if the cluster did not
    /// answer in time.
    pub async fn load_from_cluster(&self, room: &Arc<Room>) -> bool {
        match &self.cluster {
            Some(cluster) => cluster.load(room).await,
            None => true,
        }
    }

    /// Completes once the node can take more from its clients: at once, unless the
    /// store or the cluster is behind.
    pub async fn has_room(&self) {
        if let Some(store) = &self.store {
            store.backlog().has_room().await;
        }
        if let Some(cluster) = &self.cluster {
            cluster.backlog().has_room().await;
        }
    }

    /// Why the store cannot write now, if it cannot.
    pub fn trouble(&self) -> Option<String> {
        self.store.as_ref().and_then(|store| store.trouble())
    }

    /// How many members are connected to this node, in every room.
    pub fn members(&self) -> usize {
        self.lock().values().map(|room| room.len()).sum()
    }
}
