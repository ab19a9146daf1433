//! A state-of-the-world ADS server (Envoy's `AggregatedDiscoveryService`,
//! gRPC) that serves what [`translate`](crate::translate) makes of the
//! current route set, to any number of Envoys.
//!
//! - **Versions.** Each resource type (clusters, endpoints, listeners,
//!   route configurations) has its own version: the first 16 hex digits of
//!   a SHA-256 over that type's resources. A type whose resources did not
//!   change keeps its version and is not sent again. (The generated
//!   protobuf maps are `HashMap`s, so the same route metadata can encode in
//!   two byte orders; route configurations are hashed with their metadata
//!   in a canonical order instead of as encoded.)
//! - **Per stream and type** the server remembers what it last sent (version,
//!   resource names, nonce). A request answers a nonce: with the nonce of the
//!   last response it is an ACK, or a NACK when it carries `error_detail`
//!   (logged with secrets masked, and kept in [`XdsStatus`]); with an older
//!   nonce it is stale and ignored, as the xDS protocol asks. A type is sent
//!   when the stream first asks for it, when it asks for other resource
//!   names (a new EDS cluster), and when its version changes. A NACKed
//!   version is not sent again: Envoy keeps its previous configuration.
//! - **Order.** Every push goes clusters, endpoints, listeners, routes
//!   (Envoy's "make before break" rule for ADS). Changed clusters are
//!   followed by the endpoints again, changed or not: an updated `EDS`
//!   cluster stays warming (the old one serving) until it gets them. A route configuration that
//!   follows new `EDS` clusters waits (at most [`ROUTES_WAIT`]) until Envoy
//!   has asked for and been sent their endpoints, so that no route points at
//!   a cluster that is still warming (which would answer 503).
//! - **Changes** of the route set (the `watch` channel the Admin API
//!   writes) and of the extra provider URLs are pushed to every stream at
//!   once. The listener never changes with routes, so Envoy never drains it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value, Any, Struct, Value as PbValue};
use prost::Message;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::store::Stored;
use crate::translate::{to_any, translate, ProxySettings};

/// How long a route configuration waits for the endpoints of new clusters
/// to reach Envoy before it is sent anyway.
pub const ROUTES_WAIT: Duration = Duration::from_secs(2);

/// Identifies this server in its responses.
const CONTROL_PLANE: &str = "apisix-envoy-sidecar";
/// Longest NACK message kept or logged.
const MAX_MESSAGE: usize = 2000;
/// Longest node id kept or logged.
const MAX_NODE_ID: usize = 128;

/// The route and upstream set as the Admin API publishes it.
pub type Routes = Arc<Stored>;

// ---------------------------------------------------------------------------
// Resource types

/// The resource types served, in push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Clusters,
    Endpoints,
    Listeners,
    Routes,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Clusters,
        Kind::Endpoints,
        Kind::Listeners,
        Kind::Routes,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Clusters => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listeners => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Routes => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name for logs and the status.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Clusters => "clusters",
            Kind::Endpoints => "endpoints",
            Kind::Listeners => "listeners",
            Kind::Routes => "routes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Listeners and clusters are asked for as a whole (wildcard).
    fn wildcard(self) -> bool {
        matches!(self, Kind::Clusters | Kind::Listeners)
    }
}

/// The resources of one type, by name, and their version.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeSnapshot {
    pub version: String,
    pub resources: Vec<(String, Any)>,
}

/// Everything served for one route set.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    types: [TypeSnapshot; 4],
    /// Secret values of the plugin configs, masked in NACK messages.
    secrets: Arc<Vec<String>>,
}

