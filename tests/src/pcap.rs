//! A tiny pcap (libpcap classic format) reader that can resume where it
//! stopped, so the harness can read "what did this port send since last time"
//! from the `tx_pcap` files OVS's dummy netdevs append to.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Reads a pcap file incrementally.
#[derive(Debug)]
pub struct PcapTail {
    path: PathBuf,
    /// Byte offset of the next unread record (0 = global header not read).
    offset: u64,
    little_endian: bool,
}

/// Errors are reported as strings: this is test support.
pub type Result<T> = std::result::Result<T, String>;

impl PcapTail {
    /// A reader for `path`; the file may not exist yet.
    pub fn new(path: &Path) -> Self {
        PcapTail {
            path: path.to_path_buf(),
            offset: 0,
            little_endian: true,
        }
    }

    /// All complete records appended since the last call. A partially
    /// written trailing record is left for the next call.
    pub fn read_new(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(self.offset))
            .and_then(|_| f.read_to_end(&mut buf))
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut pos = 0usize;
        if self.offset == 0 {
            if buf.len() < 24 {
                return Ok(vec![]);
            }
            self.little_endian = match buf[0..4] {
                [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
                [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
                _ => return Err(format!("{}: not a pcap file", self.path.display())),
            };
            pos = 24;
        }
        let mut out = Vec::new();
        while buf.len() >= pos + 16 {
            let b = [buf[pos + 8], buf[pos + 9], buf[pos + 10], buf[pos + 11]];
            let caplen = if self.little_endian {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            } as usize;
            if buf.len() < pos + 16 + caplen {
                break;
            }
            out.push(buf[pos + 16..pos + 16 + caplen].to_vec());
            pos += 16 + caplen;
        }
        self.offset += pos as u64;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_incrementally() {
        let path = std::env::temp_dir().join(format!("pcap-tail-{}.pcap", std::process::id()));
        let mut data = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&1500u32.to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes());
        let rec = |d: &[u8]| {
            let mut r = vec![0u8; 8];
            r.extend_from_slice(&(d.len() as u32).to_le_bytes());
            r.extend_from_slice(&(d.len() as u32).to_le_bytes());
            r.extend_from_slice(d);
            r
        };
        data.extend(rec(&[1, 2, 3]));
        let partial = rec(&[4, 5]);
        data.extend_from_slice(&partial[..10]);
        std::fs::write(&path, &data).unwrap();
        let mut t = PcapTail::new(&path);
        assert_eq!(t.read_new().unwrap(), vec![vec![1, 2, 3]]);
        data.extend_from_slice(&partial[10..]);
        std::fs::write(&path, &data).unwrap();
        assert_eq!(t.read_new().unwrap(), vec![vec![4, 5]]);
        assert!(t.read_new().unwrap().is_empty());
        std::fs::remove_file(&path).unwrap();
    }
}
