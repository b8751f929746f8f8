//! The OpenFlow pipeline: field registry, IR, `ovs-ofctl` text parser and
//! printer, classifier and interpreter.

pub mod fields;
pub mod ir;
