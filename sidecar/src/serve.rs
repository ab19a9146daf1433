//! The sidecar's HTTP listeners (the Admin API, the revocation service):
//! at most [`Limits::max_connections`] connections at once, and a client
//! that stalls is dropped.
//!
//! `axum::serve` keeps every connection for as long as the client holds it
//! and accepts as many as come: a few thousand idle connections from
//! anywhere that can reach the port used up the sidecar's file descriptors,
//! and then its store and xDS could open nothing more. Here, as nginx
//! (APISIX) does with `worker_connections` and its client timeouts, a full
//! listener stops accepting until a connection closes (new clients wait in
//! the kernel's backlog), request headers must arrive within
//! [`Limits::client_timeout`] (also the longest a keep-alive connection
//! stays idle), and so must each piece of a request body.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How much one listener takes from its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, to send the
    /// next piece of its body, or to start its next request.
    pub client_timeout: Duration,
}

/// How long in-flight requests may take to finish after `shutdown`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes. The client's
/// address is in each request's `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.client_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
            _ = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before it
                    // was taken: try again shortly, as axum::serve does.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = router.clone();
        let timeout = limits.client_timeout;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(client));
            let req = req.map(|body| tower_http::timeout::TimeoutBody::new(timeout, body));
            app.clone().oneshot(req)
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away or stalls is no error of ours.
            let _ = conn.await;
            drop(slot);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}
