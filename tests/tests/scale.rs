//! The control plane with many routes stored (issue 20): the sidecar starts
//! with 2,000 routes, and changes made through the Admin API still reach
//! the real Envoy whole and in order: a new route with its new upstream
//! (never a request answered 503 because the route came before its
//! cluster), a burst of writes to one route (the last one wins, and stays),
//! a change to an upstream many routes share, a delete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::echo::EchoServer;
use integration_tests::gateway::Gateway;
use integration_tests::{get, wait_for, TestDir};
use serde_json::{json, Value};

/// Routes stored before the sidecar starts.
const ROUTES: usize = 2_000;

fn put(gw: &Gateway, path: &str, body: &Value) {
    let r = gw.admin("PUT", path, Some(&body.to_string()));
    assert!(
        r.status == 201 || r.status == 200,
        "{path}: {} {}",
        r.status,
        r.body
    );
}

/// Who answered (the echo server's name), or the status when it was not
/// an echo server.
fn who(gw: &Gateway, path: &str) -> String {
    match get(&gw.url(path), &[]) {
        Ok(r) if r.status == 200 => r.json()["name"].as_str().unwrap_or("?").to_string(),
        Ok(r) => r.status.to_string(),
        Err(e) => format!("error {e}"),
    }
}

/// Polls `path` in a thread until stopped; every answer, in order, with
/// repeats collapsed.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(gw: &Gateway, path: &str) -> Watch {
        let url = gw.url(path);
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let answer = match get(&url, &[]) {
                    Ok(r) if r.status == 200 => {
                        r.json()["name"].as_str().unwrap_or("?").to_string()
                    }
                    Ok(r) => r.status.to_string(),
                    Err(e) => format!("error {e}"),
                };
                let mut v = v.lock().unwrap();
                if v.last() != Some(&answer) {
                    v.push(answer);
                }
                drop(v);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Watch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn until(gw: &Gateway, path: &str, want: &str, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(what, Duration::from_secs(20), || {
        (who(gw, path) == want).then_some(())
    });
    start.elapsed()
}

#[test]
fn changes_arrive_whole_and_in_order_with_2000_routes_stored() {
    let dir = TestDir::new("scale_changes_in_order");
    let a = EchoServer::start(dir.path(), "a");
    let b = EchoServer::start(dir.path(), "b");
    let c = EchoServer::start(dir.path(), "c");
    let node = |e: &EchoServer| json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", e.port): 1}});

    // 2,000 routes stored: a quarter name the shared upstream "shared".
    let mut routes = serde_json::Map::new();
    for i in 0..ROUTES {
        let mut r = json!({"id": format!("s{i}"), "uri": format!("/s/{i}")});
        if i % 4 == 0 {
            r["upstream_id"] = json!("shared");
        } else {
            r["upstream"] = node(&a);
        }
        routes.insert(format!("s{i}"), r);
    }
    let mut shared = node(&a);
    shared["id"] = json!("shared");
    let stored = json!({"routes": routes, "upstreams": {"shared": shared}});
    std::fs::write(dir.path().join("routes.json"), stored.to_string()).unwrap();
    let started = Instant::now();
    let gw = Gateway::start(dir.path(), &[]);
    until(
        &gw,
        &format!("/s/{}", ROUTES - 1),
        "a",
        "the last stored route",
    );
    eprintln!(
        "{ROUTES} stored routes served after {:?}",
        started.elapsed()
    );

    // A new route with a new upstream: 404 until it arrives, then B; never
    // a 503 (the route before its cluster or endpoints).
    let w = Watch::start(&gw, "/new");
    put(&gw, "/apisix/admin/upstreams/ub", &node(&b));
    put(
        &gw,
        "/apisix/admin/routes/new",
        &json!({"uri": "/new", "upstream_id": "ub"}),
    );
    let took = until(&gw, "/new", "b", "the new route");
    std::thread::sleep(Duration::from_millis(300));
    let seen = w.finish();
    assert_eq!(seen, ["404", "b"], "GET /new while it was added ({took:?})");

    // A burst of writes to one route, alternating upstreams A and B, the
    // last on C: C wins and stays (an older version arriving late would
    // flip it back).
    put(
        &gw,
        "/apisix/admin/routes/lww",
        &json!({"uri": "/lww", "upstream": node(&a)}),
    );
    until(&gw, "/lww", "a", "route lww");
    for k in 0..10 {
        let up = if k % 2 == 0 { node(&b) } else { node(&a) };
        let up = if k == 9 { node(&c) } else { up };
        put(
            &gw,
            "/apisix/admin/routes/lww",
            &json!({"uri": "/lww", "upstream": up, "desc": format!("write {k}")}),
        );
    }
    until(&gw, "/lww", "c", "the last write to lww");
    let w = Watch::start(&gw, "/lww");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(w.finish(), ["c"], "GET /lww after the last write");

    // The shared upstream moves to B: every route naming it follows, the
    // others stay; no 503 on the way.
    let w = Watch::start(&gw, "/s/0");
    put(&gw, "/apisix/admin/upstreams/shared", &node(&b));
    until(&gw, "/s/0", "b", "a route on the shared upstream");
    // Let the watcher sample the new state too (it polls on its own).
    std::thread::sleep(Duration::from_millis(300));
    let seen = w.finish();
    assert_eq!(seen, ["a", "b"], "GET /s/0 while its upstream changed");
    assert_eq!(who(&gw, &format!("/s/{}", ROUTES - 4)), "b");
    assert_eq!(who(&gw, &format!("/s/{}", ROUTES - 1)), "a");

    // A delete: B until it is gone, then 404; the others stay.
    let w = Watch::start(&gw, "/new");
    let r = gw.admin("DELETE", "/apisix/admin/routes/new", None);
    assert_eq!(r.status, 200, "{}", r.body);
    until(&gw, "/new", "404", "the deleted route gone");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.finish(), ["b", "404"], "GET /new while it was deleted");
    assert_eq!(who(&gw, "/s/1"), "a");
    assert_eq!(who(&gw, "/lww"), "c");

    // Paging at this size answers one page.
    let r = gw.admin("GET", "/apisix/admin/routes?page=2&page_size=500", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["total"], ROUTES + 1);
    assert_eq!(body["list"].as_array().map(Vec::len), Some(500));
}

