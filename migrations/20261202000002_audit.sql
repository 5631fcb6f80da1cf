-- The audit side: search indexes and signed seals.

-- Audit search (GET /api/v1/audit/events) pages in gap-free global order,
-- (tx_id, position), under each filter. An equality filter followed by the
-- global order lets one index both find the rows and keep the order, so a
-- page is an index range scan however many events match.
CREATE INDEX events_by_type ON events (event_type, tx_id, position);
CREATE INDEX events_by_stream_type ON events (stream_type, tx_id, position);
CREATE INDEX events_by_user ON events ((metadata->>'user_id'), tx_id, position);
-- Replaces the correlation index of the first migration, which ordered by
-- position alone.
DROP INDEX events_correlation_id;
CREATE INDEX events_by_correlation ON events ((metadata->>'correlation_id'), tx_id, position);
-- `stream_id` is served by the (stream_id, version) unique index: a stream's
-- versions are in global order. Time ranges by a BRIN index: rows are
-- written in recorded-time order, and BRIN costs an append almost nothing.
CREATE INDEX events_by_time ON events USING brin (recorded_at);

-- Seals: tamper evidence for the whole store (eventstore/src/seal). Seal n
-- covers the first `tree_size` events in gap-free global order, up to and
-- including the event at (up_to_tx_id, up_to_position). `root` is the
-- RFC 6962 Merkle tree hash over every covered event's hash, `previous` the
-- previous seal's root (32 zero bytes for the first), and `signature` the
-- Ed25519 signature of
--   fulcrum-seal:v1:<seal_id>:<tree_size>:<up_to_position>:<root hex>:<previous hex>
-- by `public_key`.
--
-- What a seal added is kept with it, so that a verifier can name the exact
-- event that changed and a proof needs no scan of the events table:
-- `event_hashes` (32 bytes each) and `event_positions` (8 bytes each,
-- big-endian) of the events after the previous seal, in order. They are not
-- trusted: a verifier first checks that they hash to the signed root.
-- `frontier` holds the roots of the tree's perfect subtrees (one per set bit
-- of tree_size, largest first), from which the next seal continues.
CREATE TABLE seals (
    seal_id          bigint      PRIMARY KEY CHECK (seal_id >= 1),
    tree_size        bigint      NOT NULL CHECK (tree_size >= 1),
    up_to_tx_id      bigint      NOT NULL,
    up_to_position   bigint      NOT NULL,
    root             bytea       NOT NULL,
    previous         bytea       NOT NULL,
    signature        bytea       NOT NULL,
    public_key       bytea       NOT NULL,
    frontier         bytea       NOT NULL,
    event_hashes     bytea       NOT NULL,
    event_positions  bytea       NOT NULL,
    sealed_at        timestamptz NOT NULL DEFAULT now()
);
