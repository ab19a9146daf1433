#!/usr/bin/env python3
"""`make bench`: the openid-connect filter against Envoy with no filter, a
wasm filter that does nothing, and Envoy's own C++ `jwt_authn`, side by
side in one run, on loopback. Writes bench/RESULTS.md and prints it.

The headline is the interleaved mode: every scenario's Envoy (static
config, no access log, a `direct_response` route, so the upstream is not
what is measured) is started at once, then `--rounds` rounds visit them in
a shuffled order, `wrk` (Debian) driving each for `--round-seconds` with
the same Lua script and token sets. The figure that ranks them is Envoy's
own CPU time per request (utime + stime of the Envoy process from
/proc/<pid>/stat, divided by the requests Envoy counted), and each round's
ratio to the no-op wasm filter of the same round: on a shared, noisy
machine, req/s moves with whatever else runs, CPU per request much less.
The other sections (signature checks per algorithm, memory, load with
change) follow. Standard library only.
"""

import argparse
import hashlib
import html
import http.client
import http.cookiejar
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOY = ROOT / ".venv/bin/envoy"
OIDC_WASM = Path(os.environ.get("BENCH_OIDC_WASM", ROOT / "target/wasm32-wasip1/wasm/oidc_filter.wasm"))
NOOP_WASM = ROOT / "target/wasm32-wasip1/wasm/noop_filter.wasm"
VERIFY_WASM = ROOT / "target/wasm32-wasip1/wasm/verify-bench.wasm"
PROVIDER = ROOT / "tests/provider/server.js"
LUA = ROOT / "bench/rotate.lua"
PEER_SCRIPT = ROOT / "scripts/oauth2-proxy.sh"
PEER_VERSION = "7.15.6"
CLIENT_ID = "apisix-quickstart-client"
CLIENT_SECRET = "bench-client-secret-0123456789"
SESSION_SECRET = "bench-session-secret-0123456789"


def die(msg):
    print(f"bench: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Proc:
    """A process in its own group, logging to a file; stopped by PID."""

    def __init__(self, name, argv, workdir, env=None):
        self.log = workdir / f"{name}.log"
        self.p = subprocess.Popen(
            argv,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


def wait_until(what, check, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        time.sleep(0.05)
    die(f"timed out waiting for {what}")


# Loopback only: no proxies from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url, headers=None, data=None):
    """(status, body); status 0 when nothing answers."""
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with OPENER.open(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


# ---------------------------------------------------------------- Envoy configs


def wasm_filter(path, settings="{}", vm_id="openid-connect"):
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": vm_id,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": settings,
                },
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(path)}},
                },
            },
        },
    }


def jwt_authn_filter(issuer, jwks, cache):
    provider = {
        "issuer": issuer,
        "local_jwks": {"inline_string": json.dumps(jwks)},
        "forward": True,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 2000}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"kc": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "kc"}}],
        },
    }


