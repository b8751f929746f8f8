//! TAP port against the real host stack, inside a namespace of its own:
//! address/MAC/link setup, ARP and UDP from the host out through the port,
//! and frames written by the port delivered to a host socket.

mod io_common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use datapath::io::tap::{TapConfig, TapPort};
use datapath::io::{Batch, Port, Umem, UmemConfig, netlink};
use io_common::{Netns, ip, skip_without_netns, tag};

const TAP_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const TAP_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

/// Receive frames until `want` matches one (returns it) or 3 s pass.
fn rx_until(port: &mut TapPort, umem: &mut Umem, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut batch = Batch::new();
    while Instant::now() < deadline {
        port.rx_burst(umem, &mut batch);
        let hit = batch
            .frames()
            .iter()
            .map(|f| umem.data(f))
            .find(|d| want(d))
            .map(<[u8]>::to_vec);
        umem.free_batch(&mut batch);
        if hit.is_some() {
            return hit;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn arp_reply() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&PEER_IP.octets());
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&TAP_IP.octets());
    f
}

/// Ethernet + IPv4 + UDP (checksum 0, allowed for IPv4 by RFC 768).
fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let tot = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip.extend_from_slice(&PEER_IP.octets());
    ip.extend_from_slice(&TAP_IP.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn tx_one(port: &mut TapPort, umem: &mut Umem, bytes: &[u8]) {
    let mut frame = umem.alloc().unwrap();
    umem.set_len(&mut frame, bytes.len()).unwrap();
    umem.data_mut(&frame).copy_from_slice(bytes);
    let mut batch = Batch::new();
    batch.push(frame).unwrap();
    assert_eq!(port.tx_burst(umem, &mut batch), 1);
    assert!(batch.is_empty());
}

#[test]
fn tap_port_talks_to_the_host_stack() {
    if skip_without_netns() {
        return;
    }
    let t = tag();
    let ns_name = format!("fp-{t}-tap");
    let _ns = Netns::new(std::slice::from_ref(&ns_name));
    let name = format!("fpt{t}");
    let ns = ns_name.clone();
    let dev = name.clone();
    std::thread::spawn(move || {
        netlink::enter_netns(&ns).unwrap();
        let mut umem = Umem::new(UmemConfig {
            frame_count: 256,
            frame_size: 2048,
        })
        .unwrap();
        let mut port = TapPort::open(&TapConfig {
            name: dev.clone(),
            mac: Some(TAP_MAC),
            ipv4: Some((TAP_IP, 24)),
            mtu: Some(1500),
        })
        .unwrap();
        assert_eq!(port.name(), dev);

        // Configured as asked: address, MAC, link up.
        let addr = ip(&["-n", &ns, "-br", "addr", "show", "dev", &dev]);
        assert!(addr.contains("10.78.0.1/24"), "{addr}");
        let link = ip(&["-n", &ns, "-br", "link", "show", "dev", &dev]);
        assert!(link.contains("02:00:00:00:00:01"), "{link}");
        // Administratively up (a TAP's operstate stays UNKNOWN).
        let flags = link.split(['<', '>']).nth(1).unwrap_or_default();
        assert!(flags.split(',').any(|f| f == "UP"), "{link}");

        // Host -> port: the stack ARPs for the peer first.
        let host = UdpSocket::bind((TAP_IP, 0)).unwrap();
        let host_port = host.local_addr().unwrap().port();
        host.send_to(b"hello from the host", (PEER_IP, 5555))
            .unwrap();
        let arp = rx_until(&mut port, &mut umem, |d| {
            d.len() >= 42 && d[12..14] == [0x08, 0x06] && d[20..22] == [0, 1]
        })
        .expect("no ARP request from the host");
        assert_eq!(&arp[6..12], &TAP_MAC);
        assert_eq!(&arp[38..42], &PEER_IP.octets());

        // Port -> host: answer the ARP; the queued datagram follows.
        tx_one(&mut port, &mut umem, &arp_reply());
        let udp = rx_until(&mut port, &mut umem, |d| {
            d.len() >= 42 && d[12..14] == [0x08, 0x00] && d[23] == 17
        })
        .expect("queued UDP datagram never came out of the TAP");
        assert_eq!(&udp[0..6], &PEER_MAC);
        assert_eq!(&udp[36..38], &5555u16.to_be_bytes());
        assert_eq!(&udp[42..], b"hello from the host");

        // Port -> host: a datagram written to the TAP reaches the socket.
        tx_one(
            &mut port,
            &mut umem,
            &udp_frame(5555, host_port, b"hello from flowpath"),
        );
        host.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = host.recv_from(&mut buf).expect("host socket got nothing");
        assert_eq!(&buf[..n], b"hello from flowpath");
        assert_eq!(from, (PEER_IP, 5555).into());

        let st = port.stats();
        assert!(
            st.rx_packets >= 2 && st.tx_packets == 2 && st.errors == 0,
            "{st:?}"
        );
        assert_eq!(umem.free_count(), 256, "every chunk back");
        drop(port);
        // Not persistent: the device goes with the port.
        let gone = Command::new("ip")
            .args(["-n", &ns, "link", "show", "dev", &dev])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "TAP device outlived its port");
    })
    .join()
    .unwrap();
}
