//! The route table: every stored route validated once, with its upstream
//! resolved and its plugin config parsed (secrets as `Secret`s). The Admin
//! API builds one per published revision; the translation to Envoy, the
//! discovery of provider endpoints and the xDS server read it instead of
//! parsing the stored JSON again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use oidc_core::config::PluginConfig;

use crate::apisix::merge;
use crate::apisix::route::RouteSpec;
use crate::apisix::ssl::SslSpec;
use crate::apisix::upstream::Upstream;
use crate::store::Stored;

/// The route table as the Admin API publishes it (cheap to share).
pub type Published = Arc<RouteTable>;

/// The validated form of one stored route and upstream set.
#[derive(Clone, Default)]
pub struct RouteTable {
    /// What it was built from (compared to tell whether a set changed).
    stored: Stored,
    /// The routes that validate, by id, enabled or not (shared with the
    /// next table when they have not changed: [`RouteTable::update`]; a
    /// persistent map, so the next table costs what changed).
    routes: imbl::OrdMap<String, Arc<RouteSpec>>,
    /// Those of `routes` whose `vars` test a cookie (checked against the
    /// session cookies the others' filters remove).
    testers: imbl::OrdMap<String, Arc<RouteSpec>>,
    /// Stored routes that do not validate, with the reason. The Admin API
    /// refuses such routes, but an etcd written by something else (or
    /// stored before a rule was added) can still hold one: it is left out.
    invalid: Vec<(String, String)>,
    /// Stored upstreams that do not validate, with the reason (the routes
    /// that name one are in `invalid` too).
    invalid_upstreams: Vec<(String, String)>,
    /// The secret values of the plugin configs, longest first, each also as
    /// it appears inside JSON text, and the ssls' private keys: what NACK
    /// messages are masked with.
    secrets: Arc<Vec<String>>,
    /// How many of `routes` have each secret value (of `secrets`): kept up
    /// to date per changed route, so `secrets` is made again only when a
    /// value comes or goes.
    route_secrets: imbl::OrdMap<String, usize>,
    /// The discovery URLs of `routes`' plugin configs: how many configs
    /// name each, and how many of those verify its certificate (kept per
    /// changed route, as `route_secrets`).
    discovery: imbl::OrdMap<String, (usize, usize)>,
    /// The private keys of the valid ssls (in `secrets` too).
    ssl_secrets: Vec<String>,
    /// Login routes whose session cookies overwrite each other
    /// ([`session_clashes`]).
    warnings: Vec<String>,
    /// The ssl objects that validate, in id order, enabled or not.
    ssls: Vec<SslSpec>,
    /// Stored ssl objects that do not validate, with the reason.
    invalid_ssls: Vec<(String, String)>,
}

