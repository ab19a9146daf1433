//! FileStore: every kind of object in one JSON file (the snapshot), and
//! the writes since in an append-only log beside it (no revisions).
//!
//! A write appends one line to `<file>.log` and syncs it: its cost does
//! not grow with the number of objects stored. The log is folded into the
//! snapshot (replaced atomically: temp + fsync + rename) when the store is
//! loaded and when it has grown past [`FileStore::compact_after`] lines;
//! then it is emptied. A line is `{"kind": "<plural>", "id": "<id>",
//! "value": <object>}` for a put and `{"kind": ..., "id": ..., "value":
//! null}` for a delete; replaying a line twice changes nothing, so a crash
//! between the new snapshot and the emptied log loses nothing. A last line
//! without its newline (a crash in the middle of an append, never
//! acknowledged) is ignored and cut off; any other line that does not read
//! is an error, never a silently shorter set.

use std::sync::Arc;

use super::*;

/// The routes in one JSON file and the writes since in a log beside it.
#[derive(Debug)]
pub struct FileStore {
    pub(super) path: PathBuf,
    /// The log file, open for appending, and how many lines it has.
    log: Arc<std::sync::Mutex<Log>>,
    compact_after: usize,
}

#[derive(Debug, Default)]
struct Log {
    file: Option<File>,
    lines: usize,
    /// The log may end in a cut-off line (an append that failed and could
    /// not be undone, or a fold at load that failed): the next write folds
    /// instead of appending.
    dirty: bool,
}

/// Distinguishes temporary files of saves in one process.
pub(super) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Log lines after which the log is folded into the snapshot at least
/// (more when more objects are stored: [`FileStore::compact_after`]).
pub const COMPACT_AFTER: usize = 1024;

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: path.into(),
            log: Arc::default(),
            compact_after: COMPACT_AFTER,
        }
    }

    /// The same, folding the log into the snapshot after `lines` lines (or
    /// as many as objects are stored, if more: so the log never costs more
    /// to replay than the snapshot to read, and a fold's cost is spread
    /// over as many writes as it copies objects).
    pub fn compact_after(mut self, lines: usize) -> FileStore {
        self.compact_after = lines.max(1);
        self
    }

    /// Where the writes since the snapshot are: `<file>.log`.
    pub fn log_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".log");
        PathBuf::from(p)
    }

    fn io(&self, op: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn log_io(&self, op: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: self.log_path(),
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
        dir_of(&self.path)
    }

    /// The objects of one kind, each carrying its own id.
    fn objects(&self, kind: &str, objects: &Map<String, Value>) -> Result<Objects, StoreError> {
        let mut out = Objects::new();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for FileStore {
    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move {
            let stored = self.read()?;
            // The log folded in: the next start reads one file, and appends
            // never follow a cut-off line.
            let pending = fs::metadata(self.log_path()).is_ok_and(|m| m.len() > 0);
            if pending {
                if let Err(e) = self.compact(&stored) {
                    tracing::warn!("store: cannot fold the log into the snapshot: {e}");
                    self.lock().dirty = true;
                }
            }
            Ok(Versioned::unversioned(stored))
        })
    }

    fn write<'a>(&'a self, write: &'a Write, next: &'a Stored) -> StoreFuture<'a, Written> {
        let file = FileStore {
            path: self.path.clone(),
            log: self.log.clone(),
            compact_after: self.compact_after,
        };
        let line = log_line(write);
        let next = next.clone();
        Box::pin(async move {
            let line = line?;
            tokio::task::spawn_blocking(move || file.append(&line, &next))
                .await
                .map_err(|_| StoreError::Other("the save was interrupted".into()))?
                .map(|()| Written::Saved)
        })
    }
}

