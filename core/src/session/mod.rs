//! The browser session: an encrypted, chunked cookie.
//!
//! `seal.rs` (HKDF + AES-256-GCM) and `cookie.rs` (parsing, chunking,
//! `Set-Cookie`) are its two halves; this module is the session itself:
//! its wire format and timeouts.
//!
//! # Timeouts (lua-resty-session 4 semantics; 0 disables a timeout)
//!
//! * absolute: the session dies `absolute_timeout` seconds after the login
//!   (`created_at`), whatever happens;
//! * rolling: it dies `rolling_timeout` seconds after it was last *saved*
//!   (`saved_at`, set by [`Session::renew`]);
//! * idling: it dies `idling_timeout` seconds after it was last *seen*
//!   (`last_seen`, set by [`Session::touch`] and [`Session::renew`]).
//!
//! A session is still valid at exactly the limit and expired one second
//! later. Timestamps are Unix seconds supplied by the caller. Since the
//! session lives in the cookie, touching or saving it means sending the
//! cookie again; [`Session::refresh`] says when that is due.

mod cookie;
mod seal;

pub use cookie::*;
pub use seal::*;

use std::cell::OnceCell;
use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::SessionConfig;
use crate::secret::Secret;

/// The only format version (2: sessions are bound to their route).
pub const VERSION: u8 = 2;
/// [`Session::refresh`] touches a session at most once per this many seconds.
const TOUCH_INTERVAL: u64 = 60;

/// A session's random id (16 bytes, made at login): what logout puts on
/// the deny-list ([`crate::revocation`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(s: &str) -> Option<SessionId> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(SessionId(out))
    }
}

impl fmt::Debug for SessionId {
    /// Only the first bytes: enough to follow a session in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}..)", &self.hex()[..8])
    }
}

/// Which timeout ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Idling,
    Rolling,
    Absolute,
}

/// Why a session cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// No session cookie (or an incomplete set of chunks).
    Missing,
    /// The value is not unpadded base64url.
    Base64,
    /// Shorter than version, nonce and tag.
    TooShort,
    /// A format version this code does not know.
    UnknownVersion(u8),
    /// Tampered, truncated, sealed under another key or for another cookie.
    Authentication,
    /// Authentic but not a session (should not happen).
    Malformed,
    /// The session has expired.
    Expired(Timeout),
    /// The session logged out (its id is on the deny-list).
    Revoked,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Missing => f.write_str("no session cookie"),
            SessionError::Base64 => f.write_str("session cookie is not base64url"),
            SessionError::TooShort => f.write_str("session cookie is too short"),
            SessionError::UnknownVersion(v) => write!(f, "unknown session cookie version {v}"),
            SessionError::Authentication => f.write_str("session cookie failed authentication"),
            SessionError::Malformed => f.write_str("session cookie payload is malformed"),
            SessionError::Expired(Timeout::Idling) => f.write_str("session idling timeout"),
            SessionError::Expired(Timeout::Rolling) => f.write_str("session rolling timeout"),
            SessionError::Expired(Timeout::Absolute) => f.write_str("session absolute timeout"),
            SessionError::Revoked => f.write_str("session logged out"),
        }
    }
}

impl std::error::Error for SessionError {}

/// A browser login. `Debug` redacts the tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Random, made at login (all zero until then).
    pub id: SessionId,
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// The raw ID token (JWT).
    pub id_token: Option<Secret>,
    pub id_claims: Map<String, Value>,
    pub userinfo: Option<Value>,
    /// When the access token expires (Unix seconds).
    pub access_expires_at: Option<u64>,
    /// Login time: the absolute timeout runs from here.
    pub created_at: u64,
    /// Last save: the rolling timeout runs from here.
    pub saved_at: u64,
    /// Last activity: the idling timeout runs from here.
    pub last_seen: u64,
    /// The upstream headers of this session as opened from its cookie,
    /// built once ([`crate::signed_in::opened_headers`]); not sealed.
    pub opened_headers: HeaderMemo,
}

