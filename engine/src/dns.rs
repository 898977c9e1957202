//! MX resolution for the delivery engine: domain → ordered mail exchangers
//! with their addresses.
//!
//! # Where it runs
//!
//! The engine's workers run monoio (thread-per-core, io_uring), but
//! hickory-resolver needs tokio. So the resolver lives on one small
//! "services" thread (`verdant-services`) running a tokio current-thread
//! runtime, and workers reach it through a [`DnsHandle`]:
//!
//! ```text
//!  worker (monoio) ──flume bounded(1024)──▶ services thread (tokio)
//!        ▲                                   │ cache hit? in flight?
//!        └──────── tokio oneshot ◀───────────┘ else hickory lookups
//! ```
//!
//! - The request channel is bounded: when the services thread falls behind,
//!   [`DnsHandle::resolve`] waits for room instead of queueing without
//!   limit (back-pressure).
//! - Both flume's `send_async` and tokio's oneshot receiver are plain
//!   futures woken through their `Waker`, so they work on any executor,
//!   monoio included (its `sync` feature makes cross-thread wake-ups work).
//! - All state (the answer cache, the table of lookups in flight) belongs to
//!   the services thread alone: `Rc`/`RefCell` on a tokio `LocalSet`, no
//!   lock. A worker pays one channel hop per lookup and never contends with
//!   another worker.
//! - Concurrent requests for the same domain share one lookup (a burst of
//!   messages to a cold domain costs one set of queries).
//! - The thread stops by itself when the last [`DnsHandle`] is dropped: the
//!   channel disconnects, the loop ends, the runtime is dropped.
//!
//! # Resolution rules
//!
//! - Address literals (`[192.0.2.1]`, `[IPv6:2001:db8::1]`, RFC 5321
//!   §4.1.3) name the destination directly: no DNS, no services-thread hop.
//! - Otherwise the domain's MX records are looked up (RFC 5321 §5.1), sorted
//!   by preference, lowest first. Exchangers of equal preference are
//!   shuffled on *every* call, cache hits included, because §5.1 requires
//!   the sender to randomize them to spread the load.
//! - A single MX whose exchange is the root (`.`) with preference 0 is a
//!   null MX (RFC 7505 §3): the domain accepts no mail, a permanent
//!   failure ([`DnsError::NullMx`]). A root exchange among other MX records
//!   is simply skipped (it has no address to try).
//! - No MX records (NOERROR with no data): the domain itself is the implicit
//!   MX with preference 0 (RFC 5321 §5.1), reached at its A/AAAA addresses.
//! - Each exchanger's A and AAAA records are looked up concurrently (every
//!   host at once on the services runtime). IPv4 addresses come first, then
//!   IPv6, each in the order the server gave them.
//! - Exchangers without any address are dropped. If none is left, the
//!   failure is permanent ([`DnsError::NoAddress`], §5.1: "If MX records are
//!   present, but none of them are usable, or the implicit MX is unusable,
//!   this situation MUST be reported as an error") — unless one of the
//!   lookups failed temporarily, in which case we cannot know and defer.
//! - NXDOMAIN for the domain is permanent ([`DnsError::NoSuchDomain`]);
//!   SERVFAIL, REFUSED, timeouts and network errors are temporary
//!   ([`DnsError::Temporary`]): the message is deferred and retried.
//!
//! # Caching
//!
//! The complete answer for a domain (MX list *and* addresses) is cached on
//! the services thread until the smallest TTL involved expires: the MX
//! records', every address record's, and the negative TTL (RFC 2308, from
//! the SOA) of every "no such data" answer the result rests on. A negative
//! answer without an SOA has no TTL and, as RFC 2308 §5 asks, is not cached;
//! it limits the entry only when the entry depends on it (an implicit MX, a
//! `NoAddress`, a `NoSuchDomain`), not when it is the missing AAAA next to
//! a present A. Temporary failures are not cached; an answer that is usable
//! but incomplete because some lookup failed temporarily is cached for at
//! most [`DEGRADED_TTL`] so the failed part is retried soon. hickory's own
//! response cache sits underneath (it also honours TTLs) and helps when many
//! domains share exchangers.
//!
//! Nameservers are always given explicitly ([`DnsConfig::nameservers`]);
//! `/etc/resolv.conf` and `/etc/hosts` are never read, so what a test or an
//! operator configures is exactly what is asked.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as WireError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use tokio::sync::oneshot;

