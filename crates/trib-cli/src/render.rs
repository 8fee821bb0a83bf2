//! `tributary templates check` (offline static check of the templates directory) and
//! `tributary render TEMPLATE --profile ID_OR_EMAIL | --sample N [--send]` (a preview or a
//! render matrix from a running server, which checks consent and records the access; `--send`
//! asks the server to render and mail the email to its seed list, `POST /v1/render/send`, so
//! the server records a send).
//!
//! Also builds the server's [`trib_api::RenderState`] from the configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use trib_config::Config;
use trib_render::{
    CheckOptions, Compiler, Limits, PurposeFields, Severity, SmtpSecurity, SmtpSettings, Templates,
    Vocabulary,
};

use crate::events::send_json;
use crate::profiles::Connect;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TemplatesCommand {
    /// Checks every template (or the named ones) against the trait schema, the identifier types,
    /// the event schemas and the fields each purpose allows; prints every problem with its
    /// part, line and column, and fails on errors.
    Check {
        /// The configuration (templates dir, schemas dir, purposes, [render]); without it,
        /// ./templates and ./schemas with the default purposes.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Template names (files NAME.toml); all when absent.
        names: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct RenderArgs {
    #[command(flatten)]
    connect: Connect,
    /// The template's name (NAME.toml in the server's templates directory).
    template: String,
    /// The person: a profile id (p_...), an email address, or a user id.
    #[arg(long, conflicts_with = "sample", required_unless_present = "sample")]
    profile: Option<String>,
    /// Render for N stored profiles (sparse and rich) and report the fallbacks that fired and
    /// the fields that were missing.
    #[arg(long)]
    sample: Option<usize>,
    /// Have the server send the email to its `[render.seed_list]` over its `[render.smtp]`
    /// (`POST /v1/render/send`, scope `templates:send`; audited by the server as a send).
    #[arg(long, conflicts_with = "sample")]
    send: bool,
}

/// The compiler for a configuration: its schemas, identifier types, purposes and `[render]`.
pub(crate) fn compiler_for(config: &Config, registry: &trib_schema::Registry) -> Compiler {
    let vocabulary = Vocabulary::from_registry(
        registry,
        config.identity.types.iter().map(|kind| kind.name.clone()),
    );
    let mut fields = PurposeFields::default();
    for purpose in &config.privacy.purposes {
        fields.declare(
            &purpose.name,
            config.render.purpose_fields.get(&purpose.name).cloned(),
        );
    }
    let options = CheckOptions {
        missing_default: match config.render.missing_default {
            trib_config::MissingDefault::Error => Severity::Error,
            trib_config::MissingDefault::Warning => Severity::Warning,
        },
    };
    Compiler::new(vocabulary, fields, options, Limits::default())
}

/// The server's rendering state: every template of the templates directory that compiles
/// (the others are logged by name and skipped; `tributary templates check` shows why).
pub(crate) fn render_state(
    config: &Config,
    registry: &trib_schema::Registry,
    gatekeeper: trib_consent::Gatekeeper,
) -> anyhow::Result<trib_api::RenderState> {
    let compiler = compiler_for(config, registry);
    let sources = if config.templates_dir.is_dir() {
        trib_render::source::load_dir(&config.templates_dir)?
    } else {
        Vec::new()
    };
    let (templates, failures) = Templates::compile_all(&compiler, &sources, None);
    for failure in &failures {
        tracing::warn!(error = %failure, "template skipped; run `tributary templates check`");
    }
    tracing::info!(
        n_templates = templates.names().count(),
        n_skipped = failures.len(),
        "templates compiled"
    );
    let seeds = match (&config.render.smtp, config.render.seed_list.is_empty()) {
        (Some(_), false) => Some(trib_api::SeedSend {
            to: config.render.seed_list.clone(),
            smtp: smtp_settings(config)?,
        }),
        _ => None,
    };
    Ok(trib_api::RenderState {
        compiler,
        templates: std::sync::RwLock::new(templates),
        templates_dir: Some(config.templates_dir.clone()),
        gatekeeper,
        seeds,
    })
}

pub(crate) fn run_templates(command: TemplatesCommand) -> anyhow::Result<()> {
    let TemplatesCommand::Check { config, names } = command;
    let config = match &config {
        Some(path) => Config::load(path)?,
        None => {
            let mut config = Config::default_for(Path::new("."), &|_| Some("unused".to_owned()))
                .map(|(config, _)| config)?;
            config.schemas_dir = PathBuf::from("schemas");
            config.templates_dir = PathBuf::from("templates");
            config
        }
    };
    let registry = trib_schema::Registry::load(&config.schemas_dir).with_context(|| {
        format!(
            "failed to load the schema registry in {}",
            config.schemas_dir.display()
        )
    })?;
    let compiler = compiler_for(&config, &registry);
    let sources = trib_render::source::load_dir(&config.templates_dir)?;
    let mut n_errors = 0;
    let mut n_checked = 0;
    for source in &sources {
        if !names.is_empty() && !names.contains(&source.name) {
            continue;
        }
        n_checked += 1;
        let diagnostics = compiler.check(source);
        let errors = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        for diagnostic in &diagnostics {
            println!("{diagnostic}");
        }
        // The MJML compile can fail even when the Liquid is clean.
        if errors == 0
            && let Err(error) = compiler.compile(source)
        {
            println!(
                "{} {}: error: {error}",
                source.name,
                source.body.part_name()
            );
            n_errors += 1;
        }
        if diagnostics.is_empty() {
            println!(
                "{}: ok (purpose {}, version {})",
                source.name, source.purpose, source.version
            );
        }
        n_errors += errors;
    }
    if n_checked == 0 {
        bail!(
            "no templates to check in {}",
            config.templates_dir.display()
        );
    }
    if n_errors > 0 {
        bail!("{n_errors} error(s) in {n_checked} template(s)");
    }
    Ok(())
}

pub(crate) async fn run_render(args: RenderArgs) -> anyhow::Result<()> {
    let mut body = json!({"template": args.template});
    match (&args.profile, args.sample) {
        (Some(person), None) => {
            if person.starts_with("p_") {
                body["profile_id"] = json!(person);
            } else if person.contains('@') {
                body["identifier"] = json!({"type": "email", "value": person});
            } else {
                body["identifier"] = json!({"type": "user_id", "value": person});
            }
        }
        (None, Some(sample)) => body["sample"] = json!(sample),
        _ => bail!("give --profile or --sample"),
    }
    let route = if args.send {
        "/v1/render/send"
    } else {
        "/v1/render"
    };
    let (request, url) = args.connect.request(reqwest::Method::POST, route)?;
    let answer: Value = send_json(request.json(&body), &url).await?;
    if args.sample.is_some() {
        print_matrix(&answer);
        return Ok(());
    }
    let text = |key: &str| answer[key].as_str().unwrap_or_default().to_owned();
    println!(
        "template: {} (version {}, purpose {})",
        text("template"),
        text("version"),
        text("purpose")
    );
    println!("profile: {}", text("profile_id"));
    println!("subject: {}", text("subject"));
    println!("preheader: {}", text("preheader"));
    println!("fallbacks: {}", join(&answer["fallbacks"]));
    println!("missing: {}", join(&answer["missing"]));
    for warning in answer["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        println!("warning: {warning}");
    }
    print_blocked_urls(&answer["blocked_urls"], "");
    println!("--- html\n{}", text("html"));
    println!("--- text\n{}", text("text"));
    if let Some(n_seeds) = answer["sent_to"].as_u64() {
        println!("sent to {n_seeds} seed address(es)");
    }
    Ok(())
}

/// The SMTP settings of test sends, from `[render.smtp]` and `[render.seed_list] from`.
fn smtp_settings(config: &Config) -> anyhow::Result<SmtpSettings> {
    let Some(smtp) = &config.render.smtp else {
        bail!("test sends need [render.smtp] in the configuration");
    };
    let Some(from) = &config.render.from else {
        bail!("test sends need [render.seed_list] with `to` and `from`");
    };
    Ok(SmtpSettings {
        host: smtp.host.clone(),
        port: smtp.port,
        security: match smtp.security {
            trib_config::SmtpSecurity::None => SmtpSecurity::None,
            trib_config::SmtpSecurity::StartTls => SmtpSecurity::StartTls,
            trib_config::SmtpSecurity::Tls => SmtpSecurity::Tls,
        },
        username: smtp.username.clone(),
        password: smtp.password.as_ref().map(|secret| secret.expose().clone()),
        from: from.clone(),
        timeout: if smtp.timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            smtp.timeout
        },
    })
}

fn print_matrix(answer: &Value) {
    println!(
        "template {} (version {}, purpose {})",
        answer["template"].as_str().unwrap_or_default(),
        answer["version"].as_str().unwrap_or_default(),
        answer["purpose"].as_str().unwrap_or_default()
    );
    println!(
        "{:<36} {:>6}  {:<40} {:<40} subject",
        "profile", "traits", "fallbacks fired", "missing"
    );
    for row in answer["rows"].as_array().into_iter().flatten() {
        let profile = row["profile_id"].as_str().unwrap_or_default();
        let traits = row["traits"].as_u64().unwrap_or_default();
        if let Some(reason) = row["denied"].as_str() {
            println!("{profile:<36} {traits:>6}  not rendered: consent {reason}");
        } else if let Some(error) = row["error"].as_str() {
            println!("{profile:<36} {traits:>6}  failed: {error}");
        } else {
            println!(
                "{profile:<36} {traits:>6}  {:<40} {:<40} {}",
                join(&row["fallbacks"]),
                join(&row["missing"]),
                row["subject"].as_str().unwrap_or_default()
            );
            print_blocked_urls(&row["blocked_urls"], "    ");
        }
    }
}

/// One line per URL value the render replaced by `about:blank` (the value itself is the
/// person's data and is not in the answer).
fn print_blocked_urls(blocked: &Value, indent: &str) {
    for url in blocked.as_array().into_iter().flatten() {
        println!(
            "{indent}blocked URL: {} `{}` from `{}` (not http(s), mailto, tel, cid or relative) rendered as about:blank",
            url["part"].as_str().unwrap_or_default(),
            url["attribute"].as_str().unwrap_or_default(),
            url["variable"].as_str().unwrap_or_default()
        );
    }
}

fn join(list: &Value) -> String {
    let items: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}