/// The file store's log (issue 20): with 1,000 routes stored in the
/// one-file format (as sidecars before the log wrote it), a burst of route
/// PUTs, the sidecar killed (SIGKILL) in the middle of it and started
/// again: every write the Admin API acknowledged is there and served.
#[test]
fn acknowledged_writes_survive_a_kill_in_the_middle_of_a_burst() {
    let dir = TestDir::new("scale_kill_mid_burst");
    let a = EchoServer::start(dir.path(), "a");
    let node = json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", a.port): 1}});
    let mut routes = serde_json::Map::new();
    for i in 0..1_000 {
        routes.insert(
            format!("s{i}"),
            json!({"id": format!("s{i}"), "uri": format!("/s/{i}"), "upstream": node}),
        );
    }
    let stored = json!({"routes": routes, "upstreams": {}});
    std::fs::write(dir.path().join("routes.json"), stored.to_string()).unwrap();
    let mut gw = Gateway::start(dir.path(), &[]);
    until(&gw, "/s/999", "a", "the last stored route");

    let admin = format!("http://127.0.0.1:{}", gw.admin_port);
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let writer = {
        let (acked, node) = (acked.clone(), node.clone());
        std::thread::spawn(move || {
            for i in 0..100_000 {
                let body = json!({"uri": format!("/k/{i}"), "upstream": node});
                let r = integration_tests::http::request(
                    "PUT",
                    &format!("{admin}/apisix/admin/routes/k{i}"),
                    &[("content-type", "application/json")],
                    Some(body.to_string().into_bytes()),
                );
                match r {
                    Ok(r) if r.status == 201 => acked.lock().unwrap().push(i),
                    _ => return,
                }
            }
        })
    };
    wait_for("100 acknowledged writes", Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 100).then_some(())
    });
    gw.kill_sidecar();
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100);
    gw.restart_sidecar();
    for i in &acked {
        let r = gw.admin("GET", &format!("/apisix/admin/routes/k{i}"), None);
        assert_eq!(r.status, 200, "acknowledged route k{i} lost: {}", r.body);
    }
    let last = acked[acked.len() - 1];
    until(
        &gw,
        &format!("/k/{last}"),
        "a",
        "the last acknowledged route",
    );
    assert_eq!(who(&gw, "/s/0"), "a");
    // The log was folded into the one file at start-up.
    let log = dir.path().join("routes.json.log");
    assert_eq!(std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0), 0);
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("routes.json")).unwrap()).unwrap();
    assert!(file["routes"][format!("k{last}")].is_object());
}

