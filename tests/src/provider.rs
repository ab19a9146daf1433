//! The node OpenID provider in `tests/provider` (npm `oidc-provider` shaped
//! like Keycloak's `quickstart-realm`): `node tests/provider/server.js` with
//! `PORT`, and optionally `KEY_FILE`, `ACCESS_TOKEN_TTL`, `CLIENT_SECRET`,
//! `EXTRA_ROLES`, `REDIRECT_URIS` (through [`ProviderOptions::env`]).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::envoy::Cluster;
use crate::{free_port, repo_root, wait_for, Proc};

/// The issuer's path.
pub const REALM_PATH: &str = "/realms/quickstart-realm";
pub const CLIENT_ID: &str = "apisix-quickstart-client";
pub const USER: &str = "quickstart-user";
pub const PASSWORD: &str = "quickstart-user-pass";
/// `CLIENT_SECRET` when none is given.
pub const DEFAULT_CLIENT_SECRET: &str = "quickstart-client-secret-0123456789";
/// How long `start`/`restart` wait for the discovery document: node starts
/// in ~0.5 s, but a loaded 2-core machine (several suites at once) was seen
/// to need more than 20 s.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// One start attempt of `start` (node answers in ~0.5 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: u32 = 3;

/// The provider's environment.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// `KEY_FILE`: signing keys to load instead of fresh ones (so that a
    /// restart keeps them).
    pub key_file: Option<PathBuf>,
    /// `ACCESS_TOKEN_TTL`, seconds.
    pub access_token_ttl: Option<u64>,
    /// `CLIENT_SECRET` (default [`DEFAULT_CLIENT_SECRET`]).
    pub client_secret: Option<String>,
    /// `EXTRA_ROLES`: this many 40-character Keycloak realm roles
    /// (`realm_access.roles`) in the ID token, the access tokens and
    /// userinfo, for large tokens and sessions.
    pub extra_roles: Option<u32>,
    /// Any other variables.
    pub env: Vec<(String, String)>,
}

/// A running provider; issuer `http://127.0.0.1:<port>/realms/quickstart-realm`.
pub struct Provider {
    pub port: u16,
    pub options: ProviderOptions,
    proc: Proc,
}

/// The directory of the provider's code.
pub fn provider_dir() -> PathBuf {
    repo_root().join("tests/provider")
}

/// `$NODE_BIN`, else a `node` that npm installed in the provider's
/// `node_modules/.bin`, else `node` on `PATH`.
pub fn node_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NODE_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = provider_dir().join("node_modules/.bin/node");
    if local.is_file() {
        local
    } else {
        PathBuf::from("node")
    }
}

