-- The consent ledger: append-only history of consent per identifier key and purpose.
CREATE TABLE consent (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    ident_key      BLOB    NOT NULL,
    purpose        TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('granted', 'denied', 'withdrawn')),
    at_ms          INTEGER NOT NULL,
    source         TEXT    NOT NULL,
    legal_basis    TEXT    NOT NULL,
    proof          TEXT    NOT NULL,
    recorded_at_ms INTEGER NOT NULL
);
CREATE INDEX consent_by_key ON consent (ident_key, purpose, at_ms, seq);

CREATE TRIGGER consent_no_update BEFORE UPDATE ON consent
BEGIN
    SELECT RAISE(ABORT, 'the consent history is append-only');
END;
CREATE TRIGGER consent_no_delete BEFORE DELETE ON consent
BEGIN
    SELECT RAISE(ABORT, 'the consent history is append-only');
END;

-- Suppression lists: scope is 'global' or 'destination:<name>'.
CREATE TABLE suppressions (
    ident_key BLOB    NOT NULL,
    scope     TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL,
    source    TEXT    NOT NULL,
    PRIMARY KEY (ident_key, scope)
);

-- The consent consumer's next offsets, written in the same transaction as its entries.
CREATE TABLE consumer_offsets (
    consumer    TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
);
