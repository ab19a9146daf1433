//! Where the Admin API keeps its routes and upstreams between runs: APISIX
//! keeps them in etcd, the sidecar in one JSON file.
//!
//! The file is `{"routes": {"<id>": <route object>, ...}, "upstreams":
//! {"<id>": <upstream object>, ...}}`: the stored objects (with `id`,
//! `create_time`, `update_time` and the real secrets, so it is created with
//! mode 0600). A file without `"upstreams"` (written before upstreams
//! existed) loads with none. It is replaced as a whole on every write,
//! atomically: a crash leaves the old file or the new one, never a mix. A
//! missing file is an empty set; a file that cannot be read as that shape
//! is an error, never an empty set (that would lose every route on the
//! next write).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

/// Route id → stored route object.
pub type Routes = BTreeMap<String, Value>;

/// Upstream id → stored upstream object.
pub type Upstreams = BTreeMap<String, Value>;

/// Everything the Admin API stores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub routes: Routes,
    pub upstreams: Upstreams,
}

#[cfg(test)]
impl Stored {
    /// Routes only (no upstreams).
    pub fn with_routes(routes: Routes) -> Stored {
        Stored {
            routes,
            upstreams: Upstreams::new(),
        }
    }
}

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
    /// A store that is not a file failed (test doubles, future stores).
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
            StoreError::Other(msg) => f.write_str(msg),
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

/// Durable storage for the whole route and upstream set. `save` replaces
/// everything stored with `data`; it either fully succeeds or leaves what
/// was stored unchanged. Callers serialize their saves.
pub trait Store: Send + Sync {
    fn load(&self) -> Result<Stored, StoreError>;
    fn save(&self, data: &Stored) -> Result<(), StoreError>;
}

/// The routes in one JSON file, replaced atomically on each save.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

/// Distinguishes temporary files of saves in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore { path: path.into() }
    }

    fn io(&self, op: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The directory the file lives in (`.` for a bare file name).
    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The objects of one kind, each carrying its own id.
    fn objects(
        &self,
        kind: &str,
        objects: &Map<String, Value>,
    ) -> Result<BTreeMap<String, Value>, StoreError> {
        let mut out = BTreeMap::new();
        for (id, v) in objects {
            match v.get("id").and_then(Value::as_str) {
                Some(stored) if stored == id && v.is_object() => {}
                _ => {
                    return Err(self.corrupt(format!(
                        "{kind} {id:?} is not an object whose \"id\" is {id:?}"
                    )))
                }
            }
            out.insert(id.clone(), v.clone());
        }
        Ok(out)
    }

    fn temp_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "routes".into());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir()
            .join(format!(".{name}.tmp.{}.{n}", std::process::id()))
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<Stored, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(e) => return Err(self.io("read", e)),
        };
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("invalid JSON: {e}")))?;
        let Some(routes) = doc.get("routes").and_then(Value::as_object) else {
            return Err(self.corrupt("expected {\"routes\": {...}}"));
        };
        let upstreams = match doc.get("upstreams") {
            // A file from before upstreams existed.
            None => &Map::new(),
            Some(u) => u
                .as_object()
                .ok_or_else(|| self.corrupt("expected \"upstreams\": {...}"))?,
        };
        Ok(Stored {
            routes: self.objects("route", routes)?,
            upstreams: self.objects("upstream", upstreams)?,
        })
    }

    fn save(&self, data: &Stored) -> Result<(), StoreError> {
        let doc = serde_json::json!({
            "routes": Map::from_iter(data.routes.clone()),
            "upstreams": Map::from_iter(data.upstreams.clone()),
        });
        let mut bytes = serde_json::to_vec_pretty(&doc)
            .map_err(|e| StoreError::Other(format!("cannot encode the routes: {e}")))?;
        bytes.push(b'\n');

        let tmp = self.temp_path();
        let written = write_new_private(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(self.io("write", e));
        }
        // The rename is durable once the directory entry is.
        sync_dir(&self.dir()).map_err(|e| self.io("sync the directory of", e))
    }
}

/// Creates `path` (which must not exist) readable by the owner only, writes
/// `bytes` and flushes them to disk.
fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
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
impl Store for MemoryStore {
    fn load(&self) -> Result<Stored, StoreError> {
        Ok(self.data())
    }

    fn save(&self, data: &Stored) -> Result<(), StoreError> {
        *self.data.lock().unwrap_or_else(|p| p.into_inner()) = data.clone();
        Ok(())
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
        Stored {
            routes: r,
            upstreams: u,
        }
    }

    #[test]
    fn a_missing_file_is_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().join("routes.json"));
        assert_eq!(s.load().unwrap(), Stored::default());
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().join("routes.json"));
        s.save(&sample()).unwrap();
        assert_eq!(s.load().unwrap(), sample());
        // A second store on the same file (a restart) sees the same.
        assert_eq!(
            FileStore::new(dir.path().join("routes.json"))
                .load()
                .unwrap(),
            sample()
        );
        let mut fewer = sample();
        fewer.routes.remove("a");
        fewer.upstreams.clear();
        s.save(&fewer).unwrap();
        assert_eq!(s.load().unwrap(), fewer);
        s.save(&Stored::default()).unwrap();
        assert_eq!(s.load().unwrap(), Stored::default());
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
        s.save(&sample()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        s.save(&sample()).unwrap();
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
        ] {
            fs::write(&path, bad).unwrap();
            let e = s.load().unwrap_err();
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
        s.save(&sample()).unwrap();
        // The target is now a non-empty directory: the rename fails.
        let blocked = FileStore::new(dir.path().join("sub"));
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/x"), b"x").unwrap();
        let e = blocked.save(&sample()).unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        assert_eq!(s.load().unwrap(), sample());
        // A directory that does not exist.
        let nowhere = FileStore::new(dir.path().join("missing/routes.json"));
        assert!(nowhere.save(&sample()).is_err());
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
        let loaded = s.load().unwrap();
        assert_eq!(loaded.routes.len(), 1);
        assert!(loaded.upstreams.is_empty());
        // Saved back, it gains an empty upstream set and loads the same.
        s.save(&loaded).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"upstreams\": {}"), "{text}");
        assert_eq!(s.load().unwrap(), loaded);
    }

    #[test]
    fn memory_store_round_trip() {
        let s = MemoryStore::new();
        assert_eq!(s.load().unwrap(), Stored::default());
        s.save(&sample()).unwrap();
        assert_eq!(s.load().unwrap(), sample());
        assert_eq!(MemoryStore::with(sample()).data(), sample());
    }
}
