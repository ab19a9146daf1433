//! Reading requests: ids, JSON bodies, secrets filled in, validation into the stored form.

use super::*;

pub(super) fn path_id(kind: ResourceKind, id: IdPath) -> Result<String, Refusal> {
    id.map(|Path(id)| id).map_err(|e| {
        bad(format!(
            "invalid {} id in the URL: {}",
            kind.name(),
            e.body_text()
        ))
    })
}

/// The body as JSON, whatever its `Content-Type`; `None` when empty.
pub(super) async fn read_json(body: Body) -> Result<Option<Value>, Refusal> {
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
pub(super) async fn read_object(
    kind: ResourceKind,
    body: Body,
) -> Result<Map<String, Value>, Refusal> {
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

pub(super) fn not_an_object(kind: ResourceKind) -> Refusal {
    bad(format!(
        "invalid configuration: the {} must be a JSON object",
        kind.name()
    ))
}

/// Objects with `plugins` (routes, services, plugin configs, global
/// rules) get their generated and kept secrets; ssl objects their kept
/// private keys; upstreams have none.
pub(super) fn fill_secrets(
    kind: ResourceKind,
    obj: &mut Map<String, Value>,
    stored: Option<&Value>,
) -> Result<(), Refusal> {
    match kind {
        ResourceKind::Upstream => return Ok(()),
        ResourceKind::Ssl => {
            ssl::fill(obj, stored);
            return Ok(());
        }
        _ => {}
    }
    secrets::fill(obj, stored).map_err(|e| match e {
        FillError::Invalid(msg) => Refusal::Bad(msg),
        FillError::Random(msg) => Refusal::Internal(msg),
    })
}

/// What still uses the object `id` of `kind`, as APISIX's delete checkers
/// name it: the routes (`upstream_id`, `service_id`, `plugin_config_id`),
/// then the services (`upstream_id`). Empty for routes and global rules.
pub(super) fn users(current: &Stored, kind: ResourceKind, id: &str) -> Vec<(ResourceKind, String)> {
    let field = match kind {
        ResourceKind::Upstream => "upstream_id",
        ResourceKind::Service => "service_id",
        ResourceKind::PluginConfig => "plugin_config_id",
        _ => return Vec::new(),
    };
    let mut out: Vec<(ResourceKind, String)> = current
        .routes
        .iter()
        .filter(|(_, r)| names(r, field, id))
        .map(|(rid, _)| (ResourceKind::Route, rid.clone()))
        .collect();
    if kind == ResourceKind::Upstream {
        out.extend(
            current
                .services
                .iter()
                .filter(|(_, s)| names(s, field, id))
                .map(|(sid, _)| (ResourceKind::Service, sid.clone())),
        );
    }
    out
}

/// APISIX's refusal to delete what is still used: "can not delete this
/// upstream, route \[1\] is still using it now".
pub(super) fn still_used(kind: ResourceKind, users: &[(ResourceKind, String)]) -> Option<Refusal> {
    let (first, _) = users.first()?;
    let named: Vec<String> = users
        .iter()
        .filter(|(k, _)| k == first)
        .map(|(_, id)| format!("[{id}]"))
        .collect();
    let (noun, verb) = match (first, named.len()) {
        (ResourceKind::Service, 1) => ("service", "is"),
        (ResourceKind::Service, _) => ("services", "are"),
        (_, 1) => ("route", "is"),
        _ => ("routes", "are"),
    };
    let what = match kind {
        ResourceKind::Service => "this service directly",
        ResourceKind::PluginConfig => "this plugin config",
        _ => "this upstream",
    };
    Some(bad(format!(
        "can not delete {what}, {noun} {} {verb} still using it now",
        named.join(", ")
    )))
}

/// A route as it runs (its plugin config, service and the global rules
/// merged in, [`merge::effective`]) and validated as a route write is,
/// against `stored`.
pub(super) fn check_route(id: &str, route: &Value, stored: &Stored) -> Result<RouteSpec, String> {
    let merged = merge::effective(route, stored)?;
    let spec = RouteSpec::parse(id, &merged, &stored.upstreams)?;
    let mut e = Errors::new();
    login_needs_a_host(&spec, &mut e);
    if e.is_empty() {
        Ok(spec)
    } else {
        Err(e.message())
    }
}

/// Refuses a change to the object `id` of `kind`, which routes use (`next`
/// is the stored set after it), that would make a route that is valid now
/// invalid, naming the route and why. Only the routes that take the object
/// in are checked (every route for a global rule).
pub(super) fn routes_stay_valid(
    kind: ResourceKind,
    id: &str,
    current: &Stored,
    next: &Stored,
) -> Result<(), Refusal> {
    let takes_in = |r: &Value, set: &Stored| match kind {
        ResourceKind::Upstream => {
            names(r, "upstream_id", id)
                || r.get("service_id")
                    .and_then(id_text)
                    .and_then(|sid| set.services.get(&sid))
                    .is_some_and(|s| names(s, "upstream_id", id))
        }
        ResourceKind::Service => names(r, "service_id", id),
        ResourceKind::PluginConfig => names(r, "plugin_config_id", id),
        _ => true,
    };
    for (rid, r) in &next.routes {
        if !takes_in(r, next) && !takes_in(r, current) {
            continue;
        }
        if let Err(e) = check_route(rid, r, next) {
            if check_route(rid, r, current).is_ok() {
                return Err(bad(format!(
                    "invalid configuration: route [{rid}] uses this {} and would not be valid: {e}",
                    kind.name()
                )));
            }
        }
    }
    Ok(())
}

/// Validates the finished object and gives its stored form. A route's
/// A login route (`bearer_only` false) whose redirect URI would come from
/// the request's `Host` (no `redirect_uri`, or a path) must name its
/// hosts: on a host-less route any `Host` reaches it, and the provider
/// would send a user's code to the host an attacker chose. (The filter
/// refuses such a login except on loopback hosts; refused here so that
/// the mistake is seen when the route is written.)
pub(super) fn login_needs_a_host(spec: &RouteSpec, e: &mut Errors) {
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

/// `upstream_id`, `service_id` and `plugin_config_id` must name stored
/// objects; an upstream, service, plugin config or global rule must still
/// make a valid route of every route that is valid now.
pub(super) fn finish(
    kind: ResourceKind,
    id: &str,
    obj: Map<String, Value>,
    current: &Stored,
    table: &RouteTable,
    nodes: &NodePolicy,
    now: u64,
) -> Result<Value, Refusal> {
    // Validated as sent (its `id` must agree with the URL's), stored with
    // the id.
    let sent = Value::Object(obj);
    let mut e = Errors::new();
    match kind {
        ResourceKind::Route => {
            let merged = merge::effective(&sent, current).map_err(Refusal::Bad)?;
            let spec = RouteSpec::parse(id, &merged, &current.upstreams).map_err(Refusal::Bad)?;
            login_needs_a_host(&spec, &mut e);
            // Session cookies one route's filter removes, or the
            // Authorization it sets, tested by another (the others as
            // validated in the table of `current`). A route that tests
            // neither can only clash with the routes that do.
            let others: Box<dyn Iterator<Item = &RouteSpec>> =
                if crate::apisix::vars::tests_filter_changes(&spec.vars) {
                    Box::new(table.all())
                } else {
                    Box::new(table.cookie_testers())
                };
            for why in crate::apisix::vars::session_cookie_clashes(&spec, others) {
                e.push("vars", why);
            }
            if let Some(up) = sent.get("upstream") {
                nodes.check(up, "upstream.", &mut e);
            }
        }
        ResourceKind::Upstream => {
            Upstream::parse_resource(id, &sent).map_err(Refusal::Bad)?;
            nodes.check(&sent, "", &mut e);
        }
        ResourceKind::Service | ResourceKind::PluginConfig | ResourceKind::GlobalRule => {
            shared::check(kind, id, &sent, current).map_err(Refusal::Bad)?;
            if let Some(up) = sent.get("upstream") {
                nodes.check(up, "upstream.", &mut e);
            }
        }
        ResourceKind::Ssl => ssl_checks(id, &sent, current.ssls.get(id), now)?,
    }
    if !e.is_empty() {
        return Err(Refusal::Bad(e.message()));
    }
    let Value::Object(obj) = sent else {
        return Err(not_an_object(kind));
    };
    let v = Value::Object(with_id(obj, id));
    // Routes do not depend on ssl objects.
    if !matches!(kind, ResourceKind::Route | ResourceKind::Ssl) {
        let mut next = current.clone();
        kind.of_mut(&mut next).insert(id.to_string(), v.clone());
        routes_stay_valid(kind, id, current, &next)?;
    }
    Ok(v)
}

pub(super) fn stored_create_time(stored: Option<&Value>, now: u64) -> Value {
    stored
        .and_then(|s| s.get("create_time"))
        .filter(|t| t.is_u64())
        .cloned()
        .unwrap_or_else(|| Value::from(now))
}

/// An ssl object: valid ([`SslSpec::parse`]), and no certificate new to
/// this ssl has expired at `now` (one kept from what is stored is not
/// checked again, so a PATCH of its labels still works).
fn ssl_checks(id: &str, sent: &Value, stored: Option<&Value>, now: u64) -> Result<(), Refusal> {
    let spec = SslSpec::parse(id, sent).map_err(Refusal::Bad)?;
    let stored = stored.and_then(|v| SslSpec::parse(id, v).ok());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    spec.check_new(now, stored.as_ref()).map_err(Refusal::Bad)
}
