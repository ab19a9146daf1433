//! Times one signature check of the filter's verifier per algorithm.
//! Built for wasm32-wasip1 and run under V8 (`bench/verify.mjs`, Node's
//! WASI), the engine Envoy runs the filter in; also runs natively.
//!
//! The figure is CPU time, not wall time, so that other work on a shared
//! machine does not inflate it: natively this process's on-CPU time from
//! `/proc/self/schedstat` (the wall clock where that file is missing); in
//! wasm `Instant`, which `bench/verify.mjs` answers with Node's
//! `process.cpuUsage()`.
//!
//!   verify-bench <dir>   (reads rs256.txt, ps256.txt, es256.txt, rsa.pem, ec.pem from bench/tokens.mjs)

use std::time::Instant;

/// Microseconds of CPU time (see the module doc) since some fixed point.
fn cpu_micros(origin: Instant) -> f64 {
    #[cfg(not(target_family = "wasm"))]
    if let Some(ns) = std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
    {
        return ns / 1e3;
    }
    origin.elapsed().as_secs_f64() * 1e6
}

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
    let origin = Instant::now();
    println!("| alg | verifications | CPU µs per check (median of 5 runs) |");
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
            let start = cpu_micros(origin);
            for t in &tokens {
                let _ = jwt::verify(t, &keys, &policy, now);
            }
            runs.push((cpu_micros(origin) - start) / tokens.len() as f64);
        }
        runs.sort_by(f64::total_cmp);
        println!("| {alg} | {} | {:.0} |", tokens.len() * 5, runs[2]);
    }
}
