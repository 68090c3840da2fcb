-- What alert history needs. Every added column is nullable or defaulted, so the seed's own
-- INSERT INTO alerts (service, severity, message) still works.
ALTER TABLE alerts
    ADD COLUMN fingerprint     TEXT,
    ADD COLUMN alertname       TEXT,
    ADD COLUMN cluster         TEXT,
    ADD COLUMN status          TEXT NOT NULL DEFAULT 'firing',
    ADD COLUMN starts_at       TIMESTAMPTZ,
    ADD COLUMN ends_at         TIMESTAMPTZ,
    ADD COLUMN resolved_at     TIMESTAMPTZ,
    ADD COLUMN labels          JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN annotations     JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN generator_url   TEXT,
    ADD COLUMN kafka_partition INTEGER,
    ADD COLUMN kafka_offset    BIGINT,
    -- true when `service` or `severity` was longer than its column: the full value is in labels.
    ADD COLUMN truncated       BOOLEAN NOT NULL DEFAULT FALSE;

-- One row per alert occurrence. Rows inserted by hand (no fingerprint) are not constrained.
CREATE UNIQUE INDEX alerts_occurrence ON alerts (fingerprint, starts_at);
CREATE INDEX alerts_service_starts ON alerts (service, starts_at DESC);
CREATE INDEX alerts_starts ON alerts (starts_at DESC, id DESC);
CREATE INDEX alerts_open ON alerts (severity, service) WHERE NOT resolved;

-- Messages that could never be stored or delivered, kept whole with the reason.
CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    stage       TEXT NOT NULL,          -- persist | notify | ...
    topic       TEXT,
    kafka_partition INTEGER,
    kafka_offset    BIGINT,
    receiver    TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    reason      TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    replayed_at TIMESTAMPTZ
);
-- Redelivery of the same poison message does not add a second row.
CREATE UNIQUE INDEX dead_letters_source ON dead_letters (stage, topic, kafka_partition, kafka_offset)
    WHERE kafka_offset IS NOT NULL;
