//! The Admin API's state and its transaction engine: what is known, id
//! generation, a change decided, written under guards, retried on conflict,
//! and published.

use super::*;

/// The Admin API's state: cheap to clone, one per sidecar.
#[derive(Clone)]
pub struct AdminState {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Arc<dyn Store>,
    pub(super) settings: AdminSettings,
    pub(super) clock: Clock,
    /// The prefix of the `key` in answers (`/apisix`).
    pub(super) prefix: String,
    /// What the store holds as far as this sidecar knows, with revisions:
    /// what `GET` reads and writes are decided on.
    pub(super) known: watch::Sender<Arc<Versioned>>,
    /// The route set published to xDS (`known`'s data).
    pub(super) tx: watch::Sender<Published>,
    /// Held from validation to publication, so this sidecar's writes never
    /// interleave.
    pub(super) writer: Mutex<Writer>,
}

/// Attempts of one write that keeps meeting concurrent changes.
pub(super) const MAX_ATTEMPTS: usize = 5;

/// How long a write done in a store with a watch waits for the watch to
/// bring it back (so that a `GET` right after it sees it).
pub(super) const WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub(crate) struct Writer {
    /// The last generated id, as a number.
    pub(super) last_id: u128,
}

impl Writer {
    pub(super) fn next_id(&mut self, taken: &crate::store::Objects, now: u64) -> String {
        let mut n = (u128::from(now) * 1_000_000_000).max(self.last_id + 1);
        while taken.contains_key(&format!("{n:020}")) {
            n += 1;
        }
        self.last_id = n;
        format!("{n:020}")
    }
}

impl AdminState {
    /// Loads the stored routes and upstreams; they are published at once.
    pub async fn new(
        store: Arc<dyn Store>,
        settings: AdminSettings,
    ) -> Result<AdminState, StoreError> {
        AdminState::with_clock(store, settings, system_clock()).await
    }

    /// [`AdminState::new`] with the clock that stamps `create_time` and
    /// `update_time`.
    pub async fn with_clock(
        store: Arc<dyn Store>,
        settings: AdminSettings,
        clock: Clock,
    ) -> Result<AdminState, StoreError> {
        let loaded = store.load().await?;
        let last_id = ResourceKind::ALL
            .into_iter()
            .flat_map(|k| k.of(&loaded.data).keys())
            // Ids of the generated form only (20 digits, so no overflow).
            .filter(|id| id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|id| id.parse::<u128>().ok())
            .max()
            .unwrap_or(0);
        let (tx, _) = watch::channel(Arc::new(RouteTable::build(loaded.data.clone())));
        let (known, _) = watch::channel(Arc::new(loaded));
        Ok(AdminState {
            inner: Arc::new(Inner {
                prefix: store.prefix().to_string(),
                store,
                settings,
                clock,
                known,
                tx,
                writer: Mutex::new(Writer { last_id }),
            }),
        })
    }

