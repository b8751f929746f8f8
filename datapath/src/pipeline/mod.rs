//! The OpenFlow pipeline: field registry, IR, `ovs-ofctl` text parser and
//! printer, classifier, translation and execution.
//!
//! A packet's walk: [`crate::extract`] fills a [`crate::key::FlowKey`];
//! [`xlate::xlate`] looks it up table by table ([`classifier`]) and turns the
//! matching flows' actions into datapath actions plus a wildcard mask;
//! [`exec`] applies those to the packet bytes, runs conntrack for `ct()` and
//! starts a new pass for each recirculation.

pub mod classifier;
pub mod exec;
pub mod fields;
pub mod format;
pub mod ir;
pub mod learn;
pub mod parse;
pub mod prefix;
pub mod stats;
pub mod xlate;

use std::sync::Arc;

use hashbrown::HashMap;

use classifier::{FlowIdx, Table};
use ir::{Flow, Group};

/// An immutable, ready-to-run pipeline: flows indexed into per-table
/// classifiers, groups by id, and the learned flows of this generation.
/// Rule changes build a new `Pipeline` and swap it in whole; the parts are
/// shared (`Arc`), so a generation that only changes the learned flows
/// ([`Pipeline::with_learned`]) copies nothing else.
#[derive(Debug, Default, Clone)]
pub struct Pipeline {
    /// The flows, after duplicates (same table, priority and match) were
    /// replaced by the later one, as `ovs-ofctl add-flows` does.
    pub flows: Arc<Vec<Flow>>,
    /// Classifier per table id (index = table id; 256 entries).
    pub tables: Arc<Vec<Table>>,
    /// Groups by id.
    pub groups: Arc<HashMap<u32, Group>>,
    /// Per group, each bucket's actions reordered as the OpenFlow action
    /// set translation runs ([`xlate::action_set`]), computed once here
    /// instead of per translation.
    bucket_sets: Arc<HashMap<u32, Vec<Vec<ir::Action>>>>,
    /// Flows added by `learn` actions ([`learn`]).
    pub learned: Arc<learn::Learned>,
    /// The static flows by OVS's rule identity (table, priority, match):
    /// indices into `flows`, hashed with [`Pipeline::identity_hash`].
    index: Arc<hashbrown::HashTable<FlowIdx>>,
    /// Static flows with an `idle_timeout` or `hard_timeout`
    /// ([`stats::FlowTimes::expired`]).
    pub timed: Arc<Vec<FlowIdx>>,
}

impl Pipeline {
    /// Build a pipeline from flows and groups (later duplicates replace
    /// earlier ones, for flows and for groups).
    pub fn new(flows: Vec<Flow>, groups: Vec<Group>) -> Pipeline {
        let mut pos: HashMap<(u8, u16, ir::Match), usize> = HashMap::new();
        let mut kept: Vec<Option<Flow>> = Vec::with_capacity(flows.len());
        for f in flows {
            let k = (f.table, f.priority, f.matches);
            if let Some(old) = pos.insert(k, kept.len()) {
                kept[old] = None;
            }
            kept.push(Some(f));
        }
        let flows: Vec<Flow> = kept.into_iter().flatten().collect();
        let mut index = hashbrown::HashTable::with_capacity(flows.len());
        for (i, f) in flows.iter().enumerate() {
            index.insert_unique(
                Self::identity_hash(f.table, f.priority, &f.matches),
                i as FlowIdx,
                |&j| {
                    let g = &flows[j as usize];
                    Self::identity_hash(g.table, g.priority, &g.matches)
                },
            );
        }
        let tables = (0..=255u8)
            .map(|t| {
                Table::build(
                    flows
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| f.table == t)
                        .map(|(i, f)| (i as u32, f)),
                )
            })
            .collect();
        let groups: HashMap<u32, Group> = groups.into_iter().map(|g| (g.id, g)).collect();
        let bucket_sets = groups
            .iter()
            .map(|(id, g)| {
                let sets = g.buckets.iter().map(|b| xlate::action_set(&b.actions));
                (*id, sets.collect())
            })
            .collect();
        let timed = flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.idle_timeout != 0 || f.hard_timeout != 0)
            .map(|(i, _)| i as FlowIdx)
            .collect();
        Pipeline {
            flows: Arc::new(flows),
            tables: Arc::new(tables),
            groups: Arc::new(groups),
            bucket_sets: Arc::new(bucket_sets),
            learned: Arc::default(),
            timed: Arc::new(timed),
            index: Arc::new(index),
        }
    }

    /// A hash of a flow's identity, the same for every pipeline (a fixed
    /// key: hashbrown's default hasher is seeded per instance).
    fn identity_hash(table: u8, priority: u16, m: &ir::Match) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (table, priority, m).hash(&mut h);
        h.finish()
    }

    /// The static flow with this table, priority and match (OVS's rule
    /// identity: a flow_mod with the same three replaces it).
    pub fn find(&self, table: u8, priority: u16, m: &ir::Match) -> Option<FlowIdx> {
        self.index
            .find(Self::identity_hash(table, priority, m), |&i| {
                let f = &self.flows[i as usize];
                f.table == table && f.priority == priority && f.matches == *m
            })
            .copied()
    }

    /// This pipeline without static flows `dead` (expired), learned flows
    /// kept.
    pub fn without(&self, dead: &[FlowIdx]) -> Pipeline {
        let flows = self
            .flows
            .iter()
            .enumerate()
            .filter(|(i, _)| !dead.contains(&(*i as FlowIdx)))
            .map(|(_, f)| f.clone())
            .collect();
        let groups = self.groups.values().cloned().collect();
        Pipeline::new(flows, groups).with_learned(self.learned.clone())
    }

    /// This pipeline with `learned` as its learned flows.
    pub fn with_learned(&self, learned: Arc<learn::Learned>) -> Pipeline {
        Pipeline {
            learned,
            ..self.clone()
        }
    }

    /// Bucket `i` of group `id` as an OpenFlow action set (see
    /// [`xlate::action_set`]); empty for a bucket or group that does not
    /// exist.
    #[inline]
    pub fn bucket_set(&self, id: u32, i: usize) -> &[ir::Action] {
        self.bucket_sets
            .get(&id)
            .and_then(|s| s.get(i))
            .map_or(&[], |s| &s[..])
    }

    /// The flow a classifier index names: static, or learned
    /// ([`learn::LEARNED_BIT`]).
    #[inline]
    pub fn flow(&self, idx: FlowIdx) -> &Flow {
        if idx & learn::LEARNED_BIT != 0 {
            &self.learned.flows()[(idx & !learn::LEARNED_BIT) as usize].flow
        } else {
            &self.flows[idx as usize]
        }
    }

    /// Every flow, static then learned, for `dump-flows`.
    pub fn all_flows(&self) -> impl Iterator<Item = &Flow> {
        self.indexed_flows().map(|(_, f)| f)
    }

    /// Every flow with its classifier index (static, then learned with
    /// [`learn::LEARNED_BIT`]), the index [`Pipeline::flow`] and the
    /// per-flow statistics ([`stats`]) use.
    pub fn indexed_flows(&self) -> impl Iterator<Item = (FlowIdx, &Flow)> {
        let statics = self
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| (i as FlowIdx, f));
        let learned = self
            .learned
            .flows()
            .iter()
            .enumerate()
            .map(|(i, l)| (i as FlowIdx | learn::LEARNED_BIT, &*l.flow));
        statics.chain(learned)
    }
}
