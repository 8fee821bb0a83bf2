//! `tributary`: the command-line entry point.
//!
//! `serve` runs the HTTP API on the configured logs, `demo` runs it on a temporary directory and
//! sends bundled sample data through it, `config check` validates a configuration file, and
//! `events` reads the event log (or the quarantine) of a running server, `keys` manages the
//! API keys in the data directory, and `audit` verifies and exports the audit log.

mod audit;
mod demo;
mod destinations;
mod events;
mod identity;
mod import;
mod keys;
mod privacy;
mod profiles;
mod render;
mod schemas;
mod serve;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator (see BENCHMARKS.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tributary: a self-hosted customer-data hub for personalized email.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the API server: Segment-compatible ingestion, admin endpoints, metrics.
    Serve(serve::ServeArgs),
    /// Starts a server on a temporary directory, sends bundled sample data and prints a summary.
    Demo(demo::DemoArgs),
    /// Works with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Reads stored events (or quarantined messages) from a running server.
    Events {
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Lists, shows and replays quarantined messages of a running server.
    Quarantine {
        #[command(subcommand)]
        command: events::QuarantineCommand,
    },
    /// Imports CSV or NDJSON files for a source, with its [sources.import] mapping.
    Import(import::ImportArgs),
    /// Works with the schema registry's files.
    Schemas {
        #[command(subcommand)]
        command: schemas::SchemasCommand,
    },
    /// Golden profiles of a running server: show, list (change feed), events, explain, unmerge.
    Profiles {
        #[command(subcommand)]
        command: profiles::ProfilesCommand,
    },
    /// Privacy requests to a running server: consent history and recording, suppressions,
    /// erasure and subject access export; offline verification of signed receipts and exports.
    Privacy {
        #[command(subcommand)]
        command: privacy::PrivacyCommand,
    },
    /// API keys with scopes for the admin endpoints (create, list, revoke), and master key
    /// rotation for encryption at rest (rotate).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The audit log of every access to personal data: verify the chain, export it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Runs a stateful simulator of an ESP API (Mailchimp, HubSpot, SendGrid, a signed webhook)
    /// with its documented limits and optional fault injection, to test syncs offline.
    Simulate(simulate::SimulateArgs),
    /// Destinations of a running server: sync state, dead letters and their replay.
    Destinations {
        #[command(subcommand)]
        command: destinations::DestinationsCommand,
    },
    /// Email templates: `templates check` runs the static check offline.
    Templates {
        #[command(subcommand)]
        command: render::TemplatesCommand,
    },
    /// Renders a template for one person (--profile) or a matrix over stored profiles
    /// (--sample N) on a running server; --send has the server mail it to its seed list.
    Render(render::RenderArgs),
    /// Probabilistic matching on CSV files: dedupe, generate labelled data, evaluate, review.
    Identity {
        #[command(subcommand)]
        command: identity::IdentityCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validates a configuration file as `serve` would, and prints every problem with its path.
    Check {
        /// The tributary.toml to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every HTTPS client of the process (ESP connectors, the CLI's admin calls) uses rustls on
    // ring; reqwest is built without a provider of its own (see trib-sync's http.rs).
    trib_sync::http::install_tls_provider();
    // The demo prints its own summary; the server's info lines would drown it.
    init_tracing(if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    });
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check_config(&file),
        Command::Schemas { command } => schemas::run(command),
        Command::Keys { command } => keys::run(command),
        Command::Audit { command } => audit::run(command),
        Command::Templates { command } => render::run_templates(command),
        Command::Identity { command } if !command.needs_server() => identity::run(command),
        command => runtime().and_then(|runtime| {
            runtime.block_on(async move {
                match command {
                    Command::Serve(args) => serve::run(args).await,
                    Command::Demo(args) => demo::run(args).await,
                    Command::Events { command } => events::run(command).await,
                    Command::Quarantine { command } => events::run_quarantine(command).await,
                    Command::Import(args) => import::run(args).await,
                    Command::Profiles { command } => profiles::run(command).await,
                    Command::Privacy { command } => privacy::run(command).await,
                    Command::Destinations { command } => destinations::run(command).await,
                    Command::Simulate(args) => simulate::run(args).await,
                    Command::Identity { command } => identity::run_server(command).await,
                    Command::Render(args) => render::run_render(args).await,
                    Command::Config { .. }
                    | Command::Schemas { .. }
                    | Command::Keys { .. }
                    | Command::Audit { .. }
                    | Command::Templates { .. } => {
                        unreachable!("synchronous commands are handled above")
                    }
                }
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = trib_config::Config::load(file)?;
    println!(
        "{}: ok ({} source{}, log: {:?}, {} partitions)",
        file.display(),
        config.sources.len(),
        if config.sources.len() == 1 { "" } else { "s" },
        config.log.storage,
        config.log.partitions
    );
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
