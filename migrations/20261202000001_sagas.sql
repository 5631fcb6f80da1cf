-- The order saga's index: one row per saga, written in the same transaction
-- as every append to its stream `saga-<order id>` (the stream is the truth;
-- this row is what operators list and what the orchestrator's timer scans).
CREATE TABLE saga_instances (
    order_id    uuid        PRIMARY KEY,
    status      text        NOT NULL,
    step        text,
    version     bigint      NOT NULL,
    -- When the saga next needs attention without a new event (a deadline, a
    -- retry, an unanswered step); NULL while it only waits for events.
    wake_at     timestamptz,
    last_error  text,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX saga_instances_wake ON saga_instances (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX saga_instances_by_status ON saga_instances (status, started_at DESC, order_id DESC);
CREATE INDEX saga_instances_by_start ON saga_instances (started_at DESC, order_id DESC);
