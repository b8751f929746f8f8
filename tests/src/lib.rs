//! flowpath integration test support: a harness that drives a private real
//! Open vSwitch (userspace, dummy datapath) and speaks the same `replay`
//! contract as `flowpath replay`, so the two can be compared packet by packet.
//!
//! A packet's walk through this crate: a scenario's `steps.txt` line
//! `uplink 00aabb...` is parsed by [`ovs::parse_steps`], injected into OVS with
//! `netdev-dummy/receive` by [`ovs::OvsSwitch::inject`], and whatever each
//! port transmitted is read back from its `tx_pcap` by [`pcap::PcapTail`].
//! The same steps go through `ctrl::replay::replay_json`; [`compare`] lines
//! the two JSON results up per step and per port and, on a mismatch, prints
//! both sides decoded by [`decode`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compare;
pub mod decode;
pub mod lab;
pub mod ovs;
pub mod pcap;
pub mod pkt;
pub mod scenario;
