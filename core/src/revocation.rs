//! The logout deny-list: session ids that logged out, kept until the
//! session could not be used anyway (its absolute expiry).
//!
//! Sessions live in the cookie, so logout alone cannot stop a copy of the
//! cookie made before (review finding 10). Logout therefore writes the
//! session's id here and every request with a session looks it up after
//! unsealing. The list lives where the caller keeps state shared by its
//! workers (proxy-wasm shared data: one Envoy), cut into [`SHARDS`] values
//! by the id's first byte (`openid-connect|revoked|<2 hex>`), each a list
//! of at most [`SHARD_CAPACITY`] entries:
//!
//! ```text
//! entry = session id (16 bytes) ‖ until (u64 LE, Unix seconds)
//! ```
//!
//! Expired entries are dropped on every write. A full shard drops the
//! entry that expires first (counted by the caller): the list is bounded,
//! so a flood of logouts can only end the oldest revocations early.
//! Pure functions over bytes; the caller reads and writes the shared value
//! (with a compare-and-swap) and passes the time.

use crate::config::SessionConfig;
use crate::session::{Session, SessionId};

/// Values the list is cut into (by the id's first byte).
pub const SHARDS: usize = 256;
/// Entries per shard (8192 revoked sessions in all).
pub const SHARD_CAPACITY: usize = 32;
/// How long a session is kept revoked when `absolute_timeout` is 0 (no
/// absolute expiry): 7 days.
pub const WITHOUT_ABSOLUTE_TIMEOUT: u64 = 7 * 24 * 3600;

const ENTRY: usize = 16 + 8;

/// The shared-data key of the deny-lists' version: [`VERSION_LEN`] random
/// bytes, replaced after every write to a session or back-channel shard
/// (absent until the first). A session found on neither list may be
/// remembered as such with the version read *before* the shards; while
/// the version is the same, no shard has changed since, and one small read
/// replaces a read of every shard the session is looked up in. A new
/// random value is never an earlier one (no A-B-A).
pub const VERSION_KEY: &str = "openid-connect|revoked-version";
/// Bytes in a version value.
pub const VERSION_LEN: usize = 16;

/// A stored version value, or `None` when it is not one.
pub fn version(raw: &[u8]) -> Option<[u8; VERSION_LEN]> {
    raw.try_into().ok()
}

/// The shared-data key of the shard holding `id`.
pub fn shard_key(id: &SessionId) -> String {
    format!("openid-connect|revoked|{:02x}", id.0[0])
}

/// A session to revoke: its id, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub id: SessionId,
    pub until: u64,
}

impl Revocation {
    /// The revocation of `s` at `now`: until its absolute expiry (see
    /// [`WITHOUT_ABSOLUTE_TIMEOUT`]).
    pub fn of(s: &Session, cfg: &SessionConfig, now: u64) -> Revocation {
        let until = if cfg.absolute_timeout > 0 {
            s.created_at.saturating_add(cfg.absolute_timeout)
        } else {
            now.saturating_add(WITHOUT_ABSOLUTE_TIMEOUT)
        };
        Revocation { id: s.id, until }
    }
}

fn entries(shard: &[u8]) -> impl Iterator<Item = (SessionId, u64)> + '_ {
    shard.chunks_exact(ENTRY).map(|e| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        let mut until = [0u8; 8];
        until.copy_from_slice(&e[16..]);
        (SessionId(id), u64::from_le_bytes(until))
    })
}

/// Whether `id` is in the shard value and still revoked at `now`.
pub fn is_revoked(shard: &[u8], id: &SessionId, now: u64) -> bool {
    entries(shard).any(|(i, until)| i == *id && now <= until)
}

/// What [`insert`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The new shard value.
    pub value: Vec<u8>,
    /// An unexpired entry had to go to make room.
    pub evicted: bool,
}

