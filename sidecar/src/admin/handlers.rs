//! The handlers of the calls on routes and upstreams.

use super::*;

/// `GET /apisix/admin/<kind>` as APISIX 3.x answers it (`v3_adapter.lua`):
/// the filters `name` (a regex searched in `name`), `label` (a key of
/// `labels`) and `uri` (a regex searched in `uri` or any of `uris`) keep
/// the objects matching all of those given; `total` counts them; then, when
/// both `page` and `page_size` are given (`page_size` 10 to 500, else 400;
/// `page` below 1 is 1), one page of them, oldest first (`createdIndex`,
/// here also `create_time`, then id).
pub(super) async fn list(
    State(s): State<AdminState>,
    kind: ResourceKind,
    uri: axum::http::Uri,
) -> Result<Response, Refusal> {
    let query = ListQuery::parse(uri.query().unwrap_or(""))?;
    let known = s.known();
    let mut items: Vec<(&String, &Value)> = kind
        .of(&known.data)
        .iter()
        .filter(|(_, v)| query.keeps(v))
        .collect();
    let total = items.len();
    if let Some((page, size)) = query.page {
        // Stable: equal keys stay in id order.
        items.sort_by_key(|(id, v)| {
            (
                known.revs_of(kind, id).map(|r| r.created),
                v.get("create_time").and_then(Value::as_u64),
            )
        });
        let from = usize::try_from((page - 1).saturating_mul(size)).unwrap_or(usize::MAX);
        items = items.into_iter().skip(from).take(size as usize).collect();
    }
    let list: Vec<Value> = items
        .into_iter()
        .map(|(id, v)| entry(&s.inner.prefix, kind, id, v, known.revs_of(kind, id)))
        .collect();
    Ok(reply(StatusCode::OK, json!({"total": total, "list": list})))
}

/// The query of a list call.
#[derive(Debug, Default)]
pub(super) struct ListQuery {
    name: Option<regex::Regex>,
    label: Option<String>,
    uri: Option<regex::Regex>,
    /// Page (from 1) and page size.
    page: Option<(u64, u64)>,
    /// A filter whose regex does not compile matches nothing (as APISIX's
    /// `ngx.re.find` failing).
    nothing: bool,
}

/// APISIX's bounds of `page_size`.
pub(super) const PAGE_SIZES: std::ops::RangeInclusive<u64> = 10..=500;

impl ListQuery {
    pub(super) fn parse(query: &str) -> Result<ListQuery, Refusal> {
        let mut q = ListQuery::default();
        let (mut page, mut size) = (None, None);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let regex = |v: &str| regex::RegexBuilder::new(v).size_limit(1 << 20).build().ok();
            match &*k {
                "name" => {
                    q.name = regex(&v);
                    q.nothing |= q.name.is_none();
                }
                "uri" => {
                    q.uri = regex(&v);
                    q.nothing |= q.uri.is_none();
                }
                "label" => q.label = Some(v.into_owned()),
                // Not a number: as if not given (APISIX's `tonumber`).
                "page" => page = v.trim().parse::<i64>().ok(),
                "page_size" => size = v.trim().parse::<i64>().ok(),
                _ => {}
            }
        }
        if let (Some(page), Some(size)) = (page, size) {
            let size = u64::try_from(size)
                .ok()
                .filter(|s| PAGE_SIZES.contains(s))
                .ok_or_else(|| bad("page_size must be between 10 and 500"))?;
            q.page = Some((u64::try_from(page).unwrap_or(0).max(1), size));
        }
        Ok(q)
    }

    fn keeps(&self, v: &Value) -> bool {
        if self.nothing {
            return false;
        }
        let text = |field: &str| v.get(field).and_then(Value::as_str);
        if let Some(re) = &self.name {
            if !text("name").is_some_and(|n| re.is_match(n)) {
                return false;
            }
        }
        if let Some(label) = &self.label {
            let labels = v.get("labels").and_then(Value::as_object);
            if !labels.is_some_and(|l| l.contains_key(label)) {
                return false;
            }
        }
        if let Some(re) = &self.uri {
            let uris = v.get("uris").and_then(Value::as_array);
            let any = text("uri").is_some_and(|u| re.is_match(u))
                || uris.is_some_and(|l| l.iter().filter_map(Value::as_str).any(|u| re.is_match(u)));
            if !any {
                return false;
            }
        }
        true
    }
}

