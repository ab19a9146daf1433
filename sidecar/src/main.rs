//! The sidecar binary: options, logs, signals, and the wiring of the
//! library's parts (see `lib.rs` for the map).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use clap::Parser;
use tokio::sync::watch;

use sidecar::admin::{AdminSettings, AdminState};
use sidecar::apisix::table::Published;
use sidecar::apisix::upstream::NodePolicy;
use sidecar::apisix::{route, secrets};
use sidecar::store::etcd;
use sidecar::store::{FileStore, Store};
use sidecar::translate::ProxySettings;
use sidecar::xds::XdsStatus;
use sidecar::{admin, discover, store, xds};

/// APISIX's Admin API for routes and upstreams, configuring Envoy over xDS (ADS).
///
/// Routes PUT to the Admin API are validated (the `openid-connect` plugin
/// with the same parser the filter uses), stored in a local file or in
/// etcd (`--etcd`), and served to every Envoy connected to the xDS port.
#[derive(Debug, Parser)]
#[command(version)]
struct Options {
    /// Admin API address (APISIX's port 9180). Keep it on loopback unless
    /// an admin key and a narrow allow-list are set (off loopback, a key is
    /// required: without `--admin-key` one is generated and printed).
    #[arg(long, env = "SIDECAR_ADMIN_ADDR", default_value = "127.0.0.1:9180")]
    admin_addr: SocketAddr,

    /// xDS (gRPC ADS) address Envoy connects to. Keep it on loopback: it
    /// hands out every route's secrets.
    #[arg(long, env = "SIDECAR_XDS_ADDR", default_value = "127.0.0.1:18000")]
    xds_addr: SocketAddr,

    /// Address of Envoy's HTTP listener (the proxy).
    #[arg(long, env = "SIDECAR_PROXY_ADDR", default_value = "0.0.0.0")]
    proxy_addr: String,

    /// Port of Envoy's HTTP listener (APISIX's 9080).
    #[arg(long, env = "PROXY_PORT", default_value_t = 9080)]
    proxy_port: u16,

    /// Port of Envoy's HTTPS listener (APISIX's 9443), open while an
    /// enabled ssl object exists.
    #[arg(long, env = "PROXY_HTTPS_PORT", default_value_t = 9443)]
    https_port: u16,

