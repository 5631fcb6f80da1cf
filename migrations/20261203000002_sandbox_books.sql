-- The sandbox payment gateway's books, shared by every process of a
-- deployment (saga::gateway::PgBooks): accepted authorisation requests and
-- their answers, authorisations, and every capture, void and refund that
-- took effect. A real gateway keeps these itself.
CREATE TABLE sandbox_requests (
    idempotency_key text PRIMARY KEY,
    request         jsonb       NOT NULL,
    -- When the answer is due; NULL: never (tok_timeout).
    due_at          timestamptz,
    -- The GatewayAnswer, NULL while pending; never changes once set.
    answer          jsonb,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    answered_at     timestamptz
);

CREATE TABLE sandbox_authorizations (
    authorization_id text PRIMARY KEY,
    amount           bigint  NOT NULL CHECK (amount > 0),
    captured         bigint  NOT NULL DEFAULT 0 CHECK (captured BETWEEN 0 AND amount),
    refunded         bigint  NOT NULL DEFAULT 0 CHECK (refunded BETWEEN 0 AND captured),
    voided           boolean NOT NULL DEFAULT false
);

CREATE TABLE sandbox_movements (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation        text   NOT NULL CHECK (operation IN ('capture', 'void', 'refund')),
    idempotency_key  text   NOT NULL,
    authorization_id text   NOT NULL REFERENCES sandbox_authorizations,
    amount           bigint NOT NULL,
    moved_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (operation, idempotency_key)
);
