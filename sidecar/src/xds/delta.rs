//! Incremental (delta) ADS: each stream's protocol state (sync, so that it
//! is tested without gRPC).
//!
//! Envoy is sent only the resources that changed (each with its own
//! version, the digest of its content) and the names of those removed, so
//! one route written among 10,000 costs Envoy one cluster, its endpoints
//! and the route configuration, not 10,000 clusters.
//!
//! - **What Envoy has**, per type: name → version, from the responses it
//!   acknowledged (and, from a reconnecting Envoy, its
//!   `initial_resource_versions`). A NACK leaves it as it was; the
//!   refused snapshot version is not sent again, the next one sends what
//!   differs from what Envoy has.
//! - **One response in flight per type**: the next waits for Envoy's
//!   answer, so the changes made while Envoy applies one go as one.
//! - **Subscriptions**: clusters and listeners are wildcard (a first
//!   request without names, or `*`); endpoints, secrets and route
//!   configurations by name (`resource_names_subscribe` and
//!   `_unsubscribe`).
//! - **Make before break**, as the state-of-the-world server: clusters go
//!   before endpoints, endpoints before listeners and routes; a route
//!   configuration waits until Envoy has acknowledged the clusters of its
//!   snapshot and has been sent (and acknowledged) the endpoints of each
//!   `EDS` cluster (at most [`ROUTES_WAIT`]); a removed cluster is removed
//!   only once Envoy has acknowledged the routes of the snapshot without
//!   it. A changed `EDS` cluster gets its endpoints again (it warms until
//!   it has them). Endpoints, secrets and route configurations are never
//!   removed by the server: Envoy unsubscribes when nothing names them.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::Resource;

use super::*;

/// One response Envoy has not answered yet.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct InFlight {
    pub(super) nonce: String,
    /// The snapshot version of the type it was made from.
    pub(super) of: String,
    /// What Envoy has once it accepts it: `system_version_info`.
    pub(super) version: String,
    /// Name → new version; `None`: removed.
    pub(super) changes: Vec<(String, Option<String>)>,
    /// The secrets of its snapshot (a NACK may quote its config).
    pub(super) secrets: Arc<Vec<String>>,
    /// The type's subscription changes when it was sent.
    pub(super) subscriptions: u64,
}

#[derive(Debug, Default)]
pub(super) struct DeltaType {
    /// Envoy has asked for this type.
    pub(super) requested: bool,
    /// A response was sent (the first is sent even when empty).
    pub(super) answered: bool,
    pub(super) wildcard: bool,
    /// Names subscribed to (besides the wildcard).
    pub(super) names: BTreeSet<String>,
    /// What Envoy has: name → version.
    pub(super) has: HashMap<String, String>,
    /// To be sent again though Envoy has them (the endpoints of an
    /// updated `EDS` cluster).
    pub(super) resend: BTreeSet<String>,
    pub(super) in_flight: Option<InFlight>,
    /// A snapshot version Envoy refused: not sent again.
    pub(super) refused: Option<String>,
    /// The version Envoy has in full (for the status), and whether it
    /// changed since last read.
    pub(super) synced: Option<String>,
    pub(super) synced_changed: bool,
    /// Subscription changes so far.
    pub(super) subscriptions: u64,
}

impl DeltaType {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The resources of `current` Envoy should get (subscribed, and not
    /// at their version there), and the names it has that `current` no
    /// longer has (only for wildcard subscriptions).
    fn diff(&self, current: &TypeSnapshot) -> (Vec<usize>, Vec<String>) {
        // Envoy has this version in full (what it acknowledged, or found
        // so before) and nothing changed since: at 10,000 clusters a
        // diff is milliseconds, and it is asked for at every message.
        if self.synced.as_ref() == Some(&current.version) && self.resend.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mut updates = Vec::new();
        for (i, ((name, _), version)) in current
            .resources
            .iter()
            .zip(&current.resource_versions)
            .enumerate()
        {
            if self.subscribed(name)
                && (self.has.get(name) != Some(version) || self.resend.contains(name))
            {
                updates.push(i);
            }
        }
        let mut removals = Vec::new();
        if self.wildcard {
            let names: std::collections::HashSet<&str> =
                current.resources.iter().map(|(n, _)| n.as_str()).collect();
            removals = self
                .has
                .keys()
                .filter(|n| !names.contains(n.as_str()))
                .cloned()
                .collect();
            removals.sort();
        }
        (updates, removals)
    }

    fn set_synced(&mut self, version: String) {
        if self.synced.as_deref() != Some(version.as_str()) {
            self.synced = Some(version);
            self.synced_changed = true;
        }
    }
}

/// What one delta ADS stream has asked for and been sent.
#[derive(Debug, Default)]
pub(super) struct DeltaState {
    pub(super) id: u64,
    pub(super) node: String,
    pub(super) types: [DeltaType; 5],
    pub(super) nonces: u64,
    /// Since when a route configuration waits for endpoints.
    pub(super) routes_waiting_since: Option<Instant>,
}

impl DeltaState {
    pub(super) fn new(id: u64) -> DeltaState {
        DeltaState {
            id,
            ..Default::default()
        }
    }

