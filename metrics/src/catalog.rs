//! Every metric Verdant exports, declared once: name, kind, unit, labels
//! and what it means. [`describe_all`] hands the descriptions to the
//! recorder (they become the `# HELP` lines of `/metrics`), and
//! `verdant metrics list` prints [`ALL`], so dashboards can be checked
//! against it.
//!
//! Names follow Prometheus' conventions: base units (`_seconds`,
//! `_bytes`, `_joules`, `_grams`), `_total` for counters. The `metrics`
//! crate's counters are integers, so CPU time, energy and carbon are
//! histograms of per-message values: their `_sum` is the total and their
//! `_count` the number of messages.

/// The base unit of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds (time).
    Seconds,
    /// Bytes.
    Bytes,
    /// Joules (energy).
    Joules,
    /// Grams (mass, here of CO2 equivalent).
    Grams,
    /// Watts (power).
    Watts,
    /// A plain count.
    Count,
    /// An info metric: always 1, its labels are the information.
    Info,
}

impl Unit {
    /// The unit's name in `verdant metrics list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Joules => "joules",
            Unit::Grams => "grams",
            Unit::Watts => "watts",
            Unit::Count => "count",
            Unit::Info => "info",
        }
    }

    /// The `metrics` crate's unit, where it has one.
    fn recorder_unit(self) -> Option<metrics::Unit> {
        match self {
            Unit::Seconds => Some(metrics::Unit::Seconds),
            Unit::Bytes => Some(metrics::Unit::Bytes),
            Unit::Count => Some(metrics::Unit::Count),
            _ => None,
        }
    }
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, exported with buckets, `_sum` and `_count`.
    Histogram,
}

impl Kind {
    /// The Prometheus type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The exported name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its unit.
    pub unit: Unit,
    /// Its label names.
    pub labels: &'static [&'static str],
    /// What it means (the `# HELP` text).
    pub help: &'static str,
}

/// CPU time charged per message, by stage.
pub const MESSAGE_CPU: Metric = Metric {
    name: "verdant_message_cpu_seconds",
    kind: Kind::Histogram,
    unit: Unit::Seconds,
    labels: &["stage"],
    help: "CPU time charged per message and stage, the process's measured CPU time of \
           each second shared out over what each stage handled in it: receive per \
           message accepted, queue per queue operation (making a message durable, \
           recording an outcome), deliver per delivery attempt. The sums over stages add \
           up to the process's CPU time, less what is carried \
           (verdant_cpu_carried_seconds); per message end to end, divide them by \
           verdant_messages_received_total.",
};

/// Measured CPU not yet charged.
pub const CPU_CARRIED: Metric = Metric {
    name: "verdant_cpu_carried_seconds",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    help: "CPU time measured but not yet charged to any message (used while a stage \
           handled none); it goes to the next messages.",
};

/// Energy charged per message.
pub const MESSAGE_ENERGY: Metric = Metric {
    name: "verdant_message_energy_joules",
    kind: Kind::Histogram,
    unit: Unit::Joules,
    labels: &["method"],
    help: "Energy charged to each message (before PUE): the process's share of the \
           host's energy in each interval (RAPL where readable, otherwise the Cloud \
           Carbon Footprint linear model), plus its memory's, over the messages of the \
           interval. The method label says which; verdant_footprint_info gives the \
           coefficients.",
};

/// Carbon charged per message.
pub const MESSAGE_CARBON: Metric = Metric {
    name: "verdant_message_carbon_grams",
    kind: Kind::Histogram,
    unit: Unit::Grams,
    labels: &["method"],
    help: "Grams CO2e charged to each message of the process (accepted; in a process \
           that only delivers, delivered): its energy × PUE × grid intensity, plus \
           embodied emissions where configured. Its mean (sum / count) is the process's \
           SCI; across a receiver and an engine, divide their sums by the messages \
           accepted.",
};

