//! Rebuilding the event of a quarantined import row, for `POST /v1/quarantine/replay` after a
//! mapping or schema fix.
//!
//! A quarantined row keeps its raw values as a JSON object (CSV: header → value; NDJSON: the
//! line), its row number (`index`) and its messageId, so the source's current mapping can turn it
//! into an event again, with the same messageId: the event log's per-source deduplication keeps
//! a replay exactly once. Rows whose problem was the file itself (a wrong column count, invalid
//! UTF-8, an oversize row) are not replayed: the file must be fixed and imported again.

use std::path::Path;

use trib_core::{Event, JsonMap, QuarantinedMessage, Refusal};

use super::ImportMapping;
use super::convert::{Caches, Plan, RowInput};

/// Codes of rows that no mapping change can fix.
const MALFORMED_ROW_CODES: [&str; 3] = ["wrong_column_count", "invalid_utf8", "row_too_large"];

/// Maps a quarantined import row to its event with the source's current mapping, or says why
/// it still cannot become one. The gate is not run here: the caller runs it before storage.
pub fn replay_row(
    source: &str,
    mapping: &ImportMapping,
    normalize: &trib_normalize::Options,
    quarantined: &QuarantinedMessage,
) -> Result<Event, Refusal> {
    let refuse = |code: &str, reason: String| Refusal {
        code: code.to_owned(),
        field: None,
        reason,
        schema: None,
    };
    if MALFORMED_ROW_CODES.contains(&quarantined.code.as_str()) {
        return Err(refuse(
            &quarantined.code,
            "the row itself is malformed: fix the file and import it again".to_owned(),
        ));
    }
    let row: JsonMap = serde_json::from_str(quarantined.message.get()).map_err(|_| {
        refuse(
            "not_replayable",
            "the quarantined row is not a JSON object".to_owned(),
        )
    })?;
    if row.contains_key("__extra__") || row.contains_key("__invalid_utf8__") {
        return Err(refuse(
            "not_replayable",
            "the row itself is malformed: fix the file and import it again".to_owned(),
        ));
    }
    let file = quarantined
        .origin
        .as_deref()
        .and_then(|origin| origin.strip_prefix("import:"))
        .unwrap_or("replay");
    // The file hash only shapes generated messageIds; the row keeps the one it was given.
    let plan = Plan::compile(
        mapping,
        source,
        normalize,
        None,
        Path::new(file),
        "",
        quarantined.received_at,
    )
    .map_err(|error| refuse("invalid_mapping", error.to_string()))?;
    let number = quarantined.index as u64;
    let mut converted = plan
        .convert(RowInput::Json(&row), number, &mut Caches::default())
        .map_err(|problem| Refusal {
            code: problem.code,
            field: problem.field,
            reason: problem.reason,
            schema: problem.schema,
        })?;
    if let Some(message_id) = &quarantined.message_id {
        converted.event.message_id = message_id.clone();
    }
    Ok(converted.event)
}
