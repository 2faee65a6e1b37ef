-- Accounts own keys and carry the plan. Times are unix microseconds (UTC).
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX accounts_name ON accounts (name);

-- Keys: only the digest of the key is kept, never the key.
CREATE TABLE api_keys (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL REFERENCES accounts (id),
    name                 TEXT NOT NULL,
    prefix               TEXT NOT NULL,
    digest               BLOB NOT NULL UNIQUE,
    -- The permission names, as a JSON array.
    permissions          TEXT NOT NULL,
    expiration           TEXT NOT NULL,
    rate_limit_requests  INTEGER,
    rate_limit_window_ms INTEGER,
    created_at           INTEGER NOT NULL,
    -- After a rotation, the end of the old key's grace.
    expires_at           INTEGER,
    deleted_at           INTEGER,
    replaced_by          TEXT,
    disabled             INTEGER NOT NULL DEFAULT 0,
    environment          TEXT,
    shares_limit_with    TEXT,
    last_used_at         INTEGER,
    last_request_at      INTEGER,
    admitted                    INTEGER NOT NULL DEFAULT 0,
    rejected_plan_required      INTEGER NOT NULL DEFAULT 0,
    rejected_missing_permission INTEGER NOT NULL DEFAULT 0,
    rejected_route_not_allowed  INTEGER NOT NULL DEFAULT 0,
    rejected_rate_limited       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_account ON api_keys (account_id) WHERE deleted_at IS NULL;
