//! The RabbitMQ broker the broker tests run against.

use std::io::Write;
use std::process::Command;

/// The broker's URL: `VERDANT_AMQP_URL`, or the machine's own RabbitMQ
/// with its default account.
pub fn url() -> String {
    std::env::var("VERDANT_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// True, after a loud line on the real stderr (past the test harness's
/// capture), when broker tests are to be skipped
/// (`VERDANT_SKIP_BROKER_TESTS=1`; CI never sets it).
pub fn skip(test: &str) -> bool {
    if std::env::var("VERDANT_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "!!!!!!!! SKIPPED broker test {test}: VERDANT_SKIP_BROKER_TESTS=1 — NOT TESTED AGAINST RABBITMQ !!!!!!!!"
        );
        return true;
    }
    false
}

/// Runs `rabbitmqctl ARGS` on this machine's broker; its standard output.
/// Panics, with the tool's error, if it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl (the broker tests need RabbitMQ on this machine)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
