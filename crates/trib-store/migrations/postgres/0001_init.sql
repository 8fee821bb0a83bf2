-- Tributary profile store on PostgreSQL, schema version 1.
--
-- Applied by `PostgresStore::open` in one transaction, inside the store's schema (the
-- migrator sets `search_path`, so no name here is schema-qualified). The number of hash
-- partitions comes from the transaction-local setting `tributary.partitions` set by the
-- migrator from `PostgresOptions::partitions`; it is recorded in `store_settings` and fixed
-- from then on (changing it means creating a new store and copying the data).
--
-- Never edit this file once released: its checksum is recorded in `schema_migrations` and a
-- changed file makes `open` refuse the database. Add `0002_*.sql` instead.

CREATE TABLE store_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO store_settings (name, value)
VALUES ('partitions', current_setting('tributary.partitions'));

-- The change feed's cursor and the journal's order. Only `apply` draws from them, under a
-- transaction-level advisory lock, so values are handed out in commit order.
CREATE SEQUENCE change_seq AS bigint;
CREATE SEQUENCE journal_seq AS bigint;

-- One row per profile id ever stored: active (0, with its document), merged (1, with the id
-- it was merged into) or deleted (2). `seq` is the id's latest change-feed position.
CREATE TABLE profiles (
    profile_id    bytea    NOT NULL CHECK (octet_length(profile_id) = 16),
    state         smallint NOT NULL CHECK (state IN (0, 1, 2)),
    merged_into   bytea             CHECK (octet_length(merged_into) = 16),
    doc           bytea,
    updated_at_ms bigint   NOT NULL,
    seq           bigint   NOT NULL,
    PRIMARY KEY (profile_id),
    CHECK ((state = 0) = (doc IS NOT NULL)),
    CHECK ((state = 1) = (merged_into IS NOT NULL))
) PARTITION BY HASH (profile_id);
-- The change feed: `seq > $after ORDER BY seq` is a merge of per-partition index scans.
CREATE INDEX profiles_seq ON profiles (seq);

-- A profile's events, newest first by (timestamp_ms, log_partition, log_offset); the primary
-- key serves both the de-duplication and the paginated backward scan.
CREATE TABLE timeline (
    profile_id    bytea  NOT NULL,
    timestamp_ms  bigint NOT NULL,
    log_partition bigint NOT NULL,
    log_offset    bigint NOT NULL,
    PRIMARY KEY (profile_id, timestamp_ms, log_partition, log_offset)
) PARTITION BY HASH (profile_id);

-- The identifier index: opaque key (later a keyed blind index) -> profile id. Partitioned by
-- the key, so a lookup by key touches one partition.
CREATE TABLE identifiers (
    key        bytea NOT NULL,
    profile_id bytea NOT NULL,
    PRIMARY KEY (key)
) PARTITION BY HASH (key);

-- Provenance: merges, refused merges, unmerges. Co-partitioned with `profiles`.
CREATE TABLE journal (
    profile_id bytea  NOT NULL,
    seq        bigint NOT NULL,
    kind       text   NOT NULL,
    at_ms      bigint NOT NULL,
    doc        bytea  NOT NULL,
    PRIMARY KEY (profile_id, seq)
) PARTITION BY HASH (profile_id);
CREATE INDEX journal_kind_seq ON journal (kind, seq);

-- The event-log consumers' committed offsets (small; not partitioned).
CREATE TABLE consumer_offsets (
    consumer      text   NOT NULL,
    log_partition bigint NOT NULL,
    next_offset   bigint NOT NULL,
    PRIMARY KEY (consumer, log_partition)
);

DO $$
DECLARE
    modulus integer := current_setting('tributary.partitions')::integer;
    parent  text;
BEGIN
    IF modulus < 1 THEN
        RAISE EXCEPTION 'tributary.partitions must be at least 1';
    END IF;
    FOREACH parent IN ARRAY ARRAY['profiles', 'timeline', 'identifiers', 'journal'] LOOP
        FOR remainder IN 0 .. modulus - 1 LOOP
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
                parent || '_p' || remainder, parent, modulus, remainder);
        END LOOP;
    END LOOP;
END
$$;
