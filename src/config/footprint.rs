//! `[footprint]`: how energy and carbon are estimated, and where the
//! footprint ledger is kept (issue 5). The method and its sources are in
//! `verdant_metrics::energy`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use verdant_metrics::energy::{self, CpuFamily};

use super::{ConfigError, Ctx, split};

/// Defaults of `[footprint]`, in one place.
pub mod defaults {
    /// Detect the CPU family from /proc/cpuinfo.
    pub const CPU: &str = "auto";
    /// CCF's PUE for AWS.
    pub const PUE: f64 = verdant_metrics::energy::DEFAULT_PUE;
    /// World average 2023, Ember (Global Electricity Review 2024).
    pub const GRID_INTENSITY: f64 = verdant_metrics::energy::DEFAULT_GRID_G_PER_KWH;
    /// Embodied emissions not counted unless the machine's are known.
    pub const EMBODIED_KGCO2E: f64 = 0.0;
    /// One JSON line per hour and sender domain.
    pub const LEDGER: &str = "./var/footprint/ledger.jsonl";
}

/// `[footprint]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFootprint {
    /// "auto" or a CPU family (amd-epyc-2, amd-epyc-3, amd-epyc-4,
    /// intel-cascade-lake, intel-skylake, unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Spanned<String>>,
    /// Power usage effectiveness of the data centre.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pue: Option<Spanned<f64>>,
    /// Grid carbon intensity of the site, gCO2e per kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_intensity: Option<Spanned<f64>>,
    /// The machine's embodied emissions, kg CO2e (0: not counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embodied_kgco2e: Option<Spanned<f64>>,
    /// The footprint ledger's path; "" for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Spanned<String>>,
    /// On the broker: count the local RabbitMQ's CPU time in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_broker: Option<Spanned<bool>>,
}

/// `[footprint]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FootprintSettings {
    /// `None`: detected at start.
    pub cpu: Option<CpuFamily>,
    /// At least 1.
    pub pue: f64,
    /// gCO2e per kWh, at least 0.
    pub grid_intensity: f64,
    /// kg CO2e, at least 0 (0: not counted).
    pub embodied_kgco2e: f64,
    /// `None`: no ledger.
    pub ledger: Option<PathBuf>,
    /// Count the CPU time of the RabbitMQ on this host (`beam.smp`) as
    /// this process's queue work (processes on the broker only).
    pub count_broker: bool,
}

impl Ctx<'_> {
    /// Phase 2 of `[footprint]`.
    pub(super) fn footprint(&self, f: RawFootprint) -> Result<FootprintSettings, ConfigError> {
        let (cpu, cpu_span) = split(f.cpu, defaults::CPU.to_owned());
        let cpu = match cpu.as_str() {
            "auto" => None,
            name => Some(CpuFamily::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = CpuFamily::ALL.iter().map(|c| c.name()).collect();
                self.error(
                    cpu_span.as_ref(),
                    "footprint.cpu",
                    format!(
                        "expected \"auto\" or one of {}, got {name:?}",
                        names.join(", ")
                    ),
                )
            })?),
        };
        let number = |v: Option<Spanned<f64>>, field: &str, default: f64, min: f64| {
            let (x, span) = split(v, default);
            if !x.is_finite() || x < min {
                return Err(self.error(
                    span.as_ref(),
                    field,
                    format!("must be a number of at least {min}, got {x}"),
                ));
            }
            Ok(x)
        };
        let pue = number(f.pue, "footprint.pue", defaults::PUE, 1.0)?;
        let grid_intensity = number(
            f.grid_intensity,
            "footprint.grid_intensity",
            defaults::GRID_INTENSITY,
            0.0,
        )?;
        let embodied_kgco2e = number(
            f.embodied_kgco2e,
            "footprint.embodied_kgco2e",
            defaults::EMBODIED_KGCO2E,
            0.0,
        )?;
        let (ledger, _) = split(f.ledger, defaults::LEDGER.to_owned());
        let (count_broker, _) = split(f.count_broker, false);
        Ok(FootprintSettings {
            count_broker,
            cpu,
            pue,
            grid_intensity,
            embodied_kgco2e,
            ledger: (!ledger.is_empty()).then(|| PathBuf::from(ledger)),
        })
    }
}

impl FootprintSettings {
    /// The model for this machine (`vcpus`: its CPUs).
    pub fn model(&self, vcpus: u32) -> energy::Model {
        energy::Model {
            cpu: self.cpu.unwrap_or_else(energy::detect_cpu),
            vcpus,
            pue: self.pue,
            grid_g_per_kwh: self.grid_intensity,
            embodied_g: (self.embodied_kgco2e > 0.0).then_some(self.embodied_kgco2e * 1000.0),
            broker_counted: false,
        }
    }

    /// Back to the raw form, for `config check`.
    pub fn to_raw(&self) -> RawFootprint {
        fn v<T>(value: T) -> Option<Spanned<T>> {
            Some(Spanned::new(0..0, value))
        }
        RawFootprint {
            cpu: v(self.cpu.map_or(defaults::CPU, CpuFamily::name).to_owned()),
            pue: v(self.pue),
            grid_intensity: v(self.grid_intensity),
            embodied_kgco2e: v(self.embodied_kgco2e),
            ledger: v(self
                .ledger
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()),
            count_broker: v(self.count_broker),
        }
    }
}
