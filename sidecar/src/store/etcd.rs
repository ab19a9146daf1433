//! The etcd v3 store (`--etcd`): routes, upstreams, services, plugin
//! configs, global rules and SSL objects where APISIX keeps them, so that
//! several sidecars (each with its Envoys) share one set.
//!
//! - Keys: `<prefix>/<plural>/<id>` for each [`ResourceKind`]
//!   (`<prefix>/routes/<id>`, `<prefix>/upstreams/<id>`,
//!   `<prefix>/services/<id>`, `<prefix>/plugin_configs/<id>`,
//!   `<prefix>/global_rules/<id>`, `<prefix>/ssls/<id>`; prefix `/apisix`
//!   by default); values: the stored JSON object, exactly what
//!   the file store keeps per id (with `id`, the timestamps and the real
//!   secrets). Other keys under the prefix are left alone.
//! - A write is one transaction: put or delete the key if every
//!   [`Guard`] still holds (`mod_revision` comparisons), else read the
//!   whole prefix, which comes back as [`StoreError::Conflict`] so the
//!   Admin API decides again on what is there now. So concurrent writes of
//!   one id on two sidecars are serialized by etcd: the later one wins and
//!   each answer carries its own revision.
//! - [`EtcdStore::watch`] feeds every change under the prefix, from
//!   whichever sidecar (or `etcdctl`), into [`AdminState::observe`], which
//!   publishes it to xDS. When the watch breaks (etcd down) it retries
//!   every [`RETRY_MAX`] at most, from the revision after the last one it
//!   saw; when that revision was compacted away, it reads everything again.
//! - etcd unreachable: every call gives up after the timeout and answers
//!   [`StoreError::Unavailable`] (the Admin API's 503); what was last seen
//!   stays published, so Envoy keeps its configuration.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::admin::AdminState;
use crate::store::{
    Guard, ResourceKind, Revs, Store, StoreError, StoreFuture, Stored, Versioned, Write, Written,
};

/// The longest wait between two attempts to watch again.
pub const RETRY_MAX: Duration = Duration::from_millis(500);

/// The first wait after the watch broke.
const RETRY_MIN: Duration = Duration::from_millis(50);

/// The stored objects in etcd, under a prefix.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// The endpoint, for messages.
    endpoint: String,
    /// `/apisix`: no trailing slash.
    prefix: String,
    /// Of each call.
    timeout: Duration,
}

/// Checks a `--etcd-prefix`: `/` and a name, no trailing `/`.
pub fn check_prefix(prefix: &str) -> Result<String, String> {
    let p = prefix.trim_end_matches('/');
    if !p.starts_with('/') || p.len() < 2 {
        return Err(format!(
            "--etcd-prefix {prefix:?}: must start with '/' and name a directory, like /apisix"
        ));
    }
    Ok(p.to_string())
}

/// `<prefix>/routes/<id>` → (route, id); anything else under the prefix
/// (`<prefix>/routes` itself, `<prefix>/plugins/...`) is not ours.
pub fn parse_key(prefix: &str, key: &[u8]) -> Option<(ResourceKind, String)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let (dir, id) = rest.split_once('/')?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    let kind = ResourceKind::ALL.into_iter().find(|k| k.plural() == dir)?;
    Some((kind, id.to_string()))
}

/// The set held by `kvs` (a range read of the prefix) at `revision`.
fn versioned(prefix: &str, kvs: &[KeyValue], revision: i64) -> Versioned {
    let mut v = Versioned::default();
    for kv in kvs {
        if let Some((kind, id)) = parse_key(prefix, kv.key()) {
            // In revision order, so that `apply` takes each.
            v.revision = 0;
            let revs = Revs {
                created: kv.create_revision(),
                modified: kv.mod_revision(),
            };
            v.apply(kind, &id, Some(kv.value()), revs);
        }
    }
    v.revision = revision;
    v
}

