//! WebSocket through the sidecar and the real Envoy: `enable_websocket`
//! upgrades on that route only, and a route with openid-connect checks the
//! bearer token on the upgrade request. The upstream is a real WebSocket
//! echo server (tokio-tungstenite).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use integration_tests::gateway::Gateway;
use integration_tests::{get, wait_for, Provider, ProviderOptions, TestDir};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What the echo server saw of each upgrade request it accepted: its
/// path and its `X-Access-Token` (set by the filter after a token check).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A WebSocket echo server on a free port, running on `rt`.
fn echo_server(rt: &Runtime) -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                // The error type is tungstenite's callback contract.
                #[allow(clippy::result_large_err)]
                let record = |req: &Request, resp: Response| {
                    let token = req
                        .headers()
                        .get("x-access-token")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    s.lock()
                        .unwrap()
                        .push((req.uri().path().to_string(), token));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Opens a WebSocket to `url` with `headers`, sends "hello" and returns
/// the echo; or the HTTP status the upgrade got instead of 101.
fn ws_echo(rt: &Runtime, url: &str, headers: &[(&str, &str)]) -> Result<String, u16> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        let name = http_name(k);
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    rt.block_on(async {
        let connect = tokio_tungstenite::connect_async(req);
        let (mut ws, resp) = match tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .expect("the upgrade answers within 10 s")
        {
            Ok(x) => x,
            Err(WsError::Http(resp)) => return Err(resp.status().as_u16()),
            Err(e) => panic!("{url}: {e}"),
        };
        assert_eq!(resp.status().as_u16(), 101);
        ws.send(Message::text("hello")).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the echo within 10 s")
            .expect("a message")
            .expect("not an error");
        let _ = ws.close(None).await;
        Ok(answer.to_text().unwrap().to_string())
    })
}

fn http_name(k: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap()
}

fn put(gw: &Gateway, path: &str, body: &Value) {
    let r = gw.admin("PUT", path, Some(&body.to_string()));
    assert!(
        r.status == 201 || r.status == 200,
        "{path}: {} {}",
        r.status,
        r.body
    );
}

#[test]
fn upgrades_only_on_enable_websocket_routes() {
    let dir = TestDir::new("websocket_enable");
    let rt = Runtime::new().unwrap();
    let (echo, seen) = echo_server(&rt);
    let gw = Gateway::start(dir.path(), &[]);
    let node = json!({format!("127.0.0.1:{echo}"): 1});
    put(
        &gw,
        "/apisix/admin/routes/ws",
        &json!({"uri": "/ws", "enable_websocket": true, "upstream": {"nodes": node}}),
    );
    put(
        &gw,
        "/apisix/admin/routes/plain",
        &json!({"uri": "/plain", "upstream": {"nodes": node}}),
    );
    put(
        &gw,
        "/apisix/admin/routes/off",
        &json!({"uri": "/off", "enable_websocket": false, "upstream": {"nodes": node}}),
    );
    let base = format!("ws://127.0.0.1:{}", gw.proxy_port);
    wait_for("the WebSocket route", Duration::from_secs(5), || {
        ws_echo(&rt, &format!("{base}/ws"), &[]).ok()
    });
    assert_eq!(ws_echo(&rt, &format!("{base}/ws"), &[]), Ok("hello".into()));
    let upgrades = seen.lock().unwrap().len();
    // Without enable_websocket the upgrade is refused by Envoy (403) and
    // the upstream never sees it.
    assert_eq!(ws_echo(&rt, &format!("{base}/plain"), &[]), Err(403));
    assert_eq!(ws_echo(&rt, &format!("{base}/off"), &[]), Err(403));
    assert_eq!(seen.lock().unwrap().len(), upgrades);

    // A service's enable_websocket reaches its routes (the route's own
    // value wins).
    put(
        &gw,
        "/apisix/admin/services/svc",
        &json!({"enable_websocket": true, "upstream": {"nodes": node}}),
    );
    put(
        &gw,
        "/apisix/admin/routes/svc-ws",
        &json!({"uri": "/svc-ws", "service_id": "svc"}),
    );
    put(
        &gw,
        "/apisix/admin/routes/svc-off",
        &json!({"uri": "/svc-off", "service_id": "svc", "enable_websocket": false}),
    );
    wait_for("the service's routes", Duration::from_secs(5), || {
        (ws_echo(&rt, &format!("{base}/svc-off"), &[]) == Err(403)).then_some(())
    });
    assert_eq!(
        ws_echo(&rt, &format!("{base}/svc-ws"), &[]),
        Ok("hello".into())
    );

    // Switching it off takes effect on the next upgrade.
    put(
        &gw,
        "/apisix/admin/routes/ws",
        &json!({"uri": "/ws", "upstream": {"nodes": node}}),
    );
    wait_for("enable_websocket off", Duration::from_secs(5), || {
        (ws_echo(&rt, &format!("{base}/ws"), &[]) == Err(403)).then_some(())
    });
}

