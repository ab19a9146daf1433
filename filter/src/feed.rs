//! The revocation feed's glue (`oidc_core::revocation_feed`): the VM's
//! outbox of logouts to post, the poll's claim and cursor in shared data,
//! and the writing of polled entries into this Envoy's deny-lists.
//!
//! Each VM posts its own logouts (from its root context's tick); one
//! worker polls per [`POLL_EVERY_MS`] (a compare-and-swap on the shared
//! "last poll" marker), and the cursor is shared, so every worker's
//! deny-list (shared data) learns each entry once.

use std::cell::RefCell;
use std::collections::VecDeque;

use oidc_core::revocation_feed::{Cursor, Entry, List, Page};
use proxy_wasm::hostcalls;

use crate::metrics::Metrics;
use crate::revoked;

/// Counts a failed call; logs the first of a run.
pub fn failed(outbox: &Outbox, metrics: &Metrics, what: &str) {
    metrics.feed_failed();
    if !outbox.failing.replace(true) {
        log::warn!("openid-connect: the revocation service: {what} (logged once until it works)");
    }
}

/// A call worked.
pub fn worked(outbox: &Outbox) {
    if outbox.failing.replace(false) {
        log::info!("openid-connect: the revocation service answers again");
    }
}

/// Logouts waiting to be posted, per VM (more are dropped, counted).
pub const OUTBOX: usize = 1024;
/// How often an Envoy polls the service.
pub const POLL_EVERY_MS: u64 = 400;
/// A poll with no answer after this is taken over by another worker.
pub const POLL_TIMEOUT_MS: u64 = 3000;

const MARKER: &str = "openid-connect|feed|poll";
const CURSOR: &str = "openid-connect|feed|cursor";

#[derive(Default)]
pub struct Outbox {
    /// The last call to the service failed (failures are logged when
    /// they start, and counted).
    pub failing: std::cell::Cell<bool>,
    queue: RefCell<VecDeque<Entry>>,
    /// A POST in flight (its token).
    pub posting: RefCell<Option<(u32, Vec<Entry>)>>,
}

impl Outbox {
    /// Queues `e`; `false` when the outbox is full (dropped).
    pub fn push(&self, e: Entry) -> bool {
        let mut q = self.queue.borrow_mut();
        if q.len() >= OUTBOX {
            return false;
        }
        q.push_back(e);
        true
    }

    /// Takes up to `n` entries to post.
    pub fn take(&self, n: usize) -> Vec<Entry> {
        let mut q = self.queue.borrow_mut();
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    /// Puts back entries whose POST failed (in front, as room allows).
    pub fn put_back(&self, entries: Vec<Entry>) {
        let mut q = self.queue.borrow_mut();
        for e in entries.into_iter().rev() {
            if q.len() >= OUTBOX {
                break;
            }
            q.push_front(e);
        }
    }
}

/// Claims this round's poll at `now_ms`: `true` when this worker polls.
pub fn claim_poll(now_ms: u64) -> bool {
    let mut read = hostcalls::get_shared_data(MARKER).ok();
    if !matches!(read, Some((Some(_), Some(_)))) {
        let _ = hostcalls::set_shared_data(MARKER, Some(&[]), None);
        read = hostcalls::get_shared_data(MARKER).ok();
    }
    let Some((value, Some(cas))) = read else {
        return false;
    };
    // value: last poll start (ms, LE) ‖ in flight (1 byte).
    if let Some(v) = value.as_deref().filter(|v| v.len() == 9) {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[..8]);
        let last = u64::from_le_bytes(b);
        let wait = if v[8] == 1 {
            POLL_TIMEOUT_MS
        } else {
            POLL_EVERY_MS
        };
        if now_ms < last.saturating_add(wait) {
            return false;
        }
    }
    let mut v = now_ms.to_le_bytes().to_vec();
    v.push(1);
    hostcalls::set_shared_data(MARKER, Some(&v), Some(cas)).is_ok()
}

/// The poll that started at `started_ms` is over; with `again` (a page
/// said more entries wait), the next tick polls at once.
pub fn poll_done(started_ms: u64, again: bool) {
    let last = if again {
        started_ms.saturating_sub(POLL_EVERY_MS)
    } else {
        started_ms
    };
    let mut v = last.to_le_bytes().to_vec();
    v.push(0);
    if let Ok((Some(old), Some(cas))) = hostcalls::get_shared_data(MARKER) {
        if old.get(..8) == Some(&started_ms.to_le_bytes()[..]) {
            let _ = hostcalls::set_shared_data(MARKER, Some(&v), Some(cas));
        }
    }
}

/// Where this Envoy's poll goes on from.
pub fn cursor() -> Option<Cursor> {
    let (v, _) = hostcalls::get_shared_data(CURSOR).ok()?;
    Cursor::parse(std::str::from_utf8(&v?).ok()?)
}

/// Writes a page's entries into the deny-lists, then its cursor.
/// Entries that cannot be written leave the cursor where it was (the
/// next poll brings them again). How many were written.
pub fn apply(page: &Page, now: u64) -> usize {
    let mut written = 0;
    for e in &page.entries {
        let stored = match e.list {
            List::Session => revoked::revoke(e.as_session(), now),
            List::Subject => revoked::log_out(e.as_subject(), now),
        };
        match stored {
            revoked::Outcome::Stored { .. } => written += 1,
            revoked::Outcome::Failed => return written,
        }
    }
    let _ = hostcalls::set_shared_data(CURSOR, Some(page.cursor().encode().as_bytes()), None);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            list: List::Session,
            key: [n; 16],
            since: 1,
            until: 2,
        }
    }

    #[test]
    fn the_outbox_is_bounded_and_keeps_the_order() {
        let o = Outbox::default();
        for n in 0..OUTBOX {
            assert!(o.push(entry(n as u8)));
        }
        assert!(!o.push(entry(0)), "full: dropped");
        let first = o.take(3);
        assert_eq!(first, vec![entry(0), entry(1), entry(2)]);
        // A failed post goes back in front, as room allows.
        o.put_back(first.clone());
        assert_eq!(o.take(1), vec![entry(0)]);
        assert!(o.push(entry(9)));
        o.put_back(vec![entry(0)]);
        assert_eq!(o.take(OUTBOX * 2).len(), OUTBOX, "never over the bound");
        assert!(o.take(5).is_empty());
    }
}
