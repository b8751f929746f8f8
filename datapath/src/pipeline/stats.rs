//! Per-flow statistics: the `n_packets`, `n_bytes` and `idle_age` that
//! `ovs-ofctl dump-flows` shows for every OpenFlow rule.
//!
//! OVS counts on its datapath flows (megaflows) and credits each one's
//! packets to the OpenFlow rules its translation went through (the xlate
//! cache's rule entries, pushed by the revalidators). flowpath does the
//! same per core and on demand:
//!
//! - a translation records the flows it hit ([`super::xlate::Xlation::rules`],
//!   a flow hit twice in one pass counts twice);
//! - each megaflow entry counts the packets that ran it
//!   ([`crate::cache::MegaflowCache::credit`]: a packet, its bytes and a
//!   use stamp; a chain replay credits every entry of its walk);
//! - when the cache drops its entries (capacity, a new pipeline) their
//!   counts are first folded into per-rule totals, so nothing is lost;
//! - across pipeline generations a worker keeps its totals in a
//!   [`RuleStats`], re-keyed to the new flows by OVS's rule identity (table,
//!   priority, match): a flow that stays — even with new actions — keeps its
//!   counts, as OVS keeps them when a flow_mod replaces a rule
//!   (`modify_keep_counts`); a removed flow's counts go with it. Learned
//!   flows are keyed by their learned id.
//!
//! The control thread asks each worker for a [`RuleReport`] between bursts
//! and adds them up. Nothing here runs per packet except the entry credit.

use std::sync::Arc;

use hashbrown::HashMap;

use super::Pipeline;
use super::classifier::FlowIdx;
use super::ir::Flow;
use super::learn::LEARNED_BIT;

/// A flow's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStat {
    /// Packets that went through the flow.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// When it was last used (the worker's clock, ms; 0: never).
    pub used_ms: u64,
}

impl FlowStat {
    /// Add `o`'s counts; the later use stamp wins.
    #[inline]
    pub fn add(&mut self, o: FlowStat) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.used_ms = self.used_ms.max(o.used_ms);
    }

    /// One packet of `bytes` bytes at `now_ms`.
    #[inline]
    pub fn credit(&mut self, bytes: usize, now_ms: u64) {
        self.packets += 1;
        self.bytes += bytes as u64;
        self.used_ms = now_ms;
    }
}

/// A worker's per-flow totals, keyed under one set of static flows.
#[derive(Debug, Clone, Default)]
pub struct RuleStats {
    flows: Arc<Vec<Flow>>,
    statics: HashMap<FlowIdx, FlowStat>,
    learned: HashMap<u64, FlowStat>,
}

/// What a worker reports: its totals and the static flows they refer to.
#[derive(Debug, Clone, Default)]
pub struct RuleReport {
    /// The static flows the `statics` indices refer to (the worker's
    /// pipeline, which may be a generation behind the control thread's).
    pub flows: Arc<Vec<Flow>>,
    /// Counts by static flow index.
    pub statics: Vec<(FlowIdx, FlowStat)>,
    /// Counts by learned flow id.
    pub learned: Vec<(u64, FlowStat)>,
    /// The worker's clock when it answered (for `idle_age`).
    pub now_ms: u64,
}

impl RuleStats {
    /// Empty totals for pipeline `p`'s flows.
    pub fn new(p: &Pipeline) -> RuleStats {
        RuleStats {
            flows: p.flows.clone(),
            ..RuleStats::default()
        }
    }

    /// Add counts keyed by classifier index under `p` (whose static flows
    /// must be the ones these totals are keyed under).
    pub fn add_indexed(
        &mut self,
        p: &Pipeline,
        counts: impl IntoIterator<Item = (FlowIdx, FlowStat)>,
    ) {
        debug_assert!(Arc::ptr_eq(&self.flows, &p.flows));
        for (idx, s) in counts {
            if idx & LEARNED_BIT != 0 {
                let Some(l) = p.learned.flows().get((idx & !LEARNED_BIT) as usize) else {
                    continue;
                };
                self.learned.entry(l.id).or_default().add(s);
            } else {
                self.statics.entry(idx).or_default().add(s);
            }
        }
    }