impl Snapshot {
    /// Translates the routes (with their upstreams) and versions the
    /// result. Also returns what the translation left out (for the log).
    pub fn build(
        stored: &Stored,
        settings: &ProxySettings,
        extra_provider_urls: &[String],
    ) -> (Snapshot, Vec<crate::translate::Skipped>) {
        let r = translate(stored, settings, extra_provider_urls);
        let clusters = r
            .clusters
            .iter()
            .map(|c| (c.name.clone(), to_any(c), c.encode_to_vec()));
        let endpoints = r
            .endpoints
            .iter()
            .map(|e| (e.cluster_name.clone(), to_any(e), e.encode_to_vec()));
        let listeners = r
            .listeners
            .iter()
            .map(|l| (l.name.clone(), to_any(l), l.encode_to_vec()));
        let routes_ = r
            .route_configs
            .iter()
            .map(|rc| (rc.name.clone(), to_any(rc), canonical_route_config(rc)));
        let typed = |items: Vec<(String, Any, Vec<u8>)>| {
            let mut h = Sha256::new();
            for (name, _, canonical) in &items {
                put(&mut h, name.as_bytes());
                put(&mut h, canonical);
            }
            TypeSnapshot {
                version: short_hex(&h.finalize()),
                resources: items.into_iter().map(|(n, a, _)| (n, a)).collect(),
            }
        };
        let snapshot = Snapshot {
            types: [
                typed(clusters.collect()),
                typed(endpoints.collect()),
                typed(listeners.collect()),
                typed(routes_.collect()),
            ],
            secrets: Arc::new(secrets_of(&stored.routes)),
        };
        (snapshot, r.skipped)
    }

    pub fn get(&self, kind: Kind) -> &TypeSnapshot {
        &self.types[kind.index()]
    }

    /// Type name → version.
    pub fn versions(&self) -> BTreeMap<String, String> {
        Kind::ALL
            .into_iter()
            .map(|k| (k.name().to_string(), self.get(k).version.clone()))
            .collect()
    }

    /// `text` with every secret of the route set masked, on one line,
    /// shortened.
    fn mask(&self, text: &str) -> String {
        clean(&mask(&self.secrets, text), MAX_MESSAGE)
    }
}

fn mask(secrets: &[String], text: &str) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "[redacted]");
    }
    out
}

