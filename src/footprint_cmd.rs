//! `verdant footprint`: a period's footprint from the ledger, for CSR
//! reports: messages, bytes, CPU time, energy and carbon, per message too,
//! in total or by sender domain, with the method they were estimated by.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use verdant_metrics::ledger::{self, Line};
use verdant_queue::time::{parse_utc, rfc3339};

/// How the summary is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, with the method notes below.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON document.
    Json,
}

/// One row of the summary: a domain, or the whole period.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Row {
    /// The sender domain, or `total`.
    pub domain: String,
    /// Messages.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// CPU seconds.
    pub cpu_seconds: f64,
    /// Kilowatt-hours (before PUE).
    pub kwh: f64,
    /// Kilograms CO2e.
    pub kg_co2e: f64,
    /// Joules per message.
    pub joules_per_message: f64,
    /// Grams CO2e per message (the SCI).
    pub grams_co2e_per_message: f64,
}

impl Row {
    fn add(&mut self, l: &Line) {
        self.messages += l.messages;
        self.bytes += l.bytes;
        self.cpu_seconds += l.cpu_seconds;
        self.kwh += l.joules / 3.6e6;
        self.kg_co2e += l.grams_co2e / 1000.0;
    }

    fn finish(mut self) -> Row {
        if self.messages > 0 {
            let n = self.messages as f64;
            self.joules_per_message = self.kwh * 3.6e6 / n;
            self.grams_co2e_per_message = self.kg_co2e * 1000.0 / n;
        }
        self
    }
}

/// The summary of a period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Start (inclusive), RFC 3339.
    pub from: String,
    /// End (exclusive), RFC 3339.
    pub to: String,
    /// One per domain when asked for (most messages first), else none.
    pub rows: Vec<Row>,
    /// The whole period.
    pub total: Row,
    /// How the figures were estimated (every method the lines name).
    pub methods: Vec<String>,
}

/// Sums the lines whose hour lies in `[from, to)` (seconds since the
/// epoch).
pub fn summarize(lines: &[Line], from: u64, to: u64, by_domain: bool) -> Summary {
    let mut total = Row {
        domain: "total".into(),
        ..Row::default()
    };
    let mut domains: BTreeMap<&str, Row> = BTreeMap::new();
    let mut methods: Vec<String> = Vec::new();
    for l in lines {
        let Some(hour) = parse_utc(&l.hour) else {
            continue;
        };
        if hour < from || hour >= to {
            continue;
        }
        total.add(l);
        if by_domain {
            domains
                .entry(&l.domain)
                .or_insert_with(|| Row {
                    domain: l.domain.clone(),
                    ..Row::default()
                })
                .add(l);
        }
        if !methods.contains(&l.method) {
            methods.push(l.method.clone());
        }
    }
    let mut rows: Vec<Row> = domains.into_values().map(Row::finish).collect();
    rows.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.domain.cmp(&b.domain)));
    Summary {
        from: rfc3339(from.saturating_mul(1_000_000)),
        to: rfc3339(to.saturating_mul(1_000_000)),
        rows,
        total: total.finish(),
        methods,
    }
}