/// Counts only: the table holds the secret values it masks NACKs with (and
/// the stored objects, secrets in them), which must not reach a log.
impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes.len())
            .field("invalid", &self.invalid)
            .field("invalid_upstreams", &self.invalid_upstreams)
            .field("secrets", &format_args!("{} redacted", self.secrets.len()))
            .field("ssls", &self.ssls.len())
            .field("invalid_ssls", &self.invalid_ssls)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl RouteTable {
    /// Validates every route of `stored` as it runs: its plugin config,
    /// service and the global rules merged in ([`merge::effective`]), its
    /// upstream resolved.
    pub fn build(stored: Stored) -> RouteTable {
        let mut routes = imbl::OrdMap::new();
        let mut testers = imbl::OrdMap::new();
        let mut invalid = Vec::new();
        let mut route_secrets = imbl::OrdMap::new();
        let mut discovery = imbl::OrdMap::new();
        for (id, v) in &stored.routes {
            match parse_route(id, v, &stored) {
                Ok(spec) => {
                    let spec = Arc::new(spec);
                    count_secrets(&mut route_secrets, &spec, true);
                    count_discovery(&mut discovery, &spec, true);
                    if tests_cookies(&spec) {
                        testers.insert(id.clone(), spec.clone());
                    }
                    routes.insert(id.clone(), spec);
                }
                Err(e) => invalid.push((id.clone(), e)),
            }
        }
        let invalid_upstreams = stored
            .upstreams
            .iter()
            .filter_map(|(id, v)| {
                Upstream::parse_resource(id, v)
                    .err()
                    .map(|e| (id.clone(), e))
            })
            .collect();
        let mut table = RouteTable {
            stored,
            routes,
            testers,
            invalid,
            invalid_upstreams,
            route_secrets,
            discovery,
            ..RouteTable::default()
        };
        let ssls = table.stored.ssls.clone();
        table.load_ssls(&ssls);
        table.finish(true, None);
        table
    }

    /// [`RouteTable::build`] for `stored`, the next set after this table's:
    /// when the upstreams, services, plugin configs and global rules are
    /// the same, only the routes whose stored JSON changed (found by
    /// comparing the two persistent maps, which skips what they share) and
    /// the routes left out before are validated again; the others'
    /// `Arc<RouteSpec>` are shared with this table. So a write that changes
    /// one route validates one route, whatever the route count.
    pub fn update(&self, stored: Stored) -> RouteTable {
        let old = &self.stored;
        if old.upstreams != stored.upstreams
            || old.services != stored.services
            || old.plugin_configs != stored.plugin_configs
            || old.global_rules != stored.global_rules
        {
            return RouteTable::build(stored);
        }
        let mut ids: BTreeSet<String> = old
            .routes
            .diff(&stored.routes)
            .map(|d| match d {
                imbl::ordmap::DiffItem::Add(k, _)
                | imbl::ordmap::DiffItem::Remove(k, _)
                | imbl::ordmap::DiffItem::Update { new: (k, _), .. } => k.clone(),
            })
            .collect();
        // Routes left out are validated again: why one was left out may
        // depend on other routes.
        ids.extend(
            self.invalid
                .iter()
                .filter(|(id, _)| stored.routes.contains_key(id))
                .map(|(id, _)| id.clone()),
        );
        let mut route_secrets = self.route_secrets.clone();
        let mut discovery = self.discovery.clone();
        let mut logins_changed = false;
        let mut secrets_changed = false;
        let mut routes = self.routes.clone();
        let mut testers = self.testers.clone();
        let mut invalid = Vec::new();
        for id in &ids {
            if let Some(old) = routes.remove(id) {
                secrets_changed |= count_secrets(&mut route_secrets, &old, false);
                count_discovery(&mut discovery, &old, false);
                logins_changed |= is_login(&old);
                testers.remove(id);
            }
            let Some(v) = stored.routes.get(id) else {
                continue;
            };
            match parse_route(id, v, &stored) {
                Ok(spec) => {
                    let spec = Arc::new(spec);
                    secrets_changed |= count_secrets(&mut route_secrets, &spec, true);
                    count_discovery(&mut discovery, &spec, true);
                    logins_changed |= is_login(&spec);
                    if tests_cookies(&spec) {
                        testers.insert(id.clone(), spec.clone());
                    }
                    routes.insert(id.clone(), spec);
                }
                Err(e) => invalid.push((id.clone(), e)),
            }
        }
        let mut table = RouteTable {
            routes,
            testers,
            invalid,
            invalid_upstreams: self.invalid_upstreams.clone(),
            route_secrets,
            discovery,
            warnings: self.warnings.clone(),
            ..RouteTable::default()
        };
        if old.ssls == stored.ssls {
            table.ssls = self.ssls.clone();
            table.invalid_ssls = self.invalid_ssls.clone();
            table.ssl_secrets = self.ssl_secrets.clone();
        } else {
            table.load_ssls(&stored.ssls);
        }
        table.stored = stored;
        let same_secrets = !secrets_changed && table.ssl_secrets == self.ssl_secrets;
        table.finish(logins_changed, same_secrets.then_some(&self.secrets));
        table
    }

    /// What does not depend on one route alone: the routes left out for
    /// testing another route's session cookie, the secrets (`secrets`:
    /// the list when the values are those of the table before) and (when
    /// `logins` may have changed) the warnings.
    fn finish(&mut self, logins: bool, secrets: Option<&Arc<Vec<String>>>) {
        // Written by something other than the Admin API: a route testing a
        // session cookie some route's filter removes, or the Authorization
        // one sets, is left out.
        // Only routes that test a cookie or Authorization are checked against the
        // others (else this is routes², at every write).
        let routes = &self.routes;
        let clashing: Vec<(String, String)> = self
            .testers
            .values()
            .filter_map(|r| {
                let why =
                    crate::apisix::vars::tested_session_cookies(r, routes.values().map(|r| &**r));
                (!why.is_empty()).then(|| {
                    let msg = why
                        .iter()
                        .map(|w| format!("property \"vars\" {w}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    (r.id.clone(), format!("invalid configuration: {msg}"))
                })
            })
            .collect();
        let mut secrets = secrets;
        let mut logins = logins;
        if !clashing.is_empty() {
            let route_secrets = &mut self.route_secrets;
            let discovery = &mut self.discovery;
            let mut changed = false;
            for (id, _) in &clashing {
                self.testers.remove(id);
                if let Some(r) = self.routes.remove(id) {
                    count_discovery(discovery, &r, false);
                    changed |= count_secrets(route_secrets, &r, false);
                }
            }
            self.invalid.extend(clashing);
            logins = true;
            if changed {
                secrets = None;
            }
        }
        if let Some(same) = secrets {
            self.secrets = same.clone();
        } else {
            self.make_secrets();
        }
        if logins {
            let routes: Vec<Arc<RouteSpec>> = self.routes.values().cloned().collect();
            self.warnings = session_clashes(&routes);
        }
    }

    /// The secrets list from the routes' and the ssls' values.
    fn make_secrets(&mut self) {
        let mut secrets: Vec<String> = self
            .route_secrets
            .keys()
            .chain(self.ssl_secrets.iter())
            .cloned()
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        self.secrets = Arc::new(secrets);
    }

    /// Validates these ssl objects (id → object) into the table, in place
    /// of its own (a table made by hand, for tests); their private keys
    /// join the secrets to mask.
    pub fn set_ssls(&mut self, ssls: &crate::store::Objects) {
        self.load_ssls(ssls);
        self.make_secrets();
    }

    /// Validates the stored ssl objects (id → object) into the table; their
    /// private keys are secrets to mask.
    fn load_ssls(&mut self, ssls: &crate::store::Objects) {
        self.ssls.clear();
        self.invalid_ssls.clear();
        self.ssl_secrets.clear();
        for (id, v) in ssls {
            match SslSpec::parse(id, v) {
                Ok(spec) => self.ssls.push(spec),
                Err(e) => self.invalid_ssls.push((id.clone(), e)),
            }
        }
        for key in self.ssls.iter().flat_map(|s| s.keys()) {
            self.ssl_secrets.push(key.to_string());
            if let Ok(quoted) = serde_json::to_string(key) {
                self.ssl_secrets.push(quoted.trim_matches('"').to_string());
            }
        }
    }

    /// The enabled ssl objects, in id order.
    pub fn enabled_ssls(&self) -> impl Iterator<Item = &SslSpec> {
        self.ssls.iter().filter(|s| s.enabled)
    }

    /// The stored ssl objects left out, with the reason.
    pub fn invalid_ssls(&self) -> &[(String, String)] {
        &self.invalid_ssls
    }

    /// The stored set this table was built from.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// The routes that validate and whose `vars` test a cookie or
    /// `Authorization`, in id order.
    pub fn cookie_testers(&self) -> impl Iterator<Item = &RouteSpec> {
        self.testers.values().map(|r| &**r)
    }

    /// The routes that validate, enabled or not, in id order.
    pub fn all(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.values().map(|r| &**r)
    }

    /// The enabled routes, in id order, shared (an unchanged route is the
    /// same `Arc` in the next table).
    pub fn enabled_shared(&self) -> impl Iterator<Item = &Arc<RouteSpec>> {
        self.routes.values().filter(|r| r.enabled)
    }

    /// The enabled routes, in id order.
    pub fn enabled(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.values().map(|r| &**r).filter(|r| r.enabled)
    }

    /// The stored routes left out, with the reason.
    pub fn invalid(&self) -> &[(String, String)] {
        &self.invalid
    }

    /// The stored upstreams that do not validate, with the reason.
    pub fn invalid_upstreams(&self) -> &[(String, String)] {
        &self.invalid_upstreams
    }

    /// What this gateway does not serve, for `/status` and the log:
    /// `{"routes": [{"id", "reason"}], "upstreams": [...]}`.
    pub fn not_served(&self) -> serde_json::Value {
        let list = |v: &[(String, String)]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|(id, reason)| serde_json::json!({"id": id, "reason": reason}))
                .collect()
        };
        serde_json::json!({
            "routes": list(&self.invalid),
            "upstreams": list(&self.invalid_upstreams),
        })
    }

    /// The plugin configs of the valid routes (enabled or not).
    pub fn plugin_configs(&self) -> impl Iterator<Item = &PluginConfig> {
        self.routes
            .values()
            .filter_map(|r| r.oidc.as_ref().map(|(_, c)| c))
    }

    /// The discovery URLs of the valid routes' plugin configs (enabled or
    /// not), each with whether any of them verifies its certificate.
    pub fn discovery_urls(&self) -> std::collections::BTreeMap<String, bool> {
        self.discovery
            .iter()
            .map(|(url, (_, verifying))| (url.clone(), *verifying > 0))
            .collect()
    }

    /// The secret values to mask in text quoting the configs.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// [`RouteTable::secrets`], shared.
    pub fn secrets_shared(&self) -> Arc<Vec<String>> {
        self.secrets.clone()
    }

    /// What is valid but likely a mistake: login routes whose session
    /// cookies overwrite each other ([`session_clashes`]).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// A route as it runs: merged with what it names, then validated.
fn parse_route(id: &str, v: &serde_json::Value, stored: &Stored) -> Result<RouteSpec, String> {
    merge::effective(v, stored).and_then(|m| RouteSpec::parse(id, &m, &stored.upstreams))
}

/// A route's secret values (at least 4 characters: shorter ones would
/// mask ordinary text), also as they appear inside JSON text, counted in
/// (`add`) or out of `counts`; whether a value came or went.
fn count_secrets(counts: &mut imbl::OrdMap<String, usize>, route: &RouteSpec, add: bool) -> bool {
    let Some((_, config)) = &route.oidc else {
        return false;
    };
    let mut values = BTreeSet::new();
    for s in config.secrets() {
        let s = s.expose();
        if s.len() < 4 {
            continue;
        }
        values.insert(s.to_string());
        if let Ok(quoted) = serde_json::to_string(s) {
            values.insert(quoted.trim_matches('"').to_string());
        }
    }
    let mut changed = false;
    for v in values {
        if add {
            let n = counts.entry(v).or_insert(0);
            *n += 1;
            changed |= *n == 1;
        } else if let Some(n) = counts.get_mut(&v) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&v);
                changed = true;
            }
        }
    }
    changed
}

