//! In-process port for tests, benches and golden-packet replay.
//!
//! Frames are injected as bytes and copied into the worker's [`Umem`] on
//! `rx_burst`; transmitted frames are copied out (when capturing) and their
//! chunks freed. Two modes keep benches allocation-free:
//!
//! * [`MemoryPort::set_replay`]: `rx_burst` cycles through a fixed set of
//!   templates forever (no per-packet allocation),
//! * [`MemoryPort::set_capture`]`(false)`: `tx_burst` only counts.

use std::collections::VecDeque;

use super::{Batch, Port, PortStats, Umem};

/// An in-memory port. See the module docs.
#[derive(Debug, Default)]
pub struct MemoryPort {
    name: String,
    rx: VecDeque<Vec<u8>>,
    replay: Vec<Vec<u8>>,
    replay_next: usize,
    sent: Vec<Vec<u8>>,
    capture: bool,
    tx_limit: Option<usize>,
    stats: PortStats,
}

impl MemoryPort {
    /// A port named `name` with an empty queue that captures what it sends.
    pub fn new(name: impl Into<String>) -> MemoryPort {
        MemoryPort {
            name: name.into(),
            capture: true,
            ..MemoryPort::default()
        }
    }

    /// Queue one frame for the next `rx_burst`.
    pub fn inject(&mut self, frame: &[u8]) {
        self.rx.push_back(frame.to_vec());
    }

    /// Frames queued and not yet received.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Receive these frames round-robin, forever, after the injected queue
    /// drains (empty: stop replaying).
    pub fn set_replay(&mut self, templates: Vec<Vec<u8>>) {
        self.replay = templates;
        self.replay_next = 0;
    }

    /// Whether `tx_burst` keeps a copy of each frame (default: yes).
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on;
    }

    /// Accept at most `n` frames per `tx_burst` (simulates a busy device);
    /// `None` removes the limit.
    pub fn set_tx_limit(&mut self, n: Option<usize>) {
        self.tx_limit = n;
    }

    /// Take the frames transmitted so far.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        let mut n = 0;
        while batch.space() > 0 {
            let replaying = self.rx.is_empty();
            if replaying && self.replay.is_empty() {
                break;
            }
            let Some(mut frame) = umem.alloc() else {
                self.stats.rx_dropped += 1;
                break;
            };
            let bytes: &[u8] = if replaying {
                &self.replay[self.replay_next]
            } else {
                &self.rx[0]
            };
            let ok = umem.set_len(&mut frame, bytes.len()).is_ok();
            if ok {
                umem.data_mut(&frame).copy_from_slice(bytes);
            }
            let len = bytes.len() as u64;
            if replaying {
                self.replay_next = (self.replay_next + 1) % self.replay.len();
            } else {
                self.rx.pop_front();
            }
            if !ok {
                self.stats.rx_dropped += 1;
                umem.free(frame);
                continue;
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len;
            // Cannot fail: the loop checked `space`.
            let _ = batch.push(frame);
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        let n = self.tx_limit.map_or(batch.len(), |l| l.min(batch.len()));
        for i in 0..n {
            let frame = batch.take(i);
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += frame.len() as u64;
            if self.capture {
                self.sent.push(umem.data(&frame).to_vec());
            }
            umem.free(frame);
        }
        self.stats.tx_busy += (batch.len() - n) as u64;
        batch.consume_front(n);
        n
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::UmemConfig;

    #[test]
    fn inject_forward_collect() {
        let mut umem = Umem::new(UmemConfig {
            frame_count: 16,
            ..UmemConfig::default()
        })
        .unwrap();
        let mut a = MemoryPort::new("a");
        let mut b = MemoryPort::new("b");
        for i in 0..3u8 {
            a.inject(&[i; 60]);
        }
        a.inject(&[9; 1793]); // too long for a 2048 chunk: dropped, counted
        let mut batch = Batch::new();
        assert_eq!(a.rx_burst(&mut umem, &mut batch), 3);
        assert_eq!(a.stats().rx_dropped, 1);
        umem.data_mut(&batch.frames()[1])[0] = 0xaa;
        b.set_tx_limit(Some(2));
        assert_eq!(b.tx_burst(&mut umem, &mut batch), 2);
        assert_eq!(batch.len(), 1);
        b.set_tx_limit(None);
        assert_eq!(b.tx_burst(&mut umem, &mut batch), 1);
        let sent = b.take_sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1][0], 0xaa);
        assert_eq!(sent[2], vec![2; 60]);
        assert_eq!(b.stats().tx_packets, 3);
        assert_eq!(b.stats().tx_busy, 1);
        assert_eq!(umem.free_count(), 16);
    }

    #[test]
    fn replay_cycles_templates() {
        let mut umem = Umem::new(UmemConfig {
            frame_count: 128,
            ..UmemConfig::default()
        })
        .unwrap();
        let mut p = MemoryPort::new("gen");
        p.set_replay(vec![vec![1; 64], vec![2; 64]]);
        let mut batch = Batch::new();
        assert_eq!(p.rx_burst(&mut umem, &mut batch), 64);
        assert_eq!(umem.data(&batch.frames()[63])[0], 2);
        assert_eq!(umem.data(&batch.frames()[62])[0], 1);
        umem.free_batch(&mut batch);
    }
}
