-- Live view, recordings and downloads.

-- Secrets every process shares without extra configuration (the artifact URL signing key),
-- created by the first process that needs one.
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Where a running task's live stream is served: the worker's internal listener. The API
-- relays viewers there, whichever process they reached.
CREATE TABLE live_streams (
    task_id    TEXT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    attempt    BIGINT NOT NULL,
    addr       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX artifacts_created ON artifacts (created_at);
