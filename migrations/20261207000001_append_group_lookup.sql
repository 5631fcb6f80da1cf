-- fulcrum_append_group() (20261202000011_append_group.sql, unchanged in
-- what it answers) read its streams' heads with a join of the appends to
-- `streams`. On a table that was never analyzed (every new database, for
-- its first minute under load) the planner hashed all of `streams` for it
-- on every batch: 19,454 full scans reading 135M rows in 26 s of one
-- 16-writer run, halving the write rate until autovacuum's first ANALYZE.
-- The heads are now one primary-key lookup per stream, and the function
-- never plans a sequential scan (its other statements scan only its array
-- arguments and insert through the primary keys).
CREATE OR REPLACE FUNCTION fulcrum_append_group(
    p_stream_ids      text[],
    p_stream_types    text[],
    p_expected        bigint[],      -- a NULL element: any version
    p_base_versions   bigint[],
    p_base_hashes     bytea[],
    p_roots           integer[],
    p_recorded_at     timestamptz[],
    p_counts          integer[],
    p_event_appends   integer[],
    p_event_versions  bigint[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_data            jsonb[],
    p_metadata        jsonb[],
    p_hashes          bytea[]
) RETURNS TABLE (append_index integer, outcome text, head_version bigint,
                 head_hash bytea, last_position bigint)
LANGUAGE plpgsql VOLATILE
-- A never-analyzed `streams` looks tiny: never scan it whole.
SET enable_seqscan = off
AS $$
DECLARE
    n_appends  integer := cardinality(p_stream_ids);
    lock_keys  bigint[];
    my_tx      bigint;
    -- Per root append: the stream's running head and last writer.
    cur_ver    bigint[];
    cur_hash   bytea[];
    cur_tx     bigint[];
    dirty      boolean[] := array_fill(false, ARRAY[n_appends]);
    -- Per append: its outcome and the head it answers with.
    outcomes   text[] := array_fill(NULL::text, ARRAY[n_appends]);
    head_v     bigint[] := array_fill(NULL::bigint, ARRAY[n_appends]);
    head_h     bytea[] := array_fill(NULL::bytea, ARRAY[n_appends]);
    written    boolean[] := array_fill(false, ARRAY[n_appends]);
    i          integer;
    r          integer;
    n          integer;
    off        integer := 0;
    h_ver      bigint;
    h_hash     bytea;
    h_tx       bigint;
BEGIN
    SELECT array_agg(DISTINCT hashtextextended(s, 0) ORDER BY hashtextextended(s, 0))
      INTO lock_keys FROM unnest(p_stream_ids) AS s;
    -- unnest yields the sorted keys in order, one lock at a time.
    PERFORM pg_advisory_xact_lock(k) FROM unnest(lock_keys) AS k;
    my_tx := pg_current_xact_id()::text::bigint;

    -- Each statement takes a fresh snapshot: the heads include every
    -- earlier lock holder's commit. One primary-key lookup per stream (at
    -- its root append), whatever the table's statistics say.
    cur_ver := array_fill(NULL::bigint, ARRAY[n_appends]);
    cur_hash := array_fill(NULL::bytea, ARRAY[n_appends]);
    cur_tx := array_fill(NULL::bigint, ARRAY[n_appends]);
    FOR i IN 1 .. n_appends LOOP
        IF p_roots[i] = i THEN
            SELECT s.version, s.last_hash, s.last_tx_id INTO h_ver, h_hash, h_tx
              FROM streams s WHERE s.stream_id = p_stream_ids[i];
            IF FOUND THEN
                cur_ver[i] := h_ver;
                cur_hash[i] := h_hash;
                cur_tx[i] := h_tx;
            END IF;
        END IF;
    END LOOP;

    FOR i IN 1 .. n_appends LOOP
        r := p_roots[i];
        n := p_counts[i];
        IF cur_ver[r] IS NULL THEN
            cur_ver[r] := 0;
            cur_hash[r] := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
        END IF;
        IF NOT dirty[r] AND cur_tx[r] IS NOT NULL AND my_tx < cur_tx[r] THEN
            outcomes[i] := 'tx_order';
        ELSIF p_expected[i] IS NOT NULL AND p_expected[i] <> cur_ver[r] THEN
            outcomes[i] := 'conflict';
        ELSIF cur_ver[r] <> p_base_versions[i] OR cur_hash[r] <> p_base_hashes[i] THEN
            outcomes[i] := 'stale';
        ELSE
            outcomes[i] := 'ok';
            written[i] := true;
            dirty[r] := true;
            cur_ver[r] := cur_ver[r] + n;
            cur_hash[r] := p_hashes[off + n];
        END IF;
        head_v[i] := cur_ver[r];
        head_h[i] := cur_hash[r];
        off := off + n;
    END LOOP;

    IF true = ANY (dirty) THEN
        INSERT INTO streams AS s (stream_id, stream_type, version, last_hash, last_tx_id)
        SELECT p_stream_ids[u.r], p_stream_types[u.r], cur_ver[u.r], cur_hash[u.r], my_tx
          FROM generate_subscripts(p_stream_ids, 1) AS u(r)
         WHERE dirty[u.r]
        ON CONFLICT (stream_id) DO UPDATE
           SET version = EXCLUDED.version, last_hash = EXCLUDED.last_hash,
               last_tx_id = EXCLUDED.last_tx_id, updated_at = now();
    END IF;

    RETURN QUERY
    WITH inserted AS (
        INSERT INTO events (stream_id, stream_type, version, event_id, event_type,
                            schema_version, data, metadata, recorded_at, hash)
        SELECT p_stream_ids[e.a], p_stream_types[e.a], e.v, e.id, e.t, e.sv, e.d, e.m,
               p_recorded_at[e.a], e.h
          FROM unnest(p_event_appends, p_event_versions, p_event_ids, p_event_types,
                      p_schema_versions, p_data, p_metadata, p_hashes)
               WITH ORDINALITY AS e(a, v, id, t, sv, d, m, h, ord)
         WHERE written[e.a]
         ORDER BY e.ord
        RETURNING events.stream_id, events.version, events.position
    )
    SELECT u.i::integer, outcomes[u.i], head_v[u.i], head_h[u.i], ins.position
      FROM generate_subscripts(p_stream_ids, 1) AS u(i)
      LEFT JOIN inserted ins
        ON written[u.i] AND ins.stream_id = p_stream_ids[u.i] AND ins.version = head_v[u.i]
     ORDER BY u.i;
END;
$$;
