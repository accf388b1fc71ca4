//! Profiles, uploaded files and extensions: all scoped to the calling key.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use smoothd_core::ids;
use smoothd_core::time::now_ms;
use smoothd_store::{ExtensionRow, FileRow, StoreError};
use utoipa::{IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Owner;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::models::{Envelope, ErrorBody, ExtensionResponse, IdResponse, ProfileRequest, ProfileResponse};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_profile, list_profiles))
        .routes(routes!(delete_profile))
        .routes(routes!(upload_file))
        .routes(routes!(delete_file))
        .routes(routes!(upload_extension, list_extensions))
        .routes(routes!(delete_extension))
        .routes(routes!(delete_extension_legacy))
}

/// Create a browser profile (cookies and storage that persist across tasks).
#[utoipa::path(post, path = "/profile", tag = "profile", request_body = ProfileRequest,
    responses(
        (status = 200, body = Envelope<ProfileResponse>),
        (status = 409, description = "A profile with this id exists", body = ErrorBody),
        ApiJson<ProfileRequest>, Owner,
    ))]
async fn create_profile(
    State(state): State<AppState>,
    owner: Owner,
    ApiJson(body): ApiJson<ProfileRequest>,
) -> ApiResult<Json<Envelope<ProfileResponse>>> {
    let id = match body.id {
        None => ids::profile_id(),
        Some(s) if ids::is_valid_client_id(&s) => s,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "id: must be 1-128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
    };
    let row = match state.store.create_profile(&owner.id, &id).await {
        Ok(r) => r,
        Err(StoreError::Conflict) => {
            return Err(ApiError::conflict(format!("id: profile {id:?} already exists")));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(Envelope {
        r: ProfileResponse::from(&row),
    }))
}

/// The caller's profiles, newest first.
#[utoipa::path(get, path = "/profile", tag = "profile",
    responses((status = 200, body = Envelope<Vec<ProfileResponse>>), Owner))]
async fn list_profiles(
    State(state): State<AppState>,
    owner: Owner,
) -> ApiResult<Json<Envelope<Vec<ProfileResponse>>>> {
    let rows = state.store.list_profiles(&owner.id).await?;
    let r = rows.iter().map(ProfileResponse::from).collect();
    Ok(Json(Envelope { r }))
}

/// Delete a profile and its stored browser state.
#[utoipa::path(delete, path = "/profile/{id}", tag = "profile",
    params(("id" = String, Path, description = "Profile id")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody), ApiPath<String>, Owner))]
async fn delete_profile(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    match state.store.delete_profile(&owner.id, &id).await? {
        None => Err(ApiError::not_found("profile", &id)),
        Some(key) => {
            if let Some(key) = key
                && let Err(e) = state.blobs.delete(&key).await
            {
                tracing::warn!(profile = %id, error = %e, "could not delete a profile's bytes");
            }
            Ok(Json(Envelope { r: true }))
        }
    }
}

/// A multipart upload: a `file` part (with a file name) and an optional `file_purpose`;
/// other parts are refused.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadForm {
    /// The file.
    #[schema(value_type = String, format = Binary)]
    file: Bytes,
    /// The `file` part's file name, without folders.
    #[schema(ignore)]
    file_name: String,
    /// What the file is for (files only), up to 1024 characters.
    #[schema(max_length = 1024)]
    file_purpose: Option<String>,
}

impl FromRequest<AppState> for UploadForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let mp = Multipart::from_request(req, state).await.map_err(|e| {
            ApiError::bad_request(format!(
                "body: expected a multipart/form-data upload ({})",
                e.body_text()
            ))
        })?;
        read_upload(mp, state.config.max_upload_bytes).await
    }
}

/// What reading an upload may answer instead of running the handler.
impl IntoResponses for UploadForm {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        crate::error::error_responses(&[
            ("400", "Not a multipart/form-data upload"),
            ("413", "The file is larger than `max_upload_bytes`"),
            (
                "422",
                "No `file` part, a `file` part without a file name, a `file_purpose` over 1024 characters, or another part",
            ),
        ])
    }
}

/// Whether the part `name` was already read.
fn seen(name: &str, file: bool, purpose: bool) -> bool {
    if name == "file" { file } else { purpose }
}

/// Reads a multipart upload with a `file` part (and optional `file_purpose`), refusing more
/// than `limit` bytes.
async fn read_upload(mut mp: Multipart, limit: usize) -> ApiResult<UploadForm> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("file: larger than the {limit}-byte limit"),
        )
    };
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request(format!("body: malformed multipart upload ({})", e.body_text()))
        }
    };
    let mut file: Option<(String, Bytes)> = None;
    let mut purpose = None;
    while let Some(mut field) = mp.next_field().await.map_err(bad)? {
        match field.name() {
            Some(name @ ("file" | "file_purpose")) if seen(name, file.is_some(), purpose.is_some()) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{name}: given more than once"),
                ));
            }
            Some("file") => {
                let name = field
                    .file_name()
                    .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "file: the part has no file name",
                        )
                    })?;
                let mut buf = BytesMut::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if buf.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&chunk);
                }
                file = Some((name, buf.freeze()));
            }
            Some("file_purpose") => {
                let text = field.text().await.map_err(bad)?;
                if text.chars().count() > 1024 {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "file_purpose: at most 1024 characters",
                    ));
                }
                purpose = Some(text);
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "{}: unknown part; an upload has `file` and an optional `file_purpose`",
                        other.unwrap_or("(unnamed)")
                    ),
                ));
            }
        }
    }
    let (file_name, bytes) =
        file.ok_or_else(|| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "file: required multipart part"))?;
    Ok(UploadForm {
        file: bytes,
        file_name,
        file_purpose: purpose,
    })
}

