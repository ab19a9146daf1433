//! A headless Chromium driven over WebDriver (Debian `chromium` +
//! `chromium-driver`, installed by `scripts/setup.sh`).
//!
//! [`Browser::start`] runs `/usr/bin/chromedriver` as a [`Proc`] (log:
//! `<dir>/chromedriver.log`) and opens a fantoccini session with a fresh
//! profile in `<dir>/chromium-profile-<n>`. The browser owns a tokio
//! current-thread runtime; every method is BLOCKING (`block_on` inside), so
//! call them from plain `#[test]` functions, like the rest of the harness.
//! Dropping it closes the session, stops chromedriver (its process group)
//! and kills any process still using the profile.
//!
//! ```no_run
//! use integration_tests::{browser::Browser, TestDir};
//! let dir = TestDir::new("example");
//! let browser = Browser::start(dir.path());
//! browser.goto("http://127.0.0.1:8080/");
//! browser.login("quickstart-user", "quickstart-user-pass");
//! assert!(browser.current_url().contains("code="));
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::{free_port, wait_for, Proc};

/// The browser binary (`$CHROMIUM_BIN` overrides).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server (`$CHROMEDRIVER_BIN` overrides).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long `start` waits for chromedriver and the session.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The default wait for elements, navigations and WebDriver commands.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Chromium's flags (plus `--user-data-dir=<fresh>`).
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

