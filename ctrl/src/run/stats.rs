//! Counters of a running node, as text (SIGUSR1) or JSON (one object per
//! line; the shape the control socket will serve).

use datapath::drop::DropReason;
use datapath::worker::{GAP_LABELS, WorkerStats};
use serde_json::{Value, json};

use super::StatsFormat;

/// Render `workers`' counters.
pub fn render(workers: &[WorkerStats], generation: u64, format: StatsFormat) -> String {
    match format {
        StatsFormat::Json => format!("{}\n", to_json(workers, generation)),
        StatsFormat::Text => to_text(workers, generation),
    }
}

fn hit_rate(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        100.0 * hits as f64 / (hits + misses) as f64
    }
}

fn drops_json(s: &WorkerStats) -> Value {
    let mut m = serde_json::Map::new();
    for r in DropReason::ALL {
        let v = s.exec.drops.get(*r);
        if v != 0 {
            m.insert(r.name().into(), v.into());
        }
    }
    Value::Object(m)
}

/// Passes served from the flow caches: exact-match and megaflow lookups
/// that hit, and passes replayed from a chain (`datapath::cache::chain`).
fn cache_hits(s: &WorkerStats) -> u64 {
    s.cache.emc_hits + s.cache.megaflow_hits + s.cache.chain_passes
}

fn worker_json(s: &WorkerStats) -> Value {
    let hits = cache_hits(s);
    json!({
        "worker": s.worker,
        "generation": s.generation,
        "ports": s.ports.iter().map(|p| json!({
            "name": p.name, "ofport": p.ofport, "queue": p.queue,
            "rx_packets": p.stats.rx_packets, "rx_bytes": p.stats.rx_bytes,
            "tx_packets": p.stats.tx_packets, "tx_bytes": p.stats.tx_bytes,
            "rx_dropped": p.stats.rx_dropped, "rx_ring_full": p.stats.rx_ring_full,
            "rx_fill_empty": p.stats.rx_fill_empty,
            "tx_busy": p.stats.tx_busy, "errors": p.stats.errors,
        })).collect::<Vec<_>>(),
        "rx": s.exec.rx, "tx": s.exec.tx, "passes": s.exec.passes,
        "recircs": s.exec.recircs, "punts": s.exec.punts, "rejects": s.exec.rejects,
        "drops": drops_json(s),
        "cache": {
            "emc_hits": s.cache.emc_hits, "megaflow_hits": s.cache.megaflow_hits,
            "chain_hits": s.cache.chain_hits, "chain_passes": s.cache.chain_passes,
            "chain_diverged": s.cache.chain_diverged,
            "misses": s.cache.misses, "upcalls": s.cache.misses,
            "inserts": s.cache.inserts, "flushes": s.cache.flushes,
            "evictions": s.cache.evictions, "chain_stale": s.cache.chain_stale,
            "chain_evictions": s.cache.chain_evictions,
            "entries": s.cache_entries, "masks": s.cache_masks,
            "hit_rate": hit_rate(hits, s.cache.misses),
        },
        "conntrack": {
            "entries": s.ct_entries, "lookups": s.ct.lookups, "hits": s.ct.hits,
            "new": s.ct.new, "committed": s.ct.committed, "expired": s.ct.expired,
            "invalid": s.ct.invalid_total(), "nat_exhausted": s.ct.nat_exhausted,
            "table_full": s.ct.table_full,
        },
        "worker_counters": {
            "polls": s.counters.polls, "busy_polls": s.counters.busy_polls,
            "handoff_process_out": s.counters.handoff_process_out,
            "handoff_process_in": s.counters.handoff_process_in,
            "handoff_tx_out": s.counters.handoff_tx_out,
            "handoff_tx_in": s.counters.handoff_tx_in,
            "handoff_rewritten": s.counters.handoff_rewritten,
            "handoff_full": s.counters.handoff_full,
            "tx_in_place": s.counters.tx_in_place, "tx_no_frame": s.counters.tx_no_frame, "tx_too_long": s.counters.tx_too_long,
            "tx_busy_dropped": s.counters.tx_busy_dropped, "tx_no_route": s.counters.tx_no_route,
            "reloads": s.counters.reloads,
            "yields": s.counters.yields,
            "max_poll_gap_us": s.counters.max_gap_ns / 1000,
            "poll_gaps": gaps_json(s),
        },
    })
}

/// The poll-gap histogram as `{label: count}`, every bucket.
fn gaps_json(s: &WorkerStats) -> Value {
    let mut m = serde_json::Map::new();
    for (l, v) in GAP_LABELS.iter().zip(s.counters.gaps) {
        m.insert((*l).into(), v.into());
    }
    Value::Object(m)
}

