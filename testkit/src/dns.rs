//! A real DNS server inside the test process, for tests that resolve MX
//! records: the engine's DNS service tests and the end-to-end tests of the
//! `verdant` binary (`verdant serve --dns 127.0.0.1:PORT`).
//!
//! [`DnsServer`] is an authoritative hickory-server on 127.0.0.1 (UDP and
//! TCP on one port) with zones built by the test through [`Zones`]; it counts
//! the queries it gets and can answer SERVFAIL for chosen names. Records can
//! be added while it runs ([`DnsServer::add`]). [`SilentDns`] is a UDP
//! socket that never answers, for "the DNS is down". Only reserved names
//! (`.test`, `.example`, `.invalid`, RFC 2606) can be served, so no test ever
//! asks about a real domain.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};

/// Top-level domains the test server may serve (RFC 2606).
const RESERVED: [&str; 3] = ["test", "example", "invalid"];

/// TTL of every record unless set otherwise ([`Zones::ttl`]), and of
/// negative answers (SOA minimum): longer than any test, so what a resolver
/// caches stays true.
pub const TTL: u32 = 300;

/// Upper bound for the server to start.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Records to serve, built up by the test:
///
/// ```
/// # use verdant_testkit::dns::Zones;
/// Zones::new()
///     .mx("pref.test", 10, "mx1.pref.test")
///     .a("mx1.pref.test", "127.0.0.2")
///     .null_mx("nullmx.test")
///     .mx("short.pref.test", 10, "mx1.pref.test")
///     .ttl(1)
///     .servfail("servfail.test");
/// ```
///
/// Names may be given with or without the final dot, in any case, and as
/// Unicode (looked up as their A-labels). Each top-level domain used becomes
/// one zone (`test.`, …) with an SOA, so "no such data" answers are proper
/// negative answers.
#[derive(Default)]
pub struct Zones {
    records: Vec<Record>,
    servfail: Vec<String>,
}

impl Zones {
    /// No records yet.
    pub fn new() -> Zones {
        Zones::default()
    }

    /// `owner MX preference exchange`.
    pub fn mx(self, owner: &str, preference: u16, exchange: &str) -> Zones {
        self.record(owner, RData::MX(MX::new(preference, fqdn(exchange))))
    }

    /// `owner MX 0 .`: the domain accepts no mail (RFC 7505).
    pub fn null_mx(self, owner: &str) -> Zones {
        self.record(owner, RData::MX(MX::new(0, Name::root())))
    }

    /// `owner A ip`.
    pub fn a(self, owner: &str, ip: &str) -> Zones {
        self.record(owner, RData::A(A(ip.parse().expect("IPv4 address"))))
    }

    /// `owner AAAA ip`.
    pub fn aaaa(self, owner: &str, ip: &str) -> Zones {
        self.record(owner, RData::AAAA(AAAA(ip.parse().expect("IPv6 address"))))
    }

    /// `owner TXT "text"`: a name that exists without MX or address.
    pub fn txt(self, owner: &str, text: &str) -> Zones {
        self.record(owner, RData::TXT(TXT::new(vec![text.into()])))
    }

    /// Sets the TTL (seconds) of the record added last; the others keep
    /// [`TTL`].
    ///
    /// # Panics
    ///
    /// If no record has been added yet.
    pub fn ttl(mut self, ttl: u32) -> Zones {
        let last = self.records.last_mut().expect("ttl() after a record");
        last.ttl = ttl;
        self
    }

    /// Every query for `domain` or a name under it is answered SERVFAIL
    /// (whatever the zones hold there), as by a broken or lame server.
    pub fn servfail(mut self, domain: &str) -> Zones {
        let domain = lower(domain);
        tld(&domain);
        self.servfail.push(domain);
        self
    }

    fn record(mut self, owner: &str, rdata: RData) -> Zones {
        self.records
            .push(Record::from_rdata(fqdn(owner), TTL, rdata));
        self
    }

    /// The records grouped by top-level domain.
    fn by_tld(records: Vec<Record>) -> BTreeMap<String, Vec<Record>> {
        let mut zones: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for r in records {
            let owner = r.name.to_ascii().to_ascii_lowercase();
            zones.entry(tld(&owner)).or_default().push(r);
        }
        zones
    }

    /// One primary zone per top-level domain, with an SOA.
    fn zones(records: Vec<Record>) -> BTreeMap<String, Arc<InMemoryZoneHandler>> {
        let mut zones = BTreeMap::new();
        for (tld, records) in Zones::by_tld(records) {
            let origin = fqdn(&tld);
            let mut zone =
                InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            let soa = SOA::new(
                fqdn(&format!("ns.{tld}")),
                fqdn(&format!("hostmaster.{tld}")),
                1,
                3600,
                600,
                86400,
                TTL,
            );
            assert!(zone.upsert_mut(Record::from_rdata(origin, TTL, RData::SOA(soa)), 1));
            for r in records {
                assert!(zone.upsert_mut(r, 1), "zone record rejected");
            }
            zones.insert(tld, Arc::new(zone));
        }
        zones
    }
}

