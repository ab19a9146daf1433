//! Why a request is refused, and the one place that maps each reason to a
//! status, headers and body.

/// The `error` of a 503 when the provider is needed and cannot be used.
pub const PROVIDER_UNAVAILABLE: &str = "identity provider unavailable";
/// The `error` of a 500 when the route's config cannot be used.
pub const CONFIGURATION_ERROR: &str = "gateway configuration error";

/// A local reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Why a request does not reach the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// The `Authorization` header is not `<scheme> <credentials>` (400).
    MalformedAuthorization,
    /// A token is required and none was sent (401 with a bare challenge).
    NoToken,
    /// The token was checked and refused (401, `error="invalid_token"`).
    InvalidToken(String),
    /// Not authenticated on a route that would log a browser in, but this
    /// request cannot be sent to a login page (401).
    Unauthenticated,
    /// The token lacks a scope the route requires (403, as APISIX).
    InsufficientScope(Vec<String>),
    /// The audience claim is required and absent (403, as APISIX).
    AudienceMissing,
    /// The audience claim does not name the client (403, as APISIX).
    AudienceMismatch,
    /// The provider is needed for a decision and cannot give it (503).
    ProviderUnavailable(String),
    /// Envoy has no cluster for the provider host (503).
    NoProviderCluster { host: String, cluster: String },
    /// The route's plugin config cannot be used (500).
    BadRouteConfig(String),
}

/// Why a request was refused, as the counters see it: one counter per
/// variant (`denied.<name>`). The browser side's events map onto the same
/// list, so a typo cannot drop a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialReason {
    BadRequest,
    NoToken,
    InvalidToken,
    Unauthenticated,
    InsufficientScope,
    Audience,
    ProviderUnavailable,
    BadConfig,
}

impl DenialReason {
    /// Every reason, in counter order.
    pub const ALL: [DenialReason; 8] = [
        DenialReason::BadRequest,
        DenialReason::NoToken,
        DenialReason::InvalidToken,
        DenialReason::Unauthenticated,
        DenialReason::InsufficientScope,
        DenialReason::Audience,
        DenialReason::ProviderUnavailable,
        DenialReason::BadConfig,
    ];

    /// The counter's short name (`denied.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            DenialReason::BadRequest => "bad_request",
            DenialReason::NoToken => "no_token",
            DenialReason::InvalidToken => "invalid_token",
            DenialReason::Unauthenticated => "unauthenticated",
            DenialReason::InsufficientScope => "insufficient_scope",
            DenialReason::Audience => "audience",
            DenialReason::ProviderUnavailable => "provider_unavailable",
            DenialReason::BadConfig => "bad_config",
        }
    }

    /// The position in [`DenialReason::ALL`] (a counter table's index).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DenialReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Denial {
    /// Why, for statistics (`denied.<reason>`).
    pub fn reason(&self) -> DenialReason {
        match self {
            Denial::MalformedAuthorization => DenialReason::BadRequest,
            Denial::NoToken => DenialReason::NoToken,
            Denial::InvalidToken(_) => DenialReason::InvalidToken,
            Denial::Unauthenticated => DenialReason::Unauthenticated,
            Denial::InsufficientScope(_) => DenialReason::InsufficientScope,
            Denial::AudienceMissing | Denial::AudienceMismatch => DenialReason::Audience,
            Denial::ProviderUnavailable(_) | Denial::NoProviderCluster { .. } => {
                DenialReason::ProviderUnavailable
            }
            Denial::BadRouteConfig(_) => DenialReason::BadConfig,
        }
    }

    /// What only the log may show: provider URLs, cluster names, parser
    /// messages. Replies carry generic texts ([`PROVIDER_UNAVAILABLE`],
    /// [`CONFIGURATION_ERROR`]) instead.
    pub fn detail(&self) -> Option<String> {
        match self {
            Denial::ProviderUnavailable(why) | Denial::BadRouteConfig(why) => Some(why.clone()),
            Denial::NoProviderCluster { host, cluster } => Some(format!(
                "no Envoy cluster {cluster:?} for identity provider host {host:?}"
            )),
            _ => None,
        }
    }

    /// The reply for this denial on a route whose `realm` is given.
    /// Anonymous clients get no internal detail (see [`Denial::detail`]).
    pub fn reply(&self, realm: &str) -> Reply {
        let realm = header_quoted(realm);
        let challenge = |extra: &str| {
            vec![(
                "www-authenticate".to_string(),
                format!("Bearer realm=\"{realm}\"{extra}"),
            )]
        };
        match self {
            Denial::MalformedAuthorization => json_reply(
                400,
                vec![],
                "invalid_request",
                "Invalid Authorization header format.",
            ),
            Denial::NoToken => json_reply(
                401,
                challenge(""),
                "unauthorized",
                "No bearer token found in request.",
            ),
            Denial::InvalidToken(why) => json_reply(
                401,
                challenge(&format!(
                    ", error=\"invalid_token\", error_description=\"{}\"",
                    header_quoted(why)
                )),
                "invalid_token",
                why,
            ),
            Denial::Unauthenticated => json_reply(
                401,
                challenge(""),
                "unauthorized",
                "authentication required",
            ),
            Denial::InsufficientScope(scopes) => error_only(
                403,
                &format!("required scopes {} not present", scopes.join(", ")),
            ),
            Denial::AudienceMissing => error_only(403, "required audience claim not present"),
            Denial::AudienceMismatch => error_only(403, "mismatched audience"),
            Denial::ProviderUnavailable(_) | Denial::NoProviderCluster { .. } => json_reply(
                503,
                vec![],
                PROVIDER_UNAVAILABLE,
                "the identity provider cannot be used now; try again later",
            ),
            Denial::BadRouteConfig(_) => json_reply(
                500,
                vec![],
                CONFIGURATION_ERROR,
                "the gateway cannot check requests on this route",
            ),
        }
    }
}