    /// The filter module as Envoy will read it.
    #[arg(
        long,
        env = "SIDECAR_WASM",
        default_value = "target/wasm32-wasip1/wasm/oidc_filter.wasm"
    )]
    wasm: PathBuf,

    /// The wasm filter's listener-level settings (JSON).
    #[arg(long, default_value = "{}")]
    filter_settings: String,

    /// Proxies in front of Envoy whose X-Forwarded-For / X-Forwarded-Proto
    /// Envoy trusts (Envoy's `xff_num_trusted_hops`). 0: Envoy is the edge
    /// and a client's X-Forwarded-Proto is overwritten, so a client cannot
    /// claim HTTPS (which decides the session cookie's `Secure`).
    #[arg(long, default_value_t = 0)]
    trusted_proxy_hops: u32,

    /// The file routes are stored in (JSON, mode 0600: it holds secrets).
    /// Not used with `--etcd`.
    #[arg(long, env = "SIDECAR_DATA", default_value = "build/routes.json")]
    data: PathBuf,

    /// Store routes and upstreams in etcd v3 at this endpoint
    /// (`http://127.0.0.1:2379`) instead of the file, as APISIX does.
    /// Every sidecar on the same etcd and prefix serves the same set: each
    /// watches etcd. etcd holds the secrets: keep it private.
    #[arg(long, env = "SIDECAR_ETCD", value_name = "URL")]
    etcd: Option<String>,

    /// The etcd key prefix: keys are `<prefix>/routes/<id>` and
    /// `<prefix>/upstreams/<id>`, as APISIX's.
    #[arg(long, env = "SIDECAR_ETCD_PREFIX", default_value = "/apisix")]
    etcd_prefix: String,

    /// Timeout of each etcd call, seconds (a write that gets no answer
    /// is a 503).
    #[arg(long, default_value_t = 3)]
    etcd_timeout: u64,

    /// Require this key on the Admin API (`X-API-KEY` header or `?api_key=`).
    /// When the Admin API listens on anything but loopback and no key is
    /// given, one is generated and printed once on stdout, as APISIX does.
    #[arg(long, env = "SIDECAR_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,

    /// `false`: do not generate a key when the Admin API listens off
    /// loopback and none is given (APISIX's `admin_key_required: false`).
    /// Only for an address that nothing but the gateway host can reach, as
    /// in docker-compose.yml (a network of the sidecar's own, the host's
    /// bridge address as the only `--allow`); a warning says so at start.
    /// A key given with `--admin-key` is always required.
    #[arg(
        long,
        env = "SIDECAR_ADMIN_KEY_REQUIRED",
        default_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    admin_key_required: bool,

    /// A host name the Admin API answers to (repeat the option; comma-separated
    /// in the environment). Besides these, only IP addresses and `localhost`
    /// are accepted in `Host`: a web page on a name that resolves to the
    /// Admin API (DNS rebinding) is refused.
    #[arg(
        long = "admin-host",
        env = "SIDECAR_ADMIN_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    admin_host: Vec<String>,

    /// Envoy's admin address. Upstream nodes that point at it, at the
    /// Admin API or at the xDS port are refused: a route to them would
    /// publish the gateway's control ports on the proxy port.
    #[arg(
        long,
        env = "SIDECAR_ENVOY_ADMIN_ADDR",
        default_value = "127.0.0.1:9901"
    )]
    envoy_admin_addr: SocketAddr,

    /// Allow upstream nodes on loopback, link-local (169.254.0.0/16, the
    /// cloud metadata address, fe80::/10) and unspecified addresses
    /// (`localhost`, 127.0.0.1, 0.0.0.0, ::1, ...): refused without it.
    /// The control ports stay refused.
    #[arg(
        long,
        env = "SIDECAR_ALLOW_LOCAL_UPSTREAMS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_local_upstreams: bool,

    /// Environment variables that `$env://NAME` references in routes may
    /// name: names or prefixes ending in `*`, comma-separated or repeated
    /// (`*`: every variable, as APISIX). None by default: a reference sends
    /// the variable to the provider the route names. `SIDECAR_*` never.
    #[arg(long = "env-allow", env = "SIDECAR_ENV_ALLOW", value_name = "NAMES")]
    env_allow: Vec<String>,

    /// Client networks allowed on the Admin API (CIDR; repeat the option).
    /// Default: 127.0.0.0/24, as APISIX.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<ipnet::IpNet>,

    /// Timeout of the sidecar's own discovery-document fetches, seconds.
    #[arg(long, default_value_t = 3)]
    discovery_timeout: u64,

    /// Connections the Admin API keeps open at once (nginx's
    /// `worker_connections`); more wait to be accepted. The revocation
    /// service takes at most as many.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..))]
    max_connections: u16,

    /// Seconds a client may take to send a request's headers, or to start
    /// its next request on a kept-alive connection, before it is dropped
    /// (nginx's `client_header_timeout` / `keepalive_timeout`): on Envoy's
    /// listeners, the Admin API and the revocation service (which also
    /// drop a client that stalls this long in a body).
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    client_timeout: f64,

    /// Connections each of Envoy's listeners keeps at once (shared by its
    /// workers; nginx's `worker_connections`): one more is closed at once.
    /// Envoy needs a descriptor limit (`ulimit -n`) above it.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    proxy_max_connections: u64,
}