def gateway_filters(oidc_filters):
    """The gateway's listener as the sidecar writes it (translate/listener.rs):
    CORS, RBAC, the wasm filter, the two local rate limits, the plugins'
    filters `disabled` unless a route enables them: what a route without
    those plugins passes through."""
    typed = lambda name, t, extra=None: {
        "name": name,
        "typed_config": {"@type": f"type.googleapis.com/{t}", **(extra or {})},
        "disabled": True,
    }
    return ([typed("envoy.filters.http.cors", "envoy.extensions.filters.http.cors.v3.Cors"),
             typed("envoy.filters.http.rbac", "envoy.extensions.filters.http.rbac.v3.RBAC")]
            + oidc_filters
            + [typed(f"apisix.{n}",
                     "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                     {"stat_prefix": n.replace("-", "_")}) for n in ("limit-count", "limit-req")])


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def route(oidc_config=None):
    r = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
    }
    if oidc_config is not None:
        text = json.dumps(oidc_config, sort_keys=True)
        # The metadata contract is oidc_core::metadata (core/src/metadata.rs):
        # namespaces, keys and config_version() = first 16 hex digits of SHA-256.
        version = hashlib.sha256(text.encode()).hexdigest()[:16]
        if os.environ.get("BENCH_LEGACY_LAYOUT"):
            # The layout before the version got a namespace of its own (to
            # measure builds from before that change).
            md = {"openid-connect": {"config": text, "version": version}}
        else:
            md = {"openid-connect": {"config": text}, "openid-connect-version": {"version": version}}
            # The version also ends the route's name (route_name()), as the
            # sidecar writes it; the filter reads it there first.
            r["name"] = f"bench|oidc={version}"
        r["metadata"] = {"filter_metadata": md}
    return r


def bootstrap(port, admin_port, filters, routes, clusters):
    return {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {
                            "name": "bench",
                            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
                        },
                        "http_filters": filters + [ROUTER],
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }


def provider_cluster(port):
    name = f"oidc|http|127.0.0.1|{port}"
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


class Envoy:
    def __init__(self, workdir, name, filters, routes, clusters, concurrency=1):
        self.port = free_port()
        self.admin = free_port()
        cfg = workdir / f"{name}.json"
        cfg.write_text(json.dumps(bootstrap(self.port, self.admin, filters, routes, clusters)))
        self.cmd = [str(ENVOY), "-c", str(cfg), "--concurrency", str(concurrency),
                    "--disable-hot-restart", "-l", "warning"]
        self.proc = Proc(name, self.cmd, workdir)
        wait_until(f"Envoy ({name})", lambda: self._ready(), 60)

    def _ready(self):
        if not self.proc.alive():
            die(f"Envoy exited; see {self.proc.log}")
        return port_open(self.port)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """utime + stime of the Envoy process (all its threads), seconds."""
        stat = Path(f"/proc/{self.proc.p.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def requests_served(self):
        """Downstream requests Envoy's listener counted."""
        return envoy_stats(self.admin).get("http.bench.downstream_rq_total", 0)

    def stop(self):
        self.proc.stop()


class Peer:
    """oauth2-proxy (the peer users would otherwise pick) in front of its own
    `static://200` upstream (as Envoy's `direct_response`), request and auth
    logs off (as Envoy's access log), against the same provider: bearer
    tokens with `--skip-jwt-bearer-tokens` (verified on every request: it
    has no token cache), browsers with its session cookie."""

    def __init__(self, workdir, name, binary, issuer):
        self.port = free_port()
        self.cmd = [
            str(binary), f"--http-address=127.0.0.1:{self.port}", "--provider=oidc",
            f"--oidc-issuer-url={issuer}", f"--client-id={CLIENT_ID}", f"--client-secret={CLIENT_SECRET}",
            "--cookie-secret=0123456789abcdef0123456789abcdef", "--cookie-secure=false",
            f"--redirect-url=http://127.0.0.1:{self.port}/oauth2/callback", "--skip-provider-button=true",
            "--scope=openid profile email", "--code-challenge-method=S256", "--email-domain=*",
            # The bench tokens carry aud "account" and no email, as Keycloak's.
            "--oidc-extra-audience=account", "--oidc-email-claim=sub", "--skip-jwt-bearer-tokens=true",
            "--upstream=static://200", "--request-logging=false", "--auth-logging=false",
        ]
        self.proc = Proc(name, self.cmd, workdir)
        wait_until(f"oauth2-proxy ({name})", lambda: self._ready(), 60)

    def _ready(self):
        if not self.proc.alive():
            die(f"oauth2-proxy exited; see {self.proc.log}")
        return port_open(self.port)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self):
        stat = Path(f"/proc/{self.proc.p.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def requests_served(self):
        return None  # no counter: wrk's count is used

    def login(self):
        """A browser login through it, scripted (the provider's login form):
        its session cookie as a `Cookie` header value."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                             urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.url("/oauth2/start?rd=%2F"), timeout=10) as r:
                page, where = r.read().decode(), r.geturl()
        except urllib.error.HTTPError as e:
            text = re.sub(r"<[^>]+>", " ", e.read().decode(errors="replace"))
            die(f"oauth2-proxy login: {e.code} at {e.url}: {text[-400:]!r}")
        m = re.search(r'<form id="kc-form-login"[^>]*action="([^"]+)"', page)
        if not m:
            die(f"oauth2-proxy login: no login form at {where}")
        form = urllib.parse.urlencode({"username": "quickstart-user", "password": "quickstart-user-pass"})
        action = urllib.parse.urljoin(where, html.unescape(m.group(1)))
        with opener.open(action, data=form.encode(), timeout=10) as r:
            if r.status != 200:
                die(f"oauth2-proxy login: {r.status} at {r.geturl()}")
        cookies = [f"{c.name}={c.value}" for c in jar if c.name.startswith("_oauth2_proxy")
                   and not c.name.endswith("_csrf")]
        if not cookies:
            die("oauth2-proxy login: no session cookie")
        return "; ".join(cookies)

    def stop(self):
        self.proc.stop()


CLK_TCK = os.sysconf("SC_CLK_TCK")
# The no-op filter sent the session scenario's cookie: the reference of the
# scenarios that send a `Cookie` (a bearer token costs Envoy less to parse).
COOKIE_NOOP = 18


# ---------------------------------------------------------------- wrk


def parse_duration(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        die(f"cannot read wrk's latency {text!r}")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(args, url, values, header="Authorization", prefix="Bearer ", duration=None, offset=0, rate=None):
    """One wrk run. `offset`: the index of the first value (so that rounds
    can continue through a file instead of repeating it); `rate`: requests
    per second in all, paced by wrk's `delay()` (else as fast as it can)."""
    duration = duration or args.duration
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s",
           "--latency", "-s", str(LUA), url]
    env = {**os.environ, "BENCH_VALUES": str(values), "BENCH_HEADER": header,
           "BENCH_PREFIX": prefix, "BENCH_THREADS": str(args.threads), "BENCH_OFFSET": str(offset)}
    if rate:
        # Each connection waits `delay` ms after each answer.
        env["BENCH_DELAY_MS"] = str(args.connections * 1000.0 / rate)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    text = out.stdout + out.stderr
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"(\d+) requests in", text)
    if not (rps and p50 and p99 and total):
        die(f"cannot read wrk's output:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {
        "rps": float(rps.group(1)),
        "p50": parse_duration(p50.group(1)),
        "p99": parse_duration(p99.group(1)),
        "requests": int(total.group(1)),
        "non2xx": int(bad.group(1)) if bad else 0,
        "errors": errors.group(0) if errors else "",
        "cmd": " ".join(cmd),
    }


# ---------------------------------------------------------------- the run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved mode: rounds over every scenario, in shuffled order (5)")
    ap.add_argument("--round-seconds", type=int, default=3,
                    help="interleaved mode: seconds of wrk per scenario and round (3)")
    ap.add_argument("--cold-rate", type=int, default=500,
                    help="requests/s of the cold-token scenario (500)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run in the other sections (5)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs per measurement in the other sections; medians reported (3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--memory-tokens", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "bench/RESULTS.md"))
    ap.add_argument("--only", help="comma-separated scenario numbers and/or `change` (for trying things; "
                                   "2 and 11 are always run, as the references, and 18 with 9, 14 or 16)")
    ap.add_argument("--seed", type=int, help="the shuffle's seed (default: random, printed in the report)")
    ap.add_argument("--no-peer", action="store_true", help="leave oauth2-proxy out")
    ap.add_argument("--variant", metavar="WASM",
                    help="another build of the filter: scenarios 5-10 run with it too (numbered 105-110), "
                         "and the report compares it with the build under test, round by round")
    ap.add_argument("--instr-requests", type=int, default=300,
                    help="requests counted per scenario by callgrind (300; 0 skips the section)")
    ap.add_argument("--change-seconds", type=int, default=60,
                    help="load-with-change run length (0 skips it)")
    args = ap.parse_args()

    for what, path in [("envoy", ENVOY), ("the filter", OIDC_WASM), ("the no-op filter", NOOP_WASM)]:
        if not Path(path).exists():
            die(f"{what} is missing at {path}: run `make bench` (it builds and installs)")
    args.peer = None
    if not args.no_peer:
        built = subprocess.run(["bash", str(PEER_SCRIPT)], capture_output=True, text=True)
        if built.returncode != 0:
            die(f"oauth2-proxy: {built.stderr.strip()} (--no-peer leaves it out)")
        args.peer = built.stdout.strip().splitlines()[-1]
    if not shutil.which("wrk"):
        die("wrk is missing: `apt-get install wrk` (make bench does)")

    work = ROOT / "build/bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    procs = []
    try:
        run(args, work, procs)
    finally:
        for p in procs:
            p.stop()