/// A route's discovery URL counted in (`add`) or out of `counts`: (configs
/// naming it, those that verify its certificate).
fn count_discovery(
    counts: &mut imbl::OrdMap<String, (usize, usize)>,
    route: &RouteSpec,
    add: bool,
) {
    let Some((_, config)) = &route.oidc else {
        return;
    };
    let verify = usize::from(config.ssl_verify);
    if add {
        let n = counts.entry(config.discovery.clone()).or_insert((0, 0));
        n.0 += 1;
        n.1 += verify;
    } else if let Some(n) = counts.get_mut(&config.discovery) {
        n.0 -= 1;
        n.1 -= verify;
        if n.0 == 0 {
            counts.remove(&config.discovery);
        }
    }
}

/// Whether a route's `vars` test a cookie.
/// Whether a route tests what some route's filter changes (a cookie,
/// `Authorization`): such routes are kept apart, as the only ones a
/// filter's change can re-route to.
fn tests_cookies(r: &RouteSpec) -> bool {
    crate::apisix::vars::tests_filter_changes(&r.vars)
}

/// An enabled login route (what [`session_clashes`] looks at).
fn is_login(r: &RouteSpec) -> bool {
    r.enabled && r.oidc.as_ref().is_some_and(|(_, c)| !c.bearer_only)
}

