#!/usr/bin/env bash
# `make demo`: the whole local stack of the APISIX + Keycloak tutorial, in
# the foreground, without Docker:
#   - a local OpenID provider shaped like the tutorial's Keycloak realm
#     (tests/provider: npm oidc-provider) at
#     http://127.0.0.1:$IDP_PORT/realms/quickstart-realm
#   - httpbin (in place of httpbin.org) on 127.0.0.1:$UPSTREAM_PORT
#   - the gateway (scripts/run.sh): Admin API on 127.0.0.1:$ADMIN_PORT,
#     Envoy on $PROXY_PORT
# No route is created: PUT them as the tutorial (README.md) does. The
# routes of a demo live in build/demo/routes.json and are removed when the
# demo starts (DEMO_KEEP_ROUTES=1 keeps them). Ctrl-C stops everything.
#
# Ports (environment): PROXY_PORT 9080, PROXY_HTTPS_PORT 9443 (open once an
# ssl object is PUT), ADMIN_PORT 9180, IDP_PORT 8080,
# UPSTREAM_PORT 8090, XDS_PORT 18000, ENVOY_ADMIN_PORT 9901. DEMO_DIR: logs,
# routes and the Envoy bootstrap (build/demo).
# OIDC_CLIENT_SECRET: the provider's client secret (a fixed demo value).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PROXY_PORT="${PROXY_PORT:-9080}"
export PROXY_HTTPS_PORT="${PROXY_HTTPS_PORT:-9443}"
export ADMIN_PORT="${ADMIN_PORT:-9180}"
# Envoy's own log: warnings and errors (the filter's included) keep the
# terminal readable; ENVOY_LOG_LEVEL=info shows every login failure too.
export ENVOY_LOG_LEVEL="${ENVOY_LOG_LEVEL:-warning}"
# The demo's httpbin is on 127.0.0.1: the Admin API must accept loopback
# upstream nodes (run.sh: ALLOW_LOCAL_UPSTREAMS).
export ALLOW_LOCAL_UPSTREAMS=1
IDP_PORT="${IDP_PORT:-8080}"
UPSTREAM_PORT="${UPSTREAM_PORT:-8090}"
CLIENT_SECRET="${OIDC_CLIENT_SECRET:-quickstart-client-secret-0123456789}"
DEMO_DIR="${DEMO_DIR:-$ROOT/build/demo}"
export BOOTSTRAP_FILE="$DEMO_DIR/envoy-bootstrap.yaml"
export DATA_FILE="$DEMO_DIR/routes.json"

say() { printf 'demo: %s\n' "$*" >&2; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

for p in PROXY_PORT PROXY_HTTPS_PORT ADMIN_PORT IDP_PORT UPSTREAM_PORT; do
    v="${!p}"
    [[ "$v" =~ ^[0-9]+$ ]] && (( v > 0 && v < 65536 )) || die "$p=$v is not a port number"
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in PROXY_PORT PROXY_HTTPS_PORT ADMIN_PORT IDP_PORT UPSTREAM_PORT; do
    port_open "${!p}" && die "port ${!p} ($p) is in use: stop what uses it, or set $p to another port"
done

NODE="$ROOT/tests/provider/node_modules/.bin/node"
[ -x "$NODE" ] || NODE="$(command -v node || true)"
[ -n "$NODE" ] || die "node is missing: run \`make setup\`"
GUNICORN="$ROOT/.venv/bin/gunicorn"
[ -x "$GUNICORN" ] || die "$GUNICORN is missing: run \`make setup\`"

mkdir -p "$DEMO_DIR"
if [ "${DEMO_KEEP_ROUTES:-0}" != 1 ]; then
    rm -f "$DATA_FILE"
fi

PIDS=()
stop() {
    local code=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    say "stopped"
    exit "$code"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Up to 90 s: on a loaded machine node takes a while to load oidc-provider
# (30 s was once too short while other builds ran).
wait_port() { # name port pid log
    local deadline=$((SECONDS + 90))
    while [ "$SECONDS" -lt "$deadline" ]; do
        port_open "$2" && return 0
        kill -0 "$3" 2>/dev/null || die "$1 exited at start (see $4)"
        sleep 0.05
    done
    die "$1 does not listen on 127.0.0.1:$2 after 90 s (see $4)"
}

ISSUER="http://127.0.0.1:$IDP_PORT/realms/quickstart-realm"
say "OpenID provider: $ISSUER (log: $DEMO_DIR/idp.log)"
PORT="$IDP_PORT" ISSUER="$ISSUER" CLIENT_SECRET="$CLIENT_SECRET" \
    "$NODE" "$ROOT/tests/provider/server.js" >"$DEMO_DIR/idp.log" 2>&1 &
PIDS+=($!)
wait_port "the OpenID provider" "$IDP_PORT" "${PIDS[-1]}" "$DEMO_DIR/idp.log"

say "httpbin: 127.0.0.1:$UPSTREAM_PORT (log: $DEMO_DIR/httpbin.log)"
(cd "$DEMO_DIR" && exec "$GUNICORN" -b "127.0.0.1:$UPSTREAM_PORT" -w 2 \
    --graceful-timeout 2 --no-control-socket --access-logfile - httpbin:app) \
    >"$DEMO_DIR/httpbin.log" 2>&1 &
PIDS+=($!)
wait_port httpbin "$UPSTREAM_PORT" "${PIDS[-1]}" "$DEMO_DIR/httpbin.log"

bash "$ROOT/scripts/run.sh" &
PIDS+=($!)
RUN_PID="${PIDS[-1]}"
wait_port "the gateway" "$PROXY_PORT" "$RUN_PID" "the output above"

cat <<EOF

================================================================
The demo stack is up. In another terminal, set what the tutorial
(README.md, "The tutorial") asks for:

export KEYCLOAK_IP=127.0.0.1
export OIDC_DISCOVERY=http://\${KEYCLOAK_IP}:$IDP_PORT/realms/quickstart-realm/.well-known/openid-configuration
export OIDC_CLIENT_ID=apisix-quickstart-client
export OIDC_CLIENT_SECRET=$CLIENT_SECRET
export UPSTREAM=127.0.0.1:$UPSTREAM_PORT   # use in place of httpbin.org:80

Users: quickstart-user / quickstart-user-pass
First command to try (no route yet, so Envoy answers 404):

curl -i "http://127.0.0.1:$PROXY_PORT/anything/test"

Admin API: http://127.0.0.1:$ADMIN_PORT/apisix/admin/routes
Ctrl-C stops everything.
================================================================
EOF

# Until the gateway exits (or Ctrl-C); then `stop` ends the rest.
set +e
wait "$RUN_PID"
code=$?
set -e
say "the gateway exited ($code)"
exit "$code"