/// `name` as an absolute DNS name (a final dot is added if missing).
fn fqdn(name: &str) -> Name {
    let mut n = Name::from_utf8(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
    n.set_fqdn(true);
    n
}

/// `name` in lower case without the final dot: the key of the counts.
fn lower(name: &str) -> String {
    name.trim_end_matches('.').to_lowercase()
}

/// The top-level domain of `name`, which must be a reserved one.
fn tld(name: &str) -> String {
    let tld = name
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_string();
    assert!(
        RESERVED.contains(&tld.as_str()),
        "{name}: tests may only serve reserved names ({RESERVED:?})"
    );
    tld
}

/// Queries seen, by (lower-case name without the final dot, record type
/// as written in zone files, e.g. "MX").
type Counts = Arc<Mutex<HashMap<(String, String), usize>>>;

/// Counts each query, answers SERVFAIL for the names under one of
/// `servfail` and hands the rest to the catalog (the zones).
struct Handler {
    catalog: Catalog,
    counts: Counts,
    servfail: Vec<String>,
}

impl Handler {
    fn servfail(&self, name: &str) -> bool {
        self.servfail.iter().any(|d| {
            name == d
                || name
                    .strip_suffix(d.as_str())
                    .is_some_and(|s| s.ends_with('.'))
        })
    }
}

// `RequestHandler` is an `#[async_trait]` trait; this is the signature that
// macro produces, written out so the tests need no extra crate.
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let mut servfail = false;
            if let Some(query) = request.queries.queries().first() {
                let name = lower(&query.name().to_string());
                servfail = self.servfail(&name);
                *self
                    .counts
                    .lock()
                    .unwrap()
                    .entry((name, query.query_type().to_string()))
                    .or_default() += 1;
            }
            if !servfail {
                return self
                    .catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await;
            }
            let mut response_handle = response_handle;
            let response = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, ResponseCode::ServFail);
            match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(_) => {
                    let mut metadata = Metadata::response_from_request(&request.metadata);
                    metadata.response_code = ResponseCode::ServFail;
                    ResponseInfo::from(Header {
                        metadata,
                        counts: HeaderCounts::default(),
                    })
                }
            }
        })
    }
}

/// An authoritative DNS server on 127.0.0.1 (UDP and TCP on the same
/// port), on its own tokio runtime thread; stopped when dropped.
pub struct DnsServer {
    /// Where it listens, UDP and TCP: the nameserver to configure.
    pub addr: SocketAddr,
    counts: Counts,
    zones: BTreeMap<String, Arc<InMemoryZoneHandler>>,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Starts a server for `zones` and waits until it listens.
    pub fn start(zones: Zones) -> DnsServer {
        let Zones { records, servfail } = zones;
        let zones = Zones::zones(records);
        let mut catalog = Catalog::new();
        for zone in zones.values() {
            catalog.upsert(
                zone.origin().clone(),
                vec![zone.clone() as Arc<dyn ZoneHandler>],
            );
        }
        let counts = Counts::default();
        let handler = Handler {
            catalog,
            counts: counts.clone(),
            servfail,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-dns-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // UDP on port 0, then TCP on the same port (again in
                    // the unlikely case that TCP port is taken).
                    let (udp, tcp) = loop {
                        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                        let addr = udp.local_addr().unwrap();
                        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                            break (udp, tcp);
                        }
                    };
                    let addr = udp.local_addr().unwrap();
                    let mut server = Server::new(handler);
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 32);
                    ready_tx.send(addr).unwrap();
                    let _ = stopped.await;
                    let _ = server.shutdown_gracefully().await;
                });
            })
            .unwrap();
        let addr = ready_rx
            .recv_timeout(START_LIMIT)
            .expect("test DNS server start");
        DnsServer {
            addr,
            counts,
            zones,
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Adds the records of `zones` to the zones served, while the server
    /// runs. Call it from a test thread, not from inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If a record's top-level domain was not served from the start, if a
    /// record is rejected, or if `zones` holds [`Zones::servfail`] names
    /// (those are fixed at start).
    pub fn add(&self, zones: Zones) {
        let Zones { records, servfail } = zones;
        assert!(servfail.is_empty(), "SERVFAIL names are fixed at start");
        for (tld, records) in Zones::by_tld(records) {
            let zone = self
                .zones
                .get(&tld)
                .unwrap_or_else(|| panic!("zone {tld}. is not served"))
                .clone();
            for record in records {
                let zone = zone.clone();
                assert!(
                    self.runtime
                        .block_on(async move { zone.upsert(record, 2).await }),
                    "zone record rejected"
                );
            }
        }
    }

    /// How many queries of type `rtype` ("MX", "A", …) for `name` (with or
    /// without the final dot, any case; "" for the root) the server has
    /// seen.
    pub fn queries(&self, name: &str, rtype: &str) -> usize {
        let key = (lower(name), rtype.to_string());
        self.counts.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    /// How many queries the server has seen in all.
    pub fn total_queries(&self) -> usize {
        self.counts.lock().unwrap().values().sum()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A "DNS server" that never answers: a bound UDP socket on 127.0.0.1 that
/// nobody reads from until [`SilentDns::queries`] counts what arrived.
/// Queries to it time out (no ICMP port-unreachable, no reply); (most
/// likely) nothing listens on its port over TCP.
pub struct SilentDns {
    /// The socket's address: the nameserver to configure.
    pub addr: SocketAddr,
    socket: UdpSocket,
    seen: Mutex<usize>,
}

impl SilentDns {
    /// Binds the socket.
    pub fn start() -> SilentDns {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        SilentDns {
            addr: socket.local_addr().unwrap(),
            socket,
            seen: Mutex::new(0),
        }
    }

    /// How many datagrams (queries) have arrived so far; none is answered.
    pub fn queries(&self) -> usize {
        let mut seen = self.seen.lock().unwrap();
        let mut buf = [0u8; 4096];
        while self.socket.recv_from(&mut buf).is_ok() {
            *seen += 1;
        }
        *seen
    }
}
