//! A token-bucket rate limiter with an injected clock (nanoseconds), so
//! tests drive time and the generator passes a monotonic reading.

/// Allows `rate` packets per second on average and at most `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: u64,
    burst: u64,
    /// Tokens scaled by 1e9 (packet-nanoseconds), so no float per call.
    tokens: u128,
    last_ns: u64,
}

impl RateLimiter {
    /// `rate` packets/s (0 = unlimited), refilling up to `burst` packets.
    pub fn new(rate: u64, burst: u64, now_ns: u64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1),
            tokens: 0,
            last_ns: now_ns,
        }
    }

    /// How many packets (at most `want`) may go at `now_ns`; they are
    /// taken from the bucket.
    pub fn take(&mut self, now_ns: u64, want: u64) -> u64 {
        if self.rate == 0 {
            return want;
        }
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns.max(self.last_ns);
        let cap = u128::from(self.burst) * 1_000_000_000;
        self.tokens = (self.tokens + u128::from(dt) * u128::from(self.rate)).min(cap);
        let n = ((self.tokens / 1_000_000_000) as u64).min(want);
        self.tokens -= u128::from(n) * 1_000_000_000;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_rate_and_caps_the_burst() {
        let mut r = RateLimiter::new(1000, 32, 0);
        assert_eq!(r.take(0, 64), 0);
        // 1 ms at 1000 pps = 1 packet.
        assert_eq!(r.take(1_000_000, 64), 1);
        // A long pause refills at most a burst.
        assert_eq!(r.take(10_000_000_000, 64), 32);
        // Over one simulated second in 100 us steps: exactly the rate.
        let mut r = RateLimiter::new(1000, 32, 0);
        let sent: u64 = (1..=10_000).map(|t| r.take(t * 100_000, 64)).sum();
        assert_eq!(sent, 1000);
    }

    #[test]
    fn zero_rate_is_unlimited_and_time_never_runs_backwards() {
        let mut r = RateLimiter::new(0, 1, 0);
        assert_eq!(r.take(0, 64), 64);
        let mut r = RateLimiter::new(1_000_000, 64, 5_000);
        assert_eq!(r.take(1_000, 64), 0);
        assert_eq!(r.take(15_000, 64), 10);
    }
}
