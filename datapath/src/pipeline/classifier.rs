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
//! The bits of every probed subtable that decided its outcome are OR-ed
//! into the caller's wildcard mask: that union is the set of key bits the
//! lookup's outcome depends on, which is what a megaflow cache entry must
//! match on. Like OVS (`find_match_wc`), a subtable is probed in *stages*
//! (metadata, L2, L3, L4: the segments of OVS's `struct flow`): each stage
//! but the last has an index of the rules' values over the stages so far,
//! and a packet that no rule agrees with by some stage un-wildcards only the
//! stages up to there. Prefix sets on `nw_dst`/`nw_src`
//! ([`super::prefix`], OVS's prefix tries) skip a subtable whose prefix
//! cannot match, un-wildcarding only the leading bits that decide it, and a
//! final-stage miss un-wildcards only the leading bits of the L4 ports that
//! decide it (OVS's ports trie). So a rule on `tp_src=8080` does not make
//! every connection's packets their own megaflow (the masks follow OVS's;
//! `tests/tests/megaflows.rs` compares them).
//!
//! Conjunctive matches follow OVS: flows whose actions are only
//! `conjunction(id,k/n)` never match by themselves; when, at one priority,
//! flows for every clause `1..=n` of an `id` match and no non-conjunctive
//! flow of higher priority matches, the table is looked up again with
//! `conj_id=id`.

use hashbrown::{HashMap, HashSet};

use super::ir::{Action, Flow, Match};
use super::prefix::{PrefixSet, prefix_len, prefix_mask};
use crate::key::{self, FlowKey, KEY_WORDS, Slot, reg_slot, slot};
use crate::masked::MaskedMap;

/// OVS's classifier segments (`FLOW_SEGMENT_*_ENDS_AT` in
/// `include/openvswitch/flow.h`), as bits of flowpath's key: metadata
/// (registers, in_port, recirculation, conntrack fields but the original
/// tuple's addresses and ports), L2, L3 (with the original tuple's
/// addresses), and the rest (ARP hardware addresses, TCP flags, L4 ports,
/// the original tuple's ports).
pub const STAGES: [FlowKey; 4] = {
    const fn with(mut k: FlowKey, slots: &[Slot]) -> FlowKey {
        let mut i = 0;
        while i < slots.len() {
            k.w[slots[i].word as usize] |= slots[i].word_mask();
            i += 1;
        }
        k
    }
    let mut meta = with(
        FlowKey::ZERO,
        &[
            slot::IN_PORT,
            slot::RECIRC_ID,
            slot::CT_STATE,
            slot::CT_NW_PROTO,
            slot::CT_ZONE,
            slot::PKT_MARK,
            slot::CT_MARK,
            slot::CT_LABEL_HI,
            slot::CT_LABEL_LO,
            slot::CONJ_ID,
            slot::METADATA,
        ],
    );
    let mut r = 0;
    while r < 16 {
        meta = with(meta, &[reg_slot(r)]);
        r += 1;
    }
    let l2 = with(
        FlowKey::ZERO,
        &[slot::DL_DST, slot::DL_SRC, slot::DL_TYPE, slot::VLAN_TCI],
    );
    let l3 = with(
        FlowKey::ZERO,
        &[
            slot::NW_SRC,
            slot::NW_DST,
            slot::CT_NW_SRC,
            slot::CT_NW_DST,
            slot::NW_FRAG,
            slot::NW_TOS,
            slot::NW_TTL,
            slot::NW_PROTO,
        ],
    );
    let l4 = with(
        FlowKey::ZERO,
        &[
            slot::ARP_SHA,
            slot::ARP_THA,
            slot::TCP_FLAGS,
            slot::TP_SRC,
            slot::TP_DST,
            slot::CT_TP_SRC,
            slot::CT_TP_DST,
        ],
    );
    [meta, l2, l3, l4]
};

/// The prefix-trie fields, in OVS's order (`default_prefix_fields`).
const TRIE_FIELDS: [Slot; 2] = [slot::NW_DST, slot::NW_SRC];

fn and(a: &FlowKey, b: &FlowKey) -> FlowKey {
    let mut k = FlowKey::ZERO;
    for i in 0..KEY_WORDS {
        k.w[i] = a.w[i] & b.w[i];
    }
    k
}

fn is_zero(k: &FlowKey) -> bool {
    k.w.iter().all(|w| *w == 0)
}

fn fold(wc: &mut FlowKey, m: &FlowKey, words: &[u8]) {
    for &w in words {
        wc.w[w as usize] |= m.w[w as usize];
    }
}

fn words_of(m: &FlowKey) -> Box<[u8]> {
    (0..KEY_WORDS as u8)
        .filter(|w| m.w[*w as usize] != 0)
        .collect()
}

