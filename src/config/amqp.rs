//! `[queue]` and `[amqp]`: which queue backend holds accepted mail, and the
//! settings of the RabbitMQ one (AMQP 0-9-1, the `verdant-amqp` crate).
//!
//! `[amqp]` is validated whatever the backend, so a file stays valid when
//! only `queue.backend` (or `--queue`) changes.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Ctx, DeliverySettings, split};

/// Defaults and limits of `[queue]` and `[amqp]`, in one place.
pub mod defaults {
    use std::time::Duration;

    use super::{AmqpQueueType, QueueBackend};

    /// The local spool: nothing else to run.
    pub const BACKEND: QueueBackend = QueueBackend::Embedded;
    /// RabbitMQ's out-of-the-box account on its standard port, default
    /// vhost `/` (URL-encoded); guest may only log in from loopback.
    pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    /// Start of every queue name, so several installations can share a
    /// broker (each with its own prefix).
    pub const PREFIX: &str = "verdant";
    /// Longest prefix; queue names add at most ~30 characters and RabbitMQ
    /// allows 255 bytes.
    pub const MAX_PREFIX_LEN: usize = 64;
    /// Classic queues are the fastest on one node; quorum queues are the
    /// opt-in for broker high availability.
    pub const QUEUE_TYPE: AmqpQueueType = AmqpQueueType::Classic;
    /// One delay queue per tier; more than this is surely a mistake.
    pub const MAX_TIERS: usize = 32;
    /// Unacknowledged deliveries per consumer: enough to keep the delivery
    /// workers busy across a broker round trip, few enough to bound memory.
    pub const PREFETCH: u16 = 256;
    /// Messages per publish batch: one confirm wait for the whole batch.
    pub const BATCH_MAX: usize = 64;
    /// Largest accepted `amqp.batch_max`.
    pub const MAX_BATCH_MAX: usize = 1024;
    /// How long a publish waits for others to share its batch; small next
    /// to an SMTP round trip, like the spool's commit window.
    pub const BATCH_WINDOW: Duration = Duration::from_millis(2);
    /// Longest accepted `amqp.batch_window`: every accepted message waits up
    /// to this long before its 250.
    pub const MAX_BATCH_WINDOW: Duration = Duration::from_millis(100);
    /// A broker that has not confirmed a publish by then is treated as
    /// failed: the client gets a temporary error and retries.
    pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest accepted `amqp.confirm_timeout`: the client waits 10 minutes
    /// for the reply to end of data (RFC 5321 §4.5.3.2.6); answering within
    /// half of that leaves it time to hear our temporary error.
    pub const MAX_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Largest `amqp.node_id`: ids have 10 bits for the node.
    pub const MAX_NODE_ID: u16 = 1023;

    /// The default delay tiers: `delivery.retry_initial`, doubling, up to and
    /// including `delivery.retry_max` (5m, 10m, 20m, 40m, 1h20m, 2h40m, 4h
    /// with the `[delivery]` defaults), each rounded up to a whole
    /// millisecond because queue TTLs are in milliseconds. At most
    /// [`MAX_TIERS`]: if doubling has not reached `retry_max` by then, the
    /// last tier is `retry_max` itself.
    pub fn tiers(retry_initial: Duration, retry_max: Duration) -> Vec<Duration> {
        fn ceil_ms(d: Duration) -> Duration {
            let ms = d.as_nanos().div_ceil(1_000_000);
            Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
        }
        let first = ceil_ms(retry_initial).max(Duration::from_millis(1));
        let last = ceil_ms(retry_max).max(first);
        let mut tiers = vec![first];
        let mut tier = first;
        while tier < last {
            tier = if tiers.len() + 1 == MAX_TIERS {
                last
            } else {
                tier.saturating_mul(2).min(last)
            };
            tiers.push(tier);
        }
        tiers
    }
}

/// Where accepted messages are queued (`[queue] backend`, `--queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// The local spool: one machine, nothing else to run.
    #[default]
    Embedded,
    /// RabbitMQ, configured by `[amqp]`: receivers and delivery engines on
    /// several machines.
    Amqp,
}

impl fmt::Display for QueueBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueBackend::Embedded => "embedded",
            QueueBackend::Amqp => "amqp",
        })
    }
}

/// The RabbitMQ queue type of every Verdant queue (`amqp.queue_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AmqpQueueType {
    /// Classic durable queues: one node, fastest.
    #[default]
    Classic,
    /// Quorum queues: replicated across brokers (Raft).
    Quorum,
}

/// `[queue]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// "embedded" or "amqp".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Spanned<QueueBackend>>,
}

