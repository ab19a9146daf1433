//! RSA signature verification for JWS `RS*` and `PS*` (RFC 7518 sections
//! 3.3 and 3.5): the public-key operation RSAVP1 and the two encodings
//! EMSA-PKCS1-v1_5 and EMSA-PSS (RFC 8017 sections 5.2.2, 8.2.2, 9.1.2,
//! 9.2).
//!
//! Why not `rsa`'s own verification: inside the wasm VM an RS256 check
//! cost ~320-400 µs of CPU (V8, `bench/verify`), nearly all of it the
//! exponentiation (base64, JSON and SHA-256 together: ~5 µs). `rsa` 0.10
//! exponentiates with crypto-bigint's constant-time fixed-window ladder,
//! which for `e = 65537` does ~35 Montgomery products where
//! square-and-multiply needs 17 (plus 2 to convert), and crypto-bigint
//! picks 64-bit limbs on wasm32, where a 64x64->128 product has no
//! instruction. Here: square-and-multiply (variable time: the key, the
//! signature and the signed data are all public) with a dedicated
//! squaring, on 32-bit limbs (one `i64.mul` per limb product), two rows
//! at a time. A whole RS256 `jwt::verify` (2048-bit key): ~400 -> ~113 µs
//! of CPU in V8, but ~60 -> ~85 µs natively, where 64-bit limbs would win
//! (the filter only runs in wasm, and the unit tests run this same code
//! natively). `rsa` still parses and validates the keys (`keys.rs`); the
//! tests check this module against it. Measured and slower in V8:
//! `ring` 0.17 (built for wasm32-wasip1 with clang; ~350 µs, key parsed
//! per check by its API), `num-bigint`'s `modpow` (~900 µs), crypto-bigint
//! with 32-bit limbs (`--cfg cpubits="32"`) and crypto-bigint's
//! `BoxedMontyForm` square-and-multiply (~170-250 µs).

use sha2::Digest;

/// A public key ready for [`RsaModulus::public_op`]: the modulus in
/// little-endian 32-bit limbs and the Montgomery constants, computed once.
#[derive(Clone)]
pub(crate) struct RsaModulus {
    /// `n`, least significant limb first.
    n: Vec<u32>,
    /// `-n^-1 mod 2^32`.
    n0: u32,
    /// `R^2 mod n`, `R = 2^(32 * n.len())`.
    rr: Vec<u32>,
    /// The public exponent.
    e: u64,
    /// The modulus length in bytes (the length of a signature).
    bytes: usize,
    /// The modulus length in bits.
    bits: usize,
}

