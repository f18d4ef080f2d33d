//! The keepalive of one session: a ping every interval, and the end of the session
//! when one goes unanswered for the timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::room::outbox::Outbox;
use crate::room::wire;

/// Whether the peer is alive: every ping we queue must be answered, by a pong or any
/// other frame, within the ping timeout.
///
/// Times are milliseconds since the session began, in an atomic rather than a `Cell`
/// because the reading and the keepalive futures of one session share it, and the
/// session's future must be `Send` to be spawned.
pub struct Keepalive {
    start: Instant,
    /// When the oldest ping not yet answered was queued, or `ANSWERED`.
    unanswered_since: AtomicU64,
}

const ANSWERED: u64 = u64::MAX;

impl Keepalive {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            unanswered_since: AtomicU64::new(ANSWERED),
        }
    }

    /// A frame arrived: the peer is alive, and every ping so far is answered.
    pub fn heard(&self) {
        self.unanswered_since.store(ANSWERED, Ordering::Relaxed);
    }

    /// A ping was queued; it starts the clock unless an older one is still unanswered.
    fn pinged(&self) {
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
                outbox.push(&wire::ping());
                self.pinged();
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
        // The pings at 10, 20 and 30 s each answered just before its timeout.
        for n in 1..=3 {
            tokio::time::sleep_until(started + INTERVAL * n + TIMEOUT - JUST).await;
            assert!(!watching.is_finished());
            keepalive.heard();
        }
        assert_eq!(pings(&outbox), 3);
        // Then silence: the ping at 40 s goes unanswered, and the session ends at 45 s.
        watching.await.unwrap();
        assert_eq!(started.elapsed(), INTERVAL * 4 + TIMEOUT);
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
