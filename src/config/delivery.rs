//! `[delivery]`: the delivery engine's settings (issue 3).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Ctx, split};

/// Defaults of `[delivery]`, in one place.
pub mod defaults {
    use std::time::Duration;

    /// Deliver what is queued; `false` runs a receive-only server.
    pub const ENABLED: bool = true;
    /// The standard SMTP port of mail exchangers (RFC 5321 §4.5.4).
    pub const MX_PORT: u16 = 25;
    /// RFC 5321 §4.5.3.2 leaves connect timeouts open; 30 s is common.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    /// RFC 5321 §4.5.3.2: 5 minutes for MAIL, RCPT and most replies.
    pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// RFC 5321 §4.5.3.2.6: 10 minutes for the reply to end of data.
    pub const DATA_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// Per destination, whole server (split across workers), like
    /// Postfix's default destination concurrency.
    pub const MAX_CONNECTIONS_PER_DESTINATION: usize = 20;
    /// Reuse a connection for this many messages, then open a fresh one.
    pub const MAX_MESSAGES_PER_CONNECTION: usize = 100;
    /// Keep an idle connection this long for the next message.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Postfix's minimal_backoff_time.
    pub const RETRY_INITIAL: Duration = Duration::from_secs(300);
    /// Postfix's maximal_backoff_time.
    pub const RETRY_MAX: Duration = Duration::from_secs(4 * 3600);
    /// Postfix's maximal_queue_lifetime.
    pub const GIVE_UP: Duration = Duration::from_secs(5 * 86_400);
    /// One JSON line per delivery attempt.
    pub const LOG: &str = "./var/log/delivery.log";
}

/// `[delivery]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Deliver queued mail (false: receive only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<Spanned<bool>>,
    /// Static routes: domain (or "*") to "ip:port"; they win over DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<BTreeMap<String, Spanned<String>>>,
    /// DNS servers as "ip:port"; empty: those of /etc/resolv.conf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Port used to reach mail exchangers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mx_port: Option<Spanned<u16>>,
    /// TCP connect timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Spanned<String>>,
    /// Timeout for each command's reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Spanned<String>>,
    /// Timeout for sending the content and its final reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_timeout: Option<Spanned<String>>,
    /// Connections per destination, whole server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_destination: Option<Spanned<usize>>,
    /// Messages per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_connection: Option<Spanned<usize>>,
    /// How long an idle connection is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Spanned<String>>,
    /// First retry delay; it doubles with each attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_initial: Option<Spanned<String>>,
    /// Longest retry delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max: Option<Spanned<String>>,
    /// Age at which a message still deferred is bounced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub give_up: Option<Spanned<String>>,
    /// Delivery log file; "" for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Spanned<String>>,
    /// Limits of particular domains: `[delivery.destinations."example.net"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<BTreeMap<String, RawDestination>>,
}

/// `[delivery.destinations."DOMAIN"]` as written: each key overrides the
/// default of `[delivery]` for mail to that domain.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Connections to the domain, whole server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<Spanned<usize>>,
    /// Messages per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_connection: Option<Spanned<usize>>,
    /// Messages per second to the domain, whole server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_second: Option<Spanned<u32>>,
}

/// Limits of one destination domain, validated (whole-server figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DestinationSettings {
    /// Connections.
    pub max_connections: usize,
    /// Messages per connection.
    pub max_messages_per_connection: usize,
    /// Messages per second; `None`: unlimited.
    pub max_messages_per_second: Option<u32>,
}

/// `[delivery]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliverySettings {
    /// Deliver queued mail.
    pub enabled: bool,
    /// Static routes, domain (lower-case) or "*" to address.
    pub routes: BTreeMap<String, SocketAddr>,
    /// DNS servers; empty: /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Port of mail exchangers.
    pub mx_port: u16,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Command reply timeout.
    pub command_timeout: Duration,
    /// Content and final reply timeout.
    pub data_timeout: Duration,
    /// Connections per destination, whole server.
    pub max_connections_per_destination: usize,
    /// Messages per connection.
    pub max_messages_per_connection: usize,
    /// Idle connection lifetime.
    pub idle_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Give-up age.
    pub give_up: Duration,
    /// Delivery log; `None` for none.
    pub log: Option<PathBuf>,
    /// Per-domain limits (lower-case domain).
    pub destinations: BTreeMap<String, DestinationSettings>,
}

