//! End-to-end tests: the store conformance suite on both databases, and the real server
//! on 127.0.0.1:0 driven over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation fails the test"
)]

mod api;
mod browser;
mod dashboard_store;
mod layout;
mod limits;
mod media;
mod metrics;
mod migrations;
mod queue;
mod replay_store;
mod store;