/// `[amqp]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqp {
    /// Broker URL, `amqp://user:pass@host:port/vhost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Spanned<String>>,
    /// Start of every queue name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<Spanned<String>>,
    /// "classic" or "quorum".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<Spanned<AmqpQueueType>>,
    /// Delay-queue TTLs as durations ("5m"), strictly increasing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Unacknowledged deliveries per consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<Spanned<u16>>,
    /// Messages per publish batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max: Option<Spanned<usize>>,
    /// How long a publish waits to fill its batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_window: Option<Spanned<String>>,
    /// How long to wait for the broker's publisher confirm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_timeout: Option<Spanned<String>>,
    /// This node's number among those sharing the broker, 0..=1023.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<Spanned<u16>>,
}

/// `[queue]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueSettings {
    /// Where accepted messages are queued.
    pub backend: QueueBackend,
}

/// `[amqp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmqpSettings {
    /// Broker URL; its scheme is `amqp://` (see [`parse_amqp_url`]).
    pub url: String,
    /// Start of every queue name (see [`parse_amqp_prefix`]).
    pub prefix: String,
    /// Classic or quorum queues.
    pub queue_type: AmqpQueueType,
    /// Delay-queue TTLs: 1 to 32 of them, strictly increasing, each a whole
    /// number of milliseconds, at least 1ms.
    pub tiers: Vec<Duration>,
    /// Unacknowledged deliveries per consumer, at least 1.
    pub prefetch: u16,
    /// Messages per publish batch, 1..=1024.
    pub batch_max: usize,
    /// Batch wait, at most 100ms; 0 publishes without waiting.
    pub batch_window: Duration,
    /// Publisher-confirm timeout, above 0 and at most 5 minutes.
    pub confirm_timeout: Duration,
    /// This node's number, 0..=1023; `None`: derived at start-up.
    pub node_id: Option<u16>,
}

/// Checks a broker URL (`amqp.url`, `--amqp-url`); usable as a clap
/// `value_parser`. Only `amqp://` is accepted: the AMQP client is built
/// without a TLS stack, so `amqps://` gets an error that says what to do
/// instead. The rest of the URL is checked by the client when it connects.
pub fn parse_amqp_url(url: &str) -> Result<String, String> {
    // RFC 3986 §3.1: schemes are case-insensitive.
    match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("amqp") => Ok(url.to_owned()),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("amqps") => Err(format!(
            "amqps:// is not supported: TLS to the broker is not compiled into \
             this build; connect with amqp:// through a TLS-terminating proxy \
             (such as stunnel) or over a private network, got {url:?}"
        )),
        _ => Err(format!(
            "expected a URL like amqp://user:pass@host:5672/%2f, got {url:?}"
        )),
    }
}

/// Checks a queue-name prefix (`amqp.prefix`, `--amqp-prefix`); usable as a
/// clap `value_parser`: 1 to 64 characters among `A-Z a-z 0-9 . _ -`, which
/// keeps queue names readable and free of quoting in `rabbitmqctl`.
pub fn parse_amqp_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Err("must not be empty".into());
    }
    if prefix.len() > defaults::MAX_PREFIX_LEN {
        return Err(format!(
            "must be at most {} characters, got {}",
            defaults::MAX_PREFIX_LEN,
            prefix.len()
        ));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "expected only letters, digits, '.', '_' and '-', got {prefix:?}"
        ));
    }
    Ok(prefix.to_owned())
}

