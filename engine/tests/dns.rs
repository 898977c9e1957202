//! The DNS service against a real authoritative DNS server (hickory-server,
//! `verdant_testkit::dns`) running in this process on 127.0.0.1, UDP and
//! TCP, with zones built here. Loopback only: no test ever asks about a real
//! domain.
//!
//! Each test starts its own server (so query counts and zone changes are
//! its own) and its own DNS service; every wait is bounded.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verdant_engine::dns::{DnsConfig, DnsError, DnsHandle, DnsService, Target};
use verdant_testkit::dns::{DnsServer, SilentDns, Zones};

/// Upper bound for any single resolve in these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// The names under `example.test.` (served in the zone `test.`; TTL 300 s
/// unless said otherwise):
///
/// | name | records |
/// |---|---|
/// | mx | MX 10 mx1, 20 mx2a, 20 mx2b, 30 mx3 |
/// | mx1 | A 192.0.2.1, AAAA 2001:db8::1 |
/// | mx2a, mx2b | A 192.0.2.2, A 192.0.2.3 |
/// | mx3 | AAAA 2001:db8::3 |
/// | implicit | no MX; A 192.0.2.10, AAAA 2001:db8::10 |
/// | bücher (IDN) | no MX; A 192.0.2.20 |
/// | nullmx | MX 0 . |
/// | noaddr | MX 10 ghost (which does not exist) |
/// | half | MX 10 ghost, MX 20 mx1 |
/// | lame | MX 10 host.servfail.test. |
/// | partlame | MX 10 host.servfail.test., MX 20 mx2a |
/// | short | MX 10 mx1 with TTL 1 s |
/// | empty | a TXT record only: no MX, no address |
///
/// Anything under `servfail.test.` is answered SERVFAIL. Negative answers
/// carry the SOA (minimum 300 s), so they are cacheable.
fn zones() -> Zones {
    Zones::new()
        .mx("mx.example.test.", 10, "mx1.example.test.")
        .mx("mx.example.test.", 20, "mx2a.example.test.")
        .mx("mx.example.test.", 20, "mx2b.example.test.")
        .mx("mx.example.test.", 30, "mx3.example.test.")
        .a("mx1.example.test.", "192.0.2.1")
        .aaaa("mx1.example.test.", "2001:db8::1")
        .a("mx2a.example.test.", "192.0.2.2")
        .a("mx2b.example.test.", "192.0.2.3")
        .aaaa("mx3.example.test.", "2001:db8::3")
        .a("implicit.example.test.", "192.0.2.10")
        .aaaa("implicit.example.test.", "2001:db8::10")
        .a("bücher.example.test.", "192.0.2.20")
        .null_mx("nullmx.example.test.")
        .mx("noaddr.example.test.", 10, "ghost.example.test.")
        .mx("half.example.test.", 10, "ghost.example.test.")
        .mx("half.example.test.", 20, "mx1.example.test.")
        .mx("lame.example.test.", 10, "host.servfail.test.")
        .mx("partlame.example.test.", 10, "host.servfail.test.")
        .mx("partlame.example.test.", 20, "mx2a.example.test.")
        .mx("short.example.test.", 10, "mx1.example.test.")
        .ttl(1)
        .txt("empty.example.test.", "v=none")
        .servfail("servfail.test.")
}

/// The test DNS server (on 127.0.0.1, UDP and TCP) with [`zones`].
fn start_server() -> DnsServer {
    DnsServer::start(zones())
}

/// A DNS service configuration asking only `server`.
fn config(server: &DnsServer) -> DnsConfig {
    DnsConfig {
        nameservers: vec![server.addr],
        timeout: Duration::from_secs(2),
        attempts: 1,
        mx_port: 2525,
        cache_size: 100,
    }
}

/// Runs `f` on a monoio runtime (the engine's workers' runtime).
fn block_on<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
        .block_on(f)
}

