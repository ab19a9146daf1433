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
