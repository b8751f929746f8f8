//! Minimal pcap (libpcap classic format, microsecond timestamps, Ethernet
//! link type) writer and reader, for captures and test fixtures.

use std::io::{self, Read, Write};

const MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;

/// Writes packets to a pcap stream.
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Start a pcap stream (writes the global header).
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// Append one packet with timestamp `ts_us` (microseconds).
    pub fn write(&mut self, ts_us: u64, pkt: &[u8]) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(pkt.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(pkt.len() as u32).to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(pkt)
    }

    /// Flush and return the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Read every packet of a pcap stream (either byte order, micro- or
/// nanosecond magic). Truncated trailing records are ignored.
pub fn read_all(mut r: impl Read) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)?;
    if buf.len() < 24 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "pcap: short global header",
        ));
    }
    let magic = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "pcap: bad magic",
            ));
        }
    };
    let rd = |b: &[u8]| -> u32 {
        let a: [u8; 4] = b.try_into().unwrap_or_default();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= buf.len() {
        let incl = rd(&buf[off + 8..off + 12]) as usize;
        off += 16;
        if off + incl > buf.len() {
            break;
        }
        out.push(buf[off..off + incl].to_vec());
        off += incl;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(1_500_000, &[1, 2, 3]).unwrap();
        w.write(2, &[9; 60]).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 3 + 16 + 60);
        let pkts = read_all(&bytes[..]).unwrap();
        assert_eq!(pkts, vec![vec![1, 2, 3], vec![9; 60]]);
        assert!(read_all(&bytes[..10]).is_err());
    }
}
