//! [`Shard`]: one worker's conntrack, and `execute`, OVS's `conntrack_execute`
//! / `process_one` for one packet.

use crate::api::*;
use crate::config::{CtConfig, N_TM, Timeouts, Tm};
use crate::cross::{DirWriter, Directory};
use crate::dump::ConnDump;
use crate::key::{Key, is_icmp_error, is_icmp_query, proto};
use crate::nat;
use crate::proto::tcp::{self, TcpInvalid};
use crate::proto::{CtUpdate, icmp, other};
use crate::stats::{CtCounters, InvalidReason};
use crate::table::{Conn, FREE, INDEX_CELLS_PER_CONN, List, NIL, NatKind, Table};
use std::sync::Arc;

const NAT_BITS: u8 = cs::SNAT | cs::DNAT;

/// A zone limit and the connections it admitted (OVS `struct zone_limit`).
#[derive(Debug, Clone, Copy)]
struct ZoneLimit {
    limit: u32,
    count: u32,
    /// Distinguishes re-created limits (OVS `zone_limit_seq`).
    seq: u32,
}

/// One core's connection table (see the crate docs for a packet's walk).
#[derive(Debug)]
pub struct Shard {
    table: Table,
    /// Expiry list per (policy, timeout class).
    policies: Vec<[u8; N_TM]>,
    zone_policy: hashbrown::HashMap<u16, u8>,
    /// Per-zone limits (cold path only: create/free).
    zone_limits: hashbrown::HashMap<u16, ZoneLimit>,
    /// The default limit: one pool shared by every zone without its own
    /// limit, as in OVS 3.1 userspace (`zone_limit_lookup_or_default`).
    default_limit: Option<ZoneLimit>,
    limit_seq: u32,
    seq_check: bool,
    reap_per_call: u32,
    counters: CtCounters,
    rng: u64,
    cursor: usize,
    last_now: u64,
    dir: Option<(Arc<Directory>, DirWriter)>,
    /// Sink of the burst prefetch loads (keeps them from being optimised
    /// away; never read for anything else).
    warm_sink: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::new(CtConfig::default())
    }
}

fn l4_proto_ok(pkt: &CtPacket) -> bool {
    let p = pkt.tuple.proto;
    match pkt.l4 {
        L4::Tcp(_) => p == proto::TCP,
        L4::Udp => p == proto::UDP,
        L4::IcmpQuery { .. } | L4::IcmpError { .. } => p == proto::ICMP,
        L4::Other => p != proto::TCP && p != proto::UDP && p != proto::ICMP,
    }
}

impl Shard {
    /// A shard with `config`; all memory is allocated here.
    pub fn new(config: CtConfig) -> Shard {
        let mut sh = Shard::build(&config);
        sh.set_default_zone_limit(config.default_zone_limit);
        for &(z, l) in &config.zone_limits {
            sh.set_zone_limit(z, Some(l));
        }
        sh
    }

    fn build(config: &CtConfig) -> Shard {
        let mut table = Table::new(config.capacity, config.seed);
        let mut all: Vec<Timeouts> = vec![config.timeouts];
        let mut zone_policy = hashbrown::HashMap::new();
        for (z, t) in &config.zone_timeouts {
            let idx = match all.iter().position(|x| x == t) {
                Some(i) => i,
                None => {
                    all.push(*t);
                    all.len() - 1
                }
            };
            assert!(idx < 255, "too many distinct timeout policies");
            zone_policy.insert(*z, idx as u8);
        }
        let mut policies = Vec::new();
        for t in &all {
            let mut map = [0u8; N_TM];
            for (tm, slot) in map.iter_mut().enumerate() {
                let dur_ms = u64::from(t.secs(tm)) * 1000;
                let l = match table.lists.iter().position(|l| l.dur_ms == dur_ms) {
                    Some(l) => l,
                    None => {
                        table.lists.push(List {
                            head: NIL,
                            tail: NIL,
                            head_qexp: 0,
                            dur_ms,
                        });
                        table.lists.len() - 1
                    }
                };
                assert!(l < FREE as usize, "too many distinct timeouts");
                *slot = l as u8;
            }
            policies.push(map);
        }
        Shard {
            table,
            policies,
            zone_policy,
            zone_limits: hashbrown::HashMap::with_capacity(64),
            default_limit: None,
            limit_seq: 0,
            seq_check: config.tcp_seq_check,
            reap_per_call: config.reap_per_call,
            counters: CtCounters::default(),
            rng: config.seed | 1,
            cursor: 0,
            last_now: 0,
            dir: None,
            warm_sink: 0,
        }
    }

    /// Publish this shard's connections in `dir` as worker `worker` (see
    /// [`crate::cross`]). Call before the first packet.
    pub fn attach_directory(&mut self, dir: Arc<Directory>, worker: usize) {
        let w = dir.writer(worker);
        self.dir = Some((dir, w));
    }

    /// Counters.
    pub fn counters(&self) -> &CtCounters {
        &self.counters
    }

    /// Count a packet handed to another worker (`out`) or received from one.
    pub fn note_handoff(&mut self, out: bool) {
        if out {
            self.counters.handoffs += 1;
        } else {
            self.counters.handoffs_in += 1;
        }
    }

    /// Connections held (including expired ones not yet reclaimed).
    pub fn len(&self) -> usize {
        self.table.n_conn as usize
    }

