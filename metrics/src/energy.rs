//! Energy and carbon estimates from measured CPU time, with the method
//! stated (sans-I/O: the model takes numbers; [`detect_cpu`] and
//! [`Rapl`] read the machine).
//!
//! **Energy.** Where the kernel exposes RAPL energy counters
//! (`/sys/class/powercap/intel-rapl:*/energy_uj`) and they can be read, the
//! host's measured energy of an interval is shared out by the process's
//! share of the CPU time the host used (as Scaphandre and Kepler do).
//! Otherwise the Cloud Carbon Footprint (CCF) linear model gives the host's
//! power from its utilisation: `W = vCPUs × (Wmin + u × (Wmax − Wmin))`,
//! with per-vCPU `Wmin`/`Wmax` from SPECpower as CCF publishes them for the
//! CPU family, and the process is charged its share of it the same way. So
//! the host's idle power is carried by the work it does, in proportion.
//! Memory adds CCF's 0.392 W per GB, for the process's resident memory.
//!
//! **Carbon.** `energy × PUE × grid intensity`, plus, optionally, embodied
//! emissions by the Green Software Foundation's SCI rule
//! `M = TE × (TiR / EL) × (RR / ToR)`: the machine's embodied emissions
//! `TE` over its expected life `EL` (4 years), for the time of the
//! interval `TiR`, in the share of the machine the process used `RR/ToR`
//! (its CPU time over the machine's CPU capacity).
//!
//! **SCI** (ISO/IEC 21031:2024): `(E × I + M) / R`, `R` = one message.

use std::fmt;
use std::time::Duration;

/// CCF's memory coefficient: watts per GB of memory.
pub const MEMORY_WATTS_PER_GB: f64 = 0.392;

/// CCF's power usage effectiveness for AWS, the default PUE.
pub const DEFAULT_PUE: f64 = 1.135;

/// The world's average carbon intensity of electricity generation in
/// 2023, 481 gCO2e/kWh (Ember, Global Electricity Review 2024): the
/// default grid intensity when the site's is not configured.
pub const DEFAULT_GRID_G_PER_KWH: f64 = 481.0;

/// Expected life of a server for embodied emissions (SCI's default).
pub const EMBODIED_LIFE: Duration = Duration::from_secs(4 * 365 * 86_400);

/// A CPU family with CCF coefficients (SPECpower, per vCPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuFamily {
    /// AMD EPYC 2nd generation (Zen 2, Rome): 0.47–1.69 W.
    AmdEpyc2,
    /// AMD EPYC 3rd generation (Zen 3, Milan): 0.45–2.02 W.
    AmdEpyc3,
    /// AMD EPYC 4th generation (Zen 4, Genoa): CCF publishes no figures;
    /// the 3rd generation's are used, and the label says so.
    AmdEpyc4,
    /// Intel Xeon Cascade Lake: 0.64–3.97 W.
    IntelCascadeLake,
    /// Intel Xeon Skylake: 0.65–4.26 W.
    IntelSkylake,
    /// Anything else: CCF's average, 0.74–3.5 W.
    Unknown,
}

impl CpuFamily {
    /// Every family, for configuration.
    pub const ALL: [CpuFamily; 6] = [
        CpuFamily::AmdEpyc2,
        CpuFamily::AmdEpyc3,
        CpuFamily::AmdEpyc4,
        CpuFamily::IntelCascadeLake,
        CpuFamily::IntelSkylake,
        CpuFamily::Unknown,
    ];

    /// Minimum and maximum watts per vCPU.
    pub fn watts(self) -> (f64, f64) {
        match self {
            CpuFamily::AmdEpyc2 => (0.47, 1.69),
            CpuFamily::AmdEpyc3 | CpuFamily::AmdEpyc4 => (0.45, 2.02),
            CpuFamily::IntelCascadeLake => (0.64, 3.97),
            CpuFamily::IntelSkylake => (0.65, 4.26),
            CpuFamily::Unknown => (0.74, 3.5),
        }
    }

