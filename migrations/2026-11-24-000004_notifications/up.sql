-- One row per notification done (sent, or dead-lettered): receiver + alert state. A Kafka
-- redelivery of the same state finds its row and sends nothing again.
CREATE TABLE notifications (
    key         TEXT PRIMARY KEY,
    receiver    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      TEXT NOT NULL,
    outcome     TEXT NOT NULL,            -- sent | dead_lettered
    done_at     TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX notifications_done_at ON notifications (done_at);
