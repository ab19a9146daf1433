//! A fault-injecting TCP proxy for the fault tests: Envoy's provider
//! cluster points at it, it forwards to the real provider, or misbehaves as
//! told. Changing the mode closes every open connection, so Envoy's pooled
//! connections see the new behaviour at once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the provider.
    Pass,
    /// Close every connection at once (the provider refuses).
    Refuse,
    /// Wait this long before forwarding (past the route's `timeout`).
    Slow(Duration),
    /// `500 Internal Server Error`.
    Status500,
    /// `200` with an HTML body.
    NotJson,
    /// `200` announcing 1000 bytes of JSON, sending 12, closing.
    Truncated,
}

struct Shared {
    mode: Mutex<Fault>,
    open: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:target`.
    pub fn start(target: u16) -> FaultProxy {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the fault proxy");
        let shared = Arc::new(Shared {
            mode: Mutex::new(Fault::Pass),
            open: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || serve(conn, target, &s));
            }
        });
        FaultProxy { port, shared }
    }

    /// Switches the behaviour and closes every open connection.
    pub fn set(&self, mode: Fault) {
        *self.shared.mode.lock().unwrap() = mode;
        for c in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.set(Fault::Refuse);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn reply(mut conn: TcpStream, text: &str) {
    // Read the request head first, as a server would.
    let mut buf = [0u8; 4096];
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.read(&mut buf);
    let _ = conn.write_all(text.as_bytes());
    let _ = conn.shutdown(Shutdown::Both);
}

fn serve(conn: TcpStream, target: u16, s: &Shared) {
    let mode = *s.mode.lock().unwrap();
    match mode {
        Fault::Refuse => {
            let _ = conn.shutdown(Shutdown::Both);
        }
        Fault::Status500 => reply(
            conn,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\nbroken",
        ),
        Fault::NotJson => reply(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 27\r\nconnection: close\r\n\r\n<html>maintenance...</html>",
        ),
        Fault::Truncated => reply(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"issuer\":\"h",
        ),
        Fault::Slow(d) => {
            thread::sleep(d);
            forward(conn, target, s);
        }
        Fault::Pass => forward(conn, target, s),
    }
}

fn forward(conn: TcpStream, target: u16, s: &Shared) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
        let _ = conn.shutdown(Shutdown::Both);
        return;
    };
    {
        let mut open = s.open.lock().unwrap();
        if let (Ok(a), Ok(b)) = (conn.try_clone(), upstream.try_clone()) {
            open.push(a);
            open.push(b);
        }
    }
    let (mut c_in, mut u_out) = match (conn.try_clone(), upstream.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return,
    };
    let t = thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut u_out);
        let _ = u_out.shutdown(Shutdown::Write);
    });
    let (mut u_in, mut c_out) = (upstream, conn);
    let _ = std::io::copy(&mut u_in, &mut c_out);
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = t.join();
}
