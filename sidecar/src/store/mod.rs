//! Where the Admin API keeps its routes and upstreams between runs: one
//! JSON file ([`FileStore`], the default), or etcd as APISIX does
//! ([`etcd::EtcdStore`]).
//!
//! The [`Store`] trait is written for the second: a store has revisions
//! (etcd's; the file has none: 0), and a [`Write`] is one object put or
//! deleted under [`Guard`]s, conditions on what the write was decided on.
//! When they no longer hold (another sidecar wrote in between), the store
//! answers [`StoreError::Conflict`] with what it holds now, and the Admin
//! API decides again on that. A store that keeps the whole set (the file)
//! gets the whole next set with each write, and ignores the guards: one
//! process, one writer lock.
//!
//! The file is `{"routes": {"<id>": <route object>, ...}, "upstreams":
//! {"<id>": <upstream object>, ...}, "services": {...}, "plugin_configs":
//! {...}, "global_rules": {...}, "ssls": {...}}` (one member per
//! [`ResourceKind`], named by its [`ResourceKind::plural`]): the stored
//! objects (with `id`, `create_time`, `update_time` and the real secrets,
//! so it is created with mode 0600). A file without one of the members but
//! `"routes"` (written before that kind existed) loads with none of it. It is
//! the snapshot: a write appends one line to the log beside it (`file.rs`),
//! which is folded into it, replaced atomically (a crash leaves the old
//! file or the new one, never a mix), at load and when the log is long. A
//! missing file is an empty set; a file that cannot be read as that shape
//! is an error, never an empty set (that would lose every route on the
//! next write).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

pub mod etcd;
mod file;

pub use file::*;

/// Id → stored object, for any kind: a persistent map (`imbl`), so the
/// next set after a write shares every object but the one written with the
/// set before it (a clone is O(1), a put or delete O(log n): a write costs
/// the same at any size), and two sets that share a subtree compare it by
/// pointer.
pub type Objects = imbl::OrdMap<String, Value>;

/// Route id → stored route object.
pub type Routes = Objects;

/// Upstream id → stored upstream object.
pub type Upstreams = Objects;

/// Everything the Admin API stores, one id → object map per
/// [`ResourceKind`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub routes: Routes,
    pub upstreams: Upstreams,
    pub services: Objects,
    pub plugin_configs: Objects,
    pub global_rules: Objects,
    pub ssls: Objects,
}

impl Stored {
    /// Routes only (nothing else).
    pub fn with_routes(routes: Routes) -> Stored {
        Stored {
            routes,
            ..Stored::default()
        }
    }
}

/// The Admin API resources (not to be confused with `xds::Kind`, the xDS
/// resource types). Adding one: a variant here, its arms in the `match`es
/// below and a field of [`Stored`]; the file and etcd stores take every
/// kind of [`ResourceKind::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Route,
    Upstream,
    Service,
    PluginConfig,
    GlobalRule,
    Ssl,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 6] = [
        ResourceKind::Route,
        ResourceKind::Upstream,
        ResourceKind::Service,
        ResourceKind::PluginConfig,
        ResourceKind::GlobalRule,
        ResourceKind::Ssl,
    ];

    /// `route`, `upstream`, `service`, `plugin config`, `global rule`,
    /// `ssl` (APISIX's `kind`): for messages.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Route => "route",
            ResourceKind::Upstream => "upstream",
            ResourceKind::Service => "service",
            ResourceKind::PluginConfig => "plugin config",
            ResourceKind::GlobalRule => "global rule",
            ResourceKind::Ssl => "ssl",
        }
    }

    /// The path segment and etcd directory, as APISIX: `routes`,
    /// `upstreams`, `services`, `plugin_configs`, `global_rules`, `ssls`.
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Route => "routes",
            ResourceKind::Upstream => "upstreams",
            ResourceKind::Service => "services",
            ResourceKind::PluginConfig => "plugin_configs",
            ResourceKind::GlobalRule => "global_rules",
            ResourceKind::Ssl => "ssls",
        }
    }

    /// Where the object lives in etcd under `prefix` (`/apisix`): the
    /// `key` of every Admin API answer.
    pub fn key(self, prefix: &str, id: &str) -> String {
        format!("{prefix}/{}/{id}", self.plural())
    }

    pub fn of(self, s: &Stored) -> &Objects {
        match self {
            ResourceKind::Route => &s.routes,
            ResourceKind::Upstream => &s.upstreams,
            ResourceKind::Service => &s.services,
            ResourceKind::PluginConfig => &s.plugin_configs,
            ResourceKind::GlobalRule => &s.global_rules,
            ResourceKind::Ssl => &s.ssls,
        }
    }

    pub fn of_mut(self, s: &mut Stored) -> &mut Objects {
        match self {
            ResourceKind::Route => &mut s.routes,
            ResourceKind::Upstream => &mut s.upstreams,
            ResourceKind::Service => &mut s.services,
            ResourceKind::PluginConfig => &mut s.plugin_configs,
            ResourceKind::GlobalRule => &mut s.global_rules,
            ResourceKind::Ssl => &mut s.ssls,
        }
    }
}

