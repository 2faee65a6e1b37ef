-- The outbox: events of key changes, written in the transaction of the change (with its
-- audit entry), and found by the sweep; kept with their delivery state. `subject` (the
-- key's id) orders a key's events; `once` keeps the sweep's events to one each.
CREATE TABLE events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    once         TEXT UNIQUE,
    attempts     BIGINT NOT NULL DEFAULT 0,
    delivered_to BIGINT NOT NULL DEFAULT 0,
    due_at       TIMESTAMPTZ NOT NULL,
    leased_until TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX events_unfinished ON events (subject, seq) WHERE finished_at IS NULL;
CREATE INDEX events_finished ON events (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX api_keys_expires ON api_keys (expires_at) WHERE deleted_at IS NULL;
