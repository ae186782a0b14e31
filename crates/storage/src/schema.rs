//! Diesel's view of the tables in `migrations/`. Written by hand (diesel's CLI needs libpq);
//! the storage tests check every column against the migrated database.

diesel::table! {
    products (id) {
        id -> Uuid,
        name -> Text,
        price_cents -> Int8,
        stock -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        version -> Int8,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> Int8,
        event_id -> Uuid,
        product_id -> Uuid,
        version -> Int8,
        name -> Text,
        price_cents -> Int8,
        stock -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        request_id -> Nullable<Text>,
        enqueued_at -> Timestamptz,
    }
}

diesel::table! {
    outbox_dead_letters (seq) {
        seq -> Int8,
        event_id -> Uuid,
        product_id -> Uuid,
        version -> Int8,
        name -> Text,
        price_cents -> Int8,
        stock -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        request_id -> Nullable<Text>,
        enqueued_at -> Timestamptz,
        reason -> Text,
        dead_lettered_at -> Timestamptz,
    }
}

diesel::table! {
    replication_status (singleton) {
        singleton -> Bool,
        last_event_id -> Nullable<Uuid>,
        last_event_seq -> Nullable<Int8>,
        last_event_at -> Nullable<Timestamptz>,
        last_applied_at -> Nullable<Timestamptz>,
        events_applied -> Int8,
        behind_since -> Nullable<Timestamptz>,
        behind_token -> Nullable<Uuid>,
        heartbeat_at -> Nullable<Timestamptz>,
        heartbeat_applied_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    pipeline_heartbeat (singleton) {
        singleton -> Bool,
        beat -> Int8,
        beat_at -> Timestamptz,
    }
}

diesel::table! {
    replica_catchup (replica) {
        replica -> Text,
        behind_since -> Timestamptz,
        marked_at -> Timestamptz,
        reason -> Text,
        recent_since -> Nullable<Timestamptz>,
        claimed_by -> Nullable<Uuid>,
        claimed_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    replica_progress (replica) {
        replica -> Text,
        events_applied -> Int8,
    }
}
