//! Issue 5: every metric the Grafana dashboard queries is one Verdant
//! declares and exports: checked against `verdant metrics list` and against
//! the `/metrics` of a running `serve --queue amqp` (receive, broker and
//! delivery all busy), so that a renamed metric cannot leave a dashboard
//! panel silently empty. Needs the broker; skipped only with
//! `VERDANT_SKIP_BROKER_TESTS=1`, loudly.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::broker::{Queues, arrived, serve_with, skip};
use common::sink::Sink;
use common::{BIN, Client, Driver, free_addr, wait_until};

/// The metric names in the dashboard's queries, as queried (histograms
/// with their `_bucket`, `_sum` or `_count`).
fn queried() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/grafana/verdant.json"
    );
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect(&dash, &mut exprs);
    assert!(exprs.len() > 10, "the dashboard has its queries: {exprs:?}");
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("verdant_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if k == "expr" || k == "definition" => {
                        out.push(s.clone())
                    }
                    _ => collect(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}

fn base(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn every_metric_the_dashboard_queries_is_declared() {
    let out = Command::new(BIN)
        .args(["metrics", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    let declared: BTreeSet<&str> = list
        .lines()
        .filter_map(|l| {
            l.strip_prefix("verdant_")
                .map(|_| l.split(' ').next().unwrap())
        })
        .collect();
    for name in queried() {
        assert!(
            declared.contains(base(&name)),
            "the dashboard queries {name}, which Verdant does not declare"
        );
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    if skip("every_metric_the_dashboard_queries_is_exported") {
        return;
    }
    let driver = Driver::IoUring;
    let dir = tempfile::tempdir().unwrap();
    let queues = Queues::new("dashboards", &[Duration::from_secs(1)]);
    let sink = Sink::start(driver, &[]);
    let metrics = free_addr();
    let server = serve_with(
        driver,
        dir.path(),
        &queues,
        sink.addr,
        &["--metrics-listen", &metrics.to_string()],
    );
    let mut c = Client::connect(server.addr);
    c.cmd("EHLO dashboards.test");
    for i in 0..20 {
        let r = c.mail(
            "a@example.com",
            &["b@example.net"],
            &format!("Message-ID: <d{i}@dash.test>\r\n\r\nhi\r\n"),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    let keep = sink.keep_dir();
    assert!(wait_until(Duration::from_secs(20), || arrived(&keep).len() == 20));
    // A report interval for the footprint figures.
    std::thread::sleep(Duration::from_millis(1500));
    let mut s = TcpStream::connect(metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<String> = queried()
        .into_iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard, not exported: {missing:?}\n{text}"
    );
    assert!(queues.drain(Duration::from_secs(5)));
}