    /// Whether the shard holds no connection.
    pub fn is_empty(&self) -> bool {
        self.table.n_conn == 0
    }

    /// Maximum number of connections.
    pub fn capacity(&self) -> u32 {
        self.table.capacity()
    }

    /// Memory per connection: slot plus its share of the index.
    pub fn bytes_per_conn(&self) -> usize {
        std::mem::size_of::<Conn>() + self.table.index_bytes_per_conn()
    }

    /// Switch TCP sequence checking (OVS `dpctl/ct-{en,dis}able-tcp-seq-chk`).
    pub fn set_tcp_seq_check(&mut self, on: bool) {
        self.seq_check = on;
    }

    /// Set or clear `zone`'s connection limit (`dpctl/ct-set-limits`).
    /// As in OVS, changing an existing limit keeps its count; a new limit
    /// starts at 0 (connections admitted before it are not counted).
    pub fn set_zone_limit(&mut self, zone: u16, limit: Option<u32>) {
        match limit {
            Some(l) => {
                if let Some(z) = self.zone_limits.get_mut(&zone) {
                    z.limit = l;
                } else {
                    self.limit_seq += 1;
                    let zl = ZoneLimit {
                        limit: l,
                        count: 0,
                        seq: self.limit_seq,
                    };
                    self.zone_limits.insert(zone, zl);
                }
            }
            None => {
                self.zone_limits.remove(&zone);
            }
        }
    }

    /// Set or clear the default zone limit. In OVS 3.1 userspace it is a
    /// single pool: all zones without their own limit share its count.
    pub fn set_default_zone_limit(&mut self, limit: Option<u32>) {
        match (limit, &mut self.default_limit) {
            (Some(l), Some(d)) => d.limit = l,
            (Some(l), None) => {
                self.limit_seq += 1;
                self.default_limit = Some(ZoneLimit {
                    limit: l,
                    count: 0,
                    seq: self.limit_seq,
                });
            }
            (None, _) => self.default_limit = None,
        }
    }

    /// `(limit, count)` that applies to `zone` (its own, else the default),
    /// as `dpctl/ct-get-limits` reports it.
    pub fn zone_limit(&self, zone: u16) -> Option<(u32, u32)> {
        self.zone_limits
            .get(&zone)
            .or(self.default_limit.as_ref())
            .map(|z| (z.limit, z.count))
    }

    /// Connections counted against the limit that applies to `zone`.
    pub fn zone_count(&self, zone: u16) -> u32 {
        self.zone_limit(zone).map_or(0, |(_, c)| c)
    }

    fn limit_of(&mut self, zone: u16) -> Option<&mut ZoneLimit> {
        match self.zone_limits.get_mut(&zone) {
            Some(z) => Some(z),
            None => self.default_limit.as_mut(),
        }
    }

    fn random(&mut self) -> u32 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    #[inline]
    fn invalid(&mut self, r: InvalidReason) {
        self.counters.invalid[r as usize] += 1;
    }

    /// Run one `ct()` action for `pkt`, updating `md` as OVS updates the
    /// packet's metadata. `now_ms` is the conntrack clock.
    ///
    /// Cost with 1 M connections (bench `ct`, shared 2-core VM): ~590 ns
    /// per established packet alone, ~325 ns in [`Shard::execute_burst`],
    /// against ~140 ns for a bare hashbrown lookup in the same run; ~500 ns
    /// per new SNAT connection.
    pub fn execute(
        &mut self,
        pkt: &CtPacket,
        md: &mut PktCtMeta,
        call: &CtCall,
        now_ms: u64,
    ) -> CtResult {
        self.execute_hinted(pkt, md, call, now_ms, None)
    }

    /// [`Shard::execute`], trying the connection `hint` (a
    /// [`CtResult::found`] of an earlier `ct()` on a packet with the same
    /// tuple, zone and metadata) before hashing and probing the table: the
    /// hinted slot is taken when it holds a live, unexpired connection whose
    /// key in the hinted direction is exactly the key the lookup searches
    /// for (and, for the reply direction, not also its original key), which
    /// is then the answer the lookup gives (at most one live connection
    /// answers a key; see `table.rs`). Results, state and counters are
    /// those of [`Shard::execute`].
    #[inline]
    pub fn execute_hinted(
        &mut self,
        pkt: &CtPacket,
        md: &mut PktCtMeta,
        call: &CtCall,
        now_ms: u64,
        hint: Option<ConnHint>,
    ) -> CtResult {
        self.last_now = now_ms;
        if self.reap_per_call != 0 {
            self.reap(now_ms, self.reap_per_call);
        }
        let mut res = CtResult::default();
        let zone = call.zone;
        // OVS process_one_fast: the connection cached by an earlier ct() of
        // this packet, in the same zone, without force.
        if let Some((cref, reply)) = md.conn {
            let i = cref.idx;
            if !call.force
                && self.table.is_live(i)
                && self.table.conns[i as usize].generation == cref.generation
                && self.table.conns[i as usize].keys[0].zone == zone
            {
                self.counters.lookups += 1;
                self.counters.hits += 1;
                if call.nat.is_some() {
                    let related = matches!(pkt.l4, L4::IcmpError { .. });
                    self.handle_nat(pkt, i, zone, reply, related, md, &mut res);
                    md.conn = None;
                }
                let c = &self.table.conns[i as usize];
                md.zone = zone;
                md.mark = c.mark;
                md.label = c.label;
                if call.commit {
                    self.set_mark_label(i, call, md);
                }
                return res;
            }
        }
        match self.extract(pkt, zone) {
            Ok((key, related)) => self.process(pkt, md, call, now_ms, key, related, hint, &mut res),
            Err(r) => {
                self.invalid(r);
                md.state = cs::INV | cs::TRK;
                md.zone = zone;
                md.mark = 0;
                md.label = 0;
                md.orig = None;
            }
        }
        res
    }