/// Length-prefixed, so that concatenations cannot collide.
fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn short_hex(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Text from a peer, fit for one log line: control characters become
/// spaces, and at most `max` characters are kept.
fn clean(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// The bytes a route configuration's version is computed from: its
/// encoding without route metadata, followed by each route's metadata with
/// map keys sorted (prost encodes maps in `HashMap` order).
fn canonical_route_config(rc: &RouteConfiguration) -> Vec<u8> {
    let mut stripped = rc.clone();
    let mut tail = Vec::new();
    for vh in &mut stripped.virtual_hosts {
        for r in &mut vh.routes {
            match r.metadata.take() {
                None => tail.push(b'-'),
                Some(md) => {
                    tail.push(b'm');
                    let sorted: BTreeMap<&String, &Struct> = md.filter_metadata.iter().collect();
                    for (ns, st) in sorted {
                        canonical_bytes(&mut tail, ns.as_bytes());
                        canonical_struct(&mut tail, st);
                    }
                    let typed: BTreeMap<&String, &Any> = md.typed_filter_metadata.iter().collect();
                    for (ns, any) in typed {
                        canonical_bytes(&mut tail, ns.as_bytes());
                        canonical_bytes(&mut tail, &any.encode_to_vec());
                    }
                }
            }
        }
    }
    let mut out = stripped.encode_to_vec();
    out.extend_from_slice(&tail);
    out
}

fn canonical_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

fn canonical_struct(out: &mut Vec<u8>, s: &Struct) {
    out.push(b'{');
    let sorted: BTreeMap<&String, &PbValue> = s.fields.iter().collect();
    for (k, v) in sorted {
        canonical_bytes(out, k.as_bytes());
        canonical_value(out, v);
    }
    out.push(b'}');
}

fn canonical_value(out: &mut Vec<u8>, v: &PbValue) {
    match &v.kind {
        None => out.push(b'0'),
        Some(value::Kind::NullValue(_)) => out.push(b'n'),
        Some(value::Kind::NumberValue(n)) => {
            out.push(b'f');
            out.extend_from_slice(&n.to_bits().to_be_bytes());
        }
        Some(value::Kind::StringValue(s)) => {
            out.push(b's');
            canonical_bytes(out, s.as_bytes());
        }
        Some(value::Kind::BoolValue(b)) => out.push(if *b { b't' } else { b'F' }),
        Some(value::Kind::StructValue(s)) => canonical_struct(out, s),
        Some(value::Kind::ListValue(l)) => {
            out.push(b'[');
            for x in &l.values {
                canonical_value(out, x);
            }
            out.push(b']');
        }
    }
}

/// String values under secret-looking keys of every route's plugin config.
fn secrets_of(routes: &BTreeMap<String, Value>) -> Vec<String> {
    fn walk(v: &Value, secret_key: bool, out: &mut BTreeSet<String>) {
        match v {
            Value::String(s) if secret_key && s.len() >= 4 => {
                out.insert(s.clone());
                // As it appears inside JSON text (the metadata's config).
                if let Ok(quoted) = serde_json::to_string(s) {
                    out.insert(quoted.trim_matches('"').to_string());
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let k = k.to_ascii_lowercase();
                    let secret = ["secret", "password", "private_key", "token"]
                        .iter()
                        .any(|w| k.contains(w));
                    walk(x, secret_key || secret, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, secret_key, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for route in routes.values() {
        if let Some(plugins) = route.get("plugins") {
            walk(plugins, false, &mut out);
        }
    }
    // Longest first, so that a secret containing another is masked whole.
    let mut v: Vec<String> = out.into_iter().collect();
    v.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    v
}

// ---------------------------------------------------------------------------
// Status

/// What the ADS server knows, for a status endpoint. Cheap to share.
#[derive(Debug, Default)]
pub struct XdsStatus {
    inner: Mutex<StatusReport>,
}

/// A copy of [`XdsStatus`], serialisable.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusReport {
    /// Versions of the latest snapshot, by type (`clusters`, `endpoints`,
    /// `listeners`, `routes`).
    pub versions: BTreeMap<String, String>,
    /// What the latest translation left out (`route x: reason`).
    pub skipped: Vec<String>,
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

    fn snapshot_built(&self, s: &Snapshot, skipped: &[String]) {
        let mut st = self.lock();
        st.versions = s.versions();
        st.skipped = skipped.to_vec();
    }

    fn stream_opened(&self, id: u64) {
        let mut st = self.lock();
        st.streams.insert(id, StreamStatus::default());
        st.connected = st.streams.len();
    }

    fn stream_closed(&self, id: u64) {
        let mut st = self.lock();
        st.streams.remove(&id);
        st.connected = st.streams.len();
    }

    fn node(&self, id: u64, node: &str) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.node = node.to_string();
        }
    }

    fn acked(&self, id: u64, kind: Kind, version: &str) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.acked.insert(kind.name().to_string(), version.to_string());
        }
    }

    fn nacked(&self, kind: Kind, nack: Nack) {
        self.lock().last_nack.insert(kind.name().to_string(), nack);
    }
}

/// Removes a stream from the status when its task ends, however it ends.
struct StreamGuard {
    id: u64,
    status: Arc<XdsStatus>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.status.stream_closed(self.id);
    }
}

// ---------------------------------------------------------------------------
// The snapshot source shared by all streams

struct Cached {
    routes: Routes,
    providers: Arc<Vec<String>>,
    snapshot: Arc<Snapshot>,
}

/// The inputs, and the snapshot built from them (built once per change,
/// whichever stream notices first).
#[derive(Clone)]
struct Source {
    routes: watch::Receiver<Routes>,
    providers: watch::Receiver<Arc<Vec<String>>>,
    settings: Arc<ProxySettings>,
    cache: Arc<Mutex<Option<Cached>>>,
    status: Arc<XdsStatus>,
}

impl Source {
    fn current(&mut self) -> Arc<Snapshot> {
        let routes = self.routes.borrow_and_update().clone();
        let providers = self.providers.borrow_and_update().clone();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref() {
            if Arc::ptr_eq(&c.routes, &routes) && Arc::ptr_eq(&c.providers, &providers) {
                return c.snapshot.clone();
            }
        }
        let (snapshot, skipped) = Snapshot::build(&routes, &self.settings, &providers);
        let skipped: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.what, snapshot.mask(&s.reason)))
            .collect();
        for s in &skipped {
            tracing::warn!(skipped = %s, "left out of the Envoy configuration");
        }
        let snapshot = Arc::new(snapshot);
        tracing::info!(versions = ?snapshot.versions(), "xDS snapshot");
        self.status.snapshot_built(&snapshot, &skipped);
        *cache = Some(Cached {
            routes,
            providers,
            snapshot: snapshot.clone(),
        });
        snapshot
    }
}

