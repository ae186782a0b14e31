-- On a replica: set while the replicator copies what the replica missed during an outage
-- (from this time on). read-api counts a replica as lagging by now() - behind_since until
-- it is cleared, so a replica that just came back is not read before it has caught up.
ALTER TABLE replication_status ADD COLUMN behind_since TIMESTAMPTZ;

-- On the primary: replicas that missed events, and since when. Written by the replicator
-- before it acks events a replica could not take, cleared once catch-up brought it level.
CREATE TABLE replica_catchup (
    replica      TEXT        PRIMARY KEY,
    behind_since TIMESTAMPTZ NOT NULL,
    marked_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason       TEXT        NOT NULL
);
