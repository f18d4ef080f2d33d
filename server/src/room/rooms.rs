//! Every room of this server, made on first use (or loaded from the store) and
//! forgotten when the server has too many and they are empty.
//!
//! Loading a room reads the store's database, which can take milliseconds (or, while a
//! disk stalls, far longer): it runs on a blocking thread, never on an async worker,
//! and without the rooms' lock, so that handshakes into other rooms go on meanwhile.
//! Handshakes into the room being loaded wait for that one load.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat::ClientId;
use chat::v1::RoomName;
use chat::v2;
use tokio::sync::watch;

use crate::config::MAX_ROOMS;
use crate::metrics::Metrics;
use crate::room::backlog::Reserved;
use crate::room::{Cluster, Room, RoomSettings, Start, Store, StoreError};

/// Every room of the server, shared with the blocking threads that load them.
pub struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Mutex<HashMap<RoomName, Slot>>,
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

/// A room of the map: ready, or being loaded by one handshake while others wait.
enum Slot {
    Ready(Arc<Room>),
    /// Ends (its sender is dropped) once the load has put the room in the map, or
    /// taken the slot out of it after failing.
    Loading(watch::Receiver<()>),
}

/// What [`Rooms::find_or_claim`] found.
enum Found {
    Ready(Arc<Room>),
    Loading(watch::Receiver<()>),
    /// The slot is this caller's to load.
    Claimed(Claim),
}

