//! APISIX's Admin API (v3) for routes and upstreams:
//! `/apisix/admin/routes[/{id}]`, `/apisix/admin/upstreams[/{id}]`.
//!
//! Behaviour follows APISIX's `apisix/admin/{init,resource,routes,upstreams}.lua`
//! (`<kind>` is `routes` or `upstreams`):
//!
//! | call | answer |
//! |---|---|
//! | `GET /<kind>` | 200 `{"total": N, "list": [{"key", "value"}]}`, ordered by id |
//! | `GET /<kind>/{id}` | 200 `{"key": "/apisix/<kind>/<id>", "value": {...}}`, or 404 `{"message": "Key not found"}` |
//! | `PUT /<kind>/{id}`, `PUT /<kind>` (id in the body) | 201 new, 200 replaced; `{"key", "value"}` |
//! | `POST /<kind>` | 201, with a generated id |
//! | `PATCH /<kind>/{id}` | JSON merge patch (RFC 7386) of the stored object, then full validation; 200 |
//! | `DELETE /<kind>/{id}` | 200 `{"deleted": "1", "key": ...}`, or 404 |
//!
//! - A route may name an upstream by `upstream_id` instead of carrying an
//!   `upstream`; naming one that does not exist is 400. An upstream that
//!   routes name cannot be deleted (400 naming them); a change to it
//!   reaches every route that names it (the published set holds both).
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
//! - Not (yet) here: `PATCH /routes/{id}/<sub path>`, the list's filters and
//!   paging, the `x_api_key` cookie, the admin key's `viewer` role, `ttl`.
//!
//! Generated ids are 20 decimal digits, like the ids APISIX's `POST` gives
//! (its etcd revision, `%020d`): here the current unix time × 10⁹, or one
//! more than the last generated id if that is larger. So they sort in
//! creation order and are not given out again after a delete or a restart.

use std::collections::BTreeMap;
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

use crate::apisix::route::{id_text, with_id, Errors, RouteSpec};
use crate::apisix::secrets::{self, FillError};
use crate::apisix::upstream::{NodePolicy, Upstream};
use crate::store::{Guard, Kind, Revs, Store, StoreError, Stored, Versioned, Write, Written};

/// The routes and upstreams as published: id → stored object (with `id`,
/// `create_time`, `update_time` and the real secrets).
pub type RouteSet = Arc<Stored>;

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

/// The Admin API's state: cheap to clone, one per sidecar.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: AdminSettings,
    clock: Clock,
    /// The prefix of the `key` in answers (`/apisix`).
    prefix: String,
    /// What the store holds as far as this sidecar knows, with revisions:
    /// what `GET` reads and writes are decided on.
    known: watch::Sender<Arc<Versioned>>,
    /// The route set published to xDS (`known`'s data).
    tx: watch::Sender<RouteSet>,
    /// Held from validation to publication, so this sidecar's writes never
    /// interleave.
    writer: Mutex<Writer>,
}

/// Attempts of one write that keeps meeting concurrent changes.
const MAX_ATTEMPTS: usize = 5;

/// How long a write done in a store with a watch waits for the watch to
/// bring it back (so that a `GET` right after it sees it).
const WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub(crate) struct Writer {
    /// The last generated id, as a number.
    last_id: u128,
}

impl Writer {
    fn next_id(&mut self, taken: &BTreeMap<String, Value>, now: u64) -> String {
        let mut n = (u128::from(now) * 1_000_000_000).max(self.last_id + 1);
        while taken.contains_key(&format!("{n:020}")) {
            n += 1;
        }
        self.last_id = n;
        format!("{n:020}")
    }
}

impl AdminState {
    /// Loads the stored routes and upstreams; they are published at once.
    pub async fn new(
        store: Arc<dyn Store>,
        settings: AdminSettings,
    ) -> Result<AdminState, StoreError> {
        AdminState::with_clock(store, settings, system_clock()).await
    }