/// Capacity of the request channel from the workers to the services thread.
/// Large enough to absorb a burst from every worker; when it is full,
/// [`DnsHandle::resolve`] waits (back-pressure) rather than queue without
/// bound.
pub const REQUEST_QUEUE: usize = 1024;

/// The longest an answer is cached, whatever the TTLs say (hickory clamps
/// positive answers to the same day).
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(86_400);

/// The longest a usable answer is cached when part of it is missing because
/// a lookup failed temporarily (say one exchanger's AAAA timed out), so the
/// missing part is asked again soon.
pub const DEGRADED_TTL: Duration = Duration::from_secs(60);

/// At most this many exchangers (after sorting) are resolved to addresses:
/// a domain publishing hundreds of MX records must not cost hundreds of
/// queries per lookup, and delivery never gets that far down the list.
pub const MAX_MX_HOSTS: usize = 16;

/// How long an invalid domain (one that is not a valid DNS name) stays
/// cached: the answer depends on nothing but the name.
const INVALID_TTL: Duration = Duration::from_secs(3600);

/// Settings of the DNS service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Recursive nameservers to ask (UDP, with TCP for truncated answers),
    /// each with its port. Required: at least one. The system's
    /// `/etc/resolv.conf` is deliberately not consulted; the binary's
    /// configuration layer may read it and fill this in.
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for one answer from one nameserver.
    pub timeout: Duration,
    /// Total tries per query, the first included (at least 1). Only
    /// failures to get an answer (timeouts, network errors, SERVFAIL) are
    /// retried; NXDOMAIN and NODATA are answers.
    pub attempts: usize,
    /// The port an exchanger is reached at: 25 in production, something
    /// else in tests. Applied to every address returned.
    pub mx_port: u16,
    /// How many domains the answer cache holds (0 disables it). hickory's
    /// own response cache gets three times as many entries (an MX, an A
    /// and an AAAA answer per domain).
    pub cache_size: usize,
}

impl DnsConfig {
    /// A configuration asking `nameservers`, with the defaults: 5 s
    /// timeout, 2 tries, port 25, 10 000 cached domains.
    pub fn new(nameservers: Vec<SocketAddr>) -> Self {
        Self {
            nameservers,
            timeout: Duration::from_secs(5),
            attempts: 2,
            mx_port: 25,
            cache_size: 10_000,
        }
    }
}

/// One place to deliver to: a mail exchanger and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The exchanger's host name, lower case, in ASCII (A-label) form,
    /// without the trailing dot. For the implicit MX it is the domain
    /// itself; for an address literal, the literal as written
    /// (`[192.0.2.1]`).
    pub host: String,
    /// The MX preference (lower is tried first); 0 for the implicit MX and
    /// for address literals.
    pub preference: u16,
    /// The exchanger's addresses with [`DnsConfig::mx_port`]: IPv4 first,
    /// then IPv6. Never empty.
    pub addrs: Vec<SocketAddr>,
}

/// Why a domain could not be resolved to targets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// No usable answer now (SERVFAIL, REFUSED, timeout, network error, the
    /// service is gone): defer and retry later.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("domain does not accept mail (null MX, RFC 7505)")]
    NullMx,
    /// The domain does not exist (NXDOMAIN).
    #[error("domain does not exist (NXDOMAIN)")]
    NoSuchDomain,
    /// Neither the MX hosts nor the implicit MX have an address
    /// (RFC 5321 §5.1).
    #[error("no mail exchanger of the domain has an address")]
    NoAddress,
    /// The domain is not a valid DNS name or address literal.
    #[error("invalid domain: {0}")]
    InvalidDomain(String),
}

impl DnsError {
    /// True when retrying cannot help: the message should bounce. False
    /// for [`DnsError::Temporary`], which defers it.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Temporary(_))
    }
}

/// What a worker receives: the shared target list or why there is none.
type Answer = Result<Arc<Vec<Target>>, DnsError>;

