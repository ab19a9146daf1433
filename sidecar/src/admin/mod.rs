//! APISIX's Admin API (v3) for routes, upstreams, services, plugin configs
//! and global rules: `/apisix/admin/<kind>[/{id}]`.
//!
//! Behaviour follows APISIX's `apisix/admin/{init,resource,routes,upstreams,
//! services,plugin_config,global_rules}.lua` (`<kind>` is `routes`,
//! `upstreams`, `services`, `plugin_configs` or `global_rules`):
//!
//! | call | answer |
//! |---|---|
//! | `GET /<kind>` | 200 `{"total": N, "list": [{"key", "value"}]}`, ordered by id |
//! | `GET /<kind>/{id}` | 200 `{"key": "/apisix/<kind>/<id>", "value": {...}}`, or 404 `{"message": "Key not found"}` |
//! | `PUT /<kind>/{id}`, `PUT /<kind>` (id in the body) | 201 new, 200 replaced; `{"key", "value"}` |
//! | `POST /<kind>` | 201, with a generated id |
//! | `PATCH /<kind>/{id}` | JSON merge patch (RFC 7386) of the stored object, then full validation; 200 |
//! | `PATCH /<kind>/{id}/<sub path>` | the body (any JSON value) replaces what the sub path names (`plugins/openid-connect/scope`, `upstream/nodes`), as APISIX's `core.table.patch`, then full validation; 200; 400 `invalid sub-path: /<path>` through a value that is not an object |
//! | `DELETE /<kind>/{id}` | 200 `{"deleted": "1", "key": ...}`, or 404 |
//!
//! - A route may name an upstream by `upstream_id` instead of carrying an
//!   `upstream`; naming one that does not exist is 400. An upstream that
//!   routes name cannot be deleted (400 naming them); a change to it
//!   reaches every route that names it (the published set holds both).
//! - A route may name a service (`service_id`) and a plugin config
//!   (`plugin_config_id`); global rules apply to every route. A route is
//!   validated and published as it runs, merged as APISIX merges
//!   ([`crate::apisix::merge`]); it is stored as sent. Unknown ids are 400
//!   naming them; a service, plugin config or upstream still named cannot
//!   be deleted (400 with APISIX's words, naming the routes or services);
//!   a write of an upstream, service, plugin config or global rule that
//!   would make a route that is valid now invalid is refused, naming the
//!   route, and nothing changes.
//!
//! - The body is JSON whatever `Content-Type` says (`curl -d` sends
//!   `application/x-www-form-urlencoded`), at most 1.5 MiB as in APISIX.
//! - Bad input is 400 `{"error_msg": "..."}` naming the attribute; a
//!   refused call changes nothing. A save that fails is 500 and changes
//!   nothing either.
//! - `create_time` / `update_time` are unix seconds set here: `create_time`
//!   is kept across writes. As in APISIX, `PUT` and `POST` bodies may not
//!   carry them (so a `GET` value is written back without them); `PATCH`
//!   may.
//! - Access, in this order, for every call and for what the sidecar adds
//!   behind it (`/status`): the client address must be in the allow-list
//!   (APISIX's `allow_admin`, default `127.0.0.0/24`), else 403; `Host`
//!   must be an IP address, `localhost` or a name of `--admin-host`, else
//!   403 (DNS rebinding); `Origin`, when sent, must be the Admin API's own
//!   (`http://<Host>`) and `Sec-Fetch-Site` must not be `cross-site` or
//!   `same-site`, else 403 (a web page's request; curl sends neither);
//!   with an admin key configured, `?api_key=` or `X-API-KEY` must carry
//!   it, else 401 `{"error_msg": "failed to check token", "description": ...}`.
//! - Upstream nodes (a route's inline `upstream`, the `/upstreams`
//!   resource) must not point at the gateway's control ports, nor, without
//!   `--allow-local-upstreams`, at loopback or link-local addresses
//!   ([`NodePolicy`]): 400 naming the node.
//! - Secrets: see [`crate::apisix::secrets`]: responses show `"******"`, stored
//!   and published routes carry the real values.
//! - Every accepted write replaces the route and upstream set published on
//!   [`AdminState::subscribe`], after it was saved.
//! - With a store that has revisions (etcd): answers carry APISIX's
//!   `createdIndex` / `modifiedIndex` (etcd's revisions; a `DELETE`'s
//!   `modifiedIndex` is the deletion's). A write is guarded by the
//!   revisions it was decided on; when another sidecar wrote in between,
//!   it is decided again on what is stored now (so a `PUT` that meets a
//!   concurrent create becomes an update, 200, at a later revision, and a
//!   `PATCH` merges onto the latest), at most 5 times, then 409. What
//!   other sidecars write arrives through the store's watch
//!   ([`AdminState::observe`]). A store that cannot be reached is 503
//!   `{"error_msg": "cannot save the route: ..."}`: nothing changed, and
//!   `GET` keeps answering the last known state.
//!
//! Where this differs from APISIX, on purpose:
//!
//! - 403 is `{"error_msg": "IP address not allowed"}` (APISIX's nginx
//!   answers its HTML "403 Forbidden" page).
//! - Invalid JSON is 400 `invalid request body: <parser error>` without
//!   APISIX's `req_body` echo (the body may hold secrets).
//! - `PATCH` is RFC 7386: arrays are replaced (APISIX's table merge merges
//!   them index by index).
//! - Not (yet) here: the list's filters and
//!   paging, the `x_api_key` cookie, the admin key's `viewer` role, `ttl`.
//!
//! Generated ids are 20 decimal digits, like the ids APISIX's `POST` gives
//! (its etcd revision, `%020d`): here the current unix time × 10⁹, or one
//! more than the last generated id if that is larger. So they sort in
//! creation order and are not given out again after a delete or a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ipnet::IpNet;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Mutex};

