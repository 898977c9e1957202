//! The Prometheus exporter: the recorder every `metrics` macro of the
//! process records into, and its HTTP listener (`GET /metrics`, on its own
//! small thread with a tokio current-thread runtime).

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::account::{Report, Reporter};
use crate::catalog::{
    self, BROKER_CONFIRM, BROKER_ROUND, CPU_CARRIED, DELIVERY_LATENCY, MESSAGE_CARBON, MESSAGE_CPU,
    MESSAGE_ENERGY,
};
use crate::stage::Stage;

/// Buckets of the per-message CPU histogram, in seconds: 5 µs to 100 ms.
const CPU_BUCKETS: &[f64] = &[
    5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 1e-1,
];

/// Buckets of the delivery latency histogram, in seconds: 1 ms to 5 days.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 14_400.0, 86_400.0,
    432_000.0,
];

/// Buckets of the publish round sizes.
const ROUND_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Buckets of the confirm latency, in seconds: 100 µs to 10 s.
const CONFIRM_BUCKETS: &[f64] = &[
    1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.5, 1.0, 10.0,
];

/// Buckets of the per-message energy histogram, in joules: 10 µJ to 1 J.
const ENERGY_BUCKETS: &[f64] = &[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 1.0];

/// Buckets of the per-message carbon histogram, in grams: 1 ng to 1 mg.
const CARBON_BUCKETS: &[f64] = &[1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 3e-7, 1e-6, 1e-5, 1e-4, 1e-3];

/// Installs the process-wide recorder with an HTTP listener on `listen`
/// and describes every metric of the catalog. Once per process.
pub fn install(listen: SocketAddr) -> Result<(), String> {
    let buckets: [(&str, &[f64]); 6] = [
        (MESSAGE_CPU.name, CPU_BUCKETS),
        (MESSAGE_ENERGY.name, ENERGY_BUCKETS),
        (MESSAGE_CARBON.name, CARBON_BUCKETS),
        (DELIVERY_LATENCY.name, LATENCY_BUCKETS),
        (BROKER_ROUND.name, ROUND_BUCKETS),
        (BROKER_CONFIRM.name, CONFIRM_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new().with_http_listener(listen);
    for (name, b) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), b)
            .map_err(|e| e.to_string())?;
    }
    builder
        .install()
        .map_err(|e| format!("metrics on {listen}: {e}"))?;
    catalog::describe_all();
    Ok(())
}

/// A reporter that records each charged interval: one observation of its
/// per-message CPU per message and stage.
pub fn cpu_reporter() -> Reporter {
    let stages =
        Stage::MESSAGE.map(|s| metrics::histogram!(MESSAGE_CPU.name, "stage" => s.label()));
    let carried = metrics::gauge!(CPU_CARRIED.name);
    Box::new(move |r: &Report| {
        for (i, h) in stages.iter().enumerate() {
            let n = r.charged.messages[i];
            if n > 0 {
                h.record_many(r.charged.per_message(i).as_secs_f64(), n as usize);
            }
        }
        carried.set(r.carried.as_secs_f64());
    })
}
