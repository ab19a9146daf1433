//! Runs one request kind through `Exchange::begin` N times (for profiling
//! the core natively: `valgrind --tool=callgrind target/release/examples/profile_exchange`).
//!
//!   profile_exchange <config.json> <header name> <header value> <n> <unix time>

use std::collections::HashMap;
use std::rc::Rc;

use oidc_core::browser::Entropy;
use oidc_core::config::PluginConfig;
use oidc_core::exchange::{Effect, Exchange, Host};
use oidc_core::provider::{Documents, FetchKind};
use oidc_core::route::Route;
use oidc_core::session::{self, Session, SessionError, SessionKey};

#[derive(Default)]
struct H {
    sessions: HashMap<String, Rc<Session>>,
}
impl Entropy for H {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        buf.fill(7);
        Ok(())
    }
}
impl Host for H {
    fn documents(&mut self, _: &str) -> Documents {
        Documents::default()
    }
    fn read_document(&mut self, _: FetchKind, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn write_document(&mut self, _: FetchKind, _: &str, _: &[u8]) {}
    fn claim(&mut self, _: FetchKind, _: &str, _: u64, _: u64) -> bool {
        false
    }
    fn release(&mut self, _: FetchKind, _: &str, _: u64) {}
    fn unseal(
        &mut self,
        key: &SessionKey,
        name: &str,
        value: &str,
    ) -> Result<Rc<Session>, SessionError> {
        if let Some(s) = self.sessions.get(value) {
            return Ok(s.clone());
        }
        let s = Rc::new(session::unseal(key, name, value)?);
        self.sessions.insert(value.to_owned(), s.clone());
        Ok(s)
    }
    fn resealed(&mut self, value: String, session: Rc<Session>) {
        self.sessions.insert(value, session);
    }
}

fn main() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [config, name, value, n, now] = a.as_slice() else {
        return Err(
            "usage: profile_exchange <config.json> <header name> <header value> <n> <unix time>"
                .into(),
        );
    };
    let cfg = std::fs::read_to_string(config).map_err(|e| format!("{config}: {e}"))?;
    let cfg = PluginConfig::parse_str(&cfg).map_err(|e| e.to_string())?;
    let route = Route::new(cfg).map_err(|e| e.to_string())?;
    let headers = vec![
        (":authority".to_string(), b"127.0.0.1".to_vec()),
        (":path".to_string(), b"/anything".to_vec()),
        (":method".to_string(), b"GET".to_vec()),
        (":scheme".to_string(), b"http".to_vec()),
        (name.to_lowercase(), value.as_bytes().to_vec()),
    ];
    let n: usize = n.parse().map_err(|_| "n: a number")?;
    let now: u64 = now.parse().map_err(|_| "now: unix seconds")?;
    let mut host = H::default();
    let mut kinds = HashMap::new();
    for _ in 0..n {
        let (_x, e) = Exchange::begin(&route, &headers, &mut host, now);
        let k = match e {
            Effect::Reply(r, _) => format!("reply {}", r.status),
            Effect::Allow(_) => "allow".into(),
            Effect::Forward(_) => "forward".into(),
            Effect::Fetch { .. } => "fetch".into(),
            Effect::Call(..) => "call".into(),
            Effect::ReadBody { .. } => "read body".into(),
        };
        *kinds.entry(k).or_insert(0) += 1;
    }
    eprintln!("{kinds:?}");
    Ok(())
}