    /// The name in configuration and method labels.
    pub fn name(self) -> &'static str {
        match self {
            CpuFamily::AmdEpyc2 => "amd-epyc-2",
            CpuFamily::AmdEpyc3 => "amd-epyc-3",
            CpuFamily::AmdEpyc4 => "amd-epyc-4",
            CpuFamily::IntelCascadeLake => "intel-cascade-lake",
            CpuFamily::IntelSkylake => "intel-skylake",
            CpuFamily::Unknown => "unknown",
        }
    }

    /// The family named `name` (see [`CpuFamily::name`]).
    pub fn from_name(name: &str) -> Option<CpuFamily> {
        CpuFamily::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl serde::Serialize for CpuFamily {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for CpuFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if *self == CpuFamily::AmdEpyc4 {
            f.write_str(" (3rd-gen coefficients)")?;
        }
        Ok(())
    }
}

/// The CPU family described by `/proc/cpuinfo`'s text (its first
/// processor): by vendor, family and model numbers, which name the
/// microarchitecture even where the model name does not (virtual machines
/// often show just "AMD EPYC").
pub fn family_of(cpuinfo: &str) -> CpuFamily {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let num = |key: &str| field(key).and_then(|v| v.parse::<u32>().ok());
    match (
        field("vendor_id").as_deref(),
        num("cpu family"),
        num("model"),
    ) {
        // AMD family 0x17: Zen/Zen+ below model 0x30, Zen 2 from it.
        (Some("AuthenticAMD"), Some(0x17), Some(m)) if m >= 0x30 => CpuFamily::AmdEpyc2,
        // Family 0x19: Zen 3 (Milan 0x01), Zen 4 (Genoa 0x10-0x1f).
        (Some("AuthenticAMD"), Some(0x19), Some(m)) if (0x10..0x20).contains(&m) => {
            CpuFamily::AmdEpyc4
        }
        (Some("AuthenticAMD"), Some(0x19), Some(_)) => CpuFamily::AmdEpyc3,
        // Intel family 6 model 0x55: Skylake-SP, or Cascade Lake-SP from
        // stepping 5.
        (Some("GenuineIntel"), Some(6), Some(0x55)) => match num("stepping") {
            Some(s) if s >= 5 => CpuFamily::IntelCascadeLake,
            _ => CpuFamily::IntelSkylake,
        },
        _ => CpuFamily::Unknown,
    }
}

/// This machine's CPU family, from `/proc/cpuinfo`.
pub fn detect_cpu() -> CpuFamily {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| family_of(&t))
        .unwrap_or(CpuFamily::Unknown)
}

/// The site's figures and the machine's, for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The CPU family (CCF coefficients).
    pub cpu: CpuFamily,
    /// The machine's vCPUs.
    pub vcpus: u32,
    /// Power usage effectiveness of the data centre.
    pub pue: f64,
    /// Grid carbon intensity, gCO2e per kWh.
    pub grid_g_per_kwh: f64,
    /// The machine's embodied emissions in grams CO2e (`TE`); `None`:
    /// embodied emissions not counted.
    pub embodied_g: Option<f64>,
    /// The local broker's CPU time is counted in (as queue work).
    pub broker_counted: bool,
}

/// How an interval's energy was arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Measured by RAPL, apportioned by CPU share.
    Rapl,
    /// CCF's linear model, apportioned by CPU share.
    Ccf(CpuFamily),
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Rapl => f.write_str("rapl"),
            Method::Ccf(cpu) => write!(f, "ccf-linear {cpu}"),
        }
    }
}

/// What the machine and the process did in one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Wall time.
    pub wall: Duration,
    /// The process's CPU time.
    pub process_cpu: Duration,
    /// CPU time the whole machine spent busy (all processes).
    pub host_busy_cpu: Duration,
    /// The process's resident memory, bytes.
    pub rss_bytes: u64,
    /// Host energy measured by RAPL, joules, if any.
    pub rapl_joules: Option<f64>,
}

/// The estimate for one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Joules charged to the process (CPU and memory), before PUE.
    pub joules: f64,
    /// Grams CO2e: operational (energy × PUE × grid) plus embodied.
    pub grams: f64,
    /// The embodied part of `grams`.
    pub embodied_grams: f64,
    /// How the energy was arrived at.
    pub method: Method,
}

