//! Replay paths around an agent run: the stored path is loaded before the run (by the task's
//! API key and cache key) and given to the job; after a successful run the recorded or healed
//! path is stored, or a full replay counted. A store failure never fails the task: the run
//! records afresh, or its path is not kept (logged).

use serde_json::Value;
use smoothd_agent::{PathOutcome, Plan, ReplayPath};
use smoothd_core::replay::{ReplayMode, ReplayOptions};
use smoothd_store::{NewReplayPath, Store};

/// Where a run's path lives, and what it is stored with.
#[derive(Debug, Clone)]
pub(crate) struct PathKey {
    owner: String,
    key: String,
    task: String,
    url: Option<String>,
}

/// The job's replay plan and the path's key, for a task `options` asks to replay (`None`
/// when it does not, or with `mode: off`).
pub(crate) async fn plan(
    store: &Store,
    owner: &str,
    options: Option<&ReplayOptions>,
    task: &str,
    url: Option<&str>,
    response_model: Option<&Value>,
) -> (Option<Plan>, Option<PathKey>) {
    let Some(options) = options.filter(|o| o.mode != ReplayMode::Off) else {
        return (None, None);
    };
    let key = PathKey {
        owner: owner.to_string(),
        key: options.cache_key(task, url, response_model),
        task: task.to_string(),
        url: url.map(str::to_string),
    };
    let path = if options.mode == ReplayMode::Auto {
        load(store, &key).await
    } else {
        None
    };
    tracing::info!(replay.key = %key.key, mode = ?options.mode, found = path.is_some(), "replay path");
    (
        Some(Plan {
            mode: options.mode,
            path,
        }),
        Some(key),
    )
}

async fn load(store: &Store, key: &PathKey) -> Option<ReplayPath> {
    let row = match store.replay_path(&key.owner, &key.key).await {
        Ok(row) => row?,
        Err(e) => {
            tracing::warn!(error = %e, "replay: the stored path could not be read; recording afresh");
            return None;
        }
    };
    match row.path_json().map(serde_json::from_value::<ReplayPath>) {
        Ok(Ok(path)) => Some(path),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "replay: the stored path is not one this version reads; recording afresh");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "replay: the stored path is not JSON; recording afresh");
            None
        }
    }
}

/// Stores the run's path, or counts the replay.
pub(crate) async fn keep(store: &Store, key: Option<&PathKey>, outcome: Option<&PathOutcome>) {
    let (Some(key), Some(outcome)) = (key, outcome) else {
        return;
    };
    let done = match outcome {
        PathOutcome::Replayed => store.count_replay(&key.owner, &key.key).await,
        PathOutcome::Save(path) => match serde_json::to_value(path) {
            Ok(doc) => {
                store
                    .save_replay_path(&NewReplayPath {
                        owner: &key.owner,
                        cache_key: &key.key,
                        task: &key.task,
                        url: key.url.as_deref(),
                        steps: i64::try_from(path.steps.len()).unwrap_or(i64::MAX),
                        path: &doc,
                    })
                    .await
            }
            Err(e) => Err(e.into()),
        },
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, replay.key = %key.key, "replay: the path could not be stored");
    }
}