    /// Run the same `ct()` on a burst of packets, as the datapath does for a
    /// group of packets that hit the same flow: exactly the results of
    /// calling [`Shard::execute`] on each packet in order, but every
    /// packet's index cell and connection are loaded first, so the burst's
    /// cache misses overlap instead of being paid one after another (a
    /// load-based prefetch; the crate forbids `unsafe` intrinsics).
    ///
    /// `pkts`, `mds` and `out` must have the same length.
    pub fn execute_burst(
        &mut self,
        pkts: &[CtPacket],
        mds: &mut [PktCtMeta],
        call: &CtCall,
        now_ms: u64,
        out: &mut [CtResult],
    ) {
        assert!(pkts.len() == mds.len() && pkts.len() == out.len());
        const W: usize = 32;
        let mut slots = [u32::MAX; W];
        let mut acc = 0u64;
        for (b, chunk) in pkts.chunks(W).enumerate() {
            // Pass 1: index cells (independent loads, overlapped).
            for (j, p) in chunk.iter().enumerate() {
                slots[j] = match self.extract(p, call.zone) {
                    Ok((k, _)) => self.table.home_slot(&k).unwrap_or(u32::MAX),
                    Err(_) => u32::MAX,
                };
            }
            // Pass 2: the connections they point to.
            for &s in &slots[..chunk.len()] {
                if let Some(c) = self.table.conns.get(s as usize) {
                    // Both cache lines of the slot.
                    acc = acc.wrapping_add(c.expiration ^ c.qexp);
                }
            }
            // Pass 3: the real work, on warm lines.
            for j in 0..chunk.len() {
                let i = b * W + j;
                out[i] = self.execute(&pkts[i], &mut mds[i], call, now_ms);
            }
        }
        self.warm_sink = self.warm_sink.wrapping_add(acc);
    }

    /// Load the connection slot `hint` names (both of its cache lines), so
    /// that an [`Shard::execute_hinted`] with that hint soon after finds it
    /// in cache; changes nothing. Returns a value derived from the loads
    /// for the caller to sink (a load-based prefetch: this crate has no
    /// `unsafe`).
    #[inline]
    pub fn warm(&self, hint: Option<ConnHint>) -> u64 {
        hint.and_then(|h| self.table.conns.get(h.slot as usize))
            .map_or(0, |c| c.expiration ^ c.qexp)
    }

    /// OVS `conn_key_extract`: the lookup key, and whether the packet is an
    /// ICMP error (the key is then the quoted packet's, reversed).
    fn extract(&self, pkt: &CtPacket, zone: u16) -> Result<(Key, bool), InvalidReason> {
        if !pkt.valid {
            return Err(InvalidReason::BadPacket);
        }
        if pkt.fragment {
            return Err(InvalidReason::Fragment);
        }
        if !l4_proto_ok(pkt) {
            return Err(InvalidReason::Unkeyable);
        }
        let t = &pkt.tuple;
        match pkt.l4 {
            L4::Tcp(_) | L4::Udp => {
                if t.sport == 0 || t.dport == 0 {
                    return Err(InvalidReason::Unkeyable);
                }
                Ok((Key::from_tuple(t, zone, 0), false))
            }
            L4::IcmpQuery { ty, code } => {
                if code != 0 || !is_icmp_query(ty) {
                    return Err(InvalidReason::Unkeyable);
                }
                let mut k = Key::from_tuple(t, zone, ty);
                k.dport = k.sport;
                Ok((k, false))
            }
            L4::IcmpError { ty, inner, .. } => {
                if !is_icmp_error(ty) || inner.src != t.dst {
                    return Err(InvalidReason::Unkeyable);
                }
                match inner.proto {
                    proto::TCP | proto::UDP if inner.sport == 0 || inner.dport == 0 => {
                        return Err(InvalidReason::Unkeyable);
                    }
                    _ => {}
                }
                // The quoted packet is taken to be an echo request when it
                // is ICMP; `process` also tries an echo reply.
                let mut k = Key::from_tuple(&inner, zone, 8);
                if k.proto == proto::ICMP {
                    k.dport = k.sport;
                } else if !matches!(k.proto, proto::TCP | proto::UDP) {
                    k.sport = 0;
                    k.dport = 0;
                }
                Ok((k.reverse(), true))
            }
            L4::Other => Ok((
                Key {
                    sport: 0,
                    dport: 0,
                    ..Key::from_tuple(t, zone, 0)
                },
                false,
            )),
        }
    }

    #[inline]
    fn lookup(
        &mut self,
        key: &Key,
        related: bool,
        now: u64,
        hint: Option<ConnHint>,
    ) -> Option<(u32, bool, Key)> {
        if let Some((c, r)) = self.table.lookup_hinted(key, now, hint) {
            return Some((c, r, *key));
        }
        if related && key.proto == proto::ICMP {
            let alt = Key { ity: 8, ..*key };
            if let Some((c, r)) = self.table.lookup(&alt, now) {
                return Some((c, r, alt));
            }
        }
        None
    }