impl Model {
    /// Estimates one interval.
    pub fn estimate(&self, iv: &Interval) -> Estimate {
        let wall = iv.wall.as_secs_f64();
        let cpu = iv.process_cpu.as_secs_f64();
        // The busy time can lag the process's own by a tick: never share
        // out more than all of it.
        let busy = iv.host_busy_cpu.as_secs_f64().max(cpu);
        let share = if busy > 0.0 { cpu / busy } else { 0.0 };
        let (cpu_joules, method) = match iv.rapl_joules {
            Some(host) => (host * share, Method::Rapl),
            None => {
                let (wmin, wmax) = self.cpu.watts();
                let capacity = f64::from(self.vcpus.max(1)) * wall;
                let utilisation = if capacity > 0.0 {
                    (busy / capacity).min(1.0)
                } else {
                    0.0
                };
                let host_watts =
                    f64::from(self.vcpus.max(1)) * (wmin + utilisation * (wmax - wmin));
                (host_watts * wall * share, Method::Ccf(self.cpu))
            }
        };
        let memory_joules = iv.rss_bytes as f64 / 1e9 * MEMORY_WATTS_PER_GB * wall;
        let joules = cpu_joules + memory_joules;
        let kwh = joules / 3.6e6;
        let embodied_grams = match self.embodied_g {
            Some(te) => {
                let capacity = f64::from(self.vcpus.max(1)) * wall;
                let reserved = if capacity > 0.0 { cpu / capacity } else { 0.0 };
                te * (wall / EMBODIED_LIFE.as_secs_f64()) * reserved
            }
            None => 0.0,
        };
        Estimate {
            joules,
            grams: kwh * self.pue * self.grid_g_per_kwh + embodied_grams,
            embodied_grams,
            method,
        }
    }

    /// The method note that goes with every figure.
    pub fn note(&self, method: Method) -> String {
        let embodied = match self.embodied_g {
            Some(te) => format!(
                "embodied {:.0} kgCO2e over 4 years by CPU share",
                te / 1000.0
            ),
            None => "no embodied emissions".into(),
        };
        let broker = if self.broker_counted {
            ", the local broker's CPU counted"
        } else {
            ""
        };
        format!(
            "energy: {method}, {} vCPUs, shared by CPU time{broker}, memory {MEMORY_WATTS_PER_GB} W/GB; \
             carbon: PUE {}, grid {} gCO2e/kWh, {embodied}",
            self.vcpus, self.pue, self.grid_g_per_kwh
        )
    }
}

/// The machine's RAPL package counters, where readable.
#[derive(Debug)]
pub struct Rapl {
    zones: Vec<(std::path::PathBuf, u64, u64)>,
}

impl Rapl {
    /// The top-level RAPL zones (`intel-rapl:N`), if any can be read: on
    /// many virtual machines there are none, or they are root-only.
    pub fn open() -> Option<Rapl> {
        let mut zones = Vec::new();
        for e in std::fs::read_dir("/sys/class/powercap").ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Top-level zones (intel-rapl:0), not their subzones, and of
            // those only CPU packages: a `psys` zone (the whole platform)
            // would count the packages twice.
            if !name.starts_with("intel-rapl:") || name.matches(':').count() != 1 {
                continue;
            }
            let zone = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
            if !zone.trim().starts_with("package") {
                continue;
            }
            let read = |f: &str| -> Option<u64> {
                std::fs::read_to_string(e.path().join(f))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            if let (Some(now), Some(range)) = (read("energy_uj"), read("max_energy_range_uj")) {
                zones.push((e.path().join("energy_uj"), now, range));
            }
        }
        (!zones.is_empty()).then_some(Rapl { zones })
    }

