-- Operational state of the projector workers: one row per projection, and
-- the events a projection could not apply.

CREATE TABLE projection_status (
    name          text        PRIMARY KEY,
    status        text        NOT NULL DEFAULT 'running'
                              CHECK (status IN ('running', 'rebuilding', 'halted')),
    dead_letters  bigint      NOT NULL DEFAULT 0,
    last_error    text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO projection_status (name) VALUES ('orders'), ('inventory'), ('catalog'), ('sales');

-- An event a projection could not apply, with the error. The projection then
-- halted or skipped it, as configured (FULCRUM_PROJECTION_ON_ERROR).
CREATE TABLE dead_letters (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection       text        NOT NULL REFERENCES projection_status (name),
    event_id         uuid        NOT NULL,
    stream_id        text        NOT NULL,
    version          bigint      NOT NULL,
    global_position  bigint      NOT NULL,
    event_type       text        NOT NULL,
    error            text        NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, event_id)
);
