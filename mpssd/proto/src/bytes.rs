//! Console bytes on the wire: a JSON string in standard base64 (RFC 4648
//! §4, with padding), since console output is not always UTF-8.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Raw bytes, carried as base64.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes(v.to_vec())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// `bytes` in base64.
#[must_use]
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    let sym = |n: u32, i: u32| ALPHABET[(n >> (18 - 6 * i)) as usize & 63];
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend_from_slice(&[sym(n, 0), sym(n, 1), sym(n, 2), sym(n, 3)]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[sym(n, 0), sym(n, 1), b'=', b'=']);
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend_from_slice(&[sym(n, 0), sym(n, 1), sym(n, 2), b'=']);
        }
        _ => {}
    }
    // Only ALPHABET's ASCII and '=' were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Why a base64 string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    #[error("base64 length {0} is not a multiple of 4")]
    Length(usize),
    #[error("not a base64 character at {0}")]
    Char(usize),
}

/// Each byte's 6-bit value, or `INVALID`.
const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};
const INVALID: u8 = 0xff;

fn value(c: u8) -> Option<u32> {
    match DECODE[usize::from(c)] {
        INVALID => None,
        v => Some(u32::from(v)),
    }
}

/// Decodes standard base64 with padding.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, Base64Error> {
    decode_base64_bytes(s.as_bytes())
}

/// [`decode_base64`] of bytes that may not even be text.
pub(crate) fn decode_base64_bytes(s: &[u8]) -> Result<Vec<u8>, Base64Error> {
    if s.len() % 4 != 0 {
        return Err(Base64Error::Length(s.len()));
    }
    let quads = s.len() / 4;
    // Every quad but the last has no padding: eight characters at a time
    // into six bytes, checked together (a valid value has its top bit
    // clear, INVALID has it set).
    let body = quads.saturating_sub(1);
    let mut out = vec![0u8; body * 3];
    let pairs = body / 2;
    for (p, (src, dst)) in s[..pairs * 8]
        .chunks_exact(8)
        .zip(out.chunks_exact_mut(6))
        .enumerate()
    {
        let v: [u8; 8] = std::array::from_fn(|i| DECODE[usize::from(src[i])]);
        if v.iter().fold(0, |a, &x| a | x) & 0x80 != 0 {
            let i = v.iter().position(|&x| x == INVALID).unwrap_or(0);
            return Err(Base64Error::Char(p * 8 + i));
        }
        let n = v.iter().fold(0u64, |n, &x| (n << 6) | u64::from(x));
        dst.copy_from_slice(&n.to_be_bytes()[2..]);
    }
    for q in pairs * 2..body {
        let quad = &s[q * 4..q * 4 + 4];
        let v = [quad[0], quad[1], quad[2], quad[3]].map(|c| DECODE[usize::from(c)]);
        if let Some(i) = v.iter().position(|&x| x == INVALID) {
            return Err(Base64Error::Char(q * 4 + i));
        }
        let n = (u32::from(v[0]) << 18) | (u32::from(v[1]) << 12) | (u32::from(v[2]) << 6) | u32::from(v[3]);
        out[q * 3..q * 3 + 3].copy_from_slice(&n.to_be_bytes()[1..]);
    }
    for (q, quad) in s[body * 4..].chunks(4).enumerate() {
        let q = body + q;
        let last = q + 1 == quads;
        let pad = if last {
            quad.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return Err(Base64Error::Char(q * 4 + 1));
        }
        let mut n = 0u32;
        for (i, &c) in quad.iter().enumerate() {
            let v = if i >= 4 - pad {
                0
            } else {
                value(c).ok_or(Base64Error::Char(q * 4 + i))?
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&encode_base64(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        /// Decodes the string where the deserializer has it (a console
        /// frame's 16 KiB are not copied into a `String` first).
        struct Base64;
        impl serde::de::Visitor<'_> for Base64 {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Bytes, E> {
                decode_base64(s).map(Bytes).map_err(E::custom)
            }
        }
        de.deserialize_str(Base64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(raw.as_bytes()), enc);
            assert_eq!(decode_base64(enc).unwrap(), raw.as_bytes());
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        for n in 0..all.len() {
            assert_eq!(decode_base64(&encode_base64(&all[..n])).unwrap(), &all[..n]);
        }
    }

    #[test]
    fn bad_base64_is_refused() {
        assert_eq!(decode_base64("abc"), Err(Base64Error::Length(3)));
        assert_eq!(decode_base64("ab!d"), Err(Base64Error::Char(2)));
        assert_eq!(decode_base64("a==="), Err(Base64Error::Char(1)));
        assert_eq!(decode_base64("ab==abcd"), Err(Base64Error::Char(2)));
        assert_eq!(decode_base64("AAAAAAA!AAAA"), Err(Base64Error::Char(7)));
        assert_eq!(decode_base64("AAAAAAAAAA!A"), Err(Base64Error::Char(10)));
    }

    /// Whichever way the decoder takes a character (eight at a time, a
    /// quad alone, the padded last quad), a bad one is named where it is.
    #[test]
    fn a_bad_character_is_found_wherever_it_is() {
        for quads in 1..8 {
            let good = encode_base64(&vec![0xa5; quads * 3 - 1]);
            let data = good.trim_end_matches('=').len();
            for at in 0..data {
                // A `=` is padding only in the last quad.
                let last_quad = at >= good.len() - 4;
                for bad in [b'!', b'\n', b'*', b'='] {
                    if bad == b'=' && last_quad {
                        continue;
                    }
                    let mut s = good.clone().into_bytes();
                    s[at] = bad;
                    let s = String::from_utf8(s).unwrap();
                    assert_eq!(decode_base64(&s), Err(Base64Error::Char(at)), "{s:?}");
                }
            }
        }
    }
}
