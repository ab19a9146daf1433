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
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value, Any, Struct, Value as PbValue};
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::apisix::route::RouteSpec;
use crate::apisix::table::{Published, RouteTable};
use crate::translate::{
    entry_routes, has_backchannel_path, route_config_header, route_layout, route_upstream, to_any,
    translate_without_routes, virtual_host_header, ProxySettings,
};

mod delta;
mod service;
mod snapshot;
mod status;
mod stream;

use delta::*;
pub use service::*;
pub use snapshot::*;
pub use status::*;
use stream::*;

/// How long a route configuration waits for the endpoints of new clusters
/// to reach Envoy before it is sent anyway.
pub const ROUTES_WAIT: Duration = Duration::from_secs(2);

/// Identifies this server in its responses.
const CONTROL_PLANE: &str = "apisix-envoy-sidecar";
/// Longest NACK message kept or logged.
const MAX_MESSAGE: usize = 2000;
/// Longest node id kept or logged.
const MAX_NODE_ID: usize = 128;

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
