//! flowpath's XDP program, written as raw eBPF instructions and loaded with
//! the `bpf(2)` syscall: no clang, no libbpf, no object files.
//!
//! The program redirects every frame to the AF_XDP socket registered in an
//! XSKMAP at the frame's RX queue index; if no socket is registered there,
//! `bpf_redirect_map` returns the flags' low bits, `XDP_PASS`, and the frame
//! goes to the kernel stack. Optionally, frames whose EtherType is in a
//! configured list are passed to the stack before the redirect (e.g. LLDP
//! or IPv6 if the pipeline never handles them).
//!
//! ```text
//!   r6 = r1                              ; ctx
//!   [filter] r2 = ctx->data; r3 = ctx->data_end
//!            if r2 + 14 > r3 goto redirect
//!            r4 = *(u16 *)(r2 + 12)      ; EtherType, network order
//!            if r4 == T1 goto pass ... if r4 == Tn goto pass
//! redirect:
//!   r2 = ctx->rx_queue_index
//!   r1 = map_fd (ld_imm64, BPF_PSEUDO_MAP_FD)
//!   r3 = XDP_PASS
//!   call bpf_redirect_map
//!   exit
//! pass:                                 ; only with a filter
//!   r0 = XDP_PASS
//!   exit
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The program's name as the kernel reports it (`bpftool prog`, netlink
/// queries): how flowpath recognises its own stale attachments.
pub const PROG_NAME: &str = "flowpath_xsk";
const MAP_NAME: &str = "flowpath_xsks";

/// Most EtherTypes the pass filter can hold.
pub const MAX_PASS_ETHERTYPES: usize = 16;

// bpf(2) commands (uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_OBJ_PIN: libc::c_int = 6;
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_LINK_DETACH: libc::c_int = 34;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type` value for XDP links.
const BPF_XDP: u32 = 37;
/// `enum bpf_link_type` value of XDP links.
pub(crate) const BPF_LINK_TYPE_XDP: u32 = 6;

/// `XDP_FLAGS_SKB_MODE` (generic XDP).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE` (native XDP in the driver).
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

const XDP_PASS: i32 = 2;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

