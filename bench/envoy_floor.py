#!/usr/bin/env python3
"""The floor under the control plane's restart and served-after figures:
Envoy's own time to start with N clusters and one route configuration of N
routes from a static file (no xDS, no sidecar), until the last route is
served; and the same with the clusters' endpoints inline (STATIC) rather
than from EDS (not possible statically: all inline here), with N=1 as the
start-up baseline. Standard library only.

    bench/envoy_floor.py --counts 1,10000
"""

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOY = ROOT / ".venv/bin/envoy"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(n, port, admin, up_port, shared, variant):
    clusters, routes = [], []
    names = [f"up|{i % 10}" for i in range(n)] if shared else [f"route|r{i}" for i in range(n)]
    for name in dict.fromkeys(names):
        clusters.append({
            "name": name, "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": up_port}}}}]}]},
        })
    for i in range(n):
        routes.append({"name": f"r{i}", "match": {"path": f"/r/{i}"},
                       "route": {"cluster": names[i], "timeout": "60s"}})
    extra = {}
    if variant == "deferred":
        # Clusters' per-worker state made on first use (Envoy >= 1.28).
        extra["cluster_manager"] = {"enable_deferred_cluster_creation": True}
    if variant == "no-cluster-stats":
        extra["stats_config"] = {"stats_matcher": {"exclusion_list": {"patterns": [{"prefix": "cluster.route|"}]}}}
    if variant == "deferred-stats":
        # Clusters' traffic stats made on first use.
        extra["deferred_stat_options"] = {"enable_deferred_creation_stats": True}
    return {
        **extra,
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": clusters,
            "listeners": [{
                "name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"name": "apisix", "virtual_hosts": [
                            {"name": "any", "domains": ["*"], "routes": routes}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
        },
    }


def served(port, path):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", path)
        return c.getresponse().status != 404
    except OSError:
        return False


def run(n, shared, work, variant):
    port, admin, up = free_port(), free_port(), free_port()
    f = work / f"floor-{n}-{shared}-{variant}.json"
    f.write_text(json.dumps(config(n, port, admin, up, shared, variant)))
    start = time.monotonic()
    p = subprocess.Popen([str(ENVOY), "-c", str(f), "--concurrency", "1", "--disable-hot-restart", "-l", "error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < 120:
            if p.poll() is not None:
                return float("nan")
            if served(port, f"/r/{n - 1}"):
                return time.monotonic() - start
            time.sleep(0.01)
        return float("nan")
    finally:
        p.terminate()
        p.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1,10000")
    ap.add_argument("--variants", default="plain",
                    help="plain, deferred (enable_deferred_cluster_creation), no-cluster-stats, deferred-stats")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="envoy-floor-") as tmp:
        for variant in args.variants.split(","):
            for n in [int(x) for x in args.counts.split(",")]:
                for shared in (False, True):
                    t = run(n, shared, Path(tmp), variant)
                    print(f"{variant}: routes {n:>6}, clusters {'10 shared' if shared else n:>9}: "
                          f"last route served after {t:.2f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