// ---------------------------------------------------------------------------
// Per-stream protocol state (sync, so that it is tested without gRPC)

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    version: String,
    /// `None`: everything (wildcard).
    names: Option<BTreeSet<String>>,
    nonce: String,
    nacked: bool,
    /// The secrets of the snapshot sent (a NACK may quote its config).
    secrets: Arc<Vec<String>>,
}

#[derive(Debug, Default)]
struct TypeState {
    /// Envoy has asked for this type.
    requested: bool,
    names: Option<BTreeSet<String>>,
    sent: Option<Sent>,
}

/// What one ADS stream has asked for and been sent.
#[derive(Debug, Default)]
struct StreamState {
    id: u64,
    node: String,
    types: [TypeState; 4],
    nonces: u64,
    /// Since when a route configuration waits for endpoints.
    routes_waiting_since: Option<Instant>,
}

/// What a request turned out to be.
#[derive(Debug, Clone, PartialEq)]
enum Received {
    Initial,
    Ack,
    Nack(Nack),
    Stale,
    UnknownType,
}

impl StreamState {
    fn new(id: u64) -> StreamState {
        StreamState {
            id,
            ..Default::default()
        }
    }

    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Option<Kind>, Received) {
        if let Some(node) = &req.node {
            if self.node.is_empty() {
                self.node = clean(&node.id, MAX_NODE_ID);
            }
        }
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            return (None, Received::UnknownType);
        };
        let t = &mut self.types[kind.index()];
        let received = if req.response_nonce.is_empty() {
            Received::Initial
        } else {
            match &mut t.sent {
                Some(sent) if sent.nonce == req.response_nonce => match &req.error_detail {
                    Some(e) => {
                        sent.nacked = true;
                        Received::Nack(Nack {
                            node: self.node.clone(),
                            version: sent.version.clone(),
                            message: snapshot.mask(&mask(&sent.secrets, &e.message)),
                            at: SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0),
                        })
                    }
                    None => Received::Ack,
                },
                _ => return (Some(kind), Received::Stale),
            }
        };
        t.requested = true;
        t.names = if kind.wildcard()
            && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"))
        {
            None
        } else {
            Some(req.resource_names.iter().cloned().collect())
        };
        (Some(kind), received)
    }

    /// Whether Envoy has been sent the endpoints of every `EDS` cluster of
    /// the snapshot (so a route configuration may point at them), or the
    /// clusters were refused (then waiting is pointless).
    fn endpoints_ready(&self, snapshot: &Snapshot) -> bool {
        let clusters = &self.types[Kind::Clusters.index()];
        if clusters.sent.as_ref().is_some_and(|s| s.nacked) {
            return true;
        }
        let eds = snapshot.get(Kind::Endpoints);
        if eds.resources.is_empty() {
            return true;
        }
        match &self.types[Kind::Endpoints.index()].sent {
            Some(s) if s.version == eds.version => eds
                .resources
                .iter()
                .all(|(name, _)| s.names.as_ref().is_none_or(|n| n.contains(name))),
            _ => false,
        }
    }

    /// The responses due now, in push order. A route configuration that
    /// must wait for endpoints sets `routes_waiting_since`.
    fn due(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let t = &self.types[kind.index()];
            if !t.requested {
                continue;
            }
            let current = snapshot.get(kind);
            let needed = match &t.sent {
                None => true,
                Some(s) => s.version != current.version || s.names != t.names,
            };
            if !needed {
                if kind == Kind::Routes {
                    self.routes_waiting_since = None;
                }
                continue;
            }
            // The first route configuration of a stream needs no wait:
            // Envoy itself warms clusters before it asks for listeners.
            if kind == Kind::Routes && t.sent.is_some() && !self.endpoints_ready(snapshot) {
                let since = *self.routes_waiting_since.get_or_insert(now);
                if now.duration_since(since) < ROUTES_WAIT {
                    continue;
                }
            }
            if kind == Kind::Routes {
                self.routes_waiting_since = None;
            }
            self.nonces += 1;
            let nonce = self.nonces.to_string();
            let t = &mut self.types[kind.index()];
            let resources = current
                .resources
                .iter()
                .filter(|(name, _)| t.names.as_ref().is_none_or(|n| n.contains(name)))
                .map(|(_, any)| any.clone())
                .collect();
            let updated = t.sent.is_some();
            t.sent = Some(Sent {
                version: current.version.clone(),
                names: t.names.clone(),
                nonce: nonce.clone(),
                nacked: false,
                secrets: snapshot.secrets.clone(),
            });
            // An updated EDS cluster warms until it gets its endpoints, even
            // unchanged ones: send them again, after the clusters.
            if kind == Kind::Clusters && updated {
                self.types[Kind::Endpoints.index()].sent = None;
            }
            out.push(DiscoveryResponse {
                version_info: current.version.clone(),
                resources,
                type_url: kind.type_url().to_string(),
                nonce,
                control_plane: Some(ControlPlane {
                    identifier: CONTROL_PLANE.into(),
                }),
                ..Default::default()
            });
        }
        out
    }

    /// When a waiting route configuration must be sent anyway.
    fn deadline(&self) -> Option<Instant> {
        self.routes_waiting_since.map(|s| s + ROUTES_WAIT)
    }
}

