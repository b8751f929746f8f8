//! Translation: one pass of a packet's flow key through the OpenFlow tables,
//! producing *datapath actions* and the wildcard mask of every key bit the
//! result depended on (the megaflow), as OVS's `ofproto/ofproto-dpif-xlate.c`
//! does.
//!
//! Translation never touches packet bytes or conntrack: a `ct()` becomes a
//! [`DpAction::Ct`] whose optional recirculation starts a *new* pass once the
//! datapath has run conntrack ([`super::exec`]). That split is what lets the
//! flow cache store a pass's result and replay it for every packet that
//! matches the same wildcarded key.
//!
//! Semantics follow OVS 3.1 (see the differential tests):
//! - header changes (`set_field`, `load`, `move`, `mod_*`, `dec_ttl`) update
//!   the translation's flow at once and are *committed* to the packet (a
//!   [`DpAction::Set`]) only before an output, `ct()`, group bucket output or
//!   controller action, as OVS's `xlate_commit_actions`;
//! - `output:N` to the packet's current in_port is skipped; `IN_PORT` sends
//!   it back;
//! - after `ct()` the translation continues *untracked* (ct fields cleared);
//!   with `table=N` a clone is recirculated to table N;
//! - group buckets run as OpenFlow *action sets* and the flow is rolled back
//!   after each bucket;
//! - nesting beyond [`MAX_DEPTH`] or more than [`MAX_RESUBMITS`] resubmits
//!   fails the whole translation, and the packet is dropped.

use std::sync::Arc;

use super::Pipeline;
use super::classifier::{FlowIdx, Lookup};
use super::fields::{self, FieldId};
use super::ir::{Action, CtAction, CtZone, GroupType, LearnAction, SubField};
use super::learn::{self, LEARNED_BIT, LearnMod};
use crate::drop::DropReason;
use crate::key::{self, FlowKey, OFPP_CONTROLLER, OFPP_IN_PORT, OFPP_NONE, slot};

/// OVS's translation depth limit (`MAX_DEPTH` in ofproto-dpif-xlate.c).
pub const MAX_DEPTH: u32 = 64;
/// OVS's total resubmit limit per translation (`MAX_RESUBMITS`).
pub const MAX_RESUBMITS: u32 = MAX_DEPTH * MAX_DEPTH;

/// Metadata frozen at a recirculation and restored when the new pass starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recirc {
    /// Table the new pass starts in.
    pub table: u8,
    /// The flow at the time of the `ct()`: in_port, registers, metadata and
    /// pkt_mark are taken from it.
    pub frozen: FlowKey,
}

/// A datapath action: what the datapath executes on the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpAction {
    /// Write every header field whose value differs between `from` and `to`.
    Set {
        /// The flow as last committed.
        from: FlowKey,
        /// The flow to commit.
        to: FlowKey,
    },
    /// Transmit a copy of the packet on an OpenFlow port.
    Output(u32),
    /// Run conntrack; with `recirc`, continue a clone in a new pass.
    Ct {
        /// Resolved `ct()` parameters.
        call: conntrack::CtCall,
        /// Recirculation, for `ct(table=N)`.
        recirc: Option<Recirc>,
    },
    /// `ct_clear`: forget the packet's conntrack metadata.
    CtClear,
    /// Punt to the controller (flowpath counts it).
    Punt,
    /// A controller action carrying the REJECT userdata: the datapath
    /// answers the packet itself (`crate::reject`).
    Reject,
}

/// The result of translating one pass.
#[derive(Debug, Clone, Default)]
pub struct Xlation {
    /// Datapath actions in execution order.
    pub actions: Vec<DpAction>,
    /// Key bits the translation depended on.
    pub wc: FlowKey,
    /// Set when the translation failed: the packet is dropped whole.
    pub error: Option<DropReason>,
    /// Non-fatal notes (skipped outputs and the like), counted by the caller.
    pub notes: Vec<DropReason>,
    /// Flows this pass's `learn` actions add ([`super::learn`]).
    pub learns: Vec<Arc<LearnMod>>,
    /// Ids of the learned flows the pass went through.
    pub learned_hits: Vec<u64>,
    /// `fin_timeout` of learned flows the pass went through: (id, idle,
    /// hard), applied when a TCP FIN or RST takes this path.
    pub fins: Vec<(u64, u16, u16)>,
    /// Cache bookkeeping: when a cached copy of this pass last reported
    /// its learn events (see [`super::learn::REFRESH_MS`]).
    pub reported_ms: u64,
    /// Every flow the pass went through, once per hit (a flow hit twice
    /// counts twice, as OVS's xlate cache credits it): each packet that
    /// runs the pass adds to these flows' `n_packets`/`n_bytes`
    /// ([`super::stats`]).
    pub rules: Vec<FlowIdx>,
}