/// Enabled login routes (`bearer_only` false) with different
/// openid-connect configs (provider, client or session secret) whose
/// session cookies a browser sends to both: the same cookie name, a host
/// both match (a route without hosts matches every host) and cookie paths
/// one of which contains the other. APISIX's defaults (`session`, path
/// `/`) make every such pair clash, in APISIX as here: a login on one
/// route replaces the other's cookie, which the other cannot open, so the
/// browser is sent to log in again. Routes sharing one config (one service
/// or plugin config) share their session and do not clash.
pub fn session_clashes(routes: &[Arc<RouteSpec>]) -> Vec<String> {
    struct Login<'a> {
        id: &'a str,
        hosts: Vec<&'a str>,
        name: &'a str,
        path: &'a str,
        who: (&'a str, &'a str, &'a str),
    }
    let logins: Vec<Login<'_>> = routes
        .iter()
        .filter(|r| r.enabled)
        .filter_map(|r| {
            let (_, c) = r.oidc.as_ref()?;
            let s = c.session.as_ref().filter(|_| !c.bearer_only)?;
            Some(Login {
                id: &r.id,
                hosts: r.hosts.iter().map(String::as_str).collect(),
                name: &s.cookie_name,
                path: &s.cookie_path,
                who: (&c.discovery, &c.client_id, s.secret.expose()),
            })
        })
        .collect();
    let within = |a: &str, b: &str| {
        let a = a.trim_end_matches('/');
        b.trim_end_matches('/') == a || b.starts_with(&format!("{a}/"))
    };
    // Only logins that share a cookie name can clash, and only if their
    // configs differ: grouped first, so the usual case (one config, or one
    // cookie name per config) costs one pass. The list is capped: with
    // thousands of distinct login configs on one cookie, every pair would
    // clash, and `/status` would carry millions of lines.
    let mut by_name: BTreeMap<&str, Vec<&Login<'_>>> = BTreeMap::new();
    for l in &logins {
        by_name.entry(l.name).or_default().push(l);
    }
    let mut out = Vec::new();
    for group in by_name.values() {
        if group.iter().all(|l| l.who == group[0].who) {
            continue;
        }
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a.who == b.who {
                    continue;
                }
                if out.len() == MAX_CLASH_WARNINGS {
                    out.push(format!(
                    "more login routes clash; only the first {MAX_CLASH_WARNINGS} pairs are listed"
                ));
                    return out;
                }
                if !(within(a.path, b.path) || within(b.path, a.path)) {
                    continue;
                }
                let host = match (a.hosts.is_empty(), b.hosts.is_empty()) {
                    (true, true) => Some("any host"),
                    (true, false) => b.hosts.first().copied(),
                    (false, true) => a.hosts.first().copied(),
                    (false, false) => a.hosts.iter().find(|h| b.hosts.contains(h)).copied(),
                };
                if let Some(host) = host {
                    out.push(format!(
                    "routes [{}] and [{}] both log in on {host:?} with the session cookie {:?} \
                     (paths {:?}, {:?}) but different openid-connect configs: a login on one \
                     ends the other's session; give one of them its own session.cookie_name",
                    a.id, b.id, a.name, a.path, b.path
                ));
                }
            }
        }
    }
    out
}

