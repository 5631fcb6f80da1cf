-- A rebuild's progress, written by the process that runs it, so that any
-- process's admin API (and the console) can show it: events replayed, the
-- position reached, the head it is heading for, and when it started and
-- swapped in. The columns keep the last rebuild's figures after it ends.

ALTER TABLE projection_status
    ADD COLUMN rebuild_started_at  timestamptz,
    ADD COLUMN rebuild_events      bigint,
    ADD COLUMN rebuild_position    bigint,
    ADD COLUMN rebuild_head        bigint,
    ADD COLUMN rebuild_updated_at  timestamptz,
    ADD COLUMN rebuild_finished_at timestamptz,
    ADD COLUMN rebuild_error       text;
