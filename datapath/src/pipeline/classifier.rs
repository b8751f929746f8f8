//! Per-table classifier: tuple-space search in the manner of OVS's
//! `lib/classifier.c`.
//!
//! Rules with the same mask share a *subtable*: a hash map from the masked
//! key to the rules (highest priority first). A lookup probes subtables in
//! order of their highest priority and stops as soon as no remaining subtable
//! can beat the best match found, so the cost grows with the number of
//! distinct masks, never with the number of rules (a Service per rule costs
//! one hash probe, not a walk).
//!
//! Every probed subtable's mask is OR-ed into the caller's wildcard mask:
//! that union is exactly the set of key bits the lookup's outcome depends on,
//! which is what a megaflow cache entry must match on.
//!
//! Conjunctive matches follow OVS: flows whose actions are only
//! `conjunction(id,k/n)` never match by themselves; when, at one priority,
//! flows for every clause `1..=n` of an `id` match and no non-conjunctive
//! flow of higher priority matches, the table is looked up again with
//! `conj_id=id`.

use hashbrown::HashMap;

use super::ir::{Action, Flow, Match};
use crate::key::{FlowKey, KEY_WORDS, slot};

/// Index of a flow in its [`super::Pipeline`]'s flow list.
pub type FlowIdx = u32;

#[derive(Debug, Clone, Copy)]
struct Conj {
    id: u32,
    clause: u8,
    n_clauses: u8,
}

#[derive(Debug)]
struct Entry {
    priority: u16,
    flow: FlowIdx,
    /// Set for conjunctive ("soft") flows.
    conj: Option<Box<[Conj]>>,
}

#[derive(Debug)]
struct Subtable {
    mask: FlowKey,
    /// Indices of the mask's non-zero words.
    words: Box<[u8]>,
    max_priority: u16,
    /// Masked key -> entries, highest priority first.
    map: HashMap<FlowKey, Vec<Entry>>,
}

impl Subtable {
    fn masked(&self, key: &FlowKey) -> FlowKey {
        let mut m = FlowKey::ZERO;
        for &w in self.words.iter() {
            m.w[w as usize] = key.w[w as usize] & self.mask.w[w as usize];
        }
        m
    }
}

/// One OpenFlow table.
#[derive(Debug, Default)]
pub struct Table {
    /// Subtables by descending `max_priority`.
    subtables: Vec<Subtable>,
    n_rules: usize,
    has_conj: bool,
}

/// The outcome of a table lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The highest-priority matching flow.
    Hit(FlowIdx),
    /// Nothing matched.
    Miss,
}

impl Table {
    /// Build a table from `(index, flow)` pairs.
    pub fn build<'a>(flows: impl IntoIterator<Item = (FlowIdx, &'a Flow)>) -> Table {
        let mut by_mask: HashMap<FlowKey, Subtable> = HashMap::new();
        let mut n_rules = 0;
        let mut has_conj = false;
        for (idx, flow) in flows {
            n_rules += 1;
            let conj = conj_of(flow);
            has_conj |= conj.is_some();
            let Match { value, mask } = flow.matches;
            let st = by_mask.entry(mask).or_insert_with(|| Subtable {
                mask,
                words: (0..KEY_WORDS as u8)
                    .filter(|w| mask.w[*w as usize] != 0)
                    .collect(),
                max_priority: 0,
                map: HashMap::new(),
            });
            st.max_priority = st.max_priority.max(flow.priority);
            st.map.entry(value).or_default().push(Entry {
                priority: flow.priority,
                flow: idx,
                conj,
            });
        }
        let mut subtables: Vec<Subtable> = by_mask.into_values().collect();
        for st in &mut subtables {
            for v in st.map.values_mut() {
                // Highest priority first; among equals the flow added last
                // wins, as a later add-flow with an identical match and
                // priority replaces the earlier one in OVS.
                v.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.flow.cmp(&a.flow)));
            }
        }
        subtables.sort_by_key(|st| std::cmp::Reverse(st.max_priority));
        Table {
            subtables,
            n_rules,
            has_conj,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.n_rules
    }

    /// Whether the table has no rules.
    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    /// Look `key` up, OR-ing the bits consulted into `wc`.
    pub fn lookup(&self, key: &FlowKey, wc: &mut FlowKey) -> Lookup {
        if !self.has_conj {
            return match self.lookup_hard(key, wc, None) {
                Some((_, f)) => Lookup::Hit(f),
                None => Lookup::Miss,
            };
        }
        self.lookup_conj(key, wc)
    }

    /// Highest-priority non-conjunctive match with priority > `floor`.
    fn lookup_hard(
        &self,
        key: &FlowKey,
        wc: &mut FlowKey,
        floor: Option<u16>,
    ) -> Option<(u16, FlowIdx)> {
        let mut best: Option<(u16, FlowIdx)> = None;
        for st in &self.subtables {
            let bar = best.map(|b| b.0).or(floor);
            if bar.is_some_and(|bar| st.max_priority <= bar) {
                break;
            }
            for &w in st.words.iter() {
                wc.w[w as usize] |= st.mask.w[w as usize];
            }
            let hit = st
                .map
                .get(&st.masked(key))
                .and_then(|es| es.iter().find(|e| e.conj.is_none()));
            if let Some(e) = hit.filter(|e| bar.is_none_or(|b| e.priority > b)) {
                best = Some((e.priority, e.flow));
            }
        }
        best
    }

    #[cold]
    fn lookup_conj(&self, key: &FlowKey, wc: &mut FlowKey) -> Lookup {
        let hard = self.lookup_hard(key, wc, None);
        let floor = hard.map(|h| h.0);
        // Collect soft matches above the hard match's priority.
        let mut soft: Vec<(u16, Conj)> = Vec::new();
        for st in &self.subtables {
            if floor.is_some_and(|f| st.max_priority <= f) {
                break;
            }
            for &w in st.words.iter() {
                wc.w[w as usize] |= st.mask.w[w as usize];
            }
            if let Some(entries) = st.map.get(&st.masked(key)) {
                for e in entries {
                    if let Some(c) = e
                        .conj
                        .as_ref()
                        .filter(|_| floor.is_none_or(|f| e.priority > f))
                    {
                        soft.extend(c.iter().map(|c| (e.priority, *c)));
                    }
                }
            }
        }
        // Highest priority first; at each priority, the lowest complete id.
        soft.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
        let mut i = 0;
        while i < soft.len() {
            let prio = soft[i].0;
            let mut j = i;
            while j < soft.len() && soft[j].0 == prio {
                j += 1;
            }
            let group = &soft[i..j];
            let mut ids: Vec<u32> = group.iter().map(|(_, c)| c.id).collect();
            ids.dedup();
            for id in ids {
                let n = group
                    .iter()
                    .find(|(_, c)| c.id == id)
                    .map(|(_, c)| c.n_clauses)
                    .unwrap_or(0);
                let mut seen = 0u64;
                for (_, c) in group.iter().filter(|(_, c)| c.id == id) {
                    if c.clause >= 1 && c.clause <= 64 {
                        seen |= 1 << (c.clause - 1);
                    }
                }
                let all = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
                if n > 0 && seen & all == all {
                    let mut k2 = *key;
                    k2.set(slot::CONJ_ID, id as u64);
                    if let Some((_, f)) = self.lookup_hard(&k2, wc, None) {
                        return Lookup::Hit(f);
                    }
                }
            }
            i = j;
        }
        match hard {
            Some((_, f)) => Lookup::Hit(f),
            None => Lookup::Miss,
        }
    }
}

