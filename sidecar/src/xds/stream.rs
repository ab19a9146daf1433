//! The snapshot source shared by all streams, and each stream's protocol
//! state (sync, so that it is tested without gRPC).

use super::*;

pub(super) struct Cached {
    /// Each route's upstream cluster and endpoints, for the next build.
    pub(super) translations: TranslationCache,
    pub(super) routes: Published,
    pub(super) providers: Arc<Vec<String>>,
    /// `None` before the first build.
    pub(super) snapshot: Option<Arc<Snapshot>>,
}

/// The inputs, and the snapshot built from them (built once per change,
/// whichever stream notices first).
#[derive(Clone)]
pub(super) struct Source {
    pub(super) routes: watch::Receiver<Published>,
    pub(super) providers: watch::Receiver<Arc<Vec<String>>>,
    pub(super) settings: Arc<ProxySettings>,
    pub(super) cache: Arc<Mutex<Cached>>,
    pub(super) status: Arc<XdsStatus>,
}

impl Source {
    pub(super) fn current(&mut self) -> Arc<Snapshot> {
        let routes = self.routes.borrow_and_update().clone();
        let providers = self.providers.borrow_and_update().clone();
        self.build(routes, providers)
    }

    /// [`Source::current`] built on a blocking thread: with many routes a
    /// build takes milliseconds, and the Admin API shares the async
    /// workers.
    pub(super) async fn current_off_workers(&mut self) -> Arc<Snapshot> {
        let routes = self.routes.borrow_and_update().clone();
        let providers = self.providers.borrow_and_update().clone();
        let source = self.clone();
        let (r, p) = (routes.clone(), providers.clone());
        match tokio::task::spawn_blocking(move || source.build(r, p)).await {
            Ok(snapshot) => snapshot,
            Err(_) => self.build(routes, providers),
        }
    }

    /// The snapshot of these inputs: the one built last when they are the
    /// same, else built (and kept).
    fn build(&self, routes: Published, providers: Arc<Vec<String>>) -> Arc<Snapshot> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = cache.snapshot.as_ref() {
            if Arc::ptr_eq(&cache.routes, &routes) && Arc::ptr_eq(&cache.providers, &providers) {
                return snapshot.clone();
            }
        }
        let started = Instant::now();
        let (snapshot, skipped) =
            Snapshot::build_cached(&routes, &self.settings, &providers, &mut cache.translations);
        let skipped: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.what, snapshot.mask(&s.reason)))
            .collect();
        for s in &skipped {
            tracing::warn!(skipped = %s, "left out of the Envoy configuration");
        }
        let snapshot = Arc::new(snapshot);
        tracing::info!(versions = ?snapshot.versions(), took = ?started.elapsed(), "xDS snapshot");
        self.status.snapshot_built(&snapshot, &skipped);
        for w in routes.warnings() {
            tracing::warn!(warning = %w, "routes");
        }
        self.status.warnings(routes.warnings());
        cache.routes = routes;
        cache.providers = providers;
        cache.snapshot = Some(snapshot.clone());
        snapshot
    }
}

// ---------------------------------------------------------------------------
// Per-stream protocol state (sync, so that it is tested without gRPC)

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sent {
    pub(super) version: String,
    /// The version of the snapshot it was made from (the clusters sent
    /// with some kept: [`StreamState::clusters_to_send`]).
    pub(super) of: String,
    /// `None`: everything (wildcard).
    pub(super) names: Option<BTreeSet<String>>,
    pub(super) nonce: String,
    pub(super) nacked: bool,
    /// To be sent again though unchanged (endpoints after a cluster
    /// update). The nonce is kept: Envoy's answer to it still counts.
    pub(super) resend: bool,
    /// The secrets of the snapshot sent (a NACK may quote its config).
    pub(super) secrets: Arc<Vec<String>>,
}

#[derive(Debug, Default)]
pub(super) struct TypeState {
    /// Envoy has asked for this type.
    pub(super) requested: bool,
    /// A request (the first, an ACK or a NACK) not answered yet. As the
    /// xDS protocol has it, a response answers a request: while Envoy
    /// applies one, later changes wait and then go as one (a burst of
    /// writes becomes one push, however many routes there are).
    pub(super) pending: bool,
    pub(super) names: Option<BTreeSet<String>>,
    pub(super) sent: Option<Sent>,
}

/// What one ADS stream has asked for and been sent.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    pub(super) id: u64,
    pub(super) node: String,
    pub(super) types: [TypeState; 5],
    pub(super) nonces: u64,
    /// Since when a route configuration waits for endpoints.
    pub(super) routes_waiting_since: Option<Instant>,
    /// The clusters last sent, by name (what Envoy has).
    pub(super) clusters: Vec<(String, Any)>,
}

/// What a request turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Received {
    Initial,
    Ack,
    Nack(Nack),
    Stale,
    UnknownType,
}

impl StreamState {
    pub(super) fn new(id: u64) -> StreamState {
        StreamState {
            id,
            ..Default::default()
        }
    }

