//! The revocation feed: how the logout deny-lists reach every gateway.
//!
//! A logout (RP-initiated: the session id; back-channel: the `(iss, sid)`
//! or `(iss, sub)` key, see [`crate::revocation`]) is written to the
//! deny-list in the Envoy's shared data at once, and queued as an
//! [`Entry`]. The filter's root context POSTs queued entries to the
//! sidecar's revocation service (a cluster and a key the sidecar puts in
//! the listener settings, [`crate::settings::RevocationService`]) and
//! polls it (`GET ?since=<cursor>`) for every gateway's entries, which it
//! writes into its own deny-lists. The sidecar keeps them in its store
//! (etcd, shared by every sidecar on it; or a file next to the routes),
//! so nothing is lost when it restarts.
//!
//! Entries carry only the deny-list keys (a random session id, or 16
//! bytes of a SHA-256 of the provider's identifiers), never a token,
//! cookie or user name.

use serde::{Deserialize, Serialize};

use crate::revocation::{self, subjects};
use crate::session::SessionId;

/// The service's path.
pub const PATH: &str = "/oidc/revocations";
/// The request header carrying the sidecar's key.
pub const KEY_HEADER: &str = "x-oidc-revocation-key";
/// Entries in one POST.
pub const MAX_PER_POST: usize = 64;
/// Entries in one poll answer (`more` says when others wait).
pub const MAX_PER_PAGE: usize = 512;
/// The longest a revocation may last: sessions with a longer absolute
/// timeout are revoked for this long.
pub const MAX_LIFETIME: u64 = 400 * 24 * 3600;
/// How far in the future `since` may be (clock skew between gateways).
pub const SINCE_SKEW: u64 = 300;

/// The deny-list an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    /// A session id (RP-initiated logout).
    Session,
    /// A back-channel `(iss, sid)` / `(iss, sub)` key.
    Subject,
}

/// One revocation on its way between gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub list: List,
    #[serde(with = "hex16")]
    pub key: [u8; 16],
    /// Sessions made at or before it are refused (subject list; the
    /// session list refuses its one session whatever this says).
    pub since: u64,
    /// Until when (Unix seconds).
    pub until: u64,
}

impl Entry {
    /// The entry of an RP-initiated logout.
    pub fn session(r: &revocation::Revocation, now: u64) -> Entry {
        Entry {
            list: List::Session,
            key: r.id.0,
            since: now,
            until: r.until,
        }
    }

    /// The entry of a back-channel logout.
    pub fn subject(r: &subjects::Revocation) -> Entry {
        Entry {
            list: List::Subject,
            key: r.key,
            since: r.since,
            until: r.until,
        }
    }

    /// The session-list revocation it stands for.
    pub fn as_session(&self) -> revocation::Revocation {
        revocation::Revocation {
            id: SessionId(self.key),
            until: self.until,
        }
    }

    /// The subject-list revocation it stands for.
    pub fn as_subject(&self) -> subjects::Revocation {
        subjects::Revocation {
            key: self.key,
            since: self.since,
            until: self.until,
        }
    }

    /// Whether it can be kept at `now`: not expired, not longer than
    /// [`MAX_LIFETIME`], `since` not far in the future.
    pub fn check(&self, now: u64) -> Result<(), &'static str> {
        if self.until < now {
            return Err("expired");
        }
        if self.until > now.saturating_add(MAX_LIFETIME) {
            return Err("until is too far in the future");
        }
        if self.since > now.saturating_add(SINCE_SKEW) {
            return Err("since is in the future");
        }
        Ok(())
    }
}

/// A POST's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Post {
    pub entries: Vec<Entry>,
}

impl Post {
    /// The body of a POST of `entries` (the JSON serde makes, written by
    /// hand: the filter then carries no JSON serializer).
    pub fn encode(entries: &[Entry]) -> String {
        let mut out = String::from("{\"entries\":[");
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let list = match e.list {
                List::Session => "session",
                List::Subject => "subject",
            };
            let key: String = e.key.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!(
                "{{\"list\":\"{list}\",\"key\":\"{key}\",\"since\":{},\"until\":{}}}",
                e.since, e.until
            ));
        }
        out.push_str("]}");
        out
    }
}

/// Where a poll goes on from: the service's `epoch` (a sidecar that
/// restarted has another, and the poller starts again from 0) and the
/// sequence number of the last entry seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

