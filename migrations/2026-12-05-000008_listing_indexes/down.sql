DROP INDEX IF EXISTS products_live_by_price;
DROP INDEX IF EXISTS products_live_name_trgm;
-- The extension stays: another schema object may use it by now.