/// A lookup request from a worker.
struct Request {
    /// Normalized domain: lower case, no trailing dot.
    domain: String,
    reply: oneshot::Sender<Answer>,
}

/// Starts the DNS service thread.
pub struct DnsService;

impl DnsService {
    /// Spawns the `verdant-services` thread (a tokio current-thread runtime
    /// with the resolver) and returns a handle to it. The thread runs until
    /// every [`DnsHandle`] cloned from this one is dropped.
    ///
    /// Fails if the configuration is unusable (no nameserver, zero
    /// attempts, zero timeout, port 0) or the runtime or thread cannot be
    /// created.
    pub fn start(config: DnsConfig) -> io::Result<DnsHandle> {
        Self::start_with_thread(config).map(|(handle, _thread)| handle)
    }

    /// Like [`DnsService::start`], and also returns the thread's join
    /// handle so a clean shutdown can wait for it: drop every
    /// [`DnsHandle`], then join.
    pub fn start_with_thread(config: DnsConfig) -> io::Result<(DnsHandle, JoinHandle<()>)> {
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_string());
        if config.nameservers.is_empty() {
            return Err(invalid("dns: at least one nameserver is required"));
        }
        if config.attempts == 0 {
            return Err(invalid("dns: attempts must be at least 1"));
        }
        if config.timeout.is_zero() {
            return Err(invalid("dns: timeout must not be zero"));
        }
        if config.mx_port == 0 {
            return Err(invalid("dns: mx_port must not be zero"));
        }

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        // Built inside the runtime's context in case hickory needs it; the
        // resolver is Send and moves to the thread with the runtime.
        let resolver = {
            let _context = runtime.enter();
            build_resolver(&config)?
        };

        let (requests, incoming) = flume::bounded(REQUEST_QUEUE);
        let mx_port = config.mx_port;
        let cache_size = config.cache_size;
        let thread = std::thread::Builder::new()
            .name("verdant-services".into())
            .spawn(move || {
                // DNS lookups are delivery work.
                verdant_metrics::account::register_thread(verdant_metrics::Stage::Deliver);
                let local = tokio::task::LocalSet::new();
                let services = Rc::new(Services {
                    resolver,
                    mx_port,
                    state: RefCell::new(State {
                        cache: Cache::new(cache_size),
                        pending: HashMap::new(),
                    }),
                });
                local.block_on(&runtime, serve(services, incoming));
                // Lookups still running have no one waiting (their handles
                // are gone): cancel them, then stop hickory's connection
                // tasks with the runtime.
                drop(local);
                drop(runtime);
            })?;
        Ok((DnsHandle { requests, mx_port }, thread))
    }
}

/// The resolver: only the configured nameservers, no hosts file, our own
/// timeout and tries.
fn build_resolver(config: &DnsConfig) -> io::Result<TokioResolver> {
    let nameservers = config
        .nameservers
        .iter()
        .map(|addr| {
            // UDP first; TCP is used when an answer comes back truncated
            // (large MX sets), on the same port.
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.timeout = config.timeout;
    // hickory's `attempts` counts retries after the first try.
    opts.attempts = config.attempts - 1;
    opts.cache_size = u64::try_from(config.cache_size.saturating_mul(3)).unwrap_or(u64::MAX);
    // An MTA routes by DNS only: /etc/hosts must not redirect mail.
    opts.use_hosts_file = ResolveHosts::Never;
    hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(nameservers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| io::Error::other(format!("dns: cannot build the resolver: {e}")))
}

/// A worker's way to the DNS service: cheap to clone, `Send`, usable from
/// any executor.
#[derive(Clone)]
pub struct DnsHandle {
    requests: flume::Sender<Request>,
    mx_port: u16,
}

impl std::fmt::Debug for DnsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsHandle")
            .field("mx_port", &self.mx_port)
            .finish_non_exhaustive()
    }
}

