-- A rotated key names its replacement: it is rotated once at most, and of concurrent
-- rotations exactly one writes.
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
