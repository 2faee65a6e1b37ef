-- Each key's requests by hour and by day (UTC), by outcome, added to by every usage flush
-- in the transaction of the totals.
CREATE TABLE usage_buckets (
    key_id             TEXT NOT NULL,
    granularity        TEXT NOT NULL CHECK (granularity IN ('hour', 'day')),
    start              TIMESTAMPTZ NOT NULL,
    admitted           INT8 NOT NULL,
    plan_required      INT8 NOT NULL,
    missing_permission INT8 NOT NULL,
    route_not_allowed  INT8 NOT NULL,
    rate_limited       INT8 NOT NULL,
    PRIMARY KEY (key_id, granularity, start)
);
