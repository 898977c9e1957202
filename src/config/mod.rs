//! Verdant's configuration, read in two phases (the ripgrep "low args → high
//! args" split).
//!
//! **Phase 1 — [`RawConfig`]**: the TOML file deserialized by serde almost
//! verbatim. Every key is optional, every struct denies unknown keys (a typo is
//! an error, not a silently ignored setting), and every value is wrapped in
//! [`toml::Spanned`] so that phase 2 can still say *which line* a bad value
//! came from. Sizes and durations stay as text here; syntax errors, unknown
//! keys and wrong types are reported by the `toml` crate and converted to a
//! [`ConfigError`] with a line number and the key path.
//!
//! **Phase 2 — [`Settings::from_raw`]**: fills in defaults (all of them live in
//! [`defaults`] at the top of this file, and nowhere else), parses sizes,
//! durations, socket addresses and CIDRs, checks ranges and cross-field rules,
//! and produces plain typed [`Settings`] that the rest of the server uses
//! without ever seeing an `Option` or a span. Errors read like
//! `verdant.toml:7: smtp.max_message_size: expected a size like 25MiB, got "lots"`.
//!
//! After that, command-line [`Overrides`] are applied with [`Settings::apply`],
//! and [`Settings::to_toml`] prints the effective configuration in the file's
//! own layout (for `verdant config check`); its output parses back to equal
//! settings.

mod amqp;
mod delivery;
mod footprint;
mod metrics;

pub use amqp::{
    AmqpQueueType, AmqpSettings, QueueBackend, QueueSettings, RawAmqp, RawQueue, parse_amqp_prefix,
    parse_amqp_url,
};
pub use delivery::{DeliverySettings, RawDelivery};
pub use footprint::{FootprintSettings, RawFootprint};
pub use metrics::{MetricsSettings, RawMetrics};

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const KB: u64 = 1000;
const MB: u64 = 1000 * KB;
const GB: u64 = 1000 * MB;

/// Every default value, in one place. A key missing from the file (or no file
/// at all) gets exactly these.
pub mod defaults {
    use super::{KIB, MIB};
    use std::time::Duration;

    /// Loopback on an unprivileged port: safe to start without root and
    /// without exposing an open relay to the network.
    pub const LISTEN: &[&str] = &["127.0.0.1:2525"];
    /// 0 = one worker per available core.
    pub const WORKERS: usize = 0;
    /// Pinning only pays off on a dedicated machine; off by default.
    pub const PIN_WORKERS: bool = false;
    /// Used when the machine's hostname cannot be read.
    pub const HOSTNAME_FALLBACK: &str = "localhost";
    /// Relative to the working directory so a checkout runs as-is.
    pub const SPOOL_DIR: &str = "./var/spool";
    /// A short wait lets more records share one durable write. Measured
    /// with smtp-source (50 sessions, 4 KiB, 5 alternating rounds, see
    /// benches/runs/2026-12-03-commit-window.md): +19% messages/s and -17%
    /// CPU with a connection per message, +9% and -16% with connections
    /// reused, against no wait. A lone message waits 0.3 ms more, which is
    /// nothing next to a network round trip.
    pub const COMMIT_WINDOW: Duration = Duration::from_micros(300);
    /// Big enough that rotation is rare, small enough to reclaim space soon.
    pub const SEGMENT_SIZE: u64 = 64 * MIB;
    /// Only local clients may relay unless the operator says otherwise.
    pub const CLIENT_NETWORKS: &[&str] = &["127.0.0.0/8", "::1/128"];
    /// The common limit of large providers; anything bigger bounces elsewhere.
    pub const MAX_MESSAGE_SIZE: u64 = 25 * MIB;
    /// RFC 5321 §4.5.3.1.8 requires accepting at least 100; be generous.
    pub const MAX_RECIPIENTS: usize = 1000;
    /// Whole server; bounds memory and file descriptors.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Keeps one host from taking every slot.
    pub const MAX_CONNECTIONS_PER_IP: usize = 100;
    /// RFC 5321 §4.5.3.2.7 asks for at least 5 minutes.
    pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// RFC 5321 §4.5.3.2.6 asks for at least 10 minutes between DATA blocks.
    pub const DATA_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// Bad commands tolerated before `421` and close.
    pub const MAX_ERRORS: usize = 20;