/// Identity headers for the upstream (name, value).
pub type UpstreamHeaders = Rc<[(&'static str, String)]>;

/// A session's upstream headers, built on first use. A per-VM cache hands
/// the same opened session (`Rc<Session>`) to every request with the same
/// cookie on the same route, so the headers are built once per session.
/// Never compared, and a clone starts empty: a session changed through
/// `Rc::make_mut` (refreshed tokens) gets headers of its own.
#[derive(Default)]
pub struct HeaderMemo(OnceCell<Option<UpstreamHeaders>>);

impl HeaderMemo {
    pub fn get_or_init(
        &self,
        build: impl FnOnce() -> Option<UpstreamHeaders>,
    ) -> Option<UpstreamHeaders> {
        self.0.get_or_init(build).clone()
    }
}

impl Clone for HeaderMemo {
    fn clone(&self) -> Self {
        HeaderMemo::default()
    }
}

impl PartialEq for HeaderMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for HeaderMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderMemo")
    }
}

/// What [`Session::refresh`] did; anything but `None` means the cookie must
/// be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    None,
    /// `last_seen` moved.
    Touched,
    /// `saved_at` and `last_seen` moved.
    Saved,
}

impl Session {
    /// A session created at `now`.
    pub fn new(access_token: Secret, now: u64) -> Session {
        Session {
            id: SessionId::default(),
            access_token,
            refresh_token: None,
            id_token: None,
            id_claims: Map::new(),
            userinfo: None,
            access_expires_at: None,
            created_at: now,
            saved_at: now,
            last_seen: now,
            opened_headers: HeaderMemo::default(),
        }
    }

    /// Records activity (idling timeout restarts).
    pub fn touch(&mut self, now: u64) {
        self.last_seen = now;
    }

    /// Records a save (rolling and idling timeouts restart); do this when
    /// the tokens change.
    pub fn renew(&mut self, now: u64) {
        self.saved_at = now;
        self.last_seen = now;
    }

    /// For a valid session in use at `now`: saves it when three quarters of
    /// the rolling timeout have passed, else touches it when a minute (or a
    /// quarter of the idling timeout, if shorter) has passed since it was
    /// last seen, so that an active session is not re-sent on every request.
    pub fn refresh(&mut self, now: u64, cfg: &SessionConfig) -> Refresh {
        let due = self.refresh_due(now, cfg);
        match due {
            Refresh::Saved => self.renew(now),
            Refresh::Touched => self.touch(now),
            Refresh::None => {}
        }
        due
    }

    /// What [`Session::refresh`] would do at `now`, without doing it.
    pub fn refresh_due(&self, now: u64, cfg: &SessionConfig) -> Refresh {
        let rolling = cfg.rolling_timeout;
        if rolling > 0 && now.saturating_sub(self.saved_at) >= rolling - rolling / 4 {
            return Refresh::Saved;
        }
        let idling = cfg.idling_timeout;
        let every = if idling > 0 {
            TOUCH_INTERVAL.min(idling / 4)
        } else {
            TOUCH_INTERVAL
        };
        if now.saturating_sub(self.last_seen) >= every.max(1) {
            return Refresh::Touched;
        }
        Refresh::None
    }

    /// Which timeout, if any, has ended the session at `now`.
    pub fn expired(&self, now: u64, cfg: &SessionConfig) -> Option<Timeout> {
        let over = |since: u64, limit: u64| limit > 0 && now.saturating_sub(since) > limit;
        if over(self.created_at, cfg.absolute_timeout) {
            Some(Timeout::Absolute)
        } else if over(self.saved_at, cfg.rolling_timeout) {
            Some(Timeout::Rolling)
        } else if over(self.last_seen, cfg.idling_timeout) {
            Some(Timeout::Idling)
        } else {
            None
        }
    }

    /// Seconds until the nearest timeout (a `Max-Age` for the cookie);
    /// `None` when every timeout is disabled.
    pub fn max_age(&self, now: u64, cfg: &SessionConfig) -> Option<u64> {
        [
            (self.created_at, cfg.absolute_timeout),
            (self.saved_at, cfg.rolling_timeout),
            (self.last_seen, cfg.idling_timeout),
        ]
        .into_iter()
        .filter(|&(_, limit)| limit > 0)
        .map(|(since, limit)| since.saturating_add(limit).saturating_sub(now))
        .min()
    }
}