impl DnsHandle {
    /// The targets for mail to `domain`, best first (see the module
    /// documentation for the rules). Callable from a monoio task: the
    /// lookup runs on the services thread and this future waits for its
    /// answer; it also waits while the request queue is full.
    ///
    /// The list is shared with the cache when the domain has no equal
    /// preferences; otherwise each call gets its own shuffled copy.
    pub async fn resolve(&self, domain: &str) -> Answer {
        if domain.starts_with('[') {
            // No DNS for an address literal, hence no hop either.
            return address_literal(domain, self.mx_port).map(|t| Arc::new(vec![t]));
        }
        let domain = normalize(domain)?;
        let (reply, answer) = oneshot::channel();
        let stopped = || DnsError::Temporary("the DNS service has stopped".into());
        self.requests
            .send_async(Request { domain, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The cache key: lower case (DNS names are case-insensitive), without the
/// trailing dot (`example.test.` and `example.test` are the same domain).
fn normalize(domain: &str) -> Result<String, DnsError> {
    let bare = domain.strip_suffix('.').unwrap_or(domain);
    if bare.is_empty() {
        return Err(DnsError::InvalidDomain(domain.to_string()));
    }
    Ok(bare.to_lowercase())
}

/// RFC 5321 §4.1.3 address literals: `[IPv4]` or `[IPv6:addr]` (the tag
/// is case-insensitive). General address literals (other tags) name no
/// address we can connect to.
fn address_literal(literal: &str, port: u16) -> Result<Target, DnsError> {
    let invalid = || DnsError::InvalidDomain(literal.to_string());
    let inner = literal
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(invalid)?;
    let ip = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            IpAddr::V6(inner[5..].parse::<Ipv6Addr>().map_err(|_| invalid())?)
        }
        _ => IpAddr::V4(inner.parse::<Ipv4Addr>().map_err(|_| invalid())?),
    };
    Ok(Target {
        host: literal.to_string(),
        preference: 0,
        addrs: vec![SocketAddr::new(ip, port)],
    })
}

/// The services thread's side: the resolver and all lookup state.
struct Services {
    resolver: TokioResolver,
    mx_port: u16,
    state: RefCell<State>,
}

struct State {
    cache: Cache,
    /// Lookups in flight, with everyone waiting for each.
    pending: HashMap<String, Vec<oneshot::Sender<Answer>>>,
}

/// The services thread's loop: until every handle is gone.
async fn serve(services: Rc<Services>, incoming: flume::Receiver<Request>) {
    while let Ok(request) = incoming.recv_async().await {
        services.handle(request);
    }
}

impl Services {
    /// Answers from the cache, joins a lookup in flight, or starts one.
    fn handle(self: &Rc<Self>, request: Request) {
        let Request { domain, reply } = request;
        let mut state = self.state.borrow_mut();
        if let Some(entry) = state.cache.get(&domain, Instant::now()) {
            // A worker that gave up waiting has dropped its receiver; the
            // answer is then simply not needed.
            let _ = reply.send(entry.deliver());
            return;
        }
        match state.pending.entry(domain) {
            Entry::Occupied(mut waiting) => waiting.get_mut().push(reply),
            Entry::Vacant(slot) => {
                let domain = slot.key().clone();
                slot.insert(vec![reply]);
                let services = Rc::clone(self);
                tokio::task::spawn_local(async move {
                    let (result, until) = services.lookup(&domain).await;
                    services.finish(domain, Resolved::new(result), until);
                });
            }
        }
    }

    /// Caches a finished lookup and answers everyone who waited for it.
    fn finish(&self, domain: String, resolved: Resolved, until: Instant) {
        let mut state = self.state.borrow_mut();
        let waiting = state.pending.remove(&domain).unwrap_or_default();
        for reply in waiting {
            let _ = reply.send(resolved.deliver());
        }
        if until > Instant::now() {
            state.cache.insert(domain, resolved, until);
        }
    }

    /// Resolves `domain` (normalized) to targets, with the instant until
    /// which the answer may be cached (now or earlier: not cacheable).
    async fn lookup(self: &Rc<Self>, domain: &str) -> (Result<Vec<Target>, DnsError>, Instant) {
        let now = Instant::now();
        let Ok(mut name) = Name::from_utf8(domain) else {
            return (
                Err(DnsError::InvalidDomain(domain.to_string())),
                now + INVALID_TTL,
            );
        };
        // Fully qualified: no search-list expansion, one query per type.
        name.set_fqdn(true);
        let mut until = now + MAX_CACHE_TTL;

        let hosts: Vec<(u16, Name)> = match self.resolver.mx_lookup(name.clone()).await {
            Ok(lookup) => {
                until = until.min(lookup.valid_until());
                match mx_hosts(&lookup) {
                    MxHosts::Null => return (Err(DnsError::NullMx), until),
                    MxHosts::Hosts(hosts) if hosts.is_empty() => {
                        // Only root exchanges, and not a proper null MX.
                        return (Err(DnsError::NoAddress), until);
                    }
                    MxHosts::Hosts(hosts) => hosts,
                    // An answer without MX records (only a CNAME, say):
                    // as good as NODATA.
                    MxHosts::None => vec![(0, name)],
                }
            }
            Err(e) => match Negative::of(&e, now) {
                Some(Negative {
                    nxdomain: true,
                    until: neg,
                }) => return (Err(DnsError::NoSuchDomain), until.min(neg)),
                // NODATA: the implicit MX (RFC 5321 §5.1); its answer rests
                // on the absence of MX records, so their negative TTL
                // bounds it.
                Some(Negative {
                    nxdomain: false,
                    until: neg,
                }) => {
                    until = until.min(neg);
                    vec![(0, name)]
                }
                None => {
                    let why = format!("MX lookup for {domain} failed: {e}");
                    return (Err(DnsError::Temporary(why)), now);
                }
            },
        };

        // Every exchanger's addresses at once.
        let lookups: Vec<_> = hosts
            .iter()
            .map(|(_, host)| {
                let services = Rc::clone(self);
                let host = host.clone();
                tokio::task::spawn_local(async move { services.addresses(host).await })
            })
            .collect();

        let mut targets = Vec::with_capacity(hosts.len());
        let mut temporary = None;
        let mut no_address_until = until;
        for ((preference, host), lookup) in hosts.into_iter().zip(lookups) {
            let outcome = lookup.await.unwrap_or_else(|e| {
                HostAddrs::Temporary(format!("address lookup task failed: {e}"))
            });
            match outcome {
                HostAddrs::Found { ips, until: valid } => {
                    until = until.min(valid);
                    targets.push(Target {
                        host: host_string(&host),
                        preference,
                        addrs: ips
                            .into_iter()
                            .map(|ip| SocketAddr::new(ip, self.mx_port))
                            .collect(),
                    });
                }
                HostAddrs::None { until: neg } => {
                    // The host comes back when its negative answer expires;
                    // one without a TTL does not hold a usable answer back.
                    if neg > now {
                        until = until.min(neg);
                    }
                    no_address_until = no_address_until.min(neg);
                }
                HostAddrs::Temporary(why) => {
                    temporary.get_or_insert(why);
                }
            }
        }

        match (targets.is_empty(), temporary) {
            (false, None) => (Ok(targets), until),
            (false, Some(_)) => (Ok(targets), until.min(now + DEGRADED_TTL)),
            (true, Some(why)) => (Err(DnsError::Temporary(why)), now),
            (true, None) => (Err(DnsError::NoAddress), no_address_until),
        }
    }

    /// One exchanger's A and AAAA records, looked up concurrently.
    async fn addresses(&self, host: Name) -> HostAddrs {
        let now = Instant::now();
        let (v4, v6) = tokio::join!(
            self.resolver.ipv4_lookup(host.clone()),
            self.resolver.ipv6_lookup(host.clone())
        );
        let mut ips = Vec::new();
        // Valid until: of the positive answers, and of the negative ones.
        let mut positive = now + MAX_CACHE_TTL;
        let mut negative = now + MAX_CACHE_TTL;
        let mut temporary = None;
        for answer in [v4, v6] {
            match answer {
                Ok(lookup) => {
                    let before = ips.len();
                    ips.extend(lookup.answers().iter().filter_map(|r| r.data.ip_addr()));
                    if ips.len() > before {
                        positive = positive.min(lookup.valid_until());
                    } else {
                        negative = negative.min(lookup.valid_until());
                    }
                }
                Err(e) => match Negative::of(&e, now) {
                    Some(neg) => negative = negative.min(neg.until),
                    None => {
                        temporary.get_or_insert_with(|| {
                            format!("address lookup for {} failed: {e}", host_string(&host))
                        });
                    }
                },
            }
        }
        match (ips.is_empty(), temporary) {
            (false, temporary) => {
                let mut until = positive;
                // A cacheable "no AAAA" bounds the answer too; one without
                // TTL (no SOA) does not hold the addresses we have back.
                if negative > now {
                    until = until.min(negative);
                }
                if temporary.is_some() {
                    until = until.min(now + DEGRADED_TTL);
                }
                HostAddrs::Found { ips, until }
            }
            (true, Some(why)) => HostAddrs::Temporary(why),
            (true, None) => HostAddrs::None { until: negative },
        }
    }
}

/// What an MX answer says.
enum MxHosts {
    /// RFC 7505 null MX.
    Null,
    /// The exchangers by preference, root exchanges and duplicates removed,
    /// at most [`MAX_MX_HOSTS`].
    Hosts(Vec<(u16, Name)>),
    /// No MX record in the answer.
    None,
}

fn mx_hosts(lookup: &Lookup) -> MxHosts {
    let mut mxs: Vec<(u16, Name)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_lowercase())),
            _ => None,
        })
        .collect();
    match mxs.as_slice() {
        [] => return MxHosts::None,
        [(0, exchange)] if exchange.is_root() => return MxHosts::Null,
        _ => {}
    }
    // Stable, so equal preferences keep the server's order until the
    // per-call shuffle.
    mxs.sort_by_key(|(preference, _)| *preference);
    let mut seen = HashSet::new();
    mxs.retain(|(_, exchange)| !exchange.is_root() && seen.insert(exchange.clone()));
    mxs.truncate(MAX_MX_HOSTS);
    MxHosts::Hosts(mxs)
}

