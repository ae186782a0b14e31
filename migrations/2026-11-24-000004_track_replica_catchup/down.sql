DROP TABLE replica_catchup;
ALTER TABLE replication_status DROP COLUMN behind_since;