/// The L4 ports of a key as OVS's 32-bit `tp_src:tp_dst` word.
#[inline]
fn ports(k: &FlowKey) -> u32 {
    (k.w[slot::TP_SRC.word as usize] >> slot::TP_DST.shift) as u32
}

/// One stage range of a subtable: its mask bits there and their words.
#[derive(Debug)]
struct Range {
    mask: FlowKey,
    words: Box<[u8]>,
}

#[inline]
fn stage_hash(mut h: u64, key: &FlowKey, r: &Range) -> u64 {
    for &w in r.words.iter() {
        h = (h ^ (key.w[w as usize] & r.mask.w[w as usize]))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    h
}

/// Per-lookup prefix answers, computed on first use (OVS's `trie_ctx`).
#[derive(Default)]
struct TrieCtx {
    done: [Option<(u64, u8)>; 2],
}

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
    map: MaskedMap<Vec<Entry>>,
    /// Stage ranges with mask bits (OVS's `index_maps`): every one but the
    /// last has an index.
    ranges: Box<[Range]>,
    /// Per indexed stage, the hashes of the rules' values over the stages
    /// so far (OVS's `indices`: a hash that collides only costs wider
    /// un-wildcarding, as in OVS).
    indices: Box<[HashSet<u64>]>,
    /// Prefix length of the mask on each [`TRIE_FIELDS`] field (0: not a
    /// prefix, or not matched).
    trie_plen: [u8; 2],
    /// Prefix length of the mask on the L4 ports word, and the rules'
    /// masked ports (OVS's ports trie).
    ports_plen: u8,
    ports: PrefixSet,
}

impl Subtable {
    fn new(mask: FlowKey) -> Subtable {
        // OVS's insert_subtable: one range per segment with mask bits; the
        // last segment is the final range, and when it has none the last
        // range with bits takes its place.
        let mut ranges: Vec<Range> = Vec::new();
        for st in &STAGES[..3] {
            let m = and(&mask, st);
            if !is_zero(&m) {
                ranges.push(Range {
                    words: words_of(&m),
                    mask: m,
                });
            }
        }
        let last = and(&mask, &STAGES[3]);
        if is_zero(&last) && !ranges.is_empty() {
            // The final stage adds nothing: the last index becomes it.
        } else {
            ranges.push(Range {
                words: words_of(&last),
                mask: last,
            });
        }
        let mut trie_plen = [0u8; 2];
        for (j, f) in TRIE_FIELDS.iter().enumerate() {
            trie_plen[j] = prefix_len(mask.get(*f) as u32).unwrap_or(0);
        }
        let pm = ports(&mask);
        Subtable {
            mask,
            words: words_of(&mask),
            max_priority: 0,
            map: MaskedMap::new(mask),
            indices: Box::new([]),
            ranges: ranges.into_boxed_slice(),
            trie_plen,
            ports_plen: if pm == 0 {
                0
            } else {
                32 - pm.trailing_zeros() as u8
            },
            ports: PrefixSet::default(),
        }
    }

    /// Build the stage indices and the ports set from the rules.
    fn index(&mut self) {
        let n = self.ranges.len() - 1;
        let mut indices = vec![HashSet::new(); n];
        for v in self.map.keys() {
            let mut h = 0u64;
            for (i, idx) in indices.iter_mut().enumerate() {
                h = stage_hash(h, v, &self.ranges[i]);
                idx.insert(h);
            }
        }
        self.indices = indices.into_boxed_slice();
        if self.ports_plen > 0 {
            self.ports = PrefixSet::of(self.map.keys().map(|v| (ports(v), self.ports_plen)));
        }
    }

    /// Un-wildcard the mask bits of the first `n` ranges.
    #[inline]
    fn fold_ranges(&self, wc: &mut FlowKey, n: usize) {
        for r in &self.ranges[..n] {
            fold(wc, &r.mask, &r.words);
        }
    }
}

