-- The event store. Never edit a migration once it has landed; add a new one.

-- One row per stream: its current version, the hash of its last event and
-- the id of the transaction that wrote it, so that an append checks the
-- expected version, extends the hash chain and keeps the stream's events in
-- transaction-id order without reading the events table.
CREATE TABLE streams (
    stream_id    text        PRIMARY KEY,
    stream_type  text        NOT NULL,
    version      bigint      NOT NULL CHECK (version >= 0),
    last_hash    bytea       NOT NULL,
    last_tx_id   bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every event ever appended. Rows are immutable.
--
-- Gap-free global order: `position` comes from a sequence, and sequences commit
-- out of order, so readers never page by position alone. Each row records the
-- writing transaction's id (`tx_id`, from pg_current_xact_id()). A reader only
-- reads rows whose tx_id is below the xmin of its snapshot (every transaction
-- below it has finished) and orders and checkpoints by (tx_id, position).
-- Appenders keep tx_id non-decreasing along each stream's versions (see
-- eventstore/src/append.rs), so that order also keeps every stream in order.
CREATE TABLE events (
    position        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    stream_id       text        NOT NULL,
    stream_type     text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 0),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    hash            bytea       NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE INDEX events_global_order ON events (tx_id, position);
-- "Everything one request caused" (the audit correlation view).
CREATE INDEX events_correlation_id ON events ((metadata->>'correlation_id'), position);

-- Idempotency keys: the first outcome of a request, so that a retry with the
-- same key gets the same answer and appends nothing. `request_hash` tells a
-- retry from a different request that reuses the key.
CREATE TABLE idempotency_keys (
    key           text        PRIMARY KEY,
    request_hash  bytea       NOT NULL,
    outcome       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Latest snapshot per stream: the folded state at `version`.
CREATE TABLE snapshots (
    stream_id       text        PRIMARY KEY,
    version         bigint      NOT NULL CHECK (version >= 1),
    schema_version  integer     NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now()
);

-- Durable positions of readers that tail the global order (relay, rebuilds).
-- A checkpoint is the (tx_id, position) pair of the last event handled.
CREATE TABLE checkpoints (
    name        text        PRIMARY KEY,
    tx_id       bigint      NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Appends events to one stream in a single round trip (see
-- eventstore/src/append.rs). The caller computes the events' hash chain from
-- the stream head it believes current (`p_base_version`, `p_base_hash`).
--
-- 1. Takes the stream's append lock (a transaction-scoped advisory lock)
--    before the transaction has an id, so a fresh transaction's id is larger
--    than the id of the stream's previous writer.
-- 2. Reads the head with a fresh snapshot (each statement of a volatile
--    function takes one), so it sees the previous lock holder's commit.
-- 3. Answers without writing when the transaction is older than the stream's
--    last writer ('tx_order'), when the expected version does not match
--    ('conflict'), or when the caller's base is not the head ('stale', with
--    the head, so the caller can rehash and call again while the lock is
--    held). Otherwise writes the head and the events ('ok').
CREATE FUNCTION fulcrum_append(
    p_stream_id       text,
    p_stream_type     text,
    p_expected        bigint,      -- NULL: any version
    p_base_version    bigint,
    p_base_hash       bytea,
    p_metadata        jsonb[],
    p_recorded_at     timestamptz,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_data            jsonb[],
    p_hashes          bytea[]
) RETURNS TABLE (outcome text, head_version bigint, head_hash bytea, last_position bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    my_tx       bigint;
    cur_version bigint;
    cur_hash    bytea;
    cur_tx      bigint;
    n           integer := cardinality(p_event_ids);
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id, 0));
    my_tx := pg_current_xact_id()::text::bigint;
    SELECT s.version, s.last_hash, s.last_tx_id INTO cur_version, cur_hash, cur_tx
      FROM streams s WHERE s.stream_id = p_stream_id;
    IF NOT FOUND THEN
        cur_version := 0;
        cur_hash := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    ELSIF my_tx < cur_tx THEN
        RETURN QUERY SELECT 'tx_order'::text, cur_version, cur_hash, NULL::bigint;
        RETURN;
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> cur_version THEN
        RETURN QUERY SELECT 'conflict'::text, cur_version, cur_hash, NULL::bigint;
        RETURN;
    END IF;
    IF cur_version <> p_base_version OR cur_hash <> p_base_hash THEN
        RETURN QUERY SELECT 'stale'::text, cur_version, cur_hash, NULL::bigint;
        RETURN;
    END IF;

    INSERT INTO streams AS s (stream_id, stream_type, version, last_hash, last_tx_id)
    VALUES (p_stream_id, p_stream_type, cur_version + n, p_hashes[n], my_tx)
    ON CONFLICT (stream_id) DO UPDATE
       SET version = EXCLUDED.version, last_hash = EXCLUDED.last_hash,
           last_tx_id = EXCLUDED.last_tx_id, updated_at = now();

    RETURN QUERY
    WITH inserted AS (
        INSERT INTO events (stream_id, stream_type, version, event_id, event_type,
                            schema_version, data, metadata, recorded_at, hash)
        SELECT p_stream_id, p_stream_type, cur_version + e.ord, e.id, e.t, e.sv, e.d,
               e.m, p_recorded_at, e.h
        FROM UNNEST(p_event_ids, p_event_types, p_schema_versions, p_data, p_metadata, p_hashes)
             WITH ORDINALITY AS e(id, t, sv, d, m, h, ord)
        ORDER BY e.ord
        RETURNING position
    )
    SELECT 'ok'::text, cur_version + n, p_hashes[n], max(i.position) FROM inserted i;
END;
$$;