/// Renders `s` as `format`.
pub fn render(s: &Summary, format: Format) -> String {
    let rows = s.rows.iter().chain(std::iter::once(&s.total));
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(s).expect("plain values serialize");
            out.push('\n');
        }
        Format::Csv => {
            out.push_str("domain,messages,bytes,cpu_seconds,kwh,kg_co2e,joules_per_message,grams_co2e_per_message\n");
            for r in rows {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{}",
                    csv_field(&r.domain),
                    r.messages,
                    r.bytes,
                    r.cpu_seconds,
                    r.kwh,
                    r.kg_co2e,
                    r.joules_per_message,
                    r.grams_co2e_per_message
                );
            }
        }
        Format::Table => {
            let _ = writeln!(out, "Footprint from {} to {}", s.from, s.to);
            let _ = writeln!(
                out,
                "{:<32} {:>12} {:>10} {:>10} {:>12} {:>12} {:>10} {:>14}",
                "DOMAIN", "MESSAGES", "GB", "CPU s", "kWh", "kg CO2e", "J/msg", "g CO2e/msg"
            );
            for r in rows {
                let _ = writeln!(
                    out,
                    "{:<32} {:>12} {:>10.3} {:>10.1} {:>12.6} {:>12.6} {:>10.5} {:>14.3e}",
                    r.domain,
                    r.messages,
                    r.bytes as f64 / 1e9,
                    r.cpu_seconds,
                    r.kwh,
                    r.kg_co2e,
                    r.joules_per_message,
                    r.grams_co2e_per_message
                );
            }
            out.push_str(
                "\nMethod (CPU time measured per message; energy and carbon estimated):\n",
            );
            if s.methods.is_empty() {
                out.push_str("  (no figures in this period)\n");
            }
            for m in &s.methods {
                let _ = writeln!(out, "  {m}");
            }
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `verdant footprint`.
pub fn run(
    ledger_path: &Path,
    from: &str,
    to: &str,
    by_domain: bool,
    format: Format,
) -> anyhow::Result<()> {
    let (Some(from_s), Some(to_s)) = (parse_utc(from), parse_utc(to)) else {
        bail!("--from and --to take a UTC date (2026-12-01) or time (2026-12-01T13:00:00Z)");
    };
    if to_s <= from_s {
        bail!("--to ({to}) must come after --from ({from})");
    }
    let lines = ledger::read(ledger_path)
        .with_context(|| format!("reading the footprint ledger {}", ledger_path.display()))?;
    print!(
        "{}",
        render(&summarize(&lines, from_s, to_s, by_domain), format)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(hour: &str, domain: &str, messages: u64) -> Line {
        Line {
            hour: hour.into(),
            domain: domain.into(),
            messages,
            bytes: messages * 1000,
            cpu_seconds: messages as f64 * 0.0001,
            joules: messages as f64 * 0.01,
            grams_co2e: messages as f64 * 0.000_002,
            method: "m1".into(),
            run: "1-1".into(),
        }
    }

    #[test]
    fn a_period_sums_its_hours_by_domain() {
        let lines = vec![
            line("2026-12-01T10:00:00Z", "a.test", 100),
            line("2026-12-01T10:00:00Z", "b.test", 300),
            // The same hour again (a restart): added up.
            line("2026-12-01T10:00:00Z", "a.test", 50),
            line("2026-12-02T00:00:00Z", "a.test", 7),
            // Outside the period.
            line("2026-11-30T23:00:00Z", "a.test", 1000),
        ];
        let from = parse_utc("2026-12-01").unwrap();
        let to = parse_utc("2026-12-02").unwrap();
        let s = summarize(&lines, from, to, true);
        assert_eq!(s.total.messages, 450);
        assert_eq!(s.rows.len(), 2);
        assert_eq!(
            (s.rows[0].domain.as_str(), s.rows[0].messages),
            ("b.test", 300)
        );
        assert_eq!(s.rows[1].messages, 150);
        assert!((s.total.joules_per_message - 0.01).abs() < 1e-12);
        assert!((s.total.grams_co2e_per_message - 0.000_002).abs() < 1e-15);
        assert!((s.total.kwh - 4.5 / 3.6e6).abs() < 1e-15);
        assert_eq!(s.methods, vec!["m1".to_string()]);
        let without = summarize(&lines, from, to, false);
        assert!(without.rows.is_empty());
        assert_eq!(without.total, s.total);
    }

    #[test]
    fn every_format_has_the_totals_and_the_method() {
        let lines = vec![line("2026-12-01T10:00:00Z", "x,y", 10)];
        let s = summarize(&lines, 0, parse_utc("2100-01-01").unwrap(), true);
        let table = render(&s, Format::Table);
        assert!(table.contains("total") && table.contains("m1"), "{table}");
        let csv = render(&s, Format::Csv);
        assert!(csv.starts_with("domain,messages,"), "{csv}");
        assert!(csv.contains("\"x,y\",10,"), "{csv}");
        let json: serde_json::Value = serde_json::from_str(&render(&s, Format::Json)).unwrap();
        assert_eq!(json["total"]["messages"], 10);
        assert_eq!(json["methods"][0], "m1");
    }
}
