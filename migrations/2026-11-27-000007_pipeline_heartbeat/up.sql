-- On the primary: the pipeline's heartbeat. write-api moves it forward every
-- HEARTBEAT_INTERVAL_MS (one small row update) and its relay publishes it through the broker
-- like a change; the replicator records it on every replica it reaches. So the end-to-end
-- delay of the pipeline shows even when nobody writes, and a stopped relay, broker or
-- replicator shows as a heartbeat that stops getting younger.
CREATE TABLE pipeline_heartbeat (
    singleton BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    beat      BIGINT      NOT NULL DEFAULT 0,
    beat_at   TIMESTAMPTZ NOT NULL DEFAULT 'epoch'
);
INSERT INTO pipeline_heartbeat DEFAULT VALUES;

-- On a replica: the newest heartbeat applied (the primary's clock) and when it was applied
-- (the replica's clock). Heartbeats are not data: routing never looks at them.
ALTER TABLE replication_status
    ADD COLUMN heartbeat_at         TIMESTAMPTZ,
    ADD COLUMN heartbeat_applied_at TIMESTAMPTZ;
