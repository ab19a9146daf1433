//! A route as it runs: what its plugin config (`plugin_config_id`), its
//! service (`service_id`) and the global rules give it, merged into its
//! stored JSON as APISIX merges them, before [`RouteSpec::parse`] reads it.
//! Everything downstream (translation, route metadata, discovery) sees one
//! merged route. Pure: the stored set in, the merged object or every
//! problem out.
//!
//! APISIX 3.x (`apisix/init.lua` `http_access_phase`,
//! `apisix/plugin_config.lua` `merge`, `apisix/plugin.lua`
//! `merge_service_route`, `apisix/http/route.lua`):
//!
//! 1. The plugin config's plugins are added to the route's, the route's
//!    winning: a plugin the route sets itself is the route's config, whole.
//! 2. Then the service: its plugins under the route's (the route's, plugin
//!    config's included, win per plugin name, whole, never field by field);
//!    `upstream` / `upstream_id`: the route's if it has either, else the
//!    service's; `hosts` (what the route matches): the route's `hosts` or
//!    `host`, else the service's `hosts`; `enable_websocket`: the route's
//!    when set, else the service's. The rest (`uri`, `methods`, `priority`,
//!    `timeout`, ...) is the route's.
//! 3. Global rules: their plugins run on every route as well as the
//!    route's own. APISIX runs a plugin set both by a global rule and by the
//!    route twice (the global one first); this gateway runs one
//!    `openid-connect` config per route, so that is refused, naming both
//!    (a request would have to pass both in APISIX; running either alone
//!    would be weaker or different). Two global rules setting one plugin
//!    are refused too.
//!
//! [`RouteSpec::parse`]: crate::apisix::route::RouteSpec::parse

use serde_json::{Map, Value};

use crate::apisix::route::{id_text, Errors};
use crate::store::{Objects, Stored};

/// The route `route` as it runs, with `stored`'s plugin configs, services
/// and global rules merged in; `service_id` and `plugin_config_id` are
/// gone from it. A value that is not an object comes back as it is (the
/// route parser refuses it). The error names every unknown id and every
/// conflict.
pub fn effective(route: &Value, stored: &Stored) -> Result<Value, String> {
    let Some(obj) = route.as_object() else {
        return Ok(route.clone());
    };
    let mut out = obj.clone();
    let mut e = Errors::new();
    if let Some(pc) = out.remove("plugin_config_id") {
        if let Some(pc) = named(&pc, "plugin_config_id", &stored.plugin_configs, &mut e) {
            add_plugins(&mut out, pc.get("plugins"), "plugin_config_id", &mut e);
        }
    }
    if let Some(sid) = out.remove("service_id") {
        if let Some(service) = named(&sid, "service_id", &stored.services, &mut e) {
            merge_service(&mut out, service, &mut e);
        }
    }
    add_global_rules(&mut out, &stored.global_rules, &mut e);
    if e.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(e.message())
    }
}

/// What each id attribute names, for messages: (attribute, noun, APISIX's
/// words after "failed to fetch").
fn words(field: &str) -> (&'static str, &'static str) {
    match field {
        "service_id" => ("service", "service info by service id"),
        "plugin_config_id" => ("plugin config", "plugin config info by plugin config id"),
        _ => ("upstream", "upstream info by upstream id"),
    }
}

/// The object `v` (an id) names in `objects`; an error naming it if none.
pub fn named<'a>(
    v: &Value,
    field: &str,
    objects: &'a Objects,
    e: &mut Errors,
) -> Option<&'a Value> {
    let (noun, fetch) = words(field);
    let Some(id) = id_text(v) else {
        e.push(field, "must be a string or an integer");
        return None;
    };
    let found = objects.get(&id);
    if found.is_none() {
        // APISIX: "failed to fetch service info by service id [1], response
        // code: 404".
        e.push(
            field,
            format!("names no {noun}: failed to fetch {fetch} [{id}], response code: 404"),
        );
    }
    found
}

