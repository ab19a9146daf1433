//! The revocation service: logouts shared by every gateway on the store
//! (`oidc_core::revocation_feed` has the wire format and the flow).
//!
//! - Envoy's filter POSTs entries and polls `GET ?since=<epoch>.<seq>`
//!   on a listener of its own (`crate::serve`, from `main.rs`), reachable through the cluster
//!   [`crate::translate::REVOCATIONS_CLUSTER`]; every request must carry
//!   the key this sidecar generated at its first start ([`key_in`], kept
//!   next to the routes' file, mode 0600; compared in constant time;
//!   never the Admin API key), and none with an `Origin` (a web page) is
//!   taken.
//! - [`Log`] holds the live entries, each with a sequence number, at most
//!   [`MAX_ENTRIES`] (a full log drops the entry that expires first);
//!   expired entries go.
//! - Kept in the store: etcd, under `<prefix>/oidc_revocations/<list>-<key>`
//!   with a lease as long as the entry lives, read at start and watched
//!   (other sidecars' entries arrive that way); or a file next to the
//!   routes' (mode 0600), rewritten on each change. A restarted sidecar has
//!   another epoch: the filters poll again from the start.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use oidc_core::revocation_feed::{
    Cursor, Entry, List, Page, Post, KEY_HEADER, MAX_PER_PAGE, MAX_PER_POST, PATH,
};

/// Live entries kept (the filters' two deny-lists hold 8192 each).
pub const MAX_ENTRIES: usize = 16384;
/// A POST's body, bytes.
const MAX_BODY: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamped {
    seq: u64,
    since: u64,
    until: u64,
}

/// The live entries, numbered in the order they arrived (or changed).
#[derive(Debug)]
pub struct Log {
    epoch: u64,
    last_seq: u64,
    entries: HashMap<(List, [u8; 16]), Stamped>,
    by_seq: BTreeMap<u64, (List, [u8; 16])>,
}

/// What [`Log::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inserted {
    /// The entry is new or moved (`since`/`until` later): store it.
    pub changed: Option<Entry>,
    /// Live entries dropped to make room.
    pub evicted: Vec<Entry>,
}

impl Log {
    pub fn new(epoch: u64) -> Log {
        Log {
            epoch,
            last_seq: 0,
            entries: HashMap::new(),
            by_seq: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn remove(&mut self, k: &(List, [u8; 16])) -> Option<Entry> {
        let s = self.entries.remove(k)?;
        self.by_seq.remove(&s.seq);
        Some(Entry {
            list: k.0,
            key: k.1,
            since: s.since,
            until: s.until,
        })
    }

    /// Drops the expired entries.
    pub fn prune(&mut self, now: u64) {
        let dead: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, s)| s.until < now)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.remove(&k);
        }
    }

    /// Adds `e` (checked at `now`), merged with an entry for the same key
    /// (the later `since` and `until`).
    pub fn insert(&mut self, e: Entry, now: u64) -> Result<Inserted, &'static str> {
        e.check(now)?;
        self.prune(now);
        let k = (e.list, e.key);
        let mut merged = e;
        if let Some(old) = self.entries.get(&k) {
            if old.since >= e.since && old.until >= e.until {
                return Ok(Inserted::default());
            }
            merged.since = merged.since.max(old.since);
            merged.until = merged.until.max(old.until);
            self.remove(&k);
        }
        let mut evicted = Vec::new();
        while self.entries.len() >= MAX_ENTRIES {
            let Some(first) = self
                .entries
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if self.entries[&first].until > merged.until {
                // The new entry is the one that expires first.
                return Ok(Inserted {
                    changed: None,
                    evicted: vec![merged],
                });
            }
            evicted.extend(self.remove(&first));
        }
        self.last_seq += 1;
        self.entries.insert(
            k,
            Stamped {
                seq: self.last_seq,
                since: merged.since,
                until: merged.until,
            },
        );
        self.by_seq.insert(self.last_seq, k);
        Ok(Inserted {
            changed: Some(merged),
            evicted,
        })
    }

    /// The live entries after `cursor` (all of them when it is another
    /// epoch's), at most [`MAX_PER_PAGE`].
    pub fn page(&self, cursor: Option<Cursor>, now: u64) -> Page {
        let after = cursor
            .filter(|c| c.epoch == self.epoch)
            .map_or(0, |c| c.seq);
        let mut entries = Vec::new();
        let mut next = after;
        let mut more = false;
        for (&seq, k) in self.by_seq.range(after + 1..) {
            if entries.len() == MAX_PER_PAGE {
                more = true;
                break;
            }
            next = seq;
            let s = self.entries[k];
            if s.until >= now {
                entries.push(Entry {
                    list: k.0,
                    key: k.1,
                    since: s.since,
                    until: s.until,
                });
            }
        }
        Page {
            epoch: self.epoch,
            next,
            more,
            entries,
        }
    }

    /// Every live entry.
    pub fn all(&self, now: u64) -> Vec<Entry> {
        self.page_all(now)
    }

    fn page_all(&self, now: u64) -> Vec<Entry> {
        self.by_seq
            .values()
            .map(|k| (k, self.entries[k]))
            .filter(|(_, s)| s.until >= now)
            .map(|(k, s)| Entry {
                list: k.0,
                key: k.1,
                since: s.since,
                until: s.until,
            })
            .collect()
    }
}

