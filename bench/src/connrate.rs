//! Bookkeeping of `flowpath-connrate` (RFC 9693-style connection setup
//! rate): how many handshakes completed, how many failed and why, and the
//! connect latency distribution, summarised as one JSON object.
//!
//! Latencies are kept exactly (one `u32` of microseconds per completed
//! handshake, a few MB for a run) so percentiles are not bucket bounds.

use std::collections::BTreeMap;

/// Counters of one client run.
#[derive(Debug, Default, Clone)]
pub struct ConnStats {
    /// `connect()` calls issued (sockets that got as far as connecting).
    pub attempted: u64,
    /// Handshakes that completed (the socket became writable without error).
    pub established: u64,
    /// Connects that did not complete within the timeout.
    pub timeouts: u64,
    /// Connects still in flight when the run ended (neither counted as
    /// established nor as failed).
    pub abandoned: u64,
    /// `bind()` failures (source address and port still in use).
    pub bind_failures: u64,
    /// Failed connects by error name (`ECONNREFUSED`, ...).
    pub failures: BTreeMap<String, u64>,
    latency_us: Vec<u32>,
}

impl ConnStats {
    /// Records one completed handshake that took `us` microseconds.
    pub fn established(&mut self, us: u64) {
        self.established += 1;
        self.latency_us.push(us.min(u64::from(u32::MAX)) as u32);
    }

    /// Records one failed connect.
    pub fn failed(&mut self, reason: &str) {
        *self.failures.entry(reason.to_string()).or_default() += 1;
    }

    /// Failed connects, all reasons.
    pub fn failed_total(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The `q` quantile (0..=1) of the handshake latency, nearest rank.
    pub fn latency_quantile_us(&mut self, q: f64) -> Option<u32> {
        if self.latency_us.is_empty() {
            return None;
        }
        self.latency_us.sort_unstable();
        let n = self.latency_us.len();
        let rank = ((n as f64 * q).ceil() as usize).clamp(1, n);
        Some(self.latency_us[rank - 1])
    }

    /// The summary over a run of `secs` seconds.
    pub fn to_json(&mut self, secs: f64) -> serde_json::Value {
        let rate = if secs > 0.0 {
            (self.established as f64 / secs) as u64
        } else {
            0
        };
        serde_json::json!({
            "mode": "client",
            "secs": (secs * 1000.0).round() / 1000.0,
            "attempted": self.attempted,
            "established": self.established,
            "conns_per_sec": rate,
            "failed": self.failed_total(),
            "failures": self.failures,
            "timeouts": self.timeouts,
            "abandoned": self.abandoned,
            "bind_failures": self.bind_failures,
            "latency_us": {
                "p50": self.latency_quantile_us(0.5),
                "p90": self.latency_quantile_us(0.9),
                "p99": self.latency_quantile_us(0.99),
                "max": self.latency_quantile_us(1.0),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_failures_and_percentiles() {
        let mut s = ConnStats::default();
        for us in (1..=100).rev() {
            s.established(us);
        }
        s.attempted = 104;
        s.failed("ECONNREFUSED");
        s.failed("ECONNREFUSED");
        s.failed("ETIMEDOUT");
        s.timeouts = 1;
        let j = s.to_json(2.0);
        assert_eq!(j["established"], 100);
        assert_eq!(j["conns_per_sec"], 50);
        assert_eq!(j["failed"], 3);
        assert_eq!(j["failures"]["ECONNREFUSED"], 2);
        assert_eq!(j["latency_us"]["p50"], 50);
        assert_eq!(j["latency_us"]["p99"], 99);
        assert_eq!(j["latency_us"]["max"], 100);
    }

    #[test]
    fn empty_run() {
        let mut s = ConnStats::default();
        let j = s.to_json(0.0);
        assert_eq!(j["conns_per_sec"], 0);
        assert!(j["latency_us"]["p50"].is_null());
        assert_eq!(s.latency_quantile_us(0.0), None);
    }
}
