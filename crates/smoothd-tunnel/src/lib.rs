//! `proxy_server: "self"`: the FRP server side that the smooth SDK's `frpc` connects to
//! ([`server`], over [`ws`] on the API listener at `/~!frp` or on [`tls`]'s own listener), the
//! relay to the worker running the session ([`relay`]) and, on the worker, the session's
//! loopback SOCKS5 endpoint fed through the caller's frpc ([`hub`]).

pub mod crypto;
pub mod hub;
pub mod msg;
pub mod relay;
pub mod server;
pub mod tls;
pub mod ws;

pub use hub::Hub;
pub use server::{Candidate, Sessions, WorkerLookup};

/// What can go wrong on a tunnel connection.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something the protocol does not allow.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The worker relay could not be opened.
    #[error("relay: {0}")]
    Relay(String),
    /// The TLS configuration is unusable.
    #[error("tls: {0}")]
    Tls(String),
}
