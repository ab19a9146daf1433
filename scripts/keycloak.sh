#!/usr/bin/env bash
# Fetches Keycloak's server distribution from Maven Central (with Maven,
# cached in the local Maven repository) and unpacks it under
# build/keycloak/keycloak-$KEYCLOAK_VERSION, with the repository's realm
# file (keycloak/quickstart-realm-realm.json) in its data/import.
# Idempotent. Prints the distribution's path on stdout.
#
#   KEYCLOAK_VERSION  the pinned version (also in docker-compose.yml)
#   JAVA              the java to check (default: java on PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.7.3}"
ARTIFACT="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz"
BASE="$ROOT/build/keycloak"
HOME_DIR="$BASE/keycloak-$KEYCLOAK_VERSION"
REALM="$ROOT/keycloak/quickstart-realm-realm.json"

say() { printf 'keycloak: %s\n' "$*" >&2; }
die() { printf 'keycloak: ERROR: %s\n' "$*" >&2; exit 1; }

JAVA="${JAVA:-java}"
command -v "$JAVA" >/dev/null 2>&1 || die "no java on PATH: Keycloak needs OpenJDK 17, 21 or 25 (Debian: openjdk-17-jre-headless)"
java_major="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
case "$java_major" in
    17|21|25) ;;
    *) die "java $java_major found; Keycloak $KEYCLOAK_VERSION needs OpenJDK 17, 21 or 25" ;;
esac

mkdir -p "$BASE"
if [ ! -x "$HOME_DIR/bin/kc.sh" ]; then
    command -v mvn >/dev/null 2>&1 || die "mvn is missing (Debian: maven): it fetches $ARTIFACT from Maven Central"
    say "fetching $ARTIFACT (Maven Central, ~170 MB, cached in ~/.m2)"
    if ! mvn -q -B dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$BASE" >"$BASE/mvn.log" 2>&1; then
        tail -20 "$BASE/mvn.log" >&2
        die "Maven could not fetch $ARTIFACT (log: $BASE/mvn.log): is Maven Central reachable?"
    fi
    tarball="$BASE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
    [ -f "$tarball" ] || die "Maven reported success but $tarball is missing"
    say "unpacking into $HOME_DIR"
    rm -rf "$HOME_DIR.partial"
    mkdir -p "$HOME_DIR.partial"
    tar xzf "$tarball" -C "$HOME_DIR.partial" --strip-components=1
    rm -f "$tarball"
    mv "$HOME_DIR.partial" "$HOME_DIR"
fi

# The realm to import: always the repository's current file.
mkdir -p "$HOME_DIR/data/import"
if ! cmp -s "$REALM" "$HOME_DIR/data/import/quickstart-realm-realm.json"; then
    cp "$REALM" "$HOME_DIR/data/import/quickstart-realm-realm.json"
fi
echo "$HOME_DIR"
