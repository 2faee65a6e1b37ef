-- When each key last used each permission: the latest admitted request whose route
-- needed it, as the usage flushes report it. `last_used_at` is unix microseconds.
CREATE TABLE permission_use (
    key_id       TEXT NOT NULL,
    permission   TEXT NOT NULL,
    last_used_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, permission)
) WITHOUT ROWID;
