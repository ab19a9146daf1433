//! The test OpenID provider (`tests/idp`, npm `oidc-provider` shaped like
//! Keycloak's `quickstart-realm`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::http::{post_form, Response};
use crate::{free_port, repo_root, wait_for, Proc};

pub const CLIENT_ID: &str = "apisix-quickstart-client";
pub const CLIENT_SECRET: &str = "quickstart-client-secret-0123456789";
pub const USER: &str = "quickstart-user";
pub const PASSWORD: &str = "quickstart-user-pass";

pub struct Idp {
    pub port: u16,
    dir: PathBuf,
    proc: Proc,
    starts: u32,
}

impl Idp {
    pub fn start(dir: &Path) -> Idp {
        let port = free_port();
        let proc = Idp::spawn(dir, port, 0);
        Idp {
            port,
            dir: dir.to_path_buf(),
            proc,
            starts: 1,
        }
    }

    fn spawn(dir: &Path, port: u16, n: u32) -> Proc {
        let mut cmd = Command::new("node");
        cmd.arg(repo_root().join("tests/provider/server.js"))
            .env("PORT", port.to_string())
            .env("CLIENT_SECRET", CLIENT_SECRET);
        let mut proc = Proc::spawn(&format!("idp-{n}"), dir, cmd);
        let url = format!(
            "http://127.0.0.1:{port}/realms/quickstart-realm/.well-known/openid-configuration"
        );
        wait_for("the OpenID provider", Duration::from_secs(30), || {
            proc.assert_running();
            let r = crate::get(&url, &[]).ok()?;
            (r.status == 200).then_some(())
        });
        proc
    }

    /// Stops the provider (requests that need it now fail).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Restarts on the same port; the provider draws a new signing key.
    pub fn restart(&mut self) {
        self.proc.stop();
        self.proc = Idp::spawn(&self.dir, self.port, self.starts);
        self.starts += 1;
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}/realms/quickstart-realm", self.port)
    }

    pub fn discovery(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    fn token(&self, form: &[(&str, &str)]) -> serde_json::Value {
        let r: Response = post_form(
            &self.token_endpoint(),
            form,
            Some((CLIENT_ID, CLIENT_SECRET)),
        )
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

    /// The password grant's response (access, refresh and ID tokens).
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
        let r = post_form(&url, &[("token", token)], Some((CLIENT_ID, CLIENT_SECRET)))
            .expect("revocation endpoint");
        assert_eq!(r.status, 200, "revocation: {}", r.body);
    }
}
