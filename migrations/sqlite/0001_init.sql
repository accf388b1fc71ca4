-- smoothd schema, SQLite flavour. Times are epoch milliseconds; JSON is stored as text.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
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
    credits_used     INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    worker_id        TEXT,
    lease_expires_at INTEGER,
    cancel_requested BOOLEAN NOT NULL DEFAULT 0,
    effects_started  BOOLEAN NOT NULL DEFAULT 0,
    last_event_t     INTEGER NOT NULL DEFAULT 0,
    acked_event_t    INTEGER NOT NULL DEFAULT 0,
    live_token       TEXT NOT NULL,
    recording        TEXT,
    downloads        TEXT,
    data_deleted_at  INTEGER
);
CREATE INDEX tasks_owner_created ON tasks (owner, created_at DESC, id DESC);
CREATE INDEX tasks_queue ON tasks (status, created_at);

CREATE TABLE task_events (
    task_id   TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    t         INTEGER NOT NULL,
    id        TEXT NOT NULL,
    direction TEXT NOT NULL,
    name      TEXT NOT NULL,
    payload   TEXT NOT NULL,
    PRIMARY KEY (task_id, t)
);

CREATE TABLE profiles (
    owner          TEXT NOT NULL,
    id             TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    cookie_domains TEXT NOT NULL DEFAULT '[]',
    cookie_count   INTEGER NOT NULL DEFAULT 0,
    size_bytes     INTEGER NOT NULL DEFAULT 0,
    last_saved_at  INTEGER,
    storage_key    TEXT,
    PRIMARY KEY (owner, id)
);

CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    purpose     TEXT,
    size_bytes  INTEGER NOT NULL,
    storage_key TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX files_owner ON files (owner);

CREATE TABLE extensions (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    storage_key TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX extensions_owner ON extensions (owner);

CREATE TABLE artifacts (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    task_id      TEXT,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    storage_key  TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX artifacts_task ON artifacts (task_id);