impl RsaModulus {
    /// `n` and `e` big-endian, without leading zero bytes. `None` unless
    /// `n` is odd and above 1 and `e` is odd, at least 3, at most 64 bits.
    pub(crate) fn new(n_be: &[u8], e_be: &[u8]) -> Option<RsaModulus> {
        let n_be = strip_zeros(n_be);
        let e_be = strip_zeros(e_be);
        if n_be.is_empty() || e_be.is_empty() || e_be.len() > 8 {
            return None;
        }
        let e = e_be.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        let n = limbs_from_be(n_be, n_be.len().div_ceil(4));
        let low = *n.first()?;
        if low & 1 == 0 || e < 3 || e & 1 == 0 || (n.len() == 1 && low == 1) {
            return None;
        }
        // n0 = -n^-1 mod 2^32 by Newton's iteration: each step doubles
        // the number of correct low bits (n * n == 1 mod 8 for odd n).
        let mut inv = low;
        for _ in 0..4 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(low.wrapping_mul(inv)));
        }
        let n0 = inv.wrapping_neg();
        let bits = 8 * n_be.len() - n_be.first().map_or(0, |b| b.leading_zeros() as usize);
        let mut key = RsaModulus {
            bytes: n_be.len(),
            bits,
            n,
            n0,
            rr: Vec::new(),
            e,
        };
        key.rr = key.r_squared();
        Some(key)
    }

    /// `R^2 mod n`. `R = 2^(32k)`; write `32k = j * 2^m` with `j` odd.
    /// `2^j * R mod n` by doubling 1 (`32k + j` times, reducing each time),
    /// then `m` Montgomery squarings (`2^a * R` squared is `2^(2a) * R`)
    /// give `2^(32k) * R = R^2`: about half the doublings of doubling all
    /// the way.
    fn r_squared(&self) -> Vec<u32> {
        let k = self.n.len();
        let m = (32 * k).trailing_zeros();
        let j = (32 * k) >> m;
        let mut x = vec![0u32; k];
        if let Some(low) = x.first_mut() {
            *low = 1;
        }
        for _ in 0..32 * k + j {
            let carry = shl1(&mut x);
            if carry || !less(&x, &self.n) {
                sub_assign(&mut x, &self.n);
            }
        }
        let mut wide = vec![0u32; 2 * k];
        for _ in 0..m {
            x = self.mont_sqr(&x, &mut wide);
        }
        x
    }

    /// RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 section 8.2.2) of `sig` over
    /// `message` hashed with `D`: the signature, raised to `e`, must be
    /// exactly `00 01 FF..FF 00 || DigestInfo || H` (the DigestInfo with
    /// the NULL parameters, the one encoding RFC 8017 produces).
    pub(crate) fn verify_pkcs1v15<D: Digest + DigestInfo>(
        &self,
        message: &[u8],
        sig: &[u8],
    ) -> bool {
        let Some(em) = self.public_op(sig) else {
            return false;
        };
        let hash = D::digest(message);
        let t_len = D::PREFIX.len() + hash.len();
        // At least 8 bytes of FF padding (RFC 8017 section 9.2 step 3).
        let Some(ps_len) = self.bytes.checked_sub(t_len + 3).filter(|&l| l >= 8) else {
            return false;
        };
        let mut expected = Vec::with_capacity(self.bytes);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + ps_len, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(D::PREFIX);
        expected.extend_from_slice(&hash);
        em == expected
    }

    /// RSASSA-PSS-VERIFY (RFC 8017 section 9.1.2, EMSA-PSS with MGF1 of
    /// the same hash) of `sig` over `message` hashed with `D`, with a salt
    /// as long as the hash, as RFC 7518 section 3.5 requires.
    pub(crate) fn verify_pss<D: Digest>(&self, message: &[u8], sig: &[u8]) -> bool {
        let Some(out) = self.public_op(sig) else {
            return false;
        };
        // EM is emLen = ceil((modBits - 1) / 8) bytes; the operation's
        // output has one byte more when modBits - 1 is a multiple of 8,
        // and that byte must be zero (I2OSP, 8.1.2 step 2c).
        let em_bits = self.bits.saturating_sub(1);
        let em_len = em_bits.div_ceil(8);
        let Some((extra, em)) = out.split_at_checked(out.len().saturating_sub(em_len)) else {
            return false;
        };
        if extra.iter().any(|&b| b != 0) {
            return false;
        }
        let m_hash = D::digest(message);
        let h_len = m_hash.len();
        let s_len = h_len;
        // 9.1.2 steps 3 to 5.
        if em_len < h_len + s_len + 2 || em.last() != Some(&0xbc) {
            return false;
        }
        let db_len = em_len - h_len - 1;
        let (Some(masked_db), Some(h)) = (em.get(..db_len), em.get(db_len..em_len - 1)) else {
            return false;
        };
        // Step 6: the bits above emBits are zero.
        let top_mask = 0xffu8 >> (8 * em_len - em_bits);
        if masked_db.first().is_some_and(|&b| b & !top_mask != 0) {
            return false;
        }
        // Steps 7 to 9: DB = maskedDB xor MGF1(H), top bits cleared.
        let mut db = masked_db.to_vec();
        for (counter, chunk) in (0u32..).zip(db.chunks_mut(h_len)) {
            let mask = D::new()
                .chain_update(h)
                .chain_update(counter.to_be_bytes())
                .finalize();
            for (d, m) in chunk.iter_mut().zip(mask.iter()) {
                *d ^= m;
            }
        }
        if let Some(first) = db.first_mut() {
            *first &= top_mask;
        }
        // Step 10: DB = 00..00 || 01 || salt.
        let ps_len = db_len - s_len - 1;
        let (Some(ps), Some(&one), Some(salt)) =
            (db.get(..ps_len), db.get(ps_len), db.get(ps_len + 1..))
        else {
            return false;
        };
        if one != 0x01 || ps.iter().any(|&b| b != 0) {
            return false;
        }
        // Steps 12 to 14: H == Hash(00 x 8 || mHash || salt).
        let h2 = D::new()
            .chain_update([0u8; 8])
            .chain_update(&m_hash)
            .chain_update(salt)
            .finalize();
        h2.as_slice() == h
    }

    /// RSAVP1: `s^e mod n` as big-endian bytes of the modulus length, or
    /// `None` if `sig` is not exactly that long or is not below `n`
    /// (RFC 8017 sections 8.2.2 step 1 and 5.2.2 step 1).
    fn public_op(&self, sig: &[u8]) -> Option<Vec<u8>> {
        if sig.len() != self.bytes {
            return None;
        }
        let k = self.n.len();
        let s = limbs_from_be(sig, k);
        if !less(&s, &self.n) {
            return None;
        }
        let mut wide = vec![0u32; 2 * k];
        // Into Montgomery form: s * R^2 / R = s * R.
        let base = self.mont_mul(&s, &self.rr, &mut wide);
        let mut acc = base.clone();
        // Left to right over the exponent's bits below the top one.
        let bits = 64 - self.e.leading_zeros();
        for i in (0..bits.saturating_sub(1)).rev() {
            acc = self.mont_sqr(&acc, &mut wide);
            if (self.e >> i) & 1 == 1 {
                acc = self.mont_mul(&acc, &base, &mut wide);
            }
        }
        // Out of Montgomery form: acc * 1 / R.
        let mut one = vec![0u32; k];
        *one.first_mut()? = 1;
        let m = self.mont_mul(&acc, &one, &mut wide);
        Some(be_from_limbs(&m, self.bytes))
    }

    /// `a * b / R mod n`, for `a, b < n`.
    fn mont_mul(&self, a: &[u32], b: &[u32], wide: &mut [u32]) -> Vec<u32> {
        wide.fill(0);
        for (i, &bi) in b.iter().enumerate() {
            let mut c = 0u64;
            if let Some(row) = wide.get_mut(i..) {
                for (t, &aj) in row.iter_mut().zip(a) {
                    let v = u64::from(*t) + u64::from(aj) * u64::from(bi) + c;
                    *t = v as u32;
                    c = v >> 32;
                }
                if let Some(t) = row.get_mut(a.len()) {
                    *t = c as u32;
                }
            }
        }
        self.redc(wide)
    }

    /// `a * a / R mod n`, for `a < n` (`k` limbs; `wide` has `2k`): the
    /// products `a_i * a_j` with `i < j` once, doubled, plus the squares
    /// `a_i^2`. Rows go two at a time (rows `i` and `i + 1` share each
    /// load and store of `t`), each with its own carry: ~25% faster in V8
    /// than one row at a time. The indexing here and in `redc` stays in
    /// bounds by construction: operands always have `k` limbs (the
    /// modulus's) and `wide` `2k`, whatever the signature.
    fn mont_sqr(&self, a: &[u32], wide: &mut [u32]) -> Vec<u32> {
        let k = a.len();
        let t = &mut wide[..2 * k];
        t.fill(0);
        let mut i = 0;
        while i + 3 <= k {
            let (x0, x1) = (u64::from(a[i]), u64::from(a[i + 1]));
            let v = u64::from(t[2 * i + 1]) + x0 * u64::from(a[i + 1]);
            t[2 * i + 1] = v as u32;
            let v = u64::from(t[2 * i + 2]) + x0 * u64::from(a[i + 2]) + (v >> 32);
            t[2 * i + 2] = v as u32;
            let mut c0 = v >> 32;
            let mut c1 = 0u64;
            let row = &mut t[2 * i + 3..i + k];
            for ((w, &aj), &ajm1) in row.iter_mut().zip(&a[i + 3..]).zip(&a[i + 2..k - 1]) {
                let v = u64::from(*w) + x0 * u64::from(aj) + c0;
                c0 = v >> 32;
                let v = (v & 0xffff_ffff) + x1 * u64::from(ajm1) + c1;
                *w = v as u32;
                c1 = v >> 32;
            }
            let v = c0 + x1 * u64::from(a[k - 1]) + c1;
            t[i + k] = v as u32;
            t[i + k + 1] = (v >> 32) as u32;
            i += 2;
        }
        while i + 1 < k {
            let x = u64::from(a[i]);
            let mut c = 0u64;
            for (w, &aj) in t[2 * i + 1..i + k].iter_mut().zip(&a[i + 1..]) {
                let v = u64::from(*w) + x * u64::from(aj) + c;
                *w = v as u32;
                c = v >> 32;
            }
            t[i + k] = c as u32;
            i += 1;
        }
        shl1(t);
        let mut c = 0u64;
        for (pair, &ai) in t.chunks_exact_mut(2).zip(a) {
            let sq = u64::from(ai) * u64::from(ai);
            if let [lo, hi] = pair {
                let v = u64::from(*lo) + (sq & 0xffff_ffff) + c;
                *lo = v as u32;
                let v = u64::from(*hi) + (sq >> 32) + (v >> 32);
                *hi = v as u32;
                c = v >> 32;
            }
        }
        self.redc(t)
    }

    /// Montgomery reduction of `t < n * R` (`2k` limbs): `t / R mod n`.
    /// For each low limb `t_i` in turn, adding `m * n` with
    /// `m = t_i * -n^-1 mod 2^32` zeroes it; two limbs at a time as in
    /// [`mont_sqr`](Self::mont_sqr) (`m_(i+1)` is known once row `i` has
    /// reached limb `i + 1`).
    fn redc(&self, t: &mut [u32]) -> Vec<u32> {
        let k = self.n.len();
        let n = &self.n[..k];
        let t = &mut t[..2 * k];
        let n0 = self.n0;
        let mut top = 0u64;
        let mut i = 0;
        while i + 1 < k {
            let m0 = t[i].wrapping_mul(n0);
            let v = u64::from(t[i]) + u64::from(m0) * u64::from(n[0]);
            let mut c0 = v >> 32;
            let v = u64::from(t[i + 1]) + u64::from(m0) * u64::from(n[1]) + c0;
            c0 = v >> 32;
            let t1 = v as u32;
            let m1 = t1.wrapping_mul(n0);
            let v = u64::from(t1) + u64::from(m1) * u64::from(n[0]);
            let mut c1 = v >> 32;
            let row = &mut t[i + 2..i + k];
            for ((w, &nj), &njm1) in row.iter_mut().zip(&n[2..]).zip(&n[1..k - 1]) {
                let v = u64::from(*w) + u64::from(m0) * u64::from(nj) + c0;
                c0 = v >> 32;
                let v = (v & 0xffff_ffff) + u64::from(m1) * u64::from(njm1) + c1;
                *w = v as u32;
                c1 = v >> 32;
            }
            let va = u64::from(t[i + k]) + c0 + top;
            let vb = (va & 0xffff_ffff) + u64::from(m1) * u64::from(n[k - 1]) + c1;
            t[i + k] = vb as u32;
            let vc = u64::from(t[i + k + 1]) + (va >> 32) + (vb >> 32);
            t[i + k + 1] = vc as u32;
            top = vc >> 32;
            i += 2;
        }
        if i < k {
            let window = &mut t[i..];
            let m = window[0].wrapping_mul(n0);
            let mut c = 0u64;
            for (w, &nj) in window.iter_mut().zip(n) {
                let v = u64::from(*w) + u64::from(m) * u64::from(nj) + c;
                *w = v as u32;
                c = v >> 32;
            }
            let v = u64::from(window[k]) + c + top;
            window[k] = v as u32;
            top = v >> 32;
        }
        let mut r = t[k..].to_vec();
        if top != 0 || !less(&r, &self.n) {
            sub_assign(&mut r, &self.n);
        }
        r
    }
}