/// Counters as one JSON object: `{"generation", "workers": [...], "total"}`.
pub fn to_json(workers: &[WorkerStats], generation: u64) -> Value {
    let sum = |f: &dyn Fn(&WorkerStats) -> u64| workers.iter().map(f).sum::<u64>();
    let hits = sum(&cache_hits);
    let misses = sum(&|s| s.cache.misses);
    json!({
        "generation": generation,
        "workers": workers.iter().map(worker_json).collect::<Vec<_>>(),
        "total": {
            "rx": sum(&|s| s.exec.rx), "tx": sum(&|s| s.exec.tx),
            "rejects": sum(&|s| s.exec.rejects),
            "drops": sum(&|s| DropReason::ALL.iter().map(|r| s.exec.drops.get(*r)).sum()),
            "cache_hits": hits, "cache_misses": misses, "upcalls": misses,
            "cache_hit_rate": hit_rate(hits, misses),
            "ct_entries": sum(&|s| s.ct_entries as u64),
            "handoffs": sum(&|s| s.counters.handoff_process_out),
        },
    })
}

/// Counters as text, one block per worker and a total line.
pub fn to_text(workers: &[WorkerStats], generation: u64) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "flowpath counters: generation {generation}, {} worker(s)",
        workers.len()
    );
    let (mut rx, mut tx, mut hits, mut misses, mut ct) = (0, 0, 0, 0, 0);
    for s in workers {
        let h = cache_hits(s);
        rx += s.exec.rx;
        tx += s.exec.tx;
        hits += h;
        misses += s.cache.misses;
        ct += s.ct_entries;
        let c = &s.counters;
        let _ = writeln!(
            o,
            "worker {}: rx {} tx {} passes {} recircs {}",
            s.worker, s.exec.rx, s.exec.tx, s.exec.passes, s.exec.recircs
        );
        let _ = writeln!(
            o,
            "  cache: hits {} (emc {}, megaflow {}, chain {} in {} packets), misses/upcalls {}, hit rate {:.1}%, {} megaflows, {} masks, {} flushes, {} evictions",
            h,
            s.cache.emc_hits,
            s.cache.megaflow_hits,
            s.cache.chain_passes,
            s.cache.chain_hits + s.cache.chain_diverged,
            s.cache.misses,
            hit_rate(h, s.cache.misses),
            s.cache_entries,
            s.cache_masks,
            s.cache.flushes,
            s.cache.evictions
        );
        let _ = writeln!(
            o,
            "  conntrack: {} entries, {} committed, {} invalid, {} expired",
            s.ct_entries,
            s.ct.committed,
            s.ct.invalid_total(),
            s.ct.expired
        );
        let _ = writeln!(
            o,
            "  handoffs: process out {} (after rewrite {}) in {}, transmit out {} in {}, ring full {}; tx in place {}; tx drops: no frame {}, busy {}, no route {}",
            c.handoff_process_out,
            c.handoff_rewritten,
            c.handoff_process_in,
            c.handoff_tx_out,
            c.handoff_tx_in,
            c.handoff_full,
            c.tx_in_place,
            c.tx_no_frame,
            c.tx_busy_dropped,
            c.tx_no_route
        );
        let gaps: Vec<String> = GAP_LABELS
            .iter()
            .zip(c.gaps)
            .filter(|(_, v)| *v != 0)
            .map(|(l, v)| format!("{l} {v}"))
            .collect();
        let _ = writeln!(
            o,
            "  polls: {} ({} busy, {} yields), longest gap {} us; gaps: {}",
            c.polls,
            c.busy_polls,
            c.yields,
            c.max_gap_ns / 1000,
            gaps.join(", ")
        );
        for p in &s.ports {
            let _ = writeln!(
                o,
                "  port {} (ofport {}) queue {}: rx {} pkts {} bytes, tx {} pkts {} bytes, rx_dropped {} (ring full {}), fill ring empty {}, tx_busy {}, errors {}",
                p.name,
                p.ofport,
                p.queue,
                p.stats.rx_packets,
                p.stats.rx_bytes,
                p.stats.tx_packets,
                p.stats.tx_bytes,
                p.stats.rx_dropped,
                p.stats.rx_ring_full,
                p.stats.rx_fill_empty,
                p.stats.tx_busy,
                p.stats.errors
            );
        }
        if s.exec.punts > 0 {
            let _ = writeln!(
                o,
                "  controller: punts {}, rejects answered {} (TCP RST / ICMP port unreachable)",
                s.exec.punts, s.exec.rejects
            );
        }
        let drops: Vec<String> = s
            .exec
            .drops
            .nonzero()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if !drops.is_empty() {
            let _ = writeln!(o, "  drops: {}", drops.join(" "));
        }
    }
    let _ = writeln!(
        o,
        "total: rx {rx} tx {tx}, cache hit rate {:.1}% ({hits} hits, {misses} upcalls), {ct} conntrack entries",
        hit_rate(hits, misses)
    );
    o
}
