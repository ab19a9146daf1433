//! Base64 decoding as JOSE uses it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// Strict unpadded base64url (RFC 7515 section 2), as every JWS segment
/// must be: no `=`, no `+`/`/`, no whitespace, no stray trailing bits.
pub(crate) fn url_strict(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// base64url for JWK members, tolerating up to two trailing `=` that some
/// key publishers add.
pub(crate) fn url_lenient(s: &str) -> Option<Vec<u8>> {
    let trimmed = s
        .strip_suffix("==")
        .or_else(|| s.strip_suffix('='))
        .unwrap_or(s);
    url_strict(trimmed)
}

/// Standard padded base64 with all ASCII whitespace removed (PEM bodies).
pub(crate) fn standard_ignoring_whitespace(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_rejects_padding_and_standard_alphabet() {
        assert_eq!(url_strict("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(url_strict("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(url_strict("AQ=="), None);
        assert_eq!(url_strict("/+8"), None);
        assert_eq!(url_strict("AQ B"), None);
        // "AR" has non-zero trailing bits: not canonical.
        assert_eq!(url_strict("AR"), None);
        assert_eq!(url_strict(""), Some(vec![]));
    }

    #[test]
    fn lenient_accepts_trailing_padding_only() {
        assert_eq!(url_lenient("AQ=="), Some(vec![1]));
        assert_eq!(url_lenient("AQI="), Some(vec![1, 2]));
        assert_eq!(url_lenient("AQ==="), None);
        assert_eq!(url_lenient("A=Q"), None);
    }

    #[test]
    fn pem_body_with_line_breaks() {
        assert_eq!(
            standard_ignoring_whitespace("AQID\r\nBA==\n"),
            Some(vec![1, 2, 3, 4])
        );
        assert_eq!(standard_ignoring_whitespace("AQ-_"), None);
    }
}