/// A room's slot, claimed by one handshake to load the room into. Dropped, it takes
/// the slot out of the map unless the room was put there, and then wakes whoever waits:
/// whichever way the load ends (even a panic, or a runtime shutting down), the slot
/// never stays `Loading` with nobody loading it.
struct Claim {
    inner: Arc<Inner>,
    name: RoomName,
    /// Dropped after `drop` has settled the slot, which wakes the waiters.
    _loaded: watch::Sender<()>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut rooms = self.inner.lock();
        if let Some(Slot::Loading(_)) = rooms.get(&self.name) {
            rooms.remove(&self.name);
        }
    }
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
    ///
    /// The default room is loaded here, on the caller's thread: this is the server
    /// starting, before it takes any client.
    pub fn new(
        settings: RoomSettings,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<dyn Cluster>>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Self, Unavailable> {
        let inner = Inner {
            rooms: Mutex::new(HashMap::new()),
            settings: Arc::new(settings),
            metrics,
            run: format!("{:08x}", fastrand::u32(..)),
            made: AtomicU64::new(0),
            cluster,
            store,
        };
        let name = RoomName::default();
        let default = inner.make(name.clone())?;
        inner.lock().insert(name, Slot::Ready(default));
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The room named `name`, made (or loaded from the store) now if need be.
    pub async fn get(&self, name: &RoomName) -> Result<Arc<Room>, Unavailable> {
        loop {
            let mut loading = match self.find_or_claim(name)? {
                Found::Ready(room) => return Ok(room),
                Found::Loading(loading) => loading,
                Found::Claimed(claim) => return self.load(claim).await,
            };
            // Woken when that load ends, whichever way: then the map says how.
            let _ = loading.changed().await;
        }
    }

    /// The room if it is ready (made now when there is nothing to load), the load to
    /// wait for if another handshake is loading it, or else the slot claimed for this
    /// caller to load it into.
    fn find_or_claim(&self, name: &RoomName) -> Result<Found, Unavailable> {
        let mut rooms = self.inner.lock();
        match rooms.get(name) {
            Some(Slot::Ready(room)) => return Ok(Found::Ready(room.clone())),
            Some(Slot::Loading(loading)) => return Ok(Found::Loading(loading.clone())),
            None => {}
        }
        if rooms.len() >= MAX_ROOMS {
            let default = RoomName::default();
            // The server's own room, which every handshake reads for its bans, stays
            // too: made again each time, it would take the place of another.
            rooms.retain(|name, slot| match slot {
                Slot::Ready(room) => {
                    *name == default || name.as_str() == super::SERVER_ROOM || !room.is_idle()
                }
                Slot::Loading(_) => true,
            });
            if rooms.len() >= MAX_ROOMS {
                return Err(Unavailable::TooManyRooms);
            }
        }
        if self.inner.store.is_none() {
            // Nothing to read: made at once, under the lock.
            let room = self.inner.make(name.clone())?;
            rooms.insert(name.clone(), Slot::Ready(room.clone()));
            return Ok(Found::Ready(room));
        }
        let (loaded, loading) = watch::channel(());
        rooms.insert(name.clone(), Slot::Loading(loading));
        Ok(Found::Claimed(Claim {
            inner: self.inner.clone(),
            name: name.clone(),
            _loaded: loaded,
        }))
    }

    /// Loads the claimed room from the store on a blocking thread, which puts it in
    /// the map. A handshake that gives up meanwhile does not stop the load.
    async fn load(&self, claim: Claim) -> Result<Arc<Room>, Unavailable> {
        let loading = tokio::task::spawn_blocking(move || {
            let made = claim.inner.make(claim.name.clone());
            if let Ok(room) = &made {
                let ready = Slot::Ready(room.clone());
                claim.inner.lock().insert(claim.name.clone(), ready);
            }
            drop(claim);
            made
        });
        match loading.await {
            Ok(made) => made,
            Err(failed) => Err(Unavailable::History(Box::new(failed))),
        }
    }

    /// The room named `name` if it exists: in memory, or in the store (loaded now).
    /// Unlike [`Rooms::get`], it makes no room. On a clustered node without a store,
    /// the rooms this node has in memory.
    pub async fn existing(&self, name: &RoomName) -> Option<Arc<Room>> {
        if let Some(Slot::Ready(room)) = self.inner.lock().get(name) {
            return Some(room.clone());
        }
        let store = self.inner.store.clone()?;
        let asked = name.clone();
        let stored = tokio::task::spawn_blocking(move || store.load(&asked)).await;
        match stored {
            Ok(Ok(Some(_))) => self.get(name).await.ok(),
            _ => None,
        }
    }

    /// Loads `room` from the cluster, on a clustered node, unless it is loaded: a
    /// newcomer's welcome and history come from there. `false` if the cluster did not
    /// answer in time.
    pub async fn load_from_cluster(&self, room: &Arc<Room>) -> bool {
        match &self.inner.cluster {
            Some(cluster) => cluster.load(room).await,
            None => true,
        }
    }

    /// Completes once the node can take more from its clients: at once, unless the
    /// store or the cluster is behind.
    pub async fn has_room(&self) {
        if let Some(store) = &self.inner.store {
            store.backlog().has_room().await;
        }
        if let Some(cluster) = &self.inner.cluster {
            cluster.backlog().has_room().await;
        }
    }

    /// Waits until the store and the cluster can take an event that costs at most
    /// `bytes`, and counts it against their backlogs until what is returned is
    /// dropped: a session holds it while it hands over what it has read (see
    /// [`crate::room::backlog::Backlog::reserve`]).
    pub async fn reserve(&self, bytes: usize) -> (Option<Reserved<'_>>, Option<Reserved<'_>>) {
        let store = match &self.inner.store {
            Some(store) => Some(store.backlog().reserve(bytes).await),
            None => None,
        };
        let cluster = match &self.inner.cluster {
            Some(cluster) => Some(cluster.backlog().reserve(bytes).await),
            None => None,
        };
        (store, cluster)
    }

    /// The direct-message rooms of `id`: those this node has in memory, as they are
    /// now, and those the store holds. A store that cannot be read (a failing disk,
    /// which `/healthz` reports) leaves out the rooms only it has: the list is what
    /// this node can say, not an error.
    pub async fn direct_rooms(&self, id: &ClientId) -> Vec<v2::DirectRoom> {
        let mut found: BTreeMap<String, v2::DirectRoom> = BTreeMap::new();
        if let Some(store) = self.inner.store.clone() {
            let asking = id.clone();
            match tokio::task::spawn_blocking(move || store.direct_rooms(&asking)).await {
                Ok(Ok(stored)) => {
                    found.extend(stored.into_iter().map(|room| (room.room.clone(), room)));
                }
                Ok(Err(error)) => tracing::warn!(%error, "cannot read the direct-message rooms"),
                Err(panicked) => {
                    tracing::warn!(%panicked, "reading the direct-message rooms failed")
                }
            }
        }
        for room in self.loaded() {
            if let Some(summary) = room.direct_summary(id) {
                found.insert(summary.room.clone(), summary);
            }
        }
        found.into_values().collect()
    }

    /// The rooms loaded on this node.
    pub fn loaded(&self) -> Vec<Arc<Room>> {
        self.inner
            .lock()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(room) => Some(room.clone()),
                Slot::Loading(_) => None,
            })
            .collect()
    }

    /// Why the store cannot write now, if it cannot.
    pub fn trouble(&self) -> Option<String> {
        self.inner.store.as_ref().and_then(|store| store.trouble())
    }

    /// The rooms with the most members on this node, most first (then by name), at
    /// most `limit`, and how many rooms have anyone.
    pub fn busiest(&self, limit: usize) -> (Vec<(RoomName, usize)>, usize) {
        // Counted outside the map's lock, each room's own lock taken once.
        let mut rooms: Vec<(RoomName, usize)> = self
            .loaded()
            .into_iter()
            .map(|room| (room.name().clone(), room.len()))
            .filter(|(_, members)| *members > 0)
            .collect();
        let occupied = rooms.len();
        rooms.sort_by(|(a, a_members), (b, b_members)| {
            b_members
                .cmp(a_members)
                .then_with(|| a.as_str().cmp(b.as_str()))
        });
        rooms.truncate(limit);
        (rooms, occupied)
    }

    /// How many members are connected to this node, in every room.
    pub fn members(&self) -> usize {
        self.inner
            .lock()
            .values()
            .map(|slot| match slot {
                Slot::Ready(room) => room.len(),
                Slot::Loading(_) => 0,
            })
            .sum()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<RoomName, Slot>> {
        // Every change is a single insert, remove or retain, complete before the guard
        // drops.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A room as its store left it, or new. Reads the store: never on an async worker
    /// once the server serves clients.
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    use std::ops::RangeInclusive;

    use chat::v1;
    use futures_util::future::BoxFuture;

    use crate::room::StoredPage;

    use super::*;
    use crate::room::backlog::Backlog;

    /// A store whose loads of one room block until the test releases them, and which
    /// tells the test when such a load has begun.
    struct SlowStore {
        slow: RoomName,
        began: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
        slow_loads: AtomicUsize,
        backlog: Backlog,
    }

    impl Store for SlowStore {
        fn append(&self, room: &Arc<Room>, key: u64, event: v1::Event) {
            room.fan_out(key, event);
        }

        fn load(&self, name: &RoomName) -> Result<Option<Start>, StoreError> {
            if *name == self.slow {
                self.slow_loads.fetch_add(1, Ordering::SeqCst);
                let _ = self.began.lock().unwrap().send(());
                self.release.lock().unwrap().recv()?;
            }
            Ok(None)
        }

        fn backlog(&self) -> &Backlog {
            &self.backlog
        }

        fn save_read(&self, _: &RoomName, _: &str, _: u64) {}

        fn page(&self, _: &RoomName, _: RangeInclusive<u64>) -> Result<StoredPage, StoreError> {
            Ok(StoredPage::default())
        }

        fn search(
            &self,
            _: &RoomName,
            _: &[String],
            _: u64,
            _: usize,
        ) -> Result<(Vec<v1::Event>, bool), StoreError> {
            Ok((Vec::new(), false))
        }

        fn direct_rooms(&self, _: &ClientId) -> Result<Vec<v2::DirectRoom>, StoreError> {
            Ok(Vec::new())
        }

        fn trouble(&self) -> Option<String> {
            None
        }

        fn close(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn settings() -> RoomSettings {
        RoomSettings {
            max_queue_bytes: 1 << 20,
            history: 10,
            max_history_bytes: 1 << 20,
            limits: v1::Limits {
                max_message_bytes: 1000,
                max_nonce_chars: v1::MAX_NONCE_CHARS,
                history: 10,
            },
            verified: false,
            directory: Default::default(),
            admins: Vec::new(),
            presence_batch_above: 0,
            presence_batch_entries: 0,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_load_holds_up_only_its_own_room() {
        let (began, load_began) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let metrics = Arc::new(Metrics::default());
        let store = Arc::new(SlowStore {
            slow: room("a"),
            began: Mutex::new(began),
            release: Mutex::new(released),
            slow_loads: AtomicUsize::new(0),
            backlog: Backlog::new(1 << 20, metrics.clone(), Metrics::journal_backlog),
        });
        let rooms = Arc::new(
            Rooms::new(
                settings(),
                metrics,
                None,
                Some(store.clone() as Arc<dyn Store>),
            )
            .unwrap(),
        );

        let first_into_a = tokio::spawn({
            let rooms = rooms.clone();
            async move { rooms.get(&room("a")).await.map(|room| room.name().clone()) }
        });
        // The load of room a has begun and is blocked in the store.
        tokio::task::spawn_blocking(move || load_began.recv())
            .await
            .unwrap()
            .unwrap();
        let second_into_a = tokio::spawn({
            let rooms = rooms.clone();
            async move { rooms.get(&room("a")).await.map(|room| room.name().clone()) }
        });

        // Room b is had while room a's load is still blocked: had it waited for a, this
        // would never complete, since a is released only after it.
        // (A bound, so that a regression fails rather than hangs: the panic drops
        // `release`, which ends the blocked load.)
        let b = tokio::time::timeout(std::time::Duration::from_secs(30), rooms.get(&room("b")))
            .await
            .expect("room b waited for room a's load")
            .unwrap();
        assert_eq!(b.name(), &room("b"));
        assert!(!first_into_a.is_finished() && !second_into_a.is_finished());

        release.send(()).unwrap();
        assert_eq!(first_into_a.await.unwrap().unwrap(), room("a"));
        assert_eq!(second_into_a.await.unwrap().unwrap(), room("a"));
        assert_eq!(
            store.slow_loads.load(Ordering::SeqCst),
            1,
            "the second handshake into a waited for the first one's load"
        );
    }
}
