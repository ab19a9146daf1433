//! `tests/fake/edge_server.py`: an upstream that echoes the raw request
//! (path and header names as received) and counts the requests it got.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::proc::Proc;
use crate::{free_port, get, repo_root, wait_for};

pub struct EchoServer {
    pub port: u16,
    pub proc: Proc,
}

impl EchoServer {
    /// Starts one on a free port; `name` is echoed in every answer.
    pub fn start(dir: &Path, name: &str) -> EchoServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/fake/edge_server.py"))
            .arg(port.to_string())
            .arg(name);
        let mut proc = Proc::spawn(&format!("echo-{name}"), dir, cmd);
        wait_for("the echo server", Duration::from_secs(30), || {
            proc.assert_running();
            get(&format!("http://127.0.0.1:{port}/ready"), &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        EchoServer { port, proc }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How many requests had exactly this path (and query).
    pub fn count(&self, path: &str) -> u64 {
        let url = self.url(&format!(
            "/__count?path={}",
            crate::http::percent_encode(path)
        ));
        let r = get(&url, &[]).unwrap_or_else(|e| panic!("{url}: {e}"));
        r.body
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{url}: {}", r.body))
    }
}

/// Sends `head` (request line and headers, without the final blank line)
/// as written, with `Connection: close`, to 127.0.0.1:`port`; the answer.
/// For what an HTTP client would normalise: `Host` with a trailing dot,
/// `%2F` in the path, header names with `_`.
pub fn raw_request(port: u16, head: &str) -> crate::Response {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let text = format!(
        "{}\r\nConnection: close\r\n\r\n",
        head.replace('\n', "\r\n")
    );
    s.write_all(text.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    crate::Response {
        status,
        headers,
        body,
    }
}

/// The body of a `Transfer-Encoding: chunked` answer, joined.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
