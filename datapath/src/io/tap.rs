//! TAP port: an interface the host stack sees as ordinary (OVS's `LOCAL`
//! internal port, Antrea's `antrea-gw0`). Frames the host sends out of it
//! arrive on `rx_burst`; frames flowpath transmits are delivered to the
//! host stack as if received on it.
//!
//! Setup (control path) opens `/dev/net/tun` non-blocking with
//! `IFF_TAP | IFF_NO_PI`, then uses rtnetlink to set MAC, MTU and IPv4
//! address and bring the link up. The device lives as long as the port:
//! it is not persistent, so it vanishes when the process exits.
//!
//! Hot path: one `read(2)` per received frame straight into a UMEM chunk,
//! one `write(2)` per transmitted frame straight from one. No copies in
//! userspace, no allocation.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{Batch, Port, PortStats, Umem, netlink};

/// How to create and configure the TAP device.
#[derive(Debug, Clone, Default)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes; `%d` lets the kernel number it).
    pub name: String,
    /// MAC address; the kernel picks a random one if `None`.
    pub mac: Option<[u8; 6]>,
    /// IPv4 address and prefix length for the host side.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// MTU; default 1500. Must leave the frame (MTU + 18 bytes of Ethernet
    /// and VLAN header) within a UMEM chunk.
    pub mtu: Option<u32>,
}

/// Why a TAP port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long, or contains NUL.
    #[error("tap: bad interface name {name:?}")]
    BadName {
        /// The name given.
        name: String,
    },
    /// A step of the setup failed.
    #[error("tap {name}: {op}: {source}")]
    Sys {
        /// Interface name.
        name: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// A TAP device as a [`Port`].
#[derive(Debug)]
pub struct TapPort {
    name: String,
    ifindex: u32,
    file: File,
    stats: PortStats,
}

/// `struct ifreq` as TUNSETIFF reads and writes it: name, then flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TapPort {
    /// Create the device and configure it; see [`TapConfig`].
    pub fn open(cfg: &TapConfig) -> Result<TapPort, TapError> {
        let bad = || TapError::BadName {
            name: cfg.name.clone(),
        };
        if cfg.name.is_empty() || cfg.name.len() >= libc::IFNAMSIZ || cfg.name.contains('\0') {
            return Err(bad());
        }
        let sys = |op| {
            let name = cfg.name.clone();
            move |source| TapError::Sys { name, op, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(sys("open /dev/net/tun"))?;
        let mut ifr = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        ifr.name[..cfg.name.len()].copy_from_slice(cfg.name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq`
        // matches in layout and size (40 bytes); it lives across the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut IfReq) };
        if r < 0 {
            return Err(sys("TUNSETIFF")(io::Error::last_os_error()));
        }
        let end = ifr
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(libc::IFNAMSIZ);
        let name = String::from_utf8_lossy(&ifr.name[..end]).into_owned();
        let sys = |op| {
            let name = name.clone();
            move |source| TapError::Sys { name, op, source }
        };
        let ifindex = netlink::ifindex(&name).map_err(sys("if_nametoindex"))?;
        if let Some(mac) = cfg.mac {
            netlink::set_mac(ifindex, mac).map_err(sys("set MAC"))?;
        }
        netlink::set_mtu(ifindex, cfg.mtu.unwrap_or(1500)).map_err(sys("set MTU"))?;
        netlink::set_up(ifindex).map_err(sys("set link up"))?;
        if let Some((addr, prefix)) = cfg.ipv4 {
            netlink::add_ipv4(ifindex, addr, prefix).map_err(sys("add IPv4 address"))?;
        }
        Ok(TapPort {
            name,
            ifindex,
            file,
            stats: PortStats::default(),
        })
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        let mut n = 0;
        while batch.space() > 0 {
            let Some(mut frame) = umem.alloc() else {
                // Leave it queued in the kernel; a later burst gets it.
                break;
            };
            match (&self.file).read(umem.room_mut(&frame)) {
                Ok(len) if len > 0 => {
                    // Cannot fail: `read` wrote at most the room.
                    let _ = umem.set_len(&mut frame, len);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                    let _ = batch.push(frame);
                    n += 1;
                }
                Ok(_) => {
                    umem.free(frame);
                    break;
                }
                Err(e) => {
                    umem.free(frame);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        // A frame too long for the chunk, or the like.
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    break;
                }
            }
        }
        n
    }

    fn tx_burst(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        let mut sent = 0;
        for i in 0..batch.len() {
            match (&self.file).write(umem.data(&batch.frames()[i])) {
                Ok(_) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += batch.frames()[i].len() as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Not retryable (link down, malformed): the frame is
                // consumed and counted.
                Err(_) => self.stats.errors += 1,
            }
            let f = batch.take(i);
            umem.free(f);
            sent += 1;
        }
        self.stats.tx_busy += (batch.len() - sent) as u64;
        batch.consume_front(sent);
        sent
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

impl AsFd for TapPort {
    /// The TAP file descriptor, for `poll(2)`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_matches_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn names_are_checked() {
        for name in ["", "a-name-that-is-too-long", "nul\0"] {
            let cfg = TapConfig {
                name: name.into(),
                ..TapConfig::default()
            };
            assert!(matches!(TapPort::open(&cfg), Err(TapError::BadName { .. })));
        }
    }
}
