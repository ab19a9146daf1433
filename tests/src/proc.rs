//! Child processes in their own process group, stopped by PID on drop.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, repo_root, wait_for};

/// A running child process. Dropping it stops it (SIGTERM to its process
/// group, SIGKILL after 5 s).
pub struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command) -> Proc {
        use std::os::unix::process::CommandExt as _;
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .expect("open log file");
        let err = log.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("{} exited early: {status}", self.name);
            }
        }
    }

    /// Stops the process and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        // SAFETY: plain syscalls on a process group this harness created.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                // Also reap anything left in the group.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a process with this PID exists.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// httpbin under gunicorn from `.venv`.
pub struct Httpbin {
    pub port: u16,
    pub proc: Proc,
}

impl Httpbin {
    pub fn start(dir: &Path) -> Httpbin {
        let port = free_port();
        let mut cmd = Command::new(repo_root().join(".venv/bin/gunicorn"));
        cmd.args([
            "-b",
            &format!("127.0.0.1:{port}"),
            "-w",
            "2",
            "--no-control-socket",
            "httpbin:app",
        ]);
        let mut proc = Proc::spawn("httpbin", dir, cmd);
        wait_for("httpbin", Duration::from_secs(20), || {
            proc.assert_running();
            let r = crate::get(&format!("http://127.0.0.1:{port}/get"), &[]).ok()?;
            (r.status == 200).then_some(())
        });
        Httpbin { port, proc }
    }
}