    /// Takes in request `req` (subscription changes, and the answer to a
    /// response); `now` (unix seconds) stamps a NACK.
    pub(super) fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
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
        let first = !t.requested;
        t.requested = true;
        // Subscriptions: a first request without names is the wildcard
        // (for the types Envoy asks for as a whole).
        if first && kind.wildcard() && req.resource_names_subscribe.is_empty() {
            t.wildcard = true;
        }
        if !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
            // What Envoy should have changed: diff again.
            t.synced = None;
            t.subscriptions += 1;
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                t.wildcard = true;
            } else {
                t.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                t.wildcard = false;
            } else {
                t.names.remove(name);
                if !t.wildcard {
                    t.has.remove(name);
                    t.resend.remove(name);
                }
            }
        }
        if first {
            // A reconnecting Envoy says what it kept.
            for (name, version) in &req.initial_resource_versions {
                if t.subscribed(name) {
                    t.has.insert(name.clone(), version.clone());
                }
            }
        }
        if req.response_nonce.is_empty() {
            return (Some(kind), Received::Initial);
        }
        match t.in_flight.take() {
            Some(sent) if sent.nonce == req.response_nonce => match &req.error_detail {
                Some(e) => {
                    let nack = Nack {
                        node: self.node.clone(),
                        version: sent.version.clone(),
                        message: snapshot.mask(&mask(&sent.secrets, &e.message)),
                        at: now,
                    };
                    t.refused = Some(sent.of);
                    (Some(kind), Received::Nack(nack))
                }
                None => {
                    for (name, version) in sent.changes {
                        match version {
                            Some(v) if t.subscribed(&name) => t.has.insert(name, v),
                            Some(_) => None,
                            None => t.has.remove(&name),
                        };
                    }
                    // Not when Envoy subscribed to more meanwhile: it
                    // has this version, but not all it asks for.
                    if sent.subscriptions == t.subscriptions {
                        t.set_synced(sent.version);
                    }
                    (Some(kind), Received::Ack)
                }
            },
            other => {
                t.in_flight = other;
                (Some(kind), Received::Stale)
            }
        }
    }

    /// Whether Envoy has the clusters of `snapshot` (or refused them, or
    /// never asked for clusters): a route configuration may name them.
    fn clusters_ready(&self, snapshot: &Snapshot) -> bool {
        let t = &self.types[Kind::Clusters.index()];
        let current = snapshot.get(Kind::Clusters);
        if !t.requested || t.refused.as_ref() == Some(&current.version) {
            return true;
        }
        t.in_flight.is_none() && t.diff(current).0.is_empty()
    }

    /// Whether Envoy has the endpoints of every `EDS` cluster of the
    /// snapshot (or the clusters were refused: waiting is pointless).
    fn endpoints_ready(&self, snapshot: &Snapshot) -> bool {
        let clusters = &self.types[Kind::Clusters.index()];
        if clusters.refused.as_ref() == Some(&snapshot.get(Kind::Clusters).version) {
            return true;
        }
        let t = &self.types[Kind::Endpoints.index()];
        let current = snapshot.get(Kind::Endpoints);
        t.in_flight.is_none()
            && current
                .resources
                .iter()
                .zip(&current.resource_versions)
                .all(|((name, _), v)| t.has.get(name) == Some(v) && !t.resend.contains(name))
    }

    /// Whether Envoy has the route configurations of `snapshot` (so the
    /// clusters only older routes named may go). Not before it asked for
    /// them: a reconnecting Envoy asks for clusters first, and has routes
    /// (from the last sidecar) that may name the clusters it lists.
    fn routes_current(&self, snapshot: &Snapshot) -> bool {
        let t = &self.types[Kind::Routes.index()];
        t.requested && t.in_flight.is_none() && t.diff(snapshot.get(Kind::Routes)).0.is_empty()
    }

    /// The responses due now, in push order. A route configuration that
    /// must wait for endpoints sets `routes_waiting_since`.
    pub(super) fn due(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let t = &self.types[kind.index()];
            if !t.requested || t.in_flight.is_some() {
                continue;
            }
            let current = snapshot.get(kind);
            if t.refused.as_ref() == Some(&current.version) {
                continue;
            }
            let (updates, mut removals) = t.diff(current);
            // A cluster goes only when the routes no longer name it.
            let mut kept = 0;
            if kind == Kind::Clusters && !removals.is_empty() && !self.routes_current(snapshot) {
                kept = removals.len();
                removals.clear();
            }
            if updates.is_empty() && removals.is_empty() && t.answered {
                if kind == Kind::Routes {
                    self.routes_waiting_since = None;
                }
                if kept == 0 {
                    self.types[kind.index()].set_synced(current.version.clone());
                }
                continue;
            }
            // Routes never go before their clusters, nor (for a while)
            // before the endpoints of new clusters. Not the first routes
            // of a new Envoy: it warms its clusters before it asks for
            // listeners; but those of a reconnecting one, which has
            // routes and serves them.
            if kind == Kind::Routes && (t.answered || !t.has.is_empty()) {
                if !self.clusters_ready(snapshot) {
                    continue;
                }
                if !self.endpoints_ready(snapshot) {
                    let since = *self.routes_waiting_since.get_or_insert(now);
                    if now.duration_since(since) < ROUTES_WAIT {
                        continue;
                    }
                }
            }
            if kind == Kind::Routes {
                self.routes_waiting_since = None;
            }
            self.nonces += 1;
            let nonce = self.nonces.to_string();
            let version = if kept == 0 {
                current.version.clone()
            } else {
                format!("{}+{kept}", current.version)
            };
            let mut changes: Vec<(String, Option<String>)> = Vec::new();
            let resources: Vec<Resource> = updates
                .iter()
                .map(|&i| {
                    let (name, any) = &current.resources[i];
                    let v = &current.resource_versions[i];
                    changes.push((name.clone(), Some(v.clone())));
                    Resource {
                        name: name.clone(),
                        version: v.clone(),
                        resource: Some(any.clone()),
                        ..Default::default()
                    }
                })
                .collect();
            changes.extend(removals.iter().map(|n| (n.clone(), None)));
            // An updated EDS cluster warms until it gets its endpoints,
            // even unchanged ones: they go again, after the clusters.
            if kind == Kind::Clusters {
                let updated: Vec<String> = updates
                    .iter()
                    .map(|&i| &current.resources[i].0)
                    .filter(|n| self.types[kind.index()].has.contains_key(*n))
                    .cloned()
                    .collect();
                let eds = &mut self.types[Kind::Endpoints.index()];
                for n in updated {
                    if eds.has.contains_key(&n) {
                        eds.resend.insert(n);
                    }
                }
            }
            let t = &mut self.types[kind.index()];
            for (name, _) in &changes {
                t.resend.remove(name);
            }
            t.answered = true;
            t.in_flight = Some(InFlight {
                nonce: nonce.clone(),
                of: current.version.clone(),
                version: version.clone(),
                changes,
                secrets: snapshot.secrets.clone(),
                subscriptions: t.subscriptions,
            });
            out.push(DeltaDiscoveryResponse {
                system_version_info: version,
                resources,
                type_url: kind.type_url().to_string(),
                removed_resources: removals,
                nonce,
                control_plane: Some(ControlPlane {
                    identifier: CONTROL_PLANE.into(),
                }),
                ..Default::default()
            });
        }
        out
    }

    /// Whether a type Envoy asked for has no response in flight (a
    /// change may be sent now).
    pub(super) fn waiting(&self) -> bool {
        self.types
            .iter()
            .any(|t| t.requested && t.in_flight.is_none())
    }

    /// When a waiting route configuration must be sent anyway.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.routes_waiting_since.map(|s| s + ROUTES_WAIT)
    }

    /// The types whose version Envoy now has in full, since last asked.
    pub(super) fn take_synced(&mut self) -> Vec<(Kind, String)> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let t = &mut self.types[kind.index()];
            if t.synced_changed {
                t.synced_changed = false;
                if let Some(v) = &t.synced {
                    out.push((kind, v.clone()));
                }
            }
        }
        out
    }
}
