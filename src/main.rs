//! `verdant`: the one binary. Command line, configuration, per-core runtime
//! start-up and wiring of the library crates.

mod config;
mod queue_cmd;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Run the MTA: receive mail over SMTP into the durable queue.
    Serve(ServeArgs),
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Look inside the queue (works beside a running server).
    #[command(subcommand)]
    Queue(QueueCommand),
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
}

impl ConfigArgs {
    fn settings(
        &self,
        listen: Vec<SocketAddr>,
        workers: Option<usize>,
    ) -> anyhow::Result<config::Settings> {
        let mut settings = config::load(self.config.as_deref())?;
        settings.apply(&config::Overrides {
            listen,
            spool: self.spool.clone(),
            workers,
        });
        Ok(settings)
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args
            .config
            .settings(args.listen, args.workers)
            .and_then(serve::run),
        Command::Config(ConfigCommand::Check(args)) => args
            .settings(Vec::new(), None)
            .map(|s| print!("{}", s.to_toml())),
        Command::Queue(QueueCommand::List { config, json }) => config
            .settings(Vec::new(), None)
            .and_then(|s| queue_cmd::list(&s.spool.dir, json)),
        Command::Queue(QueueCommand::Show { config, id }) => config
            .settings(Vec::new(), None)
            .and_then(|s| queue_cmd::show(&s.spool.dir, &id)),
    };
    if let Err(e) = result {
        eprintln!("verdant: {e:#}");
        std::process::exit(1);
    }
}