/// The process's estimated power.
pub const POWER: Metric = Metric {
    name: "verdant_power_watts",
    kind: Kind::Gauge,
    unit: Unit::Watts,
    labels: &["method"],
    help: "The process's estimated power over the last interval (its share of the \
           host's, plus its memory's), before PUE.",
};

/// SCI over the last interval.
pub const SCI: Metric = Metric {
    name: "verdant_sci_grams",
    kind: Kind::Gauge,
    unit: Unit::Grams,
    labels: &["method"],
    help: "Software Carbon Intensity (Green Software Foundation, ISO/IEC 21031:2024) \
           over the last interval with messages: (E × I + M) / R in grams CO2e, R = one \
           message accepted (or, in a process that only delivers, one delivered).",
};

/// The footprint method and its coefficients.
pub const FOOTPRINT_INFO: Metric = Metric {
    name: "verdant_footprint_info",
    kind: Kind::Gauge,
    unit: Unit::Info,
    labels: &[
        "method",
        "cpu",
        "vcpus",
        "pue",
        "grid_g_per_kwh",
        "embodied_kg",
    ],
    help: "Always 1; the labels state how energy and carbon are estimated: the method \
           (rapl or ccf-linear), the CPU family whose coefficients apply, the vCPUs, \
           the PUE, the grid intensity in gCO2e/kWh and the embodied emissions counted \
           (0: none).",
};

/// SMTP sessions.
pub const SESSIONS: Metric = Metric {
    name: "verdant_sessions_total",
    kind: Kind::Counter,
    unit: Unit::Count,
    labels: &["worker"],
    help: "SMTP sessions accepted, by worker.",
};

/// Sessions open now.
pub const SESSIONS_OPEN: Metric = Metric {
    name: "verdant_sessions_open",
    kind: Kind::Gauge,
    unit: Unit::Count,
    labels: &[],
    help: "SMTP sessions open now (the whole process).",
};

/// Messages accepted.
pub const MESSAGES_RECEIVED: Metric = Metric {
    name: "verdant_messages_received_total",
    kind: Kind::Counter,
    unit: Unit::Count,
    labels: &["worker"],
    help: "Messages accepted (answered 250 once durable), by worker.",
};

/// Bytes accepted.
pub const RECEIVED_BYTES: Metric = Metric {
    name: "verdant_received_bytes_total",
    kind: Kind::Counter,
    unit: Unit::Bytes,
    labels: &["worker"],
    help: "Bytes of the messages accepted (as stored, with Verdant's Received: header), by worker.",
};

/// Recipients by attempt result.
pub const ATTEMPTS: Metric = Metric {
    name: "verdant_delivery_attempts_total",
    kind: Kind::Counter,
    unit: Unit::Count,
    labels: &["worker", "class"],
    help: "Recipients of delivery attempts by the class of the result: 2xx (delivered), \
           4xx (a temporary refusal, a connection failure or a timeout: tried again), 5xx \
           (refused for good).",
};

/// Recipients by destination domain and result.
pub const DESTINATION_ATTEMPTS: Metric = Metric {
    name: "verdant_destination_attempts_total",
    kind: Kind::Counter,
    unit: Unit::Count,
    labels: &["worker", "domain", "class"],
    help: "Recipients of delivery attempts by recipient domain and result class; the first \
           100 domains a worker sees are named, the rest count as \"(other)\".",
};

/// Messages by the outcome of their attempt.
pub const MESSAGES_FINISHED: Metric = Metric {
    name: "verdant_delivery_outcomes_total",
    kind: Kind::Counter,
    unit: Unit::Count,
    labels: &["worker", "outcome"],
    help: "Messages whose delivery attempt ended, by outcome: delivered (every recipient \
           done), deferred (some to try again), bounced (failed for good).",
};

/// Time from reception to delivery.
pub const DELIVERY_LATENCY: Metric = Metric {
    name: "verdant_delivery_latency_seconds",
    kind: Kind::Histogram,
    unit: Unit::Seconds,
    labels: &["worker"],
    help: "Time from a message's reception to its delivery (retries included).",
};

