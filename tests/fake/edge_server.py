"""An upstream for the edge tests (tests/src/echo.rs starts it): Python
stdlib only. Not a provider: the tests talk to real ones (tests/provider,
tests/rogue).

- any path not below: 200, JSON {"name", "path", "headers"}: the raw request
  line's path and every header as received, names unchanged (gunicorn, under
  httpbin, drops names with `_` itself, so it cannot show what Envoy sent).
- /__count?path=<p>: how many requests had exactly path p.

Usage: edge_server.py <port> <name>
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
NAME = sys.argv[2]
counts = {}
lock = threading.Lock()


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
        self.reply(200, json.dumps({
            "name": NAME,
            "path": path,
            "headers": [[k, v] for k, v in self.headers.items()],
        }).encode())

    do_GET = handle_any
    do_POST = handle_any


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