    /// Smallest accepted `smtp.max_message_size`: below this not even the
    /// headers of a real message fit.
    pub const MIN_MESSAGE_SIZE: u64 = KIB;
    /// Largest accepted `smtp.max_message_size`: a message is one spool
    /// record, and the spool refuses records over 1 GiB as damage; this
    /// leaves room for the envelope and our headers.
    pub const MAX_MESSAGE_SIZE_LIMIT: u64 = 512 * MIB;
    /// Largest accepted `server.workers`; beyond this is surely a typo.
    pub const MAX_WORKERS: usize = 1024;
    /// Shortest accepted network timeout.
    pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
    /// Longest accepted group-commit window: every accepted message waits up
    /// to this long for its fsync.
    pub const MAX_COMMIT_WINDOW: Duration = Duration::from_millis(100);
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The path as given.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Bad TOML, an unknown key, a wrong type, or a value that fails
    /// validation. Displays as `file:line: field: message`.
    #[error("{}{}{message}", location(.file, .line), field_prefix(.field))]
    Invalid {
        /// The file name used in the message.
        file: String,
        /// 1-based line, when the error points into the file.
        line: Option<usize>,
        /// Dotted key path such as `smtp.max_message_size`; empty for pure
        /// syntax errors.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn location(file: &str, line: &Option<usize>) -> String {
    match line {
        Some(line) => format!("{file}:{line}: "),
        None => format!("{file}: "),
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// 1-based line number of byte `offset` in `source`.
fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Converts a `toml` deserialization error: its span becomes a line number,
/// its key path becomes the field.
fn from_toml_error(err: &toml::de::Error, source: &str, file: &str) -> ConfigError {
    // The key path (e.g. `server.workers`) is not exposed by `toml`'s API, but
    // its Display prints it as "in `a.b`" when the error has no input attached.
    let mut bare = err.clone();
    bare.set_input(None);
    let rendered = bare.to_string();
    let mut field = rendered
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
        .unwrap_or_default()
        .to_owned();
    // serde's deny_unknown_fields message: "unknown field `x`, expected ...".
    // The key path stops at the table, so add the offending key itself.
    if let Some(rest) = err.message().strip_prefix("unknown field `")
        && let Some((key, _)) = rest.split_once('`')
    {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(key);
    }
    ConfigError::Invalid {
        file: file.to_owned(),
        line: err.span().map(|s| line_of(source, s.start)),
        field,
        message: err.message().to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Phase 1: raw TOML
// ---------------------------------------------------------------------------

/// The config file as written: nothing defaulted, nothing validated, every
/// value remembering its position for error messages.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    #[serde(default)]
    pub server: RawServer,
    /// `[spool]`
    #[serde(default)]
    pub spool: RawSpool,
    /// `[smtp]`
    #[serde(default)]
    pub smtp: RawSmtp,
    /// `[delivery]`
    #[serde(default)]
    pub delivery: RawDelivery,
    /// `[queue]`
    #[serde(default)]
    pub queue: RawQueue,
    /// `[amqp]`
    #[serde(default)]
    pub amqp: RawAmqp,
    /// `[metrics]`
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[footprint]`
    #[serde(default)]
    pub footprint: RawFootprint,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Socket addresses; each worker opens its own SO_REUSEPORT listener on
    /// every one, so the kernel spreads connections across workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// Worker threads; 0 = one per available core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Spanned<usize>>,
    /// Pin worker k to core k, for cache locality on dedicated machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_workers: Option<Spanned<bool>>,
    /// Name announced in the greeting and EHLO reply; defaults to the
    /// machine's hostname because that is what peers will resolve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Spanned<String>>,
}

/// `[spool]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Where queued messages live; must survive restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<Spanned<String>>,
    /// Group-commit window: how long a commit waits for others to share its
    /// fsync. A humantime duration ("500us", "1ms").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_window: Option<Spanned<String>>,
    /// Segment files are rotated past this size, so space can be reclaimed
    /// one segment at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<Spanned<SizeValue>>,
}

/// `[smtp]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    /// CIDRs whose clients may relay to any domain; everyone else may only
    /// deliver to local domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_networks: Option<Spanned<Vec<Spanned<String>>>>,
    /// Largest message accepted (advertised in EHLO SIZE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<Spanned<SizeValue>>,
    /// RCPT commands accepted per message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_recipients: Option<Spanned<usize>>,
    /// Concurrent connections for the whole server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<Spanned<usize>>,
    /// Concurrent connections from one IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<Spanned<usize>>,
    /// Idle time allowed while waiting for a command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Spanned<String>>,
    /// Idle time allowed while receiving message data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_timeout: Option<Spanned<String>>,
    /// Bad commands tolerated before `421` and close, to shed scanners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<Spanned<usize>>,
}

/// A size as written: a bare integer (bytes) or a string with an optional
/// unit (`"25MiB"`). Parsed in phase 2 so that errors carry a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeValue {
    /// `max_message_size = 1048576`
    Bytes(i64),
    /// `max_message_size = "1MiB"`
    Text(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: integer bytes or a string like \"25MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                i64::try_from(v)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::custom("size too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for SizeValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SizeValue::Bytes(n) => s.serialize_i64(*n),
            SizeValue::Text(t) => s.serialize_str(t),
        }
    }
}

impl fmt::Display for SizeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeValue::Bytes(n) => write!(f, "{n}"),
            SizeValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

impl RawConfig {
    /// Phase 1: parse TOML text. `file_name` is only used in error messages.
    pub fn parse(source: &str, file_name: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(source).map_err(|e| from_toml_error(&e, source, file_name))
    }
}

// ---------------------------------------------------------------------------
// Phase 2: typed settings
// ---------------------------------------------------------------------------

/// The validated, fully defaulted configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// `[server]`
    pub server: ServerSettings,
    /// `[spool]`
    pub spool: SpoolSettings,
    /// `[smtp]`
    pub smtp: SmtpSettings,
    /// `[delivery]`
    pub delivery: DeliverySettings,
    /// `[queue]`
    pub queue: QueueSettings,
    /// `[amqp]`
    pub amqp: AmqpSettings,
    /// `[metrics]`
    pub metrics: MetricsSettings,
    /// `[footprint]`
    pub footprint: FootprintSettings,
}

