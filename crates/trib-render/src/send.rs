//! Test sends: a rendered email sent over SMTP to an internal seed list (never to the person).
//!
//! Uses lettre's blocking transport with rustls (ring): `security = "starttls"` upgrades a
//! plain connection (port 587), `"tls"` is implicit TLS (port 465), `"none"` is plain text for
//! a local relay or a test server. AUTH (PLAIN or LOGIN, as the server offers) is used when a
//! user name is given.

use std::fmt;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use crate::error::RenderError;
use crate::render::RenderedEmail;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text (a local relay, a test server).
    None,
    /// STARTTLS, required (refuses to send in clear if the server does not offer it).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// The SMTP server and sender of test sends (`[render.smtp]`).
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The `From` address (`QA <qa@example.com>`).
    pub from: String,
    pub timeout: Duration,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Sends `email` to each seed address (one message, every seed in `To`). Blocking: call it
/// off an async runtime.
pub fn send_to_seeds(
    email: &RenderedEmail,
    seeds: &[String],
    settings: &SmtpSettings,
) -> Result<(), RenderError> {
    let smtp = |message: String| RenderError::Smtp(message);
    if seeds.is_empty() {
        return Err(smtp("the seed list is empty".to_owned()));
    }
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|error| smtp(format!("from address: {error}")))?;
    let mut builder = Message::builder().from(from).subject(email.subject.clone());
    for (index, seed) in seeds.iter().enumerate() {
        // The address is configuration, not a customer's; still, only its position is named.
        let to: Mailbox = seed
            .parse()
            .map_err(|error| smtp(format!("seed address {index}: {error}")))?;
        builder = builder.to(to);
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|error| smtp(error.to_string()))?;

    let transport = match settings.security {
        SmtpSecurity::None => SmtpTransport::builder_dangerous(&settings.host),
        SmtpSecurity::StartTls => SmtpTransport::starttls_relay(&settings.host)
            .map_err(|error| smtp(error.to_string()))?,
        SmtpSecurity::Tls => {
            SmtpTransport::relay(&settings.host).map_err(|error| smtp(error.to_string()))?
        }
    };
    let mut transport = transport
        .port(settings.port)
        .timeout(Some(settings.timeout));
    if let Some(username) = &settings.username {
        transport = transport.credentials(Credentials::new(
            username.clone(),
            settings.password.clone().unwrap_or_default(),
        ));
    }
    transport
        .build()
        .send(&message)
        .map_err(|error| smtp(error.to_string()))?;
    Ok(())
}
