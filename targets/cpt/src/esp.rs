//! A software model of what the CPT does with an SA: ESP tunnel-mode packets sealed and
//! opened with AES-GCM (RFC 4106) from the SA's key and salt, with or without ESN. The
//! oracle tests check these packets against tshark and scapy, which are independent ESP
//! implementations, in both directions.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};

use crate::key::AeadKey;

/// ESP next-header value for an IPv4 inner packet (tunnel mode).
pub const NEXT_IPV4: u8 = 4;

/// Why a packet could not be opened; never carries key bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum EspError {
    /// Too short or a bad trailer.
    Malformed,
    /// The ICV does not verify (wrong key, salt, SPI or sequence number).
    Auth,
    /// The key is not 16+4 bytes.
    KeyLength,
}

fn cipher(key: &AeadKey) -> Result<Aes128Gcm, EspError> {
    Aes128Gcm::new_from_slice(key.cipher_key()).map_err(|_| EspError::KeyLength)
}

fn nonce(key: &AeadKey, iv: &[u8; 8]) -> [u8; 12] {
    let mut n = [0; 12];
    n[..4].copy_from_slice(&key.salt());
    n[4..].copy_from_slice(iv);
    n
}

/// RFC 4106 §5 AAD: SPI and the 32-bit sequence number, or with ESN SPI, high and low bits.
fn aad(spi: u32, seq: u64, esn: bool) -> Vec<u8> {
    let mut a = spi.to_be_bytes().to_vec();
    if esn {
        a.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
    }
    a.extend_from_slice(&(seq as u32).to_be_bytes());
    a
}

/// The ESP payload (SPI … ICV) carrying `inner` (an IPv4 packet), with the IV given.
pub fn seal(
    key: &AeadKey,
    spi: u32,
    seq: u64,
    esn: bool,
    iv: [u8; 8],
    inner: &[u8],
) -> Result<Vec<u8>, EspError> {
    let mut plain = inner.to_vec();
    // Pad to a 4-byte boundary including the two trailer bytes, with 1, 2, 3 … (RFC 4303).
    let pad = (4 - (inner.len() + 2) % 4) % 4;
    plain.extend((1..=pad as u8).collect::<Vec<u8>>());
    plain.push(pad as u8);
    plain.push(NEXT_IPV4);
    let ct = cipher(key)?
        .encrypt(
            Nonce::from_slice(&nonce(key, &iv)),
            Payload {
                msg: &plain,
                aad: &aad(spi, seq, esn),
            },
        )
        .map_err(|_| EspError::Auth)?;
    let mut out = spi.to_be_bytes().to_vec();
    out.extend_from_slice(&(seq as u32).to_be_bytes());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens an ESP payload; `seq_hi` is the ESN high half the receiver assumes.
pub fn open(key: &AeadKey, esp: &[u8], esn: bool, seq_hi: u32) -> Result<Vec<u8>, EspError> {
    if esp.len() < 8 + 8 + 16 + 2 {
        return Err(EspError::Malformed);
    }
    let spi = u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]]);
    let lo = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
    let mut iv = [0; 8];
    iv.copy_from_slice(&esp[8..16]);
    let seq = (u64::from(seq_hi) << 32) | u64::from(lo);
    let plain = cipher(key)?
        .decrypt(
            Nonce::from_slice(&nonce(key, &iv)),
            Payload {
                msg: &esp[16..],
                aad: &aad(spi, seq, esn),
            },
        )
        .map_err(|_| EspError::Auth)?;
    let n = plain.len();
    let pad = usize::from(plain[n - 2]);
    if pad + 2 > n {
        return Err(EspError::Malformed);
    }
    Ok(plain[..n - 2 - pad].to_vec())
}

/// An IPv4 header (no options) around `payload` with protocol `proto`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv4/UDP packet with `data` (UDP checksum 0, allowed for IPv4).
pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    ipv4(src, dst, 17, &u)
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A pcap file (LINKTYPE_RAW, IPv4) of the packets, for tshark.
pub fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for p in packets {
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}
