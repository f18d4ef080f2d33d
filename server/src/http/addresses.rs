//! Limits per client IP address: how many sessions one address may hold, how fast it
//! may open them, how many rooms it may be in, and how many connections it may hold
//! before they upgrade, so that one host cannot take every place, lock others out of
//! new rooms, or churn the room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat::v1::RoomName;

use crate::config::RateLimit;
use crate::session::meter::TokenBucket;

/// The sessions and recent handshakes of every address that has any.
pub struct Addresses {
    max_sessions: Option<usize>,
    handshake_rate: Option<RateLimit>,
    table: Mutex<Table>,
}

struct Table {
    entries: HashMap<IpAddr, Entry>,
    /// Connections, from every address, that have not upgraded (or ended) yet.
    pending: usize,
    /// The table is swept of forgettable entries when it grows past this.
    sweep_at: usize,
}

#[derive(Default)]
struct Entry {
    sessions: usize,
    handshakes: Option<TokenBucket>,
    /// How many of its sessions are in each room it is in.
    rooms: HashMap<RoomName, usize>,
    /// Its connections that have not upgraded (or ended) yet.
    pending: usize,
}

impl Entry {
    /// Whether the entry says nothing that a fresh one would not.
    fn forgettable(&mut self) -> bool {
        self.sessions == 0
            && self.pending == 0
            && self.rooms.is_empty()
            && self.handshakes.as_mut().is_none_or(TokenBucket::is_full)
    }
}

/// Why an address may not open another session now.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// It holds the most sessions one address may.
    TooManySessions(usize),
    /// It opens them too fast; it may try again after this long.
    TooFast(Duration),
    /// It is in the most rooms one address may be in, and this would be another.
    RoomLimit(usize),
}

/// Why a new connection may not wait for its handshake now.
#[derive(Debug, PartialEq)]
pub enum Crowded {
    /// Its address holds the most connections not yet upgraded one address may.
    Address(usize),
    /// The server holds the most connections not yet upgraded, from every address.
    Server(usize),
}

/// The caps on connections that have not upgraded yet (see [`Addresses::wait`]).
#[derive(Clone, Copy, Debug)]
pub struct PendingCaps {
    pub per_address: Option<usize>,
    pub total: usize,
}

/// One session's place in its address's count, and in its room's; given back when
/// dropped.
pub struct AddressSlot {
    addresses: Arc<Addresses>,
    ip: IpAddr,
    room: Option<RoomName>,
}

/// One connection's place among those not yet upgraded; given back when dropped.
pub struct PendingSlot {
    addresses: Arc<Addresses>,
    ip: IpAddr,
}

const FIRST_SWEEP_AT: usize = 1024;

impl Addresses {
    pub fn new(max_sessions: Option<usize>, handshake_rate: Option<RateLimit>) -> Arc<Self> {
        Arc::new(Self {
            max_sessions,
            handshake_rate,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                pending: 0,
                sweep_at: FIRST_SWEEP_AT,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every change is a counter or a bucket update, complete before the guard drops.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a handshake from `ip`, and reserves a session place for it if the
    /// address is within its limits.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, Refused> {
        let mut table = self.lock();
        let rate = self.handshake_rate;
        let entry = table.entry(ip, rate);
        if let Some(handshakes) = &mut entry.handshakes {
            if let Some(wait) = handshakes.wait() {
                return Err(Refused::TooFast(wait));
            }
            handshakes.take(1.0);
        }
        if let Some(max) = self.max_sessions
            && entry.sessions >= max
        {
            return Err(Refused::TooManySessions(max));
        }
        entry.sessions += 1;
        Ok(AddressSlot {
            addresses: self.clone(),
            ip,
            room: None,
        })
    }

    /// Reserves a place for a new connection from `ip` until it upgrades or ends, if
    /// its address and the server hold fewer than `caps` allow. Such connections cost
    /// a descriptor and a task each, and hyper's header timeout is all that ends a
    /// silent one: without a cap, one address could take every descriptor.
    pub fn wait(self: &Arc<Self>, ip: IpAddr, caps: PendingCaps) -> Result<PendingSlot, Crowded> {
        let mut table = self.lock();
        if table.pending >= caps.total {
            return Err(Crowded::Server(caps.total));
        }
        let entry = table.entry(ip, self.handshake_rate);
        if let Some(most) = caps.per_address
            && entry.pending >= most
        {
            return Err(Crowded::Address(most));
        }
        entry.pending += 1;
        table.pending += 1;
        Ok(PendingSlot {
            addresses: self.clone(),
            ip,
        })
    }

    /// How many addresses are remembered; for tests.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Table {
    /// The entry of `ip`, made if need be; the table is swept of forgettable entries
    /// first when it has grown.
    fn entry(&mut self, ip: IpAddr, rate: Option<RateLimit>) -> &mut Entry {
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, entry| !entry.forgettable());
            self.sweep_at = (self.entries.len() * 2).max(FIRST_SWEEP_AT);
        }
        self.entries.entry(ip).or_insert_with(|| Entry {
            handshakes: rate.as_ref().map(TokenBucket::for_rate),
            ..Entry::default()
        })
    }

