//! A small blocking HTTP client for tests: redirects are not followed, no
//! cookies are kept, no proxy is used (whatever `HTTP_PROXY` says), bodies
//! are read whole. Blocking: not for use inside a tokio runtime.

use std::time::Duration;

/// A response: status, headers (names lower-case) and body text.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order (e.g. `set-cookie`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON; panics (showing the body) if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn client() -> reqwest::blocking::Client {
    client_with_timeout(Duration::from_secs(20))
}

fn client_with_timeout(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("http client")
}

fn finish(r: reqwest::blocking::Response) -> Result<Response, reqwest::Error> {
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.text()?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// GET with extra headers; redirects are not followed.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, reqwest::Error> {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    finish(req.send()?)
}

/// GET with extra headers and a timeout for the whole exchange.
pub fn get_timeout(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, reqwest::Error> {
    let mut req = client_with_timeout(timeout).get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    finish(req.send()?)
}

/// Any method, headers and optional body; redirects are not followed.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response, reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|_| panic!("invalid HTTP method {method:?}"));
    let mut req = client().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    finish(req.send()?)
}

/// POST a form body (`application/x-www-form-urlencoded`), with optional
/// HTTP Basic credentials.
pub fn post_form(
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<Response, reqwest::Error> {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut req = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((user, pass)) = basic {
        req = req.basic_auth(user, Some(pass));
    }
    finish(req.send()?)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the peer closed `s` (EOF or reset) within `within`; bytes
/// before the close (an answer) are read past.
pub fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    let until = std::time::Instant::now() + within;
    let mut b = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}