def run(args, work, procs):
    idp_port = free_port()
    issuer = f"http://127.0.0.1:{idp_port}/realms/quickstart-realm"
    say("keys and tokens (node bench/tokens.mjs)")
    subprocess.run(["node", str(ROOT / "bench/tokens.mjs"), str(work), issuer], check=True,
                   stdout=subprocess.DEVNULL)
    tokens = {name: work / f"{name}.txt" for name in ["rs256", "ps256", "es256", "es256-100k", "rs256-cold"]}
    one = work / "one.txt"
    one.write_text(tokens["rs256"].read_text().splitlines()[0] + "\n")

    say(f"test OpenID provider on {issuer}")
    idp = Proc("provider", ["node", str(PROVIDER)], work, env={
        "PORT": str(idp_port), "KEY_FILE": str(work / "provider-keys.json"),
        "CLIENT_SECRET": CLIENT_SECRET, "ACCESS_TOKEN_TTL": "3600",
        # oauth2-proxy's callback (a loopback URI: any port).
        "REDIRECT_URIS": "http://127.0.0.1:1/oauth2/callback"})
    procs.append(idp)
    wait_until("the provider", lambda: http_get(f"{issuer}/.well-known/openid-configuration")[0] == 200)

    # Real provider tokens for the introspection scenario.
    intro = work / "introspect.txt"
    lines = []
    for _ in range(10):
        status, body = http_get(
            f"{issuer}/protocol/openid-connect/token",
            {"content-type": "application/x-www-form-urlencoded"},
            f"grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}".encode())
        if status != 200:
            die(f"the provider's token endpoint answered {status}: {body[:200]!r}")
        lines.append(json.loads(body)["access_token"])
    intro.write_text("\n".join(lines) + "\n")

    # A session cookie as the filter seals it (its own encoder).
    cookie = subprocess.run(
        ["cargo", "run", "-q", "-p", "oidc-core", "--example", "session_cookie", "--",
         SESSION_SECRET, tokens["rs256"].read_text().splitlines()[0], str(int(time.time())),
         f"{issuer}/.well-known/openid-configuration", CLIENT_ID],
        check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    cookies = work / "cookie.txt"
    cookies.write_text(cookie + "\n")

    rsa_jwk = json.loads((work / "provider-keys.json").read_text())["keys"][0]
    public_jwks = {"keys": [{k: rsa_jwk[k] for k in ["kty", "n", "e", "kid", "alg", "use"]}]}
    base = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "discovery": f"{issuer}/.well-known/openid-configuration"}
    jwks_route = {**base, "bearer_only": True, "use_jwks": True}
    pem_route = lambda pem: {**base, "bearer_only": True,
                             "public_key": (work / pem).read_text(),
                             "claim_validator": {"issuer": {"valid_issuers": [issuer]}}}
    idp_cluster = [provider_cluster(idp_port)]
    oidc = lambda settings="{}": [wasm_filter(OIDC_WASM, settings)]

    session_route = {**base, "bearer_only": False, "set_userinfo_header": False,
                     "session": {"secret": SESSION_SECRET}}
    noop = [wasm_filter(NOOP_WASM, vm_id="noop")]
    auth = ("Authorization", "Bearer ")
    # (number, name, concurrency, filters, oidc config, clusters, values file, (header, prefix), rate)
    scenarios = [
        (1, "no filter", 1, [], None, [], tokens["rs256"], auth, None),
        (2, "wasm filter that does nothing", 1, noop, None, [], tokens["rs256"], auth, None),
        (3, "jwt_authn, no cache (1,000 tokens)", 1, [jwt_authn_filter(issuer, public_jwks, False)],
         None, [], tokens["rs256"], auth, None),
        (4, "jwt_authn + jwt_cache_config (1,000 tokens)", 1, [jwt_authn_filter(issuer, public_jwks, True)],
         None, [], tokens["rs256"], auth, None),
        (5, "openid-connect use_jwks, one token", 1, oidc(), jwks_route, idp_cluster, one, auth, None),
        (6, "openid-connect use_jwks, 1,000 tokens", 1, oidc(), jwks_route, idp_cluster, tokens["rs256"],
         auth, None),
        (7, "openid-connect use_jwks, cache off (a signature check per request)", 1,
         oidc('{"token_cache_size":0}'), jwks_route, idp_cluster, tokens["rs256"], auth, None),
        (8, "openid-connect introspection, cached (10 provider tokens)", 1, oidc(),
         {**base, "bearer_only": True}, idp_cluster, intro, auth, None),
        (9, "openid-connect browser session cookie", 1, oidc(), session_route, idp_cluster, cookies,
         ("Cookie", ""), None),
        (10, f"openid-connect use_jwks, cold tokens (never seen), paced to at most {args.cold_rate}/s", 1, oidc(),
         jwks_route, idp_cluster, tokens["rs256-cold"], auth, args.cold_rate),
        (11, "wasm filter that does nothing, --concurrency 2", 2, noop, None, [], tokens["rs256"], auth, None),
        (12, "openid-connect use_jwks, 1,000 tokens, --concurrency 2", 2, oidc(), jwks_route, idp_cluster,
         tokens["rs256"], auth, None),
        (13, "openid-connect introspection, cached, --concurrency 2", 2, oidc(), {**base, "bearer_only": True},
         idp_cluster, intro, auth, None),
        (14, "openid-connect browser session cookie, --concurrency 2", 2, oidc(), session_route, idp_cluster,
         cookies, ("Cookie", ""), None),
        (17, "openid-connect use_jwks, one token, in the gateway's filter chain (CORS, RBAC, two rate "
         "limits: none configured on the route)", 1, gateway_filters(oidc()), jwks_route, idp_cluster, one,
         auth, None),
        # Scenario 2 receives a bearer token; a session request carries a
        # 1.2 KB cookie instead, which costs Envoy more before any filter
        # runs. The cookie-carrying scenarios are also compared with this
        # no-op, sent the same request on the same route shape.
        (18, "wasm filter that does nothing, sent the session scenario's cookie (the reference for 9)", 1,
         noop, session_route, idp_cluster, cookies, ("Cookie", ""), None),
    ]
    if args.variant:
        alt = lambda settings="{}": [wasm_filter(Path(args.variant), settings)]
        for (n, name, conc, filters, config, clusters, values, hp, rate) in list(scenarios):
            if 5 <= n <= 10:
                settings = filters[0]["typed_config"]["config"]["configuration"]["value"]
                scenarios.append((100 + n, f"{name} — variant", conc, alt(settings), config, clusters,
                                  values, hp, rate))
    if args.peer:
        scenarios += [
            (15, f"oauth2-proxy {PEER_VERSION}, bearer JWT (`skip_jwt_bearer_tokens`), 1,000 tokens", 1, "peer",
             {"issuer": issuer, "mode": "bearer"}, [], tokens["rs256"], auth, None),
            (16, f"oauth2-proxy {PEER_VERSION}, session cookie", 1, "peer",
             {"issuer": issuer, "mode": "cookie"}, [], work / "peer-cookie.txt", ("Cookie", ""), None),
        ]
    algs = [
        ("RS256", pem_route("rsa.pem"), tokens["rs256"]),
        ("PS256", pem_route("rsa.pem"), tokens["ps256"]),
        ("ES256", pem_route("ec.pem"), tokens["es256"]),
    ]
    only = set(args.only.split(",")) if args.only else None
    commands = {}
    # The references: 2 and 11 always; 18 with any cookie-carrying scenario.
    cookie_refs = {COOKIE_NOOP} if only and only & {"9", "14", "16"} else set()
    chosen = [sc for sc in scenarios
              if not only or str(sc[0] % 100) in only or sc[0] in {2, 11} | cookie_refs]
    interleaved = measure_interleaved(args, work, chosen, commands)
    interleaved["instructions"] = measure_instructions(args, work, chosen) if args.instr_requests else {}

    alg_rows = []
    if not only:
        for alg, config, values in algs:
            cached = measure(args, work, f"{alg}-cached", f"{alg}, cached", oidc(), [route(config)], [],
                             values, "Authorization", "Bearer ", commands)
            cold = measure(args, work, f"{alg}-cold", f"{alg}, cache off", oidc('{"token_cache_size":0}'),
                           [route(config)], [], values, "Authorization", "Bearer ", commands)
            per_check = (1 / cold["rps"] - 1 / cached["rps"]) * 1e6
            alg_rows.append((alg, cached, cold, per_check))

    verify = None
    if not only:
        say("the verifier alone: V8 (Node's WASI) and native")
        in_v8 = subprocess.run(["node", str(ROOT / "bench/verify.mjs"), str(VERIFY_WASM), str(work)],
                               capture_output=True, text=True, check=True).stdout
        native = subprocess.run(["cargo", "run", "-q", "--release", "-p", "verify-bench", "--", str(work)],
                                capture_output=True, text=True, check=True, cwd=ROOT).stdout
        verify = (in_v8.strip(), native.strip())

    memory = None if only else measure_memory(args, work, oidc(), route(pem_route("ec.pem")),
                                              tokens["es256-100k"], commands)

    change = None
    if (not only or "change" in only) and args.change_seconds > 0:
        change = measure_load_with_change(args, work, issuer, idp_port, tokens["rs256"], procs)

    saved = Path(args.out).with_name("interleaved.json")
    previous = json.loads(saved.read_text()) if saved.exists() else None
    report = render(args, interleaved, alg_rows, memory, commands, change, verify, previous)
    if not only:
        Path(args.out).write_text(report)
        saved.write_text(json.dumps({"date": machine()["date"], **interleaved}, indent=1, sort_keys=True) + "\n")
        say(f"wrote {args.out} and {saved}")
    print(report)