/// One object's place in the store's history: etcd's `create_revision`
/// and `mod_revision` (APISIX's `createdIndex`, `modifiedIndex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revs {
    pub created: i64,
    pub modified: i64,
}

/// What a store holds, as of one of its revisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned {
    pub data: Stored,
    /// Each object's revisions (also for a stored value that is not a
    /// valid object, left out of `data`). Empty for a store without
    /// revisions.
    pub revs: BTreeMap<(ResourceKind, String), Revs>,
    /// The store revision this is as of; 0 for a store without revisions.
    pub revision: i64,
}

impl Versioned {
    /// A set without revisions (the file).
    pub fn unversioned(data: Stored) -> Versioned {
        Versioned {
            data,
            ..Versioned::default()
        }
    }

    /// The revisions of one object, if it is stored.
    pub fn revs_of(&self, kind: ResourceKind, id: &str) -> Option<Revs> {
        self.revs.get(&(kind, id.to_string())).copied()
    }

    /// The `mod_revision` a guard on this object expects: 0 when absent.
    pub fn modified(&self, kind: ResourceKind, id: &str) -> i64 {
        self.revs_of(kind, id).map_or(0, |r| r.modified)
    }

    /// Applies one change seen at `revs.modified` (a watch event): `Some`
    /// puts, `None` deletes. Changes at or before [`Versioned::revision`]
    /// are already in and are ignored; returns whether it applied. A value
    /// that is not a valid object keeps its revisions but stays out of
    /// `data` (with a warning).
    pub fn apply(
        &mut self,
        kind: ResourceKind,
        id: &str,
        value: Option<&[u8]>,
        revs: Revs,
    ) -> bool {
        if revs.modified <= self.revision {
            return false;
        }
        self.revision = revs.modified;
        let objects = kind.of_mut(&mut self.data);
        match value {
            None => {
                objects.remove(id);
                self.revs.remove(&(kind, id.to_string()));
            }
            Some(bytes) => {
                self.revs.insert((kind, id.to_string()), revs);
                match parse_object(kind, id, bytes) {
                    Ok(v) => {
                        objects.insert(id.to_string(), v);
                    }
                    Err(e) => {
                        tracing::warn!(%id, "store: {} {id:?} left out: {e}", kind.name());
                        objects.remove(id);
                    }
                }
            }
        }
        true
    }
}

/// A stored value as an object of `kind` whose `id` is `id`.
pub fn parse_object(kind: ResourceKind, id: &str, bytes: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    match v.get("id") {
        _ if !v.is_object() => Err("not a JSON object".into()),
        Some(stored) if crate::apisix::route::id_text(stored).as_deref() == Some(id) => Ok(v),
        _ => Err(format!(
            "not a {} object whose \"id\" is {id:?}",
            kind.name()
        )),
    }
}

/// A condition a [`Write`] is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The object's `mod_revision` is still this (0: it is still absent).
    Unchanged {
        kind: ResourceKind,
        id: String,
        modified: i64,
    },
    /// No object of `kind` was created or changed after `revision`.
    NoneChangedSince { kind: ResourceKind, revision: i64 },
}

