//! TLS without terminating it: reading a ClientHello ([`client_hello`])
//! and the passthrough policy that decides on it ([`policy`]).

pub mod client_hello;
pub mod policy;
pub mod synthetic;

pub use client_hello::{peek_client_hello, ClientHello, Peeked, TlsVersion, MAX_CLIENT_HELLO};