/// Where the entries are kept.
// One per sidecar: the etcd client's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Backend {
    /// Nowhere (tests).
    Memory,
    /// A JSON file (mode 0600), rewritten on each change.
    File(PathBuf),
    /// etcd, under `<prefix>/oidc_revocations/`.
    Etcd {
        client: Client,
        prefix: String,
        timeout: Duration,
    },
}

/// The service: the log, its store and the key.
#[derive(Clone)]
pub struct Service {
    log: Arc<Mutex<Log>>,
    backend: Backend,
    key: Arc<String>,
    /// Changes taken into the log and not yet stored; held across a whole
    /// [`Service::add`], so adds (and file writes) happen one at a time
    /// and a failed store is retried by the next add (the filter retries
    /// a post that got 503): an acknowledged entry is always stored.
    unstored: Arc<tokio::sync::Mutex<Unstored>>,
}

#[derive(Default)]
struct Unstored {
    changed: Vec<Entry>,
    evicted: Vec<Entry>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn entry_name(e: &Entry) -> String {
    let list = match e.list {
        List::Session => "session",
        List::Subject => "subject",
    };
    let hex: String = e.key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{list}-{hex}")
}

impl Service {
    /// A service with a fresh epoch, loading what the backend keeps.
    pub async fn start(backend: Backend, key: String) -> Result<Service, String> {
        let mut epoch = [0u8; 8];
        getrandom::fill(&mut epoch).map_err(|e| format!("cannot draw an epoch: {e}"))?;
        // Below 2^53: JSON numbers any reader takes exactly.
        let epoch = u64::from_le_bytes(epoch) >> 11;
        let s = Service {
            log: Arc::new(Mutex::new(Log::new(epoch))),
            backend,
            key: Arc::new(key),
            unstored: Arc::default(),
        };
        let stored = s.load().await?;
        let now = now();
        {
            let mut log = s.lock();
            for e in stored {
                let _ = log.insert(e, now);
            }
        }
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live entries (tests, status).
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().all(now())
    }

    fn dir(prefix: &str) -> String {
        format!("{prefix}/oidc_revocations/")
    }

