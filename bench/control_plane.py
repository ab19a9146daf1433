#!/usr/bin/env python3
"""`make bench` (control-plane section): the sidecar (release build) and
Envoy as `make run` starts them, loaded with routes through the Admin API.

For each route count N (`--counts`, default 100,1000; 10000 is the issue's
target): routes PUT one by one (half with `openid-connect`, `bearer_only`;
a quarter naming one of ten shared upstreams by `upstream_id`), timing each
PUT and, for a sample of them, the time from the PUT until Envoy serves the
new route (a request to it stops being Envoy's 404: the truth, not the
config dump); then Envoy's and the sidecar's RSS per route; then a restart of
both with the N routes stored (time until the sidecar answers, and until
Envoy serves the last route); then a bulk load: the same N routes PUT by 8
concurrent clients into a fresh gateway, until Envoy serves all of them.

With `--etcd`: an etcd on loopback (Debian `etcd-server`) is the store;
the routes are PUT through a second sidecar on the same etcd (no Envoy of
its own), and **served after** is a write from that other sidecar reaching
this gateway's Envoy (through the etcd watch). Its table goes between the
`control-plane-etcd` markers.

Writes its table into bench/RESULTS.md between the `control-plane` markers
(the rest of the file is left as it is) and prints it. Standard library only.
"""

import argparse
import http.client
import http.server
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOY = ROOT / ".venv/bin/envoy"
SIDECAR = Path(os.environ.get("BENCH_SIDECAR", ROOT / "target/release/sidecar"))
OIDC_WASM = ROOT / "target/wasm32-wasip1/wasm/oidc_filter.wasm"
BEGIN = "<!-- control-plane: begin (bench/control_plane.py) -->"
END = "<!-- control-plane: end -->"
ETCD_BEGIN = "<!-- control-plane-etcd: begin (bench/control_plane.py --etcd) -->"
ETCD_END = "<!-- control-plane-etcd: end -->"
# `--etcd`: the etcd URL, and a key prefix per gateway (a fresh store each).
ETCD = {"url": None, "n": 0}
# `--sotw`: Envoy asks for state-of-the-world xDS (`api_type: GRPC`), not
# incremental (the bootstrap's `DELTA_GRPC`).
# `--eager-stats`: every cluster's stats made when it is (the bootstrap
# defers them to first use).
MODE = {"sotw": False, "eager_stats": False}
SHARED_UPSTREAMS = 10


def say(msg):
    print(f"control-plane: {msg}", file=sys.stderr, flush=True)


def die(msg):
    print(f"control-plane: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(what, check, timeout=60, step=0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(step)
    die(f"{what}: not ready after {timeout} s")


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Upstream(http.server.ThreadingHTTPServer):
    """Answers 200 to everything (the routes' upstream and the provider's
    discovery URL, which then does not parse: the bearer_only routes answer
    401 without a token either way)."""

    daemon_threads = True

    def __init__(self):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # headers and body in one write (no delayed-ACK stall)

            def do_GET(self):
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), H)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port):
        self.port = port
        self.c = None

    def call(self, method, path, body=None):
        for attempt in range(2):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                data = json.dumps(body).encode() if body is not None else None
                self.c.request(method, path, body=data, headers={"content-type": "application/json"})
                r = self.c.getresponse()
                payload = r.read()
                return r.status, payload
            except (OSError, http.client.HTTPException):
                self.c = None
                if attempt:
                    return 0, b""
        return 0, b""


