-- smoothd schema, PostgreSQL flavour. Times are epoch milliseconds; JSON is stored as text.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    request          TEXT NOT NULL,
    device           TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    credits_used     BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    attempt          BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    worker_id        TEXT,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    effects_started  BOOLEAN NOT NULL DEFAULT FALSE,
    last_event_t     BIGINT NOT NULL DEFAULT 0,
    acked_event_t    BIGINT NOT NULL DEFAULT 0,
    live_token       TEXT NOT NULL,
    recording        TEXT,
    downloads        TEXT,
    data_deleted_at  BIGINT
);
CREATE INDEX tasks_owner_created ON tasks (owner, created_at DESC, id DESC);
CREATE INDEX tasks_queue ON tasks (status, created_at);

CREATE TABLE task_events (
    task_id   TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    t         BIGINT NOT NULL,
    id        TEXT NOT NULL,
    direction TEXT NOT NULL,
    name      TEXT NOT NULL,
    payload   TEXT NOT NULL,
    PRIMARY KEY (task_id, t)
);

CREATE TABLE profiles (
    owner          TEXT NOT NULL,
    id             TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    cookie_domains TEXT NOT NULL DEFAULT '[]',
    cookie_count   BIGINT NOT NULL DEFAULT 0,
    size_bytes     BIGINT NOT NULL DEFAULT 0,
    last_saved_at  BIGINT,
    storage_key    TEXT,
    PRIMARY KEY (owner, id)
);

CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    purpose     TEXT,
    size_bytes  BIGINT NOT NULL,
    storage_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX files_owner ON files (owner);

CREATE TABLE extensions (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    storage_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX extensions_owner ON extensions (owner);

CREATE TABLE artifacts (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    task_id      TEXT,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    storage_key  TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX artifacts_task ON artifacts (task_id);
