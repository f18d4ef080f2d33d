//! The keepalive of one session: a ping every interval, and the end of the session
//! when one goes unanswered for the timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::room::outbox::Outbox;
use crate::room::wire::{self, Frame};

/// Whether the peer is alive: every ping we queue must be answered, by a pong or any
/// other frame, within the ping timeout; and only a frame that arrives once the ping
/// has been written counts. A peer that reads nothing, so that our ping waits behind
/// what it has not read, cannot keep itself alive with unsolicited pongs (or anything
/// else it sends).
///
/// Times are milliseconds since the session began, in an atomic rather than a `Cell`
/// because the reading and the keepalive futures of one session share it, and the
/// session's future must be `Send` to be spawned.
pub struct Keepalive {
    start: Instant,
    /// When the oldest ping not yet answered was queued, or `ANSWERED`.
    unanswered_since: AtomicU64,
    /// The latest ping queued and not yet answered. The outbox and then the writer
    /// hold the frame until it is written to the socket, so while it can be upgraded
    /// it has not been written (and the ones before it may not have been either).
    latest_ping: Mutex<Weak<Vec<u8>>>,
}

const ANSWERED: u64 = u64::MAX;

impl Keepalive {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            unanswered_since: AtomicU64::new(ANSWERED),
            latest_ping: Mutex::new(Weak::new()),
        }
    }

    fn latest_ping(&self) -> MutexGuard<'_, Weak<Vec<u8>>> {
        // Every holder does one assignment or one check: nothing is left half-done.
        self.latest_ping
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A frame arrived: the peer is alive, and every ping so far is answered, if the
    /// latest has been written. A frame that arrives before then answers nothing: the
    /// peer cannot have seen the ping.
    pub fn heard(&self) {
        // Most frames arrive with no ping outstanding: no lock for those.
        if self.unanswered_since.load(Ordering::Relaxed) == ANSWERED {
            return;
        }
        let latest = self.latest_ping();
        if latest.strong_count() > 0 {
            return;
        }
        self.unanswered_since.store(ANSWERED, Ordering::Relaxed);
    }

    /// `ping` was queued; it starts the clock unless an older one is still unanswered.
    fn pinged(&self, ping: &Frame) {
        let mut latest = self.latest_ping();
        *latest = std::sync::Arc::downgrade(ping);
        let now = self.start.elapsed().as_millis() as u64;
        let _ = self.unanswered_since.compare_exchange(
            ANSWERED,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn unanswered_since(&self) -> Option<Instant> {
        match self.unanswered_since.load(Ordering::Relaxed) {
            ANSWERED => None,
            millis => Some(self.start + Duration::from_millis(millis)),
        }
    }

    /// Queues a ping every `interval`, and completes once one has gone unanswered for
    /// `timeout`. The ping goes through the outbox, so a peer whose socket is so
    /// stuck that the ping cannot even be written times out too.
    pub async fn watch(&self, outbox: &Outbox, interval: Duration, timeout: Duration) {
        let mut next_ping = Instant::now() + interval;
        loop {
            let deadline = self.unanswered_since().map(|since| since + timeout);
            let wake = deadline.map_or(next_ping, |deadline| deadline.min(next_ping));
            tokio::time::sleep_until(wake).await;
            let now = Instant::now();
            if self
                .unanswered_since()
                .is_some_and(|since| now >= since + timeout)
            {
                return;
            }
            if now >= next_ping {
                let ping = wire::ping();
                // Registered before it is queued, so that the writer cannot have
                // written it, and a frame been taken as its answer, before it counts.
                self.pinged(&ping);
                outbox.push(&ping);
                next_ping = now + interval;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::task::JoinHandle;
    use tokio::time::sleep;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);
    const TIMEOUT: Duration = Duration::from_secs(5);
    /// Past a timer, so that the watch has run at it when the test looks.
    const JUST: Duration = Duration::from_millis(1);

    /// A keepalive watching with [`INTERVAL`] and `timeout`, in a task of its own.
    fn watch(timeout: Duration) -> (Arc<Keepalive>, Arc<Outbox>, JoinHandle<()>) {
        let keepalive = Arc::new(Keepalive::new());
        let outbox = Arc::new(Outbox::new(1 << 20));
        let watching = tokio::spawn({
            let (keepalive, outbox) = (keepalive.clone(), outbox.clone());
            async move { keepalive.watch(&outbox, INTERVAL, timeout).await }
        });
        (keepalive, outbox, watching)
    }

    /// How many pings are queued, taking them out; anything else fails the test.
    fn pings(outbox: &Outbox) -> usize {
        let mut batch = Vec::new();
        outbox.take_queued(&mut batch);
        assert!(
            batch.iter().all(|frame| *frame == wire::ping()),
            "{batch:?}"
        );
        batch.len()
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_goes_out_each_interval() {
        let (keepalive, outbox, watching) = watch(TIMEOUT);
        sleep(INTERVAL - JUST).await;
        assert_eq!(pings(&outbox), 0, "none before the first interval");
        for _ in 0..3 {
            sleep(JUST * 2).await;
            assert_eq!(pings(&outbox), 1);
            keepalive.heard();
            sleep(INTERVAL - JUST * 2).await;
        }
        assert!(!watching.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_pong_ends_the_session_once_the_timeout_passes() {
        let (_keepalive, outbox, watching) = watch(TIMEOUT);
        let started = Instant::now();
        watching.await.unwrap();
        assert_eq!(started.elapsed(), INTERVAL + TIMEOUT);
        assert_eq!(pings(&outbox), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_in_time_keeps_the_session_alive() {
        let (keepalive, outbox, watching) = watch(TIMEOUT);
        let started = Instant::now();
        // The pings at 10, 20 and 30 s each written, then answered just before its
        // timeout.
        for n in 1..=3 {
            tokio::time::sleep_until(started + INTERVAL * n + TIMEOUT - JUST).await;
            assert!(!watching.is_finished());
            assert_eq!(pings(&outbox), 1);
            keepalive.heard();
        }
        // Then silence: the ping at 40 s goes unanswered, and the session ends at 45 s.
        watching.await.unwrap();
        assert_eq!(started.elapsed(), INTERVAL * 4 + TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn what_arrives_before_the_ping_is_written_answers_nothing() {
        let (keepalive, outbox, watching) = watch(TIMEOUT);
        let started = Instant::now();
        // The ping at 10 s stays queued, as it does behind what a peer has not read;
        // the peer sends pongs (or anything) all along.
        while started.elapsed() < INTERVAL + TIMEOUT - JUST {
            sleep(JUST * 100).await;
            keepalive.heard();
        }
        watching.await.unwrap();
        assert_eq!(started.elapsed(), INTERVAL + TIMEOUT);
        // Once written, a ping is answered by the next frame.
        let (keepalive, outbox_2, watching) = watch(TIMEOUT);
        sleep(INTERVAL + JUST).await;
        assert_eq!(pings(&outbox_2), 1);
        keepalive.heard();
        sleep(TIMEOUT).await;
        assert!(!watching.is_finished());
        drop(outbox);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_runs_from_the_oldest_unanswered_ping() {
        // A timeout longer than the interval: pings at 10, 20 and 30 s go unanswered,
        // and the session ends 25 s after the first, not after the last.
        let (_keepalive, outbox, watching) = watch(INTERVAL * 2 + TIMEOUT);
        let started = Instant::now();
        watching.await.unwrap();
        assert_eq!(started.elapsed(), INTERVAL * 3 + TIMEOUT);
        assert_eq!(pings(&outbox), 3);
    }
}
