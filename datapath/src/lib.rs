//! flowpath's datapath: packet views, the flow key, and the OpenFlow table
//! pipeline with its interpreter.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod drop;
pub mod extract;
pub mod io;
pub mod key;
pub mod masked;
pub mod pipeline;
pub mod reject;
pub mod replay;
pub mod wire;
pub mod worker;
