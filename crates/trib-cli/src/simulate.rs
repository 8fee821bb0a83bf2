//! `tributary simulate mailchimp|hubspot|sendgrid|webhook --listen ADDR`: a stateful fake of an
//! ESP (`trib-esp-sim`) following its published contract and documented limits, with optional
//! fault injection, to test a configuration offline. `GET /_sim/contacts`, `/_sim/stats` and
//! `/_sim/requests` show what it holds and what it was sent.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use trib_esp_sim::{Faults, SimConfig, SimKind};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Kind {
    Mailchimp,
    Hubspot,
    Sendgrid,
    Webhook,
}

/// Arguments of `tributary simulate`.
#[derive(Debug, clap::Args)]
pub(crate) struct SimulateArgs {
    /// Which ESP to simulate.
    kind: Kind,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:4010")]
    listen: SocketAddr,
    /// The API key (Mailchimp's Basic password, HubSpot's and SendGrid's Bearer token); for
    /// the webhook, the signing secret.
    #[arg(long, default_value = "test-key")]
    api_key: String,
    /// Mailchimp audience ids (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "list1")]
    lists: Vec<String>,
    /// Mailchimp merge tags, HubSpot properties, or SendGrid custom fields as ID:NAME:TYPE
    /// (comma-separated); the simulator's defaults when absent.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Rate of injected 429s (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    throttle: f64,
    /// Rate of injected 500/503s.
    #[arg(long, default_value_t = 0.0)]
    server_error: f64,
    /// Rate of requests held until they time out.
    #[arg(long, default_value_t = 0.0)]
    timeout: f64,
    /// Rate of connections reset without an answer.
    #[arg(long, default_value_t = 0.0)]
    reset: f64,
    /// Rate of partial results (HubSpot 207s, SendGrid errored jobs).
    #[arg(long, default_value_t = 0.0)]
    partial: f64,
    /// Rate of calls answered as success but not applied.
    #[arg(long, default_value_t = 0.0)]
    not_applied: f64,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// SendGrid: how long a job takes.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    job_delay: Duration,
    /// Mailchimp: how long a `/batches` job stays pending before its operations run.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    batch_delay: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("a duration such as \"200ms\", got {text:?}"))?;
    Duration::try_from(signed).map_err(|_| format!("must not be negative: {text:?}"))
}

/// The simulator's configuration from the arguments.
pub(crate) fn sim_config(args: &SimulateArgs) -> anyhow::Result<SimConfig> {
    let kind = match args.kind {
        Kind::Mailchimp => SimKind::Mailchimp,
        Kind::Hubspot => SimKind::Hubspot,
        Kind::Sendgrid => SimKind::Sendgrid,
        Kind::Webhook => SimKind::Webhook,
    };
    let mut config = SimConfig::new(kind);
    config.api_key = args.api_key.clone();
    config.webhook_secret = args.api_key.clone();
    config.mailchimp_lists = args.lists.clone();
    config.sendgrid_job_delay = args.job_delay;
    config.mailchimp_batch_delay = args.batch_delay;
    if !args.fields.is_empty() {
        match kind {
            SimKind::Mailchimp => config.mailchimp_merge_fields = args.fields.clone(),
            SimKind::Hubspot => {
                config.hubspot_properties = args.fields.clone();
                if !config.hubspot_properties.iter().any(|p| p == "email") {
                    config.hubspot_properties.push("email".to_owned());
                }
            }
            SimKind::Sendgrid => {
                config.sendgrid_custom_fields = args
                    .fields
                    .iter()
                    .map(|field| {
                        let mut parts = field.splitn(3, ':');
                        match (parts.next(), parts.next(), parts.next()) {
                            (Some(id), Some(name), Some(kind)) => {
                                Ok((id.to_owned(), name.to_owned(), kind.to_owned()))
                            }
                            _ => anyhow::bail!(
                                "a SendGrid custom field is ID:NAME:TYPE (e1_T:plan:Text), got {field:?}"
                            ),
                        }
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            SimKind::Webhook => anyhow::bail!("--fields does not apply to the webhook"),
        }
    }
    for (name, rate) in [
        ("--throttle", args.throttle),
        ("--server-error", args.server_error),
        ("--timeout", args.timeout),
        ("--reset", args.reset),
        ("--partial", args.partial),
        ("--not-applied", args.not_applied),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "{name} must be between 0 and 1"
        );
    }
    config.faults = Faults {
        throttle: args.throttle,
        server_error: args.server_error,
        timeout: args.timeout,
        reset: args.reset,
        partial: args.partial,
        not_applied: args.not_applied,
        seed: args.seed,
    };
    Ok(config)
}

pub(crate) async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let config = sim_config(&args)?;
    println!(
        "Simulating {:?} on http://{} (Ctrl-C stops); GET /_sim/contacts and /_sim/stats show its state.",
        args.kind, args.listen
    );
    trib_esp_sim::run(config, args.listen)
        .await
        .with_context(|| format!("failed to run the simulator on {}", args.listen))
}