/// A number of seconds above 0 (and below a year).
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 31_536_000.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(Options::parse()).await {
        eprintln!("sidecar: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Options) -> Result<(), String> {
    sidecar::apisix::secrets::set_env_allow(sidecar::apisix::secrets::EnvAllow::parse(
        &o.env_allow,
    )?)?;
    if o.admin_key.as_deref() == Some("") {
        return Err("--admin-key must not be empty".into());
    }
    if o.https_port == o.proxy_port {
        return Err(format!(
            "--https-port {} is also --proxy-port: give the HTTPS listener its own port",
            o.https_port
        ));
    }
    // The filter's own parser: what passes here, the filter accepts.
    oidc_core::settings::Settings::parse(o.filter_settings.as_bytes())
        .map_err(|e| format!("--filter-settings is not valid filter settings: {e}"))?;
    let wasm = std::path::absolute(&o.wasm).map_err(|e| format!("--wasm: {e}"))?;
    if !wasm.is_file() {
        return Err(format!(
            "--wasm {}: no such file (run `make build`)",
            wasm.display()
        ));
    }
    let etcd = match &o.etcd {
        Some(url) => {
            let timeout = Duration::from_secs(o.etcd_timeout.max(1));
            Some(etcd::EtcdStore::connect(url, &o.etcd_prefix, timeout).await?)
        }
        None => {
            if let Some(dir) = o.data.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("--data {}: {e}", dir.display()))?;
            }
            None
        }
    };
    let store: Arc<dyn Store> = match &etcd {
        Some(e) => Arc::new(e.clone()),
        None => Arc::new(FileStore::new(&o.data)),
    };

    let mut hosts = Vec::new();
    for h in &o.admin_host {
        let name = h.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.starts_with("*.") || !route::valid_host_pattern(&name) {
            return Err(format!(
                "--admin-host {h:?} is not a host name (letters, digits, '-', dots)"
            ));
        }
        hosts.push(name);
    }
    let admin_key = match o.admin_key {
        Some(k) => Some(k),
        None if !o.admin_addr.ip().to_canonical().is_loopback() && !o.admin_key_required => {
            tracing::warn!(
                "the Admin API listens on {} (not loopback) without an admin key \
                 (--admin-key-required=false): only the --allow networks guard it",
                o.admin_addr
            );
            None
        }
        None if !o.admin_addr.ip().to_canonical().is_loopback() => {
            let key = secrets::generate_secret()
                .map_err(|e| format!("cannot generate an admin key: {e}"))?;
            // Once, on stdout (never in the logs), as APISIX does.
            println!(
                "sidecar: the Admin API listens on {} (not loopback) and no admin key was \
                 given, so it requires this generated one (X-API-KEY header): {key}",
                o.admin_addr
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
            Some(key)
        }
        None => None,
    };
    let settings = AdminSettings {
        api_key: admin_key,
        allow: if o.allow.is_empty() {
            AdminSettings::default_allow()
        } else {
            o.allow
        },
        nodes: NodePolicy {
            control: vec![
                ("the Admin API", o.admin_addr),
                ("the sidecar's xDS port", o.xds_addr),
                ("Envoy's admin", o.envoy_admin_addr),
            ],
            own_names: hosts.clone(),
            allow_local: o.allow_local_upstreams,
        },
        hosts,
    };
    let nodes = settings.nodes.clone();
    let state = AdminState::new(store, settings)
        .await
        .map_err(|e| format!("cannot load routes and upstreams: {e}"))?;
    warn_about_stored_nodes(&state.known().data, &nodes);
    let routes = state.subscribe();
    let etcd_for_revocations = etcd.clone();
    if let Some(e) = etcd {
        tracing::info!(
            etcd = ?o.etcd,
            prefix = %o.etcd_prefix,
            revision = state.known().revision,
            "routes and upstreams from etcd"
        );
        tokio::spawn(e.watch(state.clone()));
    }

    // Provider endpoint hosts found in discovery documents.
    let (providers_tx, providers_rx) = watch::channel(Arc::new(Vec::new()));
    tokio::spawn(discover::run(
        routes.clone(),
        providers_tx,
        Duration::from_secs(o.discovery_timeout),
    ));

    // Files beside --data: the revocation service's key and the ports of
    // the sink and the service (the same ports after a restart: Envoy's
    // clusters stay the same).
    let beside_data = |suffix: &str| {
        let stem = o
            .data
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("routes");
        o.data.with_file_name(format!("{stem}.{suffix}"))
    };

    // The back-channel sink, on the xDS address's host (Envoy reaches it).
    let sink = bind_remembered(o.xds_addr.ip(), &beside_data("sink-port"))
        .await
        .map_err(|e| format!("cannot listen for the back-channel sink: {e}"))?;
    let backchannel_sink = Some(sink.0);
    tokio::spawn(sidecar::sink::run(sink.1));

    // The revocation service, on the same host: logouts shared by every
    // gateway on the store. Its key (made at the first start, kept beside
    // --data) reaches only Envoy (in the listener's filter settings).
    let revocations_backend = match &etcd_for_revocations {
        Some(e) => e.revocations_backend(),
        None => sidecar::revocations::Backend::File(beside_data("revocations.json")),
    };
    let revocation_key = match sidecar::revocations::key_in(&beside_data("revocation-key")) {
        Ok(k) => k,
        // A read-only folder (etcd holds the routes): a key for this run
        // (a restart then changes Envoy's listener settings).
        Err(e) if etcd_for_revocations.is_some() => {
            tracing::warn!("cannot keep the revocation service's key: {e}");
            secrets::generate_secret()?
        }
        Err(e) => return Err(e),
    };
    let revocations =
        sidecar::revocations::Service::start(revocations_backend, revocation_key.clone())
            .await
            .map_err(|e| format!("cannot load the revocations: {e}"))?;
    tokio::spawn(revocations.clone().watch());
    let revocations_listener = bind_remembered(o.xds_addr.ip(), &beside_data("revocations-port"))
        .await
        .map_err(|e| format!("cannot listen for the revocation service: {e}"))?;
    let limits = sidecar::serve::Limits {
        max_connections: usize::from(o.max_connections),
        client_timeout: Duration::from_secs_f64(o.client_timeout),
    };
    tokio::spawn(sidecar::serve::serve(
        revocations_listener.1,
        sidecar::revocations::router(revocations),
        limits,
        std::future::pending(),
    ));
    let filter_settings = with_revocation_service(&o.filter_settings, &revocation_key)?;

    let status = XdsStatus::new();
    let proxy = ProxySettings {
        listen_addr: o.proxy_addr,
        proxy_port: o.proxy_port,
        https_port: o.https_port,
        wasm_path: wasm,
        filter_settings,
        trusted_proxy_hops: o.trusted_proxy_hops,
        backchannel_sink,
        revocations: Some(revocations_listener.0),
        clients: sidecar::translate::ClientLimits {
            timeout: Duration::from_secs_f64(o.client_timeout),
            max_connections: o.proxy_max_connections,
        },
    };
    let xds_listener = tokio::net::TcpListener::bind(o.xds_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (xDS): {e}", o.xds_addr))?;
    let ads = xds::ads_service(routes, Some(providers_rx), proxy, status.clone());
    let xds_task = tokio::spawn(xds::serve_on(xds_listener, ads));

    let status_for_http = status.clone();
    let table_for_http = state.subscribe();
    tokio::spawn(log_not_served(state.subscribe()));
    // `/status` names routes, providers and Envoys: behind the same checks
    // as the Admin API. `/healthz` says only "ok". `not_served`: the stored
    // routes and upstreams this gateway cannot serve (an etcd written by
    // APISIX), with the reason.
    let status_route = axum::Router::new().route(
        "/status",
        get(move || {
            let mut report = serde_json::to_value(status_for_http.report())
                .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
            if let Some(obj) = report.as_object_mut() {
                obj.insert("not_served".into(), table_for_http.borrow().not_served());
            }
            let report = serde_json::to_string_pretty(&report)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            async move { ([("content-type", "application/json")], report) }
        }),
    );
    let app = admin::router(state, status_route).route("/healthz", get(|| async { "ok\n" }));
    let admin_listener = tokio::net::TcpListener::bind(o.admin_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (Admin API): {e}", o.admin_addr))?;
    tracing::info!(admin = %o.admin_addr, xds = %o.xds_addr, "sidecar ready");
    let admin_task = sidecar::serve::serve(admin_listener, app, limits, shutdown());

    tokio::select! {
        () = admin_task => Ok(()),
        r = xds_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("xDS: {e}")),
            Err(e) => Err(format!("xDS task: {e}")),
        },
    }
}