def measure_interleaved(args, work, scenarios, commands):
    """Every scenario's Envoy up at once; `--rounds` rounds in shuffled
    order; per round and scenario: Envoy's CPU seconds and the requests it
    served while wrk ran, req/s and latency. Returns {number: result}."""
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    envoys = {}
    try:
        for (n, name, conc, filters, config, clusters, values, (header, prefix), rate) in scenarios:
            if filters == "peer":
                envoys[n] = Peer(work, f"oauth2-proxy-s{n}", args.peer, config["issuer"])
                if config["mode"] == "cookie":
                    Path(values).write_text(envoys[n].login() + "\n")
            else:
                envoys[n] = Envoy(work, f"envoy-s{n}", filters, [route(config)], clusters, conc)
        for (n, name, conc, filters, config, clusters, values, (header, prefix), rate) in scenarios:
            # Warm-up: provider documents fetched, caches filled, V8 compiled.
            # (The paced cold scenario warms with its file's last token, which
            # its rounds never reach.)
            lines = Path(values).read_text().splitlines()
            first = lines[0] if rate is None else lines[-1]
            status, body = http_get(envoys[n].url("/"), {header: prefix + first})
            if status != 200:
                die(f"{name}: the warm-up request got {status}: {body[:300]!r}")
            if rate is None:
                wrk(args, envoys[n].url("/"), values, header, prefix, duration=1)
        say(f"interleaved: {len(scenarios)} scenarios x {args.rounds} rounds x {args.round_seconds}s "
            f"(seed {seed})")
        rounds = {n: [] for n in envoys}
        offsets = {n: 0 for n in envoys}
        for r in range(args.rounds):
            order = list(scenarios)
            rng.shuffle(order)
            for (n, name, conc, filters, config, clusters, values, (header, prefix), rate) in order:
                e = envoys[n]
                served0, cpu0 = e.requests_served(), e.cpu_seconds()
                w = wrk(args, e.url("/"), values, header, prefix, duration=args.round_seconds,
                        offset=offsets[n], rate=rate)
                cpu1, served1 = e.cpu_seconds(), e.requests_served()
                # One admin /stats read falls inside the window: counted out.
                served = w["requests"] if served0 is None else served1 - served0
                offsets[n] += served + 64
                if w["non2xx"] or w["errors"] or served <= 0:
                    die(f"{name}: {w['non2xx']} non-2xx answers {w['errors']}: the scenario is not measuring "
                        f"what it says (Envoy log: {e.proc.log})")
                rounds[n].append({"cpu_us": (cpu1 - cpu0) / served * 1e6, "rps": w["rps"],
                                  "p50": w["p50"], "p99": w["p99"], "served": served})
                commands.setdefault("wrk", w["cmd"])
                commands.setdefault("oauth2-proxy" if isinstance(e, Peer) else "envoy", " ".join(e.cmd))
            say(f"round {r + 1}/{args.rounds} done")
    finally:
        for e in envoys.values():
            e.stop()
    out = {"seed": seed, "scenarios": {}}
    for (n, name, conc, _f, _c, _cl, _v, (header, _p), _r) in scenarios:
        ref = 11 if conc == 2 else 2
        runs = rounds[n]
        ratios = [a["cpu_us"] / b["cpu_us"] for a, b in zip(runs, rounds[ref])]
        half = lambda k: statistics.median(ratios[k::2]) if ratios[k::2] else None
        # A cookie-carrying scenario on one worker against the no-op sent the
        # same cookie (scenario 18), round by round.
        same = None
        if header == "Cookie" and conc == 1 and n != COOKIE_NOOP and COOKIE_NOOP in rounds:
            same = statistics.median(a["cpu_us"] / b["cpu_us"] for a, b in zip(runs, rounds[COOKIE_NOOP]))
        out["scenarios"][n] = {
            "name": name, "concurrency": conc, "reference": ref, "cookie": header == "Cookie",
            "ratio_cookie_noop": same,
            "cpu_us": statistics.median(x["cpu_us"] for x in runs),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_odd": half(0), "ratio_even": half(1),
            "rps": statistics.median(x["rps"] for x in runs),
            "p50": statistics.median(x["p50"] for x in runs),
            "p99": statistics.median(x["p99"] for x in runs),
            "rounds": [{k: round(v, 3) for k, v in x.items()} for x in runs],
        }
    # The variant against the build under test, round by round.
    out["variant"] = []
    for n in sorted(rounds):
        if n > 100 and n - 100 in rounds:
            rs = [a["cpu_us"] / b["cpu_us"] for a, b in zip(rounds[n], rounds[n - 100])]
            out["variant"].append({"base": n - 100, "variant": n, "ratio": statistics.median(rs),
                                   "min": min(rs), "max": max(rs)})
    # Ours against the peer, round by round: (ours, peer).
    out["versus_peer"] = []
    for ours, peer in [(6, 15), (5, 15), (9, 16)]:
        if ours in rounds and peer in rounds:
            rs = [a["cpu_us"] / b["cpu_us"] for a, b in zip(rounds[ours], rounds[peer])]
            out["versus_peer"].append({"ours": ours, "peer": peer, "ratio": statistics.median(rs),
                                       "min": min(rs), "max": max(rs)})
    return out


