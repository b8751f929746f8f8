//! The few rtnetlink requests port setup needs: bring a link up, set its
//! MTU and MAC, add an IPv4 address, and query or detach XDP programs.
//!
//! Control path only (port setup and teardown): each call opens a
//! `NETLINK_ROUTE` socket, sends one request, waits for the kernel's
//! answer, and closes it. Requests act in the caller's network namespace.
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

/// Resolve an interface name to its index.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// Move the calling thread (only) into network namespace `ns`: a name
/// under `/var/run/netns` (as `ip netns add` makes) or a path such as
/// `/proc/<pid>/ns/net`. Threads it spawns afterwards start there too.
/// Control path: for running ports or tests inside a namespace.
pub fn enter_netns(ns: &str) -> io::Result<()> {
    let path = if ns.contains('/') {
        ns.to_string()
    } else {
        format!("/var/run/netns/{ns}")
    };
    let f = std::fs::File::open(&path)?;
    // SAFETY: setns(2) on a namespace fd we hold open; CLONE_NEWNET only
    // changes this thread's network namespace, no memory is involved.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One rtnetlink request under construction.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, family_hdr: &[u8]) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // len, patched in finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: kernel fills
        buf.extend_from_slice(family_hdr);
        Msg {
            buf,
            nests: Vec::new(),
        }
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Msg {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }
    fn begin_nest(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }
    fn end_nest(&mut self) -> &mut Msg {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }
    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// Send `req` and return the first reply message (header included). An
/// `NLMSG_ERROR` reply with a non-zero code becomes an `Err`.
fn request(req: &[u8]) -> io::Result<Vec<u8>> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid: it addresses the kernel.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `req` and `sa` are live for the call, lengths match.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `buf` is writable for its full length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    if buf.len() < 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "netlink: short reply",
        ));
    }
    let len =
        (u32::from_ne_bytes(buf[0..4].try_into().unwrap_or_default()) as usize).min(buf.len());
    buf.truncate(len);
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty == NLMSG_ERROR && buf.len() >= 20 {
        let code = i32::from_ne_bytes(buf[16..20].try_into().unwrap_or_default());
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(buf)
}

fn ack(msg: Msg) -> io::Result<()> {
    request(&msg.finish()).map(drop)
}

/// Set the link administratively up.
pub fn set_up(index: u32) -> io::Result<()> {
    let h = ifinfomsg(index, libc::IFF_UP as u32, libc::IFF_UP as u32);
    ack(Msg::new(RTM_NEWLINK, NLM_F_ACK, &h))
}

/// Set the link's MTU.
pub fn set_mtu(index: u32, mtu: u32) -> io::Result<()> {
    let h = ifinfomsg(index, 0, 0);
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &h);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    ack(m)
}

/// Set the link's MAC address.
pub fn set_mac(index: u32, mac: [u8; 6]) -> io::Result<()> {
    let h = ifinfomsg(index, 0, 0);
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &h);
    m.attr(IFLA_ADDRESS, &mac);
    ack(m)
}

/// Add (or replace) an IPv4 address with `prefix` on the link.
pub fn add_ipv4(index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut h = [0u8; 8];
    h[0] = libc::AF_INET as u8;
    h[1] = prefix;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, &h);
    m.attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets());
    ack(m)
}

/// What XDP program, if any, a link has attached (`IFLA_XDP`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpState {
    /// `XDP_ATTACHED_*`: 0 none, 1 driver, 2 generic (skb), 3 hw, 4 multi.
    pub attached: u8,
    /// Id of the program when exactly one is attached.
    pub prog_id: u32,
    /// Id of the driver-mode program, if any.
    pub drv_prog_id: u32,
    /// Id of the generic (skb) mode program, if any.
    pub skb_prog_id: u32,
}

