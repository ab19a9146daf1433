//! A single-member etcd v3 (Debian `etcd-server`, installed by
//! `scripts/setup.sh`) on free loopback ports, its data in the test folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, port_open, wait_for, Proc};

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the `PATH`.
pub fn etcd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!("etcd is missing: run `bash scripts/setup.sh` (Debian package etcd-server)");
}

pub struct Etcd {
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    proc: Proc,
}

impl Etcd {
    /// Starts etcd with its data in `<dir>/etcd-data`, its log in
    /// `<dir>/etcd.log`; returns once it answers.
    pub fn start(dir: &Path) -> Etcd {
        let client_port = free_port();
        let peer_port = free_port();
        let data_dir = dir.join("etcd-data");
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .arg("--log-level")
            .arg("warn")
            .arg("--logger")
            .arg("zap");
        // etcd 3.4 runs on other architectures than amd64 only with this
        // (and warns about it on amd64).
        if std::env::consts::ARCH != "x86_64" {
            cmd.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        }
        let mut etcd = Etcd {
            client_port,
            peer_port,
            data_dir,
            proc: Proc::spawn("etcd", dir, cmd),
        };
        etcd.wait_ready();
        etcd
    }

    /// `http://127.0.0.1:<client port>`: the sidecar's `--etcd`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn wait_ready(&mut self) {
        let health = format!("{}/health", self.url());
        let proc = &mut self.proc;
        wait_for("etcd's /health", Duration::from_secs(60), || {
            proc.assert_running();
            let r = crate::get(&health, &[]).ok()?;
            (r.status == 200 && r.body.contains("true")).then_some(())
        });
    }

    /// Stops etcd (SIGTERM); its data stays.
    pub fn stop(&mut self) {
        self.proc.stop();
        wait_for("etcd's port to close", Duration::from_secs(10), || {
            (!port_open(self.client_port)).then_some(())
        });
    }

    /// Starts it again on the same ports and data; returns once it answers.
    pub fn start_again(&mut self) {
        self.proc.start();
        self.wait_ready();
    }

    /// etcd's v3 JSON gateway: `POST /v3/<path>` with `body`.
    pub fn v3(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let url = format!("{}/v3/{path}", self.url());
        let r = crate::http::request(
            "POST",
            &url,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
        assert_eq!(r.status, 200, "etcd {path}: {}", r.body);
        r.json()
    }

    /// The value stored at `key` (None if absent), read from etcd itself.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        let r = self.v3(
            "kv/range",
            &serde_json::json!({ "key": b64(key.as_bytes()) }),
        );
        let kv = r.get("kvs")?.get(0)?;
        let value = kv.get("value")?.as_str()?;
        let bytes = base64_decode(value);
        Some(serde_json::from_slice(&bytes).expect("a JSON value"))
    }

    /// Writes `value` at `key` in etcd itself (not through a sidecar).
    pub fn put(&self, key: &str, value: &serde_json::Value) {
        self.v3(
            "kv/put",
            &serde_json::json!({
                "key": b64(key.as_bytes()),
                "value": b64(value.to_string().as_bytes()),
            }),
        );
    }

    /// Compacts etcd's history up to its current revision.
    pub fn compact(&self) -> i64 {
        let r = self.v3("kv/range", &serde_json::json!({ "key": b64(b"/") }));
        let rev: i64 = r["header"]["revision"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a revision");
        self.v3(
            "kv/compaction",
            &serde_json::json!({ "revision": rev.to_string(), "physical": true }),
        );
        rev
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64 from etcd")
}
