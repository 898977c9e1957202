//! A real DNS server inside the test process, for end-to-end tests that
//! make the `verdant` binary resolve MX records (`verdant serve --dns
//! 127.0.0.1:PORT`).
//!
//! [`DnsServer`] is an authoritative hickory-server on 127.0.0.1 (UDP and
//! TCP on one port) with zones built by the test through [`Zones`]; it counts
//! the queries it gets. [`SilentDns`] is a UDP socket that never answers, for
//! "the DNS is down". Only reserved names (`.test`, `.example`, `.invalid`,
//! RFC 2606) can be served, so no test ever asks about a real domain.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::rdata::{A, AAAA, MX, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// Top-level domains the test server may serve (RFC 2606).
const RESERVED: [&str; 3] = ["test", "example", "invalid"];

/// TTL of every record and of negative answers (SOA minimum): longer than
/// any test, so what the binary caches stays true.
const TTL: u32 = 300;

/// Records to serve, built up by the test:
///
/// ```ignore
/// Zones::new()
///     .mx("pref.test", 10, "mx1.pref.test")
///     .a("mx1.pref.test", "127.0.0.2")
///     .null_mx("nullmx.test")
/// ```
///
/// Each top-level domain used becomes one zone (`test.`, …) with an SOA, so
/// "no such data" answers are proper negative answers.
#[derive(Default)]
pub struct Zones {
    records: Vec<Record>,
}

impl Zones {
    pub fn new() -> Zones {
        Zones::default()
    }

    /// `owner MX preference exchange`.
    pub fn mx(mut self, owner: &str, preference: u16, exchange: &str) -> Zones {
        let rdata = RData::MX(MX::new(preference, fqdn(exchange)));
        self.records
            .push(Record::from_rdata(fqdn(owner), TTL, rdata));
        self
    }

    /// `owner MX 0 .`: the domain accepts no mail (RFC 7505).
    pub fn null_mx(mut self, owner: &str) -> Zones {
        let rdata = RData::MX(MX::new(0, Name::root()));
        self.records
            .push(Record::from_rdata(fqdn(owner), TTL, rdata));
        self
    }

    /// `owner A ip`.
    pub fn a(mut self, owner: &str, ip: &str) -> Zones {
        let rdata = RData::A(A(ip.parse().expect("IPv4 address")));
        self.records
            .push(Record::from_rdata(fqdn(owner), TTL, rdata));
        self
    }

    /// `owner AAAA ip`.
    pub fn aaaa(mut self, owner: &str, ip: &str) -> Zones {
        let rdata = RData::AAAA(AAAA(ip.parse().expect("IPv6 address")));
        self.records
            .push(Record::from_rdata(fqdn(owner), TTL, rdata));
        self
    }

    /// The catalog: one primary zone per top-level domain.
    fn catalog(self) -> Catalog {
        let mut zones: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for r in self.records {
            let owner = r.name.to_ascii().to_ascii_lowercase();
            let tld = owner
                .trim_end_matches('.')
                .rsplit('.')
                .next()
                .unwrap_or("")
                .to_string();
            assert!(
                RESERVED.contains(&tld.as_str()),
                "{owner}: tests may only serve reserved names ({RESERVED:?})"
            );
            zones.entry(tld).or_default().push(r);
        }
        let mut catalog = Catalog::new();
        for (tld, records) in zones {
            let origin = fqdn(&tld);
            let mut zone: InMemoryZoneHandler =
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
            assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), 1));
            for r in records {
                assert!(zone.upsert_mut(r, 1), "zone record rejected");
            }
            catalog.upsert(
                LowerName::new(&origin),
                vec![Arc::new(zone) as Arc<dyn ZoneHandler>],
            );
        }
        catalog
    }
}

/// `name` as an absolute DNS name (a final dot is added if missing).
fn fqdn(name: &str) -> Name {
    let mut n = Name::from_utf8(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
    n.set_fqdn(true);
    n
}

/// Queries seen, by (lower-case name without the final dot, record type
/// as written in zone files, e.g. "MX").
type Counts = Arc<Mutex<HashMap<(String, String), usize>>>;

/// Counts each query, then answers it from the catalog.
struct Handler {
    catalog: Catalog,
    counts: Counts,
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
            if let Some(query) = request.queries.queries().first() {
                let name = query.name().to_string().to_lowercase();
                let name = name.trim_end_matches('.').to_string();
                *self
                    .counts
                    .lock()
                    .unwrap()
                    .entry((name, query.query_type().to_string()))
                    .or_default() += 1;
            }
            self.catalog
                .handle_request::<R, T>(request, response_handle)
                .await
        })
    }
}

/// An authoritative DNS server on 127.0.0.1 (UDP and TCP on the same
/// port), on its own tokio runtime thread; stopped when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    counts: Counts,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(zones: Zones) -> DnsServer {
        let counts = Counts::default();
        let handler = Handler {
            catalog: zones.catalog(),
            counts: counts.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
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
                    let mut server = hickory_server::Server::new(handler);
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 32);
                    ready_tx.send(addr).unwrap();
                    let _ = stopped.await;
                    let _ = server.shutdown_gracefully().await;
                });
            })
            .unwrap();
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test DNS server start");
        DnsServer {
            addr,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// How many queries of type `rtype` ("MX", "A", …) for `name` (no final
    /// dot, any case) the server has answered.
    pub fn queries(&self, name: &str, rtype: &str) -> usize {
        let key = (name.trim_end_matches('.').to_lowercase(), rtype.to_string());
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
/// Queries to it time out (no ICMP port-unreachable, no reply).
pub struct SilentDns {
    pub addr: SocketAddr,
    socket: UdpSocket,
    seen: Mutex<usize>,
}

impl SilentDns {
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
