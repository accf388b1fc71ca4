//! Replay paths (`experimental_features.replay`): list the caller's recorded paths, show one,
//! delete one. Every path belongs to the API key whose run recorded it; another key's paths
//! answer 404 and never appear in a listing.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use smoothd_store::ReplayPathRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Owner;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::models::{Envelope, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_paths))
        .routes(routes!(get_path, delete_path))
}

/// A recorded path, without its steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplaySummary {
    /// The cache key: `experimental_features.replay.key`, or the default derived from the
    /// task text, start URL and `response_model` (`auto-<hash>`).
    pub key: String,
    /// The task text of the run that recorded (or last healed) the path.
    pub task: String,
    /// Its start URL.
    pub url: Option<String>,
    /// Recorded steps.
    pub steps: i64,
    /// Epoch seconds.
    pub created_at: i64,
    /// Epoch seconds of the last recording or healing.
    pub updated_at: i64,
    /// Runs that replayed the path to its end with no model request but (at most) the answer.
    pub replays: i64,
}

/// A recorded path with its steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayDetail {
    #[serde(flatten)]
    pub summary: ReplaySummary,
    /// The path: `{"version", "answer", "output"?, "steps": [{"url", "shape", "actions": [{"id",
    /// "name", "args", "targets"}]}]}`. Element numbers are replaced by target descriptions,
    /// values equal to a metadata variable by `{"var": NAME}`, and secrets are only ever
    /// `<secret>NAME</secret>`. `output` (`{"output", "downloads", "task"}`) is there when the
    /// recorded answer was made of the run's downloads and nothing read from a page: a replay
    /// fills in its own downloads (`{{download:N}}`) and variables (`{{var:NAME}}`) with no model
    /// request.
    #[schema(value_type = Object)]
    pub path: Value,
}

fn summary(row: &ReplayPathRow) -> ReplaySummary {
    ReplaySummary {
        key: row.cache_key.clone(),
        task: row.task.clone(),
        url: row.url.clone(),
        steps: row.steps,
        created_at: row.created_at / 1000,
        updated_at: row.updated_at / 1000,
        replays: row.replays,
    }
}

/// This key's recorded paths, most recently updated first.
#[utoipa::path(get, path = "/replay", tag = "replay",
    responses((status = 200, body = Envelope<Vec<ReplaySummary>>), Owner))]
async fn list_paths(
    State(state): State<AppState>,
    owner: Owner,
) -> ApiResult<Json<Envelope<Vec<ReplaySummary>>>> {
    let rows = state.store.replay_paths(&owner.id).await?;
    Ok(Json(Envelope {
        r: rows.iter().map(summary).collect(),
    }))
}

/// One recorded path with its steps, as a replay would run it.
#[utoipa::path(get, path = "/replay/{key}", tag = "replay",
    params(("key" = String, Path, description = "The path's cache key")),
    responses((status = 200, body = Envelope<ReplayDetail>), (status = 404, body = ErrorBody), ApiPath<String>, Owner))]
async fn get_path(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Envelope<ReplayDetail>>> {
    let Some(row) = state.store.replay_path(&owner.id, &key).await? else {
        return Err(ApiError::not_found("replay path", &key));
    };
    let path = row.path_json()?;
    Ok(Json(Envelope {
        r: ReplayDetail {
            summary: summary(&row),
            path,
        },
    }))
}

/// Delete a recorded path: the next run with its key records afresh.
#[utoipa::path(delete, path = "/replay/{key}", tag = "replay",
    params(("key" = String, Path, description = "The path's cache key")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody), ApiPath<String>, Owner))]
async fn delete_path(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    if state.store.delete_replay_path(&owner.id, &key).await? {
        Ok(Json(Envelope { r: true }))
    } else {
        Err(ApiError::not_found("replay path", &key))
    }
}
