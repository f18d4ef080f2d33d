//! Every room of this server, made on first use and forgotten when the server has too
//! many and they are empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat::v1::RoomName;

use crate::metrics::Metrics;
use crate::room::{Cluster, Room, RoomSettings};

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
    /// Set on a clustered node, whose only room is the default one.
    clustered: bool,
}

/// A new room was refused: the server has [`MAX_ROOMS`] and none is empty.
#[derive(Debug, thiserror::Error)]
#[error("this server has {MAX_ROOMS} rooms with people in them; try again later")]
pub struct TooManyRooms;

impl Rooms {
    /// The rooms of a new server; a clustered node's default room goes through `cluster`.
    pub fn new(
        settings: RoomSettings,
        metrics: Arc<Metrics>,
        cluster: Option<Box<dyn Cluster>>,
    ) -> Self {
        let rooms = Self {
            rooms: Mutex::new(HashMap::new()),
            settings: Arc::new(settings),
            metrics,
            run: format!("{:08x}", fastrand::u32(..)),
            made: AtomicU64::new(0),
            clustered: cluster.is_some(),
        };
        let name = RoomName::default();
        let default = rooms.make(name.clone(), cluster);
        rooms.lock().insert(name, default);
        rooms
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        // Every change is a single insert or retain, complete before the guard drops.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn make(&self, name: RoomName, cluster: Option<Box<dyn Cluster>>) -> Arc<Room> {
        let made = self.made.fetch_add(1, Ordering::Relaxed);
        let epoch = format!("{}-{made}", self.run);
        Room::new(
            name,
            epoch,
            self.settings.clone(),
            self.metrics.clone(),
            cluster,
        )
    }

    /// Whether this node serves only the default room.
    pub fn clustered(&self) -> bool {
        self.clustered
    }

    /// The default room, the tutorial's.
    pub fn default_room(&self) -> Arc<Room> {
        self.lock()
            .get(&RoomName::default())
            .cloned()
            .expect("the default room is made with the server")
    }

    /// The room named `name`, made now if need be.
    pub fn get(&self, name: &RoomName) -> Result<Arc<Room>, TooManyRooms> {
        let mut rooms = self.lock();
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        if rooms.len() >= MAX_ROOMS {
            let default = RoomName::default();
            rooms.retain(|name, room| *name == default || room.len() > 0);
            if rooms.len() >= MAX_ROOMS {
                return Err(TooManyRooms);
            }
        }
        let room = self.make(name.clone(), None);
        rooms.insert(name.clone(), room.clone());
        Ok(room)
    }

    /// How many members are connected to this node, in every room.
    pub fn members(&self) -> usize {
        self.lock().values().map(|room| room.len()).sum()
    }
}