/// `resolve` with the test time limit, from inside a monoio runtime.
async fn resolve_in(dns: &DnsHandle, domain: &str) -> Result<Arc<Vec<Target>>, DnsError> {
    monoio::time::timeout(LIMIT, dns.resolve(domain))
        .await
        .unwrap_or_else(|_| panic!("resolve({domain}) took longer than {LIMIT:?}"))
}

fn resolve(dns: &DnsHandle, domain: &str) -> Result<Arc<Vec<Target>>, DnsError> {
    block_on(resolve_in(dns, domain))
}

fn hosts(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.host.as_str()).collect()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn mx_records_in_preference_order_with_addresses() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let targets = resolve(&dns, "mx.example.test").unwrap();

    assert_eq!(targets.len(), 4);
    assert_eq!(targets[0].host, "mx1.example.test");
    assert_eq!(targets[0].preference, 10);
    assert_eq!(
        targets[0].addrs,
        vec![sock("192.0.2.1:2525"), sock("[2001:db8::1]:2525")],
        "IPv4 first, then IPv6"
    );
    let middle: HashSet<&str> = hosts(&targets[1..3]).into_iter().collect();
    assert_eq!(
        middle,
        HashSet::from(["mx2a.example.test", "mx2b.example.test"])
    );
    assert!(targets[1..3].iter().all(|t| t.preference == 20));
    assert_eq!(targets[3].host, "mx3.example.test");
    assert_eq!(targets[3].preference, 30);
    assert_eq!(targets[3].addrs, vec![sock("[2001:db8::3]:2525")]);
}

#[test]
fn equal_preferences_come_in_both_orders() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let mut orders = HashSet::new();
    block_on(async {
        for _ in 0..64 {
            let targets = resolve_in(&dns, "mx.example.test").await.unwrap();
            let order = hosts(&targets);
            assert_eq!(order[0], "mx1.example.test");
            assert_eq!(order[3], "mx3.example.test");
            orders.insert((order[1].to_string(), order[2].to_string()));
        }
    });
    assert_eq!(orders.len(), 2, "both orders of mx2a/mx2b: {orders:?}");
    // ... while served from the cache: one MX query for all 64 lookups.
    assert_eq!(server.queries("mx.example.test", "MX"), 1);
}

#[test]
fn no_mx_falls_back_to_the_domains_own_addresses() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let targets = resolve(&dns, "implicit.example.test").unwrap();
    assert_eq!(
        *targets,
        vec![Target {
            host: "implicit.example.test".into(),
            preference: 0,
            addrs: vec![sock("192.0.2.10:2525"), sock("[2001:db8::10]:2525")],
        }]
    );
    assert_eq!(server.queries("implicit.example.test", "MX"), 1);

    // Neither MX nor address: nothing to deliver to, permanently.
    let err = resolve(&dns, "empty.example.test").unwrap_err();
    assert_eq!(err, DnsError::NoAddress);
    assert!(err.is_permanent());
}

#[test]
fn internationalized_domain_is_looked_up_as_its_a_label() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let targets = resolve(&dns, "Bücher.Example.Test").unwrap();
    assert_eq!(hosts(&targets), vec!["xn--bcher-kva.example.test"]);
    assert_eq!(targets[0].addrs, vec![sock("192.0.2.20:2525")]);
}

#[test]
fn null_mx_is_permanent() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let err = resolve(&dns, "nullmx.example.test").unwrap_err();
    assert_eq!(err, DnsError::NullMx);
    assert!(err.is_permanent());
    // The root exchange is never looked up.
    assert_eq!(server.queries("", "A"), 0);
    assert_eq!(server.queries("", "AAAA"), 0);
}

#[test]
fn nxdomain_is_permanent_and_cached() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    for _ in 0..3 {
        let err = resolve(&dns, "nope.example.test").unwrap_err();
        assert_eq!(err, DnsError::NoSuchDomain);
        assert!(err.is_permanent());
    }
    assert_eq!(server.queries("nope.example.test", "MX"), 1);
}

