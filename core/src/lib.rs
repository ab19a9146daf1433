//! The sans-IO core of the `openid-connect` filter.
//!
//! Nothing here does I/O, reads a clock or draws randomness: the caller
//! passes time and random bytes in, and gets decisions and effects out.

pub mod backchannel;
pub mod bearer;
pub mod browser;
pub mod callback;
pub mod claims;
pub mod config;
pub mod discovery;
pub mod exchange;
pub mod http;
pub mod introspection;
pub mod jwt;
pub mod login;
pub mod metadata;
pub mod provider;
pub mod reply;
pub mod revocation;
pub mod revocation_feed;
pub mod route;
pub mod secret;
pub mod session;
pub mod settings;
pub mod signed_in;
