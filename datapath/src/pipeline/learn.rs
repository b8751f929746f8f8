//! The `learn` action: flows built from a packet's fields at translation
//! time and added to a table, as OVS's `ofproto/learn.c` +
//! `xlate_learn_action()` do.
//!
//! # Where learned flows live
//! Translation never changes a table. It records a [`LearnMod`] (the flow
//! to add, `OFPFC_MODIFY_STRICT` semantics) in its [`super::xlate::Xlation`];
//! the engine hands it, with the other [`LearnEvent`]s, to whoever owns the
//! [`LearnStore`]: the replay loop (applied after each packet, on the
//! replay clock) or, in `flowpath run`, the learner thread (workers push
//! the events into a lock-free queue of the [`crate::worker::PipelineCell`],
//! the learner applies them and publishes a new pipeline generation whose
//! [`Learned`] overlay holds the learned flows; every worker sees it at its
//! next burst and flushes its flow cache, so no megaflow that depended on
//! the old contents of a learned table survives).
//!
//! A learned flow is an ordinary flow of its table: lookups consult the
//! table's static flows and its learned flows and take the higher
//! priority (at equal priority the learned one, as the later flow_mod);
//! `dump-flows` and `trace` show it.
//!
//! # Timeouts (OVS `rule_expire()`)
//! A learned flow is removed when `now > modified + hard_timeout` or
//! `now > used + idle_timeout`. A learn of a flow that already exists with
//! the same actions and cookie only refreshes `modified` (OVS
//! `ofproto_flow_mod_learn_refresh()`); different actions or cookie
//! replace it (`modified` = now). `used` is the last time a packet was
//! translated through the flow or hit a cached megaflow whose translation
//! went through it. As in OVS, where a megaflow's packets reach the rules
//! only when the revalidator pushes its statistics (every 500 ms), a cached
//! megaflow reports its learned flows (`used`, and its `learn`s again: the
//! `XC_LEARN` refresh) at most every [`REFRESH_MS`]: a learned flow's idle
//! timeout may therefore fire up to that much early, and a `hard_timeout`
//! of a flow that keeps being re-learned by cached traffic keeps moving, as
//! in OVS. Expiry runs off the hot path ([`LearnStore::expire`]).
//!
//! `fin_timeout` in a learned flow shortens its timeouts when a TCP FIN or
//! RST goes through it (OVS `ofproto_rule_reduce_timeouts()`).
//!
//! `delete_learned`: when the last flow holding a `learn(...,
//! delete_learned, cookie=C, table=T)` is removed or replaced, the learned
//! flows with cookie C in table T go (OVS `learned_cookies_flush()`).
//! `limit`: a learn fails while table T already holds `limit` learned flows
//! with the cookie (`result_dst` receives 0).

use std::sync::Arc;

use hashbrown::HashMap;

use super::classifier::Table;
use super::fields;
use super::ir::{Action, Flow, LearnAction, LearnSpec, LearnSrc, Match, SubField};

/// How often a cached megaflow reports the learned flows it went through
/// (OVS revalidates its datapath flows every 500 ms).
pub const REFRESH_MS: u64 = 500;

/// Bit set in a [`super::classifier::FlowIdx`] that names a learned flow
/// (index into [`Learned::flows`]) rather than a static one.
pub const LEARNED_BIT: u32 = 1 << 31;

/// A flow to add or refresh, built by a `learn` action from one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnMod {
    /// The flow (table, priority, cookie, timeouts, match, actions).
    pub flow: Flow,
    /// The action's `limit` (0: none).
    pub limit: u32,
}

/// What the datapath reports to the learned-flow owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnEvent {
    /// Add or refresh a flow.
    Learn(Arc<LearnMod>),
    /// A packet went through learned flow `id` (idle timeout refresh).
    Used(u64),
    /// A TCP FIN/RST went through learned flow `id` that has
    /// `fin_timeout(idle_timeout, hard_timeout)`.
    Fin {
        /// Learned flow.
        id: u64,
        /// New idle timeout ceiling (0: unchanged).
        idle: u16,
        /// New hard timeout ceiling (0: unchanged).
        hard: u16,
    },
}

