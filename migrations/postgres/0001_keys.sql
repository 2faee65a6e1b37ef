-- Accounts own keys and carry the plan.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL CHECK (plan IN ('starter', 'growth', 'scale', 'business')),
    created_at  TIMESTAMPTZ NOT NULL
);

-- Keys: only the digest of the key is kept, never the key.
CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts (id),
    name                TEXT NOT NULL,
    prefix              TEXT NOT NULL,
    digest              BYTEA NOT NULL,
    permissions         SMALLINT NOT NULL,
    expiration          TEXT NOT NULL,
    rate_limit_requests BIGINT,
    rate_limit_window_ms BIGINT,
    created_at          TIMESTAMPTZ NOT NULL,
    -- After a rotation, the end of the old key's grace.
    expires_at          TIMESTAMPTZ,
    deleted_at          TIMESTAMPTZ,
    last_used_at        TIMESTAMPTZ,
    last_request_at     TIMESTAMPTZ,
    admitted            BIGINT NOT NULL DEFAULT 0,
    rejected_plan_required      BIGINT NOT NULL DEFAULT 0,
    rejected_missing_permission BIGINT NOT NULL DEFAULT 0,
    rejected_route_not_allowed  BIGINT NOT NULL DEFAULT 0,
    rejected_rate_limited       BIGINT NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX api_keys_digest ON api_keys (digest);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at DESC) WHERE deleted_at IS NULL;
