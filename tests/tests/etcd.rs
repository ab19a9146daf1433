//! The etcd store (`--etcd`): two gateways (each its own sidecar and
//! Envoy) over one etcd started by the test. A write on one is served by
//! the other's Envoy; concurrent writes of one id are decided by etcd's
//! revisions; with etcd down writes are refused and everything keeps
//! serving; when it is back, both catch up.

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::etcd::Etcd;
use integration_tests::gateway::Gateway;
use integration_tests::{get, static_server, wait_for, TestDir};
use serde_json::{json, Value};

/// A gateway in `<dir>/<name>/` (its own logs and ports) on `etcd`.
fn gateway(dir: &TestDir, name: &str, etcd: &Etcd, extra: &[&str]) -> Gateway {
    let sub = dir.path().join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let url = etcd.url();
    let mut args = vec!["--etcd", &url];
    args.extend_from_slice(extra);
    Gateway::start(&sub, &args)
}

fn route(uri: &str, port: u16) -> Value {
    json!({"uri": uri, "upstream": {"nodes": {format!("127.0.0.1:{port}"): 1}}})
}

/// PUT, expecting 200 or 201; the answer's body.
fn put(gw: &Gateway, path: &str, body: &Value) -> Value {
    let r = gw.admin("PUT", path, Some(&body.to_string()));
    assert!(
        r.status == 201 || r.status == 200,
        "{path}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

/// Who answers `path` on `gw`'s Envoy (`None`: not 200).
fn who(gw: &Gateway, path: &str) -> Option<String> {
    get(&gw.url(path), &[])
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body)
}

/// How long a change may take to reach the other gateway before the test
/// fails. It usually takes well under a second ([`EXPECTED`]); the bound is
/// generous so a loaded 2-core CI machine does not fail, and still catches
/// a change that never arrives.
const SETTLE: Duration = Duration::from_secs(10);

/// What a change usually takes; a slower one is reported, not failed.
const EXPECTED: Duration = Duration::from_secs(1);

/// Waits until `check` holds, at most [`SETTLE`]; prints and returns how
/// long it took (flagged when above `expected`).
fn within(what: &str, expected: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    wait_for(what, SETTLE.max(expected), || check().then_some(()));
    let took = start.elapsed();
    let slow = if took > expected {
        format!(" (slow: expected under {expected:?})")
    } else {
        String::new()
    };
    eprintln!("{what}: {took:?}{slow}");
    took
}

fn index(v: &Value, name: &str) -> i64 {
    v[name]
        .as_i64()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn a_put_on_one_sidecar_is_served_by_the_others_envoy() {
    let dir = TestDir::new("etcd_two_gateways");
    let etcd = Etcd::start(dir.path());
    let (one, _p1) = static_server(&dir, "one");
    let (two, _p2) = static_server(&dir, "two");
    let a = gateway(&dir, "a", &etcd, &[]);
    let mut b = gateway(&dir, "b", &etcd, &[]);

    // Created on A, served by B's Envoy within a second.
    let created = put(&a, "/apisix/admin/routes/r", &route("/who", one));
    assert_eq!(created["key"], "/apisix/routes/r");
    let rev = index(&created, "modifiedIndex");
    assert_eq!(index(&created, "createdIndex"), rev);
    within("B's Envoy serving A's new route", EXPECTED, || {
        who(&b, "/who").as_deref() == Some("one")
    });
    // B's Admin API shows it with the same revisions.
    let seen = b.admin("GET", "/apisix/admin/routes/r", None);
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json(), created);

    // Updated on B, served by A's Envoy.
    let updated = put(&b, "/apisix/admin/routes/r", &route("/who", two));
    assert!(index(&updated, "modifiedIndex") > rev);
    assert_eq!(index(&updated, "createdIndex"), rev);
    within("A's Envoy serving B's update", EXPECTED, || {
        who(&a, "/who").as_deref() == Some("two")
    });

    // An upstream on A, a route naming it on B.
    put(
        &a,
        "/apisix/admin/upstreams/u",
        &json!({"nodes": {format!("127.0.0.1:{one}"): 1}}),
    );
    within("B knowing the upstream", EXPECTED, || {
        b.admin("GET", "/apisix/admin/upstreams/u", None).status == 200
    });
    put(
        &b,
        "/apisix/admin/routes/by-id",
        &json!({"uri": "/who", "host": "by-id.test", "upstream_id": "u"}),
    );
    within(
        "A's Envoy serving B's route by upstream_id",
        EXPECTED,
        || get(&a.url("/who"), &[("host", "by-id.test")]).is_ok_and(|r| r.body == "one"),
    );

    // The keys are APISIX's, the values the stored objects (real secrets).
    // (A login route whose redirect URI comes from the request names its
    // hosts.)
    let login = json!({"uri": "/login/*", "hosts": ["login.test"], "plugins": {"openid-connect": {
        "client_id": "c", "client_secret": "the-client-secret-0123456789",
        "discovery": "http://127.0.0.1:9/.well-known/openid-configuration"}},
        "upstream": {"nodes": {format!("127.0.0.1:{one}"): 1}}});
    let answer = put(&a, "/apisix/admin/routes/login", &login);
    assert_eq!(
        answer["value"]["plugins"]["openid-connect"]["client_secret"],
        "******"
    );
    let stored = etcd.get("/apisix/routes/login").expect("the key in etcd");
    assert_eq!(stored["id"], "login");
    assert_eq!(
        stored["plugins"]["openid-connect"]["client_secret"],
        "the-client-secret-0123456789"
    );
    let secret = stored["plugins"]["openid-connect"]["session"]["secret"]
        .as_str()
        .expect("a generated session secret")
        .to_string();
    assert_eq!(secret.len(), 64);
    assert!(stored["create_time"].is_u64());
    assert_eq!(etcd.get("/apisix/upstreams/u").unwrap()["id"], "u");
    // B shows it redacted, and writing B's redacted copy back keeps the
    // secrets A generated.
    within("B knowing the login route", EXPECTED, || {
        b.admin("GET", "/apisix/admin/routes/login", None).status == 200
    });
    let mut back = b.admin("GET", "/apisix/admin/routes/login", None).json()["value"].clone();
    assert_eq!(
        back["plugins"]["openid-connect"]["session"]["secret"],
        "******"
    );
    let obj = back.as_object_mut().unwrap();
    obj.remove("create_time");
    obj.remove("update_time");
    put(&b, "/apisix/admin/routes/login", &back);
    let again = etcd.get("/apisix/routes/login").unwrap();
    assert_eq!(
        again["plugins"]["openid-connect"]["session"]["secret"],
        secret
    );
    assert_eq!(
        again["plugins"]["openid-connect"]["client_secret"],
        "the-client-secret-0123456789"
    );

    // A refused call changes nothing anywhere.
    let bad = a.admin("PUT", "/apisix/admin/routes/r", Some(r#"{"uri": 5}"#));
    assert_eq!(bad.status, 400);
    assert_eq!(
        etcd.get("/apisix/routes/r").unwrap()["upstream"],
        route("/who", two)["upstream"]
    );

    // Deleted on A: gone from B's Envoy.
    assert_eq!(
        a.admin("DELETE", "/apisix/admin/routes/r", None).status,
        200
    );
    within("B's Envoy dropping the deleted route", EXPECTED, || {
        get(&b.url("/who"), &[]).is_ok_and(|r| r.status == 404)
    });
    assert_eq!(etcd.get("/apisix/routes/r"), None);

    // A restarted sidecar loads the set from etcd.
    b.restart_sidecar();
    assert_eq!(b.admin("GET", "/apisix/admin/routes/r", None).status, 404);
    assert_eq!(
        b.admin("GET", "/apisix/admin/routes/login", None).status,
        200
    );
    // Nothing was written to the file.
    assert!(!b.data_file.exists());
}

#[test]
fn another_prefix_keeps_another_set() {
    let dir = TestDir::new("etcd_prefix");
    let etcd = Etcd::start(dir.path());
    let (one, _p1) = static_server(&dir, "one");
    let (two, _p2) = static_server(&dir, "two");
    let a = gateway(&dir, "a", &etcd, &["--etcd-prefix", "/gw-a"]);
    let b = gateway(&dir, "b", &etcd, &[]);
    let r = put(&a, "/apisix/admin/routes/r", &route("/who", one));
    assert_eq!(r["key"], "/gw-a/routes/r");
    assert_eq!(etcd.get("/gw-a/routes/r").unwrap()["id"], "r");
    assert_eq!(etcd.get("/apisix/routes/r"), None);
    within("A's Envoy", EXPECTED, || {
        who(&a, "/who").as_deref() == Some("one")
    });
    // A marker written to etcd after A's route, on B's prefix: once B
    // serves it, B's watch has gone past A's write, so A's route would be
    // there by now if B saw the other prefix.
    let mut marker = route("/who", two);
    marker["id"] = json!("marker");
    marker["host"] = json!("marker.test");
    etcd.put("/apisix/routes/marker", &marker);
    let marked = |gw: &Gateway| {
        get(&gw.url("/who"), &[("host", "marker.test")]).is_ok_and(|r| r.body == "two")
    };
    within("B's Envoy serving the marker", EXPECTED, || marked(&b));
    assert_eq!(b.admin("GET", "/apisix/admin/routes/r", None).status, 404);
    assert_eq!(who(&b, "/who"), None);
    // And the marker is B's only: A's prefix is another set.
    assert_eq!(
        a.admin("GET", "/apisix/admin/routes/marker", None).status,
        404
    );
    assert!(!marked(&a));
}

#[test]
fn concurrent_puts_of_one_id_lose_nothing_silently() {
    let dir = TestDir::new("etcd_concurrent");
    let etcd = Etcd::start(dir.path());
    let (one, _p1) = static_server(&dir, "one");
    let (two, _p2) = static_server(&dir, "two");
    let a = gateway(&dir, "a", &etcd, &[]);
    let b = gateway(&dir, "b", &etcd, &[]);
    // Writes decided again after a conflict (the retry path), from both
    // sidecars' logs.
    let conflicts = || -> usize {
        ["a", "b"]
            .iter()
            .map(|g| {
                let log = std::fs::read_to_string(dir.path().join(g).join("sidecar.log")).unwrap();
                log.matches("changed concurrently").count()
            })
            .sum()
    };
    let mut revisions = Vec::new();
    // At least 10 rounds, more (up to 40) until the two writes of a round
    // raced into a conflict: most rounds do, so this rarely runs past 10.
    for round in 0..40 {
        if round >= 10 && conflicts() > 0 {
            break;
        }
        let id = format!("c{round}");
        let path = format!("/apisix/admin/routes/{id}");
        let body_a = json!({"uri": "/who", "desc": "a", "upstream": {"nodes": {format!("127.0.0.1:{one}"): 1}}});
        let body_b = json!({"uri": "/who", "desc": "b", "upstream": {"nodes": {format!("127.0.0.1:{two}"): 1}}});
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| a.admin("PUT", &path, Some(&body_a.to_string())));
            let tb = s.spawn(|| b.admin("PUT", &path, Some(&body_b.to_string())));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        // Both were written, one after the other: one created it, the
        // other replaced it; the revisions say in which order.
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(statuses, [200, 201], "{} {}", ra.body, rb.body);
        let (ja, jb) = (ra.json(), rb.json());
        let (rev_a, rev_b) = (index(&ja, "modifiedIndex"), index(&jb, "modifiedIndex"));
        assert_ne!(rev_a, rev_b);
        assert_eq!(index(&ja, "createdIndex"), index(&jb, "createdIndex"));
        let (winner, serves) = if rev_a > rev_b {
            ("a", "one")
        } else {
            ("b", "two")
        };
        revisions.push((rev_a, rev_b));
        // The later one is stored, and both sidecars show it.
        let stored = etcd.get(&format!("/apisix/routes/{id}")).unwrap();
        assert_eq!(stored["desc"], winner, "round {round}: {rev_a} vs {rev_b}");
        let stored_rev = rev_a.max(rev_b);
        for gw in [&a, &b] {
            within("both sidecars showing the later write", EXPECTED, || {
                let got = gw.admin("GET", &path, None).json();
                got["value"]["desc"] == winner && index(&got, "modifiedIndex") == stored_rev
            });
        }
        // Both Envoys serve the later write.
        for gw in [&a, &b] {
            within("both Envoys serving the later write", EXPECTED, || {
                who(gw, "/who").as_deref() == Some(serves)
            });
        }
        assert_eq!(a.admin("DELETE", &path, None).status, 200);
        for gw in [&a, &b] {
            within("both Envoys dropping the route", EXPECTED, || {
                get(&gw.url("/who"), &[]).is_ok_and(|r| r.status == 404)
            });
        }
    }
    eprintln!("revisions (a, b) per round: {revisions:?}");
    let conflicts = conflicts();
    eprintln!(
        "writes decided again after a conflict: {conflicts} in {} rounds",
        revisions.len()
    );
    assert!(
        conflicts > 0,
        "no write was decided again after a conflict in {} rounds: the retry path never ran",
        revisions.len()
    );
}

#[test]
fn etcd_down_then_back() {
    let dir = TestDir::new("etcd_outage");
    let mut etcd = Etcd::start(dir.path());
    let (one, _p1) = static_server(&dir, "one");
    let (two, _p2) = static_server(&dir, "two");
    let a = gateway(&dir, "a", &etcd, &[]);
    let b = gateway(&dir, "b", &etcd, &[]);
    put(&a, "/apisix/admin/routes/first", &route("/first", one));
    within("B's Envoy serving the first route", EXPECTED, || {
        who(&b, "/first").as_deref() == Some("one")
    });

    etcd.stop();
    // Writes: 503 with a clear message, on both sidecars.
    for gw in [&a, &b] {
        for (method, path, body) in [
            (
                "PUT",
                "/apisix/admin/routes/second",
                Some(route("/second", two).to_string()),
            ),
            (
                "POST",
                "/apisix/admin/routes",
                Some(route("/second", two).to_string()),
            ),
            (
                "PATCH",
                "/apisix/admin/routes/first",
                Some(r#"{"desc": "x"}"#.to_string()),
            ),
            ("DELETE", "/apisix/admin/routes/first", None),
        ] {
            let started = Instant::now();
            let r = gw.admin(method, path, body.as_deref());
            assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
            let msg = r.json()["error_msg"].as_str().unwrap().to_string();
            assert!(msg.contains("cannot save the route"), "{msg}");
            assert!(msg.contains(&etcd.url()), "{msg}");
            // Each etcd call gives up after --etcd-timeout (3 s): a refusal
            // that takes longer than the generous bound means a hang.
            let took = started.elapsed();
            eprintln!("{method} {path} with etcd down: 503 in {took:?}: {msg}");
            assert!(took < SETTLE, "{method} {path}: 503 only after {took:?}");
        }
    }
    // Reads answer the last known state; the Envoys keep serving.
    for gw in [&a, &b] {
        let r = gw.admin("GET", "/apisix/admin/routes/first", None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            gw.admin("GET", "/apisix/admin/routes", None).json()["total"],
            1
        );
        assert_eq!(who(gw, "/first").as_deref(), Some("one"));
    }
    // Both sidecars saw their watch break (what could make them drop
    // routes); after that, the Envoys still serve.
    for g in ["a", "b"] {
        let log = dir.path().join(g).join("sidecar.log");
        within(
            &format!("{g}'s sidecar noticing etcd is down"),
            EXPECTED,
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("etcd: watch lost")),
        );
    }
    assert_eq!(who(&a, "/first").as_deref(), Some("one"));
    assert_eq!(who(&b, "/first").as_deref(), Some("one"));

    etcd.start_again();
    // A's writes work again (its client reconnects).
    let back = Instant::now();
    wait_for("A to write again", Duration::from_secs(10), || {
        let r = a.admin(
            "PUT",
            "/apisix/admin/routes/second",
            Some(&route("/second", two).to_string()),
        );
        (r.status == 201).then_some(())
    });
    eprintln!("A writing again after etcd restarted: {:?}", back.elapsed());
    // B's watch came back: the write made on A reaches B's Envoy.
    within(
        "B's Envoy serving the route written after the restart",
        Duration::from_secs(2),
        || who(&b, "/second").as_deref() == Some("two"),
    );
    // No stale route after it is back: a delete on A is a delete on B.
    assert_eq!(
        a.admin("DELETE", "/apisix/admin/routes/first", None).status,
        200
    );
    within("B's Envoy dropping the deleted route", EXPECTED, || {
        get(&b.url("/first"), &[]).is_ok_and(|r| r.status == 404)
    });
    assert_eq!(
        b.admin("GET", "/apisix/admin/routes/first", None).status,
        404
    );
    // B writes too.
    put(&b, "/apisix/admin/routes/third", &route("/third", one));
    within("A's Envoy serving B's write", EXPECTED, || {
        who(&a, "/third").as_deref() == Some("one")
    });
}

/// SIGSTOP / SIGCONT to a process this test started.
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the PID of a child of this test.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[test]
fn a_watch_that_missed_compacted_revisions_reads_everything_again() {
    let dir = TestDir::new("etcd_compacted");
    let mut etcd = Etcd::start(dir.path());
    let (one, _p1) = static_server(&dir, "one");
    let (two, _p2) = static_server(&dir, "two");
    let a = gateway(&dir, "a", &etcd, &[]);
    let b = gateway(&dir, "b", &etcd, &[]);
    put(&a, "/apisix/admin/routes/old", &route("/old", one));
    within("B's Envoy serving the first route", EXPECTED, || {
        who(&b, "/old").as_deref() == Some("one")
    });
    // B's sidecar is frozen while etcd restarts (its watch breaks), A
    // writes, and etcd compacts what B has not seen.
    let pid = b.sidecar_pid().unwrap();
    signal(pid, libc::SIGSTOP);
    etcd.stop();
    etcd.start_again();
    wait_for("A to write again", Duration::from_secs(10), || {
        let r = a.admin(
            "PUT",
            "/apisix/admin/routes/new",
            Some(&route("/new", two).to_string()),
        );
        (r.status == 201).then_some(())
    });
    assert_eq!(
        a.admin("DELETE", "/apisix/admin/routes/old", None).status,
        200
    );
    etcd.compact();
    signal(pid, libc::SIGCONT);
    within(
        "B's Envoy serving the new route",
        Duration::from_secs(3),
        || who(&b, "/new").as_deref() == Some("two"),
    );
    within("B's Envoy dropping the deleted route", EXPECTED, || {
        get(&b.url("/old"), &[]).is_ok_and(|r| r.status == 404)
    });
    let log = std::fs::read_to_string(Path::new(&dir.path().join("b/sidecar.log"))).unwrap();
    assert!(log.contains("compacted"), "{log}");
}
