//! HTTP requests the core asks its caller to make, and the rule that names
//! the Envoy cluster for a provider URL.

use url::Url;

/// The largest provider response body a caller reads (1 MiB): discovery
/// documents, key sets and token answers are a few KiB. A bigger body is a
/// provider failure, never read whole.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// An outgoing HTTP call to the provider, described, not performed. The
/// proxy-wasm adapter turns it into `dispatch_http_call`. Its `Debug` shows
/// header names and the body length only: values may carry credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: &'static str,
    /// The Envoy cluster that reaches the URL's host ([`cluster_name`]).
    pub cluster: String,
    /// `host[:port]` as written in the URL (the `Host`/`:authority`).
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// Extra headers (never the pseudo headers above).
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("headers", &names)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// Why a URL cannot be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not an absolute URL.
    Invalid(String),
    /// Scheme other than `http` or `https`.
    Scheme(String),
    /// No host.
    NoHost,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlError::Invalid(e) => write!(f, "invalid URL: {e}"),
            UrlError::Scheme(s) => write!(f, "unsupported URL scheme {s:?} (http or https)"),
            UrlError::NoHost => f.write_str("URL has no host"),
        }
    }
}

impl std::error::Error for UrlError {}

/// A parsed `http`/`https` URL with the parts a call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub authority: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let u = Url::parse(url).map_err(|e| UrlError::Invalid(e.to_string()))?;
        let scheme = u.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(UrlError::Scheme(scheme));
        }
        let host = u.host_str().ok_or(UrlError::NoHost)?.to_ascii_lowercase();
        let port = u.port_or_known_default().ok_or(UrlError::NoHost)?;
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Target {
            scheme,
            host,
            port,
            authority,
            path,
        })
    }

    /// The Envoy cluster name for this URL: see [`cluster_name`].
    pub fn cluster(&self) -> String {
        cluster_name(&self.scheme, &self.host, self.port)
    }

    /// A request to this URL.
    pub fn request(&self, method: &'static str) -> HttpRequest {
        HttpRequest {
            method,
            cluster: self.cluster(),
            authority: self.authority.clone(),
            path: self.path.clone(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// The one rule that names the Envoy cluster the filter calls for a
/// provider URL: `oidc|<scheme>|<host>|<port>`, host in lower case (IPv6
/// hosts keep their brackets), port always explicit (80/443 by default).
/// Whoever writes Envoy configuration creates clusters by this rule.
pub fn cluster_name(scheme: &str, host: &str, port: u16) -> String {
    format!("oidc|{scheme}|{host}|{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_the_rule() {
        let t = Target::parse(
            "http://Keycloak.Example:8080/realms/q/.well-known/openid-configuration?a=b",
        )
        .unwrap();
        assert_eq!(t.cluster(), "oidc|http|keycloak.example|8080");
        assert_eq!(t.authority, "keycloak.example:8080");
        assert_eq!(t.path, "/realms/q/.well-known/openid-configuration?a=b");
        let t = Target::parse("https://idp.example/certs").unwrap();
        assert_eq!(t.cluster(), "oidc|https|idp.example|443");
        assert_eq!(t.authority, "idp.example");
        let t = Target::parse("http://[::1]:9000/x").unwrap();
        assert_eq!(t.cluster(), "oidc|http|[::1]|9000");
    }

    #[test]
    fn debug_shows_no_header_values_or_body() {
        let mut r = Target::parse("http://idp/introspect")
            .unwrap()
            .request("POST");
        r.headers
            .push(("authorization".into(), "Basic c2VjcmV0".into()));
        r.body = Some(b"token=abc&client_secret=s3cr3t".to_vec());
        let d = format!("{r:?}");
        assert!(
            !d.contains("c2VjcmV0") && !d.contains("s3cr3t") && !d.contains("abc"),
            "{d}"
        );
        assert!(d.contains("authorization"));
    }

    #[test]
    fn bad_urls_are_errors() {
        assert!(matches!(
            Target::parse("not a url"),
            Err(UrlError::Invalid(_))
        ));
        assert!(matches!(
            Target::parse("ftp://x/y"),
            Err(UrlError::Scheme(_))
        ));
    }
}