    /// [`AdminState::new`] with the clock that stamps `create_time` and
    /// `update_time`.
    pub async fn with_clock(
        store: Arc<dyn Store>,
        settings: AdminSettings,
        clock: Clock,
    ) -> Result<AdminState, StoreError> {
        let loaded = store.load().await?;
        let last_id = loaded
            .data
            .routes
            .keys()
            .chain(loaded.data.upstreams.keys())
            // Ids of the generated form only (20 digits, so no overflow).
            .filter(|id| id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|id| id.parse::<u128>().ok())
            .max()
            .unwrap_or(0);
        let (tx, _) = watch::channel(Arc::new(loaded.data.clone()));
        let (known, _) = watch::channel(Arc::new(loaded));
        Ok(AdminState {
            inner: Arc::new(Inner {
                prefix: store.prefix().to_string(),
                store,
                settings,
                clock,
                known,
                tx,
                writer: Mutex::new(Writer { last_id }),
            }),
        })
    }

    /// The route and upstream set now and every later one. The receiver's
    /// first value is the current set.
    pub fn subscribe(&self) -> watch::Receiver<RouteSet> {
        self.inner.tx.subscribe()
    }

    /// The current routes and upstreams.
    #[cfg(test)]
    pub fn routes(&self) -> RouteSet {
        self.inner.tx.borrow().clone()
    }

    /// What this sidecar knows the store holds, with revisions.
    pub fn known(&self) -> Arc<Versioned> {
        self.inner.known.borrow().clone()
    }

    /// Takes what a store with revisions holds at a later revision (its
    /// watch, or a read after a conflict) and publishes it. An older or the
    /// same revision changes nothing; returns whether it was taken.
    pub fn observe(&self, seen: Versioned) -> bool {
        let seen = Arc::new(seen);
        let taken = self.inner.known.send_if_modified(|known| {
            if seen.revision <= known.revision {
                return false;
            }
            *known = seen.clone();
            true
        });
        if taken {
            self.inner.tx.send_if_modified(|published| {
                if **published == seen.data {
                    return false;
                }
                *published = Arc::new(seen.data.clone());
                true
            });
        }
        taken
    }

    /// Waits (at most `timeout`) until what is known is at `revision` or
    /// later; whether it got there.
    async fn caught_up(&self, revision: i64, timeout: std::time::Duration) -> bool {
        let mut rx = self.inner.known.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|k| k.revision >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs `decide` on what is known under the writer lock; on `Ok`
    /// writes the result, then publishes it. Nothing changes on `Err` or
    /// when the write fails. When the store says the write's guards no
    /// longer hold (another sidecar wrote in between), `decide` runs again
    /// on what the store holds now.
    async fn commit<F>(&self, mut decide: F) -> Response
    where
        F: FnMut(&Versioned, &mut Writer, u64) -> Result<Change, Refusal> + Send + 'static,
    {
        let state = self.clone();
        // A task of its own: a client that goes away mid-write must not
        // leave a saved route set unpublished.
        let task = tokio::spawn(async move {
            let inner = &state.inner;
            let mut writer = inner.writer.lock().await;
            let mut current = state.known();
            for _ in 0..MAX_ATTEMPTS {
                let now = (inner.clock)();
                let change = match decide(&current, &mut writer, now) {
                    Ok(c) => c,
                    Err(refusal) => return refusal.into_response(),
                };
                let write = change.write(&current);
                let mut next = current.data.clone();
                match &write.value {
                    Some(v) => write
                        .kind
                        .of_mut(&mut next)
                        .insert(write.id.clone(), v.clone()),
                    None => write.kind.of_mut(&mut next).remove(&write.id),
                };
                let (kind, id) = (write.kind, write.id.clone());
                let (what, status) = match (&change, &write.value) {
                    (_, None) => ("deleted", StatusCode::OK),
                    (Change::Put { created: true, .. }, _) => ("created", StatusCode::CREATED),
                    _ => ("updated", StatusCode::OK),
                };
                let name = kind.name();
                let revs = match inner.store.write(&write, &next).await {
                    Ok(Written::Saved) => {
                        let next = Versioned::unversioned(next);
                        inner.known.send_replace(Arc::new(next.clone()));
                        inner.tx.send_replace(Arc::new(next.data));
                        None
                    }
                    Ok(Written::At { revision }) => {
                        if !state.caught_up(revision, WATCH_WAIT).await {
                            tracing::warn!(
                                %id, revision,
                                "Admin API: the store's watch has not brought revision \
                                 {revision} back yet: reads may not show this {name} for a while"
                            );
                        }
                        let created = match what {
                            "created" => revision,
                            _ => current.revs_of(kind, &id).map_or(revision, |r| r.created),
                        };
                        Some(Revs {
                            created,
                            modified: revision,
                        })
                    }
                    Err(StoreError::Conflict(now)) => {
                        tracing::info!(
                            %id,
                            "Admin API: {name} changed concurrently (the store is at revision {}): deciding again",
                            now.revision
                        );
                        state.observe((*now).clone());
                        current = Arc::new(*now);
                        continue;
                    }
                    Err(StoreError::Unavailable(e)) => {
                        tracing::error!(%id, "Admin API: {name} not {what}: {e}");
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "cannot save the {name}: {e}; nothing was changed, and reads \
                                 still answer with the last known routes and upstreams"
                            ),
                        );
                    }
                    Err(e) => {
                        tracing::error!(%id, "Admin API: {name} not {what}: cannot save: {e}");
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("failed to save the {name}: {e}"),
                        );
                    }
                };
                tracing::info!(%id, revision = revs.map(|r| r.modified), "Admin API: {name} {what}");
                let body = match write.value {
                    Some(v) => entry(&inner.prefix, kind, &id, &v, revs),
                    None => {
                        let mut b = json!({"deleted": "1", "key": kind.key(&inner.prefix, &id)});
                        if let Some(r) = revs {
                            b["modifiedIndex"] = r.modified.into();
                        }
                        b
                    }
                };
                return reply(status, body);
            }
            error(
                StatusCode::CONFLICT,
                format!(
                    "the store changed concurrently {MAX_ATTEMPTS} times while this write \
                     was decided: nothing was written; try again"
                ),
            )
        });
        task.await.unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the write failed unexpectedly".into(),
            )
        })
    }
}

