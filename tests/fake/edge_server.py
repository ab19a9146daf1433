"""An upstream and a provider for the edge and provider-abuse tests
(tests/src/echo.rs starts it): Python stdlib only.

- any path not below: 200, JSON {"name", "path", "headers"}: the raw request
  line's path and every header as received, names unchanged (gunicorn, under
  httpbin, drops names with `_` itself, so it cannot show what Envoy sent).
- /realms/<realm>/.well-known/openid-configuration: a discovery document
  (issuer http://127.0.0.1:<port>/realms/<realm>).
- /realms/<realm>/certs: a JWKS with one RSA key, kid "k1".
- /realms/<realm>/introspect (POST): {"active": false}.
- realm "slow": the JWKS answers after SLOW_SECONDS.
- realm "bigjwks": the JWKS is padded to 2 MiB; realm "bigdisc": the
  discovery document is.
- /__count?path=<p>: how many requests had exactly path p.

Usage: edge_server.py <port> <name>
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
NAME = sys.argv[2]
SLOW_SECONDS = 1.0
BIG = 2 * 1024 * 1024
N = ("kmBAyuV68Dp_qd8Y-LXEr4TQ986UDmFUsvKJ9Hh_JEom2GZU0ZxmEj5Zo3IBUkeF22Im0iWS9dX5xEJ-KN57mac3r81aeYN_BL1"
     "lAEeR23NxY27ZM3ENffXuS8Ry8T2pQ1usH438CKhE_eU6AK7e__0xWLo3Gvn8qw8bR3EHMGl1vA-T2drv_OQ12YAJJ_ZQ4ZV36"
     "2EZpe2Hg6MyMgceTmKTjzsCVz81INabr_CDZdbZlbYyJ23IE3vrWme-8lNypFanzhnMTSYnsZ33WOjLM9_jJBxrrVhjBj65y9v"
     "aflY7dL-kAHJ5o_jobh7YBYsGWDjT2orob-2Bjvs5D5lAew")

counts = {}
lock = threading.Lock()


def pad(body):
    return body + b" " * max(0, BIG - len(body))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (NAME, fmt % args))

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        path = self.path
        with lock:
            counts[path] = counts.get(path, 0) + 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if path.startswith("/__count?path="):
            from urllib.parse import unquote
            p = unquote(path[len("/__count?path="):])
            with lock:
                n = counts.get(p, 0)
            return self.reply(200, str(n).encode(), "text/plain")
        parts = path.split("/")
        if len(parts) >= 4 and parts[1] == "realms":
            realm = parts[2]
            issuer = "http://127.0.0.1:%d/realms/%s" % (PORT, realm)
            rest = "/".join(parts[3:])
            if rest == ".well-known/openid-configuration":
                body = json.dumps({
                    "issuer": issuer,
                    "jwks_uri": issuer + "/certs",
                    "introspection_endpoint": issuer + "/introspect",
                    "token_endpoint": issuer + "/token",
                    "authorization_endpoint": issuer + "/auth",
                }).encode()
                return self.reply(200, pad(body) if realm == "bigdisc" else body)
            if rest == "certs":
                if realm == "slow":
                    time.sleep(SLOW_SECONDS)
                body = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256",
                                             "use": "sig", "n": N, "e": "AQAB"}]}).encode()
                return self.reply(200, pad(body) if realm == "bigjwks" else body)
            if rest == "introspect":
                return self.reply(200, b'{"active":false}')
        self.reply(200, json.dumps({
            "name": NAME,
            "path": path,
            "headers": [[k, v] for k, v in self.headers.items()],
        }).encode())

    do_GET = handle_any
    do_POST = handle_any


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
