//! A tiny packet builder and parser (Ethernet, IPv4/IPv6, TCP/UDP/SCTP/ICMP) for running
//! real packets through the programs with `BPF_PROG_TEST_RUN`, with full checksums so a
//! test can verify what the datapath rewrote.

use std::net::IpAddr;

/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;
/// TCP FIN flag.
pub const TCP_FIN: u8 = 0x01;

/// The L4 part of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP with flags.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// SCTP common header (the CRC is left zero).
    Sctp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP or ICMPv6 echo.
    Echo {
        /// Identifier.
        id: u16,
        /// A reply rather than a request.
        reply: bool,
    },
}

/// What [`parse`] reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub protocol: u8,
    /// Source port (0 without ports).
    pub sport: u16,
    /// Destination port (0 without ports).
    pub dport: u16,
}

const PAYLOAD: &[u8] = b"pipec-probe!";

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn add_bytes(mut sum: u32, b: &[u8]) -> u32 {
    for chunk in b.chunks(2) {
        let w = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(w);
    }
    sum
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut sum = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = add_bytes(sum, &s.octets());
            sum = add_bytes(sum, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum = add_bytes(sum, &s.octets());
            sum = add_bytes(sum, &d.octets());
        }
        _ => {}
    }
    sum + u32::from(proto) + len as u32
}

/// An Ethernet frame carrying `l4` from `src` to `dst` (same family), with valid checksums.
pub fn build(src: IpAddr, dst: IpAddr, l4: L4) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let (proto, mut seg) = match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[4..8].copy_from_slice(&1u32.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = flags;
            h[14..16].copy_from_slice(&65535u16.to_be_bytes());
            (6u8, h)
        }
        L4::Udp { sport, dport } => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[4..6].copy_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
            (17, h)
        }
        L4::Sctp { sport, dport } => {
            let mut h = vec![0u8; 12];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            (132, h)
        }
        L4::Echo { id, reply } => {
            let mut h = vec![0u8; 8];
            h[0] = match (v6, reply) {
                (false, false) => 8,
                (false, true) => 0,
                (true, false) => 128,
                (true, true) => 129,
            };
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h[6..8].copy_from_slice(&1u16.to_be_bytes());
            (if v6 { 58 } else { 1 }, h)
        }
    };
    seg.extend_from_slice(PAYLOAD);
    let csum_off = match proto {
        6 => Some(16),
        17 => Some(6),
        1 => Some(2),
        58 => Some(2),
        _ => None,
    };
    if let Some(off) = csum_off {
        let base = if proto == 1 {
            0
        } else {
            pseudo(src, dst, proto, seg.len())
        };
        let c = !fold(add_bytes(base, &seg));
        let c = if c == 0 && proto == 17 { 0xffff } else { c };
        seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }

    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = !fold(add_bytes(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(seg.len() as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            frame.extend_from_slice(&ip);
        }
        _ => panic!("build: source and destination must be of the same family"),
    }
    frame.extend_from_slice(&seg);
    frame
}

fn l3(frame: &[u8]) -> Option<(IpAddr, IpAddr, u8, usize, usize)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ethertype {
        0x0800 => {
            let ip = frame.get(14..34)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let src: [u8; 4] = ip[12..16].try_into().ok()?;
            let dst: [u8; 4] = ip[16..20].try_into().ok()?;
            Some((
                IpAddr::from(src),
                IpAddr::from(dst),
                ip[9],
                14 + ihl,
                14 + total,
            ))
        }
        0x86dd => {
            let ip = frame.get(14..54)?;
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst), ip[6], 54, 54 + plen))
        }
        _ => None,
    }
}

/// Reads addresses, protocol and ports back from a frame.
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    let (src, dst, protocol, l4, _) = l3(frame)?;
    let (sport, dport) = match protocol {
        6 | 17 | 132 => (
            u16::from_be_bytes([*frame.get(l4)?, *frame.get(l4 + 1)?]),
            u16::from_be_bytes([*frame.get(l4 + 2)?, *frame.get(l4 + 3)?]),
        ),
        _ => (0, 0),
    };
    Some(Parsed {
        src,
        dst,
        protocol,
        sport,
        dport,
    })
}

/// Whether the IPv4 header checksum and the TCP/UDP/ICMP checksum of a frame are right.
pub fn checksums_ok(frame: &[u8]) -> bool {
    let Some((src, dst, proto, l4, end)) = l3(frame) else {
        return false;
    };
    if src.is_ipv4() && fold(add_bytes(0, &frame[14..l4])) != 0xffff {
        return false;
    }
    let Some(seg) = frame.get(l4..end) else {
        return false;
    };
    match proto {
        6 | 17 | 58 => fold(add_bytes(pseudo(src, dst, proto, seg.len()), seg)) == 0xffff,
        1 => fold(add_bytes(0, seg)) == 0xffff,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_have_valid_checksums() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        for l4 in [
            L4::Tcp {
                sport: 1000,
                dport: 80,
                flags: TCP_SYN,
            },
            L4::Udp {
                sport: 1000,
                dport: 53,
            },
            L4::Echo {
                id: 7,
                reply: false,
            },
        ] {
            let f = build(v4("10.0.0.1"), v4("10.0.0.2"), l4);
            assert!(checksums_ok(&f), "{l4:?}");
            let f = build(v4("fd00::1"), v4("fd00::2"), l4);
            assert!(checksums_ok(&f), "{l4:?} v6");
        }
        let f = build(
            v4("10.0.0.1"),
            v4("10.0.0.2"),
            L4::Udp { sport: 1, dport: 2 },
        );
        let p = parse(&f).unwrap();
        assert_eq!((p.sport, p.dport, p.protocol), (1, 2, 17));
    }
}