enum Change {
    Put {
        kind: Kind,
        id: String,
        value: Value,
        created: bool,
    },
    Delete {
        kind: Kind,
        id: String,
    },
}

impl Change {
    /// The write, guarded by what it was decided on in `current`: the
    /// object itself; for a route, the upstream it names; for an upstream,
    /// every route (they were validated against it, or could name it).
    fn write(&self, current: &Versioned) -> Write {
        let (kind, id, value) = match self {
            Change::Put {
                kind, id, value, ..
            } => (*kind, id, Some(value.clone())),
            Change::Delete { kind, id } => (*kind, id, None),
        };
        let mut guards = vec![Guard::Unchanged {
            kind,
            id: id.clone(),
            modified: current.modified(kind, id),
        }];
        match kind {
            Kind::Route => {
                if let Some(uid) = value
                    .as_ref()
                    .and_then(|v| v.get("upstream_id"))
                    .and_then(id_text)
                {
                    guards.push(Guard::Unchanged {
                        kind: Kind::Upstream,
                        modified: current.modified(Kind::Upstream, &uid),
                        id: uid,
                    });
                }
            }
            Kind::Upstream => guards.push(Guard::NoneChangedSince {
                kind: Kind::Route,
                revision: current.revision,
            }),
        }
        Write {
            kind,
            id: id.clone(),
            value,
            guards,
        }
    }
}

type IdPath = Result<Path<String>, PathRejection>;

/// The calls on one kind of resource.
fn resource(router: Router<AdminState>, kind: Kind) -> Router<AdminState> {
    let base = format!("/apisix/admin/{}", kind.plural());
    router
        .route(
            &base,
            get(move |s: State<AdminState>| list(s, kind))
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
}

/// The Admin API's routes and upstreams, and `protected` (the sidecar's
/// `/status`), behind the access checks ([`access`]). Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: a request without
/// the client address is refused.
pub fn router(state: AdminState, protected: Router) -> Router {
    let r = resource(Router::new(), Kind::Route);
    resource(r, Kind::Upstream)
        .with_state(state.clone())
        .merge(protected)
        .layer(middleware::from_fn_with_state(state, access))
}

// ---------------------------------------------------------------------------
// Replies

fn reply(status: StatusCode, body: Value) -> Response {
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-api-version", HeaderValue::from_static("v3"));
    r
}

fn error(status: StatusCode, msg: String) -> Response {
    reply(status, json!({ "error_msg": msg }))
}

/// A call refused before anything changed.
#[derive(Debug)]
enum Refusal {
    /// 400 `{"error_msg": ...}`.
    Bad(String),
    /// 404 `{"message": "Key not found"}`.
    NotFound,
    /// 500 `{"error_msg": ...}`.
    Internal(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Bad(msg) => error(StatusCode::BAD_REQUEST, msg),
            Refusal::NotFound => reply(StatusCode::NOT_FOUND, json!({"message": "Key not found"})),
            Refusal::Internal(msg) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        }
    }
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::Bad(msg.into())
}

