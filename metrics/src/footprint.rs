//! From each charged interval to energy, carbon and SCI per message: the
//! reporter that records them (and feeds the footprint ledger, see
//! [`crate::ledger`]).
//!
//! The functional unit `R` of a process is one message accepted; in a
//! process that only delivers (`verdant engine`), one message delivered.
//! An interval without any such message carries its energy and carbon to
//! the next one that has messages, as the CPU accountant carries CPU time.

use std::time::Duration;

use crate::account::{Report, Reporter};
use crate::catalog::{FOOTPRINT_INFO, MESSAGE_CARBON, MESSAGE_ENERGY, POWER, SCI};
use crate::energy::{Estimate, Interval, Model, Rapl};
use crate::ledger::Ledger;

/// What one interval charges each message, for the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PerMessage {
    /// Messages charged (the functional unit).
    pub messages: u64,
    /// Whether they are messages accepted (else delivered).
    pub received: bool,
    /// CPU time per message, all stages.
    pub cpu: Duration,
    /// Joules per message.
    pub joules: f64,
    /// Grams CO2e per message.
    pub grams: f64,
}

/// Energy and carbon measured but not yet charged.
#[derive(Debug, Default, Clone, Copy)]
struct Carry {
    joules: f64,
    grams: f64,
}

/// The reporter: energy, carbon and SCI for each interval, recorded as
/// metrics with the method as a label, and handed to `ledger`.
pub fn reporter(model: Model, mut ledger: Option<Ledger>) -> Reporter {
    let mut rapl = Rapl::open();
    let mut last_busy = crate::cpu::host_busy();
    let mut carry = Carry::default();
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
        if !info_set {
            let (te, vcpus, pue, grid) = (
                model.embodied_g.unwrap_or(0.0) / 1000.0,
                model.vcpus.to_string(),
                model.pue.to_string(),
                model.grid_g_per_kwh.to_string(),
            );
            metrics::gauge!(FOOTPRINT_INFO.name,
                "method" => method.clone(),
                "cpu" => model.cpu.name(),
                "vcpus" => vcpus,
                "pue" => pue,
                "grid_g_per_kwh" => grid,
                "embodied_kg" => te.to_string())
            .set(1.0);
            info_set = true;
        }
        let wall = r.wall.as_secs_f64();
        if wall > 0.0 {
            metrics::gauge!(POWER.name, "method" => method.clone()).set(est.joules / wall);
        }
        // R: accepted messages, or, with none, delivered ones.
        let n = match r.charged.messages {
            [0, _, d] => d,
            [received, _, _] => received,
        };
        let joules = est.joules + carry.joules;
        let grams = est.grams + carry.grams;
        if n == 0 {
            carry = Carry { joules, grams };
            if let Some(ledger) = &mut ledger {
                ledger.tick();
                if r.last {
                    ledger.finish();
                }
            }
            return;
        }
        carry = Carry::default();
        let per = PerMessage {
            messages: n,
            received: r.charged.messages[0] > 0,
            cpu: r.charged.sum() / u32::try_from(n).unwrap_or(u32::MAX),
            joules: joules / n as f64,
            grams: grams / n as f64,
        };
        let count = usize::try_from(n).unwrap_or(usize::MAX);
        metrics::histogram!(MESSAGE_ENERGY.name, "method" => method.clone())
            .record_many(per.joules, count);
        metrics::histogram!(MESSAGE_CARBON.name, "method" => method.clone())
            .record_many(per.grams, count);
        metrics::gauge!(SCI.name, "method" => method).set(per.grams);
        if let Some(ledger) = &mut ledger {
            ledger.charge(&per, &model.note(est.method));
            if r.last {
                ledger.finish();
            }
        }
    })
}
