//! From a `[[destinations]]` entry to its connector.

use std::sync::Arc;

use trib_config::{DestinationConfig, DestinationType};

use crate::connector::{CallError, Connector};
use crate::connectors::{
    HubspotConfig, HubspotConnector, MailchimpConfig, MailchimpConnector, SendgridConfig,
    SendgridConnector, WebhookConfig, WebhookConnector,
};
use crate::engine::Destination;

/// Builds the connector a destination's type and settings name.
pub fn connector(config: &DestinationConfig) -> Result<Arc<dyn Connector>, CallError> {
    let credential = config.credential.expose().clone();
    Ok(match config.kind {
        DestinationType::Mailchimp => {
            let mut settings =
                MailchimpConfig::new(credential, config.list_id.clone().unwrap_or_default());
            settings.base_url = config.base_url.clone();
            Arc::new(MailchimpConnector::new(&settings)?.named(&config.name))
        }
        DestinationType::Hubspot => {
            let mut settings = HubspotConfig::new(credential);
            settings.base_url = config.base_url.clone();
            Arc::new(HubspotConnector::new(&settings)?.named(&config.name))
        }
        DestinationType::Sendgrid => {
            let mut settings = SendgridConfig::new(credential);
            settings.base_url = config.base_url.clone();
            settings.list_ids = config.list_ids.clone();
            Arc::new(SendgridConnector::new(&settings)?.named(&config.name))
        }
        DestinationType::Webhook => {
            let settings = WebhookConfig::new(config.url.clone().unwrap_or_default(), credential);
            Arc::new(WebhookConnector::new(&settings)?.named(&config.name))
        }
    })
}

/// Every configured destination with its connector.
pub fn destinations(configs: &[DestinationConfig]) -> Result<Vec<Destination>, CallError> {
    configs
        .iter()
        .map(|config| {
            Ok(Destination {
                config: config.clone(),
                connector: connector(config)?,
            })
        })
        .collect()
}