impl Xlation {
    /// Empty it, keeping the vectors' capacity.
    pub fn clear(&mut self) {
        self.actions.clear();
        self.wc = FlowKey::ZERO;
        self.error = None;
        self.notes.clear();
        self.learns.clear();
        self.learned_hits.clear();
        self.fins.clear();
        self.reported_ms = 0;
        self.rules.clear();
    }

    /// A copy whose vectors are exactly as long as their contents (one
    /// allocation per non-empty vector: what a cache keeps per megaflow).
    pub fn compact(&self) -> Xlation {
        Xlation {
            actions: self.actions.as_slice().to_vec(),
            wc: self.wc,
            error: self.error,
            notes: self.notes.as_slice().to_vec(),
            learns: self.learns.as_slice().to_vec(),
            learned_hits: self.learned_hits.as_slice().to_vec(),
            fins: self.fins.as_slice().to_vec(),
            reported_ms: self.reported_ms,
            rules: self.rules.as_slice().to_vec(),
        }
    }

    /// Whether the pass has anything to report to the learned-flow owner.
    #[inline]
    pub fn has_learn_events(&self) -> bool {
        !self.learns.is_empty() || !self.learned_hits.is_empty() || !self.fins.is_empty()
    }
}

/// A trace event, recorded only when tracing is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    /// Looked up `table` at `depth`: matched flow index, or missed.
    Table {
        /// Nesting depth.
        depth: u32,
        /// Table id.
        table: u8,
        /// Matching flow.
        flow: Option<u32>,
    },
    /// An action of the matched flow is about to run.
    Action {
        /// Nesting depth.
        depth: u32,
        /// The action.
        action: Action,
    },
    /// Free-form explanation (skipped output, recirculation, ...).
    Note {
        /// Nesting depth.
        depth: u32,
        /// Text.
        text: String,
    },
}

/// The set of OpenFlow ports that exist.
pub trait PortSet {
    /// Whether `port` exists on the bridge.
    fn has_port(&self, port: u32) -> bool;
}

impl PortSet for [u32] {
    fn has_port(&self, port: u32) -> bool {
        self.contains(&port)
    }
}

/// Header bits a [`DpAction::Set`] may have to write.
const HEADER_MASK: FlowKey = {
    let mut k = FlowKey::ZERO;
    k.w[0] = slot::VLAN_TCI.word_mask();
    k.w[1] = slot::NW_TOS.word_mask() | slot::NW_PROTO.word_mask() | slot::DL_DST.word_mask();
    k.w[2] = slot::NW_TTL.word_mask() | slot::DL_SRC.word_mask();
    k.w[3] = u64::MAX;
    k.w[4] = slot::TP_SRC.word_mask() | slot::TP_DST.word_mask();
    k.w[5] = slot::ARP_SHA.word_mask();
    k.w[6] = slot::ARP_THA.word_mask();
    k
};

struct Ctx<'a, P: PortSet + ?Sized> {
    p: &'a Pipeline,
    ports: &'a P,
    flow: FlowKey,
    base: FlowKey,
    out: &'a mut Xlation,
    depth: u32,
    /// Nesting for trace indentation (every resubmit and bucket).
    indent: u32,
    resubmits: u32,
    table: u8,
    /// The learned flow whose actions run now, if any (`fin_timeout`).
    cur_learned: Option<u64>,
    trace: Option<&'a mut Vec<TraceEvent>>,
}

/// Translate one pass of `key` starting at `table`.
pub fn xlate<P: PortSet + ?Sized>(
    p: &Pipeline,
    ports: &P,
    key: &FlowKey,
    table: u8,
    trace: Option<&mut Vec<TraceEvent>>,
) -> Xlation {
    let mut out = Xlation::default();
    xlate_into(p, ports, key, table, trace, &mut out);
    out
}

