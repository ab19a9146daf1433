//! What the ADS server knows, for `/status`.

use super::*;

/// What the ADS server knows, for a status endpoint. Cheap to share.
#[derive(Debug, Default)]
pub struct XdsStatus {
    pub(super) inner: Mutex<StatusReport>,
}

/// A copy of [`XdsStatus`], serialisable.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusReport {
    /// Versions of the latest snapshot, by type (`clusters`, `endpoints`,
    /// `listeners`, `routes`, and `secrets` while an ssl is served).
    pub versions: BTreeMap<String, String>,
    /// What the latest translation left out (`route x: reason`).
    pub skipped: Vec<String>,
    /// What the latest routes hold that is valid but likely a mistake
    /// (login routes whose session cookies clash).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Number of connected Envoys (ADS streams).
    pub connected: usize,
    /// The connected streams, by stream number.
    pub streams: BTreeMap<u64, StreamStatus>,
    /// The last NACK per type.
    pub last_nack: BTreeMap<String, Nack>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamStatus {
    /// The Envoy's node id.
    pub node: String,
    /// Versions the Envoy accepted, by type.
    pub acked: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nack {
    pub node: String,
    /// The version Envoy refused.
    pub version: String,
    /// Envoy's message, secrets masked.
    pub message: String,
    /// Unix time, seconds.
    pub at: u64,
}

impl XdsStatus {
    pub fn new() -> Arc<XdsStatus> {
        Arc::new(XdsStatus::default())
    }

    fn lock(&self) -> MutexGuard<'_, StatusReport> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn report(&self) -> StatusReport {
        self.lock().clone()
    }

    pub(super) fn snapshot_built(&self, s: &Snapshot, skipped: &[String]) {
        let mut st = self.lock();
        st.versions = s.versions();
        st.skipped = skipped.to_vec();
    }

    pub(super) fn warnings(&self, warnings: &[String]) {
        self.lock().warnings = warnings.to_vec();
    }

    pub(super) fn stream_opened(&self, id: u64) {
        let mut st = self.lock();
        st.streams.insert(id, StreamStatus::default());
        st.connected = st.streams.len();
    }

    fn stream_closed(&self, id: u64) {
        let mut st = self.lock();
        st.streams.remove(&id);
        st.connected = st.streams.len();
    }

    pub(super) fn node(&self, id: u64, node: &str) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.node = node.to_string();
        }
    }

    pub(super) fn acked(&self, id: u64, kind: Kind, version: &str) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.acked.insert(kind.name().to_string(), version.to_string());
        }
    }

    pub(super) fn nacked(&self, kind: Kind, nack: Nack) {
        self.lock().last_nack.insert(kind.name().to_string(), nack);
    }
}

/// Removes a stream from the status when its task ends, however it ends.
pub(super) struct StreamGuard {
    pub(super) id: u64,
    pub(super) status: Arc<XdsStatus>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.status.stream_closed(self.id);
    }
}
