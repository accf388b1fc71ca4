-- Webhooks: per API key a signing secret and an optional default URL; per task one `final`
-- delivery, stored with the task and sent once the task is final, and (with `watch_steps`) one
-- `step` delivery per agent step; every attempt of each.
CREATE TABLE webhook_keys (
    owner      TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    url        TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL,
    owner            TEXT NOT NULL,
    url              TEXT NOT NULL,
    kind             TEXT NOT NULL DEFAULT 'final',
    step             INTEGER,
    watch_steps      BOOLEAN NOT NULL DEFAULT 0,
    steps_sent       INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    body             TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