/// Upload a file the agent can use (`files` in a task).
#[utoipa::path(post, path = "/file", tag = "file",
    request_body(content_type = "multipart/form-data", content = UploadForm),
    responses(
        (status = 200, body = Envelope<IdResponse>),
        UploadForm, Owner,
    ))]
async fn upload_file(
    State(state): State<AppState>,
    owner: Owner,
    mp: UploadForm,
) -> ApiResult<Json<Envelope<IdResponse>>> {
    let up = mp;
    let id = ids::file_id();
    let key = format!("files/{}/{id}", owner.id);
    let size = i64::try_from(up.file.len()).unwrap_or(i64::MAX);
    state.blobs.put(&key, up.file).await?;
    let row = FileRow {
        id: id.clone(),
        owner: owner.id.clone(),
        name: up.file_name,
        purpose: up.file_purpose,
        size_bytes: size,
        storage_key: key.clone(),
        created_at: now_ms(),
    };
    if let Err(e) = state.store.insert_file(&row).await {
        let _ = state.blobs.delete(&key).await;
        return Err(e.into());
    }
    Ok(Json(Envelope { r: IdResponse { id } }))
}

/// Delete an uploaded file.
#[utoipa::path(delete, path = "/file/{id}", tag = "file",
    params(("id" = String, Path, description = "File id")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody), ApiPath<String>, Owner))]
async fn delete_file(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    let row = state
        .store
        .delete_file(&owner.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("file", &id))?;
    if let Err(e) = state.blobs.delete(&row.storage_key).await {
        tracing::warn!(file = %id, error = %e, "could not delete a file's bytes");
    }
    Ok(Json(Envelope { r: true }))
}

/// Whether bytes look like a Chrome extension archive: a zip, or a crx (`Cr24`).
fn is_extension_archive(b: &[u8]) -> bool {
    b.starts_with(b"PK\x03\x04") || b.starts_with(b"Cr24")
}

/// Upload a Chrome extension (.zip or .crx) to load into tasks' browsers.
#[utoipa::path(post, path = "/extension", tag = "extension",
    request_body(content_type = "multipart/form-data", content = UploadForm, description = "`file`: a .zip or .crx"),
    responses(
        (status = 200, body = Envelope<IdResponse>),
        UploadForm, Owner,
        (status = 400, description = "Not a multipart upload, or the file is not a zip or crx", body = ErrorBody),
    ))]
async fn upload_extension(
    State(state): State<AppState>,
    owner: Owner,
    mp: UploadForm,
) -> ApiResult<Json<Envelope<IdResponse>>> {
    let up = mp;
    if !is_extension_archive(&up.file) {
        return Err(ApiError::bad_request(
            "file: not a Chrome extension archive (expected a .zip or .crx file)",
        ));
    }
    let id = ids::extension_id();
    let key = format!("extensions/{}/{id}", owner.id);
    let size = i64::try_from(up.file.len()).unwrap_or(i64::MAX);
    state.blobs.put(&key, up.file).await?;
    let row = ExtensionRow {
        id: id.clone(),
        owner: owner.id.clone(),
        file_name: up.file_name,
        size_bytes: size,
        storage_key: key.clone(),
        created_at: now_ms(),
    };
    if let Err(e) = state.store.insert_extension(&row).await {
        let _ = state.blobs.delete(&key).await;
        return Err(e.into());
    }
    Ok(Json(Envelope { r: IdResponse { id } }))
}

/// The caller's extensions, newest first.
#[utoipa::path(get, path = "/extension", tag = "extension",
    responses((status = 200, body = Envelope<Vec<ExtensionResponse>>), Owner))]
async fn list_extensions(
    State(state): State<AppState>,
    owner: Owner,
) -> ApiResult<Json<Envelope<Vec<ExtensionResponse>>>> {
    let rows = state.store.list_extensions(&owner.id).await?;
    let r = rows.iter().map(ExtensionResponse::from).collect();
    Ok(Json(Envelope { r }))
}

async fn remove_extension(state: &AppState, owner: &Owner, id: &str) -> ApiResult<Json<Envelope<bool>>> {
    let row = state
        .store
        .delete_extension(&owner.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("extension", id))?;
    if let Err(e) = state.blobs.delete(&row.storage_key).await {
        tracing::warn!(extension = %id, error = %e, "could not delete an extension's bytes");
    }
    Ok(Json(Envelope { r: true }))
}

/// Delete an extension.
#[utoipa::path(delete, path = "/extension/{id}", tag = "extension",
    params(("id" = String, Path, description = "Extension id")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody), ApiPath<String>, Owner))]
async fn delete_extension(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    remove_extension(&state, &owner, &id).await
}

/// Delete an extension (the path the published OpenAPI document uses).
#[utoipa::path(delete, path = "/browser/extension/{id}", tag = "extension",
    params(("id" = String, Path, description = "Extension id")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody), ApiPath<String>, Owner))]
async fn delete_extension_legacy(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    remove_extension(&state, &owner, &id).await
}