/// One change: put (`value` is `Some`) or delete one object, if every
/// guard holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub kind: ResourceKind,
    pub id: String,
    pub value: Option<Value>,
    pub guards: Vec<Guard>,
}

/// How a write was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The whole next set was saved: publish it (the file).
    Saved,
    /// Done at this store revision; the store's watch brings it back.
    At { revision: i64 },
}

/// What [`Store`] calls return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why routes could not be loaded or saved.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed (`op` says which, on `path`).
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file exists but is not a route set this sidecar wrote.
    Corrupt { path: PathBuf, reason: String },
    /// The store cannot be reached (etcd down): nothing was written.
    Unavailable(String),
    /// A guard of the write did not hold: nothing was written; this is
    /// what the store holds now.
    Conflict(Box<Versioned>),
    /// A store that is not a file failed (test doubles, etcd errors).
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { op, path, source } => {
                write!(f, "cannot {op} {}: {source}", path.display())
            }
            StoreError::Corrupt { path, reason } => {
                write!(f, "{} is not a route file: {reason}", path.display())
            }
            StoreError::Unavailable(msg) | StoreError::Other(msg) => f.write_str(msg),
            StoreError::Conflict(now) => write!(
                f,
                "changed concurrently (the store is at revision {})",
                now.revision
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Durable storage for the route and upstream set.
pub trait Store: Send + Sync {
    /// Everything stored, as of the store's current revision.
    fn load(&self) -> StoreFuture<'_, Versioned>;

    /// Makes `write` if its guards hold ([`StoreError::Conflict`] if
    /// not); `next` is the whole set after it, for a store that keeps the
    /// whole set. Either fully done or not at all. Callers in one process
    /// serialize their writes.
    fn write<'a>(&'a self, write: &'a Write, next: &'a Stored) -> StoreFuture<'a, Written>;

    /// The prefix of the keys shown in answers (`/apisix`).
    fn prefix(&self) -> &str {
        "/apisix"
    }
}

/// Routes in memory, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: std::sync::Mutex<Stored>,
}

#[cfg(test)]
impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    pub fn with(data: Stored) -> MemoryStore {
        MemoryStore {
            data: std::sync::Mutex::new(data),
        }
    }

    /// What is stored now.
    pub fn data(&self) -> Stored {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The routes stored now.
    pub fn routes(&self) -> Routes {
        self.data().routes
    }
}

#[cfg(test)]
impl MemoryStore {
    /// Replaces what is stored.
    pub fn set(&self, data: &Stored) {
        *self.data.lock().unwrap_or_else(|p| p.into_inner()) = data.clone();
    }
}

