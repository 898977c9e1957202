//! The command line: configuration check and queue inspection errors.

mod common;

use common::verdant;

#[test]
fn config_check_prints_the_effective_defaults() {
    let (ok, out, err) = verdant(&["config", "check"]);
    assert!(ok, "{err}");
    for line in [
        "listen = [\"127.0.0.1:2525\"]",
        "dir = \"./var/spool\"",
        "max_message_size = \"25MiB\"",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn config_check_names_the_field_and_line_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("verdant.toml");
    std::fs::write(
        &file,
        "[server]\nworkers = 2\n\n[smtp]\nmax_recipients = 10\nmax_recipeints = 5\n",
    )
    .unwrap();
    let (ok, _, err) = verdant(&["config", "check", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(":6:") && err.contains("max_recipeints"),
        "{err}"
    );

    std::fs::write(&file, "[smtp]\n\nmax_message_size = \"lots\"\n").unwrap();
    let (ok, _, err) = verdant(&["config", "check", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(":3:") && err.contains("smtp.max_message_size"),
        "{err}"
    );
}

#[test]
fn config_check_applies_overrides_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("verdant.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [\"127.0.0.1:2626\", \"[::1]:2626\"]\n",
    )
    .unwrap();
    let (ok, out, err) = verdant(&[
        "config",
        "check",
        "-c",
        file.to_str().unwrap(),
        "--spool",
        "/tmp/elsewhere",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\"[::1]:2626\"") && out.contains("/tmp/elsewhere"),
        "{out}"
    );
}

#[test]
fn queue_commands_on_an_empty_or_wrong_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().to_str().unwrap();
    let (ok, out, _) = verdant(&["queue", "list", "--spool", spool]);
    assert!(ok && out.contains("queue is empty"), "{out}");
    let (ok, _, err) = verdant(&["queue", "show", "not-an-id", "--spool", spool]);
    assert!(!ok && err.contains("invalid queue id"), "{err}");
    let (ok, _, err) = verdant(&["queue", "show", "000661BF1D79400B0001", "--spool", spool]);
    assert!(!ok && err.contains("no message"), "{err}");
}

#[test]
fn serve_refuses_a_spool_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let addr = common::free_addr().to_string();
    let (ok, _, err) = verdant(&[
        "serve",
        "--listen",
        &addr,
        "--spool",
        file.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("spool"), "{err}");
}

#[test]
fn metrics_list_describes_every_metric() {
    let (ok, out, err) = verdant(&["metrics", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("verdant_message_cpu_seconds (histogram, seconds) {stage}"),
        "{out}"
    );
    // Every metric has a description under its name.
    let names = out.lines().filter(|l| l.starts_with("verdant_")).count();
    let helps = out.lines().filter(|l| l.starts_with("    ")).count();
    assert!(names >= 2 && names == helps, "{out}");
}
