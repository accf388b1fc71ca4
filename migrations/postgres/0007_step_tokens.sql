-- Each step's token counts as columns, so totals (the dashboard's task list) sum integers
-- instead of parsing every step's JSON, which holds up to 32 KB of page view.
ALTER TABLE task_steps ADD COLUMN prompt_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE task_steps ADD COLUMN completion_tokens BIGINT NOT NULL DEFAULT 0;
UPDATE task_steps SET
    prompt_tokens = COALESCE((data::json->>'prompt_tokens')::bigint, 0),
    completion_tokens = COALESCE((data::json->>'completion_tokens')::bigint, 0);
-- Covering, so the sums can be answered from the index alone.
CREATE INDEX task_steps_tokens ON task_steps (task_id, prompt_tokens, completion_tokens);
