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

use metrics::Unit;

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
    help: "CPU time charged to each message, by stage (receive, queue, deliver): \
           the process's measured CPU time of each interval, shared out over the \
           messages each stage handled in it. The sum over stages is the process's \
           CPU time, less what is carried (verdant_cpu_carried_seconds).",
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

/// Every metric, for `verdant metrics list` and the dashboards' check.
pub const ALL: &[Metric] = &[MESSAGE_CPU, CPU_CARRIED];

/// Registers every description with the installed recorder.
pub fn describe_all() {
    for m in ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
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
            m.unit.as_canonical_label(),
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
                Unit::Seconds => base.ends_with("_seconds"),
                Unit::Bytes => base.ends_with("_bytes"),
                _ => true,
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