/// Adds the plugins of `from` that `out` does not set itself. A `plugins`
/// that is not an object (an etcd written by something else: the Admin API
/// refuses it) is an error, never skipped: skipping it would serve the
/// route without the plugins, `openid-connect` among them.
fn add_plugins(out: &mut Map<String, Value>, from: Option<&Value>, field: &str, e: &mut Errors) {
    let from = match from {
        None | Some(Value::Null) => return,
        Some(Value::Object(from)) => from,
        Some(_) => {
            e.push(field, "names an object whose \"plugins\" is not an object");
            return;
        }
    };
    if from.is_empty() {
        return;
    }
    let plugins = out
        .entry("plugins")
        .or_insert_with(|| Value::Object(Map::new()));
    // Not an object: left for the route parser to refuse.
    let Value::Object(plugins) = plugins else {
        return;
    };
    for (name, conf) in from {
        if !plugins.contains_key(name) {
            if shared_limit(name, field, e) {
                continue;
            }
            plugins.insert(name.clone(), conf.clone());
        }
    }
}

/// A limit plugin taken in from a shared object is refused (`field` names
/// it): APISIX counts the requests of all the routes using the object
/// together, Envoy's buckets are per route. (An object written through the
/// Admin API is refused there; this catches one found in etcd.)
fn shared_limit(name: &str, field: &str, e: &mut Errors) -> bool {
    use crate::apisix::plugins::{limit_count, limit_req};
    let limit = name == limit_count::NAME || name == limit_req::NAME;
    if limit {
        e.push(
            &format!("plugins.{name}"),
            format!(
                "is not supported from a shared object ({field}): APISIX counts the requests of \
                 all its routes together, this gateway counts each route on its own"
            ),
        );
    }
    limit
}

