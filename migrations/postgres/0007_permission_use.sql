-- When each key last used each permission: the latest admitted request whose route
-- needed it, as the usage flushes report it.
CREATE TABLE permission_use (
    key_id       TEXT NOT NULL,
    permission   TEXT NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key_id, permission)
);