/// [`xlate`] into `out` (cleared first), so that a caller translating
/// many passes reuses its vectors; [`Xlation::compact`] copies a result
/// out at its exact size.
pub fn xlate_into<P: PortSet + ?Sized>(
    p: &Pipeline,
    ports: &P,
    key: &FlowKey,
    table: u8,
    trace: Option<&mut Vec<TraceEvent>>,
    out: &mut Xlation,
) {
    out.clear();
    let mut ctx = Ctx {
        p,
        ports,
        flow: *key,
        base: *key,
        out,
        depth: 0,
        indent: 0,
        resubmits: 0,
        table,
        cur_learned: None,
        trace,
    };
    // Every pass depends on the in_port, the recirculation id, and (as in
    // OVS, whose megaflows always match the packet's protocol) dl_type.
    ctx.out.wc.set_all(slot::IN_PORT);
    ctx.out.wc.set_all(slot::RECIRC_ID);
    ctx.out.wc.set_all(slot::DL_TYPE);
    ctx.xlate_table(table, true);
    if ctx.out.error.is_some() {
        ctx.out.actions.clear();
    }
}

impl<P: PortSet + ?Sized> Ctx<'_, P> {
    fn note(&mut self, text: impl FnOnce() -> String) {
        let depth = self.indent;
        if let Some(t) = self.trace.as_deref_mut() {
            t.push(TraceEvent::Note {
                depth,
                text: text(),
            });
        }
    }

    /// Look `table` up and run the matching flow's actions. `initial` is
    /// the pass's first lookup; every other call is a resubmit/goto, subject
    /// to OVS's resource checks. As in OVS's `xlate_table_action`, only a
    /// resubmit to the same or an earlier table deepens the nesting depth
    /// (a forward chain 0 -> 1 -> ... -> 253 is fine); every resubmit counts
    /// toward [`MAX_RESUBMITS`].
    fn xlate_table(&mut self, table: u8, initial: bool) {
        if !initial {
            if self.depth >= MAX_DEPTH {
                self.out.error = Some(DropReason::ResubmitDepth);
                self.note(|| format!("over max translation depth {MAX_DEPTH}"));
                return;
            }
            if self.resubmits >= MAX_RESUBMITS {
                self.out.error = Some(DropReason::ResubmitDepth);
                self.note(|| format!("over {MAX_RESUBMITS} resubmit actions"));
                return;
            }
            self.resubmits += 1;
        }
        let old_table = self.table;
        let deepens = !initial && table <= old_table;
        self.table = table;
        let hit = match self.p.tables.get(table as usize) {
            Some(t) => t.lookup(&self.flow, &mut self.out.wc),
            None => Lookup::Miss,
        };
        let hit = self.lookup_learned(table, hit);
        let depth = self.indent;
        match hit {
            Lookup::Hit(idx) => {
                if let Some(t) = self.trace.as_deref_mut() {
                    t.push(TraceEvent::Table {
                        depth,
                        table,
                        flow: Some(idx),
                    });
                }
                self.out.rules.push(idx);
                let p = self.p;
                let old_learned = self.cur_learned;
                self.cur_learned = None;
                if idx & LEARNED_BIT != 0 {
                    let id = p.learned.flows()[(idx & !LEARNED_BIT) as usize].id;
                    if !self.out.learned_hits.contains(&id) {
                        self.out.learned_hits.push(id);
                    }
                    self.cur_learned = Some(id);
                }
                if p.flow(idx).actions.is_empty() {
                    // `actions=drop` (an empty list, as OVS stores it).
                    self.out.notes.push(DropReason::Explicit);
                }
                if deepens {
                    self.depth += 1;
                }
                self.indent += 1;
                self.do_actions(&p.flow(idx).actions);
                self.cur_learned = old_learned;
                self.indent -= 1;
                if deepens {
                    self.depth -= 1;
                }
            }
            Lookup::Miss => {
                if let Some(t) = self.trace.as_deref_mut() {
                    t.push(TraceEvent::Table {
                        depth,
                        table,
                        flow: None,
                    });
                }
                if initial {
                    self.out.notes.push(DropReason::TableMiss);
                }
            }
        }
        self.table = old_table;
    }

    /// Run an action list. Returns early (ending only this list) after a
    /// `dec_ttl` that expires the packet, as OVS.
    fn do_actions(&mut self, actions: &[Action]) {
        for a in actions {
            if self.out.error.is_some() {
                return;
            }
            let depth = self.indent;
            if let Some(t) = self.trace.as_deref_mut() {
                t.push(TraceEvent::Action {
                    depth,
                    action: a.clone(),
                });
            }
            match a {
                Action::Output { port, .. } => self.output(*port),
                Action::OutputField(sf) => {
                    let port = self.read_sub(sf) as u32;
                    self.output(port)
                }
                Action::Controller { args } => {
                    self.commit();
                    self.out.actions.push(if crate::reject::is_reject(args) {
                        DpAction::Reject
                    } else {
                        DpAction::Punt
                    });
                }
                Action::Resubmit { port, table, ct: _ } => {
                    let old = self.flow.get(slot::IN_PORT);
                    if let Some(p) = port {
                        self.flow.set(slot::IN_PORT, *p as u64);
                    }
                    let t = table.unwrap_or(self.table);
                    self.xlate_table(t, false);
                    if port.is_some() {
                        self.flow.set(slot::IN_PORT, old);
                    }
                }
                Action::GotoTable(t) => self.xlate_table(*t, false),
                Action::Load { dst, value } => self.write_sub(dst, *value),
                Action::Move { src, dst } => {
                    let v = self.read_sub(src);
                    self.write_sub(dst, v)
                }
                Action::SetField { field, value, mask } => {
                    let f = fields::get(*field);
                    f.write_masked(&mut self.flow, *value, *mask);
                    self.unwildcard(f, *mask);
                }
                Action::ModDlSrc(v) => self.set(FieldId::DlSrc, *v as u128),
                Action::ModDlDst(v) => self.set(FieldId::DlDst, *v as u128),
                Action::ModNwSrc(v) => self.set_if_ip(FieldId::NwSrc, *v as u128),
                Action::ModNwDst(v) => self.set_if_ip(FieldId::NwDst, *v as u128),
                Action::ModNwTos(v) => self.set_if_ip(FieldId::NwTos, (*v & 0xfc) as u128),
                Action::ModNwTtl(v) => self.set_if_ip(FieldId::NwTtl, *v as u128),
                Action::ModTpSrc(v) => self.set_tp(slot::TP_SRC, *v),
                Action::ModTpDst(v) => self.set_tp(slot::TP_DST, *v),
                Action::DecTtl => {
                    if !self.is_ip() {
                        continue;
                    }
                    self.out.wc.set_all(slot::NW_TTL);
                    let ttl = self.flow.get(slot::NW_TTL);
                    if ttl > 1 {
                        self.flow.set(slot::NW_TTL, ttl - 1);
                    } else {
                        self.out.notes.push(DropReason::TtlExpired);
                        self.note(|| {
                            "dec_ttl: TTL expired, rest of this action list skipped".into()
                        });
                        return;
                    }
                }
                Action::Ct(ct) => self.ct(ct),
                Action::CtClear => {
                    self.flow.clear_ct();
                    self.base.clear_ct();
                    self.out.actions.push(DpAction::CtClear);
                }
                Action::Group(g) => self.group(*g),
                Action::Drop => self.out.notes.push(DropReason::Explicit),
                Action::Conjunction { .. } | Action::Note(_) => {}
                Action::Learn(l) => self.learn(l),
                Action::FinTimeout { idle, hard } => {
                    if let Some(id) = self.cur_learned
                        && !self.out.fins.iter().any(|f| f.0 == id)
                    {
                        self.out.fins.push((id, *idle, *hard));
                    }
                }
            }
        }
    }

    /// The table's learned flows compete with its static ones: the higher
    /// priority wins, a learned flow on a tie (it was added later).
    fn lookup_learned(&mut self, table: u8, hit: Lookup) -> Lookup {
        let p = self.p;
        let Some(lt) = p.learned.table(table) else {
            return hit;
        };
        match (hit, lt.lookup(&self.flow, &mut self.out.wc)) {
            (h, Lookup::Miss) => h,
            (Lookup::Miss, l) => l,
            (Lookup::Hit(s), Lookup::Hit(l)) => {
                if p.flow(l).priority >= p.flow(s).priority {
                    Lookup::Hit(l)
                } else {
                    Lookup::Hit(s)
                }
            }
        }
    }

    /// `learn`: un-wildcard the sources (OVS `learn_mask()`), build the
    /// flow from the current packet fields and record it. The flow goes
    /// into its table when the pass's owner applies it: this translation
    /// (like OVS's, which runs on a fixed classifier version) does not see
    /// it.
    fn learn(&mut self, l: &LearnAction) {
        let m = learn::build(l, |sf| self.read_sub(sf));
        let ok = l.limit == 0 || self.p.learned.count(l.table, l.cookie) < l.limit as usize;
        if let Some(r) = &l.result_dst {
            self.write_sub(r, ok as u128);
        }
        if !ok {
            self.note(|| "Limit exceeded, learn failed".into());
            return;
        }
        self.note(|| {
            let f = &m.flow;
            let mut s = format!("table={} ", f.table);
            s.push_str(&super::format::format_match(&f.matches));
            s = s.trim_end().to_string();
            s.push_str(&format!(" priority={}", f.priority));
            if f.cookie != 0 {
                s.push_str(&format!(" cookie={:#x}", f.cookie));
            }
            if f.idle_timeout != 0 {
                s.push_str(&format!(" idle={}", f.idle_timeout));
            }
            if f.hard_timeout != 0 {
                s.push_str(&format!(" hard={}", f.hard_timeout));
            }
            s.push_str(" actions=");
            s.push_str(&super::format::format_actions(&f.actions));
            s
        });
        self.out.learns.push(Arc::new(m));
    }

    fn is_ip(&self) -> bool {
        self.flow.get(slot::DL_TYPE) == key::eth_type::IPV4 as u64
    }

    fn set(&mut self, id: FieldId, v: u128) {
        let f = fields::get(id);
        f.write(&mut self.flow, v);
        self.unwildcard(f, f.full_mask());
    }

    fn set_if_ip(&mut self, id: FieldId, v: u128) {
        if self.is_ip() {
            self.set(id, v);
        }
    }

    fn set_tp(&mut self, s: key::Slot, v: u16) {
        let proto = self.flow.get(slot::NW_PROTO) as u8;
        self.out.wc.set_all(slot::NW_PROTO);
        if self.is_ip() && (proto == key::ip_proto::TCP || proto == key::ip_proto::UDP) {
            self.flow.set(s, v as u64);
            self.out.wc.set_all(s);
        }
    }

    fn unwildcard(&mut self, f: &fields::FieldDef, mask: u128) {
        f.or_mask(&mut self.out.wc, mask);
    }

    fn read_sub(&mut self, sf: &SubField) -> u128 {
        let f = fields::get(sf.field);
        let m = sub_mask(sf);
        self.unwildcard(f, m);
        (f.read(&self.flow) & m) >> sf.ofs
    }

    fn write_sub(&mut self, sf: &SubField, v: u128) {
        let f = fields::get(sf.field);
        let m = sub_mask(sf);
        if f.hi.is_none() && f.user_shift == 0 && u32::from(sf.ofs) + u32::from(sf.n_bits) <= 64 {
            // Within one key word (registers, most header fields): write
            // and un-wildcard the bits there, as `write_masked` and
            // `unwildcard` do through the field's value.
            let s = f.slot;
            let bits = ((m as u64) << s.shift) & s.word_mask();
            let val = ((v << sf.ofs) as u64) << s.shift;
            let w = &mut self.flow.w[s.word as usize];
            *w = (*w & !bits) | (val & bits);
            self.out.wc.w[s.word as usize] |= bits;
            return;
        }
        f.write_masked(&mut self.flow, v << sf.ofs, m);
        self.unwildcard(f, m);
    }

    /// Emit a [`DpAction::Set`] for pending header changes.
    fn commit(&mut self) {
        let mut differ = false;
        for i in 0..key::KEY_WORDS {
            differ |= (self.flow.w[i] ^ self.base.w[i]) & HEADER_MASK.w[i] != 0;
        }
        if differ {
            self.out.actions.push(DpAction::Set {
                from: self.base,
                to: self.flow,
            });
        }
        self.base = self.flow;
    }

    fn output(&mut self, port: u32) {
        let in_port = self.flow.get(slot::IN_PORT) as u32;
        match port {
            OFPP_IN_PORT => {
                self.commit();
                self.out.actions.push(DpAction::Output(in_port));
            }
            OFPP_CONTROLLER => {
                self.commit();
                self.out.actions.push(DpAction::Punt);
            }
            OFPP_NONE => {}
            _ if port == in_port => {
                self.out.notes.push(DropReason::OutputToInPort);
                self.note(|| "skipping output to input port".into());
            }
            _ if !self.ports.has_port(port) => {
                self.out.notes.push(DropReason::NoSuchPort);
                self.note(|| format!("nonexistent output port {port}"));
            }
            _ => {
                self.commit();
                self.out.actions.push(DpAction::Output(port));
            }
        }
    }

    fn ct(&mut self, ct: &CtAction) {
        self.commit();
        let zone = match ct.zone {
            CtZone::Imm(z) => z,
            CtZone::Field(sf) => self.read_sub(&sf) as u16,
        };
        let mut call = conntrack::CtCall {
            zone,
            commit: ct.commit || ct.force,
            force: ct.force,
            nat: ct.nat,
            set_mark: None,
            set_label: None,
        };
        for a in &ct.exec {
            let (field, value, mask) = match a {
                Action::SetField { field, value, mask } => (*field, *value, *mask),
                Action::Load { dst, value } => (dst.field, *value << dst.ofs, sub_mask(dst)),
                _ => continue,
            };
            match field {
                FieldId::CtMark => {
                    let (v0, m0) = call.set_mark.unwrap_or((0, 0));
                    call.set_mark = Some((
                        (v0 & !(mask as u32)) | (value as u32 & mask as u32),
                        m0 | mask as u32,
                    ));
                }
                FieldId::CtLabel => {
                    let (v0, m0) = call.set_label.unwrap_or((0, 0));
                    call.set_label = Some(((v0 & !mask) | (value & mask), m0 | mask));
                }
                _ => {}
            }
        }
        let recirc = ct.table.map(|table| Recirc {
            table,
            frozen: self.flow,
        });
        if let Some(r) = &recirc {
            let t = r.table;
            self.note(|| format!("-> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table {t}."));
        }
        self.out.actions.push(DpAction::Ct { call, recirc });
        self.note(|| {
            "-> Sets the packet to an untracked state, and clears all the conntrack fields.".into()
        });
        self.flow.clear_ct();
        self.base.clear_ct();
    }

    fn group(&mut self, id: u32) {
        let p = self.p;
        let Some(g) = p.groups.get(&id) else {
            self.out.notes.push(DropReason::NoSuchGroup);
            self.note(|| format!("no group {id}"));
            return;
        };
        if self.depth >= MAX_DEPTH {
            self.out.error = Some(DropReason::ResubmitDepth);
            return;
        }
        match g.kind {
            GroupType::All => {
                for i in 0..g.buckets.len() {
                    self.bucket(p.bucket_set(id, i));
                }
            }
            GroupType::Indirect | GroupType::FastFailover => {
                if !g.buckets.is_empty() {
                    self.bucket(p.bucket_set(id, 0));
                }
            }
            GroupType::Select => {
                if let Some(i) = self.select_bucket(g) {
                    self.bucket(p.bucket_set(id, i));
                }
            }
        }
    }

    /// Choose a select group's bucket: highest `(hash(bucket_id, basis) &
    /// 0xffff) * weight`, as OVS's `group_best_live_bucket`. The basis hash
    /// is flowpath's own (a documented deviation: OVS's bucket for a given
    /// flow may differ; the distribution by weight is the same).
    fn select_bucket(&mut self, g: &super::ir::Group) -> Option<usize> {
        let mut basis: u64 = 0x9e37_79b9_7f4a_7c15;
        if g.selection_method.as_deref() == Some("hash") && !g.fields.is_empty() {
            for (fid, m) in &g.fields {
                let f = fields::get(*fid);
                if !self.prereqs_ok(f.prereq) {
                    // OVS skips a field whose prerequisites the packet does
                    // not meet (`tcp_src` of a UDP packet): it is neither
                    // hashed nor un-wildcarded.
                    continue;
                }
                let m = m.unwrap_or(f.full_mask());
                self.unwildcard(f, m);
                basis = mix(basis
                    ^ (f.read(&self.flow) & m) as u64
                    ^ ((f.read(&self.flow) & m) >> 64) as u64);
            }
        } else {
            // Symmetric L4 hash: both directions of a connection pick the
            // same bucket.
            for s in [
                slot::NW_SRC,
                slot::NW_DST,
                slot::NW_PROTO,
                slot::TP_SRC,
                slot::TP_DST,
            ] {
                self.out.wc.set_all(s);
            }
            let a = self.flow.get(slot::NW_SRC) ^ self.flow.get(slot::NW_DST);
            let b = self.flow.get(slot::TP_SRC) ^ self.flow.get(slot::TP_DST);
            basis = mix(basis ^ a ^ (b << 32) ^ (self.flow.get(slot::NW_PROTO) << 48));
        }
        let mut best = None;
        let mut best_score = 0u64;
        for (i, b) in g.buckets.iter().enumerate() {
            let id = b.id.unwrap_or(i as u32) as u64;
            let score = (mix(basis ^ id) & 0xffff) * b.weight as u64;
            if best.is_none() || score >= best_score {
                best = Some(i);
                best_score = score;
            }
        }
        best
    }

    /// OVS's `mf_are_prereqs_ok` with a wildcard mask: whether the packet
    /// meets prerequisite `p`, un-wildcarding the `nw_proto` a transport
    /// prerequisite looked at (`dl_type` is always matched).
    fn prereqs_ok(&mut self, p: fields::Prereq) -> bool {
        use fields::Prereq;
        let ip = self.is_ip();
        let proto = self.flow.get(slot::NW_PROTO) as u8;
        let later = self.flow.get(slot::NW_FRAG) as u8 & key::frag::LATER != 0;
        let l4 = |want: u8| proto == want && !later;
        if ip && !matches!(p, Prereq::None | Prereq::Ip | Prereq::Arp) {
            self.out.wc.set_all(slot::NW_PROTO);
        }
        match p {
            Prereq::None => true,
            Prereq::Ip => ip,
            Prereq::Arp => self.flow.get(slot::DL_TYPE) == key::eth_type::ARP as u64,
            Prereq::Tcp => ip && l4(key::ip_proto::TCP),
            Prereq::Udp => ip && l4(key::ip_proto::UDP),
            Prereq::TcpOrUdp => ip && (l4(key::ip_proto::TCP) || l4(key::ip_proto::UDP)),
            Prereq::Icmp => ip && proto == key::ip_proto::ICMP,
        }
    }

    /// Execute a bucket's action set (the bucket's actions reordered by
    /// [`action_set`], precomputed in the pipeline), then roll the flow
    /// back (OVS: "equivalent to cloning the packet for each bucket").
    fn bucket(&mut self, set: &[Action]) {
        let old = self.flow;
        self.depth += 1;
        self.indent += 1;
        self.do_actions(set);
        self.indent -= 1;
        self.depth -= 1;
        self.flow = old;
    }
}