fn conj_of(flow: &Flow) -> Option<Box<[Conj]>> {
    let c: Vec<Conj> = flow
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => Some(Conj {
                id: *id,
                clause: *clause,
                n_clauses: *n_clauses,
            }),
            _ => None,
        })
        .collect();
    if c.is_empty() {
        None
    } else {
        Some(c.into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::slot;

    fn flow(priority: u16, m: &[(crate::key::Slot, u64)], actions: Vec<Action>) -> Flow {
        let mut mm = Match::ANY;
        for (s, v) in m {
            mm.mask.set_all(*s);
            mm.value.set(*s, *v);
        }
        Flow {
            table: 0,
            priority,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            matches: mm,
            actions,
        }
    }

    fn key(m: &[(crate::key::Slot, u64)]) -> FlowKey {
        let mut k = FlowKey::ZERO;
        for (s, v) in m {
            k.set(*s, *v);
        }
        k
    }

    #[test]
    fn highest_priority_wins_and_wildcards_cover_probed_masks() {
        let flows = [
            flow(10, &[(slot::NW_DST, 1)], vec![]),
            flow(20, &[(slot::NW_DST, 1), (slot::TP_DST, 80)], vec![]),
            flow(5, &[], vec![]),
        ];
        let t = Table::build(flows.iter().enumerate().map(|(i, f)| (i as u32, f)));
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 1), (slot::TP_DST, 80)]), &mut wc),
            Lookup::Hit(1)
        );
        assert_eq!(wc.get(slot::TP_DST), 0xffff);
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 1), (slot::TP_DST, 81)]), &mut wc),
            Lookup::Hit(0)
        );
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 2)]), &mut wc),
            Lookup::Hit(2)
        );
        let empty = Table::build(std::iter::empty());
        assert_eq!(empty.lookup(&FlowKey::ZERO, &mut wc), Lookup::Miss);
    }

    #[test]
    fn pruning_stops_at_lower_priority_subtables() {
        let flows = [
            flow(100, &[], vec![]),
            flow(1, &[(slot::NW_DST, 1)], vec![]),
        ];
        let t = Table::build(flows.iter().enumerate().map(|(i, f)| (i as u32, f)));
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 1)]), &mut wc),
            Lookup::Hit(0)
        );
        assert_eq!(
            wc,
            FlowKey::ZERO,
            "the priority-1 subtable need not be probed"
        );
    }

    #[test]
    fn later_identical_flow_wins_tie() {
        let flows = [
            flow(10, &[(slot::NW_DST, 1)], vec![]),
            flow(10, &[(slot::NW_DST, 1)], vec![]),
        ];
        let t = Table::build(flows.iter().enumerate().map(|(i, f)| (i as u32, f)));
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 1)]), &mut wc),
            Lookup::Hit(1)
        );
    }

    #[test]
    fn conjunction_needs_every_clause() {
        let conj = |k| {
            vec![Action::Conjunction {
                id: 7,
                clause: k,
                n_clauses: 2,
            }]
        };
        let flows = [
            flow(50, &[(slot::NW_DST, 1)], conj(1)),
            flow(50, &[(slot::NW_DST, 2)], conj(1)),
            flow(50, &[(slot::TP_DST, 80)], conj(2)),
            flow(50, &[(slot::CONJ_ID, 7)], vec![Action::Drop]),
            flow(1, &[], vec![]),
        ];
        let t = Table::build(flows.iter().enumerate().map(|(i, f)| (i as u32, f)));
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 2), (slot::TP_DST, 80)]), &mut wc),
            Lookup::Hit(3)
        );
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 3), (slot::TP_DST, 80)]), &mut wc),
            Lookup::Hit(4)
        );
        assert_eq!(
            t.lookup(&key(&[(slot::NW_DST, 1), (slot::TP_DST, 81)]), &mut wc),
            Lookup::Hit(4)
        );
    }
}
