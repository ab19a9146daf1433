#!/usr/bin/env bash
# Builds oauth2-proxy (the peer `make bench` compares with) from the Go
# module proxy into build/go/bin, pinned; prints the binary's path. Quick
# when it is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="v7.15.6"
BIN="$ROOT/build/go/bin/oauth2-proxy"
STAMP="$BIN.version"
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "oauth2-proxy: go is not installed" >&2; exit 1; }
echo "oauth2-proxy: go install github.com/oauth2-proxy/oauth2-proxy/v7@$VERSION (a few minutes, once)" >&2
GOBIN="$ROOT/build/go/bin" go install "github.com/oauth2-proxy/oauth2-proxy/v7@$VERSION" >&2
echo "$VERSION" > "$STAMP"
echo "$BIN"
