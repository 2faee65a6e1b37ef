-- Where a secret scanner found a key in public, and when it was told.
ALTER TABLE api_keys ADD COLUMN exposed_at INTEGER;
ALTER TABLE api_keys ADD COLUMN exposed_url TEXT;
ALTER TABLE api_keys ADD COLUMN exposed_source TEXT;
