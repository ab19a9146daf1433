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

/// Routes get their generated and kept secrets; upstreams have none.
pub(super) fn fill_secrets(
    kind: ResourceKind,
    obj: &mut Map<String, Value>,
    stored: Option<&Value>,
) -> Result<(), Refusal> {
    if kind == ResourceKind::Upstream {
        return Ok(());
    }
    secrets::fill(obj, stored).map_err(|e| match e {
        FillError::Invalid(msg) => Refusal::Bad(msg),
        FillError::Random(msg) => Refusal::Internal(msg),
    })
}

/// The ids of the routes whose `upstream_id` is `id`.
pub(super) fn routes_using(current: &Stored, id: &str) -> Vec<String> {
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

/// `upstream_id` must name a stored upstream; an upstream must still make
/// a valid route of every route that names it.
pub(super) fn finish(
    kind: ResourceKind,
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
        ResourceKind::Route => {
            let spec = RouteSpec::parse(id, &sent, &current.upstreams).map_err(Refusal::Bad)?;
            login_needs_a_host(&spec, &mut e);
            // Session cookies one route's filter removes, tested by another.
            let others: Vec<RouteSpec> = current
                .routes
                .iter()
                .filter_map(|(rid, v)| RouteSpec::parse(rid, v, &current.upstreams).ok())
                .collect();
            for why in crate::apisix::vars::session_cookie_clashes(&spec, others.iter()) {
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
    }
    if !e.is_empty() {
        return Err(Refusal::Bad(e.message()));
    }
    let Value::Object(obj) = sent else {
        return Err(not_an_object(kind));
    };
    let v = Value::Object(with_id(obj, id));
    if kind == ResourceKind::Upstream {
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

pub(super) fn stored_create_time(stored: Option<&Value>, now: u64) -> Value {
    stored
        .and_then(|s| s.get("create_time"))
        .filter(|t| t.is_u64())
        .cloned()
        .unwrap_or_else(|| Value::from(now))
}
