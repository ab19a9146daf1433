//! The logout deny-list in proxy-wasm shared data (one list for all the
//! worker VMs of an Envoy): the glue around `oidc_core::revocation`, which
//! holds the format and the rules.

use oidc_core::revocation::{self, subjects, Revocation};
use oidc_core::session::SessionId;
use proxy_wasm::hostcalls;

/// Writes tries before giving up on a contended shard.
const TRIES: usize = 4;

/// What [`revoke`] did.
pub enum Outcome {
    Stored { evicted: bool },
    Failed,
}

/// Puts `r` on the deny-list: compare-and-swap on the shard, then read it
/// back (a shard another worker creates at the same moment may win
/// without a CAS number to compare).
pub fn revoke(r: Revocation, now: u64) -> Outcome {
    let key = revocation::shard_key(&r.id);
    for _ in 0..TRIES {
        let (old, cas) = hostcalls::get_shared_data(&key).unwrap_or((None, None));
        let new = revocation::insert(old.as_deref().unwrap_or_default(), r, now);
        if hostcalls::set_shared_data(&key, Some(&new.value), cas).is_err() {
            continue;
        }
        if is_revoked(&r.id, now) {
            if !changed() {
                return Outcome::Failed;
            }
            return Outcome::Stored {
                evicted: new.evicted,
            };
        }
    }
    Outcome::Failed
}

/// Whether the session `id` logged out (on this Envoy); `true` when the
/// shared data cannot be read.
pub fn is_revoked(id: &SessionId, now: u64) -> bool {
    match hostcalls::get_shared_data(&revocation::shard_key(id)) {
        Ok((Some(v), _)) => revocation::is_revoked(&v, id, now),
        Ok((None, _)) => false,
        // The host could not answer: refuse rather than let a session
        // that may have logged out through.
        Err(_) => true,
    }
}

/// Whether a back-channel logout ended the sessions with `key` made at or
/// before `created_at` (on this Envoy).
pub fn logged_out(key: &[u8; 16], created_at: u64, now: u64) -> bool {
    match hostcalls::get_shared_data(&subjects::shard_key(key)) {
        Ok((Some(v), _)) => subjects::is_revoked(&v, key, created_at, now),
        Ok((None, _)) => false,
        Err(_) => true,
    }
}

/// Puts a back-channel revocation on its list (as [`revoke`]).
pub fn log_out(r: subjects::Revocation, now: u64) -> Outcome {
    let key = subjects::shard_key(&r.key);
    match insert(&key, r, now, false).0 {
        Outcome::Stored { .. } if !changed() => Outcome::Failed,
        outcome => outcome,
    }
}

/// The deny-lists' version (`oidc_core::revocation::VERSION_KEY`):
/// `Ok(None)` before the first logout; `Err` when the host cannot answer or
/// the value is not a version (then nothing is remembered).
pub fn version() -> Result<Option<[u8; revocation::VERSION_LEN]>, ()> {
    match hostcalls::get_shared_data(revocation::VERSION_KEY) {
        Ok((Some(v), _)) => revocation::version(&v).map(Some).ok_or(()),
        Ok((None, _)) => Ok(None),
        Err(_) => Err(()),
    }
}

/// After a write to a session or back-channel shard: a new version, so that
/// a worker that remembered a session as on neither list looks again.
/// `false` when it cannot be written (the caller reports the logout as not
/// stored).
fn changed() -> bool {
    let mut v = [0u8; revocation::VERSION_LEN];
    getrandom::fill(&mut v).is_ok()
        && hostcalls::set_shared_data(revocation::VERSION_KEY, Some(&v), None).is_ok()
}

/// Remembers a logout token's `jti` key: `false` when it is already
/// remembered (a replay). The check and the write are one
/// compare-and-swap, so two workers given the same token accept it once.
/// A memory that cannot be written refuses nothing.
pub fn first_use(jti: [u8; 16], until: u64, now: u64) -> bool {
    let key = subjects::jti_shard_key(&jti);
    let r = subjects::Revocation {
        key: jti,
        since: now,
        until,
    };
    !insert(&key, r, now, true).1
}

/// CAS-inserts `r` into the shard at `key`; with `unless_present`, stops
/// (`true`) when the key is already there.
fn insert(key: &str, r: subjects::Revocation, now: u64, unless_present: bool) -> (Outcome, bool) {
    for _ in 0..TRIES {
        let (old, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let old = old.unwrap_or_default();
        if unless_present && subjects::contains(&old, &r.key, now) {
            return (Outcome::Failed, true);
        }
        let new = subjects::insert(&old, r, now);
        if hostcalls::set_shared_data(key, Some(&new.value), cas).is_err() {
            continue;
        }
        if let Ok((Some(v), _)) = hostcalls::get_shared_data(key) {
            if subjects::contains(&v, &r.key, now) {
                return (
                    Outcome::Stored {
                        evicted: new.evicted,
                    },
                    false,
                );
            }
        }
    }
    (Outcome::Failed, false)
}