    /// Re-key the totals for pipeline `p`: static flows that `p` still has
    /// (same table, priority and match) keep their counts, the others are
    /// dropped. Learned totals whose flow is gone are dropped once they
    /// outnumber `p`'s learned flows (amortised: a learn generation costs
    /// nothing here).
    pub fn rebase(&mut self, p: &Pipeline) {
        if !Arc::ptr_eq(&self.flows, &p.flows) {
            let old = std::mem::take(&mut self.statics);
            for (idx, s) in old {
                let Some(f) = self.flows.get(idx as usize) else {
                    continue;
                };
                if let Some(n) = p.find(f.table, f.priority, &f.matches) {
                    self.statics.entry(n).or_default().add(s);
                }
            }
            self.flows = p.flows.clone();
        }
        let live = p.learned.flows().len();
        if self.learned.len() > 2 * live + 64 {
            let ids: hashbrown::HashSet<u64> = p.learned.flows().iter().map(|l| l.id).collect();
            self.learned.retain(|id, _| ids.contains(id));
        }
    }

    /// These totals plus `live` (counts by classifier index under `p`, the
    /// pipeline these totals are keyed under), as a report at `now_ms`.
    pub fn report(
        &self,
        p: &Pipeline,
        live: impl IntoIterator<Item = (FlowIdx, FlowStat)>,
        now_ms: u64,
    ) -> RuleReport {
        let mut all = self.clone();
        all.add_indexed(p, live);
        RuleReport {
            flows: all.flows,
            statics: all.statics.into_iter().collect(),
            learned: all.learned.into_iter().collect(),
            now_ms,
        }
    }
}

/// When each static flow was added and last modified (ms on the control
/// clock), for `duration` and `hard_age`. A new pipeline keeps the times of
/// the flows it still has (same table, priority and match): OVS's
/// replace-flows and reload only modify what changed, and a modify keeps a
/// rule's creation time; a flow whose actions or cookie changed is
/// modified now.
#[derive(Debug, Clone, Default)]
pub struct FlowTimes {
    /// The pipeline the times are for (its static flows and their index).
    p: Pipeline,
    created: Vec<u64>,
    modified: Vec<u64>,
}

impl FlowTimes {
    /// Every flow of `p` added at `now_ms`.
    pub fn new(p: &Pipeline, now_ms: u64) -> FlowTimes {
        FlowTimes {
            p: p.clone(),
            created: vec![now_ms; p.flows.len()],
            modified: vec![now_ms; p.flows.len()],
        }
    }

    /// The times for pipeline `p`, published at `now_ms`, following these.
    pub fn rebase(&self, p: &Pipeline, now_ms: u64) -> FlowTimes {
        if Arc::ptr_eq(&self.p.flows, &p.flows) {
            return FlowTimes {
                p: p.clone(),
                ..self.clone()
            };
        }
        let mut t = FlowTimes::new(p, now_ms);
        for (i, f) in p.flows.iter().enumerate() {
            if let Some(j) = self.p.find(f.table, f.priority, &f.matches) {
                let (j, of) = (j as usize, &self.p.flows[j as usize]);
                t.created[i] = self.created[j];
                if of.actions == f.actions && of.cookie == f.cookie {
                    t.modified[i] = self.modified[j];
                }
            }
        }
        t
    }

    /// Flows `added` are new again (an OpenFlow add over an existing flow
    /// keeps its counts but restarts its duration).
    pub fn restart(&mut self, now_ms: u64, mut added: impl FnMut(&Flow) -> bool) {
        for (i, f) in self.p.flows.iter().enumerate() {
            if added(f) {
                self.created[i] = now_ms;
                self.modified[i] = now_ms;
            }
        }
    }

    /// The static flows of `p` whose timeout passed at `now_ms`, given the
    /// workers' `counts` ([`merge`]), as OVS's `rule_expire` decides: a hard
    /// timeout counts from the flow's last modification, an idle timeout
    /// from its last use (a flow never used counts as used when modified).
    /// Empty unless these times are for `p`.
    pub fn expired(
        &self,
        p: &Pipeline,
        counts: &std::collections::HashMap<FlowIdx, (FlowStat, Option<u64>)>,
        now_ms: u64,
    ) -> Vec<FlowIdx> {
        if !Arc::ptr_eq(&self.p.flows, &p.flows) {
            return Vec::new();
        }
        p.timed
            .iter()
            .copied()
            .filter(|&i| {
                let f = &p.flows[i as usize];
                let since_modified = now_ms.saturating_sub(self.modified[i as usize]);
                if f.hard_timeout != 0 && since_modified > u64::from(f.hard_timeout) * 1000 {
                    return true;
                }
                let idle = counts
                    .get(&i)
                    .and_then(|c| c.1)
                    .map_or(since_modified, |u| u.min(since_modified));
                f.idle_timeout != 0 && idle > u64::from(f.idle_timeout) * 1000
            })
            .collect()
    }

