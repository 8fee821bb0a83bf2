use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A message that was received but not accepted, kept with the reason so it can be inspected
/// and replayed. Nothing a client sends is dropped silently: it is either an [`crate::Event`] in
/// the event log or one of these in the quarantine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedMessage {
    /// The source whose write key authenticated the request.
    pub source: String,
    pub received_at: Timestamp,
    /// The position of the message in its request (0 for single-message routes), or its row
    /// number in an imported file.
    pub index: usize,
    /// The message's `messageId`, when it had a usable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The JSON path of the offending field, when one field is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A stable snake_case code, e.g. `missing_identity`.
    pub code: String,
    /// A sentence saying what is wrong.
    pub reason: String,
    /// The schema the message was checked against (`Order Completed/1-0-2`), when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// How the message arrived: `api`, `import` (with the file and row) or `webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The message exactly as it was received.
    pub message: Box<serde_json::value::RawValue>,
    /// What a replay needs besides `message` to build the event again, when the path it came
    /// by keeps something (a webhook element keeps its delivery's context: delivery id, the
    /// headers its mapping conditions read, and the body). Its shape belongs to that path.
    /// Never holds secrets or signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_context: Option<Box<serde_json::value::RawValue>>,
}

impl QuarantinedMessage {
    /// The message's `userId`, else its `anonymousId` (non-empty strings only): the key its
    /// event would have been stored under, so that its quarantine record belongs to the same
    /// person (and is erased with them). `None` when the message names neither.
    pub fn person_key(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Keys {
            #[serde(default)]
            user_id: Option<serde_json::Value>,
            #[serde(default)]
            anonymous_id: Option<serde_json::Value>,
        }
        let keys: Keys = serde_json::from_str(self.message.get()).ok()?;
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) if !text.trim().is_empty() => Some(text),
            _ => None,
        };
        text(keys.user_id).or_else(|| text(keys.anonymous_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quarantined(message: &str) -> QuarantinedMessage {
        QuarantinedMessage {
            source: "web".into(),
            received_at: jiff::Timestamp::UNIX_EPOCH,
            index: 0,
            message_id: None,
            field: None,
            code: "invalid".into(),
            reason: "invalid".into(),
            schema: None,
            origin: None,
            message: serde_json::value::RawValue::from_string(message.into()).unwrap(),
            replay_context: None,
        }
    }

    #[test]
    fn the_person_key_is_the_user_id_else_the_anonymous_id() {
        let key = |m: &str| quarantined(m).person_key();
        assert_eq!(
            key(r#"{"userId":"u1","anonymousId":"a1"}"#),
            Some("u1".into())
        );
        assert_eq!(
            key(r#"{"userId":"","anonymousId":"a1"}"#),
            Some("a1".into())
        );
        assert_eq!(
            key(r#"{"userId":42,"anonymousId":"a1"}"#),
            Some("a1".into())
        );
        assert_eq!(key(r#"{"event":"x"}"#), None);
        assert_eq!(key(r#"[1,2]"#), None);
    }
}