/// A listener on `ip`, on the port written in `file` when it is free (else
/// on a new one, written there).
async fn bind_remembered(
    ip: std::net::IpAddr,
    file: &std::path::Path,
) -> std::io::Result<(SocketAddr, tokio::net::TcpListener)> {
    let remembered = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    let listener = match remembered {
        Some(port) => match tokio::net::TcpListener::bind((ip, port)).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind((ip, 0)).await?,
        },
        None => tokio::net::TcpListener::bind((ip, 0)).await?,
    };
    let addr = listener.local_addr()?;
    if remembered != Some(addr.port()) {
        if let Err(e) = std::fs::write(file, addr.port().to_string()) {
            tracing::warn!("cannot remember the port in {}: {e}", file.display());
        }
    }
    Ok((addr, listener))
}

/// The filter settings with the revocation service (its cluster and
/// key) added; one given in `--filter-settings` is refused.
fn with_revocation_service(settings: &str, key: &str) -> Result<String, String> {
    let mut v: serde_json::Value = if settings.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(settings).map_err(|e| format!("--filter-settings: {e}"))?
    };
    let Some(obj) = v.as_object_mut() else {
        return Err("--filter-settings: not a JSON object".into());
    };
    if obj.contains_key("revocation_service") {
        return Err("--filter-settings: revocation_service is set by the sidecar".into());
    }
    obj.insert(
        "revocation_service".into(),
        serde_json::json!({
            "cluster": sidecar::translate::REVOCATIONS_CLUSTER,
            "key": key,
        }),
    );
    Ok(v.to_string())
}

