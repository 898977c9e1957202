//! Tests of the two-phase configuration.
use super::*;

const FILE: &str = "verdant.toml";

fn parse(src: &str) -> Result<Settings, ConfigError> {
    Settings::parse(src, FILE)
}

/// Asserts `src` fails with an error for `field` on `line` whose message
/// contains `needle`.
#[track_caller]
fn assert_invalid(src: &str, field: &str, line: usize, needle: &str) {
    match parse(src) {
        Err(ConfigError::Invalid {
            file,
            line: got_line,
            field: got_field,
            message,
        }) => {
            assert_eq!(file, FILE, "src: {src}");
            assert_eq!(got_field, field, "src: {src}\nmessage: {message}");
            assert_eq!(got_line, Some(line), "src: {src}\nmessage: {message}");
            assert!(
                message.contains(needle),
                "src: {src}\nmessage {message:?} lacks {needle:?}"
            );
        }
        other => panic!("src: {src}\nexpected Invalid error, got {other:?}"),
    }
}

#[test]
fn defaults_without_file() {
    let s = load(None).unwrap();
    assert_eq!(s.server.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert_eq!(s.server.workers, available_cores());
    assert!(s.server.workers >= 1);
    assert!(!s.server.pin_workers);
    assert!(!s.server.hostname.is_empty());
    assert_eq!(s.server.hostname, system_hostname());
    assert_eq!(s.spool.dir, PathBuf::from("./var/spool"));
    assert_eq!(s.spool.commit_window, Duration::from_micros(300));
    assert_eq!(s.spool.segment_size, 64 * 1024 * 1024);
    assert_eq!(
        s.smtp.client_networks,
        vec![
            "127.0.0.0/8".parse::<IpNet>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    assert_eq!(s.smtp.max_message_size, 25 * 1024 * 1024);
    assert_eq!(s.smtp.max_recipients, 1000);
    assert_eq!(s.smtp.max_connections, 10_000);
    assert_eq!(s.smtp.max_connections_per_ip, 100);
    assert_eq!(s.smtp.command_timeout, Duration::from_secs(300));
    assert_eq!(s.smtp.data_timeout, Duration::from_secs(600));
    assert_eq!(s.smtp.max_errors, 20);
    // An empty file and empty sections mean the same as no file.
    assert_eq!(parse("").unwrap(), s);
    assert_eq!(parse("[server]\n[spool]\n[smtp]\n").unwrap(), s);
}

#[test]
fn every_field_parsed() {
    let src = r#"
[server]
listen = ["0.0.0.0:25", "[::]:587"]
workers = 3
pin_workers = true
hostname = "mx.example.org"

[spool]
dir = "/var/lib/verdant"
commit_window = "500us"
segment_size = "128MiB"

[smtp]
client_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
max_message_size = 1048576
max_recipients = 50
max_connections = 500
max_connections_per_ip = 5
command_timeout = "30s"
data_timeout = "2m"
max_errors = 3
"#;
    let s = parse(src).unwrap();
    let expected = Settings {
        server: ServerSettings {
            listen: vec!["0.0.0.0:25".parse().unwrap(), "[::]:587".parse().unwrap()],
            workers: 3,
            pin_workers: true,
            hostname: "mx.example.org".into(),
        },
        spool: SpoolSettings {
            dir: "/var/lib/verdant".into(),
            commit_window: Duration::from_micros(500),
            segment_size: 128 * MIB,
        },
        smtp: SmtpSettings {
            client_networks: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
                "192.0.2.7/32".parse().unwrap(),
            ],
            max_message_size: 1_048_576,
            max_recipients: 50,
            max_connections: 500,
            max_connections_per_ip: 5,
            command_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(120),
            max_errors: 3,
        },
        // Not in this file: the defaults (see delivery_section and
        // amqp_defaults below).
        delivery: parse("").unwrap().delivery,
        queue: parse("").unwrap().queue,
        amqp: parse("").unwrap().amqp,
        metrics: parse("").unwrap().metrics,
        footprint: parse("").unwrap().footprint,
    };
    assert_eq!(s, expected);
}

#[test]
fn footprint_section() {
    let f = parse("").unwrap().footprint;
    assert_eq!(f.cpu, None, "detected");
    assert_eq!(
        (f.pue, f.grid_intensity, f.embodied_kgco2e),
        (1.135, 481.0, 0.0)
    );
    assert_eq!(
        f.ledger,
        Some(PathBuf::from("./var/footprint/ledger.jsonl"))
    );
    let f = parse(
        "[footprint]\ncpu = \"intel-skylake\"\npue = 1.4\ngrid_intensity = 56.0\nembodied_kgco2e = 1200.0\nledger = \"\"\n",
    )
    .unwrap()
    .footprint;
    assert_eq!(
        f.cpu,
        Some(verdant_metrics::energy::CpuFamily::IntelSkylake)
    );
    assert_eq!(f.ledger, None);
    let m = f.model(2);
    assert_eq!(m.embodied_g, Some(1_200_000.0));
    assert_eq!((m.pue, m.grid_g_per_kwh, m.vcpus), (1.4, 56.0, 2));
    assert_invalid(
        "[footprint]\ncpu = \"m68k\"\n",
        "footprint.cpu",
        2,
        "intel-skylake",
    );
    assert_invalid("[footprint]\npue = 0.9\n", "footprint.pue", 2, "at least 1");
    assert_invalid(
        "[footprint]\ngrid_intensity = -1.0\n",
        "footprint.grid_intensity",
        2,
        "at least 0",
    );
    assert_eq!(
        parse(&parse("").unwrap().to_toml()).unwrap().footprint,
        parse("").unwrap().footprint
    );
}

#[test]
fn metrics_section() {
    let m = parse("").unwrap().metrics;
    assert!(m.enabled);
    assert_eq!(m.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert!(
        !parse("[metrics]\nenabled = false\n")
            .unwrap()
            .metrics
            .enabled
    );
    assert_eq!(
        parse("[metrics]\nlisten = \"\"\n").unwrap().metrics.listen,
        None
    );
    assert_eq!(
        parse("[metrics]\nlisten = \"[::1]:9100\"\n")
            .unwrap()
            .metrics
            .listen,
        Some("[::1]:9100".parse().unwrap())
    );
    let err = parse("[metrics]\nlisten = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.listen") && err.contains(":2:"),
        "{err}"
    );
    assert!(
        parse("[metrics]\nport = 1\n").is_err(),
        "unknown keys are errors"
    );
    // `config check` prints it and its output parses back.
    let none = parse("[metrics]\nlisten = \"\"\n").unwrap();
    assert_eq!(parse(&none.to_toml()).unwrap().metrics, none.metrics);
}

#[test]
fn delivery_section() {
    let d = parse("").unwrap().delivery;
    assert!(d.enabled);
    assert_eq!(d.mx_port, 25);
    assert_eq!(d.retry_initial, Duration::from_secs(300));
    assert_eq!(d.log, Some(PathBuf::from("./var/log/delivery.log")));
    let src = r#"[delivery]
enabled = false
routes = { "Example.NET" = "127.0.0.1:2626", "*" = "[::1]:25" }
nameservers = ["127.0.0.1:5353"]
mx_port = 2525
retry_initial = "1s"
retry_max = "2s"
give_up = "10s"
log = ""

[delivery.destinations."Slow.example"]
max_connections = 2
max_messages_per_second = 10
"#;
    let d = parse(src).unwrap().delivery;
    assert!(!d.enabled);
    assert_eq!(d.routes["example.net"], "127.0.0.1:2626".parse().unwrap());
    assert_eq!(d.routes["*"], "[::1]:25".parse().unwrap());
    assert_eq!(d.nameservers, vec!["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!((d.mx_port, d.log.clone()), (2525, None));
    let slow = d.destinations["slow.example"];
    assert_eq!(
        (
            slow.max_connections,
            slow.max_messages_per_connection,
            slow.max_messages_per_second
        ),
        (2, 100, Some(10)),
        "unset keys take the [delivery] defaults"
    );
    // Round trip through config check's output.
    let s = parse(src).unwrap();
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
    for (bad, field, line) in [
        (
            "[delivery]\nroutes = { \"a.test\" = \"nowhere\" }\n",
            "delivery.routes.a.test",
            2,
        ),
        ("[delivery]\n\nmx_port = 0\n", "delivery.mx_port", 3),
        (
            "[delivery]\nretry_initial = \"1m\"\nretry_max = \"10s\"\n",
            "delivery.retry_max",
            3,
        ),
        (
            "[delivery]\nnameservers = [\"dns.example\"]\n",
            "delivery.nameservers",
            2,
        ),
        (
            "[delivery.destinations.\"x.test\"]\nmax_messages_per_second = 0\n",
            "delivery.destinations.x.test.max_messages_per_second",
            2,
        ),
    ] {
        assert_invalid(bad, field, line, "");
    }
}

#[test]
fn unknown_key_names_key_and_line() {
    // (source, field, line)
    let cases = [
        ("[server]\nlisten = []\nbogus = 1\n", "server.bogus", 3),
        (
            "[server]\nworkers = 1\n\n[spool]\nsize = 1\n",
            "spool.size",
            5,
        ),
        ("[smtp]\nmax_recipient = 5\n", "smtp.max_recipient", 2),
        ("\n[srv]\nx = 1\n", "srv", 2),
        ("top = 1\n", "top", 1),
    ];
    for (src, field, line) in cases {
        let key = field.rsplit('.').next().unwrap();
        assert_invalid(src, field, line, &format!("unknown field `{key}`"));
    }
}

#[test]
fn wrong_type_names_line() {
    // (source, field, line, message fragment)
    let cases = [
        (
            "[server]\n\nworkers = \"four\"\n",
            "server.workers",
            3,
            "invalid type",
        ),
        ("[server]\nworkers = -1\n", "server.workers", 2, "-1"),
        (
            "[server]\npin_workers = \"yes\"\n",
            "server.pin_workers",
            2,
            "expected a boolean",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:25\"\n",
            "server.listen",
            2,
            "invalid type",
        ),
        (
            "[server]\nlisten = [\n  \"127.0.0.1:25\",\n  25,\n]\n",
            "server.listen",
            4,
            "invalid type",
        ),
        (
            "[spool]\ncommit_window = 5\n",
            "spool.commit_window",
            2,
            "invalid type",
        ),
        (
            "[smtp]\nmax_message_size = true\n",
            "smtp.max_message_size",
            2,
            "a size",
        ),
        ("server = 5\n", "server", 1, "invalid type"),
    ];
    for (src, field, line, needle) in cases {
        assert_invalid(src, field, line, needle);
    }
}

#[test]
fn syntax_error_names_line() {
    // An unclosed array is reported where it opens.
    assert_invalid(
        "[server]\nworkers = 1\nlisten = [\n",
        "",
        3,
        "unclosed array",
    );
    assert_invalid("[server\n", "", 1, "");
    assert_invalid("[server]\nworkers = 1\nworkers = 2\n", "", 3, "duplicate");
}

#[test]
fn validation_rules_name_field_and_line() {
    // (source, field, line, message fragment)
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "[server]\nlisten = []\n",
            "server.listen",
            2,
            "at least one",
        ),
        (
            "[server]\nlisten = [\n  \"127.0.0.1:25\",\n  \"localhost\",\n]\n",
            "server.listen",
            4,
            "got \"localhost\"",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1\"]\n",
            "server.listen",
            2,
            "socket address",
        ),
        ("[server]\nworkers = 1025\n", "server.workers", 2, "1024"),
        (
            "[server]\nhostname = \"\"\n",
            "server.hostname",
            2,
            "non-empty",
        ),
        (
            "[server]\nhostname = \"mx example\"\n",
            "server.hostname",
            2,
            "without spaces",
        ),
        ("[spool]\ndir = \"\"\n", "spool.dir", 2, "empty"),
        (
            "[spool]\ncommit_window = \"101ms\"\n",
            "spool.commit_window",
            2,
            "between 0 and 100ms",
        ),
        (
            "[spool]\ncommit_window = \"soon\"\n",
            "spool.commit_window",
            2,
            "expected a duration",
        ),
        (
            "[spool]\nsegment_size = 0\n",
            "spool.segment_size",
            2,
            "greater than 0",
        ),
        (
            "[spool]\nsegment_size = \"0MiB\"\n",
            "spool.segment_size",
            2,
            "greater than 0",
        ),
        (
            "[spool]\nsegment_size = -5\n",
            "spool.segment_size",
            2,
            "expected a size like 25MiB, got -5",
        ),
        (
            "[smtp]\nclient_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
            "smtp.client_networks",
            2,
            "CIDR",
        ),
        (
            "[smtp]\nmax_message_size = \"lots\"\n",
            "smtp.max_message_size",
            2,
            "expected a size like 25MiB, got \"lots\"",
        ),
        (
            "[smtp]\nmax_message_size = 1023\n",
            "smtp.max_message_size",
            2,
            "between 1KiB and 512MiB",
        ),
        (
            "[smtp]\nmax_message_size = \"513MiB\"\n",
            "smtp.max_message_size",
            2,
            "between 1KiB and 512MiB",
        ),
        (
            "[smtp]\nmax_recipients = 0\n",
            "smtp.max_recipients",
            2,
            "at least 1",
        ),
        (
            "[smtp]\nmax_connections = 0\n",
            "smtp.max_connections",
            2,
            "at least 1",
        ),
        (
            "[smtp]\nmax_connections_per_ip = 0\n",
            "smtp.max_connections_per_ip",
            2,
            "at least 1",
        ),
        // per-IP above the whole-server limit: points at the per-IP line...
        (
            "[smtp]\nmax_connections = 10\n\nmax_connections_per_ip = 11\n",
            "smtp.max_connections_per_ip",
            4,
            "must not exceed smtp.max_connections (10)",
        ),
        // ...or at max_connections when only that was set (default 100).
        (
            "[smtp]\n\nmax_connections = 50\n",
            "smtp.max_connections_per_ip",
            3,
            "got 100",
        ),
        (
            "[smtp]\ncommand_timeout = \"999ms\"\n",
            "smtp.command_timeout",
            2,
            "at least 1s",
        ),
        (
            "[smtp]\ndata_timeout = \"0s\"\n",
            "smtp.data_timeout",
            2,
            "at least 1s",
        ),
        (
            "[smtp]\ndata_timeout = \"10\"\n",
            "smtp.data_timeout",
            2,
            "expected a duration",
        ),
        (
            "[smtp]\nmax_errors = 0\n",
            "smtp.max_errors",
            2,
            "at least 1",
        ),
    ];
    for &(src, field, line, needle) in cases {
        assert_invalid(src, field, line, needle);
    }
    // Boundaries that must be accepted.
    for ok in [
        "[server]\nworkers = 1024\n",
        "[spool]\ncommit_window = \"100ms\"\n",
        "[spool]\ncommit_window = \"0s\"\n",
        "[smtp]\nmax_message_size = \"1KiB\"\n",
        "[smtp]\nmax_message_size = \"512MiB\"\n",
        "[smtp]\ncommand_timeout = \"1s\"\ndata_timeout = \"1s\"\n",
        "[smtp]\nmax_connections = 7\nmax_connections_per_ip = 7\n",
    ] {
        parse(ok).unwrap_or_else(|e| panic!("{ok:?} rejected: {e}"));
    }
}

#[test]
fn error_display_format() {
    let src =
        "[server]\nworkers = 2\n\n[spool]\ndir = \"x\"\n\n[smtp]\nmax_message_size = \"lots\"\n";
    let err = parse(src).unwrap_err();
    assert_eq!(
        err.to_string(),
        "verdant.toml:8: smtp.max_message_size: expected a size like 25MiB, got \"lots\""
    );
    let err = parse("[server]\nbogus = 1\n").unwrap_err().to_string();
    assert!(
        err.starts_with("verdant.toml:2: server.bogus: unknown field `bogus`"),
        "{err}"
    );
    let err = parse("[server\n").unwrap_err().to_string();
    assert!(err.starts_with("verdant.toml:1: "), "{err}");
    assert!(!err.contains("\n"), "one line: {err:?}");
}

#[test]
fn size_parsing() {
    let good: &[(&str, u64)] = &[
        ("0", 0),
        ("1", 1),
        ("1024", 1024),
        ("7B", 7),
        ("1KiB", 1024),
        ("25MiB", 25 * 1024 * 1024),
        ("2GiB", 2 * 1024 * 1024 * 1024),
        ("1KB", 1000),
        ("5MB", 5_000_000),
        ("3GB", 3_000_000_000),
        (" 25 MiB ", 25 * 1024 * 1024),
        ("18446744073709551615", u64::MAX),
    ];
    for &(text, want) in good {
        assert_eq!(parse_size(text), Some(want), "{text:?}");
    }
    let bad = [
        "",
        "lots",
        "MiB",
        "-1",
        "+1",
        "1.5MiB",
        "25mib",
        "25 MiBs",
        "25Mb",
        "1TiB",
        "1_000",
        "0x10",
        "18446744073709551616",
        "17179869184GiB",
    ];
    for text in bad {
        assert_eq!(parse_size(text), None, "{text:?}");
    }
}

#[test]
fn size_formatting_round_trips() {
    let cases: &[(u64, &str)] = &[
        (1, "1B"),
        (1000, "1KB"),
        (1024, "1KiB"),
        (1500, "1500B"),
        (25 * MIB, "25MiB"),
        (64 * MIB, "64MiB"),
        (5 * MB, "5MB"),
        (GIB, "1GiB"),
        (2 * GB, "2GB"),
        (1000 * KIB, "1000KiB"),
    ];
    for &(n, text) in cases {
        assert_eq!(format_size(n), text);
        assert_eq!(parse_size(text), Some(n));
    }
}

#[test]
fn duration_parsing() {
    let good: &[(&str, Duration)] = &[
        ("500us", Duration::from_micros(500)),
        ("1ms", Duration::from_millis(1)),
        ("1s", Duration::from_secs(1)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("10m", Duration::from_secs(600)),
        ("1h 30m", Duration::from_secs(5400)),
        ("0s", Duration::ZERO),
    ];
    for &(text, want) in good {
        let src =
            format!("[smtp]\ncommand_timeout = \"{text}\"\n[spool]\ncommit_window = \"0s\"\n");
        if want >= Duration::from_secs(1) {
            assert_eq!(parse(&src).unwrap().smtp.command_timeout, want, "{text}");
        }
        let src = format!("[spool]\ncommit_window = \"{text}\"\n");
        if want <= Duration::from_millis(100) {
            assert_eq!(parse(&src).unwrap().spool.commit_window, want, "{text}");
        }
    }
    for bad in ["", "5", "five minutes", "5 parsecs", "-1s", "1.5.2s"] {
        let src = format!("[smtp]\ndata_timeout = \"{bad}\"\n");
        assert_invalid(&src, "smtp.data_timeout", 2, "expected a duration");
    }
}

#[test]
fn overrides() {
    let base = parse("[server]\nworkers = 2\n").unwrap();

    let mut s = base.clone();
    s.apply(&Overrides::default());
    assert_eq!(s, base, "empty overrides change nothing");

    let mut s = base.clone();
    let listen: Vec<SocketAddr> = vec!["0.0.0.0:25".parse().unwrap(), "[::1]:26".parse().unwrap()];
    s.apply(&Overrides {
        listen: listen.clone(),
        spool: Some("/tmp/spool".into()),
        workers: Some(7),
        ..Default::default()
    });
    assert_eq!(s.server.listen, listen);
    assert_eq!(s.spool.dir, PathBuf::from("/tmp/spool"));
    assert_eq!(s.server.workers, 7);
    // Everything else untouched.
    assert_eq!(s.smtp, base.smtp);
    assert_eq!(s.spool.commit_window, base.spool.commit_window);
    assert_eq!(s.server.hostname, base.server.hostname);

    let mut s = base.clone();
    s.apply(&Overrides {
        workers: Some(0),
        ..Overrides::default()
    });
    assert_eq!(s.server.workers, available_cores());
    assert_eq!(s.server.listen, base.server.listen);

    let mut s = base.clone();
    s.apply(&Overrides {
        queue: Some(QueueBackend::Amqp),
        amqp_url: Some("amqp://u:p@broker.test:5673/mail".into()),
        amqp_prefix: Some("mta-2".into()),
        ..Overrides::default()
    });
    assert_eq!(s.queue.backend, QueueBackend::Amqp);
    assert_eq!(s.amqp.url, "amqp://u:p@broker.test:5673/mail");
    assert_eq!(s.amqp.prefix, "mta-2");
    assert_eq!(s.amqp.tiers, base.amqp.tiers);
    assert_eq!(
        (&s.server, &s.spool, &s.smtp, &s.delivery),
        (&base.server, &base.spool, &base.smtp, &base.delivery)
    );
    // And back: an override wins over the file in both directions.
    let file = parse("[queue]\nbackend = \"amqp\"\n").unwrap();
    let mut s = file.clone();
    s.apply(&Overrides {
        queue: Some(QueueBackend::Embedded),
        ..Overrides::default()
    });
    assert_eq!(s.queue.backend, QueueBackend::Embedded);
}

#[test]
fn to_toml_round_trips() {
    let custom = r#"
[server]
listen = ["0.0.0.0:25", "[::]:587"]
workers = 3
pin_workers = true
hostname = "mx.example.org"
[spool]
dir = "/var/lib/verdant \"spool\" \\ dir"
commit_window = "1500us"
segment_size = 1500
[smtp]
client_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
max_message_size = "5MB"
max_connections_per_ip = 10000
command_timeout = "1h 1m 1s 1ms"
[queue]
backend = "amqp"
[amqp]
url = "amqp://mta:s%40cret@10.0.0.5:5672/verdant"
prefix = "Site_A.mta-1"
queue_type = "quorum"
tiers = ["1ms", "1500ms", "1h 1m", "2days"]
prefetch = 65535
batch_max = 1
batch_window = "0s"
confirm_timeout = "1m 500ms"
node_id = 1023
"#;
    for settings in [load(None).unwrap(), parse(custom).unwrap()] {
        let text = settings.to_toml();
        let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, settings, "\n{text}");
    }

    let text = load(None).unwrap().to_toml();
    for line in [
        "[server]",
        "listen = [\"127.0.0.1:2525\"]",
        "pin_workers = false",
        "[spool]",
        "dir = \"./var/spool\"",
        "commit_window = \"300us\"",
        "segment_size = \"64MiB\"",
        "[smtp]",
        "client_networks = [\"127.0.0.0/8\", \"::1/128\"]",
        "max_message_size = \"25MiB\"",
        "command_timeout = \"5m\"",
        "data_timeout = \"10m\"",
        "max_errors = 20",
        "[queue]",
        "backend = \"embedded\"",
        "[amqp]",
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        "prefix = \"verdant\"",
        "queue_type = \"classic\"",
        "tiers = [\"5m\", \"10m\", \"20m\", \"40m\", \"1h 20m\", \"2h 40m\", \"4h\"]",
        "prefetch = 256",
        "batch_max = 64",
        "batch_window = \"2ms\"",
        "confirm_timeout = \"10s\"",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.find("[server]") < text.find("[spool]"));
    assert!(text.find("[spool]") < text.find("[smtp]"));
    assert!(text.find("[queue]") < text.find("[amqp]"));
    // No node_id: it is derived at start-up, and `None` has no TOML form.
    assert!(!text.contains("node_id"), "{text}");
}

#[test]
fn load_reads_file_and_names_path() {
    let dir = std::env::temp_dir().join(format!("verdant-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("verdant.toml");
    std::fs::write(&path, "[smtp]\nmax_errors = 4\n\nmax_recipients = 0\n").unwrap();
    let err = load(Some(&path)).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:4: smtp.max_recipients: must be at least 1, got 0",
            path.display()
        )
    );
    std::fs::write(&path, "[smtp]\nmax_errors = 4\n").unwrap();
    assert_eq!(load(Some(&path)).unwrap().smtp.max_errors, 4);

    let missing = dir.join("missing.toml");
    let err = load(Some(&missing)).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn queue_and_amqp_defaults() {
    let s = load(None).unwrap();
    assert_eq!(s.queue.backend, QueueBackend::Embedded);
    let min = |m: u64| Duration::from_secs(60 * m);
    assert_eq!(
        s.amqp,
        AmqpSettings {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "verdant".into(),
            queue_type: AmqpQueueType::Classic,
            // delivery.retry_initial (5m) doubling up to retry_max (4h).
            tiers: vec![
                min(5),
                min(10),
                min(20),
                min(40),
                min(80),
                min(160),
                min(240)
            ],
            prefetch: 256,
            batch_max: 64,
            batch_window: Duration::from_millis(2),
            confirm_timeout: Duration::from_secs(10),
            node_id: None,
        }
    );
    assert_eq!(parse("[queue]\n[amqp]\n").unwrap(), s);

    // The backend's names, in the file, on the command line and printed.
    use clap::ValueEnum;
    for (backend, name) in [
        (QueueBackend::Embedded, "embedded"),
        (QueueBackend::Amqp, "amqp"),
    ] {
        assert_eq!(backend.to_string(), name);
        assert_eq!(QueueBackend::from_str(name, false), Ok(backend));
        let src = format!("[queue]\nbackend = \"{name}\"\n");
        assert_eq!(parse(&src).unwrap().queue.backend, backend);
    }
    assert_eq!(QueueBackend::default(), QueueBackend::Embedded);
}

#[test]
fn amqp_every_field_parsed() {
    let src = r#"[amqp]
url = "AMQP://u:p@rabbit.internal/prod"
prefix = "mta.eu-1_b"
queue_type = "quorum"
tiers = [
  "1s",
  "30s",
  "1500ms",
]
prefetch = 1
batch_max = 1024
batch_window = "100ms"
confirm_timeout = "5m"
node_id = 0
"#;
    // Not increasing: the line of the offending element is named.
    assert_invalid(src, "amqp.tiers", 8, "1s 500ms does not follow 30s");
    let src = src.replace("\"1500ms\"", "\"1m 500ms\"");
    let a = parse(&src).unwrap().amqp;
    assert_eq!(
        a,
        AmqpSettings {
            url: "AMQP://u:p@rabbit.internal/prod".into(),
            prefix: "mta.eu-1_b".into(),
            queue_type: AmqpQueueType::Quorum,
            tiers: vec![
                Duration::from_secs(1),
                Duration::from_secs(30),
                Duration::from_millis(60_500),
            ],
            prefetch: 1,
            batch_max: 1024,
            batch_window: Duration::from_millis(100),
            confirm_timeout: Duration::from_secs(300),
            node_id: Some(0),
        }
    );
}

#[test]
fn amqp_tiers_follow_retry_settings() {
    let tiers = |src: &str| parse(src).unwrap().amqp.tiers;
    let secs =
        |list: &[u64]| -> Vec<Duration> { list.iter().map(|&s| Duration::from_secs(s)).collect() };
    assert_eq!(
        tiers("[delivery]\nretry_initial = \"1m\"\nretry_max = \"5m\"\n"),
        secs(&[60, 120, 240, 300]),
        "capped at retry_max, which is the last tier"
    );
    assert_eq!(
        tiers("[delivery]\nretry_initial = \"1m\"\nretry_max = \"4m\"\n"),
        secs(&[60, 120, 240]),
        "stops at the first tier that reaches retry_max"
    );
    assert_eq!(
        tiers("[delivery]\nretry_initial = \"7s\"\nretry_max = \"7s\"\n"),
        secs(&[7]),
    );
    // Rounded up to whole milliseconds, as queue TTLs must be.
    assert_eq!(
        tiers("[delivery]\nretry_initial = \"1s 200us\"\nretry_max = \"3s\"\n"),
        vec![
            Duration::from_millis(1001),
            Duration::from_millis(2002),
            Duration::from_millis(3000),
        ],
    );
    // Explicit tiers are not touched by the retry settings.
    assert_eq!(
        tiers("[delivery]\nretry_initial = \"1m\"\n[amqp]\ntiers = [\"3s\"]\n"),
        secs(&[3]),
    );
    // An absurd retry_max still gives valid tiers: at most 32, the last
    // one retry_max; and they survive `config check`.
    let src =
        "[delivery]\nretry_initial = \"1s\"\nretry_max = \"200years\"\ngive_up = \"300years\"\n";
    let s = parse(src).unwrap();
    let t = &s.amqp.tiers;
    assert_eq!(t.len(), 32);
    assert_eq!(t[30], Duration::from_secs(1 << 30));
    assert_eq!(t[31], s.delivery.retry_max);
    assert!(t.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
    assert_eq!(
        amqp::defaults::tiers(Duration::from_micros(10), Duration::from_micros(1500)),
        vec![Duration::from_millis(1), Duration::from_millis(2)],
    );
}

#[test]
fn queue_and_amqp_validation_rules() {
    let many: Vec<String> = (1..=33).map(|i| format!("\"{i}s\"")).collect();
    let too_many = format!("[amqp]\ntiers = [{}]\n", many.join(", "));
    let thirty_two = format!("[amqp]\ntiers = [{}]\n", many[..32].join(", "));
    let long_prefix = format!("[amqp]\nprefix = \"{}\"\n", "p".repeat(65));
    let max_prefix = format!("[amqp]\nprefix = \"{}\"\n", "p".repeat(64));
    // (source, field, line, message fragment)
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "[queue]\nbackend = \"rabbitmq\"\n",
            "queue.backend",
            2,
            "unknown variant `rabbitmq`, expected `embedded` or `amqp`",
        ),
        (
            "[queue]\nkind = \"amqp\"\n",
            "queue.kind",
            2,
            "unknown field",
        ),
        ("[amqp]\n\nbogus = 1\n", "amqp.bogus", 3, "unknown field"),
        (
            "[amqp]\nurl = \"amqps://broker.test:5671/%2f\"\n",
            "amqp.url",
            2,
            "TLS to the broker is not compiled into this build",
        ),
        (
            "[amqp]\nurl = \"AMQPS://broker.test\"\n",
            "amqp.url",
            2,
            "stunnel",
        ),
        (
            "[amqp]\nurl = \"http://broker.test:15672/\"\n",
            "amqp.url",
            2,
            "expected a URL like amqp://",
        ),
        (
            "[amqp]\nurl = \"broker.test:5672\"\n",
            "amqp.url",
            2,
            "got \"broker.test:5672\"",
        ),
        ("[amqp]\nurl = \"\"\n", "amqp.url", 2, "expected a URL"),
        (
            "[amqp]\nprefix = \"\"\n",
            "amqp.prefix",
            2,
            "must not be empty",
        ),
        (
            "[amqp]\nprefix = \"mta/1\"\n",
            "amqp.prefix",
            2,
            "expected only letters, digits, '.', '_' and '-', got \"mta/1\"",
        ),
        ("[amqp]\nprefix = \"mta 1\"\n", "amqp.prefix", 2, "letters"),
        ("[amqp]\nprefix = \"mtä\"\n", "amqp.prefix", 2, "letters"),
        (
            &long_prefix,
            "amqp.prefix",
            2,
            "at most 64 characters, got 65",
        ),
        (
            "[amqp]\nqueue_type = \"mirrored\"\n",
            "amqp.queue_type",
            2,
            "expected `classic` or `quorum`",
        ),
        ("[amqp]\ntiers = []\n", "amqp.tiers", 2, "at least one"),
        (&too_many, "amqp.tiers", 2, "at most 32 delays, got 33"),
        (
            "[amqp]\ntiers = [\"5m\", \"5m\"]\n",
            "amqp.tiers",
            2,
            "strictly increasing: 5m does not follow 5m",
        ),
        (
            "[amqp]\ntiers = [\n  \"10m\",\n  \"5m\",\n]\n",
            "amqp.tiers",
            4,
            "5m does not follow 10m",
        ),
        (
            "[amqp]\ntiers = [\"1500us\"]\n",
            "amqp.tiers",
            2,
            "whole number of milliseconds, at least 1ms, got 1ms 500us",
        ),
        (
            "[amqp]\ntiers = [\"999us\"]\n",
            "amqp.tiers",
            2,
            "at least 1ms",
        ),
        (
            "[amqp]\ntiers = [\"0s\"]\n",
            "amqp.tiers",
            2,
            "at least 1ms",
        ),
        (
            "[amqp]\ntiers = [\"1s\", \"later\"]\n",
            "amqp.tiers",
            2,
            "expected a duration like 5m or 500ms, got \"later\"",
        ),
        (
            "[amqp]\ntiers = [\"1s\", 5]\n",
            "amqp.tiers",
            2,
            "invalid type",
        ),
        (
            "[amqp]\nprefetch = 0\n",
            "amqp.prefetch",
            2,
            "at least 1, got 0",
        ),
        ("[amqp]\nprefetch = 65536\n", "amqp.prefetch", 2, "65536"),
        ("[amqp]\nbatch_max = 0\n", "amqp.batch_max", 2, "at least 1"),
        (
            "[amqp]\nbatch_max = 1025\n",
            "amqp.batch_max",
            2,
            "between 1 and 1024, got 1025",
        ),
        (
            "[amqp]\nbatch_window = \"101ms\"\n",
            "amqp.batch_window",
            2,
            "between 0 and 100ms, got 101ms",
        ),
        (
            "[amqp]\nbatch_window = \"soon\"\n",
            "amqp.batch_window",
            2,
            "expected a duration",
        ),
        (
            "[amqp]\nconfirm_timeout = \"0s\"\n",
            "amqp.confirm_timeout",
            2,
            "above 0 and at most 5m, got 0s",
        ),
        (
            "[amqp]\nconfirm_timeout = \"5m 1ms\"\n",
            "amqp.confirm_timeout",
            2,
            "at most 5m",
        ),
        (
            "[amqp]\nnode_id = 1024\n",
            "amqp.node_id",
            2,
            "between 0 and 1023, got 1024",
        ),
        ("[amqp]\nnode_id = -1\n", "amqp.node_id", 2, "-1"),
    ];
    for &(src, field, line, needle) in cases {
        assert_invalid(src, field, line, needle);
    }
    // Boundaries that must be accepted.
    for ok in [
        "[amqp]\nurl = \"amqp://\"\n",
        "[amqp]\nprefix = \"p\"\n",
        &max_prefix,
        &thirty_two,
        "[amqp]\ntiers = [\"1ms\"]\n",
        "[amqp]\nprefetch = 65535\n",
        "[amqp]\nbatch_max = 1\n",
        "[amqp]\nbatch_window = \"0s\"\n",
        "[amqp]\nbatch_window = \"100ms\"\n",
        "[amqp]\nconfirm_timeout = \"1ms\"\n",
        "[amqp]\nconfirm_timeout = \"5m\"\n",
        "[amqp]\nnode_id = 1023\n",
    ] {
        parse(ok).unwrap_or_else(|e| panic!("{ok:?} rejected: {e}"));
    }
    // The [amqp] rules hold whichever backend is chosen.
    assert_invalid(
        "[queue]\nbackend = \"embedded\"\n[amqp]\nprefetch = 0\n",
        "amqp.prefetch",
        4,
        "",
    );
}

#[test]
fn amqp_override_checks() {
    // The checks behind amqp.url and amqp.prefix, for --amqp-url and
    // --amqp-prefix (clap value parsers).
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    assert_eq!(parse_amqp_url(url).as_deref(), Ok(url));
    let err = parse_amqp_url("amqps://broker.test").unwrap_err();
    assert!(
        err.contains("not compiled into this build") && err.contains("stunnel"),
        "{err}"
    );
    for bad in ["", "amqp:/x", "amqp", "redis://x", "://x", " amqp://x"] {
        let err = parse_amqp_url(bad).unwrap_err();
        assert!(
            err.contains("expected a URL like amqp://"),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(parse_amqp_prefix("a.b_c-D9").as_deref(), Ok("a.b_c-D9"));
    for bad in ["", "a b", "a/b", "a*", "é", &"x".repeat(65)] {
        assert!(parse_amqp_prefix(bad).is_err(), "{bad:?}");
    }
}
