//! Things a key owns besides tasks: profiles, uploaded files, extensions, and the index of
//! artifacts whose bytes live in [`crate::Blobs`]. Every read is scoped to the owner.

use smoothd_core::time::now_ms;

use crate::{Result, Store, StoreError, with_pool};

/// A browser profile.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileRow {
    pub id: String,
    pub created_at: i64,
    pub cookie_domains: String,
    pub cookie_count: i64,
    pub size_bytes: i64,
    pub last_saved_at: Option<i64>,
    pub storage_key: Option<String>,
}

impl ProfileRow {
    /// The stored cookie domains.
    pub fn cookie_domains(&self) -> Vec<String> {
        serde_json::from_str(&self.cookie_domains).unwrap_or_default()
    }
}

/// An uploaded file.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub purpose: Option<String>,
    pub size_bytes: i64,
    pub storage_key: String,
    pub created_at: i64,
}

/// An uploaded browser extension.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExtensionRow {
    pub id: String,
    pub owner: String,
    pub file_name: String,
    pub size_bytes: i64,
    pub storage_key: String,
    pub created_at: i64,
}

/// A stored artifact (recording, downloads archive, screenshot...).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: String,
    pub owner: String,
    pub task_id: Option<String>,
    pub kind: String,
    pub name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub storage_key: String,
    pub created_at: i64,
}

const PROFILE_COLUMNS: &str =
    "id, created_at, cookie_domains, cookie_count, size_bytes, last_saved_at, storage_key";

impl Store {
    /// Creates an empty profile; `Conflict` if the owner already has one with this id.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn create_profile(&self, owner: &str, id: &str) -> Result<ProfileRow> {
        let q = self.sql("INSERT INTO profiles (owner, id, created_at) VALUES ($1, $2, $3)");
        let res = with_pool!(self, pool => sqlx::query(&q).bind(owner).bind(id).bind(now_ms()).execute(pool).await.map(|r| r.rows_affected()));
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::Conflict),
            Err(e) => return Err(e.into()),
        }
        self.get_profile(owner, id)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// One profile.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn get_profile(&self, owner: &str, id: &str) -> Result<Option<ProfileRow>> {
        let q = match self.backend {
            crate::Backend::Postgres(_) => {
                "SELECT id, created_at, cookie_domains, cookie_count, size_bytes, last_saved_at, storage_key \
                 FROM profiles WHERE owner = $1 AND id = $2"
            }
            crate::Backend::Sqlite(_) => {
                "SELECT id, created_at, cookie_domains, cookie_count, size_bytes, last_saved_at, storage_key \
                 FROM profiles WHERE owner = ?1 AND id = ?2"
            }
        };
        debug_assert!(q.contains(PROFILE_COLUMNS));
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ProfileRow>(q).bind(owner).bind(id).fetch_optional(pool).await?),
        )
    }

    /// The owner's profiles, newest first.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn list_profiles(&self, owner: &str) -> Result<Vec<ProfileRow>> {
        let q = self.sql(
            "SELECT id, created_at, cookie_domains, cookie_count, size_bytes, last_saved_at, storage_key \
             FROM profiles WHERE owner = $1 ORDER BY created_at DESC, id",
        );
        Ok(with_pool!(self, pool => sqlx::query_as::<_, ProfileRow>(&q).bind(owner).fetch_all(pool).await?))
    }

    /// Deletes a profile; returns its storage key (to delete the bytes) or `None` if absent.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn delete_profile(&self, owner: &str, id: &str) -> Result<Option<Option<String>>> {
        let q = self.sql("DELETE FROM profiles WHERE owner = $1 AND id = $2 RETURNING storage_key");
        let row: Option<Option<String>> =
            with_pool!(self, pool => sqlx::query_scalar(&q).bind(owner).bind(id).fetch_optional(pool).await?);
        Ok(row)
    }

    /// Records an uploaded file (bytes already stored).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn insert_file(&self, f: &FileRow) -> Result<()> {
        let q = self.sql(
            "INSERT INTO files (id, owner, name, purpose, size_bytes, storage_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(&f.id).bind(&f.owner).bind(&f.name).bind(&f.purpose)
            .bind(f.size_bytes).bind(&f.storage_key).bind(f.created_at).execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// The owner's files with these ids (for a task about to use them).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn get_file(&self, owner: &str, id: &str) -> Result<Option<FileRow>> {
        let q = self.sql(
            "SELECT id, owner, name, purpose, size_bytes, storage_key, created_at FROM files WHERE owner = $1 AND id = $2",
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, FileRow>(&q).bind(owner).bind(id).fetch_optional(pool).await?),
        )
    }

    /// Deletes a file record; returns it so the caller can delete its bytes.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn delete_file(&self, owner: &str, id: &str) -> Result<Option<FileRow>> {
        let q = self.sql(
            "DELETE FROM files WHERE owner = $1 AND id = $2 \
             RETURNING id, owner, name, purpose, size_bytes, storage_key, created_at",
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, FileRow>(&q).bind(owner).bind(id).fetch_optional(pool).await?),
        )
    }

    /// Records an uploaded extension (bytes already stored).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn insert_extension(&self, e: &ExtensionRow) -> Result<()> {
        let q = self.sql(
            "INSERT INTO extensions (id, owner, file_name, size_bytes, storage_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(&e.id).bind(&e.owner).bind(&e.file_name)
            .bind(e.size_bytes).bind(&e.storage_key).bind(e.created_at).execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// One extension.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn get_extension(&self, owner: &str, id: &str) -> Result<Option<ExtensionRow>> {
        let q = self.sql(
            "SELECT id, owner, file_name, size_bytes, storage_key, created_at FROM extensions \
             WHERE owner = $1 AND id = $2",
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ExtensionRow>(&q).bind(owner).bind(id).fetch_optional(pool).await?),
        )
    }

    /// The owner's extensions, newest first.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn list_extensions(&self, owner: &str) -> Result<Vec<ExtensionRow>> {
        let q = self.sql(
            "SELECT id, owner, file_name, size_bytes, storage_key, created_at FROM extensions \
             WHERE owner = $1 ORDER BY created_at DESC, id",
        );
        Ok(with_pool!(self, pool => sqlx::query_as::<_, ExtensionRow>(&q).bind(owner).fetch_all(pool).await?))
    }

    /// Deletes an extension record; returns it so the caller can delete its bytes.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn delete_extension(&self, owner: &str, id: &str) -> Result<Option<ExtensionRow>> {
        let q = self.sql(
            "DELETE FROM extensions WHERE owner = $1 AND id = $2 \
             RETURNING id, owner, file_name, size_bytes, storage_key, created_at",
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ExtensionRow>(&q).bind(owner).bind(id).fetch_optional(pool).await?),
        )
    }

    /// Records an artifact (bytes already stored).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn insert_artifact(&self, a: &ArtifactRow) -> Result<()> {
        let q = self.sql(
            "INSERT INTO artifacts (id, owner, task_id, kind, name, content_type, size_bytes, storage_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(&a.id).bind(&a.owner).bind(&a.task_id).bind(&a.kind)
            .bind(&a.name).bind(&a.content_type).bind(a.size_bytes).bind(&a.storage_key).bind(a.created_at)
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// A task's artifacts, oldest first.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn task_artifacts(&self, task_id: &str) -> Result<Vec<ArtifactRow>> {
        let q = self.sql(
            "SELECT id, owner, task_id, kind, name, content_type, size_bytes, storage_key, created_at \
             FROM artifacts WHERE task_id = $1 ORDER BY created_at, id",
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ArtifactRow>(&q).bind(task_id).fetch_all(pool).await?),
        )
    }
}

