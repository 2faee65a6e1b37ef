-- A key may be switched off without being deleted, and may name the environment it is for.
ALTER TABLE api_keys ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE api_keys ADD COLUMN environment TEXT;
-- A replacement counts in the rate-limit window of the first key of its rotation chain.
ALTER TABLE api_keys ADD COLUMN shares_limit_with TEXT;
