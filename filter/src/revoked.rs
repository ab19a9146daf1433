//! The logout deny-list in proxy-wasm shared data (one list for all the
//! worker VMs of an Envoy): the glue around `oidc_core::revocation`, which
//! holds the format and the rules.

use oidc_core::revocation::{self, Revocation};
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
            return Outcome::Stored {
                evicted: new.evicted,
            };
        }
    }
    Outcome::Failed
}

/// Whether the session `id` logged out (on this Envoy).
pub fn is_revoked(id: &SessionId, now: u64) -> bool {
    match hostcalls::get_shared_data(&revocation::shard_key(id)) {
        Ok((Some(v), _)) => revocation::is_revoked(&v, id, now),
        _ => false,
    }
}