    /// The route and upstream set now and every later one. The receiver's
    /// first value is the current set.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.inner.tx.subscribe()
    }

    /// The current routes and upstreams.
    #[cfg(test)]
    pub fn routes(&self) -> Stored {
        self.inner.tx.borrow().stored().clone()
    }

    /// What this sidecar knows the store holds, with revisions.
    pub fn known(&self) -> Arc<Versioned> {
        self.inner.known.borrow().clone()
    }

    /// Takes what a store with revisions holds at a later revision (its
    /// watch, or a read after a conflict) and publishes it. An older or the
    /// same revision changes nothing; returns whether it was taken.
    pub fn observe(&self, seen: Versioned) -> bool {
        let seen = Arc::new(seen);
        let taken = self.inner.known.send_if_modified(|known| {
            if seen.revision <= known.revision {
                return false;
            }
            *known = seen.clone();
            true
        });
        if taken {
            self.inner.tx.send_if_modified(|published| {
                if *published.stored() == seen.data {
                    return false;
                }
                *published = Arc::new(published.update(seen.data.clone()));
                true
            });
        }
        taken
    }

    /// Waits (at most `timeout`) until what is known is at `revision` or
    /// later; whether it got there.
    async fn caught_up(&self, revision: i64, timeout: std::time::Duration) -> bool {
        let mut rx = self.inner.known.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|k| k.revision >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs `decide` on what is known (and its routes, validated) under the writer lock; on `Ok`
    /// writes the result, then publishes it. Nothing changes on `Err` or
    /// when the write fails. When the store says the write's guards no
    /// longer hold (another sidecar wrote in between), `decide` runs again
    /// on what the store holds now. Knows nothing of HTTP: [`Self::answer`]
    /// turns the result into the Admin API's answer.
    pub(super) async fn commit<F>(&self, mut decide: F) -> Result<Committed, CommitError>
    where
        F: FnMut(&Versioned, &RouteTable, &mut Writer, u64) -> Result<Change, Refusal>
            + Send
            + 'static,
    {
        let state = self.clone();
        // A task of its own: a client that goes away mid-write must not
        // leave a saved route set unpublished.
        let task = tokio::spawn(async move {
            let inner = &state.inner;
            let mut writer = inner.writer.lock().await;
            let mut current = state.known();
            for _ in 0..MAX_ATTEMPTS {
                let now = (inner.clock)();
                // The routes of `current`, validated: the published table
                // when it is of `current` (the two maps share their nodes,
                // so this compares pointers), else that table updated.
                let table = inner.tx.borrow().clone();
                let table = if *table.stored() == current.data {
                    table
                } else {
                    Arc::new(table.update(current.data.clone()))
                };
                let change =
                    decide(&current, &table, &mut writer, now).map_err(CommitError::Refused)?;
                let write = change.write(&current);
                let mut next = current.data.clone();
                match &write.value {
                    Some(v) => write
                        .kind
                        .of_mut(&mut next)
                        .insert(write.id.clone(), v.clone()),
                    None => write.kind.of_mut(&mut next).remove(&write.id),
                };
                let (kind, id) = (write.kind, write.id.clone());
                let outcome = match (&change, &write.value) {
                    (_, None) => Outcome::Deleted,
                    (Change::Put { created: true, .. }, _) => Outcome::Created,
                    _ => Outcome::Updated,
                };
                let name = kind.name();
                let revs = match inner.store.write(&write, &next).await {
                    Ok(Written::Saved) => {
                        let next = Versioned::unversioned(next);
                        inner.known.send_replace(Arc::new(next.clone()));
                        let next = table.update(next.data);
                        inner.tx.send_replace(Arc::new(next));
                        None
                    }
                    Ok(Written::At { revision }) => {
                        if !state.caught_up(revision, WATCH_WAIT).await {
                            tracing::warn!(
                                %id, revision,
                                "Admin API: the store's watch has not brought revision \
                                 {revision} back yet: reads may not show this {name} for a while"
                            );
                        }
                        let created = match outcome {
                            Outcome::Created => revision,
                            _ => current.revs_of(kind, &id).map_or(revision, |r| r.created),
                        };
                        Some(Revs {
                            created,
                            modified: revision,
                        })
                    }
                    Err(StoreError::Conflict(now)) => {
                        tracing::info!(
                            %id,
                            "Admin API: {name} changed concurrently (the store is at revision {}): deciding again",
                            now.revision
                        );
                        state.observe((*now).clone());
                        current = Arc::new(*now);
                        continue;
                    }
                    Err(StoreError::Unavailable(e)) => {
                        tracing::error!(%id, "Admin API: {name} not {outcome}: {e}");
                        return Err(CommitError::Unavailable { kind, error: e });
                    }
                    Err(e) => {
                        tracing::error!(%id, "Admin API: {name} not {outcome}: cannot save: {e}");
                        return Err(CommitError::Failed {
                            kind,
                            error: e.to_string(),
                        });
                    }
                };
                tracing::info!(%id, revision = revs.map(|r| r.modified), "Admin API: {name} {outcome}");
                return Ok(Committed {
                    outcome,
                    kind,
                    id,
                    value: write.value,
                    revs,
                });
            }
            Err(CommitError::Conflicts)
        });
        task.await.unwrap_or(Err(CommitError::Aborted))
    }

    /// The Admin API's answer to a commit: the saved object (`{"key",
    /// "value"}`, secrets redacted) or the deletion, else the error.
    pub(super) fn answer(&self, result: Result<Committed, CommitError>) -> Response {
        let c = match result {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        let prefix = &self.inner.prefix;
        let body = match &c.value {
            Some(v) => entry(prefix, c.kind, &c.id, v, c.revs),
            None => {
                let mut b = json!({"deleted": "1", "key": c.kind.key(prefix, &c.id)});
                if let Some(r) = c.revs {
                    b["modifiedIndex"] = r.modified.into();
                }
                b
            }
        };
        let status = match c.outcome {
            Outcome::Created => StatusCode::CREATED,
            Outcome::Updated | Outcome::Deleted => StatusCode::OK,
        };
        reply(status, body)
    }
}

/// What a committed change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Created,
    Updated,
    Deleted,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Deleted => "deleted",
        })
    }
}

