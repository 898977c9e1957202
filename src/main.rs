//! `verdant`: the one binary. Command line, configuration, per-core runtime
//! start-up and wiring of the library crates.

mod config;
mod control;
mod footprint_cmd;
mod queue_cmd;
mod serve;
mod sink_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use verdant_engine::engine::Control;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Verdant: a fast, frugal mail transfer agent.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the MTA: receive mail over SMTP into the durable queue and
    /// deliver it.
    Serve(ServeArgs),
    /// Run an SMTP receiver that queues on the broker (scale-out).
    Receiver(ReceiverArgs),
    /// Run a delivery engine that takes mail from the broker (scale-out).
    Engine(EngineArgs),
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Look inside the queue (works beside a running server).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// An SMTP server that accepts and discards mail, for tests and benchmarks.
    Sink(sink_cmd::SinkArgs),
    /// About the metrics Verdant exports.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// A period's footprint from the ledger (messages, CPU, energy,
    /// carbon, per message), for CSR reports.
    Footprint(FootprintArgs),
}

#[derive(Args)]
struct FootprintArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The ledger to read (default: footprint.ledger of the configuration).
    #[arg(long, value_name = "FILE")]
    ledger: Option<std::path::PathBuf>,
    /// Start of the period (inclusive), UTC: 2026-12-01 or 2026-12-01T13:00:00Z.
    #[arg(long, value_name = "DATE")]
    from: String,
    /// End of the period (exclusive), UTC.
    #[arg(long, value_name = "DATE")]
    to: String,
    /// One row per sender domain.
    #[arg(long, value_name = "WHAT", value_parser = ["domain"])]
    by: Option<String>,
    /// How to print it.
    #[arg(long, value_enum, default_value = "table")]
    format: footprint_cmd::Format,
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// Print every metric: name, kind, unit, labels and meaning.
    List,
}