impl Store {
    /// Takes the write lock of a profile for `task_id`: free, or held by a task that is no
    /// longer running (so a crashed task never keeps it). False while another task holds it.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn lock_profile(&self, owner: &str, id: &str, task_id: &str) -> Result<bool> {
        let q = self.sql(
            "UPDATE profiles SET locked_by = $3 WHERE owner = $1 AND id = $2 AND (locked_by IS NULL \
             OR locked_by = $3 OR locked_by NOT IN (SELECT t.id FROM tasks t WHERE t.status IN ('waiting', 'running')))",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(owner).bind(id).bind(task_id)
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(n > 0)
    }

    /// Releases a profile's write lock if `task_id` holds it.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn unlock_profile(&self, owner: &str, id: &str, task_id: &str) -> Result<()> {
        let q =
            self.sql("UPDATE profiles SET locked_by = NULL WHERE owner = $1 AND id = $2 AND locked_by = $3");
        with_pool!(self, pool => sqlx::query(&q).bind(owner).bind(id).bind(task_id)
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// Records a saved profile: where its archive is and what it holds.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn save_profile(
        &self,
        owner: &str,
        id: &str,
        storage_key: &str,
        size_bytes: i64,
        cookie_count: i64,
        cookie_domains: &[String],
    ) -> Result<bool> {
        let domains = serde_json::to_string(cookie_domains)?;
        let q = self.sql(
            "UPDATE profiles SET storage_key = $3, size_bytes = $4, cookie_count = $5, cookie_domains = $6, \
             last_saved_at = $7 WHERE owner = $1 AND id = $2",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(owner).bind(id).bind(storage_key).bind(size_bytes)
            .bind(cookie_count).bind(domains).bind(now_ms()).execute(pool).await.map(|r| r.rows_affected())?);
        Ok(n > 0)
    }
}
