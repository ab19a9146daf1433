//! Provider calls, made the same way for a request (`request.rs`) and for
//! the background refresh (`lib.rs`): the call from a described request,
//! and its answer read back.

use std::time::Duration;

use oidc_core::http::{HttpRequest, MAX_RESPONSE_BODY};
use proxy_wasm::traits::Context;
use proxy_wasm::types::Status;

use crate::metrics::Metrics;

/// Dispatches `req` on its provider cluster; the call's token.
pub fn dispatch<C: Context + ?Sized>(
    ctx: &C,
    req: &HttpRequest,
    timeout: Duration,
) -> Result<u32, Status> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", req.method),
        (":path", &req.path),
        (":authority", &req.authority),
    ];
    headers.extend(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    ctx.dispatch_http_call(&req.cluster, headers, req.body.as_deref(), vec![], timeout)
}

/// A call's status and body, from `on_http_call_response`'s sizes.
///
/// A call that failed without a response (connection reset, stream
/// error) arrives with no headers; asking for them then makes the host
/// answer BadArgument, which the SDK turns into a panic that would take the
/// whole VM down. Status 0 means "no answer". A body over the cap is not
/// read: the call counts as failed (status 0), like one that got no answer.
pub fn answer<C: Context + ?Sized>(
    ctx: &C,
    metrics: &Metrics,
    headers: usize,
    body_size: usize,
) -> (u16, Vec<u8>) {
    let too_big = body_size > MAX_RESPONSE_BODY;
    if too_big {
        log::warn!(
            "openid-connect: a provider answer of {body_size} bytes is over the \
             {MAX_RESPONSE_BODY}-byte cap; the call counts as failed"
        );
        // (Counted as a failure where the core handles status 0.)
        metrics.body_too_large();
    }
    if headers == 0 || too_big {
        return (0, Vec::new());
    }
    let status = ctx
        .get_http_call_response_header_bytes(":status")
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
        .unwrap_or(0);
    let body = if body_size == 0 {
        Vec::new()
    } else {
        ctx.get_http_call_response_body(0, body_size)
            .unwrap_or_default()
    };
    (status, body)
}
