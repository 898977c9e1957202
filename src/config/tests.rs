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
        // Not in this file: the defaults (see delivery_section below).
        delivery: parse("").unwrap().delivery,
    };
    assert_eq!(s, expected);
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
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.find("[server]") < text.find("[spool]"));
    assert!(text.find("[spool]") < text.find("[smtp]"));
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
