ALTER INDEX products_live_name_trgm RESET (gin_pending_list_limit);
