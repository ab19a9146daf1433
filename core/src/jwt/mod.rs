//! JWT verification.