fn sub_mask(sf: &SubField) -> u128 {
    let m = if sf.n_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << sf.n_bits) - 1
    };
    m << sf.ofs
}

/// Build the flow `l` learns from a packet; `read` returns a source's bits
/// (and is where the caller un-wildcards them).
pub fn build(l: &LearnAction, mut read: impl FnMut(&SubField) -> u128) -> LearnMod {
    let mut m = Match::ANY;
    let mut actions = Vec::new();
    if l.fin_idle_timeout != 0 || l.fin_hard_timeout != 0 {
        actions.push(Action::FinTimeout {
            idle: l.fin_idle_timeout,
            hard: l.fin_hard_timeout,
        });
    }
    let mut value = |src: &LearnSrc| match src {
        LearnSrc::Field(sf) => read(sf),
        LearnSrc::Imm(v) => *v,
    };
    for spec in &l.specs {
        match spec {
            LearnSpec::Match { dst, src } => {
                let v = value(src);
                let f = fields::get(dst.field);
                let mask = sub_mask(dst);
                f.write_masked(&mut m.value, v << dst.ofs, mask);
                f.write_masked(&mut m.mask, mask, mask);
            }
            LearnSpec::Load { dst, src } => {
                let v = value(src);
                actions.push(Action::Load {
                    dst: *dst,
                    value: v,
                });
            }
            LearnSpec::Output { src } => {
                let v = value(&LearnSrc::Field(*src));
                // OVS outputs only to a 16-bit port that is a real port or
                // IN_PORT, FLOOD, LOCAL, ALL.
                if v <= 0xffff {
                    let p = v as u32;
                    if p < 0xff00 || matches!(p, 0xfff8 | 0xfffb | 0xfffc | 0xfffe) {
                        actions.push(Action::Output {
                            port: p,
                            max_len: None,
                        });
                    }
                }
            }
        }
    }
    // Bits outside the mask are zero, as the classifier wants.
    m.value = m.value.masked(&m.mask);
    LearnMod {
        flow: Flow {
            table: l.table,
            priority: l.priority,
            cookie: l.cookie,
            idle_timeout: l.idle_timeout,
            hard_timeout: l.hard_timeout,
            matches: m,
            actions,
        },
        limit: l.limit,
    }
}

/// One learned flow as published, with its timestamps (ms, learner clock)
/// as of the snapshot.
#[derive(Debug, Clone)]
pub struct LearnedFlow {
    /// Stable id (kept across refreshes and replacements).
    pub id: u64,
    /// The flow (its timeouts may have been reduced by `fin_timeout`),
    /// shared with the store and every snapshot.
    pub flow: Arc<Flow>,
    /// When it was first learned.
    pub created_ms: u64,
    /// Last learn (hard timeout base).
    pub modified_ms: u64,
    /// Last packet through it (idle timeout base).
    pub used_ms: u64,
}

/// The learned flows of one pipeline generation: immutable, shared by
/// every worker, indexed per table like the static flows.
#[derive(Debug, Default)]
pub struct Learned {
    flows: Vec<LearnedFlow>,
    /// Classifier per table id that has learned flows (index = table id;
    /// empty when nothing was learned).
    tables: Vec<Option<Table>>,
}

impl Learned {
    /// The learned flows.
    pub fn flows(&self) -> &[LearnedFlow] {
        &self.flows
    }

    /// Classifier of the learned flows of `table`, if any.
    #[inline]
    pub fn table(&self, table: u8) -> Option<&Table> {
        self.tables.get(table as usize).and_then(Option::as_ref)
    }

    /// Whether nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Learned flows of `table` with `cookie`.
    pub fn count(&self, table: u8, cookie: u64) -> usize {
        self.flows
            .iter()
            .filter(|f| f.flow.table == table && f.flow.cookie == cookie)
            .count()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    flow: Arc<Flow>,
    created: u64,
    modified: u64,
    used: u64,
}

/// The authoritative set of learned flows, owned by one thread (the
/// learner of `flowpath run`, or the replay loop).
#[derive(Debug, Default)]
pub struct LearnStore {
    flows: HashMap<(u8, u16, Match), Entry>,
    by_id: HashMap<u64, (u8, u16, Match)>,
    next_id: u64,
}

impl LearnStore {
    /// An empty store.
    pub fn new() -> LearnStore {
        LearnStore::default()
    }

