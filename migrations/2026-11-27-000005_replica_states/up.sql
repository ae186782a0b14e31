-- Who may serve reads, decided from durable facts on the primary's clock.
--
-- On a replica, `behind_since` says "this replica may lack changes made since then"; read-api
-- keeps it out of rotation while it is set. The epoch means "unknown history" (new, empty,
-- restored or never fully copied): it may lack anything, and the replicator copies it in
-- full. `behind_token` names who set the flag, so a clear only ever removes the flag it
-- was asked to clear, never a newer one another replicator instance set meanwhile.
ALTER TABLE replication_status ADD COLUMN behind_token UUID;
UPDATE replication_status
   SET behind_since = 'epoch', behind_token = gen_random_uuid()
 WHERE behind_since IS NULL AND last_event_at IS NULL AND events_applied = 0;

-- On the primary, a catch-up mark now also keeps:
-- - `recent_since`: the oldest change missed since the current round of copying began, so a
--   round that was overtaken by a new miss leaves only that to copy, not everything again;
-- - `claimed_by` / `claimed_until`: a lease, so one replicator instance at a time copies a
--   replica and a clear can never undo a mark another instance made.
ALTER TABLE replica_catchup
    ADD COLUMN recent_since  TIMESTAMPTZ,
    ADD COLUMN claimed_by    UUID,
    ADD COLUMN claimed_until TIMESTAMPTZ;

-- On the primary: the highest `events_applied` seen on each replica. The counter only grows,
-- so a replica showing less was restored from an older backup or replaced, and its history
-- is unknown again.
CREATE TABLE replica_progress (
    replica        TEXT   PRIMARY KEY,
    events_applied BIGINT NOT NULL
);
