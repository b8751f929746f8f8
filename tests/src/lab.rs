//! [`Both`]: real OVS and flowpath driven in lockstep behind `OvsSwitch`'s
//! own method names. Every observation (a packet's outputs, a conntrack
//! dump) is taken from both and must be equal, so a test written against OVS
//! alone becomes a differential test by constructing `Both` instead of
//! `OvsSwitch`. Observations return OVS's side, so the test's assertions
//! keep describing OVS.

use datapath::pipeline::{Pipeline, parse};
use datapath::replay::{PortMap, Replayer, Step, StepResult};

use crate::decode::summary;
use crate::ovs::{OvsSwitch, Result};

/// flowpath's side: one in-memory core, like `flowpath replay`.
struct Flowpath {
    ports: &'static PortMap,
    replayer: Replayer<'static>,
    pending: Vec<(String, Vec<u8>)>,
}

impl Flowpath {
    fn new(ports: &[(String, u32)]) -> Self {
        let ports: &'static PortMap = Box::leak(Box::new(PortMap {
            ports: ports.to_vec(),
        }));
        let empty: &'static Pipeline = Box::leak(Box::default());
        Flowpath {
            ports,
            replayer: Replayer::new(empty, ports),
            pending: Vec::new(),
        }
    }

    /// Replace the flows, keeping conntrack state and the clock (as
    /// `ovs-ofctl replace-flows` does).
    fn replace_flows(&mut self, text: &str) -> Result<()> {
        let names = &self.ports.ports;
        let flows = parse::with_port_names(names, || parse::parse_flows("flows", text))
            .map_err(|e| e.to_string())?;
        let p: &'static Pipeline = Box::leak(Box::new(Pipeline::new(flows, Vec::new())));
        let mut r = Replayer::new(p, self.ports);
        r.ct = std::mem::take(&mut self.replayer.ct);
        r.now_ms = self.replayer.now_ms;
        self.replayer = r;
        Ok(())
    }

    fn run(&mut self, step: Step) -> StepResult {
        self.replayer.step(0, &step, None)
    }
}

/// OVS and flowpath in lockstep.
pub struct Both {
    /// The OVS side (for anything flowpath has no counterpart of).
    pub ovs: OvsSwitch,
    fp: Flowpath,
}

fn by_port(v: &[(String, Vec<u8>)]) -> std::collections::BTreeMap<&str, Vec<&[u8]>> {
    let mut m: std::collections::BTreeMap<&str, Vec<&[u8]>> = Default::default();
    for (p, f) in v {
        m.entry(p.as_str()).or_default().push(f);
    }
    m
}

fn show(v: &[(String, Vec<u8>)]) -> String {
    v.iter()
        .map(|(p, f)| format!("    {p}: {}\n", summary(f)))
        .collect()
}

impl Both {
    /// Start OVS with `ports` and an empty flowpath beside it.
    pub fn start(ports: &[(String, u32)]) -> Result<Both> {
        Ok(Both {
            ovs: OvsSwitch::start(ports)?,
            fp: Flowpath::new(ports),
        })
    }

    /// Install `text` on both; port names (`output:p2`) resolve against the
    /// lab's ports on both sides.
    pub fn replace_flows(&mut self, text: &str) -> Result<()> {
        self.ovs.replace_flows(text)?;
        self.fp.replace_flows(text)
    }

    /// Inject a frame into both.
    pub fn inject(&mut self, port: &str, frame: &[u8]) -> Result<()> {
        self.ovs.inject(port, frame)?;
        if let StepResult::Packet {
            outputs, answers, ..
        } = self.fp.run(Step::Packet {
            port: port.to_string(),
            bytes: frame.to_vec(),
        }) {
            // flowpath's answers to a REJECT have no OVS counterpart (OVS
            // without a controller drops the packet): a documented deviation.
            self.fp.pending.extend(
                outputs
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !answers.iter().any(|(j, _)| j == i))
                    .map(|(_, o)| o),
            );
        }
        Ok(())
    }

    /// Outputs since the last call; panics (decoded) unless flowpath's equal
    /// OVS's port by port, in order. Returns OVS's.
    pub fn take_outputs(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        let ovs = self.ovs.take_outputs()?;
        let fp = std::mem::take(&mut self.fp.pending);
        assert!(
            by_port(&ovs) == by_port(&fp),
            "flowpath differs from OVS\n  OVS:\n{}  flowpath:\n{}",
            show(&ovs),
            show(&fp)
        );
        Ok(ovs)
    }

    /// Advance both conntrack clocks.
    pub fn warp(&mut self, ms: u64) -> Result<()> {
        self.ovs.warp(ms)?;
        self.fp.run(Step::Warp(ms));
        Ok(())
    }

    /// Flush both conntrack tables.
    pub fn flush_conntrack(&mut self) -> Result<()> {
        self.ovs.flush_conntrack()?;
        self.fp.run(Step::FlushCt);
        Ok(())
    }

    /// Conntrack dump (sorted); panics unless flowpath's equals OVS's.
    pub fn dump_conntrack(&mut self, zone: Option<u16>) -> Result<Vec<String>> {
        let mut ovs = self.ovs.dump_conntrack(zone)?;
        ovs.sort();
        let fp = match self.fp.run(Step::Ct(zone)) {
            StepResult::Cmd { entries, .. } => entries,
            _ => Vec::new(),
        };
        assert_eq!(
            ovs, fp,
            "conntrack dump: flowpath differs from OVS (left: OVS)"
        );
        Ok(ovs)
    }

    /// `dump-flows` (sorted lines, optionally one table), learned flows
    /// included; panics unless flowpath's equals OVS's. Returns OVS's.
    pub fn dump_flows(&mut self, table: Option<u8>) -> Result<Vec<String>> {
        let ovs = self.ovs.dump_flows(table)?;
        let fp = match self.fp.run(Step::Flows(table)) {
            StepResult::Cmd { entries, .. } => entries,
            _ => Vec::new(),
        };
        assert_eq!(ovs, fp, "dump-flows: flowpath differs from OVS (left: OVS)");
        Ok(ovs)
    }

    /// New problem lines in OVS's log (flowpath logs nothing per packet).
    pub fn new_log_problems(&mut self) -> Result<Vec<String>> {
        self.ovs.new_log_problems()
    }
}
