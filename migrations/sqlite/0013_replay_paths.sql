-- Replay paths (experimental_features.replay): per API key and cache key, the action path a
-- successful run recorded, as JSON (secrets as <secret>NAME</secret>, metadata values as
-- variables), with the task it came from and how often it was replayed.
CREATE TABLE replay_paths (
    owner      TEXT NOT NULL,
    cache_key  TEXT NOT NULL,
    task       TEXT NOT NULL,
    url        TEXT,
    steps      INTEGER NOT NULL,
    path       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    replays    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, cache_key)
);
