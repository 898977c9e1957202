//! Issue 5: the footprint ledger and `verdant footprint`. A server counts
//! what each sender domain sent, writes it to the ledger when it stops,
//! and a restart adds to it; the report sums a period by domain, with the
//! method.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Client, Driver, Opts, Server, verdant, wait_until};

fn send(server: &Server, from: &str, n: usize) {
    let mut c = Client::connect(server.addr);
    c.cmd("EHLO footprint.test");
    for i in 0..n {
        let r = c.mail(
            from,
            &["r@example.net"],
            &format!("Subject: {i}\r\n\r\nbody {i}\r\n"),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("QUIT");
}

/// Sends, then stops the server gracefully (its last figures go to the
/// ledger) and waits for it to exit.
fn run_and_stop(dir: &Path, ledger: &Path, batches: &[(&str, usize)]) {
    let config = format!("[footprint]\nledger = \"{}\"\n", ledger.display());
    let mut server = Server::start(Opts {
        config: &config,
        ..Opts::new(Driver::IoUring, &dir.join("spool"))
    });
    assert!(
        server.log().contains("footprint by energy: "),
        "{}",
        server.log()
    );
    for (from, n) in batches {
        send(&server, from, *n);
    }
    server.terminate();
    assert!(
        wait_until(Duration::from_secs(20), || matches!(
            server.child.try_wait(),
            Ok(Some(_))
        )),
        "did not stop:\n{}",
        server.log()
    );
}

fn footprint(ledger: &Path, extra: &[&str]) -> (bool, String, String) {
    let ledger = ledger.to_str().unwrap();
    let mut args = vec![
        "footprint",
        "--ledger",
        ledger,
        "--from",
        "2000-01-01",
        "--to",
        "2100-01-01",
    ];
    args.extend_from_slice(extra);
    verdant(&args)
}

#[test]
fn the_ledger_counts_by_sender_domain_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("footprint").join("ledger.jsonl");
    run_and_stop(
        dir.path(),
        &ledger,
        &[("a@alpha.test", 30), ("b@Beta.test", 20)],
    );
    let lines = std::fs::read_to_string(&ledger).unwrap();
    // One line per sender domain and hour (and maybe one for the idle
    // time at the end, which no message was charged for).
    let domains = lines
        .lines()
        .filter(|l| !l.contains("\"domain\":\"("))
        .count();
    assert_eq!(domains, 2, "{lines}");
    assert!(
        !lines.contains("(unknown)"),
        "every message's domain was counted:\n{lines}"
    );
    // A second run in the same hour adds lines; the report adds them up.
    run_and_stop(dir.path(), &ledger, &[("c@alpha.test", 5)]);
    let (ok, out, err) = footprint(&ledger, &["--by", "domain", "--format", "json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = json["rows"].as_array().unwrap();
    let row = |d: &str| rows.iter().find(|r| r["domain"] == d).cloned().unwrap();
    assert_eq!(row("alpha.test")["messages"], 35, "{out}");
    assert_eq!(row("beta.test")["messages"], 20, "{out}");
    assert_eq!(json["total"]["messages"], 55);
    for r in rows.iter().filter(|r| r["messages"].as_u64() > Some(0)) {
        assert!(r["bytes"].as_u64().unwrap() > 0);
        assert!(r["cpu_seconds"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["joules_per_message"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["grams_co2e_per_message"].as_f64().unwrap() > 0.0, "{r}");
    }
    let method = json["methods"][0].as_str().unwrap();
    assert!(
        method.contains("ccf-linear") || method.contains("rapl"),
        "{method}"
    );
    assert!(method.contains("grid 481 gCO2e/kWh"), "{method}");
    // The table and CSV say the same.
    let (ok, table, _) = footprint(&ledger, &[]);
    assert!(
        ok && table.contains("total") && table.contains("55"),
        "{table}"
    );
    let (ok, csv, _) = footprint(&ledger, &["--by", "domain", "--format", "csv"]);
    assert!(
        ok && csv.starts_with("domain,") && csv.contains("\nalpha.test,35,"),
        "{csv}"
    );
}

#[test]
fn bad_periods_and_missing_ledgers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("none.jsonl");
    let out = |args: &[&str]| {
        let mut all = vec!["footprint"];
        all.extend_from_slice(args);
        let (ok, _, err) = verdant(&all);
        (ok, err)
    };
    let l = ledger.to_str().unwrap();
    let (ok, err) = out(&["--ledger", l, "--from", "2026-12-31", "--to", "2026-12-01"]);
    assert!(!ok && err.contains("must come after"), "{err}");
    let (ok, err) = out(&["--ledger", l, "--from", "yesterday", "--to", "2026-12-01"]);
    assert!(!ok && err.contains("UTC date"), "{err}");
    let (ok, err) = out(&["--ledger", l, "--from", "2026-12-01", "--to", "2026-12-02"]);
    assert!(!ok && err.contains("reading the footprint ledger"), "{err}");
}