    /// Applies `change` to the entry of `ip`, and forgets it if it is left saying
    /// nothing.
    fn release(&mut self, ip: IpAddr, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.entries.get_mut(&ip) {
            change(entry);
            if entry.forgettable() {
                self.entries.remove(&ip);
            }
        }
    }
}

impl AddressSlot {
    /// Counts this session in `room`, unless its address is in `most` rooms already
    /// and `room` is not one of them. The server holds at most `MAX_ROOMS` rooms with
    /// people in them: without this, one address could open them all, and every new
    /// room would be refused to everyone else.
    pub fn enter(&mut self, room: &RoomName, most: Option<usize>) -> Result<(), Refused> {
        debug_assert!(self.room.is_none(), "a session is in one room");
        let mut table = self.addresses.lock();
        let entry = table.entry(self.ip, self.addresses.handshake_rate);
        if let Some(most) = most
            && entry.rooms.len() >= most
            && !entry.rooms.contains_key(room)
        {
            return Err(Refused::RoomLimit(most));
        }
        *entry.rooms.entry(room.clone()).or_default() += 1;
        self.room = Some(room.clone());
        Ok(())
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let room = self.room.take();
        self.addresses.lock().release(self.ip, |entry| {
            entry.sessions -= 1;
            if let Some(room) = room
                && let Some(sessions) = entry.rooms.get_mut(&room)
            {
                *sessions -= 1;
                if *sessions == 0 {
                    entry.rooms.remove(&room);
                }
            }
        });
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut table = self.addresses.lock();
        table.pending -= 1;
        table.release(self.ip, |entry| entry.pending -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_places_back() {
        let addresses = Addresses::new(Some(2), None);
        let first = addresses.admit(ip(1)).unwrap();
        let _second = addresses.admit(ip(1)).unwrap();
        assert_eq!(
            addresses.admit(ip(1)).err(),
            Some(Refused::TooManySessions(2))
        );
        let _other = addresses
            .admit(ip(2))
            .expect("other addresses are not affected");
        drop(first);
        assert!(addresses.admit(ip(1)).is_ok());
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn an_address_is_in_at_most_its_share_of_rooms_and_gets_them_back() {
        let addresses = Addresses::new(None, None);
        let mut first = addresses.admit(ip(1)).unwrap();
        first.enter(&room("a"), Some(2)).unwrap();
        let mut second = addresses.admit(ip(1)).unwrap();
        second.enter(&room("b"), Some(2)).unwrap();
        let mut third = addresses.admit(ip(1)).unwrap();
        assert_eq!(third.enter(&room("c"), Some(2)), Err(Refused::RoomLimit(2)));
        // A room it is in already is no new room.
        third.enter(&room("a"), Some(2)).unwrap();
        let mut other = addresses.admit(ip(2)).unwrap();
        other
            .enter(&room("c"), Some(2))
            .expect("other addresses are not affected");
        // Room "a" is held by two sessions: it is given back with the last.
        drop(first);
        let mut fourth = addresses.admit(ip(1)).unwrap();
        assert!(fourth.enter(&room("c"), Some(2)).is_err());
        drop(third);
        fourth.enter(&room("c"), Some(2)).unwrap();
        drop((second, fourth, other));
        assert_eq!(addresses.remembered(), 0);
    }

    #[test]
    fn connections_wait_for_their_handshake_within_both_caps() {
        let addresses = Addresses::new(None, None);
        let caps = PendingCaps {
            per_address: Some(2),
            total: 3,
        };
        let first = addresses.wait(ip(1), caps).unwrap();
        let _second = addresses.wait(ip(1), caps).unwrap();
        assert_eq!(addresses.wait(ip(1), caps).err(), Some(Crowded::Address(2)));
        let _other = addresses.wait(ip(2), caps).expect("another address waits");
        assert_eq!(addresses.wait(ip(3), caps).err(), Some(Crowded::Server(3)));
        drop(first);
        assert!(addresses.wait(ip(1), caps).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn handshakes_past_the_rate_wait_and_idle_addresses_are_forgotten() {
        let rate = RateLimit {
            per_second: 2.0,
            burst: 3,
        };
        let addresses = Addresses::new(None, Some(rate));
        let slots: Vec<_> = (0..3).map(|_| addresses.admit(ip(1)).unwrap()).collect();
        match addresses.admit(ip(1)) {
            Err(Refused::TooFast(wait)) => assert!(wait <= Duration::from_millis(500)),
            other => panic!("expected TooFast, got {:?}", other.err()),
        }
        drop(slots);
        assert_eq!(addresses.remembered(), 1, "kept while its bucket refills");
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(addresses.admit(ip(1)).expect("refilled"));

        // Many addresses, each in debt for a while: the table is swept as it grows, and
        // what has refilled by then is forgotten. Without the sweep, 2 049 would stay.
        let address = |n: usize| IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]);
        for n in 0..FIRST_SWEEP_AT {
            drop(addresses.admit(address(n)));
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for n in FIRST_SWEEP_AT..2 * FIRST_SWEEP_AT {
            drop(addresses.admit(address(n)));
        }
        assert!(
            addresses.remembered() <= FIRST_SWEEP_AT,
            "idle addresses are forgotten: {}",
            addresses.remembered()
        );
    }
}
