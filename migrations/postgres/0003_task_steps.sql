-- One row per agent step: what the model saw (sizes), said and did, what it cost and how long
-- it took, as JSON (served by GET /v1/task/{id}/steps). Written fenced on the attempt.
CREATE TABLE task_steps (
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (task_id, step)
);
