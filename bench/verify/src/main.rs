//! Times one signature check of the filter's verifier per algorithm.
//! Built for wasm32-wasip1 and run under V8 (`bench/verify.mjs`, Node's
//! WASI), the engine Envoy runs the filter in; also runs natively.
//!
//!   verify-bench <dir>   (reads rs256.txt, ps256.txt, es256.txt, rsa.pem, ec.pem from bench/tokens.mjs)

use std::time::Instant;

use oidc_core::jwt::{self, AudiencePolicy, Jwks, VerifyPolicy};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let read = |f: &str| {
        std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_else(|e| {
            eprintln!("cannot read {dir}/{f}: {e}");
            std::process::exit(2)
        })
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("| alg | verifications | µs per check (median of 5 runs) |");
    println!("|---|---:|---:|");
    for (alg, tokens, pem) in [
        ("RS256", "rs256.txt", "rsa.pem"),
        ("PS256", "ps256.txt", "rsa.pem"),
        ("ES256", "es256.txt", "ec.pem"),
    ] {
        let keys = Jwks::from_pem(&read(pem)).expect("the key");
        let text = read(tokens);
        let tokens: Vec<&str> = text.lines().take(200).collect();
        let issuer = jwt::unverified_payload(tokens[0])
            .and_then(|p| p.get("iss").and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_default();
        let policy = VerifyPolicy {
            issuers: Some(vec![issuer]),
            audience: AudiencePolicy::default(),
            ..VerifyPolicy::default()
        };
        // Warm-up (V8 tiers the code up).
        for t in &tokens {
            jwt::verify(t, &keys, &policy, now).expect("a valid token");
        }
        let mut runs = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            for t in &tokens {
                let _ = jwt::verify(t, &keys, &policy, now);
            }
            runs.push(start.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64);
        }
        runs.sort_by(f64::total_cmp);
        println!("| {alg} | {} | {:.0} |", tokens.len() * 5, runs[2]);
    }
}