// ---------------------------------------------------------------------------
// The gRPC service

/// The ADS service. Build it with [`ads_service`].
pub struct Ads {
    source: Source,
    status: Arc<XdsStatus>,
    next_stream: AtomicU64,
}

/// The ADS gRPC service for `routes` (and, when given, the URLs of the
/// provider endpoints the discovery documents name, which get provider
/// clusters too). Serve it with [`serve_on`] (or any tonic server).
pub fn ads_service(
    routes: watch::Receiver<Routes>,
    providers: Option<watch::Receiver<Arc<Vec<String>>>>,
    settings: ProxySettings,
    status: Arc<XdsStatus>,
) -> AggregatedDiscoveryServiceServer<Ads> {
    let providers = providers.unwrap_or_else(|| {
        // A channel that never changes: its sender is dropped, and the
        // streams stop watching it when they see that.
        watch::channel(Arc::new(Vec::new())).1
    });
    let mut source = Source {
        routes,
        providers,
        settings: Arc::new(settings),
        cache: Arc::new(Mutex::new(None)),
        status: status.clone(),
    };
    // The status shows the versions before any Envoy connects.
    source.current();
    AggregatedDiscoveryServiceServer::new(Ads {
        source,
        status,
        next_stream: AtomicU64::new(1),
    })
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_stream(
            id,
            peer,
            request.into_inner(),
            tx,
            self.source.clone(),
            self.status.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental (delta) xDS is not served: use the state-of-the-world ADS (api_type GRPC)",
        ))
    }
}

