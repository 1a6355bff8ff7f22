#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
//! mailfleet: a terminal operations console, and the engine behind it, for fleets of
//! email-sending servers.

pub mod access;
pub mod agent;
pub mod alerting;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dkim;
pub mod dns;
pub mod domain;
pub mod engine;
pub mod lab;
pub mod providers;
pub mod reputation;
pub mod serve;
pub mod store;
pub mod tls;
pub mod tui;
pub mod untrusted;
pub mod warmup;