/// `[server]`: sockets and threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerSettings {
    /// Non-empty; every worker listens on each (SO_REUSEPORT).
    pub listen: Vec<SocketAddr>,
    /// Resolved worker count: never 0.
    pub workers: usize,
    /// Pin worker k to core k.
    pub pin_workers: bool,
    /// Name used in the greeting and EHLO reply.
    pub hostname: String,
}

/// `[spool]`: the durable queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpoolSettings {
    /// Spool directory.
    pub dir: PathBuf,
    /// Group-commit window, at most 100ms.
    pub commit_window: Duration,
    /// Segment rotation size in bytes, > 0.
    pub segment_size: u64,
}

/// `[smtp]`: protocol limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmtpSettings {
    /// Networks allowed to relay.
    pub client_networks: Vec<IpNet>,
    /// Bytes, at least 1KiB.
    pub max_message_size: usize,
    /// At least 1.
    pub max_recipients: usize,
    /// Whole server, at least 1.
    pub max_connections: usize,
    /// Per client IP, 1..=max_connections.
    pub max_connections_per_ip: usize,
    /// At least 1s.
    pub command_timeout: Duration,
    /// At least 1s.
    pub data_timeout: Duration,
    /// At least 1.
    pub max_errors: usize,
}

/// Command-line overrides, applied after the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Non-empty replaces `server.listen`.
    pub listen: Vec<SocketAddr>,
    /// Replaces `spool.dir`.
    pub spool: Option<PathBuf>,
    /// Replaces `server.workers`; 0 means one per core.
    pub workers: Option<usize>,
    /// Added to (and override) `delivery.routes`.
    pub routes: Vec<(String, SocketAddr)>,
    /// Non-empty replaces `delivery.nameservers`.
    pub nameservers: Vec<SocketAddr>,
    /// Replaces `queue.backend`.
    pub queue: Option<QueueBackend>,
    /// Replaces `amqp.url`; check it with [`parse_amqp_url`] first.
    pub amqp_url: Option<String>,
    /// Replaces `amqp.prefix`; check it with [`parse_amqp_prefix`] first.
    pub amqp_prefix: Option<String>,
    /// Replaces `metrics.listen` (`Some(None)`: no endpoint).
    pub metrics_listen: Option<Option<SocketAddr>>,
}

