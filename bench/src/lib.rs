//! flowpath benchmarks and traffic generator.
//!
//! `flowpath-pktgen` (src/bin/pktgen.rs) sends and counts frames over
//! AF_XDP through `datapath::io`. One generated packet walks these modules:
//! [`flows`] picks its (source IP, source port) from the configured ranges,
//! [`rate`] decides whether it may leave now, [`template`] stamps the flow,
//! a sequence number and a timestamp into a prebuilt frame (checksums fixed
//! up), and on the far side the sink parses the stamp back
//! ([`template::Stamp::parse`]) and folds it into a [`summary::SinkStats`].
//! `flowpath-connrate` (src/bin/connrate.rs) measures TCP connection setup
//! rate through a datapath and counts into a [`connrate::ConnStats`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connrate;
pub mod flows;
pub mod nodeport;
pub mod rate;
pub mod summary;
pub mod template;
pub mod vethbench;

/// Whether benches should run at reduced sizes: under `cargo test` (criterion's
/// test mode: the bench binary runs without `--bench`, each benchmark once,
/// as `scripts/test.sh` does so they cannot rot) or with
/// `FLOWPATH_BENCH_QUICK=1`. Full sizes under `cargo bench`.
pub fn quick() -> bool {
    std::env::var_os("FLOWPATH_BENCH_QUICK").is_some_and(|v| v != "0")
        || !std::env::args().any(|a| a == "--bench")
}