    /// Number of learned flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Apply one event at `now`. Returns true when the set of flows or
    /// their actions changed (a new snapshot must be published); timestamp
    /// refreshes return false.
    pub fn apply(&mut self, ev: &LearnEvent, now: u64) -> bool {
        match ev {
            LearnEvent::Learn(m) => self.learn(m, now),
            LearnEvent::Used(id) => {
                if let Some(e) = self.by_id.get(id).and_then(|k| self.flows.get_mut(k)) {
                    e.used = e.used.max(now);
                }
                false
            }
            LearnEvent::Fin { id, idle, hard } => {
                let Some(e) = self.by_id.get(id).and_then(|k| self.flows.get_mut(k)) else {
                    return false;
                };
                let reduce = |max: u16, t: &mut u16| {
                    if max != 0 && (*t == 0 || *t > max) {
                        *t = max;
                        true
                    } else {
                        false
                    }
                };
                let (mut idle_t, mut hard_t) = (e.flow.idle_timeout, e.flow.hard_timeout);
                let a = reduce(*idle, &mut idle_t);
                let b = reduce(*hard, &mut hard_t);
                if a || b {
                    let f = Arc::make_mut(&mut e.flow);
                    f.idle_timeout = idle_t;
                    f.hard_timeout = hard_t;
                }
                a || b
            }
        }
    }