/// Messages the engine holds.
pub const QUEUE_MESSAGES: Metric = Metric {
    name: "verdant_queue_messages",
    kind: Kind::Gauge,
    unit: Unit::Count,
    labels: &["worker", "state"],
    help: "Messages the delivery engine holds, by state: inflight (an attempt under way) or \
           waiting (deferred until their next attempt; on the broker they wait in its delay \
           queues instead).",
};

/// Age of the oldest message held.
pub const QUEUE_OLDEST: Metric = Metric {
    name: "verdant_queue_oldest_seconds",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &["worker"],
    help: "Age of the oldest message the delivery engine holds (in flight or waiting); \
           0 with none. On the broker, messages waiting in its delay queues are not \
           counted.",
};

/// Publish rounds on the broker.
pub const BROKER_ROUND: Metric = Metric {
    name: "verdant_broker_round_messages",
    kind: Kind::Histogram,
    unit: Unit::Count,
    labels: &[],
    help: "Messages per publish round to the broker (all published, then every confirm awaited).",
};

/// Confirm latency of a publish round.
pub const BROKER_CONFIRM: Metric = Metric {
    name: "verdant_broker_confirm_seconds",
    kind: Kind::Histogram,
    unit: Unit::Seconds,
    labels: &[],
    help: "Time from the start of a publish round to the broker's last confirm of it.",
};

/// Whether the broker is connected.
pub const BROKER_CONNECTED: Metric = Metric {
    name: "verdant_broker_connected",
    kind: Kind::Gauge,
    unit: Unit::Count,
    labels: &[],
    help: "1 while connected to the broker, 0 while reconnecting.",
};

/// Whether the broker blocks publishing.
pub const BROKER_BLOCKED: Metric = Metric {
    name: "verdant_broker_blocked",
    kind: Kind::Gauge,
    unit: Unit::Count,
    labels: &[],
    help: "1 while the broker blocks publishing (a memory or disk alarm: new mail gets 451).",
};

/// Every metric, for `verdant metrics list` and the dashboards' check.
pub const ALL: &[Metric] = &[
    SESSIONS,
    SESSIONS_OPEN,
    MESSAGES_RECEIVED,
    RECEIVED_BYTES,
    ATTEMPTS,
    DESTINATION_ATTEMPTS,
    MESSAGES_FINISHED,
    DELIVERY_LATENCY,
    QUEUE_MESSAGES,
    QUEUE_OLDEST,
    BROKER_ROUND,
    BROKER_CONFIRM,
    BROKER_CONNECTED,
    BROKER_BLOCKED,
    MESSAGE_CPU,
    CPU_CARRIED,
    MESSAGE_ENERGY,
    MESSAGE_CARBON,
    POWER,
    SCI,
    FOOTPRINT_INFO,
];

/// Registers every description with the installed recorder.
pub fn describe_all() {
    for m in ALL {
        match (m.kind, m.unit.recorder_unit()) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The catalog as text, one metric per paragraph (`verdant metrics list`).
pub fn list() -> String {
    let mut out = String::new();
    for m in ALL {
        let labels = if m.labels.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", m.labels.join(", "))
        };
        out.push_str(&format!(
            "{} ({}, {}){labels}\n    {}\n",
            m.name,
            m.kind.as_str(),
            m.unit.as_str(),
            m.help.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for m in ALL {
            assert!(m.name.starts_with("verdant_"), "{}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            let base = m.name.trim_end_matches("_total");
            let unit_ok = match m.unit {
                Unit::Count => true,
                Unit::Info => base.ends_with("_info"),
                u => base.ends_with(&format!("_{}", u.as_str())),
            };
            assert!(unit_ok, "{} should end in its unit", m.name);
            assert!(!m.help.is_empty());
        }
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name declared twice");
    }

    #[test]
    fn the_list_names_every_metric() {
        let text = list();
        for m in ALL {
            assert!(text.contains(m.name));
        }
    }
}
