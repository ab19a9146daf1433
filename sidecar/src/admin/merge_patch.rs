//! RFC 7386 JSON merge patch (PATCH).

use super::*;

/// RFC 7386: objects merge recursively, `null` removes, anything else
/// replaces (arrays too).
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
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

/// APISIX's sub-path PATCH (`core.table.patch`): `value` replaces what
/// `path` (the URL's segments after the id, `plugins/openid-connect/scope`)
/// names in `target`. Missing objects on the way are created; a segment
/// that is not an object on the way is `invalid sub-path: /<path so
/// far>`. An empty last segment (a trailing `/`) replaces `target` whole,
/// as APISIX does. Arrays are not entered (APISIX would add a string key
/// to them).
pub(super) fn patch_sub_path(
    target: &mut Value,
    path: &[String],
    value: Value,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        *target = value;
        return Ok(());
    };
    let mut cur = &mut *target;
    for (i, seg) in parents.iter().enumerate() {
        let Value::Object(m) = cur else {
            return Err(format!("invalid sub-path: /{}", path[..i].join("/")));
        };
        cur = m
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !cur.is_object() {
            return Err(format!("invalid sub-path: /{}", path[..=i].join("/")));
        }
    }
    let Value::Object(m) = cur else {
        return Err(format!("invalid sub-path: /{}", path.join("/")));
    };
    if last.is_empty() {
        *target = value;
    } else {
        m.insert(last.clone(), value);
    }
    Ok(())
}
