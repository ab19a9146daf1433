//! Who may call the Admin API: allow-list, Host, browser checks, admin key.

use super::*;

pub(super) async fn access(State(s): State<AdminState>, req: Request, next: Next) -> Response {
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
pub(super) fn shown(v: &[u8]) -> String {
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
pub(super) fn host_of(value: &str) -> Option<String> {
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

pub(super) fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the Admin API answers to `Host: host`: an IP address (a DNS
/// rebinding attack needs a name), `localhost`, or a configured name.
pub(super) fn host_allowed(host: &str, names: &[String]) -> bool {
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
pub(super) fn browser_check(
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