fn sub_mask(sf: &SubField) -> u128 {
    let m = if sf.n_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << sf.n_bits) - 1
    };
    m << sf.ofs
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Reorder a bucket's actions as an OpenFlow action set, like OVS's
/// `ofpacts_execute_action_set`: `dec_ttl` (last one), then every
/// set/load/move in order, then only the last of group / output / resubmit /
/// ct (in that preference); without any of those the set does nothing.
pub fn action_set(actions: &[Action]) -> Vec<Action> {
    let mut out = Vec::new();
    if let Some(a) = actions.iter().rev().find(|a| matches!(a, Action::DecTtl)) {
        out.push(a.clone());
    }
    out.extend(
        actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Load { .. }
                        | Action::Move { .. }
                        | Action::SetField { .. }
                        | Action::ModDlSrc(_)
                        | Action::ModDlDst(_)
                        | Action::ModNwSrc(_)
                        | Action::ModNwDst(_)
                        | Action::ModNwTos(_)
                        | Action::ModNwTtl(_)
                        | Action::ModTpSrc(_)
                        | Action::ModTpDst(_)
                )
            })
            .cloned(),
    );
    let last = |pred: fn(&Action) -> bool| actions.iter().rev().find(|a| pred(a)).cloned();
    let term = last(|a| matches!(a, Action::Group(_)))
        .or_else(|| last(|a| matches!(a, Action::Output { .. } | Action::OutputField(_))))
        .or_else(|| last(|a| matches!(a, Action::Resubmit { .. })))
        .or_else(|| last(|a| matches!(a, Action::Ct(_))));
    match term {
        Some(t) => out.push(t),
        None => out.clear(),
    }
    out
}
