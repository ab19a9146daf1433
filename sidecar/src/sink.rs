//! The back-channel sink: a TCP listener that takes what Envoy's router
//! sends for a back-channel logout request and never answers.
//!
//! The filter answers back-channel logout requests itself, after reading
//! their body; for the body to reach it, Envoy's proxy-wasm must let the
//! request headers go on to the router, which then opens an upstream
//! request. Routed here ([`crate::translate::BACKCHANNEL_SINK_CLUSTER`]),
//! that request never reaches the route's upstream (which could see a POST
//! it does not expect, or answer before the filter does), and it is reset
//! when the filter answers. Bounded: at most [`MAX_CONNECTIONS`] held at
//! once (more are closed at once), each for at most [`HOLD`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections held at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long one is held (the routes' timeout is 60 s).
pub const HOLD: Duration = Duration::from_secs(65);

/// Accepts and holds connections, reading and dropping what comes.
pub async fn run(listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(HOLD, async {
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            drop(permit);
        });
    }
}