fn bin(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// A headless Chromium session. All methods block.
pub struct Browser {
    // Field order: the client is closed (in `drop`) before the runtime and
    // chromedriver go.
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
    driver: Proc,
    profile: PathBuf,
    /// Time from `start` to an open session.
    pub startup: Duration,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh
    /// profile in `dir`. Panics (with the chromedriver log) on failure.
    pub fn start(dir: &Path) -> Browser {
        Browser::start_with(dir, &[])
    }

    /// [`Browser::start`] with Chromium flags added to [`CHROMIUM_ARGS`]
    /// (e.g. `--host-resolver-rules=...` for an HTTPS test's host name).
    pub fn start_with(dir: &Path, extra_args: &[&str]) -> Browser {
        let t0 = Instant::now();
        let chromium = bin("CHROMIUM_BIN", CHROMIUM);
        let chromedriver = bin("CHROMEDRIVER_BIN", CHROMEDRIVER);
        for b in [&chromium, &chromedriver] {
            assert!(
                b.is_file(),
                "{} is missing: run `bash scripts/setup.sh` (it installs Debian's chromium and chromium-driver)",
                b.display()
            );
        }
        let profile = fresh_profile(dir);
        let port = free_port();
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .current_dir(dir);
        let mut driver = Proc::spawn("chromedriver", dir, cmd);
        let status = format!("http://127.0.0.1:{port}/status");
        wait_for("chromedriver /status ready", START_TIMEOUT, || {
            driver.assert_running();
            let r = crate::http::get_timeout(&status, &[], Duration::from_secs(2)).ok()?;
            let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            (v["value"]["ready"] == true).then_some(())
        });

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.extend(extra_args.iter().map(|s| s.to_string()));
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": args,
            },
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt.block_on(async {
            tokio::time::timeout(
                START_TIMEOUT,
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&webdriver),
            )
            .await
        });
        let client = match client {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "cannot open a Chromium session: {e}\n---- {} ----\n{}",
                driver.log_path().display(),
                crate::tail(driver.log_path(), 30)
            ),
            Err(_) => panic!(
                "no Chromium session after {START_TIMEOUT:?}\n---- {} ----\n{}",
                driver.log_path().display(),
                crate::tail(driver.log_path(), 30)
            ),
        };
        Browser {
            client: Some(client),
            rt,
            driver,
            profile,
            startup: t0.elapsed(),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("browser session is open")
    }

    /// Runs one WebDriver future with [`DEFAULT_TIMEOUT`]; panics on error
    /// or timeout, naming `what`.
    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        match self
            .rt
            .block_on(async { tokio::time::timeout(DEFAULT_TIMEOUT, f).await })
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("browser: {what}: {e}"),
            Err(_) => panic!("browser: {what}: timed out after {DEFAULT_TIMEOUT:?}"),
        }
    }

    /// The chromedriver process.
    pub fn driver(&self) -> &Proc {
        &self.driver
    }

    /// The profile folder (`--user-data-dir`).
    pub fn profile(&self) -> &Path {
        &self.profile
    }

    /// Navigates to `url` and waits for the page load.
    pub fn goto(&self, url: &str) {
        self.run(&format!("goto {url}"), self.client().goto(url));
    }

    pub fn current_url(&self) -> String {
        self.run("current_url", self.client().current_url())
            .to_string()
    }

    /// The text of `<body>` (as rendered: `innerText`).
    pub fn page_text(&self) -> String {
        let c = self.client();
        self.run("page_text", async {
            c.find(Locator::Css("body")).await?.text().await
        })
    }

    /// The HTTP status of the current page's document, as the browser's
    /// Navigation Timing reports it (`responseStatus`; after redirects, the
    /// final answer's). `None` when the browser does not say.
    pub fn response_status(&self) -> Option<u16> {
        self.execute(
            "const e = performance.getEntriesByType('navigation')[0]; \
             return e && e.responseStatus ? e.responseStatus : null;",
        )
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
    }

    /// The HTML of the current page.
    pub fn page_source(&self) -> String {
        self.run("page_source", self.client().source())
    }

    pub fn title(&self) -> String {
        self.run("title", self.client().title())
    }

    /// Whether an element matches `css` now.
    pub fn has_element(&self, css: &str) -> bool {
        let c = self.client();
        self.rt.block_on(async {
            tokio::time::timeout(DEFAULT_TIMEOUT, c.find_all(Locator::Css(css)))
                .await
                .ok()
                .and_then(Result::ok)
                .is_some_and(|v| !v.is_empty())
        })
    }

    /// The text of the first element matching `css` (waits for it).
    pub fn text_of(&self, css: &str) -> String {
        self.wait_for_element(css, DEFAULT_TIMEOUT);
        let c = self.client();
        self.run(&format!("text of {css}"), async {
            c.find(Locator::Css(css)).await?.text().await
        })
    }

    /// Clears the field matching `css` and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let c = self.client();
        self.run(&format!("fill {css}"), async {
            let e = c
                .wait()
                .at_most(DEFAULT_TIMEOUT)
                .for_element(Locator::Css(css))
                .await?;
            e.clear().await?;
            e.send_keys(text).await
        });
    }

    /// Clicks the element matching `css` (waits for it to appear).
    pub fn click(&self, css: &str) {
        let c = self.client();
        self.run(&format!("click {css}"), async {
            c.wait()
                .at_most(DEFAULT_TIMEOUT)
                .for_element(Locator::Css(css))
                .await?
                .click()
                .await
        });
    }

    /// Waits until an element matches `css`; panics (with the URL and the
    /// page text) after `timeout`.
    pub fn wait_for_element(&self, css: &str, timeout: Duration) {
        let c = self.client();
        let found = self.rt.block_on(async {
            c.wait()
                .at_most(timeout)
                .every(Duration::from_millis(50))
                .for_element(Locator::Css(css))
                .await
        });
        if let Err(e) = found {
            panic!(
                "browser: no element {css:?} after {timeout:?} ({e}) at {}:\n{:.2000}",
                self.current_url(),
                self.page_text()
            );
        }
    }

    /// Waits until the current URL satisfies `pred`; returns it.
    pub fn wait_for_url(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let url = self.current_url();
            if pred(&url) {
                return url;
            }
            if start.elapsed() > timeout {
                panic!("browser: URL still {url} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fills a Keycloak-style login form (`#username`, `#password`) and
    /// clicks `#kc-login`; waits for the form's page to be left or
    /// re-rendered (the click waits for the navigation it starts).
    pub fn login(&self, user: &str, password: &str) {
        self.wait_for_element("#kc-form-login", DEFAULT_TIMEOUT);
        self.fill("#username", user);
        self.fill("#password", password);
        self.click("#kc-login");
    }

    /// Opens a new tab and switches to it; returns its index.
    pub fn new_tab(&self) -> usize {
        let c = self.client();
        self.run("new tab", async {
            let w = c.new_window(true).await?;
            c.switch_to_window(w.handle).await?;
            Ok::<_, fantoccini::error::CmdError>(c.windows().await?.len() - 1)
        })
    }

    /// Switches to the tab at `index` (in the order WebDriver lists them).
    pub fn switch_to_tab(&self, index: usize) {
        let c = self.client();
        self.run(&format!("switch to tab {index}"), async {
            let mut ws = c.windows().await?;
            assert!(index < ws.len(), "no tab {index}: {} open", ws.len());
            c.switch_to_window(ws.swap_remove(index)).await
        });
    }

    /// The number of open tabs.
    pub fn tab_count(&self) -> usize {
        self.run("windows", self.client().windows()).len()
    }

    /// The cookies visible to the current page, `(name, value)`.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.run("cookies", self.client().get_all_cookies())
            .into_iter()
            .map(|c| (c.name().to_string(), c.value().to_string()))
            .collect()
    }

    /// The names of the current page's cookies that have `Secure`.
    pub fn secure_cookie_names(&self) -> Vec<String> {
        self.run("cookies", self.client().get_all_cookies())
            .into_iter()
            .filter(|c| c.secure() == Some(true))
            .map(|c| c.name().to_string())
            .collect()
    }

    /// Deletes all cookies of the current page's domain.
    pub fn delete_all_cookies(&self) {
        self.run("delete cookies", self.client().delete_all_cookies());
    }

    /// Runs JavaScript in the page; returns its result.
    pub fn execute(&self, script: &str) -> serde_json::Value {
        self.run("execute", self.client().execute(script, Vec::new()))
    }

    /// Live processes started for this browser: chromedriver, its
    /// descendants, and anything whose command line names the profile.
    pub fn processes(&self) -> Vec<u32> {
        session_processes(self.driver.pid(), &self.profile)
    }

    /// Closes the session, stops chromedriver, kills leftovers. Idempotent.
    pub fn close(&mut self) {
        let driver_pid = self.driver.pid();
        // Take the descendants now: once chromedriver is gone, orphans are
        // re-parented and no longer found through it.
        let mut leftovers = session_processes(driver_pid, &self.profile);
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.close()).await });
        }
        self.driver.stop();
        leftovers.extend(session_processes(None, &self.profile));
        for pid in leftovers {
            if crate::pid_alive(pid) && Some(pid) != driver_pid {
                // SAFETY: kill(2) on a PID found just now as a process of
                // this session.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        let profile = self.profile.clone();
        let _ = wait_for_quietly(Duration::from_secs(5), || {
            session_processes(None, &profile).is_empty()
        });
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.driver)
            .field("profile", &self.profile)
            .finish()
    }
}

fn wait_for_quietly(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A new, empty `<dir>/chromium-profile-<n>`.
fn fresh_profile(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let p = dir.join(format!(
        "chromium-profile-{}",
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
    p
}

/// `(ppid, command line)` of every live process.
fn all_processes() -> Vec<(u32, u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| crate::pid_alive(pid))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some((pid, ppid, cmdline))
        })
        .collect()
}

/// Live processes that belong to a session: `root` and its descendants,
/// and any process whose command line names `profile`.
pub fn session_processes(root: Option<u32>, profile: &Path) -> Vec<u32> {
    let procs = all_processes();
    let profile = profile.to_string_lossy();
    let mut found: Vec<u32> = procs
        .iter()
        .filter(|(pid, _, cmd)| Some(*pid) == root || cmd.contains(profile.as_ref()))
        .map(|(pid, _, _)| *pid)
        .collect();
    // Descendants of anything found (fixed point).
    loop {
        let before = found.len();
        for (pid, ppid, _) in &procs {
            if found.contains(ppid) && !found.contains(pid) {
                found.push(*pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found
}
