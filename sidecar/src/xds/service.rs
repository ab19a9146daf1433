//! The gRPC service: one task per ADS stream.

use super::*;

/// The ADS service. Build it with [`ads_service`].
pub struct Ads {
    pub(super) source: Source,
    pub(super) status: Arc<XdsStatus>,
    pub(super) next_stream: AtomicU64,
}

/// The ADS gRPC service for `routes` (and, when given, the URLs of the
/// provider endpoints the discovery documents name, which get provider
/// clusters too). Serve it with [`serve_on`] (or any tonic server).
pub fn ads_service(
    routes: watch::Receiver<Published>,
    providers: Option<watch::Receiver<Arc<Vec<String>>>>,
    settings: ProxySettings,
    status: Arc<XdsStatus>,
) -> AggregatedDiscoveryServiceServer<Ads> {
    let providers = providers.unwrap_or_else(|| {
        // A channel that never changes: its sender is dropped, and the
        // streams stop watching it when they see that.
        watch::channel(Arc::new(Vec::new())).1
    });
    let cache = Cached {
        translations: TranslationCache::default(),
        routes: routes.borrow().clone(),
        providers: providers.borrow().clone(),
        snapshot: None,
    };
    let mut source = Source {
        routes,
        providers,
        settings: Arc::new(settings),
        cache: Arc::new(Mutex::new(cache)),
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
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_delta_stream(
            id,
            peer,
            request.into_inner(),
            tx,
            self.source.clone(),
            self.status.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub(super) async fn run_stream(
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
    // A change seen but not built yet: the snapshot is built only when
    // Envoy has a request open (so the writes made while Envoy applies a
    // push cost one build, not one each).
    let mut stale = false;
    tracing::info!(stream = id, peer = ?peer, "Envoy connected");
    loop {
        let deadline = st.deadline();
        tokio::select! {
            msg = requests.message() => match msg {
                Ok(Some(req)) => {
                    let had_node = !st.node.is_empty();
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let (kind, received) = st.on_request(&req, &snapshot, now);
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
                Ok(()) => stale = true,
                Err(_) => routes_open = false,
            },
            changed = source.providers.changed(), if providers_open => match changed {
                Ok(()) => stale = true,
                Err(_) => providers_open = false,
            },
            () = sleep_until(deadline), if deadline.is_some() => {}
        }
        if stale && st.waiting() {
            snapshot = source.current_off_workers().await;
            stale = false;
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

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

pub(super) fn log_received(
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

/// [`run_stream`] for incremental (delta) ADS: [`DeltaState`] decides.
pub(super) async fn run_delta_stream(
    id: u64,
    peer: Option<SocketAddr>,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    mut source: Source,
    status: Arc<XdsStatus>,
) {
    status.stream_opened(id);
    let _guard = StreamGuard {
        id,
        status: status.clone(),
    };
    let mut st = DeltaState::new(id);
    let mut snapshot = source.current();
    let (mut routes_open, mut providers_open) = (true, true);
    // A change seen but not built yet: built only when a type has no
    // response in flight (the writes made meanwhile cost one build).
    let mut stale = false;
    tracing::info!(stream = id, peer = ?peer, "Envoy connected (delta xDS)");
    loop {
        let deadline = st.deadline();
        tokio::select! {
            msg = requests.message() => match msg {
                Ok(Some(req)) => {
                    let had_node = !st.node.is_empty();
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let (kind, received) = st.on_request(&req, &snapshot, now);
                    if !had_node && !st.node.is_empty() {
                        status.node(id, &st.node);
                        tracing::info!(stream = id, node = %st.node, "Envoy identified");
                    }
                    log_received_delta(&st, kind, &req, &received, &status);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(stream = id, node = %st.node, error = %e, "ADS stream ended");
                    break;
                }
            },
            changed = source.routes.changed(), if routes_open => match changed {
                Ok(()) => stale = true,
                Err(_) => routes_open = false,
            },
            changed = source.providers.changed(), if providers_open => match changed {
                Ok(()) => stale = true,
                Err(_) => providers_open = false,
            },
            () = sleep_until(deadline), if deadline.is_some() => {}
        }
        if stale && st.waiting() {
            snapshot = source.current_off_workers().await;
            stale = false;
        }
        let due = st.due(&snapshot, Instant::now());
        for (kind, version) in st.take_synced() {
            status.acked(id, kind, &version);
        }
        for resp in due {
            tracing::debug!(stream = id, node = %st.node, type_url = %resp.type_url,
                version = %resp.system_version_info, resources = resp.resources.len(),
                removed = resp.removed_resources.len(), "sending");
            if tx.send(Ok(resp)).await.is_err() {
                tracing::info!(stream = id, node = %st.node, "Envoy disconnected");
                return;
            }
        }
    }
    tracing::info!(stream = id, node = %st.node, "Envoy disconnected");
}

fn log_received_delta(
    st: &DeltaState,
    kind: Option<Kind>,
    req: &DeltaDiscoveryRequest,
    received: &Received,
    status: &XdsStatus,
) {
    let (id, node) = (st.id, st.node.as_str());
    match (kind, received) {
        (_, Received::UnknownType) => {
            tracing::warn!(stream = id, node, type_url = ?req.type_url, "Envoy asked for a resource type this server does not serve");
        }
        (Some(kind), Received::Ack) => {
            tracing::debug!(stream = id, node, kind = kind.name(), nonce = ?req.response_nonce, "ACK");
        }
        (Some(kind), Received::Nack(nack)) => {
            tracing::warn!(stream = id, node, kind = kind.name(), version = %nack.version,
                error = %nack.message, "Envoy rejected the configuration (NACK); it keeps its previous one");
            status.nacked(kind, nack.clone());
        }
        (Some(kind), Received::Initial) => {
            tracing::debug!(
                stream = id,
                node,
                kind = kind.name(),
                subscribe = req.resource_names_subscribe.len(),
                unsubscribe = req.resource_names_unsubscribe.len(),
                "request"
            );
        }
        (Some(kind), Received::Stale) => {
            tracing::debug!(stream = id, node, kind = kind.name(), nonce = ?req.response_nonce, "stale request ignored");
        }
        (None, _) => {}
    }
}
