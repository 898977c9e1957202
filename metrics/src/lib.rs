//! Verdant's measurements: where each message's CPU time goes, and the
//! metrics the process exports.
//!
//! - [`cpu`]: thread and process CPU clocks.
//! - [`stage`]: which pipeline stage a worker is in ([`stage::Staged`]
//!   wraps a task), for the sampler.
//! - [`account`]: the accountant, a sampler thread that charges the
//!   process's measured CPU time to the messages each stage handled
//!   ([`account::count`]), by the rule of [`attribute`].
//! - [`catalog`]: every exported metric, declared once with its
//!   description; [`export`]: the Prometheus recorder and HTTP listener.
//!
//! ```no_run
//! use verdant_metrics::{account, stage};
//! let accountant = account::start(Default::default())?;
//! // On each worker thread, once:
//! account::register_worker(0);
//! // Work of a stage: wrap its task, count its messages.
//! let task = stage::staged(stage::Stage::Receive, async {
//!     account::count(stage::Stage::Receive, 1);
//! });
//! # let _ = (task, accountant.totals());
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs)]

pub mod account;
pub mod attribute;
pub mod catalog;
pub mod cpu;
pub mod domains;
pub mod energy;
pub mod export;
pub mod footprint;
pub mod ledger;
pub mod ops;
pub mod stage;

pub use account::{Accountant, count};
pub use stage::{Stage, staged};
