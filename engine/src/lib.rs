//! Verdant's delivery engine: routing, MX lookups, the pooled SMTP client,
//! retries and bounces.
#![warn(missing_docs)]

pub mod bounce;
pub mod conn;
pub mod dest;
pub mod dns;
pub mod dsn;
pub mod engine;
pub mod limits;
pub mod log;
pub mod retry;
pub mod route;
pub mod smtp;
