//! Cross-core: replies processed by another worker than their requests.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const S: u32 = ip(93, 184, 216, 34);
const GW: u32 = ip(10, 244, 0, 1);

/// The pipeline each worker runs: ct(zone=1,nat); if +new,
/// ct(commit,zone=1,nat(src=GW)). Returns the state and the output packet.
fn pipeline(sh: &mut Shard, p: &CtPacket, now: u64) -> (u8, CtPacket) {
    let mut md = PktCtMeta::default();
    let r = sh.execute(p, &mut md, &ct_nat(1), now);
    let mut q = apply(p, &r);
    if md.state & cs::NEW != 0 {
        let r = sh.execute(&q, &mut md, &commit_snat(1, GW), now);
        q = apply(&q, &r);
    }
    (md.state, q)
}

fn client(i: u32) -> (u32, u16) {
    (ip(10, 1, 0, 0) + i / 50_000, 1024 + (i % 50_000) as u16)
}

/// Servers vary so 100k SNAT reply tuples fit in the port slices.
fn server(i: u32) -> (u32, u16) {
    (S + i % 8, 443)
}

fn shards(n: usize, cap: u32, dir: &Arc<Directory>) -> Vec<Shard> {
    (0..n)
        .map(|w| {
            let mut s = Shard::new(CtConfig::with_capacity(cap));
            s.attach_directory(dir.clone(), w);
            s
        })
        .collect()
}

#[test]
fn every_reply_is_handled_by_the_owner_after_a_handoff() {
    let n = 4;
    let dir = Arc::new(Directory::new(n, 1024));
    let mut sh = shards(n, 1024, &dir);
    let mesh: HandoffMesh<CtPacket> = HandoffMesh::new(n, 64);
    let now = 1000;
    // Deliver `p` on worker `rx`: hand it to its owner if another worker
    // owns it, then let the owner process it.
    let deliver = |sh: &mut Vec<Shard>, rx: usize, p: CtPacket| -> (usize, u8, CtPacket) {
        let owner = dir.owner_of(&p, rx).unwrap_or(rx);
        if owner != rx {
            sh[rx].note_handoff(true);
            mesh.ring(rx, owner).push(p).unwrap();
            let p = mesh.pop_for(owner).unwrap();
            sh[owner].note_handoff(false);
            let (st, q) = pipeline(&mut sh[owner], &p, now);
            return (owner, st, q);
        }
        let (st, q) = pipeline(&mut sh[rx], &p, now);
        (rx, st, q)
    };
    for i in 0..200u32 {
        let a = (i as usize) % n;
        let b = (a + 1) % n;
        let c = client(i);
        let (w, st, out) = deliver(&mut sh, a, tcp(c, (S, 443), SYN, i, 0, 0));
        assert_eq!((w, st), (a, NEW_TRK | cs::SNAT));
        assert_eq!(out.tuple.src, GW);
        // The reply is addressed to the translated tuple and lands on b.
        let reply = tcp((S, 443), (GW, out.tuple.sport), SYN | ACK, 7, i + 1, 0);
        let (w, st, back) = deliver(&mut sh, b, reply);
        assert_eq!(w, a, "reply processed by the owner");
        assert_eq!(st, EST_RPL | cs::DNAT);
        assert_eq!((back.tuple.dst, back.tuple.dport), c);
        let (w, st, _) = deliver(&mut sh, b, tcp(c, (S, 443), ACK, i + 1, 8, 0));
        assert_eq!((w, st), (a, EST_TRK | cs::SNAT));
    }
    let mut total = CtCounters::default();
    for s in &sh {
        s.check_invariants().unwrap();
        total.add(s.counters());
        assert!(
            s.dump(None)
                .iter()
                .all(|d| d.tcp_state() == Some(TcpState::Established))
        );
    }
    assert_eq!(total.committed, 200);
    assert_eq!(total.handoffs, 400);
    assert_eq!(total.handoffs_in, 400);
    assert_eq!(total.invalid_total(), 0);
    // Deleting connections unpublishes them.
    for s in &mut sh {
        s.flush(None, None);
    }
    let p = tcp(client(0), (S, 443), ACK, 1, 8, 0);
    assert_eq!(dir.owner_of(&p, 1), None);
}