class Gateway:
    """The sidecar and one Envoy, as scripts/run.sh starts them."""

    def __init__(self, work, data, tag):
        self.work = work
        self.admin, self.xds, self.proxy, self.envoy_admin = (free_port() for _ in range(4))
        self.logs = []
        # With etcd, `data` is the key prefix, and a second sidecar on the
        # same etcd takes the writes (`writer`).
        store = ["--etcd", ETCD["url"], "--etcd-prefix", str(data)] if ETCD["url"] else ["--data", str(data)]
        self.sidecar = self._start(f"sidecar-{tag}", [
            str(SIDECAR), "--admin-addr", f"127.0.0.1:{self.admin}", "--xds-addr", f"127.0.0.1:{self.xds}",
            "--proxy-port", str(self.proxy), "--wasm", str(OIDC_WASM), *store,
            "--allow-local-upstreams"], {"RUST_LOG": os.environ.get("BENCH_RUST_LOG", "warn")})
        self.started = time.monotonic()
        wait_until("the sidecar", lambda: port_open(self.admin) and port_open(self.xds))
        self.sidecar_ready = time.monotonic() - self.started
        self.writer = None
        if ETCD["url"]:
            self.writer_admin, writer_xds = free_port(), free_port()
            self.writer = self._start(f"writer-{tag}", [
                str(SIDECAR), "--admin-addr", f"127.0.0.1:{self.writer_admin}",
                "--xds-addr", f"127.0.0.1:{writer_xds}", "--proxy-port", str(free_port()),
                "--wasm", str(OIDC_WASM), *store, "--allow-local-upstreams"],
                {"RUST_LOG": os.environ.get("BENCH_RUST_LOG", "warn")})
            wait_until("the writing sidecar", lambda: port_open(self.writer_admin))
        text = (ROOT / "envoy/bootstrap.yaml").read_text()
        if MODE["sotw"]:
            text = text.replace("api_type: DELTA_GRPC", "api_type: GRPC")
        if MODE["eager_stats"]:
            text = text.replace("enable_deferred_creation_stats: true", "enable_deferred_creation_stats: false")
        for k, v in {"XDS_PORT": self.xds, "ENVOY_ADMIN_PORT": self.envoy_admin, "NODE_ID": f"cp-{tag}"}.items():
            text = text.replace("${" + k + "}", str(v))
        boot = work / f"bootstrap-{tag}.yaml"
        boot.write_text(text)
        self.envoy = self._start(f"envoy-{tag}", [str(ENVOY), "-c", str(boot), "--concurrency", "1",
                                                  "--disable-hot-restart", "-l", "warning"], {})
        wait_until("the gateway listener", lambda: port_open(self.proxy), 60)
        # Writes go through the other sidecar with etcd.
        self.admin_client = Client(self.writer_admin if self.writer else self.admin)
        self.proxy_client = Client(self.proxy)

    def _start(self, name, argv, env):
        log = open(self.work / f"{name}.log", "wb")
        self.logs.append(log)
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env})

    def served(self, i, client=None):
        status, _ = (client or self.proxy_client).call("GET", f"/r/{i}")
        return status not in (0, 404)

    def stop(self):
        procs = [p for p in (self.envoy, self.sidecar, self.writer) if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


def route_body(i, up_port):
    r = {"uri": f"/r/{i}", "name": f"route-{i}", "labels": {"group": f"g{i % 10}"}}
    if i % 4 == 0:
        r["upstream_id"] = f"u{i % SHARED_UPSTREAMS}"
    else:
        r["upstream"] = {"type": "roundrobin", "nodes": {f"127.0.0.1:{up_port}": 1}}
    if i % 2 == 1:
        r["plugins"] = {"openid-connect": {
            "bearer_only": True, "use_jwks": True, "client_id": f"client-{i}", "client_secret": "bench-secret-0123",
            "discovery": f"http://127.0.0.1:{up_port}/realms/r{i % 7}/.well-known/openid-configuration"}}
    return r


def store_name(work, name):
    """The file, or with etcd a key prefix of its own."""
    return f"/bench/{name}" if ETCD["url"] else work / f"{name}.json"


def start_etcd(work):
    client, peer = free_port(), free_port()
    log = open(work / "etcd.log", "wb")
    p = subprocess.Popen([
        "etcd", "--name", "bench", "--data-dir", str(work / "etcd-data"),
        "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"bench=http://127.0.0.1:{peer}", "--log-level", "warn", "--logger", "zap",
        "--quota-backend-bytes", str(8 * 1024 ** 3)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until("etcd", lambda: port_open(client), 60)
    ETCD["url"] = f"http://127.0.0.1:{client}"
    return p


def put_upstreams(gw, up_port):
    for u in range(SHARED_UPSTREAMS):
        status, body = gw.admin_client.call("PUT", f"/apisix/admin/upstreams/u{u}",
                                            {"type": "roundrobin", "nodes": {f"127.0.0.1:{up_port}": 1}})
        if status not in (200, 201):
            die(f"upstream u{u}: {status} {body[:200]!r}")


def pct(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def wait_served(gw, i, timeout=120):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if gw.served(i):
            return time.monotonic()
        time.sleep(0.002)
    die(f"route {i} not served after {timeout} s")


def sequential(work, n, up_port, samples):
    """PUT n routes one by one; returns the figures and the data file."""
    data = store_name(work, f"routes-{n}")
    gw = Gateway(work, data, f"seq-{n}")
    try:
        base = {"envoy": rss_kib(gw.envoy.pid), "sidecar": rss_kib(gw.sidecar.pid)}
        put_upstreams(gw, up_port)
        every = max(1, n // samples)
        puts, served_after = [], []
        t0 = time.monotonic()
        for i in range(n):
            body = route_body(i, up_port)
            start = time.monotonic()
            status, payload = gw.admin_client.call("PUT", f"/apisix/admin/routes/r{i}", body)
            puts.append(time.monotonic() - start)
            if status not in (200, 201):
                die(f"route {i}: {status} {payload[:300]!r}")
            if i % every == every - 1 or i == n - 1:
                served_after.append(wait_served(gw, i) - start)
        total = time.monotonic() - t0
        time.sleep(1)
        rss = {"envoy": rss_kib(gw.envoy.pid), "sidecar": rss_kib(gw.sidecar.pid)}
        # Matching: the first and the last route of the set (Envoy walks a
        # virtual host's routes in order: exact paths by id, "r1" second,
        # "r9...9" last), both `openid-connect` routes answered 401 by the
        # filter (no upstream in the way).
        match = {}
        last = n - 1 if (n - 1) % 2 else n - 2
        for label, i in (("first", 1), ("last", last)):
            gw.served(i)
            times = []
            for _ in range(300):
                s = time.monotonic()
                gw.served(i)
                times.append(time.monotonic() - s)
            match[label] = statistics.median(times)
        envoy_apply = envoy_update_durations(gw)
        envoy_apply.update(snapshot_builds(work / f"sidecar-seq-{n}.log"))
        list_t = []
        for _ in range(5):
            s = time.monotonic()
            status, _ = gw.admin_client.call("GET", "/apisix/admin/routes")
            list_t.append(time.monotonic() - s)
    finally:
        gw.stop()
    tail = puts[-max(1, n // 10):]
    return {
        "put_p50": pct(puts, 50), "put_p99": pct(puts, 99), "tail_p50": pct(tail, 50), "tail_max": max(tail),
        "served_p50": pct(served_after, 50), "served_max": max(served_after), "total": total,
        "envoy_per_route": (rss["envoy"] - base["envoy"]) / n, "sidecar_per_route": (rss["sidecar"] - base["sidecar"]) / n,
        "envoy_rss": rss["envoy"], "sidecar_rss": rss["sidecar"],
        "match_first": match["first"], "match_last": match["last"], "list": statistics.median(list_t),
        **envoy_apply,
    }, data


def envoy_update_durations(gw):
    """Envoy's own time applying the updates of the sequential load
    (`update_duration`, ms, cumulative P50 and P99 of its histogram): the
    clusters (CDS) and the route configuration (RDS)."""
    out = {}
    try:
        c = http.client.HTTPConnection("127.0.0.1", gw.envoy_admin, timeout=10)
        c.request("GET", "/stats?filter=update_duration")
        text = c.getresponse().read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, hist = line.partition(": ")
        key = "cds" if name.startswith("cluster_manager.cds.") else "rds" if ".rds." in name else None
        if key is None:
            continue
        for p in ("50", "99"):
            m = re.search(r"P" + p + r"\(([^,]+),([^)]+)\)", hist)
            if m and m.group(2) != "nan":
                out[f"envoy_{key}_p{p}"] = float(m.group(2)) / 1000
    return out


def snapshot_builds(log):
    """The sidecar's own time per snapshot build over the load (its
    `xDS snapshot ... took` lines: logged at info, so only with
    `BENCH_RUST_LOG=warn,sidecar::xds=info`): p50 and p99, seconds."""
    unit = {"s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}
    took = []
    try:
        text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    except OSError:
        return {}
    for m in re.finditer(r"took=([0-9.]+)(s|ms|µs|ns) xDS snapshot|xDS snapshot.*?took=([0-9.]+)(s|ms|µs|ns)", text):
        v, u = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        took.append(float(v) * unit[u])
    if not took:
        return {}
    return {"build_p50": pct(took, 50), "build_p99": pct(took, 99), "builds": len(took)}


def restart(work, n, data):
    gw = Gateway(work, data, f"restart-{n}")
    try:
        wait_served(gw, n - 1, timeout=600)
        return gw.sidecar_ready, time.monotonic() - gw.started
    finally:
        gw.stop()


def bulk(work, n, up_port, clients=8):
    data = store_name(work, f"bulk-{n}")
    gw = Gateway(work, data, f"bulk-{n}")
    try:
        put_upstreams(gw, up_port)
        errors = []
        t0 = time.monotonic()

        def worker(k):
            c = Client(gw.writer_admin if gw.writer else gw.admin)
            for i in range(k, n, clients):
                status, payload = c.call("PUT", f"/apisix/admin/routes/r{i}", route_body(i, up_port))
                if status not in (200, 201):
                    errors.append(f"route {i}: {status} {payload[:200]!r}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            die(errors[0])
        puts_done = time.monotonic() - t0
        for i in range(n):
            wait_served(gw, i, timeout=600)
        return puts_done, time.monotonic() - t0
    finally:
        gw.stop()


nan = float("nan")


def ms(x):
    return f"{x * 1000:,.1f} ms" if x < 1 else f"{x:,.2f} s"


def render(rows, note):
    etcd = bool(ETCD["url"])
    out = [ETCD_BEGIN if etcd else BEGIN,
           "## Control plane with etcd: routes through another sidecar's Admin API" if etcd
           else "## Control plane: routes through the Admin API", ""]
    out.append(f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node() and ''}"
               f"{os.cpu_count()} cores; the sidecar `{SIDECAR.relative_to(ROOT) if SIDECAR.is_relative_to(ROOT) else SIDECAR}`"
               + (" (etcd store: a local etcd; the routes PUT through a second sidecar on the same etcd, so **served "
                  "after** is a write from another sidecar reaching this Envoy)" if etcd else " (file store)")
               + ", one Envoy (`--concurrency 1`) over "
               + ("state-of-the-world ADS (`--sotw`)" if MODE["sotw"] else "incremental (delta) ADS")
               + (", cluster stats made at once (`--eager-stats`)" if MODE["eager_stats"] else "")
               + ", as `make run` starts them. "
               "Routes PUT one by one (half `openid-connect` `bearer_only`, a quarter naming one of 10 shared "
               "upstreams by `upstream_id`); **served after**: from the PUT until a request to the new route "
               "stops being Envoy's 404 (sampled routes); **bulk**: the same routes PUT by 8 concurrent clients "
               "into a fresh gateway, until Envoy serves them all; **restart**: both stopped and started with the "
               "routes stored, until Envoy serves the last one; **Envoy applying**: Envoy's own `update_duration` "
               "histograms over the sequential load (its work per push, the floor under **served after**); "
               "**sidecar snapshot build**: its `xDS snapshot took` log lines (with "
               "`BENCH_RUST_LOG=warn,sidecar::xds=info`). "
               "`bench/control_plane.py --counts 100,1000,10000`.")
    if note:
        out += ["", note]
    out += ["",
            "| routes | PUT p50 | PUT p99 | last 10%: p50 / max | served after p50 / max | sequential load | "
            "bulk load (PUTs / all served) | restart: sidecar up / last route served | Envoy RSS (KiB/route) | "
            "sidecar RSS (KiB/route) | GET /routes | first / last route latency | Envoy applying CDS / RDS (p50, p99) | "
            "sidecar snapshot build (p50, p99) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in rows:
        out.append(
            f"| {n:,} | {ms(r['put_p50'])} | {ms(r['put_p99'])} | {ms(r['tail_p50'])} / {ms(r['tail_max'])} | "
            f"{ms(r['served_p50'])} / {ms(r['served_max'])} | {ms(r['total'])} | "
            f"{ms(r['bulk_puts'])} / {ms(r['bulk_all'])} | {ms(r['restart_up'])} / {ms(r['restart_served'])} | "
            f"{r['envoy_rss'] // 1024} MiB ({r['envoy_per_route']:.1f}) | {r['sidecar_rss'] // 1024} MiB "
            f"({r['sidecar_per_route']:.1f}) | {ms(r['list'])} | {ms(r['match_first'])} / {ms(r['match_last'])} | "
            f"{ms(r.get('envoy_cds_p50', nan))}, {ms(r.get('envoy_cds_p99', nan))} / "
            f"{ms(r.get('envoy_rds_p50', nan))}, {ms(r.get('envoy_rds_p99', nan))} | "
            f"{ms(r.get('build_p50', nan))}, {ms(r.get('build_p99', nan))} |")
    out += ["", ETCD_END if etcd else END]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="100,1000", help="route counts, comma-separated (100,1000)")
    ap.add_argument("--samples", type=int, default=20, help="routes per count whose serving is timed (20)")
    ap.add_argument("--skip-bulk", action="store_true")
    ap.add_argument("--note", default="", help="a line printed above the table")
    ap.add_argument("--out", default=str(ROOT / "bench/RESULTS.md"))
    ap.add_argument("--etcd", action="store_true", help="the etcd store (etcd on the PATH), writes through another sidecar")
    ap.add_argument("--sotw", action="store_true",
                    help="Envoy on state-of-the-world xDS (api_type GRPC) instead of delta (DELTA_GRPC)")
    ap.add_argument("--eager-stats", action="store_true",
                    help="Envoy makes each cluster's stats at once (not deferred to first use)")
    args = ap.parse_args()
    MODE["sotw"] = args.sotw
    MODE["eager_stats"] = args.eager_stats
    for p in (SIDECAR, ENVOY, OIDC_WASM):
        if not p.exists():
            die(f"{p} is missing (make build)")
    up = Upstream()
    with tempfile.TemporaryDirectory(prefix="control-plane-") as tmp:
        work = Path(tmp)
        etcd = start_etcd(work) if args.etcd else None
        try:
            rows = run_counts(work, args, up)
        finally:
            if etcd is not None:
                etcd.terminate()
                etcd.wait(10)
    table = render(rows, args.note)
    begin, end = (ETCD_BEGIN, ETCD_END) if args.etcd else (BEGIN, END)
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: table, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + table + "\n"
    out.write_text(text)
    print(table)


def run_counts(work, args, up):
    rows = []
    for n in [int(x) for x in args.counts.split(",")]:
        say(f"{n} routes: one by one")
        r, data = sequential(work, n, up.port, args.samples)
        say(f"{n} routes: restart")
        r["restart_up"], r["restart_served"] = restart(work, n, data)
        if args.skip_bulk:
            r["bulk_puts"] = r["bulk_all"] = float("nan")
        else:
            say(f"{n} routes: bulk")
            r["bulk_puts"], r["bulk_all"] = bulk(work, n, up.port)
        rows.append((n, r))
        say(json.dumps(r))
    return rows


if __name__ == "__main__":
    main()
