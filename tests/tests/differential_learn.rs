//! The `learn` action against real OVS, in lockstep ([`tests::lab::Both`]):
//! the flows a packet learns (as `dump-flows` prints them), the outputs of
//! the packets that hit them, their hard and idle timeouts (OVS's clock is
//! stopped and warped; flowpath's replay clock moves with it) and
//! `delete_learned`.

use tests::lab::Both;
use tests::ovs::skip_without_ovs;
use tests::pkt::{ip, mac, udp};

fn lab(flows: &str) -> Both {
    let ports: Vec<(String, u32)> = (1..=5).map(|i| (format!("p{i}"), i)).collect();
    let mut sw = Both::start(&ports).expect("start OVS");
    sw.replace_flows(flows).expect("flows");
    sw
}

fn send(sw: &mut Both, port: &str, src: &str, dst: &str, sport: u16) -> Vec<String> {
    let f = udp(
        mac(src),
        mac(dst),
        (ip("10.0.0.1"), sport),
        (ip("10.0.0.2"), 53),
        b"x",
    );
    sw.inject(port, &f).expect("inject");
    let out = sw.take_outputs();
    // OVS fixes megaflows made stale by a learned flow asynchronously (the
    // revalidators); flowpath publishes a new generation. Let OVS's
    // revalidators finish before the next packet.
    sw.ovs
        .appctl(&["revalidator/wait"])
        .expect("revalidator/wait");
    out.expect("outputs").into_iter().map(|(p, _)| p).collect()
}

/// Move both clocks by `ms` in 500 ms steps, letting OVS's main loop run
/// its flow expiry (every second, on its own clock) in between.
fn warp(sw: &mut Both, ms: u64) {
    for _ in 0..ms / 500 {
        sw.warp(500).expect("warp");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    sw.ovs
        .appctl(&["revalidator/wait"])
        .expect("revalidator/wait");
}

const A: &str = "02:00:00:00:00:0a";
const B: &str = "02:00:00:00:00:0b";

/// MAC learning: table 0 learns "dl_dst = this source -> reg1 = in_port"
/// into table 1, whose default leaves reg1 = 0 (flood to p5).
fn mac_learning(timeouts: &str) -> String {
    format!(
        "table=0,in_port=p1,actions=load:1->NXM_NX_REG2[0..15],resubmit(,3)\n\
table=0,in_port=p2,actions=load:2->NXM_NX_REG2[0..15],resubmit(,3)\n\
table=3,priority=10,actions=learn(table=1,{timeouts},priority=100,cookie=0x77,\
NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_NX_REG2[0..15]->NXM_NX_REG1[0..15]),resubmit(,1),resubmit(,2)\n\
table=1,priority=0,actions=load:0->NXM_NX_REG1[]\n\
table=2,reg1=0,actions=output:p5\n\
table=2,reg1=1,actions=output:p1\n\
table=2,reg1=2,actions=output:p2\n"
    )
}

/// A learned flow forwards the reply and prints as OVS prints it; its hard
/// timeout removes it.
#[test]
fn learned_flow_forwards_dumps_and_hard_expires() {
    if skip_without_ovs("learned_flow_forwards_dumps_and_hard_expires") {
        return;
    }
    let mut sw = lab(&mac_learning("hard_timeout=10"));
    assert_eq!(send(&mut sw, "p1", A, B, 1000), ["p5"], "B unknown: flood");
    let t1 = sw.dump_flows(Some(1)).unwrap();
    assert!(
        t1.iter().any(|l| l.contains("hard_timeout=10")
            && l.contains("dl_dst=02:00:00:00:00:0a")
            && l.contains("load:0x1->NXM_NX_REG1[0..15]")),
        "{t1:?}"
    );
    assert_eq!(send(&mut sw, "p2", B, A, 1001), ["p1"], "A learned on p1");
    assert_eq!(send(&mut sw, "p1", A, B, 1002), ["p2"], "B learned on p2");
    warp(&mut sw, 12_000);
    sw.dump_flows(None).unwrap();
    assert_eq!(send(&mut sw, "p2", B, A, 1003), ["p5"], "A's flow expired");
    assert!(sw.new_log_problems().unwrap().is_empty());
}

/// An idle timeout is refreshed by packets that go through the learned
/// flow and fires once they stop.
#[test]
fn learned_flow_idle_timeout() {
    if skip_without_ovs("learned_flow_idle_timeout") {
        return;
    }
    let mut sw = lab(&mac_learning("idle_timeout=3"));
    assert_eq!(send(&mut sw, "p1", A, B, 2000), ["p5"]);
    for i in 0..3 {
        warp(&mut sw, 2_000);
        assert_eq!(send(&mut sw, "p2", B, A, 2001 + i), ["p1"], "round {i}");
    }
    sw.dump_flows(Some(1)).unwrap();
    warp(&mut sw, 5_000);
    sw.dump_flows(Some(1)).unwrap();
    assert_eq!(send(&mut sw, "p2", B, A, 2010), ["p5"], "idle: expired");
}

/// `output:FIELD[]` in a learn: the learned flow outputs to the port the
/// field held.
#[test]
fn learned_output_action() {
    if skip_without_ovs("learned_output_action") {
        return;
    }
    let flows = "table=0,priority=10,actions=learn(table=1,priority=100,delete_learned,cookie=0x5,\
NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),resubmit(,1)\n\
table=1,priority=0,actions=output:p5\n";
    let mut sw = lab(flows);
    assert_eq!(send(&mut sw, "p1", A, B, 3000), ["p5"]);
    assert_eq!(send(&mut sw, "p2", B, A, 3001), ["p1"]);
    assert_eq!(sw.dump_flows(Some(1)).unwrap().len(), 3);
}