def envoy_binary():
    """The Envoy binary itself (`.venv/bin/envoy` is a Python launcher,
    which valgrind would measure instead)."""
    found = sorted(ROOT.glob(".venv/lib/python3*/site-packages/envoy/_bin/envoy"))
    return found[0] if found else None


def measure_instructions(args, work, scenarios):
    """Instructions Envoy executes per request, counted by callgrind: a
    figure that does not move with the machine's load. Each scenario's
    Envoy runs under valgrind with instrumentation off; after a warm-up
    on one keep-alive connection, instrumentation goes on for
    `--instr-requests` requests with the scenario's first value, and the
    dump's total over the requests is the figure. Returns {number: Ir}."""
    binary = envoy_binary()
    if not shutil.which("valgrind") or binary is None:
        say("instructions per request: valgrind or the Envoy binary is missing; skipped")
        return {}
    out = {}
    for (n, name, conc, filters, config, clusters, values, (header, prefix), rate) in scenarios:
        # One worker, one value, no pacing: the cached and warm paths.
        if conc != 1 or filters == "peer" or rate is not None or n % 100 in (6, 7):
            continue
        port, admin = free_port(), free_port()
        cfg = work / f"callgrind-s{n}.json"
        cfg.write_text(json.dumps(bootstrap(port, admin, filters, [route(config)], clusters)))
        dump = work / f"callgrind-s{n}.out"
        for old in work.glob(f"callgrind-s{n}.out*"):
            old.unlink()
        proc = Proc(f"callgrind-s{n}", [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
            f"--callgrind-out-file={dump}.%p", str(binary), "-c", str(cfg), "--concurrency", "1",
            "--disable-hot-restart", "-l", "error"], work)
        try:
            wait_until(f"Envoy under valgrind ({name})", lambda: port_open(port), 300)
            value = prefix + Path(values).read_text().splitlines()[0]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

            def once():
                conn.request("GET", "/", headers={header: value})
                r = conn.getresponse()
                r.read()
                return r.status
            for _ in range(50):
                if once() != 200:
                    die(f"{name}: a request under valgrind was not answered 200 (log: {proc.log})")
            ctl = lambda *a: subprocess.run(["callgrind_control", *a, str(proc.p.pid)],
                                            check=True, capture_output=True)
            ctl("-i", "on")
            ctl("-z")
            statuses = [once() for _ in range(args.instr_requests)]
            ctl("-d")
            if set(statuses) != {200}:
                die(f"{name}: answers {sorted(set(statuses))} under valgrind (log: {proc.log})")
            files = sorted(work.glob(f"callgrind-s{n}.out.{proc.p.pid}.*"))
            total = 0
            for f in files:
                for line in f.read_text(errors="replace").splitlines():
                    if line.startswith("summary:") or line.startswith("totals:"):
                        total = max(total, int(line.split()[1]))
            out[n] = total / args.instr_requests
            say(f"{name}: {out[n]:,.0f} instructions per request")
        finally:
            proc.stop()
    return out


