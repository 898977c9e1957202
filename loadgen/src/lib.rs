//! Verdant's load generator and test sink.
#![warn(missing_docs)]