/// Incremental (delta) xDS with 2,000 routes stored: Envoy keeps serving
/// while the sidecar is down and, when it reconnects, tells the new
/// sidecar what it has (`initial_resource_versions`); it is sent what
/// changed meanwhile (a new route and its cluster, a deleted route, new
/// endpoints), whole and in order: the new route 404 then served, the
/// deleted one served then 404, never a 503 (a route before its cluster,
/// or a cluster removed under a route Envoy still has), the listener never
/// drained.
#[test]
fn a_reconnecting_envoy_gets_what_changed_while_the_sidecar_was_down() {
    let dir = TestDir::new("scale_reconnect");
    let a = EchoServer::start(dir.path(), "a");
    let b = EchoServer::start(dir.path(), "b");
    let node = |e: &EchoServer| json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", e.port): 1}});
    let write = |extra: &[(&str, Value)]| {
        let mut routes = serde_json::Map::new();
        for i in 2..ROUTES {
            routes.insert(
                format!("s{i}"),
                json!({"id": format!("s{i}"), "uri": format!("/s/{i}"), "upstream": node(&a)}),
            );
        }
        for (id, r) in extra {
            let mut r = r.clone();
            r["id"] = json!(id);
            routes.insert(id.to_string(), r);
        }
        let stored = json!({"routes": routes, "upstreams": {}});
        std::fs::write(dir.path().join("routes.json"), stored.to_string()).unwrap();
    };
    write(&[
        ("gone", json!({"uri": "/gone", "upstream": node(&a)})),
        ("s1", json!({"uri": "/s/1", "upstream": node(&a)})),
    ]);
    let mut gw = Gateway::start(dir.path(), &[]);
    until(
        &gw,
        &format!("/s/{}", ROUTES - 1),
        "a",
        "the last stored route",
    );
    until(&gw, "/gone", "a", "route gone");
    let modified = gw.envoy_stat("listener_manager.listener_modified");
    let draining = gw.envoy_stat("listener_manager.total_listeners_draining");

    gw.stop_sidecar();
    // Envoy still serves what it has.
    assert_eq!(who(&gw, "/gone"), "a");
    write(&[
        ("late", json!({"uri": "/late", "upstream": node(&b)})),
        ("s1", json!({"uri": "/s/1", "upstream": node(&b)})),
    ]);
    let watches = ["/gone", "/late", "/s/1", "/s/2"].map(|p| Watch::start(&gw, p));
    let started = Instant::now();
    gw.restart_sidecar();
    until(
        &gw,
        "/late",
        "b",
        "the route added while the sidecar was down",
    );
    until(
        &gw,
        "/gone",
        "404",
        "the route deleted while the sidecar was down",
    );
    until(
        &gw,
        "/s/1",
        "b",
        "the endpoints changed while the sidecar was down",
    );
    eprintln!(
        "the changes served {:?} after the sidecar's start",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = watches.map(Watch::finish);
    assert_eq!(seen[0], ["a", "404"], "GET /gone");
    assert_eq!(seen[1], ["404", "b"], "GET /late");
    assert_eq!(seen[2], ["a", "b"], "GET /s/1");
    assert_eq!(seen[3], ["a"], "GET /s/2");
    assert_eq!(who(&gw, &format!("/s/{}", ROUTES - 1)), "a");
    assert_eq!(
        gw.envoy_stat("listener_manager.listener_modified"),
        modified
    );
    assert_eq!(
        gw.envoy_stat("listener_manager.total_listeners_draining"),
        draining
    );
    // The deleted route's cluster went too (after the routes without it).
    wait_for(
        "route gone's cluster removed",
        Duration::from_secs(10),
        || {
            let r = get(
                &format!("http://127.0.0.1:{}/clusters", gw.envoy_admin_port),
                &[],
            )
            .ok()?;
            (r.status == 200 && !r.body.contains("route|gone::") && r.body.contains("route|late::"))
                .then_some(())
        },
    );
}
