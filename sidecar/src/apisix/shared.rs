//! Services, plugin configs and global rules: the objects routes share,
//! validated as APISIX's `apisix/admin/{services,plugin_config,global_rules}.lua`
//! and `apisix/schema_def.lua` (`service`, `plugin_config`, `global_rule`)
//! do, with this gateway's plugin and upstream rules. How routes take them
//! in is [`crate::apisix::merge`].

use serde_json::Value;

use crate::apisix::merge::named;
use crate::apisix::plugins::{limit_count, limit_req};
use crate::apisix::route::{check_id, id_text, parse_plugins, valid_host_pattern, Errors};
use crate::apisix::upstream::Upstream;
use crate::store::{ResourceKind, Stored};

const SERVICE: &[&str] = &[
    "id",
    "name",
    "desc",
    "labels",
    "plugins",
    "upstream",
    "upstream_id",
    "enable_websocket",
    "hosts",
    "create_time",
    "update_time",
];
const SERVICE_UNSUPPORTED: &[&str] = &["script"];
const PLUGIN_CONFIG: &[&str] = &[
    "id",
    "name",
    "desc",
    "labels",
    "plugins",
    "create_time",
    "update_time",
];
const GLOBAL_RULE: &[&str] = &["id", "plugins", "create_time", "update_time"];

/// Validates a service, plugin config or global rule object whose id is
/// `id`, against the rest of `stored` (an `upstream_id` must name a stored
/// upstream; a global rule must not set a plugin another one sets). The
/// error lists every problem, each naming its attribute. Whether the routes
/// that use it stay valid is checked by the caller.
pub fn check(kind: ResourceKind, id: &str, v: &Value, stored: &Stored) -> Result<(), String> {
    let Some(obj) = v.as_object() else {
        return Err(format!(
            "invalid configuration: the {} must be a JSON object",
            kind.name()
        ));
    };
    let (known, unsupported): (&[&str], &[&str]) = match kind {
        ResourceKind::Service => (SERVICE, SERVICE_UNSUPPORTED),
        ResourceKind::PluginConfig => (PLUGIN_CONFIG, &[]),
        ResourceKind::GlobalRule => (GLOBAL_RULE, &[]),
        _ => return Err(format!("{} objects are not shared objects", kind.name())),
    };
    let mut e = Errors::new();
    for k in obj.keys() {
        if unsupported.contains(&k.as_str()) {
            e.push(k, "is not supported by this gateway");
        } else if !known.contains(&k.as_str()) {
            e.push(k, "is not allowed (additional properties forbidden)");
        }
    }
    check_id(obj, id, &mut e);
    if kind != ResourceKind::Service && !obj.contains_key("plugins") {
        e.push("plugins", "is required");
    }
    parse_plugins(obj.get("plugins"), &mut e);
    // APISIX keys a limit's counters by the object that carries the plugin
    // (`_meta.parent`): a service's, plugin config's or global rule's
    // routes count together. Envoy's buckets are per route.
    for limit in [limit_count::NAME, limit_req::NAME] {
        if obj
            .get("plugins")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key(limit))
        {
            e.push(
                &format!("plugins.{limit}"),
                format!(
                    "is not supported on a {}: APISIX counts the requests of all its routes together, this gateway counts each route on its own (set it on the routes)",
                    kind.name()
                ),
            );
        }
    }
    for field in ["name", "desc"] {
        if obj.get(field).is_some_and(|x| !x.is_string()) {
            e.push(field, "must be a string");
        }
    }
    if let Some(labels) = obj.get("labels") {
        if !labels
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
        {
            e.push("labels", "must be an object of strings");
        }
    }
    for t in ["create_time", "update_time"] {
        if obj.get(t).is_some_and(|x| x.as_u64().is_none()) {
            e.push(t, "must be a unix time in seconds");
        }
    }
    match kind {
        ResourceKind::Service => check_service(v, stored, &mut e),
        ResourceKind::GlobalRule => one_rule_per_plugin(id, v, stored, &mut e),
        _ => {}
    }
    if e.is_empty() {
        Ok(())
    } else {
        Err(e.message())
    }
}

fn check_service(v: &Value, stored: &Stored, e: &mut Errors) {
    match (v.get("upstream"), v.get("upstream_id")) {
        (Some(_), Some(_)) => e.push("upstream", "and \"upstream_id\" cannot both be set"),
        (Some(u), None) => {
            Upstream::parse(u, "upstream.", e);
        }
        (None, Some(uid)) => {
            if let Some(u) = named(uid, "upstream_id", &stored.upstreams, e) {
                if let Err(msg) = Upstream::parse_resource(&id_text(uid).unwrap_or_default(), u) {
                    e.push(
                        "upstream_id",
                        format!("names an upstream that does not validate: {msg}"),
                    );
                }
            }
        }
        (None, None) => {}
    }
    if let Some(h) = v.get("hosts") {
        let list: Option<Vec<&str>> = h
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect());
        match list {
            Some(list) if !list.is_empty() => {
                for h in list {
                    if !valid_host_pattern(&h.to_ascii_lowercase()) {
                        e.push(
                            "hosts",
                            format!("{h:?} is not a host name (a leading \"*.\" is allowed)"),
                        );
                    }
                }
            }
            _ => e.push("hosts", "must be a non-empty array of strings"),
        }
    }
    if v.get("enable_websocket").is_some_and(|w| !w.is_boolean()) {
        e.push("enable_websocket", "must be a boolean");
    }
}

