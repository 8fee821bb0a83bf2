//! `tributary schemas list|show|publish|check`: the schema registry's files.
//!
//! Schemas are code: JSON Schema files under the configuration's `schemas/` directory, reviewed
//! and versioned like the rest of the configuration. These commands work on that directory; a
//! running server loads it at start, and `POST /v1/schemas` publishes to a running server.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use trib_schema::{Registry, SchemaVer, Subject};

/// Subcommands of `tributary schemas`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SchemasCommand {
    /// Lists every schema version.
    List(DirArgs),
    /// Prints one schema document (the newest version unless --version).
    Show {
        #[command(flatten)]
        dir: DirArgs,
        /// The event name, or `traits` for the trait schema.
        subject: String,
        /// A version such as 1-0-2.
        #[arg(long)]
        version: Option<String>,
    },
    /// Publishes a schema document after checking its version and compatibility.
    Publish {
        #[command(flatten)]
        dir: DirArgs,
        /// The JSON Schema document, with a `self` object naming its subject and version.
        file: PathBuf,
        /// Only check; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Checks that every stored version loads and follows the versioning rules.
    Check(DirArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct DirArgs {
    /// The configuration whose schema directory to use.
    #[arg(long, short, conflicts_with = "dir")]
    config: Option<PathBuf>,
    /// The schema directory itself.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl DirArgs {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        match (&self.dir, &self.config) {
            (Some(dir), _) => Ok(dir.clone()),
            (None, Some(config)) => Ok(trib_config::Config::load(config)?.schemas_dir),
            (None, None) => Ok(PathBuf::from("schemas")),
        }
    }
}

pub(crate) fn run(command: SchemasCommand) -> anyhow::Result<()> {
    match command {
        SchemasCommand::List(dir) => {
            let registry = open(&dir.resolve()?)?;
            for info in registry.list() {
                println!("{}\t{}", describe(&info.subject), info.version);
            }
            Ok(())
        }
        SchemasCommand::Show {
            dir,
            subject,
            version,
        } => {
            let registry = open(&dir.resolve()?)?;
            let subject = subject_of(&subject);
            let version = version.map(|text| text.parse::<SchemaVer>()).transpose()?;
            let Some(schema) = registry.get(&subject, version.as_ref()) else {
                bail!(
                    "no schema for {subject}{}",
                    version
                        .map(|v| format!(" at version {v}"))
                        .unwrap_or_default()
                );
            };
            println!("{}", serde_json::to_string_pretty(schema.document())?);
            Ok(())
        }
        SchemasCommand::Publish { dir, file, dry_run } => {
            let dir = dir.resolve()?;
            let mut registry = open(&dir)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("failed to read {}", file.display()))?;
            let document: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let plan = if dry_run {
                registry.check_publish_document(&document)?
            } else {
                registry.publish_document(&document)?
            };
            println!(
                "{} {} {}: {:?}{}",
                if dry_run {
                    "would publish"
                } else {
                    "published"
                },
                describe(&plan.subject),
                plan.version,
                plan.change,
                plan.path
                    .map(|path| format!(" ({})", path.display()))
                    .unwrap_or_default()
            );
            for breaking in &plan.breaking {
                println!("  breaking: {breaking}");
            }
            for warning in &plan.warnings {
                println!("  warning: {warning}");
            }
            Ok(())
        }
        SchemasCommand::Check(dir) => {
            let dir = dir.resolve()?;
            let problems = trib_schema::check_dir(&dir)?;
            if problems.is_empty() {
                println!("{}: ok", dir.display());
                return Ok(());
            }
            for problem in &problems {
                eprintln!("{problem}");
            }
            bail!(
                "{} problem{} in {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                dir.display()
            )
        }
    }
}

fn open(dir: &Path) -> anyhow::Result<Registry> {
    Registry::open(dir).with_context(|| format!("failed to load the schemas in {}", dir.display()))
}

fn subject_of(text: &str) -> Subject {
    if text == "traits" {
        Subject::Traits
    } else {
        Subject::Event(text.to_owned())
    }
}

fn describe(subject: &Subject) -> String {
    match subject {
        Subject::Event(name) => name.clone(),
        Subject::Traits => "traits".to_owned(),
    }
}