/// The DER `DigestInfo` prefix of a hash for EMSA-PKCS1-v1_5 (RFC 8017
/// section 9.2, note 1): `SEQUENCE { AlgorithmIdentifier { OID, NULL },
/// OCTET STRING` of the hash's length.
pub(crate) trait DigestInfo {
    /// The bytes before the hash.
    const PREFIX: &'static [u8];
}

impl DigestInfo for sha2::Sha256 {
    const PREFIX: &'static [u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
}

impl DigestInfo for sha2::Sha384 {
    const PREFIX: &'static [u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
}

impl DigestInfo for sha2::Sha512 {
    const PREFIX: &'static [u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

/// Big-endian bytes to `k` little-endian limbs (bytes beyond `4k` ignored).
fn limbs_from_be(b: &[u8], k: usize) -> Vec<u32> {
    let mut out = vec![0u32; k];
    for (i, &byte) in b.iter().rev().enumerate() {
        if let Some(l) = out.get_mut(i / 4) {
            *l |= u32::from(byte) << (8 * (i % 4));
        }
    }
    out
}

fn be_from_limbs(l: &[u32], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for (i, o) in out.iter_mut().rev().enumerate() {
        *o = (l.get(i / 4).copied().unwrap_or(0) >> (8 * (i % 4))) as u8;
    }
    out
}

/// `a < b`, both of the same length.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `a -= b` modulo `2^(32 * len)`.
fn sub_assign(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
}

/// `a <<= 1`; true if a bit was shifted out.
fn shl1(a: &mut [u32]) -> bool {
    let mut carry = 0u32;
    for l in a.iter_mut() {
        let out = *l >> 31;
        *l = (*l << 1) | carry;
        carry = out;
    }
    carry == 1
}

#[cfg(test)]
mod tests {
    //! Checked against `rsa` (RustCrypto): the raw operation on random
    //! moduli, exponents and inputs, and whole signatures of every `RS*`
    //! and `PS*` algorithm, valid and tampered. RFC 7515's RS256 example
    //! is in `jwt/tests.rs`.

