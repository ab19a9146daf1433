//! The whole gateway as `make run` starts it: the sidecar (Admin API +
//! xDS), then Envoy bootstrapped from `envoy/bootstrap.yaml` to get
//! everything from the sidecar.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::http::{request, Response};
use crate::{envoy_bin, free_port, port_open, repo_root, target_dir, wait_for, wasm_path, Proc};

/// The sidecar binary `cargo build -p sidecar` produces.
pub fn sidecar_bin() -> PathBuf {
    let p = target_dir().join("debug/sidecar");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p sidecar` (make test does)",
        p.display()
    );
    p
}

/// Renders `envoy/bootstrap.yaml`: `${NAME}` placeholders from `vars`.
pub fn render_bootstrap(vars: &[(&str, String)]) -> String {
    let path = repo_root().join("envoy/bootstrap.yaml");
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    assert!(
        !text.contains("${"),
        "envoy/bootstrap.yaml has a placeholder the harness does not fill:\n{text}"
    );
    text
}

pub struct Gateway {
    pub proxy_port: u16,
    pub admin_port: u16,
    pub xds_port: u16,
    pub envoy_admin_port: u16,
    pub data_file: PathBuf,
    dir: PathBuf,
    extra_args: Vec<String>,
    sidecar: Proc,
    envoy: Proc,
    sidecar_starts: u32,
}

impl Gateway {
    /// The stored set as the sidecar would load it from its file store
    /// (the snapshot with the appended writes of its log folded in).
    pub fn stored(&self) -> Result<sidecar::store::Stored, String> {
        sidecar::store::FileStore::new(&self.data_file)
            .read()
            .map_err(|e| e.to_string())
    }

    /// Every byte the file store holds (snapshot and log), for checks of
    /// what never reaches the disk.
    pub fn stored_text(&self) -> String {
        let log = sidecar::store::FileStore::new(&self.data_file).log_path();
        [self.data_file.clone(), log]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the sidecar (waits for `/healthz`), then Envoy (waits for its
    /// listener). `extra_args` go to the sidecar, after the harness's own:
    /// the ports, Envoy's admin address (`--envoy-admin-addr`) and
    /// `--allow-local-upstreams` (the tests' upstreams are on loopback).
    pub fn start(dir: &Path, extra_args: &[&str]) -> Gateway {
        let mut args = vec!["--allow-local-upstreams"];
        args.extend_from_slice(extra_args);
        Gateway::start_strict(dir, &args)
    }

    /// [`Gateway::start`] without `--allow-local-upstreams`: the sidecar
    /// refuses upstream nodes on loopback and link-local addresses.
    pub fn start_strict(dir: &Path, extra_args: &[&str]) -> Gateway {
        Gateway::start_strict_with(dir, extra_args, 1)
    }

    /// [`Gateway::start`] with Envoy running `concurrency` worker threads.
    pub fn start_concurrent(dir: &Path, extra_args: &[&str], concurrency: u32) -> Gateway {
        let mut args = vec!["--allow-local-upstreams"];
        args.extend_from_slice(extra_args);
        Gateway::start_strict_with(dir, &args, concurrency)
    }

    fn start_strict_with(dir: &Path, extra_args: &[&str], concurrency: u32) -> Gateway {
        let proxy_port = free_port();
        let admin_port = free_port();
        let xds_port = free_port();
        let envoy_admin_port = free_port();
        let data_file = dir.join("routes.json");
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        extra_args.splice(
            0..0,
            [
                "--envoy-admin-addr".to_string(),
                format!("127.0.0.1:{envoy_admin_port}"),
            ],
        );
        let sidecar = spawn_sidecar(
            dir,
            0,
            admin_port,
            xds_port,
            proxy_port,
            &data_file,
            &extra_args,
        );
        let bootstrap = render_bootstrap(&[
            ("XDS_PORT", xds_port.to_string()),
            ("ENVOY_ADMIN_PORT", envoy_admin_port.to_string()),
            ("NODE_ID", format!("test-{proxy_port}")),
        ]);
        let bootstrap_file = dir.join("envoy-bootstrap.yaml");
        std::fs::write(&bootstrap_file, bootstrap).expect("write bootstrap");
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c").arg(&bootstrap_file).args([
            "--disable-hot-restart",
            "--concurrency",
            &concurrency.to_string(),
            "-l",
            "info",
        ]);
        let mut envoy = Proc::spawn("envoy", dir, cmd);
        wait_for(
            "Envoy's listener (from the sidecar)",
            Duration::from_secs(30),
            || {
                envoy.assert_running();
                port_open(proxy_port).then_some(())
            },
        );
        Gateway {
            proxy_port,
            admin_port,
            xds_port,
            envoy_admin_port,
            data_file,
            dir: dir.to_path_buf(),
            extra_args,
            sidecar,
            envoy,
            sidecar_starts: 1,
        }
    }

    /// A URL on Envoy's listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy_port)
    }

    /// Calls the Admin API (the body is sent as curl `-d` sends it).
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        request(method, &url, &headers, body.map(|b| b.as_bytes().to_vec()))
            .unwrap_or_else(|e| panic!("Admin API {method} {path}: {e}"))
    }

    /// A stat from Envoy's admin (0 when absent).
    pub fn envoy_stat(&self, name: &str) -> u64 {
        crate::envoy::admin_stat(self.envoy_admin_port, name)
    }

    pub fn sidecar_pid(&self) -> Option<u32> {
        self.sidecar.pid()
    }

    pub fn envoy_pid(&self) -> Option<u32> {
        self.envoy.pid()
    }

    /// Stops Envoy and starts it again (same bootstrap and ports); returns
    /// once its listener is back (its routes come from the sidecar).
    pub fn restart_envoy(&mut self) {
        self.envoy.restart();
        let port = self.proxy_port;
        let envoy = &mut self.envoy;
        wait_for(
            "Envoy's listener after a restart",
            Duration::from_secs(30),
            || {
                envoy.assert_running();
                port_open(port).then_some(())
            },
        );
    }

    /// Kills the sidecar at once (SIGKILL: a crash).
    pub fn kill_sidecar(&mut self) {
        self.sidecar.kill();
    }

    /// Stops the sidecar (Envoy keeps its last configuration).
    pub fn stop_sidecar(&mut self) {
        self.sidecar.stop();
    }

    /// Starts the sidecar again, on the same ports and data file.
    pub fn restart_sidecar(&mut self) {
        self.sidecar.stop();
        self.sidecar = spawn_sidecar(
            &self.dir,
            self.sidecar_starts,
            self.admin_port,
            self.xds_port,
            self.proxy_port,
            &self.data_file,
            &self.extra_args,
        );
        self.sidecar_starts += 1;
    }
}

fn spawn_sidecar(
    dir: &Path,
    n: u32,
    admin_port: u16,
    xds_port: u16,
    proxy_port: u16,
    data_file: &Path,
    extra: &[String],
) -> Proc {
    let mut cmd = Command::new(sidecar_bin());
    cmd.arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin_port}"))
        .arg("--xds-addr")
        .arg(format!("127.0.0.1:{xds_port}"))
        .arg("--proxy-port")
        .arg(proxy_port.to_string())
        .arg("--wasm")
        .arg(wasm_path())
        .arg("--data")
        .arg(data_file)
        .args(extra);
    let name = if n == 0 {
        "sidecar".to_string()
    } else {
        format!("sidecar-{n}")
    };
    let mut proc = Proc::spawn(&name, dir, cmd);
    let health = format!("http://127.0.0.1:{admin_port}/healthz");
    wait_for("the sidecar's /healthz", Duration::from_secs(60), || {
        proc.assert_running();
        let r = crate::get(&health, &[]).ok()?;
        (r.status == 200).then_some(())
    });
    proc
}