    fn learn(&mut self, m: &LearnMod, now: u64) -> bool {
        let f = &m.flow;
        let k = (f.table, f.priority, f.matches);
        if let Some(e) = self.flows.get_mut(&k) {
            e.modified = now;
            if e.flow.actions == f.actions && e.flow.cookie == f.cookie {
                return false;
            }
            e.flow = Arc::new(f.clone());
            return true;
        }
        if m.limit != 0
            && self
                .flows
                .values()
                .filter(|e| e.flow.table == f.table && e.flow.cookie == f.cookie)
                .count()
                >= m.limit as usize
        {
            return false;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.by_id.insert(id, k);
        self.flows.insert(
            k,
            Entry {
                id,
                flow: Arc::new(f.clone()),
                created: now,
                modified: now,
                used: now,
            },
        );
        true
    }

    /// Remove every flow whose idle or hard timeout passed at `now`.
    /// Returns how many went.
    pub fn expire(&mut self, now: u64) -> usize {
        let dead: Vec<_> = self
            .flows
            .iter()
            .filter(|(_, e)| {
                let hard = e.flow.hard_timeout as u64 * 1000;
                let idle = e.flow.idle_timeout as u64 * 1000;
                (hard != 0 && now > e.modified + hard) || (idle != 0 && now > e.used + idle)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &dead {
            if let Some(e) = self.flows.remove(k) {
                self.by_id.remove(&e.id);
            }
        }
        dead.len()
    }

    /// Remove the learned flows of these (cookie, table) pairs
    /// (`delete_learned`). Returns how many went.
    pub fn delete_cookies(&mut self, dead: &[(u64, u8)]) -> usize {
        if dead.is_empty() {
            return 0;
        }
        let before = self.flows.len();
        let by_id = &mut self.by_id;
        self.flows.retain(|_, e| {
            let keep = !dead.contains(&(e.flow.cookie, e.flow.table));
            if !keep {
                by_id.remove(&e.id);
            }
            keep
        });
        before - self.flows.len()
    }

    /// Keep only the learned flows `keep` accepts (control edits:
    /// `del-flows` and `replace-flows` reach learned flows too, as in OVS).
    /// Returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&Flow) -> bool) -> usize {
        let before = self.flows.len();
        let by_id = &mut self.by_id;
        self.flows.retain(|_, e| {
            let k = keep(&e.flow);
            if !k {
                by_id.remove(&e.id);
            }
            k
        });
        before - self.flows.len()
    }

    /// Remove every learned flow.
    pub fn clear(&mut self) {
        self.flows.clear();
        self.by_id.clear();
    }

    /// Every learned flow's (id, created, modified, used), as of now (the
    /// snapshots' copies only move when the flows change).
    pub fn times(&self) -> Vec<(u64, u64, u64, u64)> {
        self.flows
            .values()
            .map(|e| (e.id, e.created, e.modified, e.used))
            .collect()
    }

    /// An immutable snapshot for a pipeline generation.
    pub fn snapshot(&self) -> Arc<Learned> {
        let mut flows: Vec<LearnedFlow> = self
            .flows
            .values()
            .map(|e| LearnedFlow {
                id: e.id,
                flow: e.flow.clone(),
                created_ms: e.created,
                modified_ms: e.modified,
                used_ms: e.used,
            })
            .collect();
        flows.sort_by_key(|f| f.id);
        let mut tables: Vec<Option<Table>> = Vec::new();
        let mut ids: Vec<u8> = flows.iter().map(|f| f.flow.table).collect();
        ids.sort_unstable();
        ids.dedup();
        for t in ids {
            if tables.len() <= t as usize {
                tables.resize_with(t as usize + 1, || None);
            }
            tables[t as usize] = Some(Table::build(
                flows
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.flow.table == t)
                    .map(|(i, f)| (i as u32 | LEARNED_BIT, &*f.flow)),
            ));
        }
        Arc::new(Learned { flows, tables })
    }
}

/// The (cookie, table) of every `learn(..., delete_learned)` in `flows`.
pub fn delete_learned_keys<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    for f in flows {
        for a in &f.actions {
            if let Action::Learn(l) = a
                && l.delete_learned
                && !out.contains(&(l.cookie, l.table))
            {
                out.push((l.cookie, l.table));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{FlowKey, slot};
    use crate::pipeline::parse::parse_flow;
    use crate::pipeline::xlate::xlate;

    fn learn_of(flow: &str) -> LearnAction {
        match &parse_flow(flow).unwrap().actions[0] {
            Action::Learn(l) => (**l).clone(),
            a => panic!("{a:?}"),
        }
    }

    fn ev(l: &LearnAction, src_mac: u64, reg2: u64) -> LearnEvent {
        let mut k = FlowKey::ZERO;
        k.set(slot::DL_SRC, src_mac);
        k.set(crate::key::reg_slot(2), reg2);
        LearnEvent::Learn(Arc::new(build(l, |sf| {
            let f = fields::get(sf.field);
            (f.read(&k) & sub_mask(sf)) >> sf.ofs
        })))
    }

    const L: &str = "actions=learn(table=3,idle_timeout=10,hard_timeout=60,fin_idle_timeout=2,\
priority=7,cookie=0x5,limit=2,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],reg0=0x9,\
load:NXM_NX_REG2[0..7]->NXM_NX_REG1[8..15],load:0x3->NXM_NX_REG3[0..1],output:NXM_NX_REG2[0..15])";

    #[test]
    fn build_takes_the_packets_fields() {
        let l = learn_of(L);
        let LearnEvent::Learn(m) = ev(&l, 0x0200_0000_000a, 4) else {
            unreachable!()
        };
        let f = &m.flow;
        assert_eq!((f.table, f.priority, f.cookie), (3, 7, 5));
        assert_eq!((f.idle_timeout, f.hard_timeout, m.limit), (10, 60, 2));
        assert_eq!(
            crate::pipeline::format::format_flow(f, Default::default()),
            " cookie=0x5, table=3, idle_timeout=10, hard_timeout=60, priority=7,reg0=0x9,\
dl_dst=02:00:00:00:00:0a actions=fin_timeout(idle_timeout=2),load:0x4->NXM_NX_REG1[8..15],\
load:0x3->NXM_NX_REG3[0..1],output:4"
        );
    }

    #[test]
    fn store_refreshes_replaces_limits_and_expires() {
        let l = learn_of(L);
        let mut s = LearnStore::new();
        assert!(s.apply(&ev(&l, 1, 4), 1000), "new flow");
        assert!(!s.apply(&ev(&l, 1, 4), 2000), "same flow: refresh only");
        assert!(s.apply(&ev(&l, 1, 5), 3000), "other actions: replaced");
        assert!(s.apply(&ev(&l, 2, 4), 3000));
        assert!(!s.apply(&ev(&l, 3, 4), 3000), "limit=2");
        assert_eq!(s.len(), 2);
        let id = s.snapshot().flows()[0].id;
        // Idle 10 s: used refreshes keep flow 1; flow 2 idles out.
        assert!(!s.apply(&LearnEvent::Used(id), 12_000));
        assert_eq!(s.expire(13_001), 1);
        assert_eq!(s.snapshot().flows()[0].id, id);
        // Hard 60 s from the last learn (3 s) whatever the use.
        assert!(!s.apply(&LearnEvent::Used(id), 60_000));
        assert_eq!(s.expire(63_000), 0);
        assert_eq!(s.expire(63_001), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn fin_timeout_shortens_and_delete_learned_removes() {
        let l = learn_of(L);
        let mut s = LearnStore::new();
        s.apply(&ev(&l, 1, 4), 0);
        let id = s.snapshot().flows()[0].id;
        assert!(s.apply(
            &LearnEvent::Fin {
                id,
                idle: 2,
                hard: 0
            },
            100
        ));
        assert_eq!(s.snapshot().flows()[0].flow.idle_timeout, 2);
        assert_eq!(s.expire(2_001), 1, "idle 2 s from creation");
        s.apply(&ev(&l, 1, 4), 0);
        assert_eq!(s.delete_cookies(&[(0x5, 4)]), 0, "other table");
        assert_eq!(s.delete_cookies(&[(0x5, 3)]), 1);
    }

    /// Bad specs are refused as OVS refuses them.
    #[test]
    fn bad_learns_are_refused() {
        for (flow, why) in [
            ("actions=learn(NXM_NX_REG0[0..7]=NXM_NX_REG1[])", "differ"),
            (
                "actions=learn(load:NXM_NX_REG0[0..7]->NXM_NX_REG1[])",
                "bits",
            ),
            ("actions=learn(ip_src=1.2.3.4)", "prerequisite"),
            (
                "actions=learn(eth_type=0x800,NXM_OF_TCP_DST[])",
                "prerequisite",
            ),
            ("actions=learn(table=255)", "table"),
            ("actions=learn(result_dst=reg0[0..1])", "single bit"),
            ("actions=learn(load:0x10->NXM_NX_REG0[0..3])", "fit"),
            ("actions=learn(bogus_field[])", "unknown field"),
            ("actions=learn(output)", "missing value"),
        ] {
            let e = parse_flow(flow).unwrap_err().to_string();
            assert!(e.contains(why), "{flow}: {e}");
        }
        assert!(parse_flow("actions=learn(eth_type=0x800,nw_proto=6,NXM_OF_TCP_DST[])").is_ok());
    }

    /// The learning flow's megaflow depends on the learn's sources, and a
    /// learned flow competes with the table's static flows by priority.
    #[test]
    fn xlate_unwildcards_sources_and_sees_learned_flows() {
        let flows = crate::pipeline::parse::parse_flows(
            "f",
            "table=0,actions=learn(table=1,priority=5,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],\
load:0x1->NXM_NX_REG1[]),resubmit(,1)\ntable=1,priority=1,actions=drop\n",
        )
        .unwrap();
        let p = crate::pipeline::Pipeline::new(flows, vec![]);
        let mut k = FlowKey::ZERO;
        k.set(slot::DL_SRC, 0x0a);
        k.set(slot::IN_PORT, 1);
        let x = xlate(&p, &[1u32][..], &k, 0, None);
        assert_eq!(x.wc.get(slot::DL_SRC), 0xffff_ffff_ffff);
        assert_eq!(x.learns.len(), 1);
        let mut s = LearnStore::new();
        s.apply(&LearnEvent::Learn(x.learns[0].clone()), 0);
        let p2 = p.with_learned(s.snapshot());
        let mut k2 = FlowKey::ZERO;
        k2.set(slot::DL_DST, 0x0a);
        let mut trace = Vec::new();
        let x2 = xlate(&p2, &[1u32][..], &k2, 1, Some(&mut trace));
        assert_eq!(x2.learned_hits.len(), 1, "{trace:?}");
        k2.set(slot::DL_DST, 0x0b);
        let x3 = xlate(&p2, &[1u32][..], &k2, 1, None);
        assert!(x3.learned_hits.is_empty());
    }
}