    use rsa::traits::PublicKeyParts as _;
    use rsa::{BoxedUint, PrivateKey, PublicKey};
    use sha2::{Sha256, Sha384, Sha512};

    use super::*;
    use crate::jwt::tests::test_keys;

    /// xorshift64*: reproducible inputs without a `rand` dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    // Only to generate a test key reproducibly.
    impl rsa::rand_core::TryRng for Rng {
        type Error = std::convert::Infallible;

        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(self.next() as u32)
        }

        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(self.next())
        }

        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            dst.copy_from_slice(&self.bytes(dst.len()));
            Ok(())
        }
    }

    impl rsa::rand_core::TryCryptoRng for Rng {}

    fn modulus_of(key: &PublicKey) -> RsaModulus {
        RsaModulus::new(
            &key.n().to_be_bytes_trimmed_vartime(),
            &key.e().to_be_bytes_trimmed_vartime(),
        )
        .unwrap()
    }

    /// `s^e mod n` by `rsa` (crypto-bigint), as bytes of the modulus length.
    fn reference(key: &PublicKey, s: &[u8]) -> Vec<u8> {
        let s = BoxedUint::from_be_slice(s, key.n_bits_precision()).unwrap();
        let out = rsa::hazmat::rsa_encrypt(key, &s).unwrap().to_be_bytes();
        out[out.len() - key.size()..].to_vec()
    }

    #[test]
    fn public_op_matches_rsa_on_random_moduli() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        // Sizes on and off limb and byte boundaries, exponents 3, 65537
        // and random odd ones up to 33 bits (`rsa`'s limit).
        for round in 0..60 {
            let bits: usize =
                [512, 520, 1023, 1024, 1057, 2048, 2049, 2055, 3072, 4096][round % 10];
            let mut n = rng.bytes(bits.div_ceil(8));
            n[0] &= 0xff >> (8 * n.len() - bits);
            n[0] |= 0x80 >> (8 * n.len() - bits);
            *n.last_mut().unwrap() |= 1;
            let e: u64 = match round % 3 {
                0 => 65537,
                1 => 3,
                _ => (rng.next() & 0x1_ffff_ffff) | 0x1_0000_0001,
            };
            let key =
                PublicKey::new_unchecked(BoxedUint::from_be_slice_vartime(&n), BoxedUint::from(e));
            let m = RsaModulus::new(&n, &e.to_be_bytes()).unwrap();
            let count = if bits > 2100 { 20 } else { 60 };
            for i in 0..count {
                let mut s = rng.bytes(n.len());
                match i {
                    0 => s.fill(0),
                    1 => {
                        s.fill(0);
                        *s.last_mut().unwrap() = 1;
                    }
                    2 => {
                        s.clone_from(&n);
                        *s.last_mut().unwrap() -= 1;
                    }
                    _ => s[0] %= n[0],
                }
                assert_eq!(
                    m.public_op(&s),
                    Some(reference(&key, &s)),
                    "bits {bits} e {e} s {s:02x?}"
                );
                checked += 1;
            }
            // Not below n, or not the modulus length: refused.
            assert_eq!(m.public_op(&n), None);
            let mut above = n.clone();
            above[0] = 0xff;
            assert_eq!(m.public_op(&above), None);
            assert_eq!(m.public_op(&n[1..]), None);
            assert_eq!(m.public_op(&[&[0][..], &n[..]].concat()), None);
        }
        assert!(checked > 2000, "{checked}");
    }

    /// RFC 7520 sections 4.1 (RS256) and 4.2 (PS384): signatures made by
    /// someone else with the key of its figure 3.
    #[test]
    fn rfc7520_signatures_verify() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;

        let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let n = b64(concat!(
            "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQH",
            "z_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFE",
            "HYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-t",
            "VTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw",
        ));
        let m = RsaModulus::new(&n, &b64("AQAB")).unwrap();
        const PAYLOAD: &str = concat!(
            "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZX",
            "Agb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtu",
            "b3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4",
        );
        let rs256_input = format!(
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.{PAYLOAD}"
        );
        let rs256_sig = b64(concat!(
            "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp",
            "83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCr",
            "UCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aX",
            "ic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg",
        ));
        let ps384_input = format!(
            "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.{PAYLOAD}"
        );
        let ps384_sig = b64(concat!(
            "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCd",
            "P6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442Z",
            "dNqiVJRmBqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1",
            "aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw",
        ));
        assert!(m.verify_pkcs1v15::<Sha256>(rs256_input.as_bytes(), &rs256_sig));
        assert!(m.verify_pss::<Sha384>(ps384_input.as_bytes(), &ps384_sig));
        // Each signature under the other's scheme, hash or input fails.
        assert!(!m.verify_pss::<Sha256>(rs256_input.as_bytes(), &rs256_sig));
        assert!(!m.verify_pkcs1v15::<Sha384>(rs256_input.as_bytes(), &rs256_sig));
        assert!(!m.verify_pkcs1v15::<Sha384>(ps384_input.as_bytes(), &ps384_sig));
        assert!(!m.verify_pss::<Sha512>(ps384_input.as_bytes(), &ps384_sig));
        assert!(!m.verify_pkcs1v15::<Sha256>(ps384_input.as_bytes(), &rs256_sig));
        assert!(!m.verify_pss::<Sha384>(rs256_input.as_bytes(), &ps384_sig));
    }

    #[test]
    fn refuses_moduli_and_exponents_it_cannot_use() {
        let n = [0xc5u8; 256];
        assert!(RsaModulus::new(&n, &[1, 0, 1]).is_some());
        assert!(RsaModulus::new(&[0, 0, 0xc5, 0xc5], &[3]).is_some());
        let even = [&[0xc5u8; 255][..], &[0xc4]].concat();
        assert!(RsaModulus::new(&even, &[1, 0, 1]).is_none());
        assert!(RsaModulus::new(&[0, 1], &[3]).is_none());
        assert!(RsaModulus::new(&[], &[3]).is_none());
        for e in [&[][..], &[0], &[1], &[2], &[1, 0, 0], &[1; 9]] {
            assert!(RsaModulus::new(&n, e).is_none(), "{e:?}");
        }
    }

    fn agrees(key: &PublicKey, m: &RsaModulus, which: usize, msg: &[u8], sig: &[u8]) -> bool {
        let (ours, theirs) = match which {
            0 => (
                m.verify_pkcs1v15::<Sha256>(msg, sig),
                key.pkcs1v15_verify::<Sha256>(msg, sig).is_ok(),
            ),
            1 => (
                m.verify_pkcs1v15::<Sha384>(msg, sig),
                key.pkcs1v15_verify::<Sha384>(msg, sig).is_ok(),
            ),
            2 => (
                m.verify_pkcs1v15::<Sha512>(msg, sig),
                key.pkcs1v15_verify::<Sha512>(msg, sig).is_ok(),
            ),
            3 => (
                m.verify_pss::<Sha256>(msg, sig),
                key.pss_verify::<Sha256>(msg, sig).is_ok(),
            ),
            4 => (
                m.verify_pss::<Sha384>(msg, sig),
                key.pss_verify::<Sha384>(msg, sig).is_ok(),
            ),
            _ => (
                m.verify_pss::<Sha512>(msg, sig),
                key.pss_verify::<Sha512>(msg, sig).is_ok(),
            ),
        };
        assert_eq!(ours, theirs, "alg {which} msg {msg:02x?} sig {sig:02x?}");
        ours
    }

    /// A key of 2049 bits: its PSS encoding is one byte shorter than the
    /// signature.
    fn odd_size_key() -> &'static PrivateKey {
        static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| PrivateKey::new(&mut Rng(7), 2049).unwrap())
    }

    /// The signature whose public operation gives `em`: the raw private
    /// operation, to sign encodings `rsa` would never produce.
    fn raw_sign(key: &PrivateKey, em: &[u8]) -> Vec<u8> {
        let m = BoxedUint::from_be_slice(em, key.n_bits_precision()).unwrap();
        let s = rsa::hazmat::rsa_decrypt(None::<&mut Rng>, key, &m)
            .unwrap()
            .to_be_bytes();
        s[s.len() - key.size()..].to_vec()
    }

    /// EMSA-PSS-ENCODE (RFC 8017 section 9.1.1) with SHA-256, written out
    /// here independently of `verify_pss`, with knobs to break it.
    fn pss_encode(
        key: &PrivateKey,
        msg: &[u8],
        salt: &[u8],
        fix_db: impl Fn(&mut Vec<u8>),
        fix: impl Fn(&mut Vec<u8>),
    ) -> Vec<u8> {
        let em_bits = key.n().bit_width_vartime() as usize - 1;
        let em_len = em_bits.div_ceil(8);
        let h = Sha256::new()
            .chain_update([0u8; 8])
            .chain_update(Sha256::digest(msg))
            .chain_update(salt)
            .finalize();
        let mut db = vec![0u8; em_len - salt.len() - 32 - 2];
        db.push(0x01);
        db.extend_from_slice(salt);
        fix_db(&mut db);
        let mut mask = Vec::new();
        for counter in 0u32.. {
            if mask.len() >= db.len() {
                break;
            }
            mask.extend_from_slice(
                &Sha256::new()
                    .chain_update(h)
                    .chain_update(counter.to_be_bytes())
                    .finalize(),
            );
        }
        for (d, m) in db.iter_mut().zip(&mask) {
            *d ^= m;
        }
        db[0] &= 0xff >> (8 * em_len - em_bits);
        let mut em = db;
        em.extend_from_slice(&h);
        em.push(0xbc);
        fix(&mut em);
        em
    }

    /// Encodings `rsa` never makes, signed raw: each broken one fails, as
    /// with `rsa`, and the well-formed ones verify. Random signatures
    /// almost never reach these checks (padding bytes, DigestInfo, PSS
    /// trailer, separator, zero string, salt length).
    #[test]
    fn crafted_encodings_agree_with_rsa() {
        let msg = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0";
        let hash = Sha256::digest(msg);
        for key in [&test_keys().rsa_a, odd_size_key()] {
            let public = key.to_public_key();
            let m = modulus_of(&public);
            let k = key.size();
            let pkcs1 = |prefix: &[u8], hash: &[u8], fix: &dyn Fn(&mut Vec<u8>)| {
                let mut em = vec![0x00, 0x01];
                em.resize(k - prefix.len() - hash.len() - 1, 0xff);
                em.push(0x00);
                em.extend_from_slice(prefix);
                em.extend_from_slice(hash);
                fix(&mut em);
                raw_sign(key, &em)
            };
            let prefix = <Sha256 as DigestInfo>::PREFIX;
            let cases: Vec<(bool, Vec<u8>)> = vec![
                (true, pkcs1(prefix, &hash, &|_| {})),
                (false, pkcs1(prefix, &hash, &|em| em[1] = 0x02)),
                (false, pkcs1(prefix, &hash, &|em| em[0] = 0x01)),
                (false, pkcs1(prefix, &hash, &|em| em[40] = 0xfe)),
                (false, pkcs1(prefix, &hash, &|em| em[k - 52] = 0x01)),
                (false, pkcs1(prefix, &hash, &|em| em[k - 45] ^= 0x01)),
                (false, pkcs1(prefix, &Sha256::digest(b"other"), &|_| {})),
                // DigestInfo without the NULL parameters.
                (false, {
                    let no_null = [
                        0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
                        0x04, 0x02, 0x01, 0x04, 0x20,
                    ];
                    pkcs1(&no_null, &hash, &|_| {})
                }),
                // No 00 separator: the DigestInfo a byte early, a zero after the hash.
                (
                    false,
                    pkcs1(prefix, &hash, &|em| {
                        em.remove(k - 52);
                        em.push(0x00);
                    }),
                ),
            ];
            for (i, (valid, sig)) in cases.iter().enumerate() {
                assert_eq!(agrees(&public, &m, 0, msg, sig), *valid, "PKCS#1 case {i}");
            }
            let salt = [0x5a; 32];
            let em_len = m.bits.saturating_sub(1).div_ceil(8);
            let cases: Vec<(bool, Vec<u8>)> = vec![
                (true, pss_encode(key, msg, &salt, |_| {}, |_| {})),
                (
                    false,
                    pss_encode(key, msg, &salt, |_| {}, |em| *em.last_mut().unwrap() = 0xbd),
                ),
                (
                    false,
                    pss_encode(key, msg, &salt, |_| {}, |em| em[em_len - 33] ^= 0x01),
                ),
                (false, pss_encode(key, b"other", &salt, |_| {}, |_| {})),
                // A nonzero byte in the zero string; a separator other than 01.
                (
                    false,
                    pss_encode(key, msg, &salt, |db| db[1] = 0x01, |_| {}),
                ),
                (
                    false,
                    pss_encode(key, msg, &salt, |db| db[em_len - 66] = 0x02, |_| {}),
                ),
                // A salt shorter than the hash (RFC 7518 wants 32 bytes).
                (false, pss_encode(key, msg, &salt[..20], |_| {}, |_| {})),
                (false, pss_encode(key, msg, &[], |_| {}, |_| {})),
            ];
            for (i, (valid, em)) in cases.iter().enumerate() {
                let sig = raw_sign(key, em);
                assert_eq!(agrees(&public, &m, 3, msg, &sig), *valid, "PSS case {i}");
            }
            // 2049 bits: a valid encoding under a nonzero extra top byte.
            if k > em_len {
                let em = (0..=255u8)
                    .map(|v| [&[1][..], &pss_encode(key, msg, &[v; 32], |_| {}, |_| {})].concat())
                    .find(|em| em.as_slice() < public.n().to_be_bytes_trimmed_vartime().as_ref())
                    .unwrap();
                assert!(!agrees(&public, &m, 3, msg, &raw_sign(key, &em)));
            }
        }
    }

    fn sign(key: &PrivateKey, which: usize, msg: &[u8]) -> Vec<u8> {
        match which {
            0 => key.pkcs1v15_sign::<Sha256>(msg),
            1 => key.pkcs1v15_sign::<Sha384>(msg),
            2 => key.pkcs1v15_sign::<Sha512>(msg),
            3 => key.pss_sign::<Sha256>(msg),
            4 => key.pss_sign::<Sha384>(msg),
            _ => key.pss_sign::<Sha512>(msg),
        }
        .unwrap()
    }

    /// Valid signatures of every algorithm verify; each with a flipped
    /// bit, a changed message, another algorithm's label or a byte too
    /// many or too few fails, exactly as with `rsa`. A key of 2049 bits
    /// too: its PSS encoding is one byte shorter than the signature.
    #[test]
    fn signatures_agree_with_rsa() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for (key, rounds) in [(&test_keys().rsa_a, 40), (odd_size_key(), 10)] {
            let public = key.to_public_key();
            let m = modulus_of(&public);
            for round in 0..rounds {
                let which = round % 6;
                let len = 1 + rng.below(300);
                let msg = rng.bytes(len);
                let sig = sign(key, which, &msg);
                assert!(agrees(&public, &m, which, &msg, &sig));
                let other = (which + 1 + rng.below(5)) % 6;
                assert!(!agrees(&public, &m, other, &msg, &sig));
                let mut flipped = sig.clone();
                flipped[rng.below(sig.len())] ^= 1 << rng.below(8);
                assert!(!agrees(&public, &m, which, &msg, &flipped));
                let mut changed = msg.clone();
                changed[rng.below(msg.len())] ^= 1 << rng.below(8);
                assert!(!agrees(&public, &m, which, &changed, &sig));
                assert!(!agrees(&public, &m, which, &msg, &sig[1..]));
                assert!(!agrees(
                    &public,
                    &m,
                    which,
                    &msg,
                    &[&[0][..], &sig].concat()
                ));
                let random = rng.bytes(sig.len());
                agrees(&public, &m, which, &msg, &random);
            }
        }
    }
}
