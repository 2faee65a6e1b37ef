-- Each key's requests by hour and by day (UTC), by outcome, added to by every usage flush
-- in the transaction of the totals. `start` is unix microseconds, as every time here.
CREATE TABLE usage_buckets (
    key_id             TEXT NOT NULL,
    granularity        TEXT NOT NULL CHECK (granularity IN ('hour', 'day')),
    start              INTEGER NOT NULL,
    admitted           INTEGER NOT NULL,
    plan_required      INTEGER NOT NULL,
    missing_permission INTEGER NOT NULL,
    route_not_allowed  INTEGER NOT NULL,
    rate_limited       INTEGER NOT NULL,
    PRIMARY KEY (key_id, granularity, start)
) WITHOUT ROWID;
