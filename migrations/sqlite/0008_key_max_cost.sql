-- A per-key spend cap in US dollars (`smoothd keys create --max-cost-usd`, `smoothd keys max-cost`):
-- the default of the key's tasks, the smallest of it, the task's and the server's winning.
ALTER TABLE api_keys ADD COLUMN max_cost_usd REAL;
