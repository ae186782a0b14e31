-- One row per product id, live or deleted. A delete keeps the row as a tombstone
-- (deleted_at set, version raised) so that an older change arriving late cannot revive it.
-- Primary and replicas hold this same table; a replica row equals the primary row.
CREATE TABLE products (
    id          UUID        PRIMARY KEY,
    name        TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- Exact money: integer cents, 0 to 1,000,000,000.00.
    price_cents BIGINT      NOT NULL CHECK (price_cents BETWEEN 0 AND 100000000000),
    stock       INTEGER     NOT NULL CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    -- 1 on first create, +1 for every update, delete and re-create of the id.
    version     BIGINT      NOT NULL CHECK (version >= 1),
    deleted_at  TIMESTAMPTZ
);

-- Keyset pagination over live products, ordered by (created_at, id).
CREATE INDEX products_live_by_created ON products (created_at, id) WHERE deleted_at IS NULL;
-- Catch-up and resync look for rows changed since a point in time.
CREATE INDEX products_by_updated ON products (updated_at);
-- Tombstone purge.
CREATE INDEX products_tombstones ON products (deleted_at) WHERE deleted_at IS NOT NULL;