/// Reads and validates the configuration. `None` means defaults only (no file
/// is required to run); `Some(path)` reads that file and names it in errors.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let Some(path) = path else {
        return Settings::from_raw(RawConfig::default(), "", "<defaults>");
    };
    let source = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_owned(),
        error,
    })?;
    Settings::parse(&source, &path.display().to_string())
}

/// Error context for phase 2: turns spans into lines.
struct Ctx<'a> {
    source: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    fn error(
        &self,
        span: Option<&Range<usize>>,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: span.map(|s| line_of(self.source, s.start)),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn size(
        &self,
        value: Option<Spanned<SizeValue>>,
        field: &str,
        default: u64,
    ) -> Result<(u64, Option<Range<usize>>), ConfigError> {
        let Some(value) = value else {
            return Ok((default, None));
        };
        let span = value.span();
        let parsed = match value.get_ref() {
            SizeValue::Bytes(n) => u64::try_from(*n).ok(),
            SizeValue::Text(t) => parse_size(t),
        };
        let bytes = parsed.ok_or_else(|| {
            self.error(
                Some(&span),
                field,
                format!("expected a size like 25MiB, got {}", value.get_ref()),
            )
        })?;
        if bytes == 0 {
            return Err(self.error(Some(&span), field, "must be greater than 0"));
        }
        Ok((bytes, Some(span)))
    }

    fn duration(
        &self,
        value: Option<Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Result<(Duration, Option<Range<usize>>), ConfigError> {
        let Some(value) = value else {
            return Ok((default, None));
        };
        let span = value.span();
        let d = humantime::parse_duration(value.get_ref()).map_err(|_| {
            self.error(
                Some(&span),
                field,
                format!(
                    "expected a duration like 5m or 500ms, got {:?}",
                    value.get_ref()
                ),
            )
        })?;
        Ok((d, Some(span)))
    }

    fn min_duration(
        &self,
        (d, span): (Duration, Option<Range<usize>>),
        field: &str,
    ) -> Result<Duration, ConfigError> {
        if d < defaults::MIN_TIMEOUT {
            return Err(self.error(
                span.as_ref(),
                field,
                format!(
                    "must be at least {}, got {}",
                    humantime::format_duration(defaults::MIN_TIMEOUT),
                    humantime::format_duration(d)
                ),
            ));
        }
        Ok(d)
    }

    fn at_least_one(
        &self,
        value: Option<Spanned<usize>>,
        field: &str,
        default: usize,
    ) -> Result<(usize, Option<Range<usize>>), ConfigError> {
        let (n, span) = split(value, default);
        if n < 1 {
            return Err(self.error(span.as_ref(), field, "must be at least 1, got 0"));
        }
        Ok((n, span))
    }

    /// Parses a list of strings with `parse`, naming the bad element's line.
    fn list<T>(
        &self,
        value: Option<Spanned<Vec<Spanned<String>>>>,
        default: &[&str],
        field: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<(Vec<T>, Option<Range<usize>>), ConfigError> {
        match value {
            None => {
                let parsed = default.iter().map(|s| parse(s).expect("valid default"));
                Ok((parsed.collect(), None))
            }
            Some(list) => {
                let span = list.span();
                let mut out = Vec::new();
                for item in list.into_inner() {
                    let v = parse(item.get_ref().trim()).ok_or_else(|| {
                        self.error(
                            Some(&item.span()),
                            field,
                            format!("expected {what}, got {:?}", item.get_ref()),
                        )
                    })?;
                    out.push(v);
                }
                Ok((out, Some(span)))
            }
        }
    }
}

/// A raw scalar's value (or `default`) and where it was written.
fn split<T>(value: Option<Spanned<T>>, default: T) -> (T, Option<Range<usize>>) {
    match value {
        Some(v) => {
            let span = v.span();
            (v.into_inner(), Some(span))
        }
        None => (default, None),
    }
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    // A bare address is a single host: "10.0.0.1" means 10.0.0.1/32.
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The machine's hostname, or [`defaults::HOSTNAME_FALLBACK`].
fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call;
    // gethostname writes at most `len` bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return defaults::HOSTNAME_FALLBACK.to_owned();
    }
    // POSIX leaves truncated names unterminated; stop at NUL or buffer end.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => defaults::HOSTNAME_FALLBACK.to_owned(),
    }
}

