//! `[metrics]`: where Prometheus scrapes Verdant (issue 5).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Ctx, split};

/// Defaults of `[metrics]`, in one place.
pub mod defaults {
    /// Measure and export by default: what Verdant is for.
    pub const ENABLED: bool = true;
    /// The scrape endpoint: loopback only (nothing is exposed unless asked
    /// for); 9464 is outside the ports of Prometheus' own exporters.
    pub const LISTEN: &str = "127.0.0.1:9464";
}

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Measure CPU per message and export metrics at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<Spanned<bool>>,
    /// "ip:port" of the `/metrics` HTTP listener; "" for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<String>>,
}

/// `[metrics]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsSettings {
    /// Measure and export (false: no accountant, no endpoint; for
    /// measuring what measuring costs).
    pub enabled: bool,
    /// Where `/metrics` is served; `None`: not at all (CPU accounting still
    /// runs).
    pub listen: Option<SocketAddr>,
}

impl Ctx<'_> {
    /// Phase 2 of `[metrics]`.
    pub(super) fn metrics(&self, m: RawMetrics) -> Result<MetricsSettings, ConfigError> {
        let (enabled, _) = split(m.enabled, defaults::ENABLED);
        let (listen, span) = split(m.listen, defaults::LISTEN.to_owned());
        let listen = match listen.trim() {
            "" => None,
            text => Some(text.parse().map_err(|_| {
                self.error(
                    span.as_ref(),
                    "metrics.listen",
                    format!("expected \"ip:port\" or \"\" for none, got {text:?}"),
                )
            })?),
        };
        Ok(MetricsSettings { enabled, listen })
    }
}

impl MetricsSettings {
    /// Back to the raw form, for `config check`.
    pub fn to_raw(self) -> RawMetrics {
        RawMetrics {
            enabled: Some(Spanned::new(0..0, self.enabled)),
            listen: Some(Spanned::new(
                0..0,
                self.listen.map(|a| a.to_string()).unwrap_or_default(),
            )),
        }
    }
}
