-- On a replica: what the replicator last applied there, and when. A single row.
CREATE TABLE replication_status (
    singleton       BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    -- The last applied event, by arrival (events arrive in any order).
    last_event_id   UUID,
    last_event_seq  BIGINT,
    -- The newest occurred_at among applied events: the replica holds every change the
    -- replicator has seen up to about this time.
    last_event_at   TIMESTAMPTZ,
    -- Wall-clock time of the last applied batch.
    last_applied_at TIMESTAMPTZ,
    events_applied  BIGINT      NOT NULL DEFAULT 0
);
INSERT INTO replication_status DEFAULT VALUES;