    /// What request `req` is; `now` (unix seconds) stamps a NACK.
    pub(super) fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
        now: u64,
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
                            at: now,
                        })
                    }
                    None => Received::Ack,
                },
                _ => return (Some(kind), Received::Stale),
            }
        };
        t.requested = true;
        t.pending = true;
        t.names = if kind.wildcard()
            && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"))
        {
            None
        } else {
            Some(req.resource_names.iter().cloned().collect())
        };
        (Some(kind), received)
    }

    /// Whether Envoy has been sent the clusters of `snapshot` (or refused
    /// the last ones sent, or never asked for clusters).
    fn clusters_sent(&self, snapshot: &Snapshot) -> bool {
        let t = &self.types[Kind::Clusters.index()];
        if !t.requested {
            return true;
        }
        t.sent
            .as_ref()
            .is_some_and(|s| s.nacked || s.of == snapshot.get(Kind::Clusters).version)
    }

    /// The clusters to send for `snapshot`: its own and, while Envoy's
    /// route configuration is older than the snapshot's, the clusters sent
    /// before that it no longer has (the old routes may still point at
    /// them). So a deleted route's cluster goes only after the routes
    /// without it: make before break, no 503 for a cluster removed under a
    /// route. Its version is the snapshot's, marked when clusters are kept.
    fn clusters_to_send(&self, snapshot: &Snapshot) -> (String, Vec<(String, Any)>) {
        let current = snapshot.get(Kind::Clusters);
        let routes = &self.types[Kind::Routes.index()];
        let routes_behind = routes.requested
            && routes
                .sent
                .as_ref()
                .is_some_and(|s| s.of != snapshot.get(Kind::Routes).version);
        let mut resources = current.resources.clone();
        if !routes_behind {
            return (current.version.clone(), resources);
        }
        let names: BTreeSet<&str> = current.resources.iter().map(|(n, _)| n.as_str()).collect();
        let kept: Vec<&(String, Any)> = self
            .clusters
            .iter()
            .filter(|(n, _)| !names.contains(n.as_str()))
            .collect();
        if kept.is_empty() {
            return (current.version.clone(), resources);
        }
        let version = format!("{}+{}", current.version, kept.len());
        resources.extend(kept.into_iter().cloned());
        (version, resources)
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
            Some(s) if s.version == eds.version && !s.resend => eds
                .resources
                .iter()
                .all(|(name, _)| s.names.as_ref().is_none_or(|n| n.contains(name))),
            _ => false,
        }
    }

    /// The responses due now, in push order. A route configuration that
    /// must wait for endpoints sets `routes_waiting_since`.
    pub(super) fn due(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let t = &self.types[kind.index()];
            if !t.requested || !t.pending {
                continue;
            }
            let current = snapshot.get(kind);
            let (version, cds) = match kind {
                Kind::Clusters => {
                    let (v, r) = self.clusters_to_send(snapshot);
                    (v, Some(r))
                }
                _ => (current.version.clone(), None),
            };
            let t = &self.types[kind.index()];
            let needed = match &t.sent {
                None => true,
                Some(s) => s.version != version || s.names != t.names || s.resend,
            };
            if !needed {
                if kind == Kind::Routes {
                    self.routes_waiting_since = None;
                }
                continue;
            }
            // Routes never go before their clusters: while the clusters of
            // this snapshot wait for Envoy to answer the previous ones, so
            // do the routes (the answer brings them both).
            if kind == Kind::Routes && t.sent.is_some() && !self.clusters_sent(snapshot) {
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
            t.pending = false;
            let resources: Vec<Any> = match &cds {
                // Clusters are asked for as a whole.
                Some(all) => all.iter().map(|(_, a)| a.clone()).collect(),
                None => current
                    .resources
                    .iter()
                    .filter(|(name, _)| t.names.as_ref().is_none_or(|n| n.contains(name)))
                    .map(|(_, any)| any.clone())
                    .collect(),
            };
            let updated = t.sent.is_some();
            t.sent = Some(Sent {
                version: version.clone(),
                of: current.version.clone(),
                names: t.names.clone(),
                nonce: nonce.clone(),
                nacked: false,
                resend: false,
                secrets: snapshot.secrets.clone(),
            });
            // An updated EDS cluster warms until it gets its endpoints, even
            // unchanged ones: send them again, after the clusters.
            if kind == Kind::Clusters && updated {
                if let Some(s) = &mut self.types[Kind::Endpoints.index()].sent {
                    s.resend = true;
                }
            }
            if let Some(all) = cds {
                self.clusters = all;
            }
            out.push(DiscoveryResponse {
                version_info: version,
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

    /// Whether Envoy has a request open (a response may be due).
    pub(super) fn waiting(&self) -> bool {
        self.types.iter().any(|t| t.requested && t.pending)
    }

    /// When a waiting route configuration must be sent anyway.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.routes_waiting_since.map(|s| s + ROUTES_WAIT)
    }
}