/// A plugin set by two global rules would run twice in APISIX; here a
/// route runs one config per plugin.
fn one_rule_per_plugin(id: &str, v: &Value, stored: &Stored, e: &mut Errors) {
    let Some(Value::Object(plugins)) = v.get("plugins") else {
        return;
    };
    for name in plugins.keys() {
        let other = stored
            .global_rules
            .iter()
            .find(|(gid, g)| *gid != id && g.get("plugins").and_then(|p| p.get(name)).is_some());
        if let Some((gid, _)) = other {
            e.push(
                &format!("plugins.{name}"),
                format!(
                    "is already set by global rule [{gid}]: this gateway runs one {name} \
                     config per route (change that rule instead)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oidc() -> Value {
        json!({"client_id": "c", "client_secret": "s",
               "discovery": "http://idp/.well-known/openid-configuration",
               "bearer_only": true})
    }

    fn stored() -> Stored {
        let mut s = Stored::default();
        s.upstreams
            .insert("u".into(), json!({"id": "u", "nodes": {"10.0.0.1:80": 1}}));
        s.global_rules.insert(
            "g".into(),
            json!({"id": "g", "plugins": {"openid-connect": oidc()}}),
        );
        s
    }

    #[test]
    fn a_service_as_apisix_takes_it() {
        let s = json!({"id": "s", "name": "svc", "plugins": {"openid-connect": oidc()},
                       "upstream_id": "u", "hosts": ["a.example", "*.b.example"],
                       "enable_websocket": true, "labels": {"team": "x"}});
        check(ResourceKind::Service, "s", &s, &stored()).unwrap();
        // Nothing but an id is fine too.
        check(ResourceKind::Service, "s", &json!({}), &stored()).unwrap();
        check(
            ResourceKind::Service,
            "s",
            &json!({"upstream": {"nodes": {"10.0.0.1:80": 1}}}),
            &stored(),
        )
        .unwrap();
    }

    #[test]
    fn limits_on_shared_objects_are_refused_as_apisix_counts_their_routes_together() {
        let plugins = json!({"limit-count": {"count": 1, "time_window": 30},
                             "limit-req": {"rate": 1, "burst": 0, "key": "remote_addr"},
                             "prometheus": {}});
        for kind in [
            ResourceKind::Service,
            ResourceKind::PluginConfig,
            ResourceKind::GlobalRule,
        ] {
            let e = check(kind, "s", &json!({"plugins": plugins}), &stored()).unwrap_err();
            for limit in ["limit-count", "limit-req"] {
                let want = format!(
                    "property \"plugins.{limit}\" is not supported on a {}: APISIX counts",
                    kind.name()
                );
                assert!(e.contains(&want), "missing {want:?} in {e}");
            }
            assert!(!e.contains("prometheus"), "{e}");
        }
    }

    #[test]
    fn service_errors_name_the_attribute() {
        let s = json!({"id": "t", "script": "x", "colour": 1, "upstream_id": "nope",
                       "upstream": {"nodes": {}}, "hosts": [], "enable_websocket": "yes",
                       "plugins": {"key-auth": {}, "openid-connect": {"client_id": 5}}});
        let e = check(ResourceKind::Service, "s", &s, &stored()).unwrap_err();
        for want in [
            "property \"script\" is not supported",
            "property \"colour\" is not allowed",
            "property \"id\" does not match",
            "property \"upstream\" and \"upstream_id\" cannot both be set",
            "property \"hosts\" must be a non-empty array",
            "property \"enable_websocket\" must be a boolean",
            "property \"plugins.key-auth\" is not a plugin",
            "property \"plugins.openid-connect.client_id\" must be a string",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
        let e = check(
            ResourceKind::Service,
            "s",
            &json!({"upstream_id": "nope"}),
            &stored(),
        )
        .unwrap_err();
        assert!(
            e.contains("failed to fetch upstream info by upstream id [nope], response code: 404"),
            "{e}"
        );
    }

    #[test]
    fn plugin_configs_and_global_rules_need_plugins() {
        for kind in [ResourceKind::PluginConfig, ResourceKind::GlobalRule] {
            let e = check(kind, "x", &json!({"id": "x"}), &Stored::default()).unwrap_err();
            assert!(e.contains("property \"plugins\" is required"), "{e}");
            check(kind, "x", &json!({"plugins": {}}), &Stored::default()).unwrap();
        }
        let e = check(
            ResourceKind::GlobalRule,
            "x",
            &json!({"plugins": {}, "name": "n"}),
            &Stored::default(),
        )
        .unwrap_err();
        assert!(e.contains("property \"name\" is not allowed"), "{e}");
        check(
            ResourceKind::PluginConfig,
            "x",
            &json!({"plugins": {"openid-connect": oidc()}, "desc": "d"}),
            &Stored::default(),
        )
        .unwrap();
    }

    #[test]
    fn one_global_rule_per_plugin() {
        let r = json!({"plugins": {"openid-connect": oidc()}});
        let e = check(ResourceKind::GlobalRule, "h", &r, &stored()).unwrap_err();
        assert!(e.contains("already set by global rule [g]"), "{e}");
        // Rewriting the same rule is fine.
        check(ResourceKind::GlobalRule, "g", &r, &stored()).unwrap();
    }
}