    /// OVS `process_one`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn process(
        &mut self,
        pkt: &CtPacket,
        md: &mut PktCtMeta,
        call: &CtCall,
        now: u64,
        key: Key,
        related: bool,
        hint: Option<ConnHint>,
        res: &mut CtResult,
    ) {
        let zone = call.zone;
        // Reset ct_state whenever entering a new zone.
        if md.state != 0 && md.zone != zone {
            md.state = 0;
        }
        self.counters.lookups += 1;
        let mut ctx_key = key;
        let mut reply = false;
        let mut conn = None;
        // Whether the lookup below was of `key` itself and found nothing.
        let mut key_absent = false;
        if md.state & NAT_BITS != 0 {
            // Already NATed in this zone: find the connection by the
            // reverse of the translated tuple.
            if let Some((c, r)) = self.table.lookup_hinted(&key.reverse(), now, hint) {
                reply = !r;
                ctx_key = self.table.conns[c as usize].keys[usize::from(reply)];
                conn = Some(c);
                res.found = Some(ConnHint {
                    slot: c,
                    dir: u8::from(r),
                });
            }
        } else if let Some((c, r, k)) = self.lookup(&key, related, now, hint) {
            conn = Some(c);
            reply = r;
            ctx_key = k;
            res.found = Some(ConnHint {
                slot: c,
                dir: u8::from(r),
            });
        } else {
            key_absent = true;
        }

        // Delete a found entry in the wrong direction; `force` implies
        // commit.
        if call.force
            && reply
            && let Some(c) = conn.take()
        {
            self.force_expire(c);
        }

        let mut create = false;
        if let Some(c) = conn {
            self.counters.hits += 1;
            create = self.update_state(pkt, md, c, reply, related, now);
            if call.nat.is_some() && !create {
                self.handle_nat(pkt, c, zone, reply, related, md, res);
            }
        } else if let Some(c) = self.check_orig_tuple(md, call, &key, now) {
            self.counters.hits += 1;
            conn = Some(c);
            create = self.update_state(pkt, md, c, reply, related, now);
        } else if related {
            // No connection is ever created from an ICMP error.
            md.state = cs::INV;
            self.invalid(InvalidReason::RelatedUnknown);
        } else {
            create = true;
        }

        // OVS looks the key up again before creating (another thread may
        // have created it meanwhile; or `update_state` asked for a new
        // connection in place of one it expired). Here nobody else writes
        // the table: when the lookup above was of this very key and found
        // nothing (nothing has changed the table since), it is not repeated.
        let absent = key_absent && conn.is_none() && ctx_key == key;
        debug_assert!(!absent || self.table.lookup(&ctx_key, now).is_none());
        if create && (absent || self.table.lookup(&ctx_key, now).is_none()) {
            conn = self.conn_not_found(pkt, md, call, ctx_key, now, res);
        }

        // write_ct_md
        md.state |= cs::TRK;
        md.zone = zone;
        match conn {
            Some(c) => {
                let cn = &self.table.conns[c as usize];
                md.mark = cn.mark;
                md.label = cn.label;
                md.orig = Some(cn.keys[0].orig_tuple());
                if call.commit {
                    self.set_mark_label(c, call, md);
                }
            }
            None => {
                md.mark = 0;
                md.label = 0;
                md.orig = Some(ctx_key.orig_tuple());
            }
        }
        // set_cached_conn: OVS caches the connection only without NAT.
        md.conn = match (call.nat, conn) {
            (None, Some(c)) => Some((
                ConnRef {
                    idx: c,
                    generation: self.table.conns[c as usize].generation,
                },
                reply,
            )),
            _ => None,
        };
    }

    fn set_mark_label(&mut self, c: u32, call: &CtCall, md: &mut PktCtMeta) {
        let cn = &mut self.table.conns[c as usize];
        if let Some((v, m)) = call.set_mark {
            md.mark = v | (md.mark & !m);
            cn.mark = md.mark;
        }
        if let Some((v, m)) = call.set_label {
            md.label = v | (md.label & !m);
            cn.label = md.label;
        }
    }

    /// OVS `check_orig_tuple`: a packet NATed earlier in this zone whose
    /// translated tuple no longer finds the connection is looked up by the
    /// original tuple carried in its metadata.
    fn check_orig_tuple(&self, md: &PktCtMeta, call: &CtCall, key: &Key, now: u64) -> Option<u32> {
        if md.state & NAT_BITS == 0 || call.nat.is_some() {
            return None;
        }
        let o = md.orig?;
        if o.proto == 0 {
            return None;
        }
        let k = if key.proto == proto::ICMP {
            Key {
                src: o.src,
                dst: o.dst,
                sport: key.sport,
                dport: key.dport,
                zone: md.zone,
                proto: o.proto,
                ity: o.sport as u8,
            }
        } else {
            Key {
                src: o.src,
                dst: o.dst,
                sport: o.sport,
                dport: o.dport,
                zone: md.zone,
                proto: o.proto,
                ity: 0,
            }
        };
        self.table.lookup(&k, now).map(|(c, _)| c)
    }

    /// OVS `conn_update_state`. Returns whether a new connection must be
    /// created (the old one was closed and force-expired).
    #[inline]
    fn update_state(
        &mut self,
        pkt: &CtPacket,
        md: &mut PktCtMeta,
        c: u32,
        reply: bool,
        related: bool,
        now: u64,
    ) -> bool {
        if related {
            md.state |= cs::REL;
            if reply {
                md.state |= cs::RPL;
            }
            return false;
        }
        let seq_check = self.seq_check;
        let cn = &mut self.table.conns[c as usize];
        let (res, tm, why) = match (cn.keys[0].proto, &pkt.l4) {
            (proto::TCP, L4::Tcp(t)) => {
                let (r, tm, why) = tcp::update(&mut cn.tcp, t, reply, seq_check);
                let why = why.map(|w| match w {
                    TcpInvalid::Flags => InvalidReason::TcpFlags,
                    TcpInvalid::Window => InvalidReason::TcpWindow,
                });
                (r, tm, why)
            }
            (proto::TCP, _) => (CtUpdate::Invalid, None, Some(InvalidReason::Unkeyable)),
            (proto::ICMP, _) => {
                let (r, tm) = icmp::update(&mut cn.l4, reply);
                (r, Some(tm), None)
            }
            _ => {
                let (r, tm) = other::update(&mut cn.l4, reply);
                (r, Some(tm), None)
            }
        };
        if let Some(tm) = tm {
            let l = self.policies[cn.policy as usize][tm as usize];
            self.table.set_timer(c, l, now);
        }
        match res {
            CtUpdate::Valid => {
                md.state |= cs::EST;
                md.state &= !cs::NEW;
                if reply {
                    md.state |= cs::RPL;
                }
            }
            CtUpdate::Invalid => {
                md.state = cs::INV;
                self.invalid(why.unwrap_or(InvalidReason::TcpWindow));
            }
            CtUpdate::New => {
                self.force_expire(c);
                return true;
            }
            CtUpdate::ValidNew => md.state |= cs::NEW,
        }
        false
    }

    /// OVS `conn_force_expire`: the connection is dead for lookups and
    /// dumps at once. A connection without NAT goes to the head of its
    /// expiry list so the next reap reclaims it (nothing can observe it
    /// any more). A NAT connection stays where it is queued and is
    /// reclaimed when the sweeper reaches it by its earlier timer: until
    /// then its reply key stays taken for new NAT connections
    /// ([`crate::table::Table::nat_key_taken`]), as OVS's un-NAT entry
    /// stays in its table until its sweeper cleans the connection, so a
    /// SYN re-opening a closed NATed connection gets another port (OVS
    /// sweeps every 20 s or so; this holds the port for at most the old
    /// timer, e.g. TIME_WAIT's).
    fn force_expire(&mut self, c: u32) {
        self.table.conns[c as usize].expiration = 0;
        if self.table.conns[c as usize].nat == NatKind::None {
            self.table.push_front(c);
        }
    }

    fn valid_new(pkt: &CtPacket) -> bool {
        match &pkt.l4 {
            L4::Tcp(t) => tcp::valid_new(t),
            L4::IcmpQuery { ty, .. } => icmp::valid_new(*ty),
            L4::IcmpError { .. } => false,
            L4::Udp | L4::Other => true,
        }
    }

    /// OVS `conn_not_found`: the packet starts a connection; it is stored
    /// only on commit.
    #[cold]
    #[inline(never)]
    fn conn_not_found(
        &mut self,
        pkt: &CtPacket,
        md: &mut PktCtMeta,
        call: &CtCall,
        key: Key,
        now: u64,
        res: &mut CtResult,
    ) -> Option<u32> {
        if !Self::valid_new(pkt) {
            md.state = cs::INV;
            self.invalid(InvalidReason::NotNew);
            return None;
        }
        md.state = cs::NEW;
        self.counters.new += 1;
        if !call.commit {
            return None;
        }
        let zone = key.zone;
        if let Some((limit, count)) = self.zone_limit(zone) {
            if count >= limit {
                self.reap(now, 64);
            }
            if self.zone_count(zone) >= limit {
                self.counters.zone_limit += 1;
                return None;
            }
        }
        let slot = match self.table.alloc() {
            Some(s) => s,
            None => {
                self.reap(now, 64);
                match self.table.alloc() {
                    Some(s) => s,
                    None => {
                        self.counters.table_full += 1;
                        return None;
                    }
                }
            }
        };
        let policy = self.zone_policy.get(&zone).copied().unwrap_or(0);
        let (tm, tcp, l4) = match &pkt.l4 {
            L4::Tcp(t) => (Tm::TcpFirstPacket, tcp::new_conn(t), 0),
            L4::IcmpQuery { .. } => (Tm::IcmpFirst, Default::default(), icmp::FIRST),
            _ => (Tm::OtherFirst, Default::default(), other::FIRST),
        };
        let list = self.policies[policy as usize][tm as usize];
        {
            let cn = &mut self.table.conns[slot as usize];
            cn.keys = [key, key.reverse()];
            cn.mark = 0;
            cn.label = 0;
            cn.tcp = tcp;
            cn.l4 = l4;
            cn.policy = policy;
            cn.nat = NatKind::None;
        }
        if let Some(spec) = call.nat {
            let (kind, range) = match spec {
                NatSpec::Src(r) => (NatKind::Src, r),
                NatSpec::Dst(r) => (NatKind::Dst, r),
                NatSpec::Existing => (NatKind::Empty, NatRange::default()),
            };
            match self.nat_choose(&key, kind, &range, now) {
                Some(rev) => self.table.conns[slot as usize].keys[1] = rev,
                None => {
                    self.table.unalloc(slot);
                    self.counters.nat_exhausted += 1;
                    res.drop = Some(CtDrop::NatExhausted);
                    return None;
                }
            }
            self.table.conns[slot as usize].nat = kind;
            self.nat_packet(pkt, slot, false, false, md, res);
        }
        let dur = self.table.lists[list as usize].dur_ms;
        self.table.conns[slot as usize].expiration = now.saturating_add(dur);
        self.table.push_back(slot, list);
        self.table.insert(slot);
        let admit = self.limit_of(zone).map_or(0, |z| {
            z.count += 1;
            z.seq
        });
        self.table.conns[slot as usize].admit_seq = admit;
        self.counters.committed += 1;
        if let Some((dir, w)) = &mut self.dir {
            let ks = self.table.conns[slot as usize].keys;
            dir.publish(w, &ks[0].tuple());
            dir.publish(w, &ks[1].tuple());
        }
        Some(slot)
    }

    /// OVS `nat_get_unique_tuple`: the reply key of a new NAT connection.
    fn nat_choose(&mut self, fwd: &Key, kind: NatKind, r: &NatRange, now: u64) -> Option<Key> {
        let plan = nat::plan(fwd, kind, r, self.table.seed);
        let mut rev = plan.rev;
        if !fwd.pat() {
            let other = self
                .dir
                .as_ref()
                .is_some_and(|(d, w)| d.owned_by_other(&rev.tuple(), w.worker));
            return (!self.table.nat_key_taken(&rev, now) && !other).then_some(rev);
        }
        let mut rng = self.rng;
        let mut random = || {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
        };
        let table = &self.table;
        let dir = self.dir.as_ref().map(|(d, w)| (d.as_ref(), w.worker));
        // A candidate is taken if this shard (including the reply key of an
        // expired, unreclaimed NAT connection, as in OVS) or (with a
        // directory) another worker uses it; SNAT ports outside this
        // worker's slice are never offered.
        let taken = |k: &Key| {
            table.nat_key_taken(k, now)
                || dir.is_some_and(|(d, me)| d.owned_by_other(&k.tuple(), me))
        };
        let sliced = |p: u16| {
            kind == NatKind::Src
                && dir.is_some_and(|(d, me)| crate::cross::port_slice_owner(p, d.workers()) != me)
        };
        let mut found = None;
        if let Some(ds) = plan.dport {
            let base = rev;
            if let Some(p) = nat::search(ds, &mut |p| taken(&Key { sport: p, ..base }), &mut random)
            {
                rev.sport = p;
                found = Some(rev);
            }
        }
        if found.is_none() {
            let base = rev;
            if let Some(p) = nat::search(
                plan.sport,
                &mut |p| sliced(p) || taken(&Key { dport: p, ..base }),
                &mut random,
            ) {
                rev.dport = p;
                found = Some(rev);
            }
        }
        self.rng = rng;
        let _ = self.random();
        found
    }

    /// OVS `handle_nat`: translate unless already NATed in this zone.
    #[allow(clippy::too_many_arguments)]
    fn handle_nat(
        &mut self,
        pkt: &CtPacket,
        c: u32,
        zone: u16,
        reply: bool,
        related: bool,
        md: &mut PktCtMeta,
        res: &mut CtResult,
    ) {
        let nat = self.table.conns[c as usize].nat;
        if matches!(nat, NatKind::None | NatKind::Empty) {
            return;
        }
        if md.state & NAT_BITS == 0 || md.zone != zone {
            md.state &= !NAT_BITS;
            self.nat_packet(pkt, c, reply, related, md, res);
        }
    }

    /// OVS `nat_packet`: the original direction is translated towards the
    /// reply key, the reply direction back towards the original key. An
    /// ICMP error's outer header changes addresses only; its quoted packet
    /// (travelling the other way) is translated the opposite way.
    #[inline]
    fn nat_packet(
        &self,
        pkt: &CtPacket,
        c: u32,
        reply: bool,
        related: bool,
        md: &mut PktCtMeta,
        res: &mut CtResult,
    ) {
        let cn = &self.table.conns[c as usize];
        let src_nat = match (cn.nat, reply) {
            (NatKind::Src, false) | (NatKind::Dst, true) => true,
            (NatKind::Dst, false) | (NatKind::Src, true) => false,
            _ => return,
        };
        md.state |= if src_nat { cs::SNAT } else { cs::DNAT };
        let key = cn.keys[usize::from(!reply)];
        let mut outer = pkt.tuple;
        if src_nat {
            outer.src = key.dst;
        } else {
            outer.dst = key.src;
        }
        let mut inner = None;
        if related {
            if let L4::IcmpError { inner: i, .. } = pkt.l4 {
                let mut n = i;
                if key.pat() {
                    n.sport = key.sport;
                    n.dport = key.dport;
                }
                if src_nat {
                    n.dst = key.dst;
                } else {
                    n.src = key.src;
                }
                inner = Some(n);
            }
        } else if key.pat() {
            outer.sport = key.dport;
            outer.dport = key.sport;
        }
        let changed = outer != pkt.tuple
            || match (pkt.l4, inner) {
                (L4::IcmpError { inner: i, .. }, Some(n)) => i != n,
                _ => false,
            };
        if changed {
            res.rewrite = Some(Rewrite { outer, inner });
        }
    }

    fn free_conn(&mut self, c: u32) {
        let ks = self.table.conns[c as usize].keys;
        let admit = self.table.conns[c as usize].admit_seq;
        if admit != 0 {
            let zl = match self.zone_limits.get_mut(&ks[0].zone) {
                Some(z) if z.seq == admit => Some(z),
                _ => self.default_limit.as_mut().filter(|d| d.seq == admit),
            };
            if let Some(z) = zl {
                z.count -= 1;
            }
        }
        if let Some((dir, w)) = &mut self.dir {
            dir.unpublish(w, &ks[0].tuple());
            dir.unpublish(w, &ks[1].tuple());
        }
        self.table.free(c);
    }

    /// Reclaim up to `budget` expired connections (and re-queue refreshed
    /// ones met on the way). Returns the number reclaimed. O(budget +
    /// number of expiry lists).
    #[inline]
    fn reap(&mut self, now: u64, budget: u32) -> u32 {
        if now < self.table.next_due {
            return 0;
        }
        self.reap_slow(now, budget)
    }

    #[cold]
    #[inline(never)]
    fn reap_slow(&mut self, now: u64, budget: u32) -> u32 {
        let n = self.table.lists.len();
        let mut work = budget;
        let mut idle = 0;
        let mut freed = 0;
        while work > 0 && idle < n {
            let l = self.cursor;
            let list = self.table.lists[l];
            if list.head != NIL && list.head_qexp <= now {
                let h = list.head;
                if self.table.conns[h as usize].expiration <= now {
                    self.free_conn(h);
                    self.counters.expired += 1;
                    freed += 1;
                } else {
                    self.table.unlink(h);
                    self.table.push_back(h, l as u8);
                }
                work -= 1;
                idle = 0;
            } else {
                idle += 1;
                self.cursor = (self.cursor + 1) % n;
            }
        }
        self.table.next_due = self
            .table
            .lists
            .iter()
            .filter(|l| l.head != NIL)
            .map(|l| l.head_qexp)
            .min()
            .unwrap_or(u64::MAX);
        freed
    }

    /// Reclaim up to `budget` expired connections; for a housekeeping
    /// thread-free design the worker calls this when idle.
    pub fn sweep(&mut self, now_ms: u64, budget: u32) -> u32 {
        self.last_now = self.last_now.max(now_ms);
        self.reap(now_ms, budget)
    }

    /// Delete connections: all, those of `zone`, or the one `tuple` names
    /// in `zone` (default 0) in either direction (OVS `dpctl/flush-conntrack`).
    /// Returns how many were removed.
    pub fn flush(&mut self, zone: Option<u16>, tuple: Option<Tuple>) -> usize {
        let mut n = 0;
        match tuple {
            Some(t) => {
                let z = zone.unwrap_or(0);
                let itys: &[u8] = if t.proto == proto::ICMP {
                    &[8, 0, 13, 14, 15, 16]
                } else {
                    &[0]
                };
                for &ity in itys {
                    let k = Key::from_tuple(&t, z, ity);
                    if let Some((c, _)) = self.table.lookup(&k, self.last_now) {
                        self.free_conn(c);
                        n += 1;
                        break;
                    }
                }
            }
            None => return self.flush_page(zone, 0, self.table.capacity()).0,
        }
        self.counters.flushed += n as u64;
        n
    }

    /// One page of a flush of every connection (of `zone`): those in the
    /// `max_slots` table slots from slot `from` on. Returns how many were
    /// removed and the slot the next page starts at (`None` after the
    /// last). Paged for the same reason as [`Shard::dump_page`]; a
    /// connection created in a slot the flush already passed survives, as
    /// one created just after OVS's flush does.
    pub fn flush_page(
        &mut self,
        zone: Option<u16>,
        from: u32,
        max_slots: u32,
    ) -> (usize, Option<u32>) {
        let (slots, next) = self.page(from, max_slots);
        let mut n = 0;
        for c in slots {
            if self.table.is_live(c)
                && zone.is_none_or(|z| self.table.conns[c as usize].keys[0].zone == z)
            {
                self.free_conn(c);
                n += 1;
            }
        }
        self.counters.flushed += n as u64;
        (n, next)
    }

    /// The table slots of the page of at most `max_slots` (at least one)
    /// from slot `from` on, and the slot the next page starts at (`None`
    /// after the last): the paging of [`Shard::dump_page`] and
    /// [`Shard::flush_page`].
    fn page(&self, from: u32, max_slots: u32) -> (std::ops::Range<u32>, Option<u32>) {
        let cap = self.table.capacity();
        let from = from.min(cap);
        let end = from.saturating_add(max_slots.max(1)).min(cap);
        (from..end, (end < cap).then_some(end))
    }

    /// Live connections (of `zone`), as `dpctl/dump-conntrack` lists them,
    /// sorted by zone then tuple. Expiry is judged at the latest clock seen.
    pub fn dump(&self, zone: Option<u16>) -> Vec<ConnDump> {
        self.dump_at(zone, self.last_now)
    }

    /// [`Shard::dump`] at clock `now_ms`.
    pub fn dump_at(&self, zone: Option<u16>, now_ms: u64) -> Vec<ConnDump> {
        let (mut v, next) = self.dump_page(zone, 0, self.table.capacity(), now_ms);
        debug_assert!(next.is_none());
        v.sort_by_key(|d| d.sort_key());
        v
    }

    /// One page of a dump: the live connections (of `zone`) in the
    /// `max_slots` table slots from slot `from` on, unsorted, and the slot
    /// the next page starts at (`None` after the last). A table of a
    /// million connections takes ~0.1 s to dump; the worker answers a dump
    /// page by page between its bursts so that its receive rings do not
    /// overflow meanwhile. Slots never move, so pages taken one after the
    /// other list every connection that lived throughout exactly once; one
    /// created or deleted in between may or may not appear (as OVS's
    /// `dpctl/dump-conntrack`, which does not stop its datapath either).
    pub fn dump_page(
        &self,
        zone: Option<u16>,
        from: u32,
        max_slots: u32,
        now_ms: u64,
    ) -> (Vec<ConnDump>, Option<u32>) {
        let (slots, next) = self.page(from, max_slots);
        let v = self.table.conns[slots.start as usize..slots.end as usize]
            .iter()
            .filter(|c| c.list != FREE && now_ms < c.expiration)
            .filter(|c| zone.is_none_or(|z| c.keys[0].zone == z))
            .map(|c| ConnDump {
                orig: c.keys[0].tuple(),
                reply: c.keys[1].tuple(),
                orig_icmp_type: c.keys[0].ity,
                reply_icmp_type: c.keys[1].ity,
                zone: c.keys[0].zone,
                mark: c.mark,
                label: c.label,
                tcp: (c.keys[0].proto == proto::TCP).then_some((c.tcp[0].state, c.tcp[1].state)),
                timeout_s: ((c.expiration - now_ms) / 1000) as u32,
            })
            .collect();
        (v, next)
    }

    /// The latest clock the shard has seen (what [`Shard::dump`] judges
    /// expiry by).
    pub fn last_now(&self) -> u64 {
        self.last_now
    }

    /// Check the table's structural invariants: every index cell points to
    /// a live slot whose key hashes to it and is reachable by probing, every
    /// live slot has exactly its two cells, list links are consistent and
    /// cover every live slot once, and the counts agree.
    pub fn check_invariants(&self) -> Result<(), String> {
        let t = &self.table;
        let cap = t.capacity() as usize;
        let mut cells = vec![[0u8; 2]; cap];
        for (pos, slot, dir, tag) in t.index_cells() {
            if !t.is_live(slot) {
                return Err(format!("cell {pos} -> free slot {slot}"));
            }
            let key = t.conns[slot as usize].keys[dir];
            if t.tag(&key) != tag {
                return Err(format!("cell {pos}: tag mismatch for slot {slot}"));
            }
            if t.gap_between(t.home(tag), pos) {
                return Err(format!("cell {pos} unreachable from its home"));
            }
            cells[slot as usize][dir] += 1;
        }
        let mut live = 0usize;
        let mut admitted = hashbrown::HashMap::<u32, u32>::new();
        for (i, c) in t.conns.iter().enumerate() {
            if c.list == FREE {
                if cells[i] != [0, 0] {
                    return Err(format!("free slot {i} indexed"));
                }
                continue;
            }
            live += 1;
            if c.admit_seq != 0 {
                *admitted.entry(c.admit_seq).or_default() += 1;
            }
            if cells[i] != [1, 1] {
                return Err(format!("slot {i} has cells {:?}", cells[i]));
            }
        }
        if live != t.n_conn as usize || live + t.n_free() != cap {
            return Err(format!(
                "count mismatch: live {live} n_conn {} free {}",
                t.n_conn,
                t.n_free()
            ));
        }
        for zl in self.zone_limits.values().chain(self.default_limit.iter()) {
            let n = admitted.get(&zl.seq).copied().unwrap_or(0);
            if zl.count != n {
                return Err(format!(
                    "limit seq {} count {} != {n} admitted",
                    zl.seq, zl.count
                ));
            }
        }
        let mut seen = 0usize;
        for (l, list) in t.lists.iter().enumerate() {
            let mut prev = NIL;
            let mut cur = list.head;
            while cur != NIL {
                let c = &t.conns[cur as usize];
                if c.list as usize != l || c.prev != prev {
                    return Err(format!("list {l} broken at {cur}"));
                }
                seen += 1;
                if seen > live {
                    return Err("list cycle".into());
                }
                prev = cur;
                cur = c.next;
            }
            if list.tail != prev {
                return Err(format!("list {l} tail"));
            }
            if list.head != NIL && list.head_qexp != t.conns[list.head as usize].qexp {
                return Err(format!("list {l} head_qexp stale"));
            }
            if list.head != NIL && list.head_qexp < t.next_due {
                return Err(format!("list {l} due before next_due"));
            }
        }
        if seen != live {
            return Err(format!("lists hold {seen} of {live}"));
        }
        Ok(())
    }
}

/// Bytes of index per connection at full load (for the size budget).
pub const INDEX_BYTES_PER_CONN: usize = INDEX_CELLS_PER_CONN * 8;