/// Run one phase on `n` threads: worker `w` receives `rx[w]`, hands packets
/// it does not own to their owner, processes what it owns or receives.
/// Returns the outputs of each worker's pipeline, tagged with the packet id.
fn phase(
    sh: &mut [Shard],
    dir: &Directory,
    mesh: &HandoffMesh<(u32, CtPacket)>,
    rx: Vec<Vec<(u32, CtPacket)>>,
    now: u64,
) -> Vec<(u32, u8, CtPacket)> {
    let n = sh.len();
    let in_flight = AtomicUsize::new(0);
    let rx_done = AtomicUsize::new(0);
    let mut outs = Vec::new();
    std::thread::scope(|s| {
        let hs: Vec<_> = sh
            .iter_mut()
            .zip(rx)
            .enumerate()
            .map(|(me, (shard, pkts))| {
                let (in_flight, rx_done) = (&in_flight, &rx_done);
                s.spawn(move || {
                    let mut out = Vec::with_capacity(pkts.len());
                    let drain = |shard: &mut Shard, out: &mut Vec<(u32, u8, CtPacket)>| {
                        while let Some((id, p)) = mesh.pop_for(me) {
                            shard.note_handoff(false);
                            let (st, q) = pipeline(shard, &p, now);
                            out.push((id, st, q));
                            // Release: the result is recorded before the
                            // packet stops counting as in flight.
                            in_flight.fetch_sub(1, Ordering::Release);
                        }
                    };
                    for (id, p) in pkts {
                        let owner = dir.owner_of(&p, me).unwrap_or(me);
                        if owner == me {
                            let (st, q) = pipeline(shard, &p, now);
                            out.push((id, st, q));
                        } else {
                            shard.note_handoff(true);
                            in_flight.fetch_add(1, Ordering::AcqRel);
                            let mut item = (id, p);
                            while let Err(back) = mesh.ring(me, owner).push(item) {
                                item = back;
                                drain(shard, &mut out);
                            }
                        }
                        drain(shard, &mut out);
                    }
                    rx_done.fetch_add(1, Ordering::AcqRel);
                    while rx_done.load(Ordering::Acquire) < n
                        || in_flight.load(Ordering::Acquire) > 0
                    {
                        drain(shard, &mut out);
                        std::hint::spin_loop();
                    }
                    drain(shard, &mut out);
                    out
                })
            })
            .collect();
        for h in hs {
            outs.extend(h.join().unwrap());
        }
    });
    outs
}

#[test]
fn stress_four_threads_100k_connections_with_handoffs() {
    let n = 4;
    let total: u32 = 100_000;
    let cap = total / n as u32 + 1024;
    let dir = Arc::new(Directory::new(n, cap));
    let mut sh = shards(n, cap, &dir);
    let mesh: HandoffMesh<(u32, CtPacket)> = HandoffMesh::new(n, 256);
    let owner_of = |i: u32| (i as usize) % n;

    // Phase 1: SYNs on their owner's queue.
    let mut rx = vec![Vec::new(); n];
    for i in 0..total {
        rx[owner_of(i)].push((i, tcp(client(i), server(i), SYN, i, 0, 0)));
    }
    let out = phase(&mut sh, &dir, &mesh, rx, 1000);
    assert_eq!(out.len(), total as usize);
    let mut translated = vec![0u16; total as usize];
    for (id, st, q) in &out {
        assert_eq!(*st, NEW_TRK | cs::SNAT);
        translated[*id as usize] = q.tuple.sport;
    }

    // Phase 2: SYN-ACKs on another worker's queue.
    let mut rx = vec![Vec::new(); n];
    for i in 0..total {
        let p = tcp(
            server(i),
            (GW, translated[i as usize]),
            SYN | ACK,
            7,
            i + 1,
            0,
        );
        rx[(owner_of(i) + 1) % n].push((i, p));
    }
    let out = phase(&mut sh, &dir, &mesh, rx, 1001);
    assert_eq!(out.len(), total as usize, "no packet lost");
    for (id, st, q) in &out {
        assert_eq!(*st, EST_RPL | cs::DNAT);
        assert_eq!((q.tuple.dst, q.tuple.dport), client(*id));
    }

    // Phase 3: ACKs on a third worker's queue.
    let mut rx = vec![Vec::new(); n];
    for i in 0..total {
        rx[(owner_of(i) + 2) % n].push((i, tcp(client(i), server(i), ACK, i + 1, 8, 0)));
    }
    let out = phase(&mut sh, &dir, &mesh, rx, 1002);
    assert_eq!(out.len(), total as usize);
    assert!(out.iter().all(|(_, st, _)| *st == EST_TRK | cs::SNAT));

    let mut sum = CtCounters::default();
    let mut established = 0;
    for (w, s) in sh.iter().enumerate() {
        s.check_invariants().unwrap();
        sum.add(s.counters());
        let d = s.dump(None);
        assert_eq!(d.len(), total as usize / n, "worker {w}");
        established += d
            .iter()
            .filter(|d| d.tcp_state() == Some(TcpState::Established))
            .count();
    }
    assert_eq!(established, total as usize);
    assert_eq!(sum.committed, u64::from(total));
    assert_eq!(sum.handoffs, 2 * u64::from(total));
    assert_eq!(sum.handoffs_in, sum.handoffs);
    assert_eq!(sum.invalid_total(), 0);
    assert_eq!(sum.table_full + sum.nat_exhausted, 0);
}
