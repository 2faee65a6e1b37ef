-- A key may be switched off without being deleted, and may name the environment it is for.
ALTER TABLE api_keys ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE api_keys ADD COLUMN environment TEXT;
