DROP TABLE replica_progress;
ALTER TABLE replica_catchup
    DROP COLUMN recent_since,
    DROP COLUMN claimed_by,
    DROP COLUMN claimed_until;
UPDATE replication_status SET behind_since = NULL WHERE behind_since = 'epoch';
ALTER TABLE replication_status DROP COLUMN behind_token;