#[test]
fn mx_hosts_without_addresses() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();

    // The only exchanger does not exist: permanent (RFC 5321 §5.1).
    let err = resolve(&dns, "noaddr.example.test").unwrap_err();
    assert_eq!(err, DnsError::NoAddress);
    assert!(err.is_permanent());

    // An exchanger without address is skipped, the others remain.
    let targets = resolve(&dns, "half.example.test").unwrap();
    assert_eq!(hosts(&targets), vec!["mx1.example.test"]);
    assert_eq!(targets[0].preference, 20);
}

#[test]
fn servfail_is_temporary_and_not_cached() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();

    let err = resolve(&dns, "servfail.test").unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    assert!(!err.is_permanent());
    let asked = server.queries("servfail.test", "MX");
    assert!(asked >= 1);
    let err = resolve(&dns, "servfail.test").unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    assert!(
        server.queries("servfail.test", "MX") > asked,
        "a temporary failure is asked again"
    );

    // The only exchanger's addresses SERVFAIL: temporary, not NoAddress.
    let err = resolve(&dns, "lame.example.test").unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");

    // Another exchanger works: deliver there meanwhile.
    let targets = resolve(&dns, "partlame.example.test").unwrap();
    assert_eq!(hosts(&targets), vec!["mx2a.example.test"]);
}

#[test]
fn silent_nameserver_is_temporary_within_the_timeout() {
    // A UDP socket nobody reads from, and (most likely) no TCP listener on
    // its port: the query can only time out or fail.
    let silent = SilentDns::start();
    let config = DnsConfig {
        nameservers: vec![silent.addr],
        timeout: Duration::from_millis(200),
        attempts: 2,
        mx_port: 25,
        cache_size: 100,
    };
    let dns = DnsService::start(config).unwrap();
    let started = Instant::now();
    let err = resolve(&dns, "mx.example.test").unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    assert!(!err.is_permanent());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        started.elapsed()
    );
}

#[test]
fn answers_are_cached_within_their_ttl() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();

    let first = resolve(&dns, "mx.example.test").unwrap();
    let asked = server.total_queries();
    // The zone changes; within the TTL (300 s) the old answer stands and
    // the server is not asked again.
    server.add(Zones::new().mx("mx.example.test.", 5, "mx3.example.test."));
    let again = resolve(&dns, "mx.example.test").unwrap();
    assert_eq!(again.len(), first.len());
    assert_eq!(again[0].host, "mx1.example.test");
    assert_eq!(server.total_queries(), asked, "no query while cached");

    // `short` has a 1 s TTL: after it expires the change is seen.
    let before = resolve(&dns, "short.example.test").unwrap();
    assert_eq!(hosts(&before), vec!["mx1.example.test"]);
    server.add(
        Zones::new()
            .mx("short.example.test.", 5, "mx2a.example.test.")
            .ttl(1),
    );
    let cached = resolve(&dns, "short.example.test").unwrap();
    assert_eq!(hosts(&cached), vec!["mx1.example.test"], "still cached");
    std::thread::sleep(Duration::from_millis(2100));
    let after = resolve(&dns, "short.example.test").unwrap();
    assert_eq!(
        hosts(&after),
        vec!["mx2a.example.test", "mx1.example.test"],
        "TTL expired: asked again"
    );
    assert_eq!(server.queries("short.example.test", "MX"), 2);
}

#[test]
fn concurrent_lookups_of_one_domain_share_one_query() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let dns = dns.clone();
                monoio::spawn(async move { resolve_in(&dns, "mx.example.test").await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().len(), 4);
        }
    });
    assert_eq!(server.queries("mx.example.test", "MX"), 1);
    assert_eq!(server.queries("mx1.example.test", "A"), 1);
    assert_eq!(server.queries("mx1.example.test", "AAAA"), 1);
}

