-- Every management action, written in the transaction of the change it records. Ids
-- sort by time; `at` is unix microseconds.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          INTEGER NOT NULL,
    action      TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    key_id      TEXT,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT,
    details     TEXT NOT NULL
);
CREATE INDEX audit_log_account ON audit_log (account_id, id DESC);
CREATE INDEX audit_log_at ON audit_log (at);
