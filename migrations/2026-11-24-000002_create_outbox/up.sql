-- Changes committed on the primary and not yet confirmed by the broker. A row is written in
-- the same transaction as the product change it describes, and deleted only after RabbitMQ
-- confirms the message. It holds the product row as it stood after the change.
CREATE TABLE outbox (
    seq         BIGSERIAL   PRIMARY KEY,
    event_id    UUID        NOT NULL,
    product_id  UUID        NOT NULL,
    version     BIGINT      NOT NULL,
    name        TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL,
    stock       INTEGER     NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ,
    -- The X-Request-Id of the write, carried into the message headers.
    request_id  TEXT,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- A queue table: every row is inserted once and deleted soon after. Vacuum it often so its
-- dead rows do not pile up under a steady write load.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000
);
