//! Helpers shared by Verdant's test suites. **For tests only**: this crate
//! is a dev-dependency of the workspace's packages, is never published and
//! never linked into the `verdant` binary.
//!
//! Everything here runs on loopback only (127.0.0.1) and serves reserved
//! names only (`.test`, `.example`, `.invalid`, RFC 2606), so no test ever
//! reaches or asks about anything off the machine.
//!
//! - [`dns`]: a real authoritative DNS server in the test process
//!   ([`DnsServer`], zones built with [`Zones`], with query counting) and a
//!   DNS server that never answers ([`SilentDns`]).
//! - [`rng`]: a seeded generator for repeatable randomized tests.
//! - [`broker`]: the RabbitMQ of the broker tests (its URL, the loud skip,
//!   `rabbitmqctl`).
#![warn(missing_docs)]

pub mod broker;
pub mod dns;
pub mod rng;

pub use dns::{DnsServer, SilentDns, Zones};
pub use rng::Rng;