/// `mx1.example.test` from the name `MX1.Example.Test.`.
fn host_string(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') && s.len() > 1 {
        s.pop();
    }
    s
}

/// A negative answer: the name does not exist, or has no data of the type.
struct Negative {
    nxdomain: bool,
    /// Until when the answer may be cached (`now` without an SOA).
    until: Instant,
}

impl Negative {
    /// `None` when the error is not an answer at all (temporary failure).
    fn of(error: &NetError, now: Instant) -> Option<Self> {
        let NetError::Dns(WireError::NoRecordsFound(NoRecords {
            response_code,
            negative_ttl,
            ..
        })) = error
        else {
            return None;
        };
        Some(Self {
            nxdomain: *response_code == ResponseCode::NXDomain,
            until: now + Duration::from_secs(negative_ttl.map_or(0, u64::from)),
        })
    }
}

/// One exchanger's addresses, or why there are none.
enum HostAddrs {
    Found { ips: Vec<IpAddr>, until: Instant },
    None { until: Instant },
    Temporary(String),
}

/// A finished lookup as kept in the cache.
struct Resolved {
    result: Answer,
    /// Some exchangers share a preference: shuffle them per delivery.
    ties: bool,
}

impl Resolved {
    fn new(result: Result<Vec<Target>, DnsError>) -> Self {
        let ties = result.as_ref().is_ok_and(|targets| {
            targets
                .windows(2)
                .any(|w| w[0].preference == w[1].preference)
        });
        Self {
            result: result.map(Arc::new),
            ties,
        }
    }