impl Reply {
    /// A small HTML page for a browser (login errors, "Logged out"), with
    /// an optional link to go on from.
    pub fn page(status: u16, title: &str, message: &str, link: Option<(&str, &str)>) -> Reply {
        let link = link
            .map(|(href, text)| {
                format!(
                    "<p><a id=\"continue\" href=\"{}\">{}</a></p>",
                    escape(href),
                    escape(text)
                )
            })
            .unwrap_or_default();
        let body = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body><h1>{t}</h1><p id=\"message\">{m}</p>{link}</body></html>\n",
            t = escape(title),
            m = escape(message),
        );
        Reply {
            status,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body,
        }
    }

    /// A redirect.
    pub fn redirect(location: &str) -> Reply {
        Reply {
            status: 302,
            headers: vec![
                ("location".into(), location.to_string()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: String::new(),
        }
    }

    /// Adds `Set-Cookie` headers.
    pub fn with_cookies(mut self, set_cookies: Vec<String>) -> Reply {
        self.headers.extend(
            set_cookies
                .into_iter()
                .map(|c| ("set-cookie".to_string(), c)),
        );
        self
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn json_reply(
    status: u16,
    mut headers: Vec<(String, String)>,
    error: &str,
    description: &str,
) -> Reply {
    headers.push(("content-type".into(), "application/json".into()));
    let body = serde_json::json!({"error": error, "error_description": description}).to_string();
    Reply {
        status,
        headers,
        body,
    }
}

/// APISIX's 403 bodies: `{"error":"..."}`.
fn error_only(status: u16, error: &str) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::json!({ "error": error }).to_string(),
    }
}

/// Makes text safe inside a quoted header parameter: printable ASCII
/// without `"` and `\`.
fn header_quoted(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '\''
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_reasons_index_their_table_and_have_distinct_names() {
        for (i, r) in DenialReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DenialReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DenialReason::ALL.len());
        assert_eq!(
            Denial::NoProviderCluster {
                host: String::new(),
                cluster: String::new()
            }
            .reason()
            .name(),
            "provider_unavailable"
        );
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn statuses_match_apisix() {
        assert_eq!(Denial::MalformedAuthorization.reply("r").status, 400);
        assert_eq!(Denial::NoToken.reply("r").status, 401);
        assert_eq!(Denial::InvalidToken("x".into()).reply("r").status, 401);
        assert_eq!(Denial::Unauthenticated.reply("r").status, 401);
        assert_eq!(Denial::InsufficientScope(vec![]).reply("r").status, 403);
        assert_eq!(Denial::AudienceMismatch.reply("r").status, 403);
        assert_eq!(Denial::AudienceMissing.reply("r").status, 403);
        assert_eq!(
            Denial::ProviderUnavailable("x".into()).reply("r").status,
            503
        );
        assert_eq!(Denial::BadRouteConfig("x".into()).reply("r").status, 500);
    }

    #[test]
    fn challenges() {
        let r = Denial::NoToken.reply("apisix");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"apisix\"")
        );
        let r = Denial::InvalidToken("token \"expired\"\n".into()).reply("a\"b");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"a'b\", error=\"invalid_token\", error_description=\"token 'expired''\"")
        );
    }

    #[test]
    fn forbidden_bodies_are_apisix_shaped() {
        let r = Denial::InsufficientScope(vec!["read".into(), "write".into()]).reply("r");
        assert_eq!(
            r.body,
            r#"{"error":"required scopes read, write not present"}"#
        );
        assert_eq!(
            Denial::AudienceMismatch.reply("r").body,
            r#"{"error":"mismatched audience"}"#
        );
    }

    #[test]
    fn internal_details_stay_out_of_replies() {
        let d = Denial::NoProviderCluster {
            host: "idp.example:8080".into(),
            cluster: "oidc|http|idp.example|8080".into(),
        };
        let r = d.reply("r");
        assert_eq!(r.status, 503);
        assert!(!r.body.contains("idp.example"), "{}", r.body);
        assert!(r.body.contains(PROVIDER_UNAVAILABLE), "{}", r.body);
        assert!(d.detail().unwrap().contains("idp.example:8080"));
        let d = Denial::ProviderUnavailable("cannot call http://10.0.0.5:8080/x".into());
        let r = d.reply("r");
        assert!(!r.body.contains("10.0.0.5"), "{}", r.body);
        let d = Denial::BadRouteConfig("property \"timeout\" must be a number".into());
        let r = d.reply("r");
        assert_eq!(r.status, 500);
        assert!(!r.body.contains("timeout"), "{}", r.body);
        assert!(r.body.contains(CONFIGURATION_ERROR), "{}", r.body);
        assert!(r.headers.iter().all(|(_, v)| !v.contains("timeout")));
    }

    #[test]
    fn pages_escape_what_they_show() {
        let r = Reply::page(
            400,
            "Login failed",
            "the identity provider refused the login: <script>",
            Some(("/a?x=1&y=\"2\"", "Sign in again")),
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("&lt;script&gt;"), "{}", r.body);
        assert!(!r.body.contains("<script>"));
        assert!(
            r.body.contains("href=\"/a?x=1&amp;y=&quot;2&quot;\""),
            "{}",
            r.body
        );
        assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
    }
}
