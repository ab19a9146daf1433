//! APISIX's reply shapes, and refusals (400 and the like) as responses.

use super::*;

pub(super) fn reply(status: StatusCode, body: Value) -> Response {
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

pub(super) fn error(status: StatusCode, msg: String) -> Response {
    reply(status, json!({ "error_msg": msg }))
}

/// A call refused before anything changed.
#[derive(Debug)]
pub(super) enum Refusal {
    /// 400 `{"error_msg": ...}`.
    Bad(String),
    /// 404 `{"message": "Key not found"}`.
    NotFound,
    /// 500 `{"error_msg": ...}`.
    Internal(String),
    /// 405 `{"error_msg": ...}`.
    NotAllowed(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Bad(msg) => error(StatusCode::BAD_REQUEST, msg),
            Refusal::NotFound => reply(StatusCode::NOT_FOUND, json!({"message": "Key not found"})),
            Refusal::Internal(msg) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
            Refusal::NotAllowed(msg) => error(StatusCode::METHOD_NOT_ALLOWED, msg),
        }
    }
}

impl IntoResponse for CommitError {
    fn into_response(self) -> Response {
        match self {
            CommitError::Refused(r) => r.into_response(),
            CommitError::Unavailable { kind, error: e } => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "cannot save the {}: {e}; nothing was changed, and reads \
                     still answer with the last known routes and upstreams",
                    kind.name()
                ),
            ),
            CommitError::Failed { kind, error: e } => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to save the {}: {e}", kind.name()),
            ),
            CommitError::Conflicts => error(
                StatusCode::CONFLICT,
                format!(
                    "the store changed concurrently {MAX_ATTEMPTS} times while this write \
                     was decided: nothing was written; try again"
                ),
            ),
            CommitError::Aborted => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the write failed unexpectedly".into(),
            ),
        }
    }
}

pub(super) fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::Bad(msg.into())
}

/// `{"key", "value"}` with the secrets redacted; from a store with
/// revisions also APISIX's `createdIndex` and `modifiedIndex` (etcd's
/// `create_revision` and `mod_revision`).
pub(super) fn entry(
    prefix: &str,
    kind: ResourceKind,
    id: &str,
    value: &Value,
    revs: Option<Revs>,
) -> Value {
    let value = match kind {
        ResourceKind::Route
        | ResourceKind::Service
        | ResourceKind::PluginConfig
        | ResourceKind::GlobalRule => secrets::redact(value),
        ResourceKind::Upstream => value.clone(),
        ResourceKind::Ssl => {
            let mut v = value.clone();
            ssl::redact(&mut v);
            v
        }
    };
    let mut e = json!({"key": kind.key(prefix, id), "value": value});
    if let Some(r) = revs {
        e["createdIndex"] = r.created.into();
        e["modifiedIndex"] = r.modified.into();
    }
    e
}