    /// Joules used by the machine since the last call (counters wrap at
    /// their range).
    pub fn joules(&mut self) -> f64 {
        let mut uj = 0u64;
        for (path, last, range) in &mut self.zones {
            let Some(now) = std::fs::read_to_string(&*path)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
            else {
                continue;
            };
            uj += if now >= *last {
                now - *last
            } else {
                *range - *last + now
            };
            *last = now;
        }
        uj as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPYC_GENOA_VM: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nstepping\t: 1\n";

    #[test]
    fn families_from_cpuinfo() {
        let cpu = |vendor: &str, family: u32, model: u32, stepping: u32| {
            family_of(&format!(
                "vendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\nstepping\t: {stepping}\n"
            ))
        };
        assert_eq!(family_of(EPYC_GENOA_VM), CpuFamily::AmdEpyc4);
        assert_eq!(cpu("AuthenticAMD", 25, 1, 1), CpuFamily::AmdEpyc3);
        assert_eq!(cpu("AuthenticAMD", 23, 49, 0), CpuFamily::AmdEpyc2);
        assert_eq!(cpu("AuthenticAMD", 23, 1, 2), CpuFamily::Unknown);
        assert_eq!(cpu("GenuineIntel", 6, 85, 7), CpuFamily::IntelCascadeLake);
        assert_eq!(cpu("GenuineIntel", 6, 85, 4), CpuFamily::IntelSkylake);
        assert_eq!(cpu("GenuineIntel", 6, 106, 6), CpuFamily::Unknown);
        assert_eq!(family_of(""), CpuFamily::Unknown);
        for f in CpuFamily::ALL {
            assert_eq!(CpuFamily::from_name(f.name()), Some(f));
        }
    }

    fn model() -> Model {
        Model {
            cpu: CpuFamily::Unknown,
            vcpus: 2,
            pue: 1.0,
            grid_g_per_kwh: 1000.0,
            embodied_g: None,
            broker_counted: false,
        }
    }

    #[test]
    fn ccf_linear_by_hand() {
        // 2 vCPUs, 10 s, the host busy 10 CPU-s (50%), the process 5 of
        // them: host power 2 × (0.74 + 0.5 × 2.76) = 4.24 W, 42.4 J in the
        // interval, half of it the process's.
        let iv = Interval {
            wall: Duration::from_secs(10),
            process_cpu: Duration::from_secs(5),
            host_busy_cpu: Duration::from_secs(10),
            rss_bytes: 0,
            rapl_joules: None,
        };
        let e = model().estimate(&iv);
        assert!((e.joules - 21.2).abs() < 1e-9, "{e:?}");
        // 21.2 J = 5.89e-6 kWh, at 1000 g/kWh.
        assert!((e.grams - 21.2 / 3.6e6 * 1000.0).abs() < 1e-12);
        assert_eq!(e.method, Method::Ccf(CpuFamily::Unknown));
        // Memory: 1 GB for 10 s at 0.392 W/GB.
        let mem = model().estimate(&Interval {
            rss_bytes: 1_000_000_000,
            ..iv
        });
        assert!((mem.joules - 21.2 - 3.92).abs() < 1e-9);
    }

    #[test]
    fn rapl_is_shared_by_cpu_time_and_pue_and_embodied_add() {
        let iv = Interval {
            wall: Duration::from_secs(1),
            process_cpu: Duration::from_millis(250),
            host_busy_cpu: Duration::from_secs(1),
            rss_bytes: 0,
            rapl_joules: Some(100.0),
        };
        let m = Model {
            pue: 1.5,
            embodied_g: Some(EMBODIED_LIFE.as_secs_f64() * 2.0),
            ..model()
        };
        let e = m.estimate(&iv);
        assert_eq!(e.method, Method::Rapl);
        assert!((e.joules - 25.0).abs() < 1e-9);
        // Embodied: 2 g per second of life for the whole machine; the
        // process used 0.25 of 2 vCPU-seconds.
        assert!((e.embodied_grams - 2.0 * 0.125).abs() < 1e-9, "{e:?}");
        let operational = 25.0 / 3.6e6 * 1.5 * 1000.0;
        assert!((e.grams - operational - e.embodied_grams).abs() < 1e-12);
        assert!(m.note(e.method).contains("rapl"));
    }

    #[test]
    fn an_idle_interval_without_memory_costs_nothing() {
        let e = model().estimate(&Interval {
            wall: Duration::from_secs(1),
            process_cpu: Duration::ZERO,
            host_busy_cpu: Duration::ZERO,
            rss_bytes: 0,
            rapl_joules: None,
        });
        assert_eq!(e.joules, 0.0);
        assert_eq!(e.grams, 0.0);
    }
}