/// `{"key", "value"}` with the secrets redacted; from a store with
/// revisions also APISIX's `createdIndex` and `modifiedIndex` (etcd's
/// `create_revision` and `mod_revision`).
fn entry(prefix: &str, kind: Kind, id: &str, value: &Value, revs: Option<Revs>) -> Value {
    let value = match kind {
        Kind::Route => secrets::redact(value),
        Kind::Upstream => value.clone(),
    };
    let mut e = json!({"key": kind.key(prefix, id), "value": value});
    if let Some(r) = revs {
        e["createdIndex"] = r.created.into();
        e["modifiedIndex"] = r.modified.into();
    }
    e
}

// ---------------------------------------------------------------------------
// Access

async fn access(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let settings = &s.inner.settings;
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    let allowed = client.is_some_and(|ip| settings.allow.iter().any(|net| net.contains(&ip)));
    if !allowed {
        match client {
            Some(ip) => tracing::warn!(client = %ip, "Admin API: address not allowed"),
            None => tracing::warn!("Admin API: refused a request without a client address"),
        }
        return error(StatusCode::FORBIDDEN, "IP address not allowed".into());
    }
    if let Err(msg) = browser_check(req.headers(), req.uri(), &settings.hosts) {
        tracing::warn!(client = ?client, "Admin API: {msg}");
        return error(StatusCode::FORBIDDEN, msg);
    }
    if let Some(key) = &settings.api_key {
        // APISIX reads `?api_key=` first, then `X-API-KEY`.
        let from_query = req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "api_key")
                .map(|(_, v)| v.into_owned().into_bytes())
        });
        let given = from_query.or_else(|| {
            req.headers()
                .get("x-api-key")
                .map(|v| v.as_bytes().to_vec())
        });
        let problem = match given {
            None => Some("missing apikey"),
            Some(g) if !secrets::key_matches(key, &g) => Some("wrong apikey"),
            Some(_) => None,
        };
        if let Some(description) = problem {
            tracing::warn!(client = ?client, "Admin API: failed to check token: {description}");
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error_msg": "failed to check token", "description": description}),
            );
        }
    }
    next.run(req).await
}

