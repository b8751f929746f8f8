//! flowpath control plane: the `flowpath` command's subcommands as a library
//! (so tests drive exactly what users run).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compile;
pub mod config;
pub mod control;
pub mod load;
pub mod replay;
pub mod run;
pub mod trace;