impl Settings {
    /// Phase 1 + phase 2 on TOML text; `file_name` is used in errors.
    pub fn parse(source: &str, file_name: &str) -> Result<Settings, ConfigError> {
        let raw = RawConfig::parse(source, file_name)?;
        Settings::from_raw(raw, source, file_name)
    }

    /// Phase 2: fill defaults and validate. `source_text` is the text `raw`
    /// was parsed from (its spans index into it); `file_name` names it in
    /// errors.
    pub fn from_raw(
        raw: RawConfig,
        source_text: &str,
        file_name: &str,
    ) -> Result<Settings, ConfigError> {
        let cx = Ctx {
            source: source_text,
            file: file_name,
        };
        let RawConfig {
            server,
            spool,
            smtp,
            delivery,
            queue,
            amqp,
            metrics,
            footprint,
        } = raw;
        let delivery = cx.delivery(delivery)?;
        let queue = cx.queue(queue);
        let amqp = cx.amqp(amqp, &delivery)?;
        let metrics = cx.metrics(metrics)?;
        let footprint = cx.footprint(footprint)?;

        // [server]
        let (listen, listen_span) = cx.list(
            server.listen,
            defaults::LISTEN,
            "server.listen",
            "a socket address like 127.0.0.1:2525",
            |s| s.parse::<SocketAddr>().ok(),
        )?;
        if listen.is_empty() {
            return Err(cx.error(
                listen_span.as_ref(),
                "server.listen",
                "must list at least one address",
            ));
        }
        let (workers, workers_span) = split(server.workers, defaults::WORKERS);
        if workers > defaults::MAX_WORKERS {
            return Err(cx.error(
                workers_span.as_ref(),
                "server.workers",
                format!(
                    "must be at most {} (0 = one per core), got {workers}",
                    defaults::MAX_WORKERS
                ),
            ));
        }
        let workers = if workers == 0 {
            available_cores()
        } else {
            workers
        };
        let (pin_workers, _) = split(server.pin_workers, defaults::PIN_WORKERS);
        let hostname = match server.hostname {
            None => system_hostname(),
            Some(h) => {
                let span = h.span();
                let h = h.into_inner();
                if h.is_empty() || h.chars().any(char::is_whitespace) {
                    return Err(cx.error(
                        Some(&span),
                        "server.hostname",
                        format!("must be a non-empty name without spaces, got {h:?}"),
                    ));
                }
                h
            }
        };

        // [spool]
        let (dir, dir_span) = split(spool.dir, defaults::SPOOL_DIR.to_owned());
        if dir.is_empty() {
            return Err(cx.error(dir_span.as_ref(), "spool.dir", "must not be empty"));
        }
        let (commit_window, cw_span) = cx.duration(
            spool.commit_window,
            "spool.commit_window",
            defaults::COMMIT_WINDOW,
        )?;
        if commit_window > defaults::MAX_COMMIT_WINDOW {
            return Err(cx.error(
                cw_span.as_ref(),
                "spool.commit_window",
                format!(
                    "must be between 0 and {}, got {}",
                    humantime::format_duration(defaults::MAX_COMMIT_WINDOW),
                    humantime::format_duration(commit_window)
                ),
            ));
        }
        let (segment_size, _) = cx.size(
            spool.segment_size,
            "spool.segment_size",
            defaults::SEGMENT_SIZE,
        )?;

        // [smtp]
        let (client_networks, _) = cx.list(
            smtp.client_networks,
            defaults::CLIENT_NETWORKS,
            "smtp.client_networks",
            "a CIDR network like 127.0.0.0/8",
            parse_cidr,
        )?;
        let (max_message_size, mms_span) = cx.size(
            smtp.max_message_size,
            "smtp.max_message_size",
            defaults::MAX_MESSAGE_SIZE,
        )?;
        if !(defaults::MIN_MESSAGE_SIZE..=defaults::MAX_MESSAGE_SIZE_LIMIT)
            .contains(&max_message_size)
        {
            return Err(cx.error(
                mms_span.as_ref(),
                "smtp.max_message_size",
                format!(
                    "must be between {} and {}, got {}",
                    format_size(defaults::MIN_MESSAGE_SIZE),
                    format_size(defaults::MAX_MESSAGE_SIZE_LIMIT),
                    format_size(max_message_size)
                ),
            ));
        }
        let max_message_size = usize::try_from(max_message_size).map_err(|_| {
            cx.error(
                mms_span.as_ref(),
                "smtp.max_message_size",
                "too large for this platform",
            )
        })?;
        let (max_recipients, _) = cx.at_least_one(
            smtp.max_recipients,
            "smtp.max_recipients",
            defaults::MAX_RECIPIENTS,
        )?;
        let (max_connections, mc_span) = cx.at_least_one(
            smtp.max_connections,
            "smtp.max_connections",
            defaults::MAX_CONNECTIONS,
        )?;
        let (max_connections_per_ip, mcpi_span) = cx.at_least_one(
            smtp.max_connections_per_ip,
            "smtp.max_connections_per_ip",
            defaults::MAX_CONNECTIONS_PER_IP,
        )?;
        if max_connections_per_ip > max_connections {
            // Point at whichever of the two the file actually set.
            return Err(cx.error(
                mcpi_span.as_ref().or(mc_span.as_ref()),
                "smtp.max_connections_per_ip",
                format!(
                    "must not exceed smtp.max_connections ({max_connections}), \
                     got {max_connections_per_ip}"
                ),
            ));
        }
        let command_timeout = cx.min_duration(
            cx.duration(
                smtp.command_timeout,
                "smtp.command_timeout",
                defaults::COMMAND_TIMEOUT,
            )?,
            "smtp.command_timeout",
        )?;
        let data_timeout = cx.min_duration(
            cx.duration(
                smtp.data_timeout,
                "smtp.data_timeout",
                defaults::DATA_TIMEOUT,
            )?,
            "smtp.data_timeout",
        )?;
        let (max_errors, _) =
            cx.at_least_one(smtp.max_errors, "smtp.max_errors", defaults::MAX_ERRORS)?;

        Ok(Settings {
            server: ServerSettings {
                listen,
                workers,
                pin_workers,
                hostname,
            },
            spool: SpoolSettings {
                dir: PathBuf::from(dir),
                commit_window,
                segment_size,
            },
            smtp: SmtpSettings {
                client_networks,
                max_message_size,
                max_recipients,
                max_connections,
                max_connections_per_ip,
                command_timeout,
                data_timeout,
                max_errors,
            },
            delivery,
            queue,
            amqp,
            metrics,
            footprint,
        })
    }