/// A header value as text for a message: at most 100 characters, quoted
/// and escaped as Rust debug strings are.
fn shown(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(v);
    let cut: String = text.chars().take(100).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`),
/// lower case, without a trailing dot; `None` when it is not one.
fn host_of(value: &str) -> Option<String> {
    let host = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        return Some(inner.to_ascii_lowercase());
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) if is_port(p) => h,
            Some(_) => return None,
            None => value,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the Admin API answers to `Host: host`: an IP address (a DNS
/// rebinding attack needs a name), `localhost`, or a configured name.
fn host_allowed(host: &str, names: &[String]) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || host == "localhost"
        || names.iter().any(|n| n == host)
}

/// Refuses what a web page can make a browser send (issue 14): a `Host`
/// that is not the Admin API's (DNS rebinding: a page on `evil.example`
/// whose name now resolves to 127.0.0.1 reads and writes with `Host:
/// evil.example`), an `Origin` that is not the Admin API's own (CSRF: a
/// "simple" `text/plain` POST needs no preflight), and `Sec-Fetch-Site:
/// cross-site` or `same-site` (a page of another port on this host is
/// same-site). curl and other tools send neither `Origin` nor
/// `Sec-Fetch-Site`.
fn browser_check(
    headers: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
    names: &[String],
) -> Result<(), String> {
    let how = "add the name with --admin-host (SIDECAR_ADMIN_HOST) if it is this Admin API's, \
               or call the Admin API by its IP address";
    let mut own_host = None;
    for v in headers.get_all(header::HOST) {
        let text = v.to_str().ok().map(str::trim);
        match text.and_then(host_of) {
            Some(h) if host_allowed(&h, names) => own_host = text.map(str::to_ascii_lowercase),
            Some(_) => {
                return Err(format!(
                    "Host {} is not allowed: the Admin API answers only to IP addresses, \
                     localhost and the names given with --admin-host; {how}",
                    shown(v.as_bytes())
                ))
            }
            None => return Err(format!("Host {} is not a host name", shown(v.as_bytes()))),
        }
    }
    if let Some(authority) = uri.authority() {
        match host_of(authority.as_str()) {
            Some(h) if host_allowed(&h, names) => {}
            _ => {
                return Err(format!(
                    "Host {} (in the request target) is not allowed; {how}",
                    shown(authority.as_str().as_bytes())
                ))
            }
        }
    }
    for v in headers.get_all("sec-fetch-site") {
        let site = v.as_bytes();
        if site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site") {
            return Err(format!(
                "cross-site request refused (Sec-Fetch-Site: {}): web pages cannot call the \
                 Admin API; call it with curl or another HTTP client",
                shown(site).trim_matches('"')
            ));
        }
    }
    for v in headers.get_all(header::ORIGIN) {
        let own = own_host.as_ref().map(|h| format!("http://{h}"));
        let same = v
            .to_str()
            .ok()
            .is_some_and(|o| own.as_deref() == Some(o.to_ascii_lowercase().as_str()));
        if !same {
            return Err(format!(
                "cross-origin request refused: Origin {} is not the Admin API's own{}: web \
                 pages cannot call the Admin API; call it with curl or another HTTP client",
                shown(v.as_bytes()),
                own.map(|o| format!(" ({o})")).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading requests

fn path_id(kind: Kind, id: IdPath) -> Result<String, Refusal> {
    id.map(|Path(id)| id).map_err(|e| {
        bad(format!(
            "invalid {} id in the URL: {}",
            kind.name(),
            e.body_text()
        ))
    })
}

/// The body as JSON, whatever its `Content-Type`; `None` when empty.
async fn read_json(body: Body) -> Result<Option<Value>, Refusal> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        bad(format!(
            "invalid request body: it could not be read, or it is larger than {MAX_BODY} bytes"
        ))
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad(format!("invalid request body: {e}")))
}

/// A `PUT`/`POST` body: a JSON object without the server's timestamps.
async fn read_object(kind: Kind, body: Body) -> Result<Map<String, Value>, Refusal> {
    let obj = match read_json(body).await? {
        None => return Err(bad("missing configurations")),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(not_an_object(kind)),
    };
    for t in ["create_time", "update_time"] {
        if obj.contains_key(t) {
            return Err(bad(format!(
                "invalid configuration: property \"{t}\" is set by the server \
                 (it cannot be written with PUT or POST)"
            )));
        }
    }
    Ok(obj)
}

fn not_an_object(kind: Kind) -> Refusal {
    bad(format!(
        "invalid configuration: the {} must be a JSON object",
        kind.name()
    ))
}

/// Routes get their generated and kept secrets; upstreams have none.
fn fill_secrets(
    kind: Kind,
    obj: &mut Map<String, Value>,
    stored: Option<&Value>,
) -> Result<(), Refusal> {
    if kind == Kind::Upstream {
        return Ok(());
    }
    secrets::fill(obj, stored).map_err(|e| match e {
        FillError::Invalid(msg) => Refusal::Bad(msg),
        FillError::Random(msg) => Refusal::Internal(msg),
    })
}

/// The ids of the routes whose `upstream_id` is `id`.
fn routes_using(current: &Stored, id: &str) -> Vec<String> {
    current
        .routes
        .iter()
        .filter(|(_, r)| r.get("upstream_id").and_then(id_text).as_deref() == Some(id))
        .map(|(rid, _)| rid.clone())
        .collect()
}

/// Validates the finished object and gives its stored form. A route's
/// A login route (`bearer_only` false) whose redirect URI would come from
/// the request's `Host` (no `redirect_uri`, or a path) must name its
/// hosts: on a host-less route any `Host` reaches it, and the provider
/// would send a user's code to the host an attacker chose. (The filter
/// refuses such a login except on loopback hosts; refused here so that
/// the mistake is seen when the route is written.)
fn login_needs_a_host(spec: &RouteSpec, e: &mut Errors) {
    let Some((_, c)) = &spec.oidc else { return };
    let from_request = c.redirect_uri.as_deref().is_none_or(|u| u.starts_with('/'));
    if !c.bearer_only && spec.hosts.is_empty() && from_request {
        e.push(
            &format!("plugins.{}.redirect_uri", crate::apisix::route::OIDC_PLUGIN),
            "must be an absolute URL on a login route (bearer_only false) without \"hosts\" \
             or \"host\": set one of them, else the redirect URI would be made from any \
             request's Host header",
        );
    }
}

/// `upstream_id` must name a stored upstream; an upstream must still make
/// a valid route of every route that names it.
fn finish(
    kind: Kind,
    id: &str,
    obj: Map<String, Value>,
    current: &Stored,
    nodes: &NodePolicy,
) -> Result<Value, Refusal> {
    // Validated as sent (its `id` must agree with the URL's), stored with
    // the id.
    let sent = Value::Object(obj);
    let mut e = Errors::new();
    match kind {
        Kind::Route => {
            let spec = RouteSpec::parse(id, &sent, &current.upstreams).map_err(Refusal::Bad)?;
            login_needs_a_host(&spec, &mut e);
            if let Some(up) = sent.get("upstream") {
                nodes.check(up, "upstream.", &mut e);
            }
        }
        Kind::Upstream => {
            Upstream::parse_resource(id, &sent).map_err(Refusal::Bad)?;
            nodes.check(&sent, "", &mut e);
        }
    }
    if !e.is_empty() {
        return Err(Refusal::Bad(e.message()));
    }
    let Value::Object(obj) = sent else {
        return Err(not_an_object(kind));
    };
    let v = Value::Object(with_id(obj, id));
    if kind == Kind::Upstream {
        let mut upstreams = current.upstreams.clone();
        upstreams.insert(id.to_string(), v.clone());
        for rid in routes_using(current, id) {
            RouteSpec::parse(&rid, &current.routes[&rid], &upstreams).map_err(|e| {
                bad(format!(
                    "invalid configuration: route [{rid}] uses this upstream and would not be valid: {e}"
                ))
            })?;
        }
    }
    Ok(v)
}

fn stored_create_time(stored: Option<&Value>, now: u64) -> Value {
    stored
        .and_then(|s| s.get("create_time"))
        .filter(|t| t.is_u64())
        .cloned()
        .unwrap_or_else(|| Value::from(now))
}

// ---------------------------------------------------------------------------
// Handlers

async fn list(State(s): State<AdminState>, kind: Kind) -> Response {
    let known = s.known();
    let list: Vec<Value> = kind
        .of(&known.data)
        .iter()
        .map(|(id, v)| entry(&s.inner.prefix, kind, id, v, known.revs_of(kind, id)))
        .collect();
    reply(StatusCode::OK, json!({"total": list.len(), "list": list}))
}

async fn get_one(State(s): State<AdminState>, kind: Kind, id: IdPath) -> Result<Response, Refusal> {
    let id = path_id(kind, id)?;
    let known = s.known();
    match kind.of(&known.data).get(&id) {
        Some(v) => Ok(reply(
            StatusCode::OK,
            entry(&s.inner.prefix, kind, &id, v, known.revs_of(kind, &id)),
        )),
        None => Err(Refusal::NotFound),
    }
}

async fn put_in_body(
    State(s): State<AdminState>,
    kind: Kind,
    body: Body,
) -> Result<Response, Refusal> {
    let obj = read_object(kind, body).await?;
    let id = match obj.get("id") {
        None => {
            return Err(bad(format!(
                "missing {} id: give \"id\" in the body, or PUT /apisix/admin/{}/{{id}}",
                kind.name(),
                kind.plural()
            )))
        }
        Some(v) => id_text(v).ok_or_else(|| {
            bad("invalid configuration: property \"id\" must be a string or an integer")
        })?,
    };
    Ok(put(s, kind, id, obj).await)
}

async fn put_at_id(
    State(s): State<AdminState>,
    kind: Kind,
    id: IdPath,
    body: Body,
) -> Result<Response, Refusal> {
    let id = path_id(kind, id)?;
    let obj = read_object(kind, body).await?;
    Ok(put(s, kind, id, obj).await)
}

async fn put(s: AdminState, kind: Kind, id: String, obj: Map<String, Value>) -> Response {
    let nodes = s.inner.settings.nodes.clone();
    s.commit(move |current, _, now| {
        let current = &current.data;
        let mut obj = obj.clone();
        let id = id.clone();
        let stored = kind.of(current).get(&id);
        fill_secrets(kind, &mut obj, stored)?;
        obj.insert("create_time".into(), stored_create_time(stored, now));
        obj.insert("update_time".into(), Value::from(now));
        let created = stored.is_none();
        let value = finish(kind, &id, obj, current, &nodes)?;
        Ok(Change::Put {
            kind,
            created,
            id,
            value,
        })
    })
    .await
}

async fn post_new(
    State(s): State<AdminState>,
    kind: Kind,
    body: Body,
) -> Result<Response, Refusal> {
    let obj = read_object(kind, body).await?;
    if obj.contains_key("id") {
        return Err(bad(format!(
            "invalid configuration: property \"id\" is generated by POST \
             (to choose it, PUT /apisix/admin/{}/{{id}})",
            kind.plural()
        )));
    }
    let nodes = s.inner.settings.nodes.clone();
    Ok(s.commit(move |current, writer, now| {
        let current = &current.data;
        let mut obj = obj.clone();
        fill_secrets(kind, &mut obj, None)?;
        obj.insert("create_time".into(), Value::from(now));
        obj.insert("update_time".into(), Value::from(now));
        let id = writer.next_id(kind.of(current), now);
        let value = finish(kind, &id, obj, current, &nodes)?;
        Ok(Change::Put {
            kind,
            id,
            value,
            created: true,
        })
    })
    .await)
}

async fn post_at_id(kind: Kind) -> Refusal {
    bad(format!(
        "wrong {0} id, do not need it: POST /apisix/admin/{1} generates the id; \
         to choose it, PUT /apisix/admin/{1}/{{id}}",
        kind.name(),
        kind.plural()
    ))
}

async fn patch_at_id(
    State(s): State<AdminState>,
    kind: Kind,
    id: IdPath,
    body: Body,
) -> Result<Response, Refusal> {
    let id = path_id(kind, id)?;
    let patch =
        match read_json(body).await? {
            Some(Value::Object(p)) => p,
            Some(_) => return Err(bad(
                "invalid configuration: a PATCH body must be a JSON object (a JSON merge patch)",
            )),
            None => return Err(bad("missing new configuration")),
        };
    let nodes = s.inner.settings.nodes.clone();
    Ok(s.commit(move |current, _, now| {
        let current = &current.data;
        let id = id.clone();
        let stored = kind.of(current).get(&id).ok_or(Refusal::NotFound)?;
        let mut merged = stored.clone();
        let sets_update_time = patch.get("update_time").is_some_and(|t| !t.is_null());
        merge_patch(&mut merged, &Value::Object(patch.clone()));
        let Value::Object(mut obj) = merged else {
            return Err(not_an_object(kind));
        };
        fill_secrets(kind, &mut obj, Some(stored))?;
        if !obj.contains_key("create_time") {
            obj.insert("create_time".into(), stored_create_time(Some(stored), now));
        }
        if !sets_update_time {
            obj.insert("update_time".into(), Value::from(now));
        }
        let value = finish(kind, &id, obj, current, &nodes)?;
        Ok(Change::Put {
            kind,
            id,
            value,
            created: false,
        })
    })
    .await)
}

async fn delete_at_id(
    State(s): State<AdminState>,
    kind: Kind,
    id: IdPath,
) -> Result<Response, Refusal> {
    let id = path_id(kind, id)?;
    Ok(s.commit(move |current, _, _| {
        let current = &current.data;
        let id = id.clone();
        if !kind.of(current).contains_key(&id) {
            return Err(Refusal::NotFound);
        }
        if kind == Kind::Upstream {
            let users = routes_using(current, &id);
            if !users.is_empty() {
                // APISIX: "can not delete this upstream, route [1] is still
                // using it now".
                let named: Vec<String> = users.iter().map(|r| format!("[{r}]")).collect();
                let (noun, verb) = if users.len() == 1 {
                    ("route", "is")
                } else {
                    ("routes", "are")
                };
                return Err(bad(format!(
                    "can not delete this upstream, {noun} {} {verb} still using it now",
                    named.join(", ")
                )));
            }
        }
        Ok(Change::Delete { kind, id })
    })
    .await)
}

/// RFC 7386: objects merge recursively, `null` removes, anything else
/// replaces (arrays too).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests;