    /// The answer for one caller: equal preferences in a fresh random
    /// order (RFC 5321 §5.1), else the shared list.
    fn deliver(&self) -> Answer {
        match &self.result {
            Ok(targets) if self.ties => {
                let mut targets = Vec::clone(targets);
                targets
                    .chunk_by_mut(|a, b| a.preference == b.preference)
                    .for_each(fastrand::shuffle);
                Ok(Arc::new(targets))
            }
            other => other.clone(),
        }
    }
}

/// Answers by domain, each until its TTL runs out, at most `capacity`.
struct Cache {
    entries: HashMap<String, (Resolved, Instant)>,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn get(&mut self, domain: &str, now: Instant) -> Option<&Resolved> {
        let (_, until) = self.entries.get(domain)?;
        if *until <= now {
            self.entries.remove(domain);
            return None;
        }
        self.entries.get(domain).map(|(resolved, _)| resolved)
    }

    fn insert(&mut self, domain: String, resolved: Resolved, until: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&domain) {
            // Full: drop what has expired; if that is not enough, drop an
            // eighth of the entries (arbitrary ones: the hash order), so
            // this O(n) pass runs at most once per capacity/8 inserts.
            let now = Instant::now();
            self.entries.retain(|_, (_, until)| *until > now);
            if self.entries.len() >= self.capacity {
                let excess = self.entries.len() + 1 - self.capacity;
                let drop = excess.max(self.capacity / 8);
                let victims: Vec<String> = self.entries.keys().take(drop).cloned().collect();
                for victim in victims {
                    self.entries.remove(&victim);
                }
            }
        }
        self.entries.insert(domain, (resolved, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_literals() {
        let t = address_literal("[192.0.2.1]", 2525).unwrap();
        assert_eq!(t.addrs, vec!["192.0.2.1:2525".parse().unwrap()]);
        assert_eq!(t.host, "[192.0.2.1]");
        let t = address_literal("[IPv6:2001:db8::1]", 25).unwrap();
        assert_eq!(t.addrs, vec!["[2001:db8::1]:25".parse().unwrap()]);
        let t = address_literal("[ipv6:::1]", 25).unwrap();
        assert_eq!(t.addrs, vec!["[::1]:25".parse().unwrap()]);
        for bad in [
            "[]",
            "[192.0.2]",
            "[999.0.2.1]",
            "[::1]",
            "[IPv6:192.0.2.1]",
            "[x-tag:abc]",
            "[192.0.2.1",
            "[IPv6:]",
        ] {
            assert!(
                matches!(address_literal(bad, 25), Err(DnsError::InvalidDomain(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize("Example.TEST.").unwrap(), "example.test");
        assert_eq!(normalize("example.test").unwrap(), "example.test");
        assert!(normalize(".").is_err());
        assert!(normalize("").is_err());
    }

    #[test]
    fn permanence() {
        assert!(!DnsError::Temporary("x".into()).is_permanent());
        assert!(DnsError::NullMx.is_permanent());
        assert!(DnsError::NoSuchDomain.is_permanent());
        assert!(DnsError::NoAddress.is_permanent());
        assert!(DnsError::InvalidDomain("x".into()).is_permanent());
    }

    fn target(host: &str, preference: u16) -> Target {
        Target {
            host: host.into(),
            preference,
            addrs: vec!["192.0.2.1:25".parse().unwrap()],
        }
    }

    #[test]
    fn shuffles_only_within_a_preference() {
        let resolved = Resolved::new(Ok(vec![
            target("a", 1),
            target("b", 5),
            target("c", 5),
            target("d", 5),
            target("e", 9),
        ]));
        assert!(resolved.ties);
        let mut orders = HashSet::new();
        for _ in 0..200 {
            let list = resolved.deliver().unwrap();
            let hosts: Vec<&str> = list.iter().map(|t| t.host.as_str()).collect();
            assert_eq!(hosts[0], "a");
            assert_eq!(hosts[4], "e");
            orders.insert(hosts[1..4].join(""));
        }
        assert_eq!(orders.len(), 6, "every order of b, c, d: {orders:?}");

        let plain = Resolved::new(Ok(vec![target("a", 1), target("b", 2)]));
        assert!(!plain.ties);
        let (x, y) = (plain.deliver().unwrap(), plain.deliver().unwrap());
        assert!(Arc::ptr_eq(&x, &y), "no ties: the cached list is shared");
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut cache = Cache::new(16);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        cache.insert("a".into(), Resolved::new(Err(DnsError::NullMx)), later);
        assert!(cache.get("a", now).is_some());
        assert!(cache.get("a", later).is_none(), "expired at its TTL");
        assert!(cache.entries.is_empty(), "expired entries are removed");
        for i in 0..100 {
            cache.insert(format!("d{i}"), Resolved::new(Err(DnsError::NullMx)), later);
            assert!(cache.entries.len() <= 16);
        }
        assert!(cache.get("d99", now).is_some(), "the newest is kept");

        let mut off = Cache::new(0);
        off.insert("a".into(), Resolved::new(Err(DnsError::NullMx)), later);
        assert!(off.get("a", now).is_none());
    }
}
