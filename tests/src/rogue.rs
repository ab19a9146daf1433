//! The misbehaving OpenID provider in `tests/rogue/server.js` (real HTTP,
//! real RSA signatures, one realm per case): the relying-party
//! certification cases and the hostile-provider cases (slow and oversized
//! documents). `node tests/rogue/server.js` with `PORT`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::envoy::Cluster;
use crate::{free_port, repo_root, wait_for, Proc};

/// The client every rogue realm knows.
pub const CLIENT_ID: &str = "rp-client";
pub const CLIENT_SECRET: &str = "rp-client-secret-0123456789";

pub struct Rogue {
    pub port: u16,
    proc: Proc,
}

impl Rogue {
    /// Starts it on a free port and waits until it listens.
    pub fn start(dir: &Path) -> Rogue {
        let port = free_port();
        let mut cmd = Command::new(crate::provider::node_bin());
        cmd.arg(repo_root().join("tests/rogue/server.js"))
            .env("PORT", port.to_string());
        let mut proc = Proc::spawn("rogue", dir, cmd);
        wait_for("the rogue provider", Duration::from_secs(10), || {
            proc.assert_running();
            crate::port_open(port).then_some(())
        });
        Rogue { port, proc }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The discovery URL of `realm`.
    pub fn discovery(&self, realm: &str) -> String {
        format!("{}/{realm}/.well-known/openid-configuration", self.base())
    }

    /// The issuer of `realm`.
    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/{realm}", self.base())
    }

    /// Envoy's cluster for it (the name the filter derives from the URL).
    pub fn cluster(&self) -> Cluster {
        Cluster::provider(&self.base())
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
