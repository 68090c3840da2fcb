-- Notifications waiting to be sent. The notify consumer records each routed alert state here
-- and commits its offsets at once; a delivery worker in every notify process claims rows
-- (SKIP LOCKED, a lease it renews while it sends), throttles and digests them, and on an
-- outcome moves the row to `notifications` in one transaction. A dead process's claims lapse
-- with its lease; a row is never lost, and is sent again only if its process died mid-send.
CREATE TABLE notification_outbox (
    id            BIGSERIAL PRIMARY KEY,
    key           TEXT NOT NULL UNIQUE,      -- notifications.key: receiver + alert state
    receiver      TEXT NOT NULL,
    event         BYTEA NOT NULL,            -- the alert event as JSON, as it was in Kafka
    enqueued_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    claimed_by    TEXT,                      -- the delivery worker holding it, if any
    claimed_until TIMESTAMPTZ,               -- its lease; unclaimed: not before this time
    attempts      INT NOT NULL DEFAULT 0
);
CREATE INDEX notification_outbox_claimable ON notification_outbox (claimed_until, id);
