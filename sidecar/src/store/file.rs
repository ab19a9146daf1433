//! FileStore: every kind of object in one JSON file, replaced
//! atomically on each save (no revisions).

use super::*;

/// The routes in one JSON file, replaced atomically on each save.
#[derive(Debug)]
pub struct FileStore {
    pub(super) path: PathBuf,
}

/// Distinguishes temporary files of saves in one process.
pub(super) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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
    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move { self.read().map(Versioned::unversioned) })
    }

    fn write<'a>(&'a self, _write: &'a Write, next: &'a Stored) -> StoreFuture<'a, Written> {
        let file = FileStore::new(self.path.clone());
        let next = next.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || file.replace(&next))
                .await
                .map_err(|_| StoreError::Other("the save was interrupted".into()))?
                .map(|()| Written::Saved)
        })
    }
}

impl FileStore {
    /// The stored set (a missing file is an empty set).
    pub fn read(&self) -> Result<Stored, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(e) => return Err(self.io("read", e)),
        };
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("invalid JSON: {e}")))?;
        if !doc.get("routes").is_some_and(Value::is_object) {
            return Err(self.corrupt("expected {\"routes\": {...}}"));
        }
        let mut stored = Stored::default();
        for kind in ResourceKind::ALL {
            let objects = match doc.get(kind.plural()) {
                // A file from before this kind existed.
                None => continue,
                Some(o) => o.as_object().ok_or_else(|| {
                    self.corrupt(format!("expected \"{}\": {{...}}", kind.plural()))
                })?,
            };
            *kind.of_mut(&mut stored) = self.objects(kind.name(), objects)?;
        }
        Ok(stored)
    }

    /// Replaces the file with `data`, atomically.
    pub fn replace(&self, data: &Stored) -> Result<(), StoreError> {
        let doc = Value::Object(
            ResourceKind::ALL
                .into_iter()
                .map(|k| {
                    let objects = Map::from_iter(k.of(data).clone());
                    (k.plural().to_string(), Value::Object(objects))
                })
                .collect(),
        );
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
pub(super) fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
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

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
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
