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
        tokio::spawn(run_stream::<StreamState>(
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
        tokio::spawn(run_stream::<DeltaState>(
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

/// What [`run_stream`] needs of a stream's protocol state: the
/// state-of-the-world [`StreamState`] and the incremental [`DeltaState`]
/// decide what to send; the loop around them (Envoy's messages, the
/// route and provider changes, the snapshot built only when a response
/// can go) is the same.
pub(super) trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// Said when Envoy connects.
    const NAME: &'static str;
    fn new(id: u64) -> Self;
    fn node(&self) -> &str;
    fn deadline(&self) -> Option<Instant>;
    /// A type waits for a response (so a changed snapshot is worth
    /// building now).
    fn waiting(&self) -> bool;
    fn on_request(
        &mut self,
        req: &Self::Request,
        snapshot: &Snapshot,
        now: u64,
    ) -> (Option<Kind>, Received);
    fn log_received(
        &self,
        kind: Option<Kind>,
        req: &Self::Request,
        received: &Received,
        status: &XdsStatus,
    );
    /// The responses due now; what Envoy acknowledged in full goes to
    /// `status`.
    fn due(&mut self, snapshot: &Snapshot, now: Instant, status: &XdsStatus)
        -> Vec<Self::Response>;
    fn log_sending(&self, resp: &Self::Response);
}

/// One ADS stream, until Envoy goes away.
pub(super) async fn run_stream<P: Protocol>(
    id: u64,
    peer: Option<SocketAddr>,
    mut requests: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
    mut source: Source,
    status: Arc<XdsStatus>,
) {
    status.stream_opened(id);
    let _guard = StreamGuard {
        id,
        status: status.clone(),
    };
    let mut st = P::new(id);
    let mut snapshot = source.current();
    let (mut routes_open, mut providers_open) = (true, true);
    // A change seen but not built yet: the snapshot is built only when
    // Envoy waits for a response (so the writes made while Envoy applies
    // a push cost one build, not one each).
    let mut stale = false;
    tracing::info!(stream = id, peer = ?peer, protocol = P::NAME, "Envoy connected");
    loop {
        let deadline = st.deadline();
        tokio::select! {
            msg = requests.message() => match msg {
                Ok(Some(req)) => {
                    let had_node = !st.node().is_empty();
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let (kind, received) = st.on_request(&req, &snapshot, now);
                    if !had_node && !st.node().is_empty() {
                        status.node(id, st.node());
                        tracing::info!(stream = id, node = %st.node(), "Envoy identified");
                    }
                    st.log_received(kind, &req, &received, &status);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(stream = id, node = %st.node(), error = %e, "ADS stream ended");
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
        for resp in st.due(&snapshot, Instant::now(), &status) {
            st.log_sending(&resp);
            if tx.send(Ok(resp)).await.is_err() {
                tracing::info!(stream = id, node = %st.node(), "Envoy disconnected");
                return;
            }
        }
    }
    tracing::info!(stream = id, node = %st.node(), "Envoy disconnected");
}

impl Protocol for StreamState {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "state of the world";
    fn new(id: u64) -> Self {
        StreamState::new(id)
    }
    fn node(&self) -> &str {
        &self.node
    }
    fn deadline(&self) -> Option<Instant> {
        StreamState::deadline(self)
    }
    fn waiting(&self) -> bool {
        StreamState::waiting(self)
    }
    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
        now: u64,
    ) -> (Option<Kind>, Received) {
        StreamState::on_request(self, req, snapshot, now)
    }
    fn log_received(
        &self,
        kind: Option<Kind>,
        req: &DiscoveryRequest,
        received: &Received,
        status: &XdsStatus,
    ) {
        log_received(self, kind, req, received, status)
    }
    fn due(&mut self, snapshot: &Snapshot, now: Instant, _: &XdsStatus) -> Vec<DiscoveryResponse> {
        StreamState::due(self, snapshot, now)
    }
    fn log_sending(&self, resp: &DiscoveryResponse) {
        tracing::debug!(stream = self.id, node = %self.node, type_url = %resp.type_url,
            version = %resp.version_info, resources = resp.resources.len(), "sending");
    }
}

impl Protocol for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";
    fn new(id: u64) -> Self {
        DeltaState::new(id)
    }
    fn node(&self) -> &str {
        &self.node
    }
    fn deadline(&self) -> Option<Instant> {
        DeltaState::deadline(self)
    }
    fn waiting(&self) -> bool {
        DeltaState::waiting(self)
    }
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
        now: u64,
    ) -> (Option<Kind>, Received) {
        DeltaState::on_request(self, req, snapshot, now)
    }
    fn log_received(
        &self,
        kind: Option<Kind>,
        req: &DeltaDiscoveryRequest,
        received: &Received,
        status: &XdsStatus,
    ) {
        log_received_delta(self, kind, req, received, status)
    }
    fn due(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        status: &XdsStatus,
    ) -> Vec<DeltaDiscoveryResponse> {
        let due = DeltaState::due(self, snapshot, now);
        for (kind, version) in self.take_synced() {
            status.acked(self.id, kind, &version);
        }
        due
    }
    fn log_sending(&self, resp: &DeltaDiscoveryResponse) {
        tracing::debug!(stream = self.id, node = %self.node, type_url = %resp.type_url,
            version = %resp.system_version_info, resources = resp.resources.len(),
            removed = resp.removed_resources.len(), "sending");
    }
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