#[cfg(test)]
impl Store for MemoryStore {
    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move { Ok(Versioned::unversioned(self.data())) })
    }

    fn write<'a>(&'a self, _write: &'a Write, next: &'a Stored) -> StoreFuture<'a, Written> {
        Box::pin(async move {
            self.set(next);
            Ok(Written::Saved)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Stored {
        let mut r = Routes::new();
        r.insert(
            "a".into(),
            json!({"id": "a", "uri": "/a", "create_time": 1, "update_time": 2,
                   "plugins": {"openid-connect": {"client_secret": "s3cr3t"}}}),
        );
        r.insert(
            "b".into(),
            json!({"id": "b", "uri": "/b", "upstream_id": "u"}),
        );
        let mut u = Upstreams::new();
        u.insert(
            "u".into(),
            json!({"id": "u", "nodes": {"127.0.0.1:80": 1}, "type": "roundrobin"}),
        );
        let mut services = Objects::new();
        services.insert(
            "s".into(),
            json!({"id": "s", "upstream_id": "u",
                   "plugins": {"openid-connect": {"client_secret": "x"}}}),
        );
        let mut plugin_configs = Objects::new();
        plugin_configs.insert("pc".into(), json!({"id": "pc", "plugins": {}}));
        let mut global_rules = Objects::new();
        global_rules.insert("g".into(), json!({"id": "g", "plugins": {}}));
        let mut ssls = Objects::new();
        ssls.insert("1".into(), json!({"id": "1", "snis": ["a.example"]}));
        Stored {
            routes: r,
            upstreams: u,
            services,
            plugin_configs,
            global_rules,
            ssls,
        }
    }

    #[test]
    fn a_missing_file_is_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().join("routes.json"));
        assert_eq!(s.read().unwrap(), Stored::default());
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().join("routes.json"));
        s.replace(&sample()).unwrap();
        assert_eq!(s.read().unwrap(), sample());
        // A second store on the same file (a restart) sees the same.
        assert_eq!(
            FileStore::new(dir.path().join("routes.json"))
                .read()
                .unwrap(),
            sample()
        );
        let mut fewer = sample();
        fewer.routes.remove("a");
        fewer.upstreams.clear();
        s.replace(&fewer).unwrap();
        assert_eq!(s.read().unwrap(), fewer);
        s.replace(&Stored::default()).unwrap();
        assert_eq!(s.read().unwrap(), Stored::default());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["routes.json".to_string()]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_even_when_it_was_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let s = FileStore::new(&path);
        s.replace(&sample()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        s.replace(&sample()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let s = FileStore::new(&path);
        for (bad, want) in [
            (&b"{\"routes\": {\"a\": "[..], "invalid JSON"),
            (b"", "invalid JSON"),
            (b"[]", "expected {\"routes\""),
            (b"{\"routes\": []}", "expected {\"routes\""),
            (b"{\"routes\": {\"a\": {\"id\": \"b\"}}}", "route \"a\""),
            (b"{\"routes\": {\"a\": 5}}", "route \"a\""),
            (
                b"{\"routes\": {}, \"upstreams\": []}",
                "expected \"upstreams\"",
            ),
            (
                b"{\"routes\": {}, \"upstreams\": {\"u\": {\"id\": \"v\"}}}",
                "upstream \"u\"",
            ),
            (
                b"{\"routes\": {}, \"services\": 1}",
                "expected \"services\"",
            ),
            (
                b"{\"routes\": {}, \"plugin_configs\": {\"p\": {\"id\": \"q\"}}}",
                "plugin config \"p\"",
            ),
            (
                b"{\"routes\": {}, \"global_rules\": {\"g\": []}}",
                "global rule \"g\"",
            ),
            (b"{\"routes\": {}, \"ssls\": []}", "expected \"ssls\""),
            (b"{\"upstreams\": {}}", "expected {\"routes\""),
        ] {
            fs::write(&path, bad).unwrap();
            let e = s.read().unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(want), "{e}");
            assert!(e.to_string().contains("routes.json"), "{e}");
        }
    }

    #[test]
    fn a_failed_save_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let s = FileStore::new(&path);
        s.replace(&sample()).unwrap();
        // The target is now a non-empty directory: the rename fails.
        let blocked = FileStore::new(dir.path().join("sub"));
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/x"), b"x").unwrap();
        let e = blocked.replace(&sample()).unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        assert_eq!(s.read().unwrap(), sample());
        // A directory that does not exist.
        let nowhere = FileStore::new(dir.path().join("missing/routes.json"));
        assert!(nowhere.replace(&sample()).is_err());
        // Nothing but what was there before.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["routes.json".to_string(), "sub".to_string()]);
    }

    #[test]
    fn a_routes_only_file_still_loads() {
        // The format before upstreams existed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        fs::write(
            &path,
            br#"{"routes": {"a": {"id": "a", "uri": "/a", "upstream": {"nodes": {"127.0.0.1:80": 1}}}}}"#,
        )
        .unwrap();
        let s = FileStore::new(&path);
        let loaded = s.read().unwrap();
        assert_eq!(loaded.routes.len(), 1);
        assert!(loaded.upstreams.is_empty());
        // Saved back, it gains an empty upstream set and loads the same.
        s.replace(&loaded).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"upstreams\": {}"), "{text}");
        assert_eq!(s.read().unwrap(), loaded);
    }

    #[test]
    fn a_file_without_the_newer_kinds_loads_with_none_of_them() {
        // The format before services, plugin configs, global rules and SSL
        // objects were stored.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        fs::write(
            &path,
            br#"{"routes": {"a": {"id": "a", "uri": "/a", "upstream_id": "u"}},
                 "upstreams": {"u": {"id": "u", "nodes": {"127.0.0.1:80": 1}}}}"#,
        )
        .unwrap();
        let s = FileStore::new(&path);
        let loaded = s.read().unwrap();
        assert_eq!(loaded.routes.len(), 1);
        assert_eq!(loaded.upstreams.len(), 1);
        for kind in [
            ResourceKind::Service,
            ResourceKind::PluginConfig,
            ResourceKind::GlobalRule,
            ResourceKind::Ssl,
        ] {
            assert!(kind.of(&loaded).is_empty(), "{kind:?}");
        }
        // Saved back, it gains every member and loads the same.
        s.replace(&loaded).unwrap();
        let doc: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for kind in ResourceKind::ALL {
            assert!(doc[kind.plural()].is_object(), "{kind:?}: {doc}");
        }
        assert_eq!(s.read().unwrap(), loaded);
    }

    #[test]
    fn every_kind_has_its_own_place() {
        let mut data = Stored::default();
        for kind in ResourceKind::ALL {
            kind.of_mut(&mut data)
                .insert(kind.name().into(), json!({"id": kind.name()}));
        }
        for kind in ResourceKind::ALL {
            assert_eq!(kind.of(&data).len(), 1, "{kind:?}");
            assert!(kind.of(&data).contains_key(kind.name()), "{kind:?}");
        }
        let mut names: Vec<_> = ResourceKind::ALL.iter().map(|k| k.plural()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ResourceKind::ALL.len());
    }

    #[tokio::test]
    async fn memory_store_round_trip() {
        let s = MemoryStore::new();
        assert_eq!(s.load().await.unwrap(), Versioned::default());
        let w = Write {
            kind: ResourceKind::Route,
            id: "a".into(),
            value: None,
            guards: vec![],
        };
        assert_eq!(s.write(&w, &sample()).await.unwrap(), Written::Saved);
        assert_eq!(s.load().await.unwrap().data, sample());
        assert_eq!(MemoryStore::with(sample()).data(), sample());
    }

    #[tokio::test]
    async fn the_file_store_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let s = FileStore::new(&path);
        s.replace(&sample()).unwrap();
        let mut next = sample();
        next.routes["a"]["uri"] = json!("/a2");
        let w = Write {
            kind: ResourceKind::Route,
            id: "a".into(),
            value: Some(next.routes["a"].clone()),
            // Ignored: one process, one writer.
            guards: vec![Guard::Unchanged {
                kind: ResourceKind::Route,
                id: "a".into(),
                modified: 7,
            }],
        };
        assert_eq!(s.write(&w, &next).await.unwrap(), Written::Saved);
        // In the log, not in the snapshot.
        assert_eq!(FileStore::new(&path).read_snapshot().unwrap(), sample());
        let loaded = FileStore::new(&path).load().await.unwrap();
        assert_eq!(loaded, Versioned::unversioned(next.clone()));
        assert_eq!(loaded.revision, 0);
        assert!(loaded.revs.is_empty());
        assert_eq!(s.prefix(), "/apisix");
        // Loading folded the log into the snapshot.
        assert_eq!(FileStore::new(&path).read_snapshot().unwrap(), next);
        assert_eq!(fs::metadata(s.log_path()).unwrap().len(), 0);
    }

    /// Writes as the Admin API makes them: `next` is the set before plus
    /// the write.
    async fn put(s: &FileStore, set: &mut Stored, kind: ResourceKind, id: &str, v: Option<Value>) {
        match &v {
            Some(v) => kind.of_mut(set).insert(id.to_string(), v.clone()),
            None => kind.of_mut(set).remove(id),
        };
        let w = Write {
            kind,
            id: id.into(),
            value: v,
            guards: vec![],
        };
        assert_eq!(s.write(&w, set).await.unwrap(), Written::Saved);
    }

    /// The log: one line per write, puts and deletes of every kind replayed
    /// in order on the snapshot, folded after `compact_after` lines; a
    /// cut-off last line (a crash in the middle of an append) is ignored
    /// and cut off at load; a bad line before the last is an error; the
    /// log is private.
    #[tokio::test]
    async fn writes_go_to_a_log_replayed_on_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let s = FileStore::new(&path).compact_after(5);
        let mut set = Stored::default();
        put(
            &s,
            &mut set,
            ResourceKind::Upstream,
            "u",
            Some(json!({"id": "u", "nodes": {}})),
        )
        .await;
        put(
            &s,
            &mut set,
            ResourceKind::Route,
            "a",
            Some(json!({"id": "a", "uri": "/a"})),
        )
        .await;
        put(
            &s,
            &mut set,
            ResourceKind::Route,
            "b",
            Some(json!({"id": "b", "uri": "/b"})),
        )
        .await;
        put(&s, &mut set, ResourceKind::Route, "a", None).await;
        assert!(!path.exists(), "no snapshot before the fold");
        let log = fs::read_to_string(s.log_path()).unwrap();
        assert_eq!(log.lines().count(), 4, "{log}");
        assert!(log.ends_with("\"value\":null}\n"), "{log}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(s.log_path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(FileStore::new(&path).read().unwrap(), set);
        // The fifth write folds: the snapshot has everything, the log
        // nothing.
        put(
            &s,
            &mut set,
            ResourceKind::Ssl,
            "x",
            Some(json!({"id": "x"})),
        )
        .await;
        assert_eq!(fs::metadata(s.log_path()).unwrap().len(), 0);
        assert_eq!(FileStore::new(&path).read_snapshot().unwrap(), set);
        put(
            &s,
            &mut set,
            ResourceKind::Route,
            "c",
            Some(json!({"id": "c", "uri": "/c"})),
        )
        .await;

        // A crash in the middle of an append: that write was never
        // acknowledged and is not there; the rest is.
        let mut f = OpenOptions::new().append(true).open(s.log_path()).unwrap();
        f.write_all(br#"{"kind":"routes","id":"d","value":{"id":"d","ur"#)
            .unwrap();
        drop(f);
        let again = FileStore::new(&path);
        let loaded = again.load().await.unwrap();
        assert_eq!(loaded.data, set);
        // Folded and cut off at load: the next write appends after it.
        assert_eq!(fs::metadata(again.log_path()).unwrap().len(), 0);
        put(
            &again,
            &mut set,
            ResourceKind::Route,
            "e",
            Some(json!({"id": "e", "uri": "/e"})),
        )
        .await;
        assert_eq!(FileStore::new(&path).read().unwrap(), set);

        // A line that does not read, not the last: an error, not a shorter
        // set.
        let mut f = OpenOptions::new().append(true).open(s.log_path()).unwrap();
        f.write_all(b"{\"kind\":\"routes\",\"id\":\"f\"}\n")
            .unwrap();
        f.write_all(b"{\"kind\":\"routes\",\"id\":\"e\",\"value\":null}\n")
            .unwrap();
        drop(f);
        let e = FileStore::new(&path).read().unwrap_err();
        assert!(e.to_string().contains("routes.json.log"), "{e}");
        assert!(e.to_string().contains("line 2: no \"value\""), "{e}");
    }

    /// A store written by the one-file format (every write replaced the
    /// file) loads as it is, and writes go on in the log.
    #[tokio::test]
    async fn a_file_of_the_one_file_format_loads_and_takes_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let mut doc = serde_json::Map::new();
        for k in ResourceKind::ALL {
            let objects: serde_json::Map<String, Value> = k
                .of(&sample())
                .iter()
                .map(|(i, v)| (i.clone(), v.clone()))
                .collect();
            doc.insert(k.plural().into(), Value::Object(objects));
        }
        fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        let s = FileStore::new(&path);
        let mut set = s.load().await.unwrap().data;
        assert_eq!(set, sample());
        assert!(!s.log_path().exists(), "nothing to fold");
        put(&s, &mut set, ResourceKind::Route, "b", None).await;
        assert_eq!(FileStore::new(&path).read().unwrap(), set);
        assert_eq!(FileStore::new(&path).read_snapshot().unwrap(), sample());
    }

    #[test]
    fn keys_are_laid_out_like_apisix() {
        assert_eq!(ResourceKind::Route.key("/apisix", "1"), "/apisix/routes/1");
        assert_eq!(ResourceKind::Upstream.key("/gw", "u"), "/gw/upstreams/u");
        assert_eq!(
            ResourceKind::Service.key("/apisix", "s"),
            "/apisix/services/s"
        );
        assert_eq!(
            ResourceKind::PluginConfig.key("/apisix", "1"),
            "/apisix/plugin_configs/1"
        );
        assert_eq!(
            ResourceKind::GlobalRule.key("/apisix", "1"),
            "/apisix/global_rules/1"
        );
        assert_eq!(ResourceKind::Ssl.key("/apisix", "1"), "/apisix/ssls/1");
    }

    fn revs(created: i64, modified: i64) -> Revs {
        Revs { created, modified }
    }

    #[test]
    fn watch_events_apply_in_revision_order_once() {
        let mut v = Versioned {
            revision: 10,
            ..Versioned::default()
        };
        let a1 = br#"{"id": "a", "uri": "/1"}"#;
        let a2 = br#"{"id": "a", "uri": "/2"}"#;
        // Already seen: ignored.
        assert!(!v.apply(ResourceKind::Route, "a", Some(a1), revs(9, 9)));
        assert!(v.data.routes.is_empty());
        assert!(v.apply(ResourceKind::Route, "a", Some(a1), revs(11, 11)));
        assert!(v.apply(ResourceKind::Route, "a", Some(a2), revs(11, 12)));
        assert_eq!(v.data.routes["a"]["uri"], "/2");
        assert_eq!(v.revs_of(ResourceKind::Route, "a"), Some(revs(11, 12)));
        assert_eq!(v.modified(ResourceKind::Route, "a"), 12);
        assert_eq!(v.revision, 12);
        // A replayed older event does not bring the old value back.
        assert!(!v.apply(ResourceKind::Route, "a", Some(a1), revs(11, 11)));
        assert_eq!(v.data.routes["a"]["uri"], "/2");
        // Delete.
        assert!(v.apply(ResourceKind::Route, "a", None, revs(0, 13)));
        assert!(v.data.routes.is_empty());
        assert_eq!(v.modified(ResourceKind::Route, "a"), 0);
        assert_eq!(v.revision, 13);
        // An upstream, numeric id in the value.
        assert!(v.apply(
            ResourceKind::Upstream,
            "7",
            Some(br#"{"id": 7}"#),
            revs(14, 14)
        ));
        assert!(v.data.upstreams.contains_key("7"));
        // Every other kind has its own set and revisions.
        for (i, kind) in [
            ResourceKind::Service,
            ResourceKind::PluginConfig,
            ResourceKind::GlobalRule,
            ResourceKind::Ssl,
        ]
        .into_iter()
        .enumerate()
        {
            let rev = 15 + i as i64;
            assert!(v.apply(kind, "7", Some(br#"{"id": "7"}"#), revs(rev, rev)));
            assert!(kind.of(&v.data).contains_key("7"), "{kind:?}");
            assert_eq!(v.modified(kind, "7"), rev);
        }
        assert_eq!(v.modified(ResourceKind::Upstream, "7"), 14);
        assert!(v.apply(ResourceKind::Ssl, "7", None, revs(0, 19)));
        assert!(v.data.ssls.is_empty());
        assert_eq!(v.data.global_rules.len(), 1);
    }

    #[test]
    fn a_bad_value_keeps_its_revision_but_not_its_data() {
        let mut v = Versioned::default();
        for (i, bad) in [&b"{"[..], b"[]", br#"{"id": "b"}"#, br#"{"uri": "/"}"#]
            .into_iter()
            .enumerate()
        {
            let rev = i as i64 + 1;
            assert!(v.apply(ResourceKind::Route, "a", Some(bad), revs(1, rev)));
            assert!(v.data.routes.is_empty(), "{bad:?}");
            // A guard on it expects what is there.
            assert_eq!(v.modified(ResourceKind::Route, "a"), rev);
        }
        assert!(parse_object(ResourceKind::Route, "a", b"[]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(parse_object(ResourceKind::Upstream, "a", br#"{"id": "b"}"#)
            .unwrap_err()
            .contains("upstream"));
    }
}
