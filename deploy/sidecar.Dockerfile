# The sidecar (APISIX Admin API + xDS) as a container. Multi-stage: the
# Rust toolchain builds it, a slim Debian runs it. The wasm filter is not
# in this image: Envoy reads it (docker-compose.yml mounts the one `make
# build` made).
FROM rust:1.95-bookworm AS build
# protoc (and the .proto files it imports): the etcd client's gRPC code is generated at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p sidecar

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sidecar /usr/local/bin/sidecar
ENTRYPOINT ["/usr/local/bin/sidecar"]