    /// (created, modified) of static flow `idx` if these times are for `p`.
    pub fn get(&self, p: &Pipeline, idx: FlowIdx) -> Option<(u64, u64)> {
        if !Arc::ptr_eq(&self.p.flows, &p.flows) {
            return None;
        }
        Some((
            *self.created.get(idx as usize)?,
            *self.modified.get(idx as usize)?,
        ))
    }
}

/// Every flow's counters under pipeline `p`, summed over `reports`:
/// `(flow index, counts, idle ms)`, where idle is the time since the flow
/// was last used by any worker (`None`: never used). Reports keyed under
/// other static flows (a worker a generation behind) are mapped by OVS's
/// rule identity.
pub fn merge(
    p: &Pipeline,
    reports: &[RuleReport],
) -> std::collections::HashMap<FlowIdx, (FlowStat, Option<u64>)> {
    let mut out: std::collections::HashMap<FlowIdx, (FlowStat, Option<u64>)> =
        std::collections::HashMap::new();
    let learned_pos: HashMap<u64, usize> = p
        .learned
        .flows()
        .iter()
        .enumerate()
        .map(|(i, l)| (l.id, i))
        .collect();
    for r in reports {
        let same = Arc::ptr_eq(&r.flows, &p.flows);
        let mut put = |idx: FlowIdx, s: &FlowStat| {
            let e = out.entry(idx).or_default();
            e.0.packets += s.packets;
            e.0.bytes += s.bytes;
            if s.used_ms != 0 {
                let idle = r.now_ms.saturating_sub(s.used_ms);
                e.1 = Some(e.1.map_or(idle, |i| i.min(idle)));
            }
        };
        for (idx, s) in &r.statics {
            let idx = if same {
                Some(*idx)
            } else {
                r.flows
                    .get(*idx as usize)
                    .and_then(|f| p.find(f.table, f.priority, &f.matches))
            };
            if let Some(i) = idx {
                put(i, s);
            }
        }
        for (id, s) in &r.learned {
            if let Some(&i) = learned_pos.get(id) {
                put(i as FlowIdx | LEARNED_BIT, s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::parse_flows;

    fn pipeline(text: &str) -> Pipeline {
        Pipeline::new(parse_flows("t", text).unwrap(), Vec::new())
    }

    fn stat(packets: u64) -> FlowStat {
        FlowStat {
            packets,
            bytes: 60 * packets,
            used_ms: 1000 + packets,
        }
    }

    #[test]
    fn counts_follow_a_flow_across_generations_by_table_priority_and_match() {
        let p1 = pipeline(
            "priority=10,ip,actions=drop\npriority=20,arp,actions=output:2\ntable=1,actions=drop\n",
        );
        let mut rs = RuleStats::new(&p1);
        let ip = p1.find(0, 10, &p1.flows[0].matches).unwrap();
        let arp = p1.find(0, 20, &p1.flows[1].matches).unwrap();
        rs.add_indexed(&p1, [(ip, stat(3)), (arp, stat(2)), (ip, stat(1))]);
        // The ip flow stays with new actions and moves; the arp flow goes;
        // a new flow arrives.
        let p2 = pipeline(
            "table=1,actions=drop\npriority=30,tcp,actions=drop\npriority=10,ip,actions=output:1\n",
        );
        rs.rebase(&p2);
        let r = rs.report(&p2, [], 5000);
        let m = merge(&p2, &[r]);
        let ip2 = p2.find(0, 10, &p2.flows[2].matches).unwrap();
        assert_eq!(m[&ip2].0.packets, 4, "a replaced flow keeps its counts");
        assert_eq!(m[&ip2].0.bytes, 240);
        assert_eq!(m[&ip2].1, Some(5000 - 1003));
        assert_eq!(m.len(), 1, "the removed flow's counts are gone: {m:?}");
    }

    #[test]
    fn reports_under_an_older_generation_are_mapped() {
        let p1 = pipeline("priority=10,ip,actions=drop\n");
        let p2 = pipeline("priority=5,arp,actions=drop\npriority=10,ip,actions=drop\n");
        let mut behind = RuleStats::new(&p1);
        behind.add_indexed(&p1, [(0, stat(7))]);
        let mut current = RuleStats::new(&p2);
        current.add_indexed(&p2, [(1, stat(2)), (0, stat(1))]);
        let m = merge(
            &p2,
            &[
                behind.report(&p1, [], 2000),
                current.report(&p2, [(1, stat(1))], 2000),
            ],
        );
        assert_eq!(m[&1].0.packets, 10, "7 (older generation) + 2 + 1 live");
        assert_eq!(m[&0].0.packets, 1);
    }
}
