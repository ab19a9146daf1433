//! The sidecar: APISIX's Admin API for routes and upstreams, served to Envoy over xDS.
//! It never carries user traffic: Envoy does the routing.
//!
//! - `admin.rs`, `store.rs`, `etcd.rs`, `secrets.rs`: the Admin API and its
//!   storage (a file, or etcd).
//! - `model.rs`, `upstream.rs`: APISIX route and upstream objects, validated.
//! - `translate.rs`, `xds.rs`: routes → Envoy resources, served over ADS.
//! - `discover.rs`: the provider endpoint hosts named by discovery documents.
//!
//! `main.rs` wires them together; the integration tests drive them directly.

// An application whose library exists for its binary and tests: the docs
// (`make lint` builds them with the private items) may link private items.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod discover;
pub mod etcd;
pub mod model;
pub mod secrets;
pub mod store;
pub mod translate;
pub mod upstream;
pub mod xds;
