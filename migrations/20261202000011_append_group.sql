-- Group commit (eventstore/src/group.rs): many appends, to different streams
-- or one after another to the same stream, in one statement, and so in one
-- transaction with one commit. Each append keeps its own answer, as if it
-- had called fulcrum_append alone:
--   'ok'       written; head_version/head_hash are the stream's new head and
--              last_position the position of its last event;
--   'conflict' the expected version did not match (head = the stream's head);
--   'stale'    the caller's base was not the head (head = the stream's head:
--              rehash and try again);
--   'tx_order' the transaction is older than the stream's last writer.
-- An append that is not 'ok' writes nothing and does not stop the others.
--
-- Appends arrive as per-append arrays (p_stream_ids .. p_counts, in the order
-- they were made) and their events as per-event arrays, every append's
-- events in turn. `p_roots[i]` is the index of the group's first append to
-- the same stream as append i (i itself when it is the first): a later
-- append to a stream is checked against the head the earlier ones left.
-- `p_event_appends` and `p_event_versions` give each event's append and the
-- version it takes if that append's base is the head.
--
-- Every stream's lock is taken first, in one global order (by lock key), so
-- groups cannot deadlock each other, and before the transaction has an id:
-- its id is then larger than that of every earlier writer of its streams,
-- which keeps each stream's events in (transaction id, position) order.
CREATE FUNCTION fulcrum_append_group(
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
LANGUAGE plpgsql VOLATILE AS $$
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
BEGIN
    SELECT array_agg(DISTINCT hashtextextended(s, 0) ORDER BY hashtextextended(s, 0))
      INTO lock_keys FROM unnest(p_stream_ids) AS s;
    -- unnest yields the sorted keys in order, one lock at a time.
    PERFORM pg_advisory_xact_lock(k) FROM unnest(lock_keys) AS k;
    my_tx := pg_current_xact_id()::text::bigint;

    -- Each statement takes a fresh snapshot: the heads include every
    -- earlier lock holder's commit.
    SELECT array_agg(s.version ORDER BY u.i), array_agg(s.last_hash ORDER BY u.i),
           array_agg(s.last_tx_id ORDER BY u.i)
      INTO cur_ver, cur_hash, cur_tx
      FROM unnest(p_stream_ids) WITH ORDINALITY AS u(id, i)
      LEFT JOIN streams s ON s.stream_id = u.id;

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
