//! The audit log: an append-only, hash-chained record of every access to personal data.
//!
//! # What goes in
//! Callers (the API's audit layer, CLI commands) append [`AuditRecord`]s: who ([`Actor`]: an API
//! key id, the admin key, a CLI user), the [`Action`], the [`Purpose`], the [`Resource`] (a route
//! template or command), the subject ([`ProfileRef`], a profile id) and the [`Outcome`]. The
//! types accept no free text, so a clear email address, phone number or name cannot be written.
//!
//! # Files
//! Under `<data_dir>/audit/`:
//! - `segment-<first seq, 20 digits>.ndjson`: one entry per line,
//!   `{seq, at, actor, action, purpose, resource, subject?, outcome, prev, mac}`, in that order
//!   and in exactly the form the writer produces (a line edited to an equivalent JSON still
//!   fails). A new segment starts at 64 MiB.
//! - `head`: `{seq, mac, head_mac}` of the last durable entry, replaced atomically after each
//!   group; `head_mac` = HMAC(key, `tributary-audit-head\0` ‖ seq ‖ mac).
//! - `lock`: held by the one process writing the log.
//!
//! The key is `<data_dir>/audit.key` (mode 0600, created once, like the identity key).
//!
//! # The chain
//! `mac` = HMAC-SHA-256(key, `tributary-audit-entry\0` ‖ previous entry's mac ‖ the entry's line
//! without `mac`), the previous mac of the first entry being 32 zero bytes. An edited, forged,
//! removed, inserted or reordered entry breaks the chain at that entry; a removed tail breaks
//! the link to the head; [`verify`] names the first sequence number where the chain breaks.
//!
//! # What it does not protect against
//! Someone who holds `audit.key` can recompute every mac and the head: the chain then proves
//! nothing about the data directory alone. Deleting the whole audit directory (entries and
//! head) is also not detectable from inside it, and neither is restoring an older copy of the
//! directory with its older head. The defence is to anchor the head elsewhere: run
//! `tributary audit export` on a schedule and keep its summary line (which carries the head's
//! seq and mac) where the data directory's administrators cannot write; a later log whose entry
//! at that seq has another mac, or that ends before it, was rewritten.
//!
//! # Durability and crashes
//! [`AuditLog::append`] returns once the entries are written, `fdatasync`ed and the head is
//! replaced; one writer thread does group commit (it drains the bounded queue, writes every
//! waiting request at once, syncs once). After a crash, a torn last line (a group the crash cut,
//! never acknowledged, so no data was released for it) is reported by [`verify`]; the next
//! [`AuditLog::open`] moves it to `torn-<segment>-<offset>.partial` and appends a `recover`
//! entry (actor `system`, outcome `torn_tail_removed:<bytes>`), so the removal stays visible in
//! the chain and in [`VerifyReport::recoveries`]. Any other damage at the tail refuses the open
//! ([`AuditError::Damaged`]) rather than continuing a chain over it.
//!
//! # Reading by subject
//! [`entries_about`] returns the entries about a set of profile ids (a subject access export),
//! scanning the segments read-only, without the key and without touching the chain.
//!
//! # What it does not do
//! It does not rotate or expire entries, and it does not know HTTP: the API decides what to
//! record.

mod entry;
mod error;
mod key;
mod log;
mod subjects;
mod verify;

pub use entry::{Action, Actor, AuditEntry, AuditRecord, Outcome, ProfileRef, Purpose, Resource};
pub use error::AuditError;
pub use key::{AUDIT_KEY_FILE, AuditKey};
pub use log::{AUDIT_DIR, AuditLog, AuditOptions, HEAD_FILE, Head};
pub use subjects::{SubjectEntries, entries_about};
pub use verify::{ExportSummary, VerifyReport, export, verify, verify_data_dir};

#[cfg(test)]
mod tests;
