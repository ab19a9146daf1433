//! The sidecar: APISIX's Admin API for routes and upstreams, served to Envoy over xDS.
//! It never carries user traffic: Envoy does the routing.
//!
//! - [`apisix`]: APISIX route and upstream objects, validated; secrets.
//! - [`admin`]: the Admin API, over a [`store`] (a file, or etcd).
//! - [`translate`]: routes → Envoy resources; [`xds`] serves them over ADS.
//! - [`discover`]: the provider endpoint hosts named by discovery documents.
//!
//! `main.rs` wires them together; the integration tests drive them directly.

// An application whose library exists for its binary and tests: the docs
// (`make lint` builds them with the private items) may link private items.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod apisix;
pub mod discover;
pub mod revocations;
pub mod serve;
pub mod sink;
pub mod store;
pub mod translate;
pub mod xds;