#[test]
fn mx_port_applies_to_every_address() {
    let server = start_server();
    let mut config = config(&server);
    config.mx_port = 10025;
    let dns = DnsService::start(config).unwrap();
    for domain in ["mx.example.test", "implicit.example.test", "[192.0.2.9]"] {
        let targets = resolve(&dns, domain).unwrap();
        let ports: Vec<u16> = targets
            .iter()
            .flat_map(|t| t.addrs.iter().map(SocketAddr::port))
            .collect();
        assert!(!ports.is_empty());
        assert!(ports.iter().all(|&p| p == 10025), "{domain}: {ports:?}");
    }
}

#[test]
fn address_literals_need_no_dns() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let v4 = resolve(&dns, "[192.0.2.7]").unwrap();
    assert_eq!(
        *v4,
        vec![Target {
            host: "[192.0.2.7]".into(),
            preference: 0,
            addrs: vec![sock("192.0.2.7:2525")],
        }]
    );
    let v6 = resolve(&dns, "[IPv6:2001:db8::7]").unwrap();
    assert_eq!(v6[0].addrs, vec![sock("[2001:db8::7]:2525")]);
    assert_eq!(
        v6[0].addrs[0].ip(),
        "2001:db8::7".parse::<IpAddr>().unwrap()
    );
    for bad in ["[300.0.0.1]", "[tag:value]", "[::1]"] {
        let err = resolve(&dns, bad).unwrap_err();
        assert!(matches!(err, DnsError::InvalidDomain(_)), "{bad}: {err:?}");
        assert!(err.is_permanent());
    }
    assert_eq!(server.total_queries(), 0, "no query for a literal");
}

#[test]
fn names_are_case_insensitive_and_may_end_with_a_dot() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let a = resolve(&dns, "MX.Example.TEST.").unwrap();
    let b = resolve(&dns, "mx.example.test").unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 4);
    assert_eq!(server.queries("mx.example.test", "MX"), 1);

    let err = resolve(&dns, "bad..name.test").unwrap_err();
    assert!(matches!(err, DnsError::InvalidDomain(_)), "{err:?}");
}

#[test]
fn resolve_works_on_both_monoio_drivers() {
    let server = start_server();
    let dns = DnsService::start(config(&server)).unwrap();
    let body = || async {
        let targets = resolve_in(&dns, "mx.example.test").await.unwrap();
        assert_eq!(targets.len(), 4);
        let err = resolve_in(&dns, "nope.example.test").await.unwrap_err();
        assert_eq!(err, DnsError::NoSuchDomain);
    };
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime (is io_uring disabled on this kernel?)")
        .block_on(body());
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("epoll runtime")
        .block_on(body());
}

#[test]
fn service_thread_stops_when_every_handle_is_dropped() {
    let server = start_server();
    let (dns, thread) = DnsService::start_with_thread(config(&server)).unwrap();
    assert_eq!(thread.thread().name(), Some("verdant-services"));
    let clone = dns.clone();
    assert_eq!(resolve(&clone, "mx.example.test").unwrap().len(), 4);
    drop(dns);
    assert!(!thread.is_finished(), "a clone still holds it open");
    drop(clone);
    let deadline = Instant::now() + LIMIT;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "services thread did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    thread.join().expect("services thread panicked");
}

#[test]
fn unusable_configurations_are_refused() {
    let ok = DnsConfig::new(vec![sock("127.0.0.1:53")]);
    assert_eq!(ok.mx_port, 25);
    for bad in [
        DnsConfig {
            nameservers: vec![],
            ..ok.clone()
        },
        DnsConfig {
            attempts: 0,
            ..ok.clone()
        },
        DnsConfig {
            timeout: Duration::ZERO,
            ..ok.clone()
        },
        DnsConfig {
            mx_port: 0,
            ..ok.clone()
        },
    ] {
        let err = DnsService::start(bad).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
