-- A key's own limits become a list (windows and quotas, per key or per account), kept as
-- its JSON text; a single limit of before is a list of one.
ALTER TABLE api_keys ADD COLUMN rate_limits TEXT;
UPDATE api_keys
SET rate_limits = json_build_array(json_build_object(
    'requests', rate_limit_requests, 'window_seconds', rate_limit_window_ms / 1000))::text
WHERE rate_limit_requests IS NOT NULL AND rate_limit_window_ms IS NOT NULL;
ALTER TABLE api_keys DROP COLUMN rate_limit_requests;
ALTER TABLE api_keys DROP COLUMN rate_limit_window_ms;