/// One OpenFlow table.
#[derive(Debug, Default)]
pub struct Table {
    /// Subtables by descending `max_priority`.
    subtables: Vec<Subtable>,
    n_rules: usize,
    has_conj: bool,
    /// Prefixes of the rules on each [`TRIE_FIELDS`] field.
    tries: [PrefixSet; 2],
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
            let st = by_mask.entry(mask).or_insert_with(|| Subtable::new(mask));
            st.max_priority = st.max_priority.max(flow.priority);
            st.map.get_or_default(&value).push(Entry {
                priority: flow.priority,
                flow: idx,
                conj,
            });
        }
        let mut subtables: Vec<Subtable> = by_mask.into_values().collect();
        let mut tries: [Vec<(u32, u8)>; 2] = Default::default();
        for st in &mut subtables {
            st.index();
            for (j, f) in TRIE_FIELDS.iter().enumerate() {
                let p = st.trie_plen[j];
                if p > 0 {
                    tries[j].extend(st.map.keys().map(|v| (v.get(*f) as u32, p)));
                }
            }
            for v in st.map.values_mut() {
                // Highest priority first; among equals the flow added last
                // wins, as a later add-flow with an identical match and
                // priority replaces the earlier one in OVS.
                v.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.flow.cmp(&a.flow)));
            }
        }
        subtables.sort_by_key(|st| std::cmp::Reverse(st.max_priority));
        let [t0, t1] = tries;
        Table {
            subtables,
            n_rules,
            has_conj,
            tries: [PrefixSet::of(t0), PrefixSet::of(t1)],
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
        let mut ctx = TrieCtx::default();
        for st in &self.subtables {
            let bar = best.map(|b| b.0).or(floor);
            if bar.is_some_and(|bar| st.max_priority <= bar) {
                break;
            }
            let hit = self
                .find_wc(st, key, wc, &mut ctx)
                .and_then(|es| es.iter().find(|e| e.conj.is_none()));
            if let Some(e) = hit.filter(|e| bar.is_none_or(|b| e.priority > b)) {
                best = Some((e.priority, e.flow));
            }
        }
        best
    }

    /// Probe one subtable as OVS's `find_match_wc`: the rules matching
    /// `key`, with the bits that decided it OR-ed into `wc`.
    #[inline]
    fn find_wc<'s>(
        &self,
        st: &'s Subtable,
        key: &FlowKey,
        wc: &mut FlowKey,
        ctx: &mut TrieCtx,
    ) -> Option<&'s Vec<Entry>> {
        let n = st.indices.len();
        let mut h = 0u64;
        for i in 0..n {
            if self.check_tries(st, &st.ranges[i], key, wc, ctx) {
                st.fold_ranges(wc, i);
                return None;
            }
            h = stage_hash(h, key, &st.ranges[i]);
            if !st.indices[i].contains(&h) {
                st.fold_ranges(wc, i + 1);
                return None;
            }
        }
        if self.check_tries(st, &st.ranges[n], key, wc, ctx) {
            st.fold_ranges(wc, n);
            return None;
        }
        match st.map.get(key) {
            None if st.ports_plen > 0 => {
                // No rule, and the last stage has ports: only the leading
                // port bits that decide it (OVS's ports trie).
                let pm = ports(&st.mask);
                let bits = pm & prefix_mask(st.ports.lookup(ports(key) & pm).maskbits);
                wc.w[slot::TP_SRC.word as usize] |= (bits as u64) << slot::TP_DST.shift;
                st.fold_ranges(wc, n);
                None
            }
            found => {
                fold(wc, &st.mask, &st.words);
                found
            }
        }
    }

    /// OVS's `check_tries`: whether the prefix sets prove no rule of `st`
    /// can match `key`, un-wildcarding the prefix bits that prove it.
    #[inline]
    fn check_tries(
        &self,
        st: &Subtable,
        range: &Range,
        key: &FlowKey,
        wc: &mut FlowKey,
        ctx: &mut TrieCtx,
    ) -> bool {
        for (j, f) in TRIE_FIELDS.iter().enumerate() {
            let plen = st.trie_plen[j];
            if plen == 0 || range.mask.w[f.word as usize] == 0 {
                continue;
            }
            let (plens, maskbits) = *ctx.done[j].get_or_insert_with(|| {
                if key.get(slot::DL_TYPE) == key::eth_type::IPV4 as u64 {
                    let m = self.tries[j].lookup(key.get(*f) as u32);
                    (m.plens, m.maskbits)
                } else {
                    // Not IPv4: the field is not an address; never skip.
                    (u64::MAX, 0)
                }
            });
            if plens & (1 << (plen - 1)) == 0 {
                let bits = (prefix_mask(maskbits) as u64) << f.shift;
                if maskbits <= plen {
                    wc.w[f.word as usize] |= bits;
                    return true;
                }
                if wc.w[f.word as usize] & bits == bits {
                    return true;
                }
            }
        }
        false
    }

    #[cold]
    fn lookup_conj(&self, key: &FlowKey, wc: &mut FlowKey) -> Lookup {
        let hard = self.lookup_hard(key, wc, None);
        let floor = hard.map(|h| h.0);
        // Collect soft matches above the hard match's priority.
        let mut soft: Vec<(u16, Conj)> = Vec::new();
        let mut ctx = TrieCtx::default();
        for st in &self.subtables {
            if floor.is_some_and(|f| st.max_priority <= f) {
                break;
            }
            if let Some(entries) = self.find_wc(st, key, wc, &mut ctx) {
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
