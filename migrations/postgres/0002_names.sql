-- Permissions and plans are the application's own names, not the positions of an enum:
-- permissions become an array of names, and plans any name (the key manager checks them).
ALTER TABLE accounts DROP CONSTRAINT IF EXISTS accounts_plan_check;

-- Rows written before this migration hold Nouvel's five permissions as bits, in this order.
ALTER TABLE api_keys ADD COLUMN permission_names TEXT[] NOT NULL DEFAULT '{}';
UPDATE api_keys SET permission_names = ARRAY(
    SELECT name
    FROM unnest(ARRAY['generate', 'projects:read', 'publish', 'analytics:read', 'copilot:chat'])
         WITH ORDINALITY AS nouvel(name, position)
    WHERE permissions & (1 << (position - 1)::int) <> 0
    ORDER BY position
);
ALTER TABLE api_keys DROP COLUMN permissions;
ALTER TABLE api_keys RENAME COLUMN permission_names TO permissions;
ALTER TABLE api_keys ALTER COLUMN permissions DROP DEFAULT;
