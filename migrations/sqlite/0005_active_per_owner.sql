-- The per-key concurrency limit counts a key's waiting and running tasks at every submit.
CREATE INDEX tasks_owner_active ON tasks (owner) WHERE status IN ('waiting', 'running');