/// A change saved and published.
#[derive(Debug)]
pub(super) struct Committed {
    pub(super) outcome: Outcome,
    pub(super) kind: ResourceKind,
    pub(super) id: String,
    /// The stored object; `None` for a deletion.
    pub(super) value: Option<Value>,
    /// Its revisions, from a store that has them.
    pub(super) revs: Option<Revs>,
}

/// Why a change was not made; nothing changed.
#[derive(Debug)]
pub(super) enum CommitError {
    /// `decide` refused it.
    Refused(Refusal),
    /// The store cannot be reached (503).
    Unavailable { kind: ResourceKind, error: String },
    /// The store refused the write (500).
    Failed { kind: ResourceKind, error: String },
    /// The store changed concurrently on every attempt (409).
    Conflicts,
    /// The write task ended without an answer (500).
    Aborted,
}

pub(super) enum Change {
    Put {
        kind: ResourceKind,
        id: String,
        value: Value,
        created: bool,
    },
    Delete {
        kind: ResourceKind,
        id: String,
    },
}

impl Change {
    /// The write, guarded by what it was decided on in `current`: the
    /// object itself; for a route, what it names (its upstream, plugin
    /// config, service and the service's upstream) and the global rules;
    /// for an upstream, a service, a plugin config or a global rule, every
    /// route (they were validated against it, or could name it), and what
    /// else it was checked against (an upstream: the services; a service:
    /// its upstream; a global rule: the other global rules).
    fn write(&self, current: &Versioned) -> Write {
        let (kind, id, value) = match self {
            Change::Put {
                kind, id, value, ..
            } => (*kind, id, Some(value.clone())),
            Change::Delete { kind, id } => (*kind, id, None),
        };
        let mut guards = vec![Guard::Unchanged {
            kind,
            id: id.clone(),
            modified: current.modified(kind, id),
        }];
        let unchanged = |kind: ResourceKind, v: Option<&Value>, field: &str| {
            let id = v.and_then(|v| v.get(field)).and_then(id_text)?;
            Some(Guard::Unchanged {
                kind,
                modified: current.modified(kind, &id),
                id,
            })
        };
        let none_changed = |kind: ResourceKind| Guard::NoneChangedSince {
            kind,
            revision: current.revision,
        };
        let v = value.as_ref();
        match kind {
            ResourceKind::Route => {
                // What it names, and the global rules, which every route
                // takes in.
                guards.extend(unchanged(ResourceKind::Upstream, v, "upstream_id"));
                guards.extend(unchanged(ResourceKind::PluginConfig, v, "plugin_config_id"));
                if let Some(g) = unchanged(ResourceKind::Service, v, "service_id") {
                    if let Guard::Unchanged { id: sid, .. } = &g {
                        let service = current.data.services.get(sid);
                        guards.extend(unchanged(ResourceKind::Upstream, service, "upstream_id"));
                    }
                    guards.push(g);
                }
                if v.is_some() {
                    guards.push(none_changed(ResourceKind::GlobalRule));
                }
            }
            ResourceKind::Upstream => {
                guards.push(none_changed(ResourceKind::Route));
                guards.push(none_changed(ResourceKind::Service));
            }
            ResourceKind::Service => {
                guards.push(none_changed(ResourceKind::Route));
                guards.extend(unchanged(ResourceKind::Upstream, v, "upstream_id"));
            }
            ResourceKind::PluginConfig => guards.push(none_changed(ResourceKind::Route)),
            ResourceKind::GlobalRule => {
                guards.push(none_changed(ResourceKind::Route));
                guards.push(none_changed(ResourceKind::GlobalRule));
            }
            ResourceKind::Ssl => {}
        }
        Write {
            kind,
            id: id.clone(),
            value,
            guards,
        }
    }
}
