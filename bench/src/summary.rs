//! What a run reports: the sender's and the sink's counters, rates, loss
//! and latency percentiles, as one JSON object at the end and a one-line
//! progress display while running.

use crate::template::Stamp;

/// Latency buckets: powers of two of nanoseconds, 1 ns .. ~1.1e12 ns.
const BUCKETS: usize = 41;

/// Counters kept by the sink, folded in per packet (no allocation).
#[derive(Debug, Clone)]
pub struct SinkStats {
    /// Frames received.
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Frames that carried a generator stamp.
    pub stamped: u64,
    /// Highest sequence number seen + 1 (how many the sender had sent by then).
    pub seq_end: u64,
    lat: [u64; BUCKETS],
    lat_sum_ns: u128,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            packets: 0,
            bytes: 0,
            stamped: 0,
            seq_end: 0,
            lat: [0; BUCKETS],
            lat_sum_ns: 0,
        }
    }
}

impl SinkStats {
    /// Counts one received frame of `len` bytes, received at `now_ns`.
    pub fn record(&mut self, len: usize, stamp: Option<Stamp>, now_ns: u64) {
        self.packets += 1;
        self.bytes += len as u64;
        if let Some(s) = stamp {
            self.stamped += 1;
            self.seq_end = self.seq_end.max(s.seq + 1);
            let lat = now_ns.saturating_sub(s.tx_ns);
            self.lat_sum_ns += u128::from(lat);
            let b = (64 - lat.leading_zeros() as usize).min(BUCKETS - 1);
            self.lat[b] += 1;
        }
    }

    /// Upper bound (ns) of the bucket holding quantile `q` of the stamped
    /// packets' latency, or `None` without any.
    pub fn latency_quantile_ns(&self, q: f64) -> Option<u64> {
        if self.stamped == 0 {
            return None;
        }
        let target = ((self.stamped as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in self.lat.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Some(if b == 0 { 0 } else { (1u64 << b) - 1 });
            }
        }
        None
    }

    /// Mean latency of the stamped packets in ns.
    pub fn latency_mean_ns(&self) -> Option<u64> {
        (self.stamped > 0).then(|| (self.lat_sum_ns / u128::from(self.stamped)) as u64)
    }

    /// The JSON summary over `secs` seconds; `sent` is the sender's count
    /// when known (else the highest sequence number seen stands in).
    pub fn to_json(&self, secs: f64, sent: Option<u64>) -> serde_json::Value {
        let sent = sent.unwrap_or(self.seq_end);
        let loss = sent.saturating_sub(self.stamped);
        serde_json::json!({
            "mode": "sink",
            "secs": round3(secs),
            "packets": self.packets,
            "bytes": self.bytes,
            "pps": rate(self.packets, secs),
            "bps": rate(self.bytes * 8, secs),
            "stamped": self.stamped,
            "sent": sent,
            "lost": loss,
            "loss_ratio": if sent > 0 { round3(loss as f64 / sent as f64) } else { 0.0 },
            "latency_ns": {
                "mean": self.latency_mean_ns(),
                "p50": self.latency_quantile_ns(0.5),
                "p99": self.latency_quantile_ns(0.99),
                "max": self.latency_quantile_ns(1.0),
            },
        })
    }
}

/// The sender's summary.
pub fn gen_json(sent: u64, bytes: u64, flows: u64, secs: f64) -> serde_json::Value {
    serde_json::json!({
        "mode": "gen",
        "secs": round3(secs),
        "packets": sent,
        "bytes": bytes,
        "flows": flows,
        "pps": rate(sent, secs),
        "bps": rate(bytes * 8, secs),
    })
}

/// The live progress line (no newline; the caller writes `\r` before it).
pub fn progress_line(what: &str, secs: f64, packets: u64, last_pps: f64) -> String {
    format!(
        "{what}: {secs:6.1}s {packets:>12} pkts {:>8.3} Mpps",
        last_pps / 1e6
    )
}

fn rate(n: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (n as f64 / secs) as u64
    } else {
        0
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rate_and_latency_in_the_summary() {
        let mut s = SinkStats::default();
        for seq in [0u64, 1, 3, 9] {
            s.record(
                60,
                Some(Stamp { seq, tx_ns: 1_000 }),
                1_000 + 1_000 * (seq + 1),
            );
        }
        s.record(60, None, 0);
        let j = s.to_json(2.0, None);
        assert_eq!(j["packets"], 5);
        assert_eq!(j["bytes"], 300);
        assert_eq!(j["pps"], 2);
        assert_eq!(j["sent"], 10);
        assert_eq!(j["lost"], 6);
        assert_eq!(j["loss_ratio"], 0.6);
        assert_eq!(j["latency_ns"]["mean"], 4_250);
        // 1000, 2000, 4000, 10000 ns: the median's bucket is [1024, 2047].
        assert_eq!(j["latency_ns"]["p50"], 2047);
        assert_eq!(j["latency_ns"]["max"], 16383);
        // The sender's count wins over the sequence numbers when given.
        assert_eq!(s.to_json(2.0, Some(4))["lost"], 0);
    }

    #[test]
    fn empty_sink_and_gen_summary() {
        let s = SinkStats::default();
        let j = s.to_json(0.0, None);
        assert_eq!(j["pps"], 0);
        assert!(j["latency_ns"]["p50"].is_null());
        let g = gen_json(3_000_000, 180_000_000, 1000, 3.0);
        assert_eq!(g["pps"], 1_000_000);
        assert_eq!(g["bps"], 480_000_000);
        assert_eq!(g["flows"], 1000);
        assert_eq!(
            progress_line("gen", 1.0, 5, 2.5e6),
            "gen:    1.0s            5 pkts    2.500 Mpps"
        );
    }
}
