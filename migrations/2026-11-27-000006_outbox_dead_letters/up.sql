-- Outbox rows the relay cannot turn into a change event (a row that breaks the product rules,
-- written by hand or by an older version). The relay moves each one here, in the transaction
-- that takes it out of the outbox, so that it never blocks the rows behind it. An operator
-- reads them here (`reason` says why), then deletes them or puts a corrected row back in the
-- outbox.
CREATE TABLE outbox_dead_letters (
    seq              BIGINT      PRIMARY KEY,
    event_id         UUID        NOT NULL,
    product_id       UUID        NOT NULL,
    version          BIGINT      NOT NULL,
    name             TEXT        NOT NULL,
    price_cents      BIGINT      NOT NULL,
    stock            INTEGER     NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    deleted_at       TIMESTAMPTZ,
    request_id       TEXT,
    enqueued_at      TIMESTAMPTZ NOT NULL,
    reason           TEXT        NOT NULL,
    dead_lettered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