impl XdpState {
    /// (program id, `XDP_FLAGS_*` mode flag) for each attached program.
    pub fn programs(&self) -> impl Iterator<Item = (u32, u32)> {
        use crate::io::afxdp::bpf::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
        let (drv, skb) = match self.attached {
            1 => (self.prog_id, 0),
            2 => (0, self.prog_id),
            4 => (self.drv_prog_id, self.skb_prog_id),
            _ => (0, 0),
        };
        [(drv, XDP_FLAGS_DRV_MODE), (skb, XDP_FLAGS_SKB_MODE)]
            .into_iter()
            .filter(|&(id, _)| id != 0)
    }
}

/// Read the link's XDP attachment state.
pub fn xdp_state(index: u32) -> io::Result<XdpState> {
    let h = ifinfomsg(index, 0, 0);
    let reply = request(&Msg::new(RTM_GETLINK, 0, &h).finish())?;
    let mut st = XdpState::default();
    // nlmsghdr (16) + ifinfomsg (16), then attributes.
    for (ty, data) in attrs(reply.get(32..).unwrap_or_default()) {
        if ty & !NLA_F_NESTED != IFLA_XDP {
            continue;
        }
        for (t, d) in attrs(data) {
            let u32_of = |d: &[u8]| {
                u32::from_ne_bytes(
                    d.get(..4)
                        .and_then(|s| s.try_into().ok())
                        .unwrap_or_default(),
                )
            };
            match t {
                IFLA_XDP_ATTACHED => st.attached = d.first().copied().unwrap_or(0),
                IFLA_XDP_PROG_ID => st.prog_id = u32_of(d),
                IFLA_XDP_DRV_PROG_ID => st.drv_prog_id = u32_of(d),
                IFLA_XDP_SKB_PROG_ID => st.skb_prog_id = u32_of(d),
                _ => {}
            }
        }
    }
    Ok(st)
}

/// Attach program `fd` to the link with netlink (the pre-link way; `-1`
/// detaches). `flags` selects the mode (`XDP_FLAGS_SKB_MODE` /
/// `XDP_FLAGS_DRV_MODE`). Fails with `EBUSY` if a BPF link owns the hook.
pub fn xdp_set_fd(index: u32, fd: i32, flags: u32) -> io::Result<()> {
    let h = ifinfomsg(index, 0, 0);
    let mut m = Msg::new(RTM_SETLINK, NLM_F_ACK, &h);
    m.begin_nest(IFLA_XDP)
        .attr(IFLA_XDP_FD, &fd.to_ne_bytes())
        .attr(IFLA_XDP_FLAGS, &flags.to_ne_bytes())
        .end_nest();
    ack(m)
}

/// Iterate `(type, payload)` over a run of netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]);
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        let adv = (len + 3) & !3;
        b = b.get(adv..).unwrap_or_default();
        Some((ty, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let h = ifinfomsg(7, 0, 0);
        let mut m = Msg::new(RTM_SETLINK, NLM_F_ACK, &h);
        m.begin_nest(IFLA_XDP)
            .attr(IFLA_XDP_FD, &(-1i32).to_ne_bytes())
            .attr(IFLA_XDP_FLAGS, &2u32.to_ne_bytes())
            .end_nest();
        let b = m.finish();
        assert_eq!(b.len(), 16 + 16 + 4 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()),
            b.len() as u32
        );
        let top: Vec<_> = attrs(&b[32..]).collect();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, IFLA_XDP | NLA_F_NESTED);
        let inner: Vec<_> = attrs(top[0].1).collect();
        assert_eq!(inner[0], (IFLA_XDP_FD, &(-1i32).to_ne_bytes()[..]));
        assert_eq!(inner[1], (IFLA_XDP_FLAGS, &2u32.to_ne_bytes()[..]));
    }

    #[test]
    fn attrs_stop_on_garbage() {
        assert_eq!(attrs(&[8, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(attrs(&[5, 0, 1, 0, 9, 0, 0, 0, 4, 0, 2, 0]).count(), 2);
    }

    #[test]
    fn loopback_is_index_1_and_has_no_xdp() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert!(ifindex("no-such-if0").is_err());
        let st = xdp_state(1).unwrap();
        assert_eq!(st.programs().count(), 0);
    }
}
