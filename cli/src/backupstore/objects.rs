//! Chunk objects: a block of a volume, zstd-compressed, named by the BLAKE3 hash of its
//! uncompressed bytes. The name is the check: a reader decompresses (with a bound) and hashes, and
//! anything else than the named bytes is refused, so a damaged, truncated or swapped object can
//! never be restored as data. The same bytes get the same name, which is the deduplication.

use std::fmt::Write;

/// BLAKE3 of a block's bytes.
pub type Hash = [u8; 32];

/// zstd level: 3 is zstd's default, fast enough to keep up with a network upload on one core.
const LEVEL: i32 = 3;

pub fn hash(b: &[u8]) -> Hash {
    *blake3::hash(b).as_bytes()
}

pub fn hex(h: &Hash) -> String {
    let mut s = String::with_capacity(64);
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses 64 lowercase hex digits.
pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, out) in h.iter_mut().enumerate() {
        let d = &s[2 * i..2 * i + 2];
        if d.bytes().any(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        *out = u8::from_str_radix(d, 16).ok()?;
    }
    Some(h)
}

/// The stored form of a block.
pub fn encode(b: &[u8]) -> Result<Vec<u8>, String> {
    zstd::bulk::compress(b, LEVEL).map_err(|e| format!("zstd: {e}"))
}

/// The block named `h` from its stored form, at most `max` bytes: refused unless it decompresses
/// to exactly the bytes whose hash is `h`.
pub fn decode(h: &Hash, stored: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let b =
        zstd::bulk::decompress(stored, max).map_err(|e| format!("does not decompress ({e})"))?;
    if &hash(&b) != h {
        return Err(format!(
            "content does not match its name (hash {})",
            hex(&hash(&b))
        ));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let block: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let h = hash(&block);
        let stored = encode(&block).unwrap();
        assert!(stored.len() < block.len());
        assert_eq!(decode(&h, &stored, block.len()).unwrap(), block);
        assert_eq!(parse_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hex(&hex(&h).to_uppercase()), None);
        // Over the bound, another block's bytes, a flipped byte, a truncation: all refused.
        assert!(decode(&h, &stored, block.len() - 1).is_err());
        let other = encode(&block[1..]).unwrap();
        assert!(decode(&h, &other, block.len()).is_err());
        let mut bad = stored.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        assert!(decode(&h, &bad, block.len()).is_err());
        assert!(decode(&h, &stored[..stored.len() - 1], block.len()).is_err());
    }
}
