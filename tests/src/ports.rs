//! Free loopback ports that concurrent test processes do not fight over.
//!
//! A port is handed out once per process (a process-wide set) and, across
//! processes, only to the process that holds an exclusive `flock` on
//! `$TMPDIR/oidc-filter-test-ports/<port>.lock` (held until the process
//! exits, so the kernel releases it even after a crash). Candidates are drawn
//! at random from below the kernel's ephemeral range, so an outgoing
//! connection's source port cannot take a port between the moment it is
//! handed out and the moment a server binds it. Each candidate must also
//! bind on 127.0.0.1 at the time it is chosen.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Ports handed out by this process, with the lock file that reserves each.
fn handed_out() -> &'static Mutex<HashMap<u16, Option<File>>> {
    static PORTS: OnceLock<Mutex<HashMap<u16, Option<File>>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("oidc-filter-test-ports")
}

/// The kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

enum Reservation {
    /// This process now holds the port's lock.
    Held(File),
    /// Another process holds it.
    Taken,
    /// No lock file could be made: rely on the in-process set and `bind`.
    Unavailable,
}

/// An exclusive, non-blocking `flock` on the port's lock file.
fn reserve_across_processes(port: u16) -> Reservation {
    let dir = lock_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return Reservation::Unavailable;
    }
    let Ok(file) = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
    else {
        return Reservation::Unavailable;
    };
    // SAFETY: flock on a file descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Reservation::Held(file)
    } else {
        Reservation::Taken
    }
}

/// Hands `port` out if no one else has it: returns the lock to keep.
fn try_take(ports: &HashMap<u16, Option<File>>, port: u16) -> Option<Option<File>> {
    if ports.contains_key(&port) {
        return None;
    }
    let lock = match reserve_across_processes(port) {
        Reservation::Held(f) => Some(f),
        Reservation::Taken => return None,
        Reservation::Unavailable => None,
    };
    // Checked after locking; on failure the lock is dropped (released).
    bindable(port).then_some(lock)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback TCP port that no other caller of `free_port` (in this process
/// or another) gets, and that is free right now. Panics (with a message)
/// only when thousands of candidates have failed.
pub fn free_port() -> u16 {
    let (ephemeral_low, _) = ephemeral_range();
    // Ports 10000 .. ephemeral_low; fall back to the kernel's choice when the
    // range is odd.
    let (low, high) = (10000u32, u32::from(ephemeral_low));
    let mut ports = handed_out()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if high > low + 1000 {
        for _ in 0..5000 {
            let port = (low + (random_u64() % u64::from(high - low)) as u32) as u16;
            if let Some(lock) = try_take(&ports, port) {
                ports.insert(port, lock);
                return port;
            }
        }
    }
    for _ in 0..1000 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind 127.0.0.1:0 to find a free port");
        if let Some(lock) = try_take(&ports, port) {
            ports.insert(port, lock);
            return port;
        }
    }
    panic!("free_port: no free loopback port found");
}