    async fn load(&self) -> Result<Vec<Entry>, String> {
        match &self.backend {
            Backend::Memory => Ok(Vec::new()),
            Backend::File(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice::<Post>(&bytes)
                    .map(|p| p.entries)
                    .map_err(|e| format!("{}: {e}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(format!("{}: {e}", path.display())),
            },
            Backend::Etcd {
                client,
                prefix,
                timeout,
            } => {
                let mut kv = client.kv_client();
                let r = tokio::time::timeout(
                    *timeout,
                    kv.get(Self::dir(prefix), Some(GetOptions::new().with_prefix())),
                )
                .await
                .map_err(|_| "etcd: no answer reading the revocations".to_string())?
                .map_err(|e| format!("etcd: reading the revocations: {e}"))?;
                Ok(r.kvs()
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
                    .collect())
            }
        }
    }

    /// Takes entries (checked), keeps the changed ones in the store.
    pub async fn add(&self, entries: &[Entry]) -> Result<(), String> {
        let now = now();
        let mut unstored = self.unstored.lock().await;
        {
            let mut log = self.lock();
            for e in entries {
                let r = log.insert(*e, now)?;
                unstored.changed.extend(r.changed);
                unstored.evicted.extend(r.evicted);
            }
        }
        if unstored.changed.is_empty() && unstored.evicted.is_empty() {
            return Ok(());
        }
        self.store(&unstored, now).await?;
        *unstored = Unstored::default();
        Ok(())
    }

    async fn store(&self, u: &Unstored, now: u64) -> Result<(), String> {
        match &self.backend {
            Backend::Memory => Ok(()),
            Backend::File(path) => {
                let all = self.lock().all(now);
                write_file(path, &all)
            }
            Backend::Etcd {
                client,
                prefix,
                timeout,
            } => {
                let mut kv = client.kv_client();
                let mut lease = client.lease_client();
                for e in u.changed.iter().filter(|e| e.until > now) {
                    let ttl = i64::try_from(e.until.saturating_sub(now) + 1).unwrap_or(i64::MAX);
                    let value = serde_json::to_vec(e).map_err(|e| e.to_string())?;
                    let key = format!("{}{}", Self::dir(prefix), entry_name(e));
                    tokio::time::timeout(*timeout, async {
                        let l = lease.grant(ttl, None).await?;
                        kv.put(key, value, Some(PutOptions::new().with_lease(l.id())))
                            .await
                            .map(|_| ())
                    })
                    .await
                    .map_err(|_| "etcd: no answer storing a revocation".to_string())?
                    .map_err(|e| format!("etcd: storing a revocation: {e}"))?;
                }
                for e in &u.evicted {
                    let key = format!("{}{}", Self::dir(prefix), entry_name(e));
                    let _ = tokio::time::timeout(*timeout, kv.delete(key, None)).await;
                }
                Ok(())
            }
        }
    }

    /// With etcd: takes every other sidecar's entries, for ever (watches
    /// again after a break, reading everything first).
    pub async fn watch(self) {
        let Backend::Etcd { client, prefix, .. } = self.backend.clone() else {
            return;
        };
        loop {
            if let Err(e) = self.watch_once(&client, &prefix).await {
                tracing::debug!("etcd: revocations watch: {e}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn watch_once(&self, client: &Client, prefix: &str) -> Result<(), String> {
        let mut kv = client.kv_client();
        let r = kv
            .get(Self::dir(prefix), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| e.to_string())?;
        let revision = r.header().map_or(0, |h| h.revision());
        let now = now();
        {
            let mut log = self.lock();
            for kv in r.kvs() {
                if let Ok(e) = serde_json::from_slice::<Entry>(kv.value()) {
                    let _ = log.insert(e, now);
                }
            }
        }
        let mut w = client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = w
            .watch(Self::dir(prefix), Some(options))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let Some(resp) = stream.message().await.map_err(|e| e.to_string())? else {
                return Err("etcd closed the watch".into());
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                return Err("watch cancelled or compacted".into());
            }
            let now = self::now();
            let mut log = self.lock();
            for ev in resp.events() {
                if ev.event_type() != EventType::Put {
                    continue;
                }
                let Some(kv) = ev.kv() else { continue };
                if let Ok(e) = serde_json::from_slice::<Entry>(kv.value()) {
                    let _ = log.insert(e, now);
                }
            }
        }
    }
}

fn write_file(path: &std::path::Path, entries: &[Entry]) -> Result<(), String> {
    let text = serde_json::to_vec(&Post {
        entries: entries.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    crate::store::replace_private(path, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The service's key: the one in `path` (mode 0600), else a new one
/// written there. Kept, so that a restarted sidecar gives Envoy the same
/// listener settings (a changed listener is drained and replaced).
pub fn key_in(path: &std::path::Path) -> Result<String, String> {
    let named = |e: std::io::Error| format!("{}: {e}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim();
            if key.len() < 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{}: not a revocation service key (hex, at least 32 digits): delete it to make a new one",
                    path.display()
                ));
            }
            Ok(key.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = crate::apisix::secrets::generate_secret()?;
            // Whole or absent: an empty key file would stop every start.
            crate::store::replace_private(path, key.as_bytes()).map_err(named)?;
            Ok(key)
        }
        Err(e) => Err(named(e)),
    }
}

/// Whether the request may use the service: no `Origin`, the key.
fn allowed(s: &Service, headers: &HeaderMap) -> Result<(), StatusCode> {
    if headers.contains_key("origin") {
        return Err(StatusCode::FORBIDDEN);
    }
    let given = headers
        .get(KEY_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if crate::apisix::secrets::key_matches(&s.key, given) {
        Ok(())
    } else {
        Err(StatusCode::UNAUTHORIZED)
    }
}

async fn poll(State(s): State<Service>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(code) = allowed(&s, &headers) {
        return code.into_response();
    }
    let cursor = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))
        .and_then(Cursor::parse);
    let page = s.lock().page(cursor, now());
    (
        [("content-type", "application/json")],
        serde_json::to_string(&page).unwrap_or_default(),
    )
        .into_response()
}

async fn post(State(s): State<Service>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(code) = allowed(&s, &headers) {
        return code.into_response();
    }
    let post: Post = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    if post.entries.len() > MAX_PER_POST {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let now = now();
    if post.entries.iter().any(|e| e.check(now).is_err()) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match s.add(&post.entries).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::warn!("revocations: cannot store: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// The service's HTTP routes.
pub fn router(s: Service) -> Router {
    Router::new()
        .route(PATH, get(poll).post(post))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const NOW: u64 = 1_700_000_000;

    fn e(list: List, n: u8, until: u64) -> Entry {
        Entry {
            list,
            key: [n; 16],
            since: NOW,
            until,
        }
    }

    #[test]
    fn pages_follow_the_cursor_and_a_new_epoch_starts_again() {
        let mut log = Log::new(9);
        for n in 0..3 {
            log.insert(e(List::Subject, n, NOW + 100), NOW).unwrap();
        }
        let p = log.page(None, NOW);
        assert_eq!((p.entries.len(), p.next, p.more), (3, 3, false));
        let p2 = log.page(Some(p.cursor()), NOW);
        assert_eq!((p2.entries.len(), p2.next), (0, 3));
        // The same entry again changes nothing; a later `until` is news.
        assert_eq!(
            log.insert(e(List::Subject, 1, NOW + 50), NOW).unwrap(),
            Inserted::default()
        );
        log.insert(e(List::Subject, 1, NOW + 200), NOW).unwrap();
        let p3 = log.page(Some(p.cursor()), NOW);
        assert_eq!(p3.entries, vec![e(List::Subject, 1, NOW + 200)]);
        // Another sidecar's (or a restarted one's) cursor: everything.
        let other = Cursor { epoch: 8, seq: 99 };
        assert_eq!(log.page(Some(other), NOW).entries.len(), 3);
        // The same key on the other list is another entry.
        log.insert(e(List::Session, 1, NOW + 10), NOW).unwrap();
        assert_eq!(log.len(), 4);
        // Expired entries are neither served nor kept.
        assert_eq!(log.page(None, NOW + 101).entries.len(), 1);
        log.prune(NOW + 101);
        assert_eq!(log.len(), 1);
        assert!(log.insert(e(List::Session, 5, NOW - 1), NOW).is_err());
    }

    #[test]
    fn bounded_a_full_log_drops_what_expires_first_and_pages_are_bounded() {
        let mut log = Log::new(1);
        for i in 0..MAX_ENTRIES as u64 {
            let mut x = e(List::Subject, 0, NOW + 1000 + i);
            x.key[..8].copy_from_slice(&i.to_le_bytes());
            assert!(log.insert(x, NOW).unwrap().evicted.is_empty());
        }
        let mut late = e(List::Subject, 0xff, NOW + 100_000);
        late.key[15] = 1;
        let r = log.insert(late, NOW).unwrap();
        assert_eq!(r.evicted.len(), 1);
        assert_eq!(r.evicted[0].until, NOW + 1000);
        // One that would expire before all the others is the one dropped.
        let early = e(List::Subject, 0xee, NOW + 10);
        let r = log.insert(early, NOW).unwrap();
        assert_eq!((r.changed, r.evicted), (None, vec![early]));
        assert_eq!(log.len(), MAX_ENTRIES);
        let p = log.page(None, NOW);
        assert_eq!((p.entries.len(), p.more), (MAX_PER_PAGE, true));
        // The first entry (seq 1) went: the page ends at seq 513.
        assert_eq!(p.next, MAX_PER_PAGE as u64 + 1);
    }

    #[tokio::test]
    async fn the_file_keeps_entries_across_a_restart_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("revocations-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("revocations.json");
        let _ = std::fs::remove_file(&path);
        let s = Service::start(Backend::File(path.clone()), "k".into())
            .await
            .unwrap();
        let x = e(List::Session, 3, now() + 100);
        s.add(&[x]).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Service::start(Backend::File(path.clone()), "k".into())
            .await
            .unwrap();
        assert_eq!(again.entries(), vec![x]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A store that fails leaves the change to the next add: the filter
    /// posts the same entries again after a 503, and the log already has
    /// them; they must still reach the file then.
    #[tokio::test]
    async fn a_failed_store_is_retried_by_the_next_add() {
        let dir = std::env::temp_dir().join(format!("revocations-retry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("revocations.json");
        let s = Service::start(Backend::File(path.clone()), "k".into())
            .await
            .unwrap();
        let x = e(List::Session, 4, now() + 100);
        assert!(s.add(&[x]).await.is_err(), "no directory: the write fails");
        std::fs::create_dir_all(&dir).unwrap();
        s.add(&[x]).await.unwrap();
        let again = Service::start(Backend::File(path.clone()), "k".into())
            .await
            .unwrap();
        assert_eq!(again.entries(), vec![x]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("revocation-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.revocation-key");
        let _ = std::fs::remove_file(&path);
        let k = key_in(&path).unwrap();
        assert!(k.len() >= 32);
        assert_eq!(key_in(&path).unwrap(), k);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "short").unwrap();
        assert!(key_in(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn call(s: &Service, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let r = router(s.clone()).oneshot(req).await.unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn only_the_key_holder_without_an_origin_posts_and_polls() {
        let s = Service::start(Backend::Memory, "the-key".into())
            .await
            .unwrap();
        let x = e(List::Subject, 4, now() + 100);
        let body = serde_json::to_string(&Post { entries: vec![x] }).unwrap();
        let post = |key: Option<&str>, origin: Option<&str>, body: String| {
            let mut r = Request::post(PATH);
            if let Some(k) = key {
                r = r.header(KEY_HEADER, k);
            }
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            r.body(Body::from(body)).unwrap()
        };
        for (key, origin, want) in [
            (None, None, StatusCode::UNAUTHORIZED),
            (Some(""), None, StatusCode::UNAUTHORIZED),
            (Some("the-kez"), None, StatusCode::UNAUTHORIZED),
            (
                Some("the-key"),
                Some("https://evil.example"),
                StatusCode::FORBIDDEN,
            ),
        ] {
            assert_eq!(call(&s, post(key, origin, body.clone())).await.0, want);
        }
        assert!(s.entries().is_empty());
        assert_eq!(
            call(&s, post(Some("the-key"), None, body.clone())).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(s.entries(), vec![x]);
        // Bad entries, too many, too big.
        let expired = serde_json::to_string(&Post {
            entries: vec![e(List::Subject, 5, 10)],
        })
        .unwrap();
        assert_eq!(
            call(&s, post(Some("the-key"), None, expired)).await.0,
            StatusCode::BAD_REQUEST
        );
        let many = serde_json::to_string(&Post {
            entries: vec![x; MAX_PER_POST + 1],
        })
        .unwrap();
        assert_ne!(
            call(&s, post(Some("the-key"), None, many)).await.0,
            StatusCode::NO_CONTENT
        );
        let get = |key: &str| {
            Request::get(format!("{PATH}?since=1.0"))
                .header(KEY_HEADER, key)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(call(&s, get("nope")).await.0, StatusCode::UNAUTHORIZED);
        let (status, body) = call(&s, get("the-key")).await;
        assert_eq!(status, StatusCode::OK);
        let page = Page::parse(200, &body, now()).unwrap();
        assert_eq!(page.entries, vec![x]);
    }
}