    /// Applies command-line overrides. These are not range-checked beyond
    /// resolving `workers = 0` to one per core: the caller checks them first
    /// (`amqp_url` with [`parse_amqp_url`], `amqp_prefix` with
    /// [`parse_amqp_prefix`], both usable as clap value parsers).
    pub fn apply(&mut self, o: &Overrides) {
        if !o.listen.is_empty() {
            self.server.listen = o.listen.clone();
        }
        if let Some(dir) = &o.spool {
            self.spool.dir = dir.clone();
        }
        if let Some(workers) = o.workers {
            self.server.workers = if workers == 0 {
                available_cores()
            } else {
                workers
            };
        }
        for (domain, addr) in &o.routes {
            self.delivery
                .routes
                .insert(domain.to_ascii_lowercase(), *addr);
        }
        if !o.nameservers.is_empty() {
            self.delivery.nameservers = o.nameservers.clone();
        }
        if let Some(backend) = o.queue {
            self.queue.backend = backend;
        }
        if let Some(url) = &o.amqp_url {
            self.amqp.url = url.clone();
        }
        if let Some(prefix) = &o.amqp_prefix {
            self.amqp.prefix = prefix.clone();
        }
        if let Some(listen) = o.metrics_listen {
            self.metrics.listen = listen;
        }
    }

