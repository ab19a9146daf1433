//! A cache key for long, random-looking request values (a ~1 KB sealed
//! session cookie, a bearer token): hashed by its length and its last
//! [`TAIL`] bytes, compared eight bytes at a time.
//!
//! Hashing all of a 1.2 KB cookie (foldhash's 64×64→128-bit multiplies,
//! which wasm32 does not have) and comparing it with wasi-libc's bytewise
//! `memcmp` cost ~12k instructions per request in V8. A sealed value ends
//! with ciphertext and an AEAD tag, a JWT with its signature: the tail
//! spreads the keys as well as the whole would. The caches only ever hold
//! values that opened or were accepted, so nobody can fill one bucket; a
//! lookup still compares the whole value.

use std::hash::{Hash, Hasher};

/// Bytes at the end of the value that are hashed.
const TAIL: usize = 32;

#[derive(Clone, Debug)]
pub struct LongKey(pub String);

impl Hash for LongKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let b = self.0.as_bytes();
        state.write_usize(b.len());
        state.write(&b[b.len().saturating_sub(TAIL)..]);
    }
}

impl PartialEq for LongKey {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for LongKey {}

/// `a == b`, eight bytes at a time.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest = wa
        .remainder()
        .iter()
        .zip(wb.remainder())
        .all(|(x, y)| x == y);
    rest && wa.zip(wb).all(|(x, y)| {
        matches!(
            (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)),
            (Ok(x), Ok(y)) if u64::from_ne_bytes(x) == u64::from_ne_bytes(y)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn equal_only_when_every_byte_is() {
        let base: String = (0..1203)
            .map(|i| char::from(b'A' + (i % 26) as u8))
            .collect();
        let k = LongKey(base.clone());
        assert_eq!(k, LongKey(base.clone()));
        for i in [0, 7, 8, 600, 1194, 1195, 1202] {
            let mut other = base.clone().into_bytes();
            other[i] ^= 1;
            let other = LongKey(String::from_utf8(other).unwrap());
            assert_ne!(k, other, "byte {i}");
        }
        assert_ne!(k, LongKey(base[..1202].to_string()));
        assert_eq!(LongKey(String::new()), LongKey(String::new()));
        assert_ne!(LongKey("abc".into()), LongKey("abd".into()));
        // Same tail, different heads: different keys in one map.
        let mut m = HashMap::new();
        m.insert(LongKey(format!("x{base}")), 1);
        m.insert(LongKey(format!("y{base}")), 2);
        assert_eq!(m.get(&LongKey(format!("x{base}"))), Some(&1));
        assert_eq!(m.get(&LongKey(format!("y{base}"))), Some(&2));
        assert_eq!(m.get(&LongKey(format!("z{base}"))), None);
    }
}
