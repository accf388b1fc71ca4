-- Replay paths (experimental_features.replay): per API key and cache key, the action path a
-- successful run recorded, as JSON (secrets as <secret>NAME</secret>, metadata values as
-- variables), with the task it came from and how often it was replayed.
CREATE TABLE replay_paths (
    owner      TEXT NOT NULL,
    cache_key  TEXT NOT NULL,
    task       TEXT NOT NULL,
    url        TEXT,
    steps      BIGINT NOT NULL,
    path       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    replays    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, cache_key)
);
