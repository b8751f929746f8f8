//! Port I/O. (This session: pcap capture; AF_XDP, TAP and in-memory ports
//! arrive with the runtime.)

pub mod pcap;