pub(super) async fn get_one(
    State(s): State<AdminState>,
    kind: ResourceKind,
    id: IdPath,
) -> Result<Response, Refusal> {
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

pub(super) async fn put_in_body(
    State(s): State<AdminState>,
    kind: ResourceKind,
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

pub(super) async fn put_at_id(
    State(s): State<AdminState>,
    kind: ResourceKind,
    id: IdPath,
    body: Body,
) -> Result<Response, Refusal> {
    let id = path_id(kind, id)?;
    let obj = read_object(kind, body).await?;
    Ok(put(s, kind, id, obj).await)
}

pub(super) async fn put(
    s: AdminState,
    kind: ResourceKind,
    id: String,
    obj: Map<String, Value>,
) -> Response {
    let nodes = s.inner.settings.nodes.clone();
    s.answer(
        s.commit(move |current, table, _, now| {
            let current = &current.data;
            let mut obj = obj.clone();
            let id = id.clone();
            let stored = kind.of(current).get(&id);
            fill_secrets(kind, &mut obj, stored)?;
            obj.insert("create_time".into(), stored_create_time(stored, now));
            obj.insert("update_time".into(), Value::from(now));
            let created = stored.is_none();
            let value = finish(kind, &id, obj, current, table, &nodes, now)?;
            Ok(Change::Put {
                kind,
                created,
                id,
                value,
            })
        })
        .await,
    )
}

pub(super) async fn post_new(
    State(s): State<AdminState>,
    kind: ResourceKind,
    body: Body,
) -> Result<Response, Refusal> {
    if matches!(kind, ResourceKind::PluginConfig | ResourceKind::GlobalRule) {
        // APISIX's `unsupported_methods = {"post"}` for these.
        return Err(Refusal::NotAllowed(format!(
            "not supported `POST` method for {}",
            kind.name()
        )));
    }
    let obj = read_object(kind, body).await?;
    if obj.contains_key("id") {
        return Err(bad(format!(
            "invalid configuration: property \"id\" is generated by POST \
             (to choose it, PUT /apisix/admin/{}/{{id}})",
            kind.plural()
        )));
    }
    let nodes = s.inner.settings.nodes.clone();
    Ok(s.answer(
        s.commit(move |current, table, writer, now| {
            let current = &current.data;
            let mut obj = obj.clone();
            fill_secrets(kind, &mut obj, None)?;
            obj.insert("create_time".into(), Value::from(now));
            obj.insert("update_time".into(), Value::from(now));
            let id = writer.next_id(kind.of(current), now);
            let value = finish(kind, &id, obj, current, table, &nodes, now)?;
            Ok(Change::Put {
                kind,
                id,
                value,
                created: true,
            })
        })
        .await,
    ))
}

pub(super) async fn post_at_id(kind: ResourceKind) -> Refusal {
    bad(format!(
        "wrong {0} id, do not need it: POST /apisix/admin/{1} generates the id; \
         to choose it, PUT /apisix/admin/{1}/{{id}}",
        kind.name(),
        kind.plural()
    ))
}

pub(super) async fn patch_at_id(
    State(s): State<AdminState>,
    kind: ResourceKind,
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
    let sets_update_time = patch.get("update_time").is_some_and(|t| !t.is_null());
    let patch = Value::Object(patch);
    Ok(patch_with(s, kind, id, sets_update_time, move |merged| {
        merge_patch(merged, &patch);
        Ok(())
    })
    .await)
}

/// `PATCH /apisix/admin/<kind>/{id}/<sub path>`: the body (any JSON value)
/// replaces what the sub path names ([`patch_sub_path`]), then the object
/// is validated as a `PUT` would be; `update_time` is set.
pub(super) async fn patch_sub_path_at_id(
    State(s): State<AdminState>,
    kind: ResourceKind,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, Refusal> {
    let (id, sub) = path.map(|Path(p)| p).map_err(|e| {
        bad(format!(
            "invalid {} id or sub-path in the URL: {}",
            kind.name(),
            e.body_text()
        ))
    })?;
    let id = path_id(kind, Ok(Path(id)))?;
    let Some(value) = read_json(body).await? else {
        return Err(bad("missing new configuration"));
    };
    let segments: Vec<String> = sub.split('/').map(str::to_string).collect();
    Ok(patch_with(s, kind, id, false, move |merged| {
        patch_sub_path(merged, &segments, value.clone()).map_err(Refusal::Bad)
    })
    .await)
}

/// A PATCH: `edit` changes the stored object, which is then filled in
/// (secrets, timestamps) and validated as a `PUT`; 404 when there is none.
async fn patch_with(
    s: AdminState,
    kind: ResourceKind,
    id: String,
    sets_update_time: bool,
    edit: impl Fn(&mut Value) -> Result<(), Refusal> + Send + 'static,
) -> Response {
    let nodes = s.inner.settings.nodes.clone();
    s.answer(
        s.commit(move |current, table, _, now| {
            let current = &current.data;
            let id = id.clone();
            let stored = kind.of(current).get(&id).ok_or(Refusal::NotFound)?;
            let mut merged = stored.clone();
            edit(&mut merged)?;
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
            let value = finish(kind, &id, obj, current, table, &nodes, now)?;
            Ok(Change::Put {
                kind,
                id,
                value,
                created: false,
            })
        })
        .await,
    )
}

pub(super) async fn delete_at_id(
    State(s): State<AdminState>,
    kind: ResourceKind,
    id: IdPath,
) -> Result<Response, Refusal> {
    let id = path_id(kind, id)?;
    Ok(s.answer(
        s.commit(move |current, _, _, _| {
            let current = &current.data;
            let id = id.clone();
            if !kind.of(current).contains_key(&id) {
                return Err(Refusal::NotFound);
            }
            if let Some(refusal) = still_used(kind, &users(current, kind, &id)) {
                return Err(refusal);
            }
            Ok(Change::Delete { kind, id })
        })
        .await,
    ))
}