def measure(args, work, tag, name, filters, routes, clusters, values, header, prefix, commands):
    say(f"{name}: {args.repeats} x {args.duration}s")
    envoy = Envoy(work, f"envoy-{tag}", filters, routes, clusters)
    try:
        # Warm-up: provider documents fetched, caches filled, V8 compiled.
        first = Path(values).read_text().splitlines()[0]
        status, body = http_get(envoy.url("/"), {header: prefix + first})
        if status != 200:
            die(f"{name}: the warm-up request got {status}: {body[:300]!r}")
        wrk(args, envoy.url("/"), values, header, prefix, duration=1)
        runs = []
        for _ in range(args.repeats):
            r = wrk(args, envoy.url("/"), values, header, prefix)
            if r["non2xx"] or r["errors"]:
                die(f"{name}: {r['non2xx']} non-2xx answers {r['errors']}: the scenario is not measuring "
                    f"what it says (Envoy log: {envoy.proc.log})")
            runs.append(r)
        commands.setdefault("wrk", runs[0]["cmd"])
        commands.setdefault("envoy", " ".join(envoy.cmd))
        return {
            "name": name,
            "rps": statistics.median(r["rps"] for r in runs),
            "p50": statistics.median(r["p50"] for r in runs),
            "p99": statistics.median(r["p99"] for r in runs),
            "runs": [round(r["rps"]) for r in runs],
        }
    finally:
        envoy.stop()


def measure_memory(args, work, filters, route_, values, commands):
    n = args.memory_tokens
    say(f"memory: {n} distinct ES256 tokens")
    envoy = Envoy(work, "envoy-memory", filters, [route_], [])
    try:
        first = Path(values).read_text().splitlines()[0]
        status, _ = http_get(envoy.url("/"), {"Authorization": "Bearer " + first})
        if status != 200:
            die(f"memory: warm-up got {status}")
        before = envoy.rss_kib()
        sent = 0
        rounds = 0
        # Each run continues where wrk starts (thread offsets): send the
        # file's tokens until about n requests went out in all.
        while sent < n and rounds < 20:
            r = wrk(args, envoy.url("/"), values, duration=args.duration)
            sent += r["requests"]
            rounds += 1
            if r["non2xx"]:
                die(f"memory: {r['non2xx']} non-2xx answers")
        after = envoy.rss_kib()
        return {"before": before, "after": after, "sent": sent}
    finally:
        envoy.stop()


# The release build (`make build`), as `make run` starts it.
SIDECAR = ROOT / "target/release/sidecar"