impl EtcdStore {
    /// A client for `endpoint` (`http://127.0.0.1:2379`). Connections are
    /// made when needed (and made again after etcd was down).
    pub async fn connect(
        endpoint: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, String> {
        let prefix = check_prefix(prefix)?;
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), timeout);
        let client = tokio::time::timeout(timeout, Client::connect([endpoint], Some(options)))
            .await
            .map_err(|_| format!("--etcd {endpoint}: no connection within {timeout:?}"))?
            .map_err(|e| format!("--etcd {endpoint}: {e}"))?;
        Ok(EtcdStore {
            client,
            endpoint: endpoint.to_string(),
            prefix,
            timeout,
        })
    }

    /// The client, prefix and call timeout, for the revocation service's
    /// keys (`<prefix>/oidc_revocations/`).
    pub fn revocations_backend(&self) -> crate::revocations::Backend {
        crate::revocations::Backend::Etcd {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            timeout: self.timeout,
        }
    }

    fn key(&self, kind: ResourceKind, id: &str) -> String {
        kind.key(&self.prefix, id)
    }

    /// `<prefix>/`: what is read and watched.
    fn dir(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Runs one etcd call with the timeout; failures name etcd.
    async fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer within {} s ({what})",
                self.endpoint,
                self.timeout.as_secs_f32()
            ))),
            Ok(Err(e)) => Err(self.error(what, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    fn error(&self, what: &str, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        let unavailable = match &e {
            E::TransportError(_) | E::IoError(_) => true,
            E::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            _ => false,
        };
        let msg = format!("etcd at {} ({what}): {e}", self.endpoint);
        if unavailable {
            StoreError::Unavailable(format!("cannot reach {msg}"))
        } else {
            StoreError::Other(msg)
        }
    }

    /// Everything under the prefix, now.
    async fn read_all(&self) -> Result<Versioned, StoreError> {
        let mut kv = self.client.kv_client();
        let r = self
            .call(
                "read",
                kv.get(self.dir(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = r.header().map_or(0, |h| h.revision());
        Ok(versioned(&self.prefix, r.kvs(), revision))
    }

    fn compare(&self, g: &Guard) -> Compare {
        match g {
            Guard::Unchanged { kind, id, modified } => {
                Compare::mod_revision(self.key(*kind, id), CompareOp::Equal, *modified)
            }
            Guard::NoneChangedSince { kind, revision } => Compare::mod_revision(
                format!("{}/{}/", self.prefix, kind.plural()),
                CompareOp::Less,
                revision + 1,
            )
            .with_prefix(),
        }
    }

    async fn txn(&self, w: &Write) -> Result<Written, StoreError> {
        let key = self.key(w.kind, &w.id);
        let op = match &w.value {
            Some(v) => {
                let bytes = serde_json::to_vec(v).map_err(|e| {
                    StoreError::Other(format!("cannot encode the {}: {e}", w.kind.name()))
                })?;
                TxnOp::put(key, bytes, None)
            }
            None => TxnOp::delete(key, None),
        };
        let compares: Vec<Compare> = w.guards.iter().map(|g| self.compare(g)).collect();
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![op])
            .or_else(vec![TxnOp::get(
                self.dir(),
                Some(GetOptions::new().with_prefix()),
            )]);
        let mut kv = self.client.kv_client();
        let r = self.call("write", kv.txn(txn)).await?;
        let revision = r.header().map_or(0, |h| h.revision());
        if r.succeeded() {
            return Ok(Written::At { revision });
        }
        let now = match r.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(g)) => versioned(&self.prefix, g.kvs(), revision),
            _ => {
                return Err(StoreError::Other(format!(
                    "etcd at {}: a failed transaction did not return the current state",
                    self.endpoint
                )))
            }
        };
        Err(StoreError::Conflict(Box::new(now)))
    }

    /// Keeps `state` up to date with every change under the prefix, for
    /// ever: watches from the revision after what `state` knows, and
    /// watches again (after at most [`RETRY_MAX`]) when the watch breaks.
    pub async fn watch(self, state: AdminState) {
        let mut wait = RETRY_MIN;
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            match self.watch_once(&state, &mut down_since).await {
                Ok(()) => {
                    wait = RETRY_MIN;
                    continue;
                }
                Err(e) => {
                    if down_since.is_none() {
                        tracing::warn!(
                            revision = state.known().revision,
                            "etcd: watch lost: {e}; serving the last known routes and upstreams, \
                             watching again when etcd is back"
                        );
                        down_since = Some(std::time::Instant::now());
                    } else {
                        tracing::debug!("etcd: watch: {e}");
                    }
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// One watch stream, until it breaks (`Err`) or has to start again
    /// after a full read (`Ok`).
    async fn watch_once(
        &self,
        state: &AdminState,
        down_since: &mut Option<std::time::Instant>,
    ) -> Result<(), String> {
        let mut copy = (*state.known()).clone();
        let from = copy.revision + 1;
        let mut client = self.client.watch_client();
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = self
            .call("watch", client.watch(self.dir(), Some(options)))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let Some(resp) = stream.message().await.map_err(|e| e.to_string())? else {
                return Err("etcd closed the watch".into());
            };
            if resp.compact_revision() > 0 {
                // The revisions this sidecar missed are gone: read it all.
                let now = self.read_all().await.map_err(|e| e.to_string())?;
                tracing::warn!(
                    from,
                    compacted = resp.compact_revision(),
                    revision = now.revision,
                    "etcd: missed revisions were compacted: read everything again"
                );
                state.observe(now);
                return Ok(());
            }
            if resp.canceled() {
                return Err(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason()
                ));
            }
            if resp.created() {
                match down_since.take() {
                    Some(t) => tracing::info!(
                        from,
                        "etcd: watching again after {:.1} s",
                        t.elapsed().as_secs_f32()
                    ),
                    None => tracing::info!(from, prefix = %self.prefix, "etcd: watching"),
                }
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                if let Some((kind, id)) = parse_key(&self.prefix, kv.key()) {
                    let value = match ev.event_type() {
                        EventType::Put => Some(kv.value()),
                        EventType::Delete => None,
                    };
                    let revs = Revs {
                        created: kv.create_revision(),
                        modified: kv.mod_revision(),
                    };
                    if copy.apply(kind, &id, value, revs) {
                        tracing::info!(%id, revision = kv.mod_revision(), "etcd: {} {}",
                            kind.name(),
                            if value.is_some() { "put" } else { "deleted" });
                    }
                }
                copy.revision = copy.revision.max(kv.mod_revision());
            }
            if !resp.events().is_empty() {
                state.observe(copy.clone());
            }
        }
    }
}

impl Store for EtcdStore {
    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(self.read_all())
    }

    fn write<'a>(&'a self, write: &'a Write, _next: &'a Stored) -> StoreFuture<'a, Written> {
        Box::pin(self.txn(write))
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_the_prefix() {
        let p = "/apisix";
        assert_eq!(
            parse_key(p, b"/apisix/routes/1"),
            Some((ResourceKind::Route, "1".into()))
        );
        assert_eq!(
            parse_key(p, b"/apisix/upstreams/u-1"),
            Some((ResourceKind::Upstream, "u-1".into()))
        );
        for kind in ResourceKind::ALL {
            let key = kind.key(p, "7");
            assert_eq!(
                parse_key(p, key.as_bytes()),
                Some((kind, "7".into())),
                "{key}"
            );
        }
        assert_eq!(
            parse_key(p, b"/apisix/plugin_configs/pc"),
            Some((ResourceKind::PluginConfig, "pc".into()))
        );
        for not_ours in [
            &b"/apisix/routes"[..],
            b"/apisix/routes/",
            b"/apisix/routes/a/b",
            b"/apisix/plugins/x",
            b"/apisix/plugin_metadata/x",
            b"/apisix/consumers/x",
            b"/apisix/service/x",
            b"/apisix2/routes/1",
            b"/other/routes/1",
            b"\xff",
        ] {
            assert_eq!(parse_key(p, not_ours), None, "{not_ours:?}");
        }
        assert_eq!(
            parse_key("/gw/one", b"/gw/one/routes/r"),
            Some((ResourceKind::Route, "r".into()))
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(check_prefix("/apisix").unwrap(), "/apisix");
        assert_eq!(check_prefix("/apisix/").unwrap(), "/apisix");
        assert_eq!(check_prefix("/a/b").unwrap(), "/a/b");
        for bad in ["", "/", "apisix", "//"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