use crate::apisix::merge::{self, names};
use crate::apisix::route::{id_text, with_id, Errors, RouteSpec};
use crate::apisix::secrets::{self, FillError};
use crate::apisix::shared;
use crate::apisix::ssl::{self, SslSpec};
use crate::apisix::table::{Published, RouteTable};
use crate::apisix::upstream::{NodePolicy, Upstream};
use crate::store::{
    Guard, ResourceKind, Revs, Store, StoreError, Stored, Versioned, Write, Written,
};

mod access;
mod body;
mod commit;
mod handlers;
mod merge_patch;
pub mod probe;
mod reply;

use access::*;
use body::*;
pub use commit::*;
use handlers::*;
use merge_patch::*;
use reply::*;

/// Unix time in seconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// APISIX's `MAX_REQ_BODY`.
const MAX_BODY: usize = 1024 * 1024 * 3 / 2;

/// Who may call the Admin API.
#[derive(Clone)]
pub struct AdminSettings {
    /// APISIX's `deployment.admin.admin_key`: when set, every call must
    /// carry it. An empty key matches nothing (refuse it when parsing
    /// options).
    pub api_key: Option<String>,
    /// APISIX's `deployment.admin.allow_admin`: client addresses allowed.
    pub allow: Vec<IpNet>,
    /// Host names (lower case) the Admin API answers to besides IP
    /// addresses and `localhost` (`--admin-host`): a `Host` naming anything
    /// else is refused, which defeats DNS rebinding.
    pub hosts: Vec<String>,
    /// What upstream nodes may point at.
    pub nodes: NodePolicy,
}

impl AdminSettings {
    /// APISIX's default `allow_admin`.
    pub fn default_allow() -> Vec<IpNet> {
        vec![IpNet::V4(ipnet::Ipv4Net::new_assert(
            std::net::Ipv4Addr::new(127, 0, 0, 0),
            24,
        ))]
    }
}

impl Default for AdminSettings {
    fn default() -> AdminSettings {
        AdminSettings {
            api_key: None,
            allow: AdminSettings::default_allow(),
            hosts: Vec::new(),
            nodes: NodePolicy::default(),
        }
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("allow", &self.allow)
            .field("hosts", &self.hosts)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

type IdPath = Result<Path<String>, PathRejection>;

/// The calls on one kind of resource.
fn resource(router: Router<AdminState>, kind: ResourceKind) -> Router<AdminState> {
    let base = format!("/apisix/admin/{}", kind.plural());
    router
        .route(
            &base,
            get(move |s: State<AdminState>, uri: axum::http::Uri| list(s, kind, uri))
                .put(move |s: State<AdminState>, body: Body| put_in_body(s, kind, body))
                .post(move |s: State<AdminState>, body: Body| post_new(s, kind, body)),
        )
        .route(
            &format!("{base}/{{id}}"),
            get(move |s: State<AdminState>, id: IdPath| get_one(s, kind, id))
                .put(move |s: State<AdminState>, id: IdPath, body: Body| {
                    put_at_id(s, kind, id, body)
                })
                .patch(move |s: State<AdminState>, id: IdPath, body: Body| {
                    patch_at_id(s, kind, id, body)
                })
                .delete(move |s: State<AdminState>, id: IdPath| delete_at_id(s, kind, id))
                .post(move || post_at_id(kind)),
        )
        .route(
            &format!("{base}/{{id}}/{{*sub_path}}"),
            axum::routing::patch(
                move |s: State<AdminState>,
                      path: Result<Path<(String, String)>, PathRejection>,
                      body: Body| { patch_sub_path_at_id(s, kind, path, body) },
            ),
        )
}

/// The Admin API's routes and upstreams, and `protected` (the sidecar's
/// `/status`), behind the access checks (`access.rs`). Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: a request without
/// the client address is refused.
pub fn router(state: AdminState, protected: Router) -> Router {
    let mut r = Router::new();
    for kind in [
        ResourceKind::Route,
        ResourceKind::Upstream,
        ResourceKind::Service,
        ResourceKind::PluginConfig,
        ResourceKind::GlobalRule,
        ResourceKind::Ssl,
    ] {
        r = resource(r, kind);
    }
    r.merge(probe::routes())
        .with_state(state.clone())
        .merge(protected)
        .layer(middleware::from_fn_with_state(state, access))
}

#[cfg(test)]
mod tests;