def admin_call(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with OPENER.open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def envoy_stats(admin_port):
    status, body = http_get(f"http://127.0.0.1:{admin_port}/stats")
    stats = {}
    for line in body.decode(errors="replace").splitlines():
        k, _, v = line.partition(": ")
        if v.strip().isdigit():
            stats[k] = int(v)
    return stats


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure_load_with_change(args, work, issuer, idp_port, values, procs):
    """The gateway as `make run` starts it (sidecar + Envoy over xDS), a
    protected route under wrk load, while routes are PUT, PATCHed and
    DELETEd through the Admin API."""
    import threading

    secs = args.change_seconds
    say(f"load with change: {secs}s")
    # A fast upstream: an Envoy that answers every request itself.
    up = Envoy(work, "envoy-upstream", [], [route()], [])
    procs.append(up.proc)
    admin, xds, proxy, envoy_admin = free_port(), free_port(), free_port(), free_port()
    sidecar = Proc("sidecar", [str(SIDECAR), "--admin-addr", f"127.0.0.1:{admin}",
                               "--xds-addr", f"127.0.0.1:{xds}", "--proxy-port", str(proxy),
                               "--wasm", str(OIDC_WASM), "--data", str(work / "routes.json"),
                               # The upstream is a local Envoy.
                               "--allow-local-upstreams"], work,
                   env={"RUST_LOG": "warn"})
    procs.append(sidecar)
    wait_until("the sidecar", lambda: port_open(xds) and port_open(admin))
    text = (ROOT / "envoy/bootstrap.yaml").read_text()
    for k, v in {"XDS_PORT": xds, "ENVOY_ADMIN_PORT": envoy_admin, "NODE_ID": "bench"}.items():
        text = text.replace("${" + k + "}", str(v))
    (work / "gateway-bootstrap.yaml").write_text(text)
    gw = Proc("envoy-gateway", [str(ENVOY), "-c", str(work / "gateway-bootstrap.yaml"), "--concurrency", "1",
                                "--disable-hot-restart", "-l", "warning"], work)
    procs.append(gw)
    wait_until("the gateway listener", lambda: port_open(proxy), 60)

    plugin = {"use_jwks": True, "bearer_only": True, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "discovery": f"{issuer}/.well-known/openid-configuration"}
    upstream = {"type": "roundrobin", "nodes": {f"127.0.0.1:{up.port}": 1}}
    protected = {"uri": "/anything/*", "plugins": {"openid-connect": plugin}, "upstream": upstream}
    if admin_call(admin, "PUT", "/apisix/admin/routes/protected", protected) not in (200, 201):
        die("load with change: the protected route was refused")
    first = Path(values).read_text().splitlines()[0]
    url = f"http://127.0.0.1:{proxy}/anything/x"
    wait_until("the protected route", lambda: http_get(url, {"Authorization": "Bearer " + first})[0] == 200, 30)

    before = {"envoy": rss_kib(gw.p.pid), "sidecar": rss_kib(sidecar.p.pid), "stats": envoy_stats(envoy_admin)}
    stop = threading.Event()
    ops = {"ok": 0, "failed": 0}

    def change():
        n = 0
        while not stop.is_set():
            n += 1
            calls = [
                ("PATCH", "/apisix/admin/routes/protected",
                 {"plugins": {"openid-connect": {"timeout": 3 + n % 2}}}),
                ("PUT", f"/apisix/admin/routes/other-{n % 20}",
                 {"uri": f"/other/{n % 20}/*", "upstream": upstream}),
                ("PATCH", f"/apisix/admin/routes/other-{(n + 7) % 20}", {"desc": f"change {n}"}),
                ("DELETE", f"/apisix/admin/routes/other-{(n + 13) % 20}", None),
            ]
            for method, path, body in calls:
                status = admin_call(admin, method, path, body)
                # A PATCH or DELETE of a route not there (yet) is a 404.
                if status in (200, 201) or (status == 404 and method != "PUT" and "other-" in path):
                    ops["ok"] += 1
                else:
                    ops["failed"] += 1
            time.sleep(0.05)

    t = threading.Thread(target=change)
    t.start()
    r = wrk(args, url, values, duration=secs)
    stop.set()
    t.join()
    after = {"envoy": rss_kib(gw.p.pid), "sidecar": rss_kib(sidecar.p.pid), "stats": envoy_stats(envoy_admin)}
    delta = lambda k: after["stats"].get(k, 0) - before["stats"].get(k, 0)
    return {
        "seconds": secs, "requests": r["requests"], "rps": r["rps"], "non2xx": r["non2xx"],
        "errors": r["errors"] or "none", "ops": ops,
        "rds_updates": delta("http.ingress.rds.apisix.update_success"),
        "cds_updates": delta("cluster_manager.cds.update_success"),
        "listener_modified": delta("listener_manager.listener_modified"),
        "listener_removed": delta("listener_manager.listener_removed"),
        "draining": after["stats"].get("listener_manager.total_listeners_draining", 0),
        "envoy_kib": (before["envoy"], after["envoy"]), "sidecar_kib": (before["sidecar"], after["sidecar"]),
    }


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    envoy = subprocess.run([str(ENVOY), "--version"], capture_output=True, text=True).stdout.strip()
    envoy = re.search(r"version: (\S+)", envoy).group(1) if "version:" in envoy else envoy
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    wrk_v = (wrk_v.stdout + wrk_v.stderr).splitlines()[0] if (wrk_v.stdout + wrk_v.stderr) else "wrk"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
        "envoy": envoy, "wrk": wrk_v, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def render(args, interleaved, alg_rows, memory, commands, change=None, verify=None, previous=None):
    m = machine()
    sc = interleaved["scenarios"]
    lines = [
        "# Benchmark results",
        "",
        f"Run on {m['date']}: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; Envoy {m['envoy']}; {m['wrk']}.",
        "",
        "## Interleaved: Envoy's CPU time per request",
        "",
        f"Every scenario's Envoy was up at once; {args.rounds} rounds visited them in shuffled order "
        f"(seed {interleaved['seed']}), `wrk -t{args.threads} -c{args.connections}` for {args.round_seconds} s each. "
        "**CPU µs/req** is Envoy's own CPU time (utime + stime from `/proc/<pid>/stat`) over the requests it "
        "served, median of the rounds; **× no-op** is the median of each round's ratio to the no-op wasm "
        "filter of the same round (scenario 2, sent a bearer token; 11 for `--concurrency 2`), with the lowest "
        f"and highest round; **× cookie no-op** is the same against scenario {COOKIE_NOOP}, the no-op filter sent "
        "the session cookie (for the scenarios that send a `Cookie` on one worker: a 1.2 KB cookie costs Envoy "
        "more than a bearer token before any filter runs, so this is the like-for-like ratio of a session). "
        "Envoy shares the cores with `wrk` and whatever else runs, so req/s and latency move from run to run; "
        "rank and judge by CPU per request.",
        "",
        "| # | scenario | CPU µs/req | × no-op (rounds' range) | × cookie no-op | req/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted(sc):
        r = sc[n]
        same = r.get("ratio_cookie_noop")
        lines.append(f"| {n} | {r['name']} | {r['cpu_us']:.1f} | {r['ratio']:.2f} "
                     f"({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {f'{same:.2f}' if same else '–'} | "
                     f"{r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} |")
    instr = interleaved.get("instructions") or {}
    if instr:
        ref = instr.get(2)
        lines += [
            "", "## Instructions per request (callgrind)", "",
            f"The same scenarios with Envoy under valgrind's callgrind, one worker: after a warm-up on one "
            f"keep-alive connection, the instructions Envoy executed for {args.instr_requests} requests with the "
            "scenario's first value, divided by their number (Envoy's and the filter's alike; the wasm code as "
            "V8 compiled it). Unlike CPU time, this figure does not move with what else runs on the machine: "
            "two runs agree within about 1%, so it is the one to compare builds with. **× no-op** is against "
            f"scenario 2 (bearer token), **× cookie no-op** against scenario {COOKIE_NOOP} (the session cookie).",
            "", "| # | scenario | instructions per request | × no-op | × cookie no-op |", "|---|---|---:|---:|---:|"]
        cref = instr.get(COOKIE_NOOP)
        for n in sorted(instr):
            x = f"{instr[n] / ref:.2f}" if ref else "–"
            y = f"{instr[n] / cref:.2f}" if cref and n in sc and sc[n].get("cookie") and n != COOKIE_NOOP else "–"
            lines.append(f"| {n} | {sc[n]['name'] if n in sc else n} | {instr[n]:,.0f} | {x} | {y} |")
    if interleaved.get("versus_peer"):
        lines += ["", f"Against oauth2-proxy {PEER_VERSION} (same provider, tokens and machine; our CPU per request "
                  "over its, round by round):", "",
                  "| ours | oauth2-proxy | our CPU per request × its (rounds' range) |", "|---|---|---:|"]
        for v in interleaved["versus_peer"]:
            lines.append(f"| {v['ours']}. {sc[v['ours']]['name']} | {v['peer']}. {sc[v['peer']]['name']} | "
                         f"{v['ratio']:.2f} ({v['min']:.2f}–{v['max']:.2f}) |")
    if interleaved.get("variant"):
        lines += ["", f"The variant (`{args.variant}`) against the build under test, CPU per request, "
                  "round by round:", "", "| scenario | variant × build under test (rounds' range) |", "|---|---:|"]
        for v in interleaved["variant"]:
            lines.append(f"| {v['base']}. {sc[v['base']]['name']} | {v['ratio']:.2f} ({v['min']:.2f}–{v['max']:.2f}) |")
    # How far the figures hold: odd rounds against even rounds, and this run
    # against the previous one (bench/interleaved.json).
    spread = [abs(r["ratio_odd"] / r["ratio_even"] - 1) for r in sc.values()
              if r["ratio_odd"] and r["ratio_even"]]
    lines += ["", "How far the ratios agree:"]
    if spread:
        lines.append(f"- odd rounds against even rounds of this run: within {max(spread) * 100:.0f}% "
                     f"(median {statistics.median(spread) * 100:.0f}%) over the scenarios;")
    if previous:
        prev = previous.get("scenarios", {})
        diffs = [(n, sc[n]["ratio"] / prev[str(n)]["ratio"] - 1) for n in sc
                 if str(n) in prev and prev[str(n)].get("ratio") and prev[str(n)].get("name") == sc[n]["name"]]
        if diffs:
            worst = max(diffs, key=lambda d: abs(d[1]))
            lines.append(f"- this run against the previous one ({previous.get('date', '?')}): within "
                         f"{abs(worst[1]) * 100:.0f}% (scenario {worst[0]}), median "
                         f"{statistics.median(abs(d) for _, d in diffs) * 100:.0f}%.")
    else:
        lines.append("- no previous run to compare with (bench/interleaved.json).")
    if alg_rows:
        lines += [
            "",
            "## Signature checks inside the wasm VM",
            "",
            "`public_key` routes, the same 1,000 tokens with the token cache on and off; the cost of one check "
            "is `1/rps(off) − 1/rps(on)` on Envoy's single worker thread.",
            "",
            "| alg | req/s cached | req/s cache off | one check (µs) |",
            "|---|---:|---:|---:|",
        ]
        for alg, cached, cold, per in alg_rows:
            lines.append(f"| {alg} | {cached['rps']:,.0f} | {cold['rps']:,.0f} | {per:,.0f} |")
    if verify:
        lines += [
            "",
            "The verifier alone (`bench/verify`: the filter's `oidc_core::jwt::verify` on 200 tokens, "
            "no Envoy), built for wasm32-wasip1 and run in V8 through Node's WASI (`bench/verify.mjs`):",
            "",
            verify[0],
            "",
            "and natively (release build) on the same machine:",
            "",
            verify[1],
        ]
    if memory:
        lines += [
            "",
            "## Memory",
            "",
            f"Envoy's resident memory (VmRSS) with the filter on an ES256 `public_key` route: "
            f"{memory['before'] / 1024:.1f} MiB after warm-up, {memory['after'] / 1024:.1f} MiB after "
            f"{memory['sent']:,} requests with distinct tokens (token cache: 4,096 entries per VM).",
        ]
    if change:
        c = change
        lines += [
            "",
            "## Load with change",
            "",
            f"The gateway as `make run` starts it (sidecar + Envoy over xDS), a `use_jwks` route under `wrk` load "
            f"for {c['seconds']} s while the Admin API PATCHes that route (its plugin config) and PUTs, PATCHes and "
            "DELETEs 20 others, every 50 ms.",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| requests on the protected route | {c['requests']:,} ({c['rps']:,.0f}/s) |",
            f"| non-2xx answers | {c['non2xx']} |",
            f"| socket errors | {c['errors']} |",
            f"| Admin API calls answered as expected / not | {c['ops']['ok']:,} / {c['ops']['failed']} |",
            f"| route updates applied by Envoy (RDS) / cluster updates (CDS) | {c['rds_updates']:,} / {c['cds_updates']:,} |",
            f"| listeners modified / removed / draining | {c['listener_modified']} / {c['listener_removed']} / {c['draining']} |",
            f"| Envoy RSS before → after | {c['envoy_kib'][0] / 1024:.1f} → {c['envoy_kib'][1] / 1024:.1f} MiB |",
            f"| sidecar RSS before → after | {c['sidecar_kib'][0] / 1024:.1f} → {c['sidecar_kib'][1] / 1024:.1f} MiB |",
        ]
    lines += [
        "",
        "## How it was run",
        "",
        "`make bench` (`python3 bench/bench.py`). Per scenario:",
        "",
        f"    {commands.get('envoy', '')}",
        f"    {commands.get('wrk', '')}",
        "",
        "oauth2-proxy (built by `scripts/oauth2-proxy.sh` from the Go module proxy, pinned):",
        "",
        f"    {commands.get('oauth2-proxy', '(left out: --no-peer)')}",
        "",
        "`bench/rotate.lua` sends each request with the next token of the scenario's set (1,000 RS256 "
        "tokens unless the scenario says otherwise; thread i of n takes tokens i, i+n, ...; each round goes on "
        "where the last stopped). Scenarios 1, 2 and 11 receive the same headers and ignore them. Tokens are "
        "signed by `bench/tokens.mjs` with the test provider's key (the `use_jwks` scenarios fetch its "
        "discovery document and JWKS once); scenario 10 walks through 20,000 more tokens, none seen before, "
        "paced by wrk's `delay()` to the rate it names; scenarios 8 and 13 use 10 tokens from the provider's "
        "client-credentials grant; 9 and 14 replay a session cookie sealed by the filter's own encoder "
        "(`cargo run -p oidc-core --example session_cookie`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
