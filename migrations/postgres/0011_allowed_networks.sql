-- The networks a key may be used from: a JSON array of CIDRs, or null for anywhere.
ALTER TABLE api_keys ADD COLUMN allowed_networks TEXT;
