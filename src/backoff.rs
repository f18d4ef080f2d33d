//! How long to wait before trying again after failures in a row: the one retry policy
//! of the Rust side (the server's accept loop and reconnects to Redis, `chat-tui`'s
//! reconnects to the server).
//! The page has the same policy in JavaScript.

use std::time::Duration;

/// Doubling waits from `first` up to `longest`, each then cut to a random 50–100 % of
/// itself, so that the many clients of a restarted server (or the nodes of a cluster
/// whose Redis came back) do not all retry in the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure, before jitter.
    pub first: Duration,
    /// The longest wait, before jitter.
    pub longest: Duration,
}

impl Backoff {
    /// A client reconnecting to the chat server: 1 s, 2 s, 4 s … up to 15 s.
    pub const CLIENT: Backoff = Backoff {
        first: Duration::from_secs(1),
        longest: Duration::from_secs(15),
    };

    /// A clustered node reconnecting to Redis: 100 ms, 200 ms … up to 5 s, short because
    /// the node's clients are closed until it is back.
    pub const CLUSTER: Backoff = Backoff {
        first: Duration::from_millis(100),
        longest: Duration::from_secs(5),
    };

    /// A server whose `accept` fails (most often out of descriptors): 10 ms … up to 1 s,
    /// so that it neither spins nor stays deaf long once descriptors are free again.
    pub const ACCEPT: Backoff = Backoff {
        first: Duration::from_millis(10),
        longest: Duration::from_secs(1),
    };

    /// The wait after `failures` failures in a row (0 counts as 1), before jitter.
    pub fn ceiling(&self, failures: u32) -> Duration {
        // 2^20 times any first wait worth having is past any longest one.
        let doublings = failures.saturating_sub(1).min(20);
        self.first.saturating_mul(1 << doublings).min(self.longest)
    }

    /// The wait after `failures` failures in a row: its ceiling, cut to a random
    /// 50–100 % of itself.
    pub fn wait(&self, failures: u32) -> Duration {
        self.ceiling(failures).mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_the_first_wait_up_to_the_longest() {
        let client = Backoff::CLIENT;
        let ceilings: Vec<u64> = (1..=6).map(|n| client.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 15, 15]);
        assert_eq!(client.ceiling(0), client.ceiling(1));
        assert_eq!(client.ceiling(u32::MAX), Duration::from_secs(15));
        let cluster = Backoff::CLUSTER;
        assert_eq!(cluster.ceiling(1), Duration::from_millis(100));
        assert_eq!(cluster.ceiling(3), Duration::from_millis(400));
        assert_eq!(cluster.ceiling(60), Duration::from_secs(5));
    }

    #[test]
    fn waits_are_half_to_all_of_their_ceiling() {
        for failures in [1, 3, 40] {
            let ceiling = Backoff::CLIENT.ceiling(failures);
            for _ in 0..200 {
                let wait = Backoff::CLIENT.wait(failures);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{wait:?} of {ceiling:?}"
                );
            }
        }
    }
}
