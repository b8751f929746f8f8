//! Per-core connection tracking and NAT with OVS userspace semantics.
//!
//! # One packet through a shard
//! The datapath meets `ct(zone=Z, commit, nat(...), exec(...))`, parses the
//! packet into a [`CtPacket`] and calls [`Shard::execute`] with the packet's
//! [`PktCtMeta`] (which travels with it across recirculations, like OVS's
//! `pkt->md`). `execute` follows OVS 3.1 `conntrack_execute`/`process_one`:
//!
//! 1. **Reclaim**: up to `reap_per_call` (4) expired connections are freed
//!    from the heads of the expiry lists (`table.rs`), so
//!    expiry costs O(1) amortised per call and never scans the table.
//! 2. **Cached connection**: if an earlier `ct()` of this packet in the same
//!    zone left `md.conn` (a generation-checked [`ConnRef`]; OVS caches it
//!    only when that `ct()` had no `nat`), the packet takes OVS's
//!    `process_one_fast`: NAT if asked, mark/label, nothing else.
//! 3. **Key**: checksum failures and fragments are `+inv`; otherwise the
//!    zone-qualified key (`key.rs`) is the 5-tuple, with the ICMP
//!    id and type for queries, and the quoted packet's tuple reversed for
//!    ICMP errors.
//! 4. **Lookup**: `ct_state` is cleared when the packet enters a new zone;
//!    a packet already NATed in this zone is looked up by the reverse of its
//!    translated tuple; the open-addressing index holds both directions of
//!    every connection (the reply key is the translated one after NAT), so
//!    one probe sequence answers "which connection, which direction".
//! 5. **State**: TCP runs pf's window tracking ([`proto::tcp`]), ICMP and
//!    other protocols their small state machines; the result sets
//!    `+est`/`+new`/`+inv`/`+rpl`/`+rel` and moves the connection to the
//!    expiry list of its new timeout class.
//! 6. **New**: a packet that may start a connection is `+new`; with
//!    `commit` (and room under the table and zone limits) a slot is taken
//!    from the preallocated array, NAT picks a unique reply tuple
//!    (`nat.rs`), both keys are indexed.
//! 7. **NAT** of an existing connection is applied at most once per zone;
//!    the [`Rewrite`] tells the datapath the new outer (and for ICMP
//!    errors, inner) tuple.
//! 8. **Metadata**: `+trk`, zone, mark, label, original tuple; `exec`
//!    mark/label are applied on commit.
//!
//! # Cross-core
//! One [`Shard`] per worker, owned (`&mut`), no locks, no shared written
//! lines on the established path. Requests and replies of one connection
//! may arrive on different workers (different RSS queues, NAT-changed
//! tuples). Three pieces in [`cross`]:
//! * [`cross::Directory`], a read-mostly ownership directory: one partition
//!   of `AtomicU64` tuple fingerprints per worker, written only by that
//!   worker and only on connection create/delete, holding both tuples of
//!   every connection it owns. [`cross::Directory::owner_of`] is the
//!   owner-selection function: a worker receiving a packet asks it and, if
//!   another worker owns the connection, hands the *packet* over;
//!   unknown packets are new and stay local (this worker becomes owner).
//! * Port slices ([`cross::port_slice_owner`]): worker `w` of `n` only
//!   hands out SNAT ports with `port % n == w`, so translated tuples are
//!   unique across workers without coordination (VPP nat44-ed's idea);
//!   DNAT's rare port searches also consult the directory.
//! * [`cross::HandoffRing`]/[`cross::HandoffMesh`]: bounded lock-free SPSC
//!   rings (`crossbeam_queue::ArrayQueue`), one per ordered worker pair.
//!
//! A single shard (no directory) reproduces OVS exactly, including source
//! port choices; the single-shard API ([`Shard::execute`]) is what replay
//! and differential tests use.
//!
//! # Memory
//! A connection costs one 128-byte slot (two cache lines: both keys, TCP
//! windows, NAT kind, timers, mark, label) plus four 8-byte index cells (two
//! keys at load factor 1/2): 160 bytes, within the 256-byte budget.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub use api::*;

pub mod config;
pub mod cross;
pub mod dump;
mod key;
mod nat;
pub mod proto;
mod shard;
pub mod stats;
mod table;

pub use config::{CtConfig, Timeouts};
pub use cross::{Directory, HandoffMesh, HandoffRing, owner_tuple, port_slice_owner};
pub use dump::ConnDump;
pub use proto::tcp::TcpState;
pub use shard::{INDEX_BYTES_PER_CONN, Shard};
pub use stats::{CtCounters, InvalidReason};

#[cfg(test)]
mod tests;
