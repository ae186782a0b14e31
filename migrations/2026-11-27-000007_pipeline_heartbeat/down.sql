ALTER TABLE replication_status DROP COLUMN heartbeat_at, DROP COLUMN heartbeat_applied_at;
DROP TABLE pipeline_heartbeat;