/// One write as a log line (with its newline).
fn log_line(write: &Write) -> Result<Vec<u8>, StoreError> {
    let line = serde_json::json!({
        "kind": write.kind.plural(),
        "id": write.id,
        "value": write.value,
    });
    let mut bytes = serde_json::to_vec(&line)
        .map_err(|e| StoreError::Other(format!("cannot encode the write: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

impl FileStore {
    /// The stored set: the snapshot (a missing file is an empty set) with
    /// the log's writes applied. A cut-off last line of the log is ignored.
    pub fn read(&self) -> Result<Stored, StoreError> {
        let mut stored = self.read_snapshot()?;
        let log = match fs::read(self.log_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(stored),
            Err(e) => return Err(self.log_io("read", e)),
        };
        let whole = log.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < log.len() {
            tracing::warn!(
                log = %self.log_path().display(),
                "store: the last write in the log is cut off (never acknowledged): ignored"
            );
        }
        for (n, line) in log[..whole].split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.apply_line(&mut stored, line)
                .map_err(|reason| StoreError::Corrupt {
                    path: self.log_path(),
                    reason: format!("line {}: {reason}", n + 1),
                })?;
        }
        Ok(stored)
    }

    fn apply_line(&self, stored: &mut Stored, line: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .and_then(|k| ResourceKind::ALL.into_iter().find(|r| r.plural() == k))
            .ok_or("no known \"kind\"")?;
        let id = v.get("id").and_then(Value::as_str).ok_or("no \"id\"")?;
        match v.get("value") {
            None => Err("no \"value\"".into()),
            Some(Value::Null) => {
                kind.of_mut(stored).remove(id);
                Ok(())
            }
            Some(obj) if obj.is_object() && obj.get("id").and_then(Value::as_str) == Some(id) => {
                kind.of_mut(stored).insert(id.to_string(), obj.clone());
                Ok(())
            }
            Some(_) => Err(format!(
                "{} {id:?} is not an object whose \"id\" is {id:?}",
                kind.name()
            )),
        }
    }

    pub(super) fn read_snapshot(&self) -> Result<Stored, StoreError> {
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

    /// Appends one write to the log and syncs it; folds the log into the
    /// snapshot (`next`, the whole set after the write) when it is long.
    fn append(&self, line: &[u8], next: &Stored) -> Result<(), StoreError> {
        let mut log = self.lock();
        if log.dirty {
            drop(log);
            return self.compact(next);
        }
        if log.file.is_none() {
            let path = self.log_path();
            let mut opts = OpenOptions::new();
            opts.append(true).create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let existed = path.exists();
            let f = opts.open(&path).map_err(|e| self.log_io("open", e))?;
            private(&f).map_err(|e| self.log_io("restrict", e))?;
            if !existed {
                sync_dir(&self.dir()).map_err(|e| self.io("sync the directory of", e))?;
            }
            log.file = Some(f);
        }
        let Some(f) = log.file.as_mut() else {
            return Err(StoreError::Other("the log is not open".into()));
        };
        let end = f.metadata().map(|m| m.len());
        let written = f.write_all(line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Part of the line may be in the log: cut it off, else the next
            // write folds the whole set instead.
            let undone = end.and_then(|end| f.set_len(end).and_then(|()| f.sync_data()));
            if undone.is_err() {
                log.dirty = true;
            }
            return Err(self.log_io("append to", e));
        }
        log.lines += 1;
        let objects: usize = ResourceKind::ALL.iter().map(|k| k.of(next).len()).sum();
        if log.lines >= self.compact_after.max(objects) {
            drop(log);
            // The write is in the log: a failed fold is logged, not an
            // error of the write (the log is folded at the next start).
            if let Err(e) = self.compact(next) {
                tracing::warn!("store: cannot fold the log into the snapshot: {e}");
            }
        }
        Ok(())
    }

    /// Writes `data` (the whole set, the log's writes included) as the
    /// snapshot, then empties the log.
    pub(super) fn compact(&self, data: &Stored) -> Result<(), StoreError> {
        let mut log = self.lock();
        self.replace(data)?;
        let path = self.log_path();
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => File::create(&path),
                _ => Err(e),
            })
            .map_err(|e| self.log_io("empty", e))?;
        f.sync_all().map_err(|e| self.log_io("sync", e))?;
        private(&f).map_err(|e| self.log_io("restrict", e))?;
        // Appends go on after the end (O_APPEND), whatever the handle.
        log.lines = 0;
        log.dirty = false;
        Ok(())
    }

    /// Replaces the snapshot with `data`, atomically.
    pub fn replace(&self, data: &Stored) -> Result<(), StoreError> {
        let doc = Value::Object(
            ResourceKind::ALL
                .into_iter()
                .map(|k| {
                    let objects = k
                        .of(data)
                        .iter()
                        .map(|(id, v)| (id.clone(), v.clone()))
                        .collect();
                    (k.plural().to_string(), Value::Object(objects))
                })
                .collect(),
        );
        let mut bytes = serde_json::to_vec_pretty(&doc)
            .map_err(|e| StoreError::Other(format!("cannot encode the routes: {e}")))?;
        bytes.push(b'\n');

        replace_private(&self.path, &bytes).map_err(|e| self.io("write", e))
    }
}

/// Readable by the owner only (a log left by an older umask too).
fn private(f: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = f;
        Ok(())
    }
}

/// The directory `path` lives in (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Replaces `path` with `bytes`, whole or not at all, readable by the
/// owner only, durable when this returns: a new temp file beside it
/// (unique per process and call), synced, renamed over `path`, the
/// directory synced. The temp file is removed when a step fails.
pub(crate) fn replace_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "routes".into());
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = dir_of(path);
    let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
    let written = write_new_private(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory entry is.
    sync_dir(&dir)
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