/// The serialised form: short keys, tokens as plain strings.
#[derive(Serialize, Deserialize)]
struct Wire {
    id: String,
    #[serde(rename = "at")]
    access_token: String,
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(rename = "it", default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    #[serde(rename = "ic", default)]
    id_claims: Map<String, Value>,
    #[serde(rename = "ui", default, skip_serializing_if = "Option::is_none")]
    userinfo: Option<Value>,
    #[serde(rename = "ae", default, skip_serializing_if = "Option::is_none")]
    access_expires_at: Option<u64>,
    #[serde(rename = "c")]
    created_at: u64,
    #[serde(rename = "s")]
    saved_at: u64,
    #[serde(rename = "l")]
    last_seen: u64,
}

/// Seals `session` into the cookies named after `name` (chunked at
/// [`MAX_COOKIE_VALUE`]). `nonce`: 12 fresh random bytes.
pub fn encode(
    session: &Session,
    key: &SessionKey,
    name: &str,
    nonce: [u8; 12],
) -> Vec<(String, String)> {
    let wire = Wire {
        id: session.id.hex(),
        access_token: session.access_token.expose().to_string(),
        refresh_token: session.refresh_token.as_ref().map(|s| s.expose().into()),
        id_token: session.id_token.as_ref().map(|s| s.expose().into()),
        id_claims: session.id_claims.clone(),
        userinfo: session.userinfo.clone(),
        access_expires_at: session.access_expires_at,
        created_at: session.created_at,
        saved_at: session.saved_at,
        last_seen: session.last_seen,
    };
    // Serialising JSON values and strings cannot fail.
    let json = serde_json::to_vec(&wire).unwrap_or_default();
    let value = seal(key, &key.session_aad(name), &json, nonce);
    chunk(name, &value, MAX_COOKIE_VALUE)
}

/// Opens the session in the request's `cookies` and checks its timeouts.
pub fn decode(
    key: &SessionKey,
    name: &str,
    cookies: &[(String, String)],
    now: u64,
    timeouts: &SessionConfig,
) -> Result<Session, SessionError> {
    let value = reassemble(name, cookies).ok_or(SessionError::Missing)?;
    let session = unseal(key, name, &value)?;
    check(session, now, timeouts)
}

/// Opens a sealed session value (the reassembled cookie `name`), without
/// looking at its timeouts: the part a caller may cache by `value`.
pub fn unseal(key: &SessionKey, name: &str, value: &str) -> Result<Session, SessionError> {
    let json = open(key, &key.session_aad(name), value)?;
    let wire: Wire = serde_json::from_slice(&json).map_err(|_| SessionError::Malformed)?;
    Ok(Session {
        id: SessionId::from_hex(&wire.id).ok_or(SessionError::Malformed)?,
        access_token: Secret::new(wire.access_token),
        refresh_token: wire.refresh_token.map(Secret::new),
        id_token: wire.id_token.map(Secret::new),
        id_claims: wire.id_claims,
        userinfo: wire.userinfo,
        access_expires_at: wire.access_expires_at,
        created_at: wire.created_at,
        saved_at: wire.saved_at,
        last_seen: wire.last_seen,
        opened_headers: HeaderMemo::default(),
    })
}

/// The session if none of its timeouts has ended it at `now`.
pub fn check(
    session: Session,
    now: u64,
    timeouts: &SessionConfig,
) -> Result<Session, SessionError> {
    match session.expired(now, timeouts) {
        Some(which) => Err(SessionError::Expired(which)),
        None => Ok(session),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;

    const NONCE: [u8; 12] = [7; 12];
    const T0: u64 = 1_700_000_000;

    fn key() -> SessionKey {
        SessionKey::derive(&Secret::new("0123456789abcdef-session-secret"))
    }

    fn cfg() -> SessionConfig {
        SessionConfig {
            secret: Secret::new("0123456789abcdef-session-secret"),
            cookie_name: "session".into(),
            cookie_path: "/".into(),
            cookie_domain: None,
            cookie_secure: None,
            cookie_http_only: true,
            cookie_same_site: SameSite::Lax,
            idling_timeout: 900,
            rolling_timeout: 3600,
            absolute_timeout: 86400,
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A deterministic byte generator (xorshift64*), fixed seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn token(&mut self, n: usize) -> String {
            URL_SAFE_NO_PAD.encode(self.bytes(n))
        }
    }

    fn big_session(now: u64) -> Session {
        let mut r = Rng(0x5eed);
        let mut s = Session::new(Secret::new(r.token(900)), now);
        s.refresh_token = Some(Secret::new(r.token(700)));
        s.id_token = Some(Secret::new(r.token(1500)));
        s.id_claims = json!({"sub": "alice", "iss": "https://idp.example", "blob": r.token(2000)})
            .as_object()
            .cloned()
            .unwrap();
        s.userinfo = Some(json!({"email": "alice@example.com", "groups": r.token(2000)}));
        s.access_expires_at = Some(now + 300);
        s
    }

    #[test]
    fn seal_open_round_trip() {
        let k = key();
        for msg in [&b""[..], b"x", &[0u8; 1000]] {
            let v = seal(&k, b"session", msg, NONCE);
            assert!(!v.contains('=') && !v.contains('+') && !v.contains('/'));
            assert_eq!(open(&k, b"session", &v).unwrap(), msg);
        }
        // Deterministic for a fixed nonce; a new nonce changes everything.
        assert_eq!(seal(&k, b"s", b"m", NONCE), seal(&k, b"s", b"m", NONCE));
        assert_ne!(seal(&k, b"s", b"m", NONCE), seal(&k, b"s", b"m", [8; 12]));
    }

    #[test]
    fn tampering_anywhere_fails() {
        let k = key();
        let v = seal(&k, b"session", b"{\"at\":\"token\"}", NONCE);
        let raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        for i in 0..raw.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = raw.clone();
                t[i] ^= bit;
                let e = open(&k, b"session", &URL_SAFE_NO_PAD.encode(&t)).unwrap_err();
                if i == 0 {
                    assert!(matches!(e, SessionError::UnknownVersion(_)));
                } else {
                    assert_eq!(e, SessionError::Authentication);
                }
            }
        }
        // Truncation, at every length.
        for n in 0..raw.len() {
            let t = URL_SAFE_NO_PAD.encode(&raw[..n]);
            assert!(open(&k, b"session", &t).is_err(), "length {n}");
        }
        for n in 0..v.len() {
            assert!(open(&k, b"session", &v[..n]).is_err());
        }
        // Extension.
        let mut t = raw.clone();
        t.push(0);
        assert!(open(&k, b"session", &URL_SAFE_NO_PAD.encode(&t)).is_err());
    }

    #[test]
    fn wrong_key_and_moved_cookie_fail() {
        let v = seal(&key(), b"session", b"payload", NONCE);
        let other = SessionKey::derive(&Secret::new("another-secret-of-16+"));
        assert_eq!(
            open(&other, b"session", &v),
            Err(SessionError::Authentication)
        );
        assert_eq!(
            open(&key(), b"other", &v),
            Err(SessionError::Authentication)
        );
        // Through encode/decode too.
        let s = Session::new(Secret::new("tok"), T0);
        let c = encode(&s, &key(), "session", NONCE);
        let moved = pairs(&[("csrf", &c[0].1)]);
        assert_eq!(
            decode(&key(), "csrf", &moved, T0, &cfg()),
            Err(SessionError::Authentication)
        );
    }

    #[test]
    fn sessions_are_bound_to_provider_and_client() {
        let secret = Secret::new("0123456789abcdef-session-secret");
        let disc = "https://idp/realms/a/.well-known/openid-configuration";
        let a = SessionKey::for_route(&secret, disc, "app");
        let mut s = Session::new(Secret::new("tok"), T0);
        s.id = SessionId([9; 16]);
        let c = encode(&s, &a, "session", NONCE);
        assert_eq!(decode(&a, "session", &c, T0, &cfg()), Ok(s.clone()));
        let same = SessionKey::for_route(&secret, disc, "app");
        assert!(decode(&same, "session", &c, T0, &cfg()).is_ok());
        for other in [
            SessionKey::for_route(&secret, disc, "admin"),
            SessionKey::for_route(
                &secret,
                "https://idp/realms/b/.well-known/openid-configuration",
                "app",
            ),
            SessionKey::for_route(&secret, &format!("{disc}a"), "pp"),
            SessionKey::derive(&secret),
        ] {
            assert_eq!(
                decode(&other, "session", &c, T0, &cfg()),
                Err(SessionError::Authentication)
            );
        }
        // The id survives the round trip; Debug shows only its start.
        assert_eq!(format!("{:?}", s.id), "SessionId(09090909..)");
    }

    #[test]
    fn specific_errors() {
        let k = key();
        assert_eq!(open(&k, b"s", "not base64!"), Err(SessionError::Base64));
        assert_eq!(open(&k, b"s", "AAA="), Err(SessionError::Base64));
        assert_eq!(open(&k, b"s", ""), Err(SessionError::TooShort));
        assert_eq!(
            open(&k, b"s", &URL_SAFE_NO_PAD.encode([VERSION; 28])),
            Err(SessionError::TooShort)
        );
        assert_eq!(
            open(&k, b"s", &URL_SAFE_NO_PAD.encode([3u8; 40])),
            Err(SessionError::UnknownVersion(3))
        );
        // A version-1 cookie (before route binding) no longer opens.
        assert_eq!(
            open(&k, b"s", &URL_SAFE_NO_PAD.encode([1u8; 40])),
            Err(SessionError::UnknownVersion(1))
        );
        // Authentic, but not a session.
        let v = seal(&k, &k.session_aad("session"), b"[1,2]", NONCE);
        assert_eq!(
            decode(&k, "session", &pairs(&[("session", &v)]), T0, &cfg()),
            Err(SessionError::Malformed)
        );
        assert_eq!(
            decode(&k, "session", &[], T0, &cfg()),
            Err(SessionError::Missing)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let k = key();
        let mut r = Rng(42);
        for i in 0..2000 {
            let n = (r.next() % 200) as usize;
            let bytes = r.bytes(n);
            let s = String::from_utf8_lossy(&bytes);
            assert!(open(&k, b"session", &s).is_err());
            let b64 = URL_SAFE_NO_PAD.encode(&bytes);
            let mut v = b64.clone();
            if i % 2 == 0 && !bytes.is_empty() {
                // A plausible version byte.
                let mut b = bytes.clone();
                b[0] = VERSION;
                v = URL_SAFE_NO_PAD.encode(b);
            }
            assert!(open(&k, b"session", &v).is_err());
            let _ = parse_cookie_header(&s);
            let cookies = pairs(&[("session", &v), ("session_1", &b64)]);
            assert!(decode(&k, "session", &cookies, T0, &cfg()).is_err());
        }
        let huge = "A".repeat(1 << 20);
        assert!(open(&k, b"session", &huge).is_err());
        let huge_bytes = URL_SAFE_NO_PAD.encode(vec![VERSION; 1 << 20]);
        assert_eq!(
            open(&k, b"session", &huge_bytes),
            Err(SessionError::Authentication)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
        #[test]
        fn arbitrary_strings_are_rejected(s in ".{0,300}") {
            let k = key();
            proptest::prop_assert!(open(&k, b"session", &s).is_err());
            let header = format!("session={s}; session_1={s}");
            let _ = decode(&k, "session", &parse_cookie_header(&header), T0, &cfg());
            let _ = chunk("session", &s, 7);
        }

        #[test]
        fn chunk_reassemble_round_trip(s in "[a-zA-Z0-9_-]{0,500}", max in 8usize..64) {
            let c = chunk("session", &s, max);
            proptest::prop_assert_eq!(reassemble("session", &c), Some(s));
        }
    }

    #[test]
    fn big_session_chunks_and_round_trips() {
        let k = key();
        let s = big_session(T0);
        let cookies = encode(&s, &k, "session", NONCE);
        let total: usize = cookies.iter().map(|(_, v)| v.len()).sum();
        assert!(total > 10_000, "{total}");
        assert!(cookies.len() >= 3, "{}", cookies.len());
        for (i, (n, v)) in cookies.iter().enumerate() {
            assert_eq!(n, &format!("session_{}", i + 1));
            assert!(v.len() <= MAX_COOKIE_VALUE);
        }
        // Through a Cookie header, shuffled and among look-alikes.
        let mut parts: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        parts.reverse();
        parts.insert(1, "mysession_1=zzz".into());
        parts.push("session_x=yyy".into());
        parts.push("session_01=www".into());
        let header = parts.join("; ");
        let parsed = parse_cookie_header(&header);
        assert_eq!(decode(&k, "session", &parsed, T0 + 10, &cfg()), Ok(s));

        // A missing middle chunk.
        let mut gap = cookies.clone();
        gap.remove(1);
        assert_eq!(reassemble("session", &gap), None);
        assert_eq!(
            decode(&k, "session", &gap, T0, &cfg()),
            Err(SessionError::Missing)
        );
        // A missing last chunk: found by authentication.
        let mut short = cookies.clone();
        short.pop();
        assert!(reassemble("session", &short).is_some());
        assert_eq!(
            decode(&k, "session", &short, T0, &cfg()),
            Err(SessionError::Authentication)
        );
        // Chunks in swapped order.
        let mut swapped = cookies.clone();
        let v0 = swapped[0].1.clone();
        swapped[0].1 = swapped[1].1.clone();
        swapped[1].1 = v0;
        assert!(decode(&k, "session", &swapped, T0, &cfg()).is_err());
    }

    #[test]
    fn small_session_is_one_cookie_and_sizes() {
        let k = key();
        let s = Session::new(Secret::new("short"), T0);
        let c = encode(&s, &k, "session", NONCE);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "session");
        assert_eq!(decode(&k, "session", &c, T0, &cfg()), Ok(s));

        // A typical 3-token session (RS256 JWTs of ~1 KB, opaque refresh token).
        let mut r = Rng(9);
        let mut s = Session::new(Secret::new(r.token(600)), T0);
        s.refresh_token = Some(Secret::new(r.token(48)));
        s.id_token = Some(Secret::new(r.token(700)));
        s.id_claims = json!({"iss":"https://idp.example.com/realms/x","sub":"0b4c3f1e-9d1c-4c8e-8c1a-2f5e7e0d9a11","aud":"apisix","exp":T0+300,"iat":T0,"email":"alice@example.com","name":"Alice"})
            .as_object()
            .cloned()
            .unwrap();
        s.access_expires_at = Some(T0 + 300);
        let c = encode(&s, &k, "session", NONCE);
        let len: usize = c.iter().map(|(_, v)| v.len()).sum();
        println!("3-token session: {} cookie(s), {len} bytes", c.len());
        assert!(len < 2 * MAX_COOKIE_VALUE);
    }

    #[test]
    fn chunk_edges() {
        assert_eq!(chunk("s", "", 10), pairs(&[("s", "")]));
        assert_eq!(chunk("s", "abcd", 4), pairs(&[("s", "abcd")]));
        assert_eq!(
            chunk("s", "abcde", 2),
            pairs(&[("s_1", "ab"), ("s_2", "cd"), ("s_3", "e")])
        );
        assert_eq!(chunk("s", "abc", 0).len(), 3);
        // Multibyte characters are never split.
        let c = chunk("s", "ééé", 3);
        assert_eq!(reassemble("s", &c).as_deref(), Some("ééé"));
        // The plain cookie wins over chunks.
        let both = pairs(&[("s_1", "x"), ("s", "plain")]);
        assert_eq!(reassemble("s", &both).as_deref(), Some("plain"));
        // First occurrence wins.
        let dup = pairs(&[("s", "first"), ("s", "second")]);
        assert_eq!(reassemble("s", &dup).as_deref(), Some("first"));
        // Not chunks: leading zero, sign, non-digit, absurd index.
        for n in ["s_0", "s_01", "s_+1", "s_1x", "s_", "s1", "s_1000"] {
            assert_eq!(reassemble("s", &pairs(&[(n, "v")])), None, "{n}");
        }
        assert_eq!(reassemble("s", &pairs(&[("s_2", "v")])), None);
    }

    #[test]
    fn cookie_header_parsing() {
        let p = parse_cookie_header(
            " a=b ;c=d=e;; ;noequals; =empty; session=\"quoted\"; mysession=1;session_x=2 ; session=3; e=; \"=\"; f g=h",
        );
        assert_eq!(
            p,
            pairs(&[
                ("a", "b"),
                ("c", "d=e"),
                ("session", "quoted"),
                ("mysession", "1"),
                ("session_x", "2"),
                ("session", "3"),
                ("e", ""),
            ])
        );
        assert!(parse_cookie_header("").is_empty());
        assert_eq!(parse_cookie_header("x=\""), pairs(&[("x", "\"")]));
        assert_eq!(reassemble("session", &p).as_deref(), Some("quoted"));
        let look_alikes = parse_cookie_header("mysession=1; session_x=2; sessions=3; session_1x=4");
        assert_eq!(reassemble("session", &look_alikes), None);
    }

    #[test]
    fn set_cookie_format() {
        let mut a = CookieAttrs::from_config(&cfg(), true);
        assert_eq!(
            set_cookie("session", "v", &a),
            "session=v; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        a.domain = Some("example.com".into());
        a.max_age = Some(900);
        a.same_site = SameSite::None;
        assert_eq!(
            set_cookie("session", "v", &a),
            "session=v; Path=/; Domain=example.com; Max-Age=900; Secure; HttpOnly; SameSite=None"
        );
        a.same_site = SameSite::Default;
        a.secure = false;
        a.http_only = false;
        a.domain = None;
        a.max_age = None;
        assert_eq!(set_cookie("session", "v", &a), "session=v; Path=/");
        a.same_site = SameSite::Strict;
        a.path = "/a;b\r\nX: y".into();
        assert_eq!(
            set_cookie("session", "v", &a),
            "session=v; Path=/abX: y; SameSite=Strict"
        );
        let mut c = cfg();
        c.cookie_secure = Some(false);
        assert!(!CookieAttrs::from_config(&c, true).secure);
        assert!(!CookieAttrs::from_config(&cfg(), false).secure);
    }

    #[test]
    fn clearing_covers_stale_chunks() {
        let a = CookieAttrs::from_config(&cfg(), false);
        let present = pairs(&[
            ("session_1", "a"),
            ("session_3", "c"),
            ("mysession", "x"),
            ("session_x", "y"),
            ("session_3", "dup"),
        ]);
        assert_eq!(
            clear_cookies("session", &present, &a),
            vec![
                "session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax".to_string(),
                "session_1=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax".to_string(),
                "session_3=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax".to_string(),
            ]
        );
        // Re-issuing a small session over a chunked one.
        let new = pairs(&[("session", "v")]);
        let h = set_session_cookies("session", &new, &present, &a);
        assert_eq!(
            h,
            vec![
                "session=v; Path=/; HttpOnly; SameSite=Lax".to_string(),
                "session_1=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax".to_string(),
                "session_3=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax".to_string(),
            ]
        );
        // And a chunked one over a plain one.
        let new = pairs(&[("session_1", "a"), ("session_2", "b")]);
        let h = set_session_cookies("session", &new, &pairs(&[("session", "old")]), &a);
        assert_eq!(h.len(), 3);
        assert!(h[2].starts_with("session=; "));
    }

    #[test]
    fn timeout_boundaries() {
        let k = key();
        let c = cfg();
        let at = |s: &Session, now: u64| {
            decode(&k, "session", &encode(s, &k, "session", NONCE), now, &c)
        };
        let s = Session::new(Secret::new("t"), T0);
        // Idling: 900 s after last_seen.
        assert!(at(&s, T0 + 900).is_ok());
        assert_eq!(
            at(&s, T0 + 901),
            Err(SessionError::Expired(Timeout::Idling))
        );
        // Rolling: 3600 s after saved_at, even when active.
        let mut s2 = s.clone();
        s2.touch(T0 + 3500);
        assert!(at(&s2, T0 + 3600).is_ok());
        assert_eq!(
            at(&s2, T0 + 3601),
            Err(SessionError::Expired(Timeout::Rolling))
        );
        // Absolute: 86400 s after created_at, even when saved.
        let mut s3 = s.clone();
        s3.renew(T0 + 86000);
        assert!(at(&s3, T0 + 86400).is_ok());
        assert_eq!(
            at(&s3, T0 + 86401),
            Err(SessionError::Expired(Timeout::Absolute))
        );
        // A clock behind the session is not an expiry.
        assert!(at(&s, T0 - 100).is_ok());
        // 0 disables a timeout.
        let mut off = c.clone();
        off.idling_timeout = 0;
        off.rolling_timeout = 0;
        off.absolute_timeout = 0;
        assert_eq!(s.expired(u64::MAX, &off), None);
        assert_eq!(s.max_age(T0, &off), None);
        assert_eq!(s.max_age(T0, &c), Some(900));
        assert_eq!(s3.max_age(T0 + 86300, &c), Some(100));
        assert_eq!(s.max_age(T0 + 5000, &c), Some(0));
    }

    #[test]
    fn refresh_policy() {
        let c = cfg();
        let mut s = Session::new(Secret::new("t"), T0);
        assert_eq!(s.refresh(T0 + 59, &c), Refresh::None);
        assert_eq!(s.refresh(T0 + 60, &c), Refresh::Touched);
        assert_eq!((s.saved_at, s.last_seen), (T0, T0 + 60));
        assert_eq!(s.refresh(T0 + 61, &c), Refresh::None);
        s.touch(T0 + 2600);
        assert_eq!(s.refresh(T0 + 2700, &c), Refresh::Saved);
        assert_eq!((s.saved_at, s.last_seen), (T0 + 2700, T0 + 2700));
        assert_eq!(s.created_at, T0);
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = SessionKey::derive(&Secret::new("super-secret-session-key"));
        let d = format!("{k:?}");
        assert_eq!(d, "SessionKey([redacted])");
        let mut s = Session::new(Secret::new("ACCESS-TOKEN-VALUE"), T0);
        s.refresh_token = Some(Secret::new("REFRESH-TOKEN-VALUE"));
        s.id_token = Some(Secret::new("ID-TOKEN-VALUE"));
        let d = format!("{s:?}");
        for secret in [
            "ACCESS-TOKEN-VALUE",
            "REFRESH-TOKEN-VALUE",
            "ID-TOKEN-VALUE",
        ] {
            assert!(!d.contains(secret), "{d}");
        }
        assert!(d.contains("[redacted]"));
        // Different secrets, different keys; the same secret, the same key.
        let a = seal(&key(), b"s", b"m", NONCE);
        assert!(open(&k, b"s", &a).is_err());
        assert!(open(&key(), b"s", &a).is_ok());
    }

    #[test]
    fn the_upstream_gets_every_cookie_but_ours() {
        let jar = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = jar(&[
            ("theme", "dark"),
            ("session", "a"),
            ("session_1", "b"),
            ("session_flow_xyz", "c"),
            ("sessionid", "app"),
            ("session_01", "not-a-chunk"),
        ]);
        assert_eq!(
            without_ours("session", &c).as_deref(),
            Some("theme=dark; sessionid=app; session_01=not-a-chunk")
        );
        assert_eq!(without_ours("session", &jar(&[("theme", "dark")])), None);
        assert_eq!(
            without_ours("session", &jar(&[("session", "a")])).as_deref(),
            Some("")
        );
        assert!(is_ours("s", "s_flow_abc"));
        assert!(!is_ours("s", "sflow_abc"));
        assert!(!is_ours("s", "other"));
    }
}