#[test]
fn a_protected_websocket_route_checks_the_token_on_the_upgrade() {
    let dir = TestDir::new("websocket_protected");
    let rt = Runtime::new().unwrap();
    let (echo, seen) = echo_server(&rt);
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    put(
        &gw,
        "/apisix/admin/routes/ws",
        &json!({
            "uri": "/ws",
            "enable_websocket": true,
            "plugins": {"openid-connect": {
                "client_id": provider.client_id(),
                "client_secret": provider.client_secret(),
                "discovery": provider.discovery_url(),
                "bearer_only": true,
                "use_jwks": true,
                "set_access_token_header": true
            }},
            "upstream": {"nodes": {format!("127.0.0.1:{echo}"): 1}}
        }),
    );
    let url = format!("ws://127.0.0.1:{}/ws", gw.proxy_port);
    wait_for("the protected route", Duration::from_secs(5), || {
        get(&gw.url("/ws"), &[]).ok().filter(|r| r.status == 401)
    });
    // No token: 401 on the upgrade, nothing reaches the upstream.
    assert_eq!(ws_echo(&rt, &url, &[]), Err(401));
    assert_eq!(
        ws_echo(&rt, &url, &[("authorization", "Bearer not.a.token")]),
        Err(401)
    );
    assert_eq!(
        ws_echo(&rt, &url, &[("x-access-token", "forged")]),
        Err(401)
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );

    // A valid token: 101, the echo, and the upstream got the checked token.
    let token = provider.client_credentials_token();
    let auth = format!("Bearer {token}");
    assert_eq!(
        ws_echo(&rt, &url, &[("authorization", &auth)]),
        Ok("hello".into())
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("/ws".to_string(), Some(token))]);
}

/// APISIX (nginx) closes a WebSocket silent for longer than the read
/// timeout, and only then: the route's `timeout` is Envoy's idle timeout
/// on the upgraded stream, and its request timeout does not cut a
/// WebSocket that keeps talking.
#[test]
fn the_route_timeout_is_an_idle_timeout_on_websockets() {
    let dir = TestDir::new("websocket_timeout");
    let rt = Runtime::new().unwrap();
    let (echo, _seen) = echo_server(&rt);
    let gw = Gateway::start(dir.path(), &[]);
    put(
        &gw,
        "/apisix/admin/routes/ws",
        &json!({"uri": "/ws", "enable_websocket": true,
            "timeout": {"connect": 1, "send": 2, "read": 2},
            "upstream": {"nodes": {format!("127.0.0.1:{echo}"): 1}}}),
    );
    let url = format!("ws://127.0.0.1:{}/ws", gw.proxy_port);
    wait_for("the WebSocket route", Duration::from_secs(5), || {
        ws_echo(&rt, &url, &[]).ok()
    });
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        // Talking every 500 ms for 5 s: longer than the 2 s timeout.
        for i in 0..10 {
            let text = format!("m{i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("an echo")
                .expect("open")
                .expect("no error");
            assert_eq!(back.to_text().unwrap(), text);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Silent for longer than 2 s: closed.
        let end = tokio::time::timeout(Duration::from_secs(6), ws.next())
            .await
            .expect("closed within 6 s");
        assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    });
}
