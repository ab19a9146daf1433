//! A real Keycloak for the tests: the server distribution that
//! `scripts/keycloak.sh` fetched (Maven Central) and unpacked under
//! `build/keycloak`, started in dev mode on a free loopback port with an
//! in-memory database and the repository's `quickstart-realm` imported.
//!
//! Starting takes ~25 s on 2 cores: start one for a whole suite. Where
//! Keycloak cannot be found or started, `start` panics saying exactly why:
//! the suite never passes by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, repo_root, Proc};

/// The pinned version (also in `scripts/keycloak.sh` and
/// `docker-compose.yml`).
pub const KEYCLOAK_VERSION: &str = "26.7.3";
/// The realm file kept in the repository.
pub const REALM_FILE: &str = "keycloak/quickstart-realm-realm.json";
/// The confidential client's secret in that realm file.
pub const CLIENT_SECRET: &str = "quickstart-client-secret-0123456789";
/// The master realm's admin (`KC_BOOTSTRAP_ADMIN_*`), for tests that use
/// the admin API (a loopback Keycloak with an in-memory database).
pub const ADMIN_USER: &str = "test-admin";
pub const ADMIN_PASSWORD: &str = "test-admin-password-0123456789";

/// Where `scripts/keycloak.sh` unpacks the distribution.
pub fn keycloak_home() -> PathBuf {
    repo_root().join(format!("build/keycloak/keycloak-{KEYCLOAK_VERSION}"))
}

pub struct Keycloak {
    pub port: u16,
    pub startup: Duration,
    proc: Proc,
}

impl Keycloak {
    /// Starts Keycloak and waits (up to 180 s) for the realm's discovery
    /// document.
    pub fn start(dir: &Path) -> Keycloak {
        let home = keycloak_home();
        let kc = home.join("bin/kc.sh");
        assert!(
            kc.is_file(),
            "Keycloak {KEYCLOAK_VERSION} is not installed at {}: run `bash scripts/keycloak.sh` \
             (make setup does; it needs Maven and Maven Central)",
            home.display()
        );
        let imported = home.join("data/import/quickstart-realm-realm.json");
        let realm = std::fs::read(repo_root().join(REALM_FILE)).expect("the realm file");
        assert_eq!(
            std::fs::read(&imported).ok().as_deref(),
            Some(realm.as_slice()),
            "{} is not the repository's {REALM_FILE}: run `bash scripts/keycloak.sh`",
            imported.display()
        );
        let port = free_port();
        let mut cmd = Command::new("bash");
        cmd.arg(&kc)
            .args([
                "start-dev",
                "--http-host",
                "127.0.0.1",
                "--http-port",
                &port.to_string(),
                "--db",
                "dev-mem",
                "--import-realm",
                "--log-level",
                "warn",
            ])
            // Keycloak's management interface (9000 by default) is not
            // used; keep it off a fixed port.
            .env("KC_HTTP_MANAGEMENT_PORT", free_port().to_string())
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USER)
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .current_dir(dir);
        let started = Instant::now();
        let mut proc = Proc::spawn("keycloak", dir, cmd);
        let url = format!(
            "http://127.0.0.1:{port}/realms/quickstart-realm/.well-known/openid-configuration"
        );
        loop {
            if !proc.is_running() {
                proc.assert_running();
            }
            if crate::http::get_timeout(&url, &[], Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200)
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(180) {
                panic!(
                    "Keycloak did not serve {url} within 180 s; its log: {}\n{}",
                    proc.log_path().display(),
                    crate::tail(proc.log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Keycloak {
            port,
            startup: started.elapsed(),
            proc,
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}/realms/quickstart-realm", self.port)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// A token endpoint answer for these form fields (client authenticated
    /// in the body, as the tutorial does).
    pub fn token(&self, fields: &[(&str, &str)]) -> serde_json::Value {
        let mut form = vec![
            ("client_id", crate::provider::CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ];
        form.extend_from_slice(fields);
        let r = crate::http::post_form(&self.token_url(), &form, None).expect("Keycloak answers");
        assert_eq!(r.status, 200, "Keycloak's token endpoint: {}", r.body);
        r.json()
    }

    /// An access token of the master realm's admin (`admin-cli`).
    pub fn admin_token(&self) -> String {
        let url = format!(
            "http://127.0.0.1:{}/realms/master/protocol/openid-connect/token",
            self.port
        );
        let form = [
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", ADMIN_USER),
            ("password", ADMIN_PASSWORD),
        ];
        let r = crate::http::post_form(&url, &form, None).expect("Keycloak answers");
        assert_eq!(r.status, 200, "the admin's token: {}", r.body);
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// A call to the admin API of the quickstart realm (`path` after
    /// `/admin/realms/quickstart-realm`) with a JSON body.
    pub fn admin(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> crate::Response {
        let url = format!(
            "http://127.0.0.1:{}/admin/realms/quickstart-realm{path}",
            self.port
        );
        let auth = format!("Bearer {token}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        crate::http::request(method, &url, &headers, body.map(|b| b.to_string().into()))
            .expect("Keycloak answers")
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }
}
