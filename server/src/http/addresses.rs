//! Limits per client IP address: how many sessions one address may hold, and how fast
//! it may open them, so that one host cannot take every place or churn the room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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
    /// The table is swept of forgettable entries when it grows past this.
    sweep_at: usize,
}

struct Entry {
    sessions: usize,
    handshakes: Option<TokenBucket>,
}

impl Entry {
    /// Whether the entry says nothing that a fresh one would not.
    fn forgettable(&mut self) -> bool {
        self.sessions == 0 && self.handshakes.as_mut().is_none_or(TokenBucket::is_full)
    }
}

/// Why an address may not open another session now.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// It holds the most sessions one address may.
    TooManySessions(usize),
    /// It opens them too fast; it may try again after this long.
    TooFast(Duration),
}

/// One session's place in its address's count; given back when dropped.
pub struct AddressSlot {
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
        if self.max_sessions.is_none() && self.handshake_rate.is_none() {
            return Ok(AddressSlot {
                addresses: self.clone(),
                ip,
            });
        }
        let mut table = self.lock();
        if table.entries.len() >= table.sweep_at {
            table.entries.retain(|_, entry| !entry.forgettable());
            table.sweep_at = (table.entries.len() * 2).max(FIRST_SWEEP_AT);
        }
        let rate = self.handshake_rate;
        let entry = table.entries.entry(ip).or_insert_with(|| Entry {
            sessions: 0,
            handshakes: rate.as_ref().map(TokenBucket::for_rate),
        });
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
        })
    }

    /// How many addresses are remembered; for tests.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut table = self.addresses.lock();
        if let Some(entry) = table.entries.get_mut(&self.ip) {
            entry.sessions -= 1;
            if entry.forgettable() {
                table.entries.remove(&self.ip);
            }
        }
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