impl Provider {
    /// Starts it on a free port and waits for its discovery document.
    pub fn start(dir: &std::path::Path, options: ProviderOptions) -> Provider {
        let server = provider_dir().join("server.js");
        assert!(server.is_file(), "{} is missing", server.display());
        assert!(
            provider_dir().join("node_modules").is_dir(),
            "{}/node_modules is missing: run `bash scripts/setup.sh`",
            provider_dir().display()
        );
        // Twice in CI runs a provider printed node's start-up warning and
        // then neither listened nor exited. Rather than fail a suite on
        // that, a start that does not answer within ATTEMPT_TIMEOUT is
        // killed and tried again on a fresh port (said on stderr).
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let mut p = Provider {
                proc: Proc::spawn("provider", dir, command(port, &options)),
                port,
                options: options.clone(),
            };
            if p.ready_within(ATTEMPT_TIMEOUT) {
                return p;
            }
            eprintln!(
                "the test provider on port {port} did not answer within {ATTEMPT_TIMEOUT:?} \
                 (attempt {attempt} of {START_ATTEMPTS}); starting it again"
            );
            p.proc.kill();
        }
        panic!("the test provider did not start in {START_ATTEMPTS} attempts; see provider.log");
    }

    /// Whether the discovery document answers 200 within `timeout` (panics
    /// if the process exits).
    fn ready_within(&mut self, timeout: Duration) -> bool {
        let url = self.discovery_url();
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            self.proc.assert_running();
            if crate::http::get_timeout(&url, &[], Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn wait_ready(&mut self) {
        let url = self.discovery_url();
        let proc = &mut self.proc;
        wait_for("the OpenID provider", START_TIMEOUT, || {
            proc.assert_running();
            let r = crate::http::get_timeout(&url, &[], Duration::from_secs(2)).ok()?;
            (r.status == 200).then_some(())
        });
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn issuer(&self) -> String {
        self.url(REALM_PATH)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    pub fn client_id(&self) -> &'static str {
        CLIENT_ID
    }

    pub fn client_secret(&self) -> &str {
        self.options
            .client_secret
            .as_deref()
            .unwrap_or(DEFAULT_CLIENT_SECRET)
    }

    /// The cluster the filter calls for this provider.
    pub fn cluster(&self) -> Cluster {
        Cluster::provider(&self.issuer())
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Stops it (calls to it are refused until `restart`).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Stops it (if running) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.proc.stop();
        self.proc = Proc::spawn(
            "provider",
            self.proc_dir(),
            command(self.port, &self.options),
        );
        self.wait_ready();
    }

    /// Restarts it on the same port with other options.
    pub fn restart_with(&mut self, options: ProviderOptions) {
        self.options = options;
        self.restart();
    }

    fn token(&self, form: &[(&str, &str)]) -> serde_json::Value {
        let url = format!("{}/protocol/openid-connect/token", self.issuer());
        let r = crate::http::post_form(&url, form, Some((CLIENT_ID, self.client_secret())))
            .expect("token endpoint");
        assert_eq!(r.status, 200, "token endpoint: {}", r.body);
        r.json()
    }

    /// An access token from the client-credentials grant.
    pub fn client_credentials_token(&self) -> String {
        self.token(&[
            ("grant_type", "client_credentials"),
            ("scope", "openid profile"),
        ])["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// The password grant's response for `quickstart-user` (access,
    /// refresh and ID tokens).
    pub fn password_grant(&self) -> serde_json::Value {
        self.token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
            ("scope", "openid profile"),
        ])
    }

    /// The refresh grant's response.
    pub fn refresh(&self, refresh_token: &str) -> serde_json::Value {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
    }

    /// Revokes a token at the provider.
    pub fn revoke(&self, token: &str) {
        let url = format!("{}/protocol/openid-connect/revoke", self.issuer());
        let r = crate::http::post_form(
            &url,
            &[("token", token)],
            Some((CLIENT_ID, self.client_secret())),
        )
        .expect("revocation endpoint");
        assert_eq!(r.status, 200, "revocation: {}", r.body);
    }

    fn proc_dir(&self) -> &std::path::Path {
        self.proc
            .log_path()
            .parent()
            .unwrap_or(std::path::Path::new("."))
    }
}

fn command(port: u16, o: &ProviderOptions) -> Command {
    let mut cmd = Command::new(node_bin());
    cmd.arg("server.js")
        .current_dir(provider_dir())
        .env("PORT", port.to_string());
    if let Some(k) = &o.key_file {
        cmd.env("KEY_FILE", k);
    }
    if let Some(ttl) = o.access_token_ttl {
        cmd.env("ACCESS_TOKEN_TTL", ttl.to_string());
    }
    if let Some(s) = &o.client_secret {
        cmd.env("CLIENT_SECRET", s);
    }
    if let Some(n) = o.extra_roles {
        cmd.env("EXTRA_ROLES", n.to_string());
    }
    for (k, v) in &o.env {
        cmd.env(k, v);
    }
    cmd
}

/// `node tests/provider/sign.js <args>` with `stdin`.
pub fn sign_js(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(node_bin())
        .arg("sign.js")
        .args(args)
        .current_dir(provider_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node sign.js");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sign.js {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}