/// The most session-clash warnings `/status` lists.
const MAX_CLASH_WARNINGS: usize = 100;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nth(t: &RouteTable, i: usize) -> &Arc<RouteSpec> {
        t.routes.values().nth(i).unwrap()
    }

    #[test]
    fn upstreams_that_do_not_validate_are_named() {
        let mut stored = Stored::default();
        stored.upstreams.insert(
            "grpc".into(),
            json!({"id": "grpc", "scheme": "grpc", "nodes": {"192.0.2.1:80": 1}}),
        );
        stored.upstreams.insert(
            "ok".into(),
            json!({"id": "ok", "hash_on": "vars", "nodes": {"192.0.2.1:80": 1}}),
        );
        stored.routes.insert(
            "uses-grpc".into(),
            json!({"uri": "/g", "upstream_id": "grpc"}),
        );
        let t = RouteTable::build(stored);
        let n = t.not_served();
        assert_eq!(n["upstreams"][0]["id"], "grpc");
        let reason = n["upstreams"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("\"scheme\" \"grpc\" is not supported"),
            "{reason}"
        );
        assert_eq!(n["upstreams"].as_array().unwrap().len(), 1);
        assert_eq!(n["routes"][0]["id"], "uses-grpc");
    }

    fn route(plugin: serde_json::Value) -> serde_json::Value {
        json!({"uri": "/x", "plugins": {"openid-connect": plugin},
               "upstream": {"nodes": {"192.0.2.1:80": 1}}})
    }

    /// A table's `Debug` (what a `tracing` field or a panic would print)
    /// names no secret value.
    #[test]
    fn debug_shows_no_secret() {
        let mut stored = Stored::default();
        stored.routes.insert(
            "login".into(),
            route(
                json!({"client_id": "c", "client_secret": "client-secret-value",
                         "discovery": "https://idp/.well-known/openid-configuration",
                         "redirect_uri": "https://app/cb",
                         "session": {"secret": "session-secret-value"}}),
            ),
        );
        let t = RouteTable::build(stored);
        assert_eq!(t.routes.len(), 1, "{:?}", t.invalid);
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret-value"), "{shown}");
        assert!(shown.contains("routes: 1"), "{shown}");
    }

    /// Many login routes: one shared config is no clash at all; hundreds
    /// of different configs on one cookie list at most 100 pairs and say
    /// there are more (every pair clashes: the list would be quadratic).
    #[test]
    fn session_clash_warnings_are_grouped_and_capped() {
        let login = |client: &str, secret: &str| {
            route(json!({"client_id": client, "client_secret": "s",
                         "discovery": "https://idp/.well-known/openid-configuration",
                         "redirect_uri": "https://app/cb",
                         "session": {"secret": secret}}))
        };
        let mut shared = Stored::default();
        for i in 0..300 {
            shared
                .routes
                .insert(format!("r{i}"), login("c", "0123456789abcdef"));
        }
        assert!(RouteTable::build(shared).warnings().is_empty());
        let mut distinct = Stored::default();
        for i in 0..300 {
            distinct
                .routes
                .insert(format!("r{i}"), login(&format!("c{i}"), "0123456789abcdef"));
        }
        let w = RouteTable::build(distinct).warnings().to_vec();
        assert_eq!(w.len(), 101);
        assert!(w[100].contains("only the first 100 pairs"), "{}", w[100]);
    }

    #[test]
    fn routes_are_validated_once_and_secrets_come_from_the_typed_config() {
        let mut stored = Stored::default();
        stored.routes.insert(
            "login".into(),
            route(
                json!({"client_id": "c", "client_secret": "client-\"secret\"",
                         "discovery": "https://idp/.well-known/openid-configuration",
                         "redirect_uri": "https://app/cb",
                         "session": {"secret": "0123456789abcdef"}}),
            ),
        );
        let mut off = route(json!({"client_id": "c", "client_secret": "abc",
                                   "discovery": "https://idp/.well-known/openid-configuration",
                                   "bearer_only": true}));
        off["status"] = json!(0);
        stored.routes.insert("off".into(), off);
        stored
            .routes
            .insert("bad".into(), json!({"uri": "no-slash"}));
        let t = RouteTable::build(stored.clone());
        assert_eq!(t.stored(), &stored);
        let enabled: Vec<&str> = t.enabled().map(|r| r.id.as_str()).collect();
        assert_eq!(enabled, ["login"]);
        assert_eq!(t.plugin_configs().count(), 2);
        assert_eq!(t.invalid().len(), 1);
        assert_eq!(t.invalid()[0].0, "bad");
        assert_eq!(t.not_served()["routes"][0]["id"], "bad");
        assert!(t.invalid_upstreams().is_empty());
        // A short secret ("abc") is not masked; one with a quote is, also as
        // JSON text shows it (trimmed of quotes at both ends, as before).
        assert_eq!(
            t.secrets(),
            [
                "0123456789abcdef",
                "client-\\\"secret\\",
                "client-\"secret\""
            ]
        );
    }

    #[test]
    fn an_update_validates_only_what_changed() {
        let plain = |uri: &str| json!({"uri": uri, "upstream_id": "u"});
        let mut stored = Stored::default();
        stored
            .upstreams
            .insert("u".into(), json!({"nodes": {"192.0.2.1:80": 1}}));
        stored.routes.insert("a".into(), plain("/a"));
        stored.routes.insert("b".into(), plain("/b"));
        stored
            .routes
            .insert("bad".into(), json!({"uri": "no-slash"}));
        let t1 = RouteTable::build(stored.clone());

        // One route changed, one added: the others are the same objects.
        stored.routes.insert("b".into(), plain("/b2"));
        stored.routes.insert("c".into(), plain("/c"));
        let t2 = t1.update(stored.clone());
        assert!(Arc::ptr_eq(nth(&t1, 0), nth(&t2, 0)));
        assert_eq!(nth(&t2, 1).id, "b");
        assert!(!Arc::ptr_eq(nth(&t1, 1), nth(&t2, 1)));
        assert_eq!(t2.invalid(), t1.invalid());
        // The same as a table built from scratch.
        let fresh = RouteTable::build(stored.clone());
        let ids = |t: &RouteTable| -> Vec<(String, String)> {
            t.routes
                .values()
                .map(|r| (r.id.clone(), format!("{:?}", r.uris)))
                .collect()
        };
        assert_eq!(ids(&t2), ids(&fresh));
        assert_eq!(t2.stored(), fresh.stored());

        // A deleted route is gone; a changed upstream validates every route
        // again (they resolve it).
        stored.routes.remove("a");
        stored
            .upstreams
            .insert("u".into(), json!({"nodes": {"192.0.2.2:80": 1}}));
        let t3 = t2.update(stored.clone());
        assert_eq!(ids(&t3), ids(&RouteTable::build(stored)));
        assert!(!Arc::ptr_eq(nth(&t2, 1), nth(&t3, 0)));
        assert_eq!(
            format!("{:?}", nth(&t3, 0).upstream),
            format!(
                "{:?}",
                nth(&RouteTable::build(t3.stored().clone()), 0).upstream
            )
        );
    }

    /// A table updated write by write is the table built from scratch:
    /// routes, left-out routes, secrets (counted per route: a value shared
    /// by two routes stays until both are gone) and session-clash warnings.
    #[test]
    fn updates_give_what_a_build_gives() {
        let oidc = |client: &str, secret: &str, login: bool| {
            let mut p = json!({"client_id": client, "client_secret": secret,
                               "discovery": "https://idp/.well-known/openid-configuration",
                               "bearer_only": !login});
            if login {
                p["redirect_uri"] = json!("https://app/cb");
                p["session"] = json!({"secret": format!("{secret}-0123456789abcdef")});
            }
            route(p)
        };
        let same = |a: &RouteTable, b: &RouteTable| {
            let ids = |t: &RouteTable| t.all().map(|r| r.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(a), ids(b));
            assert_eq!(a.invalid(), b.invalid());
            assert_eq!(a.secrets(), b.secrets());
            assert_eq!(a.warnings(), b.warnings());
            assert_eq!(a.discovery_urls(), b.discovery_urls());
            assert_eq!(a.stored(), b.stored());
        };
        let mut stored = Stored::default();
        let mut t = RouteTable::build(stored.clone());
        let steps: Vec<(&str, Option<serde_json::Value>)> = vec![
            ("a", Some(oidc("ca", "secret-a", false))),
            ("b", Some(oidc("cb", "secret-shared", false))),
            ("c", Some(oidc("cc", "secret-shared", false))),
            ("bad", Some(json!({"uri": "no-slash"}))),
            ("l1", Some(oidc("l1", "secret-l1", true))),
            ("l2", Some(oidc("l2", "secret-l2", true))),
            ("b", None),
            ("a", Some(oidc("ca", "secret-a2", false))),
            ("l1", None),
            ("c", None),
            (
                "bad",
                Some(json!({"uri": "/now-good", "upstream": {"nodes": {"192.0.2.1:80": 1}}})),
            ),
        ];
        for (id, v) in steps {
            match v {
                Some(v) => stored.routes.insert(id.into(), v),
                None => stored.routes.remove(id),
            };
            let next = t.update(stored.clone());
            same(&next, &RouteTable::build(stored.clone()));
            t = next;
        }
        assert!(t.secrets().iter().any(|s| s == "secret-a2"));
        assert!(!t.secrets().iter().any(|s| s == "secret-a"));
        assert!(!t.secrets().iter().any(|s| s == "secret-shared"));
    }

    #[test]
    fn a_stored_route_testing_another_routes_session_cookie_is_left_out() {
        let mut stored = Stored::default();
        stored.routes.insert(
            "login".into(),
            route(json!({"client_id": "c", "client_secret": "s",
                         "discovery": "https://idp/.well-known/openid-configuration",
                         "redirect_uri": "https://app/cb",
                         "session": {"secret": "0123456789abcdef", "cookie_name": "sid"}})),
        );
        stored.routes.insert(
            "tester".into(),
            json!({"uri": "/x", "vars": [["cookie_sid", "~~", "."]],
                   "upstream": {"nodes": {"192.0.2.1:80": 1}}}),
        );
        let t = RouteTable::build(stored);
        let enabled: Vec<&str> = t.enabled().map(|r| r.id.as_str()).collect();
        assert_eq!(enabled, ["login"]);
        assert_eq!(t.invalid()[0].0, "tester");
        assert!(t.invalid()[0]
            .1
            .contains("route [login]'s openid-connect filter removes"));
    }
}