/// The shard value with `r` added: expired entries dropped, an entry for
/// the same id replaced (the later `until` kept), and at most
/// [`SHARD_CAPACITY`] entries (the one that expires first goes).
pub fn insert(shard: &[u8], r: Revocation, now: u64) -> Inserted {
    let mut list: Vec<(SessionId, u64)> = entries(shard)
        .filter(|&(id, until)| now <= until && id != r.id)
        .collect();
    let until = entries(shard)
        .filter(|(id, _)| *id == r.id)
        .map(|(_, u)| u)
        .fold(r.until, u64::max);
    list.push((r.id, until));
    let mut evicted = false;
    while list.len() > SHARD_CAPACITY {
        let Some((first, _)) = list.iter().enumerate().min_by_key(|(_, (_, u))| *u) else {
            break;
        };
        list.remove(first);
        evicted = true;
    }
    let mut value = Vec::with_capacity(list.len() * ENTRY);
    for (id, until) in list {
        value.extend_from_slice(&id.0);
        value.extend_from_slice(&until.to_le_bytes());
    }
    Inserted { value, evicted }
}

/// Back-channel logout: sessions ended by the provider, named by
/// `(iss, sid)` or, when the logout token has no `sid`, by `(iss, sub)`
/// (every session of that user). A second table in the same shape, with
/// its own shards (`openid-connect|logout|<2 hex>`) so that neither list
/// can push the other's entries out, and one more field: the revocation's
/// time (`since`). Only sessions made at or before it are refused: the
/// user who logs in again after a back-channel logout (same `sub`) gets a
/// working session.
///
/// ```text
/// entry = SHA-256(kind ‖ 0 ‖ iss ‖ 0 ‖ value)[..16] ‖ until (u64 LE) ‖ since (u64 LE)
/// ```
pub mod subjects {
    use sha2::{Digest as _, Sha256};

    use crate::session::Session;

    /// Entries per shard (8192 in all, as the session-id list).
    pub const SHARD_CAPACITY: usize = super::SHARD_CAPACITY;
    const ENTRY: usize = 16 + 8 + 8;