    /// The effective configuration as TOML, in the config file's layout, with
    /// sizes and durations human-readable. Parsing it yields equal settings
    /// (a non-UTF-8 spool path is printed lossily).
    pub fn to_toml(&self) -> String {
        fn v<T>(value: T) -> Option<Spanned<T>> {
            Some(Spanned::new(0..0, value))
        }
        fn strings<T: ToString>(items: &[T]) -> Option<Spanned<Vec<Spanned<String>>>> {
            v(items
                .iter()
                .map(|i| Spanned::new(0..0, i.to_string()))
                .collect())
        }
        fn dur(d: Duration) -> Option<Spanned<String>> {
            v(humantime::format_duration(d).to_string())
        }
        fn size(n: u64) -> Option<Spanned<SizeValue>> {
            v(SizeValue::Text(format_size(n)))
        }
        let raw = RawConfig {
            server: RawServer {
                listen: strings(&self.server.listen),
                workers: v(self.server.workers),
                pin_workers: v(self.server.pin_workers),
                hostname: v(self.server.hostname.clone()),
            },
            spool: RawSpool {
                dir: v(self.spool.dir.to_string_lossy().into_owned()),
                commit_window: dur(self.spool.commit_window),
                segment_size: size(self.spool.segment_size),
            },
            smtp: RawSmtp {
                client_networks: strings(&self.smtp.client_networks),
                max_message_size: size(self.smtp.max_message_size as u64),
                max_recipients: v(self.smtp.max_recipients),
                max_connections: v(self.smtp.max_connections),
                max_connections_per_ip: v(self.smtp.max_connections_per_ip),
                command_timeout: dur(self.smtp.command_timeout),
                data_timeout: dur(self.smtp.data_timeout),
                max_errors: v(self.smtp.max_errors),
            },
            delivery: self.delivery.to_raw(),
            queue: self.queue.to_raw(),
            amqp: self.amqp.to_raw(),
            metrics: self.metrics.to_raw(),
            footprint: self.footprint.to_raw(),
        };
        toml::to_string(&raw).expect("plain strings, integers and booleans always serialize")
    }
}

/// Parses `1024`, `"64MiB"`, `"25 MB"`: an integer with an optional unit
/// (B, KiB, MiB, GiB, KB, MB, GB; case-sensitive because KB and Kb differ).
/// `None` on anything else or on overflow.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = t[..digits].parse().ok()?;
    let unit = match t[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "KB" => KB,
        "MB" => MB,
        "GB" => GB,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Formats bytes with the largest unit that divides them exactly ("25MiB",
/// "1GB", "1500B"), so the result parses back to the same number.
fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (GIB, "GiB"),
        (GB, "GB"),
        (MIB, "MiB"),
        (MB, "MB"),
        (KIB, "KiB"),
        (KB, "KB"),
    ];
    for (unit, name) in UNITS {
        if bytes != 0 && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests;