/// Routes, services and upstreams stored before the node checks (or with other
/// options) that the Admin API would refuse now are still served: each is
/// named in a warning, to be fixed or deleted.
fn warn_about_stored_nodes(set: &store::Stored, nodes: &NodePolicy) {
    let inline = set
        .routes
        .iter()
        .filter_map(|(id, r)| Some(("route", id, r.get("upstream")?, "upstream.")))
        .chain(
            set.services
                .iter()
                .filter_map(|(id, s)| Some(("service", id, s.get("upstream")?, "upstream."))),
        );
    let resources = set.upstreams.iter().map(|(id, u)| ("upstream", id, u, ""));
    for (kind, id, upstream, prefix) in inline.chain(resources) {
        let mut e = route::Errors::new();
        nodes.check(upstream, prefix, &mut e);
        if !e.is_empty() {
            tracing::warn!(
                %id,
                "stored {kind} {id} would be refused now, and is still served: {}",
                e.message()
            );
        }
    }
}

/// Logs each stored route and upstream this gateway cannot serve, with the
/// reason, when it appears (at start-up, and when the published set changes:
/// an etcd shared with APISIX may hold what only APISIX serves).
async fn log_not_served(mut routes: watch::Receiver<Published>) {
    let mut logged: std::collections::BTreeSet<(&'static str, String, String)> =
        std::collections::BTreeSet::new();
    loop {
        let now: std::collections::BTreeSet<(&'static str, String, String)> = {
            let table = routes.borrow_and_update();
            let routes = table.invalid().iter().map(|(id, r)| ("route", id, r));
            let upstreams = table
                .invalid_upstreams()
                .iter()
                .map(|(id, r)| ("upstream", id, r));
            routes
                .chain(upstreams)
                .map(|(kind, id, r)| (kind, id.clone(), r.clone()))
                .collect()
        };
        for (kind, id, reason) in now.difference(&logged) {
            tracing::warn!(
                %id,
                "stored {kind} {id:?} is not served by this gateway: {reason}"
            );
        }
        logged = now;
        if routes.changed().await.is_err() {
            return;
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::with_revocation_service;

    #[test]
    fn the_revocation_service_is_added_to_the_filter_settings_never_taken_from_them() {
        let s = with_revocation_service(r#"{"token_cache_size": 16}"#, "k3y").unwrap();
        let parsed = oidc_core::settings::Settings::parse(s.as_bytes()).unwrap();
        assert_eq!(parsed.token_cache_size, 16);
        let r = parsed.revocation_service.unwrap();
        assert_eq!(
            (r.cluster.as_str(), r.key.expose()),
            (sidecar::translate::REVOCATIONS_CLUSTER, "k3y")
        );
        assert!(with_revocation_service("", "k").is_ok());
        let given = r#"{"revocation_service": {"cluster": "x", "key": "y"}}"#;
        assert!(with_revocation_service(given, "k").is_err());
        assert!(with_revocation_service("[]", "k").is_err());
    }
}