    /// What a revocation names.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        /// One provider session (`sid`): the sessions made from it.
        Sid,
        /// A user (`sub`): all of that user's sessions.
        Sub,
        /// A logout token's `jti`: the replay memory ([`jti_shard_key`]).
        Jti,
    }

    /// The key of `(iss, value)`: 16 bytes of a SHA-256 (the list never
    /// holds the identifiers themselves).
    pub fn key(kind: Kind, iss: &str, value: &str) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(match kind {
            Kind::Sid => b"sid",
            Kind::Sub => b"sub",
            Kind::Jti => b"jti",
        });
        h.update([0]);
        h.update(iss.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        k
    }

    /// The keys a session can be revoked by: its ID token's `(iss, sid)`
    /// and `(iss, sub)`, when it has them.
    pub fn keys_of(s: &Session) -> impl Iterator<Item = [u8; 16]> + '_ {
        let claim = |n: &str| s.id_claims.get(n).and_then(serde_json::Value::as_str);
        let iss = claim("iss");
        [(Kind::Sid, claim("sid")), (Kind::Sub, claim("sub"))]
            .into_iter()
            .filter_map(move |(kind, v)| Some(key(kind, iss?, v?)))
    }

    /// The shared-data key of the shard holding `key`.
    pub fn shard_key(key: &[u8; 16]) -> String {
        format!("openid-connect|logout|{:02x}", key[0])
    }

    /// The shared-data key of the replay memory's shard holding `key` (a
    /// [`Kind::Jti`] key; same entry format, `since` unused).
    pub fn jti_shard_key(key: &[u8; 16]) -> String {
        format!("openid-connect|jti|{:02x}", key[0])
    }

    /// A back-channel revocation: sessions with `key` made at or before
    /// `since` are refused until `until`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Revocation {
        pub key: [u8; 16],
        pub since: u64,
        pub until: u64,
    }

    fn entries(shard: &[u8]) -> impl Iterator<Item = Revocation> + '_ {
        shard.chunks_exact(ENTRY).map(|e| {
            let mut key = [0u8; 16];
            key.copy_from_slice(&e[..16]);
            let num = |r: &[u8]| {
                let mut b = [0u8; 8];
                b.copy_from_slice(r);
                u64::from_le_bytes(b)
            };
            Revocation {
                key,
                until: num(&e[16..24]),
                since: num(&e[24..32]),
            }
        })
    }

    /// Whether a session with `key`, made at `created_at`, is revoked at
    /// `now` by an entry of the shard value.
    pub fn is_revoked(shard: &[u8], key: &[u8; 16], created_at: u64, now: u64) -> bool {
        entries(shard).any(|r| r.key == *key && now <= r.until && created_at <= r.since)
    }

    /// Whether the shard value holds `key`, unexpired at `now`.
    pub fn contains(shard: &[u8], key: &[u8; 16], now: u64) -> bool {
        entries(shard).any(|r| r.key == *key && now <= r.until)
    }

    /// The shard value with `r` added: expired entries dropped, an entry
    /// for the same key merged (the later `since` and `until` kept), at
    /// most [`SHARD_CAPACITY`] entries (the one that expires first goes).
    pub fn insert(shard: &[u8], r: Revocation, now: u64) -> super::Inserted {
        let mut merged = r;
        for old in entries(shard).filter(|o| o.key == r.key && now <= o.until) {
            merged.since = merged.since.max(old.since);
            merged.until = merged.until.max(old.until);
        }
        let mut list: Vec<Revocation> = entries(shard)
            .filter(|o| now <= o.until && o.key != r.key)
            .collect();
        list.push(merged);
        let mut evicted = false;
        while list.len() > SHARD_CAPACITY {
            let Some((first, _)) = list.iter().enumerate().min_by_key(|(_, o)| o.until) else {
                break;
            };
            list.remove(first);
            evicted = true;
        }
        let mut value = Vec::with_capacity(list.len() * ENTRY);
        for e in list {
            value.extend_from_slice(&e.key);
            value.extend_from_slice(&e.until.to_le_bytes());
            value.extend_from_slice(&e.since.to_le_bytes());
        }
        super::Inserted { value, evicted }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        const NOW: u64 = 1_700_000_000;

        #[test]
        fn sessions_made_before_the_revocation_only() {
            let k = key(Kind::Sub, "https://idp", "alice");
            let r = Revocation {
                key: k,
                since: NOW,
                until: NOW + 100,
            };
            let v = insert(&[], r, NOW).value;
            assert!(is_revoked(&v, &k, NOW - 50, NOW + 1));
            assert!(is_revoked(&v, &k, NOW, NOW + 100));
            // A login after the logout is a new session.
            assert!(!is_revoked(&v, &k, NOW + 1, NOW + 2));
            // Until the end only.
            assert!(!is_revoked(&v, &k, NOW - 50, NOW + 101));
            assert!(!is_revoked(
                &v,
                &key(Kind::Sid, "https://idp", "alice"),
                0,
                NOW
            ));
            assert!(!is_revoked(
                &v,
                &key(Kind::Sub, "https://other", "alice"),
                0,
                NOW
            ));
            assert!(contains(&v, &k, NOW));
            assert_eq!(shard_key(&k), format!("openid-connect|logout|{:02x}", k[0]));
            // A later revocation of the same key moves `since` and `until`.
            let later = Revocation {
                key: k,
                since: NOW + 10,
                until: NOW + 50,
            };
            let v = insert(&v, later, NOW + 10).value;
            assert_eq!(v.len(), ENTRY);
            assert!(is_revoked(&v, &k, NOW + 5, NOW + 100));
        }

        #[test]
        fn bounded_and_garbage_safe() {
            let mut v = Vec::new();
            let mut evictions = 0;
            for m in 0..(SHARD_CAPACITY as u64 + 5) {
                let mut k = [m as u8; 16];
                k[0] = 7;
                let r = Revocation {
                    key: k,
                    since: NOW,
                    until: NOW + 1000 + m,
                };
                let ins = insert(&v, r, NOW);
                evictions += usize::from(ins.evicted);
                v = ins.value;
            }
            assert_eq!(v.len(), SHARD_CAPACITY * ENTRY);
            assert_eq!(evictions, 5);
            let mut first = [0u8; 16];
            first[0] = 7;
            assert!(!contains(&v, &first, NOW));
            assert!(!is_revoked(&[1, 2, 3], &first, 0, NOW));
        }

        #[test]
        fn a_session_is_named_by_its_sid_and_sub() {
            let mut s = Session::new(crate::secret::Secret::new("t"), NOW);
            assert_eq!(keys_of(&s).count(), 0);
            s.id_claims = json!({"iss": "https://idp", "sub": "alice", "sid": "s-1"})
                .as_object()
                .cloned()
                .unwrap();
            let keys: Vec<_> = keys_of(&s).collect();
            assert_eq!(
                keys,
                vec![
                    key(Kind::Sid, "https://idp", "s-1"),
                    key(Kind::Sub, "https://idp", "alice")
                ]
            );
            s.id_claims.remove("sid");
            assert_eq!(keys_of(&s).count(), 1);
            s.id_claims.remove("iss");
            assert_eq!(keys_of(&s).count(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn id(n: u8, m: u8) -> SessionId {
        let mut b = [m; 16];
        b[0] = n;
        SessionId(b)
    }

    fn rev(id: SessionId, until: u64) -> Revocation {
        Revocation { id, until }
    }

    #[test]
    fn revoked_until_the_end() {
        let a = id(0xab, 1);
        let v = insert(&[], rev(a, NOW + 10), NOW).value;
        assert!(is_revoked(&v, &a, NOW));
        assert!(is_revoked(&v, &a, NOW + 10));
        assert!(!is_revoked(&v, &a, NOW + 11));
        assert!(!is_revoked(&v, &id(0xab, 2), NOW));
        assert_eq!(shard_key(&a), "openid-connect|revoked|ab");
        // Expired entries go on the next write; the same id keeps the
        // later end.
        let v = insert(&v, rev(id(0xab, 2), NOW + 100), NOW + 20).value;
        assert_eq!(v.len(), ENTRY);
        let v = insert(&v, rev(id(0xab, 2), NOW + 50), NOW + 20).value;
        assert!(is_revoked(&v, &id(0xab, 2), NOW + 100));
    }

    #[test]
    fn bounded_and_garbage_safe() {
        let mut v = Vec::new();
        let mut evictions = 0;
        for m in 0..(SHARD_CAPACITY as u8 + 5) {
            let r = insert(&v, rev(id(7, m), NOW + 1000 + u64::from(m)), NOW);
            evictions += usize::from(r.evicted);
            v = r.value;
        }
        assert_eq!(v.len(), SHARD_CAPACITY * ENTRY);
        assert_eq!(evictions, 5);
        // The ones that would expire first went.
        assert!(!is_revoked(&v, &id(7, 0), NOW));
        assert!(is_revoked(&v, &id(7, SHARD_CAPACITY as u8 + 4), NOW));
        // A value of the wrong length: whole entries are read, no panic.
        let mut odd = v.clone();
        odd.extend_from_slice(&[1, 2, 3]);
        assert!(is_revoked(&odd, &id(7, 10), NOW));
        assert!(!is_revoked(&[1, 2, 3], &id(1, 2), NOW));
        assert_eq!(insert(&[9; 5], rev(id(1, 1), NOW), NOW).value.len(), ENTRY);
    }

    #[test]
    fn until_the_absolute_expiry() {
        let mut s = Session::new(crate::secret::Secret::new("t"), NOW);
        s.id = id(1, 1);
        let mut cfg = crate::config::PluginConfig::parse(&serde_json::json!({
            "client_id": "c", "client_secret": "s", "discovery": "http://idp/.well-known/openid-configuration",
            "session": {"secret": "0123456789abcdef0123"}}))
        .unwrap()
        .session
        .unwrap();
        assert_eq!(
            Revocation::of(&s, &cfg, NOW + 5).until,
            NOW + cfg.absolute_timeout
        );
        cfg.absolute_timeout = 0;
        assert_eq!(
            Revocation::of(&s, &cfg, NOW + 5).until,
            NOW + 5 + WITHOUT_ABSOLUTE_TIMEOUT
        );
    }
}
