//! `claim_schema`: the compiler on any JSON, then the evaluator on any
//! claims (input: schema JSON, a NUL byte, claims JSON). Neither may
//! panic or recurse past the schema's bounded depth.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oidc_core::claims::ClaimSchema;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (schema, claims) = s.split_once('\0').unwrap_or((s, "{}"));
    let Ok(schema) = serde_json::from_str::<serde_json::Value>(schema) else {
        return;
    };
    let Ok(compiled) = ClaimSchema::compile(&schema) else {
        return;
    };
    if let Ok(claims) = serde_json::from_str::<serde_json::Value>(claims) {
        let _ = compiled.check(&claims);
    }
});
