//! Test harness: starts real processes (Envoy, the OpenID provider, httpbin)
//! on free loopback ports and stops them again.
