//! Child processes in their own process group, stopped by PID on drop.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, tail, venv_file, wait_for};

/// How long `stop` waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A command, kept so that a process can be started again.
#[derive(Debug, Clone)]
struct Spec {
    program: OsString,
    args: Vec<OsString>,
    /// `None`: remove the variable.
    envs: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
}

impl Spec {
    fn of(cmd: &Command) -> Spec {
        Spec {
            program: cmd.get_program().to_owned(),
            args: cmd.get_args().map(ToOwned::to_owned).collect(),
            envs: cmd
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
            cwd: cmd.get_current_dir().map(Path::to_path_buf),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        cmd
    }

    fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A child process in a process group of its own, with stdout and stderr
/// in `<dir>/<name>.log` (appended to across restarts). Dropping it stops
/// it: SIGTERM to the whole group (helpers it forked, such as gunicorn's
/// workers, included), SIGKILL after [`STOP_TIMEOUT`].
pub struct Proc {
    name: String,
    log: PathBuf,
    spec: Spec,
    child: Option<Child>,
    starts: u32,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `<dir>/<name>.log`. Panics if
    /// it cannot be started.
    pub fn spawn(name: &str, dir: &Path, cmd: Command) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            log: dir.join(format!("{name}.log")),
            spec: Spec::of(&cmd),
            child: None,
            starts: 0,
        };
        p.start();
        p
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The PID, unless stopped (it may have exited: see [`Proc::is_running`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process again if it is not running (same command).
    pub fn start(&mut self) {
        if self.is_running() {
            return;
        }
        self.reap();
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", self.log.display()));
        if self.starts > 1 {
            use std::io::Write as _;
            let _ = writeln!(&log, "==== harness: start #{} ====", self.starts);
        }
        let err = log.try_clone().expect("clone log file handle");
        let mut cmd = self.spec.command();
        {
            use std::os::unix::process::CommandExt as _;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err))
                .process_group(0);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (`{}`): {e}",
                self.name,
                self.spec.display()
            )
        });
        self.child = Some(child);
    }

    /// Whether it has been started, not stopped, and has not exited. Does
    /// not reap it, so its PID cannot be reused before `stop`.
    pub fn is_running(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| !exited_nowait(c.id() as libc::pid_t))
    }

    /// Panics, with the end of its log, if the process has exited.
    pub fn assert_running(&mut self) {
        if self.child.is_some() && !self.is_running() {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .map(|s| s.to_string())
                .unwrap_or_default();
            panic!(
                "{} exited early ({status}): `{}`\n---- last lines of {} ----\n{}",
                self.name,
                self.spec.display(),
                self.log.display(),
                tail(&self.log, 30)
            );
        }
    }

    /// SIGTERM to the process group, SIGKILL after [`STOP_TIMEOUT`], then
    /// SIGKILL to whatever is left in the group, then reaps. A no-op when
    /// not started.
    pub fn stop(&mut self) {
        self.terminate(libc::SIGTERM, STOP_TIMEOUT);
    }

    /// SIGKILL to the group at once (a crash, as the others see it).
    pub fn kill(&mut self) {
        self.terminate(libc::SIGKILL, Duration::ZERO);
    }

    /// `stop`, then `start` with the same command.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    fn terminate(&mut self, signal: libc::c_int, grace: Duration) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        // Until it is reaped below the leader is at worst a zombie, so its
        // PID (= the group id) cannot be reused while it is signalled.
        signal_group(pgid, signal);
        if !wait_exit(pgid, grace) {
            signal_group(pgid, libc::SIGKILL);
            if !wait_exit(pgid, Duration::from_secs(10)) {
                eprintln!("warning: {} (pid {pgid}) survived SIGKILL", self.name);
            }
        }
        signal_group(pgid, libc::SIGKILL);
        self.reap();
    }

    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .finish()
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group that this
    // harness created (the leader is not reaped yet).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether our child `pid` has exited, leaving it unreaped (`WNOWAIT`).
fn exited_nowait(pid: libc::pid_t) -> bool {
    // SAFETY: waitid with WNOHANG | WNOWAIT only inspects our own child.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // -1 (ECHILD): not our child any more.
        rc == -1 || info.si_pid() != 0
    }
}

fn wait_exit(pid: libc::pid_t, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if exited_nowait(pid) {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `(state, process group)` of a PID, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command: state ppid pgrp ...
    let mut f = stat.rsplit_once(')')?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// Whether a live (not zombie) process has this PID.
pub fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The live processes of process group `pgid` (a [`Proc`]'s group id is its
/// PID).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// httpbin under gunicorn from `.venv`.
pub struct Httpbin {
    pub port: u16,
    pub proc: Proc,
}

impl Httpbin {
    /// The cluster name tests give httpbin by convention.
    pub const CLUSTER: &'static str = "httpbin";

    pub fn start(dir: &Path) -> Httpbin {
        let port = free_port();
        let mut cmd = Command::new(venv_file("bin/gunicorn"));
        // Sync workers answer `Connection: close`, so Envoy never reuses a
        // connection gunicorn is about to close. --no-control-socket:
        // gunicorn >= 24 otherwise puts one control socket for all its
        // instances at ~/.gunicorn/gunicorn.ctl.
        cmd.args([
            "-b",
            &format!("127.0.0.1:{port}"),
            "-w",
            "2",
            "--graceful-timeout",
            "2",
            "--no-control-socket",
            "--access-logfile",
            "-",
            "httpbin:app",
        ])
        .current_dir(dir);
        let mut hb = Httpbin {
            port,
            proc: Proc::spawn("httpbin", dir, cmd),
        };
        hb.wait_ready();
        hb
    }

    fn wait_ready(&mut self) {
        let url = self.url("/get");
        let proc = &mut self.proc;
        wait_for("httpbin", Duration::from_secs(60), || {
            proc.assert_running();
            let r = crate::http::get_timeout(&url, &[], Duration::from_secs(2)).ok()?;
            (r.status == 200).then_some(())
        });
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Stops (if running) and starts again on the same port.
    pub fn restart(&mut self) {
        self.proc.restart();
        self.wait_ready();
    }
}