fn merge_service(out: &mut Map<String, Value>, service: &Value, e: &mut Errors) {
    add_plugins(out, service.get("plugins"), "service_id", e);
    if !out.contains_key("upstream") && !out.contains_key("upstream_id") {
        for k in ["upstream", "upstream_id"] {
            if let Some(v) = service.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
    }
    if !out.contains_key("hosts") && !out.contains_key("host") {
        if let Some(h) = service.get("hosts") {
            out.insert("hosts".into(), h.clone());
        }
    }
    if !out.contains_key("enable_websocket") {
        if let Some(w) = service.get("enable_websocket") {
            out.insert("enable_websocket".into(), w.clone());
        }
    }
}

fn add_global_rules(out: &mut Map<String, Value>, rules: &Objects, e: &mut Errors) {
    // Which global rule set each plugin (rules in id order).
    let mut set_by: Vec<(&str, &str, &Value)> = Vec::new();
    for (gid, rule) in rules {
        let plugins = match rule.get("plugins") {
            Some(Value::Object(plugins)) => plugins,
            None | Some(Value::Null) => continue,
            // Refused rather than skipped (see `add_plugins`).
            Some(_) => {
                e.push(
                    "plugins",
                    format!("global rule [{gid}] has a \"plugins\" that is not an object"),
                );
                continue;
            }
        };
        for (name, conf) in plugins {
            if let Some((_, first, _)) = set_by.iter().find(|(n, _, _)| n == name) {
                e.push(
                    &format!("plugins.{name}"),
                    format!(
                        "is set by global rules [{first}] and [{gid}]: this gateway runs one \
                         {name} config per route"
                    ),
                );
                continue;
            }
            set_by.push((name, gid, conf));
        }
    }
    if set_by.is_empty() {
        return;
    }
    let plugins = out
        .entry("plugins")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(plugins) = plugins else {
        return;
    };
    for (name, gid, conf) in set_by {
        if plugins.contains_key(name) {
            e.push(
                &format!("plugins.{name}"),
                format!(
                    "is set both on this route (or its service or plugin config) and by global \
                     rule [{gid}]: APISIX would run both, this gateway runs one {name} config \
                     per route; remove one of them"
                ),
            );
        } else if !shared_limit(name, &format!("global rule [{gid}]"), e) {
            plugins.insert(name.to_string(), conf.clone());
        }
    }
}

/// Whether the route object `route` names (`field`: `service_id`,
/// `plugin_config_id`, `upstream_id`) the object `id`.
pub fn names(route: &Value, field: &str, id: &str) -> bool {
    route.get(field).and_then(id_text).as_deref() == Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oidc(client: &str) -> Value {
        json!({"client_id": client, "client_secret": "s", "discovery": "http://idp/.well-known/openid-configuration"})
    }

    fn stored() -> Stored {
        let mut s = Stored::default();
        s.services.insert(
            "s".into(),
            json!({"id": "s", "plugins": {"openid-connect": oidc("svc")},
                   "upstream_id": "u", "hosts": ["svc.example"], "enable_websocket": true}),
        );
        s.services.insert(
            "bare".into(),
            json!({"id": "bare", "upstream": {"nodes": {"10.0.0.1:80": 1}}}),
        );
        s.plugin_configs.insert(
            "pc".into(),
            json!({"id": "pc", "plugins": {"openid-connect": oidc("pc")}}),
        );
        s
    }

    #[test]
    fn a_route_without_references_is_itself() {
        let r = json!({"id": "r", "uri": "/a", "upstream_id": "u"});
        assert_eq!(effective(&r, &stored()).unwrap(), r);
        assert_eq!(effective(&json!(5), &stored()).unwrap(), json!(5));
    }

    /// A shared object whose `plugins` is not an object (written straight
    /// into etcd) refuses the routes using it: skipping it would serve them
    /// without its `openid-connect`.
    #[test]
    fn plugins_that_are_not_an_object_refuse_the_route() {
        let mut s = stored();
        s.services.insert(
            "odd".into(),
            json!({"id": "odd", "plugins": ["openid-connect"]}),
        );
        s.plugin_configs
            .insert("odd".into(), json!({"id": "odd", "plugins": "x"}));
        for r in [
            json!({"id": "r", "uri": "/a", "service_id": "odd"}),
            json!({"id": "r", "uri": "/a", "plugin_config_id": "odd"}),
        ] {
            let e = effective(&r, &s).unwrap_err();
            assert!(e.contains("\"plugins\" is not an object"), "{e}");
        }
        let mut g = stored();
        g.global_rules
            .insert("1".into(), json!({"id": "1", "plugins": 7}));
        let e = effective(&json!({"id": "r", "uri": "/a"}), &g).unwrap_err();
        assert!(e.contains("global rule [1]"), "{e}");
    }

    /// A limit from a shared object (found in etcd: the Admin API refuses
    /// it) refuses the route: APISIX would count all the object's routes
    /// together. The route's own limit, overriding it, is fine.
    #[test]
    fn limits_from_shared_objects_refuse_the_route() {
        let mut s = stored();
        let limit = json!({"count": 1, "time_window": 30});
        s.services.insert(
            "lim".into(),
            json!({"id": "lim", "plugins": {"limit-count": limit}}),
        );
        s.plugin_configs.insert(
            "lim".into(),
            json!({"id": "lim", "plugins": {"limit-req": {"rate": 1, "burst": 0, "key": "remote_addr"}}}),
        );
        for (r, want) in [
            (
                json!({"id": "r", "uri": "/a", "service_id": "lim"}),
                "\"plugins.limit-count\" is not supported from a shared object (service_id)",
            ),
            (
                json!({"id": "r", "uri": "/a", "plugin_config_id": "lim"}),
                "\"plugins.limit-req\" is not supported from a shared object (plugin_config_id)",
            ),
        ] {
            let e = effective(&r, &s).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let own = json!({"id": "r", "uri": "/a", "service_id": "lim",
                         "plugins": {"limit-count": {"count": 2, "time_window": 1}}});
        assert!(effective(&own, &s).is_ok());
        let mut g = stored();
        g.global_rules.insert(
            "1".into(),
            json!({"id": "1", "plugins": {"limit-count": limit}}),
        );
        let e = effective(&json!({"id": "r", "uri": "/a"}), &g).unwrap_err();
        assert!(e.contains("shared object (global rule [1])"), "{e}");
    }

    #[test]
    fn the_service_fills_in_what_the_route_does_not_set() {
        let r = json!({"id": "r", "uri": "/a", "service_id": "s"});
        let m = effective(&r, &stored()).unwrap();
        assert_eq!(
            m,
            json!({"id": "r", "uri": "/a", "plugins": {"openid-connect": oidc("svc")},
                   "upstream_id": "u", "hosts": ["svc.example"], "enable_websocket": true})
        );
    }

    #[test]
    fn the_route_wins_per_plugin_and_per_attribute() {
        let r = json!({"id": "r", "uri": "/a", "service_id": "s",
                       "plugins": {"openid-connect": {"bearer_only": true}},
                       "upstream": {"nodes": {"10.0.0.2:80": 1}},
                       "host": "mine.example", "enable_websocket": false});
        let m = effective(&r, &stored()).unwrap();
        // The route's plugin config whole (not merged field by field with
        // the service's): the route parser refuses it for what it lacks.
        assert_eq!(
            m["plugins"],
            json!({"openid-connect": {"bearer_only": true}})
        );
        assert_eq!(m["upstream"], r["upstream"]);
        assert!(m.get("upstream_id").is_none());
        assert_eq!(m["host"], "mine.example");
        assert!(m.get("hosts").is_none());
        assert_eq!(m["enable_websocket"], false);
        assert!(m.get("service_id").is_none());
        // The route's upstream_id beats the service's inline upstream.
        let r = json!({"id": "r", "uri": "/a", "service_id": "bare", "upstream_id": "u2"});
        let m = effective(&r, &stored()).unwrap();
        assert_eq!(m["upstream_id"], "u2");
        assert!(m.get("upstream").is_none());
        // Empty plugins on the route keep the service's.
        let r = json!({"id": "r", "uri": "/a", "service_id": "s", "plugins": {}});
        let m = effective(&r, &stored()).unwrap();
        assert_eq!(m["plugins"]["openid-connect"], oidc("svc"));
    }

    #[test]
    fn plugin_config_then_service_then_route() {
        // The plugin config's plugin beats the service's; the route's beats
        // both.
        let r = json!({"id": "r", "uri": "/a", "service_id": "s", "plugin_config_id": "pc"});
        let m = effective(&r, &stored()).unwrap();
        assert_eq!(m["plugins"]["openid-connect"], oidc("pc"));
        assert!(m.get("plugin_config_id").is_none());
        let r = json!({"id": "r", "uri": "/a", "plugin_config_id": "pc",
                       "plugins": {"openid-connect": oidc("route")}});
        let m = effective(&r, &stored()).unwrap();
        assert_eq!(m["plugins"]["openid-connect"], oidc("route"));
    }

    #[test]
    fn unknown_ids_are_named() {
        let r = json!({"id": "r", "uri": "/a", "service_id": "nope", "plugin_config_id": 7});
        let e = effective(&r, &stored()).unwrap_err();
        assert!(
            e.contains("property \"service_id\" names no service: failed to fetch service info by service id [nope], response code: 404"),
            "{e}"
        );
        assert!(
            e.contains("property \"plugin_config_id\" names no plugin config: failed to fetch plugin config info by plugin config id [7]"),
            "{e}"
        );
        let r = json!({"id": "r", "uri": "/a", "service_id": ["s"]});
        assert!(effective(&r, &stored())
            .unwrap_err()
            .contains("property \"service_id\" must be a string or an integer"));
    }

    #[test]
    fn global_rules_add_their_plugins_and_refuse_a_second_config() {
        let mut s = stored();
        s.global_rules.insert(
            "g".into(),
            json!({"id": "g", "plugins": {"openid-connect": oidc("global")}}),
        );
        let r = json!({"id": "r", "uri": "/a", "upstream_id": "u"});
        let m = effective(&r, &s).unwrap();
        assert_eq!(m["plugins"]["openid-connect"], oidc("global"));
        // A route with its own (or its service's) config: refused, naming
        // the rule.
        for r in [
            json!({"id": "r", "uri": "/a", "plugins": {"openid-connect": oidc("r")}}),
            json!({"id": "r", "uri": "/a", "service_id": "s"}),
            json!({"id": "r", "uri": "/a", "plugin_config_id": "pc"}),
        ] {
            let e = effective(&r, &s).unwrap_err();
            assert!(e.contains("global rule [g]"), "{e}");
            assert!(e.contains("property \"plugins.openid-connect\""), "{e}");
        }
        // Two rules setting one plugin.
        s.global_rules.insert(
            "h".into(),
            json!({"id": "h", "plugins": {"openid-connect": oidc("other")}}),
        );
        let e = effective(&r, &s).unwrap_err();
        assert!(e.contains("global rules [g] and [h]"), "{e}");
    }

    #[test]
    fn references() {
        let r = json!({"service_id": 5, "plugin_config_id": "pc"});
        assert!(names(&r, "service_id", "5"));
        assert!(names(&r, "plugin_config_id", "pc"));
        assert!(!names(&r, "upstream_id", "pc"));
    }
}
