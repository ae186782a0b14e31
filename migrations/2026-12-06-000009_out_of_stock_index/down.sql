DROP INDEX IF EXISTS products_live_by_stock;