impl Cursor {
    /// `epoch.seq`, as the query and shared data carry it.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.epoch, self.seq)
    }

    /// The cursor of [`encode`](Self::encode)'s text; `None` for anything else.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (e, q) = s.split_once('.')?;
        Some(Cursor {
            epoch: e.parse().ok()?,
            seq: q.parse().ok()?,
        })
    }

    /// The poll's path from this cursor (`None`: from the start).
    pub fn poll_path(cursor: Option<Cursor>) -> String {
        match cursor {
            Some(c) => format!("{PATH}?since={}", c.encode()),
            None => PATH.to_string(),
        }
    }
}

/// A poll's answer: the entries after the cursor (at most
/// [`MAX_PER_PAGE`], `more` when others wait) and the cursor to go on
/// from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub epoch: u64,
    pub next: u64,
    #[serde(default)]
    pub more: bool,
    pub entries: Vec<Entry>,
}

impl Page {
    /// The answer of a poll (`status`, `body`); entries that fail
    /// [`Entry::check`] at `now` are left out.
    pub fn parse(status: u16, body: &[u8], now: u64) -> Result<Page, String> {
        if status != 200 {
            return Err(format!("status {status}"));
        }
        let mut p: Page = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        p.entries.retain(|e| e.check(now).is_ok());
        Ok(p)
    }

    /// Where the next poll starts.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seq: self.next,
        }
    }
}

mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        let text: String = k.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = <&str>::deserialize(d)?;
        parse(text).ok_or_else(|| serde::de::Error::custom("key: 32 lowercase hex digits"))
    }

    pub fn parse(text: &str) -> Option<[u8; 16]> {
        let b = text.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut k = [0u8; 16];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            k[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn entries_round_trip_and_are_checked() {
        let e = Entry {
            list: List::Subject,
            key: [0xab; 16],
            since: NOW,
            until: NOW + 10,
        };
        let text = serde_json::to_string(&Post { entries: vec![e] }).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"entries":[{{"list":"subject","key":"{}","since":{NOW},"until":{}}}]}}"#,
                "ab".repeat(16),
                NOW + 10
            )
        );
        assert_eq!(Post::encode(&[e, e]), {
            let two = serde_json::to_string(&Post {
                entries: vec![e, e],
            });
            two.unwrap()
        });
        assert_eq!(Post::encode(&[]), r#"{"entries":[]}"#);
        let back: Post = serde_json::from_str(&text).unwrap();
        assert_eq!(back.entries, vec![e]);
        assert_eq!(e.check(NOW), Ok(()));
        assert!(e.check(NOW + 11).is_err());
        let far = Entry {
            until: NOW + MAX_LIFETIME + 1,
            ..e
        };
        assert!(far.check(NOW).is_err());
        let future = Entry {
            since: NOW + SINCE_SKEW + 1,
            ..e
        };
        assert!(future.check(NOW).is_err());
        for bad in [
            r#"{"list":"subject","key":"AB","since":1,"until":2}"#,
            r#"{"list":"other","key":"abababababababababababababababab","since":1,"until":2}"#,
            r#"{"list":"session","key":"ABABABABABABABABABABABABABABABAB","since":1,"until":2}"#,
            r#"{"list":"session","key":"abababababababababababababababab","since":-1,"until":2}"#,
            r#"{"list":"session","key":"abababababababababababababababab","since":1,"until":2,"x":1}"#,
        ] {
            assert!(serde_json::from_str::<Entry>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Entry::subject(&e.as_subject()),
            e,
            "the subject form keeps everything"
        );
        assert_eq!(Entry::session(&e.as_session(), NOW).key, e.key);
    }

    #[test]
    fn cursors_and_pages() {
        let c = Cursor { epoch: 7, seq: 42 };
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
        assert_eq!(Cursor::parse("7"), None);
        assert_eq!(Cursor::parse("x.1"), None);
        assert_eq!(Cursor::poll_path(Some(c)), "/oidc/revocations?since=7.42");
        assert_eq!(Cursor::poll_path(None), "/oidc/revocations");
        let body = format!(
            r#"{{"epoch":7,"next":44,"more":false,"entries":[
              {{"list":"session","key":"{k}","since":1,"until":{live}}},
              {{"list":"session","key":"{k}","since":1,"until":{dead}}}]}}"#,
            k = "01".repeat(16),
            live = NOW + 5,
            dead = NOW - 5
        );
        let p = Page::parse(200, body.as_bytes(), NOW).unwrap();
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.cursor(), Cursor { epoch: 7, seq: 44 });
        assert!(Page::parse(403, body.as_bytes(), NOW).is_err());
        assert!(Page::parse(200, b"{", NOW).is_err());
    }
}
