//! The README's tutorial, run as written against `make demo`'s stack
//! (`scripts/demo.sh`), so the README cannot drift from the code.
//!
//! Steps are the README's fenced `sh` blocks preceded by a directive:
//! `<!-- tutorial: run -->`, `<!-- tutorial: expect <text> -->` (the
//! output must contain the text), `<!-- tutorial: browser-login <url> -->`
//! and `<!-- tutorial: browser-wrong-password <url> -->` (done in headless
//! Chromium). The demo runs on free ports; the README's default ports are
//! rewritten in every command and URL.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::browser::Browser;
use integration_tests::gateway::sidecar_bin;
use integration_tests::provider::{PASSWORD, USER};
use integration_tests::{free_port, repo_root, wait_for, Proc, TestDir};

#[derive(Debug)]
enum Step {
    Shell {
        script: String,
        expect: Option<String>,
    },
    BrowserLogin(String),
    BrowserWrongPassword(String),
}

/// The tutorial's steps, in README order.
fn steps(readme: &str) -> Vec<Step> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        let Some(directive) = line
            .strip_prefix("<!-- tutorial:")
            .and_then(|d| d.strip_suffix("-->"))
            .map(str::trim)
        else {
            continue;
        };
        let (verb, arg) = directive.split_once(' ').unwrap_or((directive, ""));
        let arg = arg.trim().to_string();
        match verb {
            "run" | "expect" => {
                assert_eq!(
                    lines.get(i).map(|l| l.trim()),
                    Some("```sh"),
                    "README line {i}: a `{verb}` directive must be followed by a ```sh block"
                );
                let start = i + 1;
                let end = start
                    + lines[start..]
                        .iter()
                        .position(|l| l.trim() == "```")
                        .expect("the sh block ends");
                let script = lines[start..end].join("\n");
                i = end + 1;
                let expect = (verb == "expect").then_some(arg);
                out.push(Step::Shell { script, expect });
            }
            "browser-login" => out.push(Step::BrowserLogin(arg)),
            "browser-wrong-password" => out.push(Step::BrowserWrongPassword(arg)),
            other => panic!("README: unknown tutorial directive {other:?}"),
        }
    }
    out
}

struct Ports {
    proxy: u16,
    admin: u16,
    idp: u16,
    upstream: u16,
}

impl Ports {
    /// The README's default ports → this run's.
    fn rewrite(&self, text: &str) -> String {
        text.replace(":9080", &format!(":{}", self.proxy))
            .replace(":9180", &format!(":{}", self.admin))
            .replace(":8080", &format!(":{}", self.idp))
            .replace(":8090", &format!(":{}", self.upstream))
    }
}

/// Runs one shell step in bash with the variables the earlier steps set
/// (kept in `state`); returns stdout and stderr.
fn run_shell(dir: &Path, state: &Path, script: &str) -> (bool, String) {
    let wrapper = format!(
        "set -a\n[ -f '{s}' ] && . '{s}'\n{script}\nstatus=$?\nexport -p > '{s}'\nexit $status\n",
        s = state.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&wrapper)
        .current_dir(dir)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_readme_tutorial_works_against_make_demo() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let steps = steps(&readme);
    assert!(steps.len() >= 20, "the tutorial has its steps: {steps:?}");

    let dir = TestDir::for_current_test();
    let ports = Ports {
        proxy: free_port(),
        admin: free_port(),
        idp: free_port(),
        upstream: free_port(),
    };
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/demo.sh"))
        .env("PROXY_PORT", ports.proxy.to_string())
        .env("ADMIN_PORT", ports.admin.to_string())
        .env("IDP_PORT", ports.idp.to_string())
        .env("UPSTREAM_PORT", ports.upstream.to_string())
        .env("XDS_PORT", free_port().to_string())
        .env("ENVOY_ADMIN_PORT", free_port().to_string())
        .env("DEMO_DIR", dir.path().join("demo"))
        .env("SIDECAR", sidecar_bin());
    let mut demo = Proc::spawn("demo", dir.path(), cmd);
    let banner = wait_for("make demo's stack", Duration::from_secs(120), || {
        demo.assert_running();
        let log = std::fs::read_to_string(demo.log_path()).unwrap_or_default();
        log.contains("Ctrl-C stops everything.").then_some(log)
    });

    // What the demo prints is what the README tells people to paste.
    let Step::Shell {
        script: exports, ..
    } = &steps[0]
    else {
        panic!("the tutorial starts with the export lines")
    };
    for line in ports.rewrite(exports).lines() {
        assert!(
            banner.contains(line),
            "make demo prints {line:?}, as README.md says:\n{banner}"
        );
    }

    let state = dir.path().join("tutorial-vars.sh");
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Shell { script, expect } => {
                let script = ports.rewrite(script);
                let (ok, output) = run_shell(dir.path(), &state, &script);
                assert!(ok, "step {n} failed:\n{script}\n---\n{output}");
                if let Some(expected) = expect {
                    assert!(
                        output.contains(expected.as_str()),
                        "step {n}: expected {expected:?} in the output of\n{script}\n---\n{output}"
                    );
                }
            }
            Step::BrowserLogin(url) => {
                // A fresh browser each time (the README's "private window").
                let url = ports.rewrite(url);
                let browser = Browser::start(dir.path());
                browser.goto(&url);
                browser.wait_for_element("#kc-form-login", Duration::from_secs(15));
                browser.login(USER, PASSWORD);
                let back = format!("http://localhost:{}/anything/test", ports.proxy);
                browser.wait_for_url(Duration::from_secs(15), |u| u == back);
                let page = browser.page_text();
                for header in ["X-Access-Token", "X-Id-Token", "X-Userinfo"] {
                    assert!(page.contains(header), "step {n}: {header} in\n{page}");
                }
            }
            Step::BrowserWrongPassword(url) => {
                let url = ports.rewrite(url);
                let browser = Browser::start(dir.path());
                browser.goto(&url);
                browser.wait_for_element("#kc-form-login", Duration::from_secs(15));
                browser.login(USER, "not-the-password");
                browser.wait_for_element("#input-error", Duration::from_secs(15));
                assert!(
                    browser
                        .text_of("#input-error")
                        .contains("Invalid username or password"),
                    "step {n}: {}",
                    browser.page_text()
                );
            }
        }
    }
    demo.stop();
}