async fn run_stream(
    id: u64,
    peer: Option<SocketAddr>,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    mut source: Source,
    status: Arc<XdsStatus>,
) {
    status.stream_opened(id);
    let _guard = StreamGuard {
        id,
        status: status.clone(),
    };
    let mut st = StreamState::new(id);
    let mut snapshot = source.current();
    let (mut routes_open, mut providers_open) = (true, true);
    tracing::info!(stream = id, peer = ?peer, "Envoy connected");
    loop {
        let deadline = st.deadline();
        tokio::select! {
            msg = requests.message() => match msg {
                Ok(Some(req)) => {
                    let had_node = !st.node.is_empty();
                    let (kind, received) = st.on_request(&req, &snapshot);
                    if !had_node && !st.node.is_empty() {
                        status.node(id, &st.node);
                        tracing::info!(stream = id, node = %st.node, "Envoy identified");
                    }
                    log_received(&st, kind, &req, &received, &status);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(stream = id, node = %st.node, error = %e, "ADS stream ended");
                    break;
                }
            },
            changed = source.routes.changed(), if routes_open => match changed {
                Ok(()) => snapshot = source.current(),
                Err(_) => routes_open = false,
            },
            changed = source.providers.changed(), if providers_open => match changed {
                Ok(()) => snapshot = source.current(),
                Err(_) => providers_open = false,
            },
            () = sleep_until(deadline), if deadline.is_some() => {}
        }
        for resp in st.due(&snapshot, Instant::now()) {
            tracing::debug!(stream = id, node = %st.node, type_url = %resp.type_url,
                version = %resp.version_info, resources = resp.resources.len(), "sending");
            if tx.send(Ok(resp)).await.is_err() {
                tracing::info!(stream = id, node = %st.node, "Envoy disconnected");
                return;
            }
        }
    }
    tracing::info!(stream = id, node = %st.node, "Envoy disconnected");
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

fn log_received(
    st: &StreamState,
    kind: Option<Kind>,
    req: &DiscoveryRequest,
    received: &Received,
    status: &XdsStatus,
) {
    let (id, node) = (st.id, st.node.as_str());
    match (kind, received) {
        (_, Received::UnknownType) => {
            tracing::warn!(stream = id, node, type_url = ?req.type_url, "Envoy asked for a resource type this server does not serve");
        }
        (Some(kind), Received::Ack) => {
            tracing::debug!(stream = id, node, kind = kind.name(), version = ?req.version_info, "ACK");
            status.acked(id, kind, &clean(&req.version_info, MAX_NODE_ID));
        }
        (Some(kind), Received::Nack(nack)) => {
            tracing::warn!(stream = id, node, kind = kind.name(), version = %nack.version,
                error = %nack.message, "Envoy rejected the configuration (NACK); it keeps its previous one");
            status.nacked(kind, nack.clone());
        }
        (Some(kind), Received::Initial) => {
            tracing::debug!(stream = id, node, kind = kind.name(), names = ?req.resource_names, "request");
        }
        (Some(kind), Received::Stale) => {
            tracing::debug!(stream = id, node, kind = kind.name(), nonce = ?req.response_nonce, "stale request ignored");
        }
        (None, _) => {}
    }
}

// ---------------------------------------------------------------------------
// Serving

/// Why the xDS server stopped.
#[derive(Debug)]
pub enum XdsError {
    /// The gRPC server failed.
    Serve(tonic::transport::Error),
}

impl std::fmt::Display for XdsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdsError::Serve(e) => write!(f, "the xDS server failed: {e}"),
        }
    }
}

impl std::error::Error for XdsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            XdsError::Serve(e) => Some(e),
        }
    }
}

/// Serves `service` (from [`ads_service`]) on a bound listener.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    service: AggregatedDiscoveryServiceServer<Ads>,
) -> Result<(), XdsError> {
    tracing::info!(addr = ?listener.local_addr().ok(), "xDS (ADS) listening");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
        .map_err(XdsError::Serve)
}

#[cfg(test)]
mod tests;
