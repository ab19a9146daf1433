#!/usr/bin/env bash
# `make run`: the gateway in the foreground. Starts the sidecar (APISIX
# Admin API + xDS), waits for its xDS port, then starts Envoy bootstrapped
# from envoy/bootstrap.yaml to take everything from the sidecar. Ctrl-C (or
# either process exiting) stops both.
#
# Ports (environment, defaults as APISIX):
#   PROXY_PORT        9080   Envoy's listener (the gateway)
#   PROXY_HTTPS_PORT  9443   Envoy's HTTPS listener, open while an ssl
#                     object exists (/apisix/admin/ssls)
#   ADMIN_PORT        9180   the Admin API (127.0.0.1)
#   XDS_PORT          18000  the sidecar's xDS (127.0.0.1)
#   ENVOY_ADMIN_PORT  9901   Envoy's admin (127.0.0.1)
# Other settings:
#   DATA_FILE         build/routes.json   where the Admin API keeps routes
#   NODE_ID           gateway-<PROXY_PORT> Envoy's node id
#   SIDECAR           the sidecar binary (default: target/release/sidecar,
#                     else target/debug/sidecar)
#   OIDC_FILTER_WASM  the filter (default: target/wasm32-wasip1/wasm/oidc_filter.wasm)
#   ENVOY_LOG_LEVEL   info
#   BOOTSTRAP_FILE    where the rendered Envoy bootstrap goes (build/envoy-bootstrap.yaml)
#   ALLOW_LOCAL_UPSTREAMS  1: the Admin API accepts upstream nodes on this
#                     host (127.0.0.1, localhost, ::1) and link-local ones
#                     (169.254.x.x: cloud metadata); default 0: refused
#                     (sidecar --allow-local-upstreams). `make demo` sets it
#                     (its httpbin is on 127.0.0.1). The gateway's own
#                     control ports (ADMIN_PORT, XDS_PORT, ENVOY_ADMIN_PORT)
#                     are refused either way.
#   SIDECAR_ARGS      extra arguments for the sidecar
#
# Envoy's listeners take at most half of this shell's descriptor limit
# (`ulimit -n`) in connections, at most 50,000 (the sidecar's
# --proxy-max-connections default): a proxied connection also needs an
# upstream one, and a limit above the descriptors would protect nothing.
# A --proxy-max-connections in SIDECAR_ARGS wins.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROXY_PORT="${PROXY_PORT:-9080}"
PROXY_HTTPS_PORT="${PROXY_HTTPS_PORT:-9443}"
ADMIN_PORT="${ADMIN_PORT:-9180}"
XDS_PORT="${XDS_PORT:-18000}"
ENVOY_ADMIN_PORT="${ENVOY_ADMIN_PORT:-9901}"
NODE_ID="${NODE_ID:-gateway-$PROXY_PORT}"
BUILD="$ROOT/build"
DATA_FILE="${DATA_FILE:-$BUILD/routes.json}"
WASM="${OIDC_FILTER_WASM:-$ROOT/target/wasm32-wasip1/wasm/oidc_filter.wasm}"
ENVOY="$ROOT/.venv/bin/envoy"
ENVOY_LOG_LEVEL="${ENVOY_LOG_LEVEL:-info}"
ALLOW_LOCAL_UPSTREAMS="${ALLOW_LOCAL_UPSTREAMS:-0}"

say() { printf 'run: %s\n' "$*" >&2; }
die() { printf 'run: ERROR: %s\n' "$*" >&2; exit 1; }

for p in PROXY_PORT PROXY_HTTPS_PORT ADMIN_PORT XDS_PORT ENVOY_ADMIN_PORT; do
    v="${!p}"
    [[ "$v" =~ ^[0-9]+$ ]] && (( v > 0 && v < 65536 )) || die "$p=$v is not a port number"
done

LIMIT_ARGS=()
if [[ " ${SIDECAR_ARGS:-} " != *" --proxy-max-connections"* ]]; then
    fds="$(ulimit -n)"
    if [[ "$fds" =~ ^[0-9]+$ ]] && (( fds / 2 < 50000 )); then
        LIMIT_ARGS=(--proxy-max-connections "$(( fds / 2 > 1 ? fds / 2 : 1 ))")
    fi
fi

case "$ALLOW_LOCAL_UPSTREAMS" in
    1) LOCAL_ARGS=(--allow-local-upstreams) ;;
    0) LOCAL_ARGS=() ;;
    *) die "ALLOW_LOCAL_UPSTREAMS=$ALLOW_LOCAL_UPSTREAMS: use 1 or 0" ;;
