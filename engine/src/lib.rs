//! Verdant's delivery engine: routing, MX lookups, the pooled SMTP client,
//! retries and bounces.
#![warn(missing_docs)]
