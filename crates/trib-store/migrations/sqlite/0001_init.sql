-- The profile store's initial schema. Ids are 16-byte blobs, identifier keys and documents
-- are opaque blobs; log offsets and sequence numbers are integers (at most i64::MAX).

-- One row per profile id ever stored. state: 0 = active (doc set), 1 = merged (merged_into
-- set), 2 = deleted. seq is the change-feed position of the id's latest change.
CREATE TABLE profiles (
    id            BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    state         INTEGER NOT NULL CHECK (state IN (0, 1, 2)),
    merged_into   BLOB,
    doc           BLOB,
    updated_at_ms INTEGER NOT NULL,
    seq           INTEGER NOT NULL
);
CREATE UNIQUE INDEX profiles_seq ON profiles (seq);
CREATE INDEX profiles_updated_at ON profiles (updated_at_ms);
-- Merged and deleted ids are few: counting them (and all rows, from the smallest index) is
-- how active profiles are counted, without a scan of the documents and at no cost to
-- upserts of active profiles.
CREATE INDEX profiles_inactive ON profiles (state) WHERE state <> 0;

-- The identifier index: key -> profile id.
CREATE TABLE identifiers (
    key        BLOB NOT NULL PRIMARY KEY,
    profile_id BLOB NOT NULL
) WITHOUT ROWID;

-- Each profile's timeline, clustered by profile and read newest first.
CREATE TABLE timeline (
    profile_id    BLOB    NOT NULL,
    ts            INTEGER NOT NULL,
    log_partition INTEGER NOT NULL,
    log_offset    INTEGER NOT NULL,
    PRIMARY KEY (profile_id, ts, log_partition, log_offset)
) WITHOUT ROWID;

-- The provenance journal; seq is the rowid (journal rows are never deleted, so it only grows).
CREATE TABLE journal (
    seq        INTEGER PRIMARY KEY,
    profile_id BLOB    NOT NULL,
    kind       TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL,
    doc        BLOB    NOT NULL
);
CREATE INDEX journal_profile ON journal (profile_id, seq);
CREATE INDEX journal_kind ON journal (kind, seq);

-- The next log offset per consumer and partition, committed with each batch.
CREATE TABLE consumer_offsets (
    consumer      TEXT    NOT NULL,
    log_partition INTEGER NOT NULL,
    next_offset   INTEGER NOT NULL,
    PRIMARY KEY (consumer, log_partition)
) WITHOUT ROWID;
