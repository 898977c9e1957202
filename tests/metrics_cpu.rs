//! Issue 5: the CPU time Verdant charges to messages, by stage, adds up to
//! the CPU time the kernel says the process used (`/proc/PID/stat`), within
//! 5%, over a load run that receives, queues and delivers; on both I/O
//! drivers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::sink::Sink;
use common::{Client, Driver, Opts, Server, free_addr, wait_until};

/// `GET /metrics` from the server's Prometheus endpoint: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: verdant\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// utime + stime of `pid`, from the kernel.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn cpu_charged_to_messages_adds_up_to_the_process_cpu() {
    for driver in Driver::ALL {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::start(driver, &[]);
        let metrics = free_addr();
        let route = format!("*={}", sink.addr);
        let server = Server::start(Opts {
            deliver: true,
            metrics: Some(metrics),
            config: "[delivery]\nlog = \"\"\n",
            args: vec!["--route".into(), route],
            ..Opts::new(driver, &dir.path().join("spool"))
        });
        assert!(
            server.log().contains("metrics on http://"),
            "{}",
            server.log()
        );
        // Load: four clients, 300 messages each, delivered to the sink.
        const CLIENTS: usize = 4;
        const EACH: usize = 500;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let addr = server.addr;
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    c.cmd("EHLO load.test");
                    for i in 0..EACH {
                        let line = "x".repeat(78);
                        let text = vec![line.as_str(); 25].join("\r\n");
                        let body = format!("Subject: {t}.{i}\r\n\r\n{text}\r\n");
                        let r = c.mail("a@example.com", &["b@example.net"], &body);
                        assert!(r.starts_with("250"), "{r}");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let total = (CLIENTS * EACH) as u64;
        assert!(
            wait_until(Duration::from_secs(60), || sink
                .stats()
                .and_then(|s| s["messages_accepted"].as_u64())
                == Some(total)),
            "{driver:?}: not all delivered"
        );
        // A report interval, so that the last of the load is charged.
        std::thread::sleep(Duration::from_millis(1500));
        let text = scrape(metrics);
        let os = proc_cpu(server.child.id());
        let count = |stage: &str| {
            sample(
                &text,
                &format!("verdant_message_cpu_seconds_count{{stage=\"{stage}\"}}"),
            )
            .unwrap_or(0.0)
        };
        // Received and made durable once each; the outcome recorded once.
        assert_eq!(count("receive"), total as f64, "{driver:?}\n{text}");
        assert_eq!(count("queue"), 2.0 * total as f64, "{driver:?}");
        assert_eq!(count("deliver"), total as f64, "{driver:?}");
        let charged: f64 = ["receive", "queue", "deliver"]
            .iter()
            .map(|s| {
                sample(
                    &text,
                    &format!("verdant_message_cpu_seconds_sum{{stage=\"{s}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .sum();
        // The operational counters agree (summed over workers).
        let sum = |prefix: &str, must: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(must))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let n = total as f64;
        assert_eq!(sum("verdant_messages_received_total{", ""), n, "{text}");
        assert_eq!(sum("verdant_sessions_total{", ""), CLIENTS as f64);
        assert_eq!(sum("verdant_delivery_attempts_total{", "class=\"2xx\""), n);
        assert_eq!(
            sum("verdant_delivery_outcomes_total{", "outcome=\"delivered\""),
            n
        );
        assert_eq!(sum("verdant_delivery_latency_seconds_count{", ""), n);
        assert!(sum("verdant_received_bytes_total{", "") > n * 2000.0);
        let carried = sample(&text, "verdant_cpu_carried_seconds").unwrap_or(0.0);
        let off = (charged - os).abs() / os;
        eprintln!(
            "{driver:?}: charged {charged:.3} s + carried {carried:.3} s, the kernel says {os:.3} s ({:.1}% off)",
            off * 100.0
        );
        assert!(
            off <= 0.05,
            "{driver:?}: charged {charged} s, carried {carried} s, /proc says {os} s"
        );
        assert!(charged > 0.0 && carried >= 0.0);
    }
}