/// Issue one `bpf(2)` command with `attr` (a `#[repr(C)]` prefix of
/// `union bpf_attr`; the kernel zero-extends shorter attrs).
fn sys_bpf<A>(cmd: libc::c_int, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` value of the size
    // passed; every pointer field inside it was set by the caller to a
    // buffer that outlives this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A as *mut libc::c_void,
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Wrap a new fd returned by the kernel.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = s.as_bytes();
    let l = b.len().min(15);
    n[..l].copy_from_slice(&b[..l]);
    n
}

/// Create an XSKMAP with `entries` slots (one per RX queue index).
pub(crate) fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
    }
    let mut a = Attr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16(MAP_NAME),
        ..Attr::default()
    };
    sys_bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Register AF_XDP socket `xsk` at `queue` in the map.
pub(crate) fn xskmap_set(map: &OwnedFd, queue: u32, xsk: RawFd) -> io::Result<()> {
    let value: u32 = xsk as u32;
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &queue as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// Remove whatever socket is registered at `queue`.
pub(crate) fn xskmap_clear(map: &OwnedFd, queue: u32) -> io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &queue as *const u32 as u64,
        value: 0,
        flags: 0,
    };
    sys_bpf(BPF_MAP_DELETE_ELEM, &mut a).map(drop)
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcode pieces.
const BPF_LDX: u8 = 0x01;
const BPF_ALU64: u8 = 0x07;
const BPF_JMP: u8 = 0x05;
const BPF_MEM: u8 = 0x60;
const BPF_W: u8 = 0x00;
const BPF_H: u8 = 0x08;
const BPF_X: u8 = 0x08;
const BPF_K: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_ADD: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JGT: u8 = 0x20;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_LD_IMM64: u8 = 0x18;
const BPF_PSEUDO_MAP_FD: u8 = 1;

const fn mov64_reg(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}
const fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}
const fn add64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
}
const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
}
const fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_LDX | BPF_MEM | BPF_H, dst, src, off, 0)
}
const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
}
const fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JGT | BPF_X, dst, src, off, 0)
}
const fn call(f: i32) -> Insn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, f)
}
const fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

// struct xdp_md offsets.
const XDP_MD_DATA: i16 = 0;
const XDP_MD_DATA_END: i16 = 4;
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// Build the program for XSKMAP `map_fd`, passing `pass_ethertypes` (host
/// order) to the stack. See the module docs for the listing.
pub(crate) fn program(map_fd: RawFd, pass_ethertypes: &[u16]) -> Vec<Insn> {
    assert!(pass_ethertypes.len() <= MAX_PASS_ETHERTYPES);
    let mut p = vec![mov64_reg(6, 1)];
    let n = pass_ethertypes.len();
    if n > 0 {
        // Instructions after each jump up to `redirect`/`pass`:
        //   redirect block = 6 insns (ldx, ld_imm64 x2, mov, call, exit)
        p.push(ldx_w(2, 6, XDP_MD_DATA));
        p.push(ldx_w(3, 6, XDP_MD_DATA_END));
        p.push(mov64_reg(4, 2));
        p.push(add64_imm(4, 14));
        // Short frame: skip the compares (n of them, plus the ldx).
        p.push(jgt_reg(4, 3, (n + 1) as i16));
        p.push(ldx_h(4, 2, 12));
        for (i, &t) in pass_ethertypes.iter().enumerate() {
            // Loaded in host order from network-order bytes.
            let v = u16::from_ne_bytes(t.to_be_bytes()) as i32;
            // Jump over the remaining compares and the redirect block.
            let skip = (n - 1 - i) + 6;
            p.push(jeq_imm(4, v, skip as i16));
        }
    }
    // redirect:
    p.push(ldx_w(2, 6, XDP_MD_RX_QUEUE_INDEX));
    p.push(insn(BPF_LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd));
    p.push(insn(0, 0, 0, 0, 0));
    p.push(mov64_imm(3, XDP_PASS));
    p.push(call(BPF_FUNC_REDIRECT_MAP));
    p.push(exit());
    if n > 0 {
        // pass: (only reachable with a filter; the verifier rejects dead code)
        p.push(mov64_imm(0, XDP_PASS));
        p.push(exit());
    }
    p
}

/// Load the program; on a verifier error the error carries its log.
pub(crate) fn load_program(insns: &[Insn]) -> io::Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    let license = c"Apache-2.0";
    let mut a = Attr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(PROG_NAME),
        expected_attach_type: BPF_XDP,
        ..Attr::default()
    };
    match sys_bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            // Retry once with the verifier log for the error message.
            let mut log = vec![0u8; 64 * 1024];
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
            match sys_bpf(BPF_PROG_LOAD, &mut a) {
                Ok(fd) => Ok(owned(fd)),
                Err(_) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    let text = String::from_utf8_lossy(&log[..end]);
                    Err(io::Error::new(
                        first.kind(),
                        format!("{first}; verifier: {}", text.trim()),
                    ))
                }
            }
        }
    }
}

/// Attach `prog` to `ifindex` through a BPF link (kernel >= 5.9). The
/// attachment lives exactly as long as the returned fd (and its dups):
/// closing it, or the process dying, detaches the program.
pub(crate) fn link_xdp(prog: &OwnedFd, ifindex: u32, xdp_flags: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 4],
    }
    let mut a = Attr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: xdp_flags,
        ..Attr::default()
    };
    sys_bpf(BPF_LINK_CREATE, &mut a).map(owned)
}

/// Force-detach a link (it stays open but inert).
pub(crate) fn link_detach(link: &OwnedFd) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
    }
    let mut a = Attr {
        link_fd: link.as_raw_fd() as u32,
    };
    sys_bpf(BPF_LINK_DETACH, &mut a).map(drop)
}

/// Pin a BPF object (here: a link) at `path` on bpffs.
pub(crate) fn obj_pin(fd: &OwnedFd, path: &std::ffi::CStr) -> io::Result<()> {
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut a = Attr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Attr::default()
    };
    sys_bpf(BPF_OBJ_PIN, &mut a).map(drop)
}

/// Open a pinned BPF object.
pub(crate) fn obj_get(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut a = Attr {
        pathname: path.as_ptr() as u64,
        ..Attr::default()
    };
    sys_bpf(BPF_OBJ_GET, &mut a).map(owned)
}

/// Name of the loaded program with id `id`.
pub(crate) fn prog_name_by_id(id: u32) -> io::Result<String> {
    #[repr(C)]
    #[derive(Default)]
    struct IdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut a = IdAttr {
        id,
        ..IdAttr::default()
    };
    let fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut a).map(owned)?;
    // struct bpf_prog_info up to and including `name`.
    let mut info = [0u8; 80];
    obj_info(&fd, &mut info)?;
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `buf` (a prefix of the info struct).
pub(crate) fn obj_info(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut a = Attr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insn_encoding_matches_kernel_layout() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // r6 = r1 is 0xbf 0x16 0x0000 0x00000000.
        let i = mov64_reg(6, 1);
        assert_eq!((i.code, i.regs, i.off, i.imm), (0xbf, 0x16, 0, 0));
        // r0 = 2 is 0xb7 0x00 ...; exit is 0x95.
        assert_eq!(mov64_imm(0, 2).code, 0xb7);
        assert_eq!(exit().code, 0x95);
        assert_eq!(call(51).code, 0x85);
        assert_eq!(ldx_w(2, 6, 16), insn(0x61, 2, 6, 16, 0));
        assert_eq!(ldx_h(4, 2, 12).code, 0x69);
    }

    #[test]
    fn filter_jumps_land_on_pass() {
        let types = [0x88cc, 0x86dd, 0x0806];
        let p = program(7, &types);
        let pass = p.len() - 2;
        assert_eq!(p[pass], mov64_imm(0, XDP_PASS));
        let redirect = pass - 6;
        assert_eq!(p[redirect], ldx_w(2, 6, XDP_MD_RX_QUEUE_INDEX));
        for (k, i) in p.iter().enumerate() {
            if i.code == BPF_JMP | BPF_JEQ | BPF_K {
                assert_eq!(k + 1 + i.off as usize, pass, "jeq at {k}");
            }
            if i.code == BPF_JMP | BPF_JGT | BPF_X {
                assert_eq!(k + 1 + i.off as usize, redirect, "jgt at {k}");
            }
        }
        // EtherTypes are compared as loaded from network order.
        assert!(
            p.iter()
                .any(|i| i.imm == u16::from_ne_bytes([0x88, 0xcc]) as i32)
        );
        // Without a filter the program is just the redirect.
        assert_eq!(program(7, &[]).len(), 7);
        assert_eq!(program(7, &[])[2].imm, 7);
    }
}
