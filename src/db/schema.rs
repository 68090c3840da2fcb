//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    alerts (id) {
        id -> Int4,
        created_at -> Nullable<Timestamp>,
        #[max_length = 50]
        service -> Varchar,
        #[max_length = 20]
        severity -> Varchar,
        message -> Nullable<Text>,
        resolved -> Nullable<Bool>,
        fingerprint -> Nullable<Text>,
        alertname -> Nullable<Text>,
        cluster -> Nullable<Text>,
        status -> Text,
        starts_at -> Nullable<Timestamptz>,
        ends_at -> Nullable<Timestamptz>,
        resolved_at -> Nullable<Timestamptz>,
        labels -> Jsonb,
        annotations -> Jsonb,
        generator_url -> Nullable<Text>,
        kafka_partition -> Nullable<Int4>,
        kafka_offset -> Nullable<Int8>,
        truncated -> Bool,
    }
}

diesel::table! {
    dead_letters (id) {
        id -> Int8,
        created_at -> Timestamptz,
        stage -> Text,
        topic -> Nullable<Text>,
        kafka_partition -> Nullable<Int4>,
        kafka_offset -> Nullable<Int8>,
        receiver -> Nullable<Text>,
        attempts -> Int4,
        reason -> Text,
        payload -> Bytea,
        replayed_at -> Nullable<Timestamptz>,
    }
}