esac

if [ -z "${SIDECAR:-}" ]; then
    if [ -x "$ROOT/target/release/sidecar" ]; then
        SIDECAR="$ROOT/target/release/sidecar"
    elif [ -x "$ROOT/target/debug/sidecar" ]; then
        SIDECAR="$ROOT/target/debug/sidecar"
    else
        die "no sidecar binary: build it with \`cargo build --release -p sidecar\` (make build)"
    fi
fi
[ -x "$SIDECAR" ] || die "$SIDECAR is not an executable"
[ -f "$WASM" ] || die "$WASM is missing: build it with \`make build\`"
[ -x "$ENVOY" ] || die "$ENVOY is missing: install it with \`make setup\`"

# Render the bootstrap: every ${NAME} placeholder must be filled.
mkdir -p "$BUILD" "$(dirname "$DATA_FILE")"
BOOTSTRAP="${BOOTSTRAP_FILE:-$BUILD/envoy-bootstrap.yaml}"
text="$(<"$ROOT/envoy/bootstrap.yaml")"
text="${text//'${XDS_PORT}'/$XDS_PORT}"
text="${text//'${ENVOY_ADMIN_PORT}'/$ENVOY_ADMIN_PORT}"
text="${text//'${NODE_ID}'/$NODE_ID}"
if grep -q '\${' <<<"$text"; then
    die "envoy/bootstrap.yaml has a placeholder run.sh does not fill: $(grep -o '\${[A-Za-z_]*}' <<<"$text" | sort -u | tr '\n' ' ')"
fi
printf '%s\n' "$text" > "$BOOTSTRAP"

SIDECAR_PID=""
ENVOY_PID=""
stop() {
    local code=$?
    trap - EXIT INT TERM
    # Envoy first (it keeps serving its last configuration without the
    # sidecar), then the sidecar. Only the processes this script started.
    for pid in "$ENVOY_PID" "$SIDECAR_PID"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$ENVOY_PID" "$SIDECAR_PID"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    exit "$code"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

say "sidecar: Admin API on 127.0.0.1:$ADMIN_PORT, xDS on 127.0.0.1:$XDS_PORT, routes in $DATA_FILE, local upstreams $([ "$ALLOW_LOCAL_UPSTREAMS" = 1 ] && echo allowed || echo refused)"
# shellcheck disable=SC2086 # SIDECAR_ARGS is a list of words
"$SIDECAR" \
    --admin-addr "127.0.0.1:$ADMIN_PORT" \
    --xds-addr "127.0.0.1:$XDS_PORT" \
    --proxy-port "$PROXY_PORT" \
    --https-port "$PROXY_HTTPS_PORT" \
    --wasm "$WASM" \
    --data "$DATA_FILE" \
    --envoy-admin-addr "127.0.0.1:$ENVOY_ADMIN_PORT" \
    "${LOCAL_ARGS[@]}" \
    "${LIMIT_ARGS[@]}" \
    ${SIDECAR_ARGS:-} &
SIDECAR_PID=$!

# Envoy starts only once the sidecar serves xDS (an Envoy without it has no
# listener until it comes up).
for _ in $(seq 1 200); do
    port_open "$XDS_PORT" && break
    kill -0 "$SIDECAR_PID" 2>/dev/null || { wait "$SIDECAR_PID" || true; die "the sidecar exited before it served xDS"; }
    sleep 0.05
done
port_open "$XDS_PORT" || die "the sidecar does not listen on 127.0.0.1:$XDS_PORT after 10 s"

say "envoy: gateway on port $PROXY_PORT (HTTPS on $PROXY_HTTPS_PORT once an ssl exists), admin on 127.0.0.1:$ENVOY_ADMIN_PORT (bootstrap $BOOTSTRAP)"
"$ENVOY" -c "$BOOTSTRAP" --disable-hot-restart -l "$ENVOY_LOG_LEVEL" &
ENVOY_PID=$!

# Until either exits (or Ctrl-C); then `stop` ends the other.
set +e
wait -n "$SIDECAR_PID" "$ENVOY_PID"
code=$?
set -e
if ! kill -0 "$SIDECAR_PID" 2>/dev/null; then
    say "the sidecar exited ($code); stopping Envoy"
else
    say "Envoy exited ($code); stopping the sidecar"
fi
exit "$code"
