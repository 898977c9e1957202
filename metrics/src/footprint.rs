//! From each charged interval to energy, carbon and SCI per message: the
//! reporter that records them and feeds the footprint ledger
//! ([`crate::ledger`]).
//!
//! The functional unit `R` is fixed per process: one message accepted, or,
//! in a process that only delivers (`verdant engine`), one message
//! delivered. An interval without any such message carries its energy and
//! carbon to the next one that has some, as the CPU accountant carries CPU
//! time; after [`IDLE_AFTER`] intervals without messages the carried part
//! is recorded as idle instead (in the ledger: the `(idle)` line), so that
//! a quiet night does not land on the first message of the morning.

use crate::account::{Report, Reporter};
use crate::catalog::{FOOTPRINT_INFO, MESSAGE_CARBON, MESSAGE_ENERGY, POWER, SCI};
use crate::energy::{Estimate, Interval, Model, Rapl};
use crate::ledger::{Cost, Ledger};

/// Intervals without messages after which carried costs count as idle.
pub const IDLE_AFTER: u32 = 60;

/// The functional unit of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One message accepted (processes that receive).
    Received,
    /// One message delivered (`verdant engine`).
    Delivered,
}

/// The reporter: energy, carbon and SCI for each interval, recorded as
/// metrics with the method as a label, and handed to `ledger`.
pub fn reporter(model: Model, unit: Unit, mut ledger: Option<Ledger>) -> Reporter {
    let mut rapl = Rapl::open();
    let mut last_busy = crate::cpu::host_busy();
    let mut carry = Cost::default();
    let mut quiet = 0u32;
    let mut info_set = false;
    Box::new(move |r: &Report| {
        let busy = crate::cpu::host_busy();
        let host_busy_cpu = match (busy, last_busy) {
            (Some(now), Some(before)) => now.saturating_sub(before),
            _ => r.process_cpu,
        };
        last_busy = busy;
        let est: Estimate = model.estimate(&Interval {
            wall: r.wall,
            process_cpu: r.process_cpu,
            host_busy_cpu,
            rss_bytes: crate::cpu::rss_bytes(),
            rapl_joules: rapl.as_mut().map(Rapl::joules),
        });
        let method = est.method.to_string();
        let note = model.note(est.method);
        if !info_set {
            metrics::gauge!(FOOTPRINT_INFO.name,
                "method" => method.clone(),
                "cpu" => model.cpu.name(),
                "vcpus" => model.vcpus.to_string(),
                "pue" => model.pue.to_string(),
                "grid_g_per_kwh" => model.grid_g_per_kwh.to_string(),
                "embodied_kg" => (model.embodied_g.unwrap_or(0.0) / 1000.0).to_string())
            .set(1.0);
            info_set = true;
        }
        let wall = r.wall.as_secs_f64();
        if wall > 0.0 {
            metrics::gauge!(POWER.name, "method" => method.clone()).set(est.joules / wall);
        }
        let n = match unit {
            Unit::Received => r.charged.messages[0],
            Unit::Delivered => r.charged.messages[2],
        };
        carry.cpu_seconds += r.charged.sum().as_secs_f64();
        if r.last {
            // Stopping: what the accountant still carries goes out too.
            carry.cpu_seconds += r.carried.as_secs_f64();
        }
        carry.joules += est.joules;
        carry.grams += est.grams;
        if n == 0 {
            quiet += 1;
            if let Some(ledger) = &mut ledger {
                if quiet >= IDLE_AFTER || r.last {
                    ledger.idle(&std::mem::take(&mut carry), &note);
                }
                ledger.tick();
                if r.last {
                    ledger.finish();
                }
            } else if quiet >= IDLE_AFTER {
                carry = Cost::default();
            }
            return;
        }
        quiet = 0;
        let cost = Cost {
            messages: n,
            ..std::mem::take(&mut carry)
        };
        let per_joules = cost.joules / n as f64;
        let per_grams = cost.grams / n as f64;
        let count = usize::try_from(n).unwrap_or(usize::MAX);
        metrics::histogram!(MESSAGE_ENERGY.name, "method" => method.clone())
            .record_many(per_joules, count);
        metrics::histogram!(MESSAGE_CARBON.name, "method" => method.clone())
            .record_many(per_grams, count);
        metrics::gauge!(SCI.name, "method" => method).set(per_grams);
        if let Some(ledger) = &mut ledger {
            ledger.charge(&cost, &note);
            if r.last {
                ledger.finish();
            }
        }
    })
}
