//! Prints a sealed session cookie header value (`name=value[; name_1=...]`)
//! for a session secret and an access token, as the filter would set after a
//! login. `make bench` replays it (the "logged-in browser" scenario).
//!
//!   cargo run -p oidc-core --example session_cookie -- <secret> <access token> <now> <discovery> <client_id>
//!
//! (The cookie opens only on routes with that `discovery` and `client_id`.)

use oidc_core::secret::Secret;
use oidc_core::session::{self, Session, SessionKey};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [secret, token, now, discovery, client_id] = args.as_slice() else {
        eprintln!(
            "usage: session_cookie <session secret> <access token> <unix time> <discovery> <client_id>"
        );
        std::process::exit(2);
    };
    let now: u64 = now.parse().unwrap_or_else(|_| {
        eprintln!("the time must be unix seconds");
        std::process::exit(2)
    });
    let key = SessionKey::for_route(&Secret::new(secret.clone()), discovery, client_id);
    let mut s = Session::new(Secret::new(token.clone()), now);
    s.access_expires_at = Some(now + 86_400);
    s.id_claims = serde_json::json!({"sub": "bench-user", "preferred_username": "bench"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&now.to_le_bytes());
    let cookies = session::encode(&s, &key, "session", nonce);
    let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", header.join("; "));
}
