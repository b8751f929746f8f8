//! Per-core connection tracking and NAT with OVS userspace semantics.
//!
//! (Skeleton: the crate docs walk one packet through a shard once the
//! implementation lands.)
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub use api::*;

/// One core's conntrack table. Placeholder until the implementation lands.
#[derive(Debug, Default)]
pub struct Shard {}

impl Shard {
    /// Run one `ct()` action for `pkt`, updating `md` as OVS updates the
    /// packet's metadata. `now_ms` is the conntrack clock.
    pub fn execute(
        &mut self,
        pkt: &CtPacket,
        md: &mut PktCtMeta,
        call: &CtCall,
        now_ms: u64,
    ) -> CtResult {
        let _ = (pkt, call, now_ms);
        md.state = cs::TRK | cs::INV;
        CtResult {
            rewrite: None,
            drop: None,
        }
    }
}