impl Ctx<'_> {
    /// Phase 2 of `[queue]`.
    pub(super) fn queue(&self, q: RawQueue) -> QueueSettings {
        let (backend, _) = split(q.backend, defaults::BACKEND);
        QueueSettings { backend }
    }

    /// Phase 2 of `[amqp]`; the default tiers come from `delivery`'s retry
    /// delays.
    pub(super) fn amqp(
        &self,
        a: RawAmqp,
        delivery: &DeliverySettings,
    ) -> Result<AmqpSettings, ConfigError> {
        let checked = |value: Option<Spanned<String>>,
                       field: &str,
                       default: &str,
                       check: fn(&str) -> Result<String, String>| {
            let (text, span) = split(value, default.to_owned());
            check(&text).map_err(|m| self.error(span.as_ref(), field, m))
        };
        let url = checked(a.url, "amqp.url", defaults::URL, parse_amqp_url)?;
        let prefix = checked(a.prefix, "amqp.prefix", defaults::PREFIX, parse_amqp_prefix)?;
        let (queue_type, _) = split(a.queue_type, defaults::QUEUE_TYPE);
        let tiers = match a.tiers {
            None => defaults::tiers(delivery.retry_initial, delivery.retry_max),
            Some(list) => self.tiers(list)?,
        };
        let (prefetch, prefetch_span) = split(a.prefetch, defaults::PREFETCH);
        if prefetch == 0 {
            return Err(self.error(
                prefetch_span.as_ref(),
                "amqp.prefetch",
                "must be at least 1, got 0",
            ));
        }
        let (batch_max, batch_span) =
            self.at_least_one(a.batch_max, "amqp.batch_max", defaults::BATCH_MAX)?;
        if batch_max > defaults::MAX_BATCH_MAX {
            return Err(self.error(
                batch_span.as_ref(),
                "amqp.batch_max",
                format!(
                    "must be between 1 and {}, got {batch_max}",
                    defaults::MAX_BATCH_MAX
                ),
            ));
        }
        let (batch_window, window_span) =
            self.duration(a.batch_window, "amqp.batch_window", defaults::BATCH_WINDOW)?;
        if batch_window > defaults::MAX_BATCH_WINDOW {
            return Err(self.error(
                window_span.as_ref(),
                "amqp.batch_window",
                format!(
                    "must be between 0 and {}, got {}",
                    humantime::format_duration(defaults::MAX_BATCH_WINDOW),
                    humantime::format_duration(batch_window)
                ),
            ));
        }
        let (confirm_timeout, confirm_span) = self.duration(
            a.confirm_timeout,
            "amqp.confirm_timeout",
            defaults::CONFIRM_TIMEOUT,
        )?;
        if confirm_timeout.is_zero() || confirm_timeout > defaults::MAX_CONFIRM_TIMEOUT {
            return Err(self.error(
                confirm_span.as_ref(),
                "amqp.confirm_timeout",
                format!(
                    "must be above 0 and at most {}, got {}",
                    humantime::format_duration(defaults::MAX_CONFIRM_TIMEOUT),
                    humantime::format_duration(confirm_timeout)
                ),
            ));
        }
        let node_id = match a.node_id {
            Some(n) if *n.get_ref() > defaults::MAX_NODE_ID => {
                return Err(self.error(
                    Some(&n.span()),
                    "amqp.node_id",
                    format!(
                        "must be between 0 and {}, got {}",
                        defaults::MAX_NODE_ID,
                        n.get_ref()
                    ),
                ));
            }
            n => n.map(Spanned::into_inner),
        };
        Ok(AmqpSettings {
            url,
            prefix,
            queue_type,
            tiers,
            prefetch,
            batch_max,
            batch_window,
            confirm_timeout,
            node_id,
        })
    }

    /// `amqp.tiers` as written: each element parsed and checked where it
    /// stands, so an error names its line.
    fn tiers(&self, list: Spanned<Vec<Spanned<String>>>) -> Result<Vec<Duration>, ConfigError> {
        const FIELD: &str = "amqp.tiers";
        let list_span: Range<usize> = list.span();
        let items = list.into_inner();
        if items.is_empty() {
            return Err(self.error(
                Some(&list_span),
                FIELD,
                "must list at least one delay like \"5m\"",
            ));
        }
        if items.len() > defaults::MAX_TIERS {
            return Err(self.error(
                Some(&list_span),
                FIELD,
                format!(
                    "must list at most {} delays, got {}",
                    defaults::MAX_TIERS,
                    items.len()
                ),
            ));
        }
        let mut tiers: Vec<Duration> = Vec::with_capacity(items.len());
        for item in items {
            let span = item.span();
            let (tier, _) = self.duration(Some(item), FIELD, Duration::ZERO)?;
            let fmt = |d| humantime::format_duration(d).to_string();
            // Queue TTLs (x-message-ttl) are whole milliseconds.
            if tier < Duration::from_millis(1) || tier.subsec_nanos() % 1_000_000 != 0 {
                return Err(self.error(
                    Some(&span),
                    FIELD,
                    format!(
                        "expected a whole number of milliseconds, at least 1ms, got {}",
                        fmt(tier)
                    ),
                ));
            }
            if let Some(&before) = tiers.last()
                && tier <= before
            {
                return Err(self.error(
                    Some(&span),
                    FIELD,
                    format!(
                        "must be strictly increasing: {} does not follow {}",
                        fmt(tier),
                        fmt(before)
                    ),
                ));
            }
            tiers.push(tier);
        }
        Ok(tiers)
    }
}

impl QueueSettings {
    /// Back to the raw form, for `config check`.
    pub fn to_raw(self) -> RawQueue {
        RawQueue {
            backend: Some(Spanned::new(0..0, self.backend)),
        }
    }
}

impl AmqpSettings {
    /// Back to the raw form, for `config check`.
    pub fn to_raw(&self) -> RawAmqp {
        fn v<T>(value: T) -> Option<Spanned<T>> {
            Some(Spanned::new(0..0, value))
        }
        fn text(d: Duration) -> String {
            humantime::format_duration(d).to_string()
        }
        RawAmqp {
            url: v(self.url.clone()),
            prefix: v(self.prefix.clone()),
            queue_type: v(self.queue_type),
            tiers: v(self
                .tiers
                .iter()
                .map(|&d| Spanned::new(0..0, text(d)))
                .collect()),
            prefetch: v(self.prefetch),
            batch_max: v(self.batch_max),
            batch_window: v(text(self.batch_window)),
            confirm_timeout: v(text(self.confirm_timeout)),
            node_id: self.node_id.and_then(v),
        }
    }
}