impl Ctx<'_> {
    /// Phase 2 of `[delivery]`.
    pub(super) fn delivery(&self, d: RawDelivery) -> Result<DeliverySettings, ConfigError> {
        let (enabled, _) = split(d.enabled, defaults::ENABLED);
        let mut routes = BTreeMap::new();
        for (domain, target) in d.routes.unwrap_or_default() {
            let span = target.span();
            let addr: SocketAddr = target.get_ref().trim().parse().map_err(|_| {
                self.error(
                    Some(&span),
                    &format!("delivery.routes.{domain}"),
                    format!(
                        "expected an address like 127.0.0.1:25, got {:?}",
                        target.get_ref()
                    ),
                )
            })?;
            routes.insert(domain.to_ascii_lowercase(), addr);
        }
        let (nameservers, _) = self.list(
            d.nameservers,
            &[],
            "delivery.nameservers",
            "an address like 127.0.0.1:53",
            |s| s.parse::<SocketAddr>().ok(),
        )?;
        let (mx_port, mx_span) = split(d.mx_port, defaults::MX_PORT);
        if mx_port == 0 {
            return Err(self.error(mx_span.as_ref(), "delivery.mx_port", "must not be 0"));
        }
        let timeout = |v, field: &str, default| -> Result<Duration, ConfigError> {
            self.min_duration(self.duration(v, field, default)?, field)
        };
        let connect_timeout = timeout(
            d.connect_timeout,
            "delivery.connect_timeout",
            defaults::CONNECT_TIMEOUT,
        )?;
        let command_timeout = timeout(
            d.command_timeout,
            "delivery.command_timeout",
            defaults::COMMAND_TIMEOUT,
        )?;
        let data_timeout = timeout(
            d.data_timeout,
            "delivery.data_timeout",
            defaults::DATA_TIMEOUT,
        )?;
        let idle_timeout = timeout(
            d.idle_timeout,
            "delivery.idle_timeout",
            defaults::IDLE_TIMEOUT,
        )?;
        let retry_initial = timeout(
            d.retry_initial,
            "delivery.retry_initial",
            defaults::RETRY_INITIAL,
        )?;
        let (retry_max, max_span) =
            self.duration(d.retry_max, "delivery.retry_max", defaults::RETRY_MAX)?;
        if retry_max < retry_initial {
            return Err(self.error(
                max_span.as_ref(),
                "delivery.retry_max",
                "must not be shorter than retry_initial",
            ));
        }
        let give_up = timeout(d.give_up, "delivery.give_up", defaults::GIVE_UP)?;
        let (max_connections_per_destination, _) = self.at_least_one(
            d.max_connections_per_destination,
            "delivery.max_connections_per_destination",
            defaults::MAX_CONNECTIONS_PER_DESTINATION,
        )?;
        let (max_messages_per_connection, _) = self.at_least_one(
            d.max_messages_per_connection,
            "delivery.max_messages_per_connection",
            defaults::MAX_MESSAGES_PER_CONNECTION,
        )?;
        let (log, _) = split(d.log, defaults::LOG.to_string());
        let mut destinations = BTreeMap::new();
        for (domain, raw) in d.destinations.unwrap_or_default() {
            let field = |f: &str| format!("delivery.destinations.{domain}.{f}");
            let (max_connections, _) = self.at_least_one(
                raw.max_connections,
                &field("max_connections"),
                max_connections_per_destination,
            )?;
            let (max_messages, _) = self.at_least_one(
                raw.max_messages_per_connection,
                &field("max_messages_per_connection"),
                max_messages_per_connection,
            )?;
            let rate = match raw.max_messages_per_second {
                Some(r) if *r.get_ref() == 0 => {
                    return Err(self.error(
                        Some(&r.span()),
                        &field("max_messages_per_second"),
                        "must be at least 1",
                    ));
                }
                r => r.map(Spanned::into_inner),
            };
            destinations.insert(
                domain.to_ascii_lowercase(),
                DestinationSettings {
                    max_connections,
                    max_messages_per_connection: max_messages,
                    max_messages_per_second: rate,
                },
            );
        }
        Ok(DeliverySettings {
            enabled,
            routes,
            nameservers,
            mx_port,
            connect_timeout,
            command_timeout,
            data_timeout,
            max_connections_per_destination,
            max_messages_per_connection,
            idle_timeout,
            retry_initial,
            retry_max,
            give_up,
            log: (!log.is_empty()).then(|| PathBuf::from(log)),
            destinations,
        })
    }
}

impl DeliverySettings {
    /// Back to the raw form, for `config check`.
    pub fn to_raw(&self) -> RawDelivery {
        fn v<T>(value: T) -> Option<Spanned<T>> {
            Some(Spanned::new(0..0, value))
        }
        fn dur(d: Duration) -> Option<Spanned<String>> {
            v(humantime::format_duration(d).to_string())
        }
        RawDelivery {
            enabled: v(self.enabled),
            routes: Some(
                self.routes
                    .iter()
                    .map(|(d, a)| (d.clone(), Spanned::new(0..0, a.to_string())))
                    .collect(),
            ),
            nameservers: v(self
                .nameservers
                .iter()
                .map(|a| Spanned::new(0..0, a.to_string()))
                .collect()),
            mx_port: v(self.mx_port),
            connect_timeout: dur(self.connect_timeout),
            command_timeout: dur(self.command_timeout),
            data_timeout: dur(self.data_timeout),
            max_connections_per_destination: v(self.max_connections_per_destination),
            max_messages_per_connection: v(self.max_messages_per_connection),
            idle_timeout: dur(self.idle_timeout),
            retry_initial: dur(self.retry_initial),
            retry_max: dur(self.retry_max),
            give_up: dur(self.give_up),
            log: v(self
                .log
                .as_ref()
                .map_or_else(String::new, |p| p.to_string_lossy().into_owned())),
            destinations: Some(
                self.destinations
                    .iter()
                    .map(|(d, s)| {
                        let raw = RawDestination {
                            max_connections: v(s.max_connections),
                            max_messages_per_connection: v(s.max_messages_per_connection),
                            max_messages_per_second: s.max_messages_per_second.and_then(v),
                        };
                        (d.clone(), raw)
                    })
                    .collect(),
            ),
        }
    }
}