/// Where the configuration comes from, and the common overrides.
#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (TOML). Without it, the built-in defaults apply.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Spool directory (overrides spool.dir).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on for SMTP (repeatable; replaces server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Worker threads, one runtime each (0: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    #[command(flatten)]
    delivery: DeliveryArgs,
    /// Where accepted mail is queued (overrides queue.backend).
    #[arg(long, value_name = "BACKEND")]
    queue: Option<config::QueueBackend>,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct ReceiverArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on for SMTP (repeatable; replaces server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Worker threads, one runtime each (0: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct EngineArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Worker threads, one runtime each (0: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Where mail goes.
#[derive(Args)]
struct DeliveryArgs {
    /// Static route, DOMAIN (or *) to HOST:PORT (repeatable; added to
    /// delivery.routes).
    #[arg(long, value_name = "DOMAIN=HOST:PORT", value_parser = parse_route)]
    route: Vec<(String, SocketAddr)>,
    /// DNS server for MX lookups (repeatable; replaces delivery.nameservers).
    #[arg(long, value_name = "HOST:PORT")]
    dns: Vec<SocketAddr>,
}

/// The broker.
#[derive(Args)]
struct AmqpArgs {
    /// Broker URL, amqp://USER:PASS@HOST:PORT/VHOST (overrides amqp.url).
    #[arg(long, value_name = "URL", value_parser = config::parse_amqp_url)]
    amqp_url: Option<String>,
    /// First part of the broker's queue names (overrides amqp.prefix).
    #[arg(long, value_name = "PREFIX", value_parser = config::parse_amqp_prefix)]
    amqp_prefix: Option<String>,
}

/// The metrics endpoint.
#[derive(Args)]
struct MetricsArgs {
    /// Serve /metrics on ADDR ("" for none; overrides metrics.listen).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_listen)]
    metrics_listen: Option<MetricsListen>,
}

/// `--metrics-listen`: an address, or none.
#[derive(Clone)]
struct MetricsListen(Option<SocketAddr>);

fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    match s.trim() {
        "" => Ok(MetricsListen(None)),
        a => a
            .parse()
            .map(|a| MetricsListen(Some(a)))
            .map_err(|e| format!("{a:?}: {e}")),
    }
}

/// The overrides every process on the broker takes: where the broker is,
/// its queues' prefix, the metrics endpoint.
fn broker_and_metrics(amqp: AmqpArgs, metrics: MetricsArgs) -> config::Overrides {
    config::Overrides {
        amqp_url: amqp.amqp_url,
        amqp_prefix: amqp.amqp_prefix,
        metrics_listen: metrics.metrics_listen.map(|m| m.0),
        ..Default::default()
    }
}

fn parse_route(s: &str) -> Result<(String, SocketAddr), String> {
    let (domain, addr) = s.split_once('=').ok_or("expected DOMAIN=HOST:PORT")?;
    let addr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    if domain.is_empty() {
        return Err("empty domain".into());
    }
    Ok((domain.to_string(), addr))
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, or the errors in it.
    Check(ConfigArgs),
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List the messages waiting in the queue, oldest first.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: its envelope, state and content.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        /// The queue id (as `queue list` prints it).
        id: String,
    },
    /// Try deferred messages now (on the running server).
    Retry {
        #[command(flatten)]
        config: ConfigArgs,
        /// The queue id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every deferred message.
        #[arg(long)]
        all: bool,
    },
    /// Drop a deferred message from the queue (on the running server).
    Remove {
        #[command(flatten)]
        config: ConfigArgs,
        /// The queue id.
        id: String,
        /// Tell the sender: send a bounce saying the message was removed.
        #[arg(long)]
        bounce: bool,
    },
}

impl ConfigArgs {
    fn settings(&self, overrides: config::Overrides) -> anyhow::Result<config::Settings> {
        if let Some(w) = overrides.workers
            && w > config::defaults::MAX_WORKERS
        {
            anyhow::bail!(
                "--workers: at most {}, got {w}",
                config::defaults::MAX_WORKERS
            );
        }
        let mut settings = config::load(self.config.as_deref())?;
        settings.apply(&config::Overrides {
            spool: self.spool.clone(),
            ..overrides
        });
        Ok(settings)
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args
            .config
            .settings(config::Overrides {
                listen: args.listen,
                workers: args.workers,
                routes: args.delivery.route,
                nameservers: args.delivery.dns,
                queue: args.queue,
                ..broker_and_metrics(args.amqp, args.metrics)
            })
            .and_then(|s| serve::run(s, serve::Role::Both)),
        Command::Receiver(args) => args
            .config
            .settings(config::Overrides {
                listen: args.listen,
                workers: args.workers,
                queue: Some(config::QueueBackend::Amqp),
                ..broker_and_metrics(args.amqp, args.metrics)
            })
            .and_then(|s| serve::run(s, serve::Role::Receiver)),
        Command::Engine(args) => args
            .config
            .settings(config::Overrides {
                workers: args.workers,
                routes: args.delivery.route,
                nameservers: args.delivery.dns,
                queue: Some(config::QueueBackend::Amqp),
                ..broker_and_metrics(args.amqp, args.metrics)
            })
            .and_then(|s| serve::run(s, serve::Role::Engine)),
        Command::Config(ConfigCommand::Check(args)) => args
            .settings(config::Overrides::default())
            .map(|s| print!("{}", s.to_toml())),
        Command::Queue(QueueCommand::List { config, json }) => config
            .settings(config::Overrides::default())
            .and_then(|s| queue_cmd::list(&s.spool.dir, json)),
        Command::Queue(QueueCommand::Show { config, id }) => config
            .settings(config::Overrides::default())
            .and_then(|s| queue_cmd::show(&s.spool.dir, &id)),
        Command::Queue(QueueCommand::Retry { config, id, all: _ }) => config
            .settings(config::Overrides::default())
            .and_then(|s| queue_cmd::control(&s.spool.dir, Control::Retry { id })),
        Command::Queue(QueueCommand::Remove { config, id, bounce }) => config
            .settings(config::Overrides::default())
            .and_then(|s| queue_cmd::control(&s.spool.dir, Control::Remove { id, bounce })),
        Command::Sink(args) => sink_cmd::run(args),
        Command::Footprint(args) => {
            args.config
                .settings(config::Overrides::default())
                .and_then(|s| {
                    let path = match (args.ledger, s.footprint.ledger) {
                        (Some(p), _) | (None, Some(p)) => p,
                        (None, None) => anyhow::bail!(
                            "no ledger: footprint.ledger is \"\" and no --ledger was given"
                        ),
                    };
                    footprint_cmd::run(&path, &args.from, &args.to, args.by.is_some(), args.format)
                })
        }
        Command::Metrics(MetricsCommand::List) => {
            print!("{}", verdant_metrics::catalog::list());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("verdant: {e:#}");
        std::process::exit(1);
    }
}
