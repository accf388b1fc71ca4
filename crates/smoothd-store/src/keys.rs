//! API keys. Only a SHA-256 of each key is stored: keys are 40 random base62 characters, so
//! a fast hash is enough and lookups stay one indexed query.

use sha2::{Digest, Sha256};
use smoothd_core::time::now_ms;

use crate::{Result, Store, StoreError, with_pool};

/// A stored key (never the key itself).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The first characters of a key, shown in listings so a person can tell keys apart.
fn prefix_of(key: &str) -> String {
    key.chars().take(8).collect()
}

impl Store {
    /// Stores a new key under a unique name; `Conflict` if the name is taken.
    pub async fn create_key(&self, name: &str, key: &str) -> Result<ApiKeyRow> {
        let row = ApiKeyRow {
            id: format!("key_{}", smoothd_core::ids::random_token(16)),
            name: name.to_string(),
            prefix: prefix_of(key),
            created_at: now_ms(),
            revoked_at: None,
        };
        let q = self
            .sql("INSERT INTO api_keys (id, name, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)");
        let res = with_pool!(self, pool => sqlx::query(&q)
            .bind(&row.id).bind(&row.name).bind(hash_key(key)).bind(&row.prefix).bind(row.created_at)
            .execute(pool).await.map(|r| r.rows_affected()));
        match res {
            Ok(_) => Ok(row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes `key` the key named `name`, keeping the row (and so the owner of everything
    /// created with it) if the name exists. Used for the bootstrap key from settings.
    pub async fn ensure_key(&self, name: &str, key: &str) -> Result<ApiKeyRow> {
        let q = self.sql("UPDATE api_keys SET key_hash = $1, prefix = $2, revoked_at = NULL WHERE name = $3");
        let updated = with_pool!(self, pool => sqlx::query(&q)
            .bind(hash_key(key)).bind(prefix_of(key)).bind(name).execute(pool).await?.rows_affected());
        if updated == 0 {
            return match self.create_key(name, key).await {
                Err(StoreError::Conflict) => self.find_key(key).await?.ok_or(StoreError::Conflict),
                other => other,
            };
        }
        self.find_key(key).await?.ok_or(StoreError::Conflict)
    }

    /// The live (not revoked) key with this value.
    pub async fn find_key(&self, key: &str) -> Result<Option<ApiKeyRow>> {
        let q = self.sql(
            "SELECT id, name, prefix, created_at, revoked_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ApiKeyRow>(&q).bind(hash_key(key)).fetch_optional(pool).await?),
        )
    }

    /// All keys, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRow>> {
        let q = "SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at, name";
        Ok(with_pool!(self, pool => sqlx::query_as::<_, ApiKeyRow>(q).fetch_all(pool).await?))
    }

    /// Sets (or clears) the spend cap of the key named `name`; false if there is no such live key.
    pub async fn set_key_max_cost(&self, name: &str, usd: Option<f64>) -> Result<bool> {
        let q = self.sql("UPDATE api_keys SET max_cost_usd = $1 WHERE name = $2 AND revoked_at IS NULL");
        let n = with_pool!(self, pool => sqlx::query(&q).bind(usd).bind(name).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    /// The spend cap of the key with this id (the owner of its tasks), if it has one.
    pub async fn key_max_cost(&self, id: &str) -> Result<Option<f64>> {
        let q = self.sql("SELECT max_cost_usd FROM api_keys WHERE id = $1");
        let usd: Option<Option<f64>> =
            with_pool!(self, pool => sqlx::query_scalar(&q).bind(id).fetch_optional(pool).await?);
        Ok(usd.flatten())
    }

    /// The spend caps of the keys that have one, by name.
    pub async fn key_max_costs(&self) -> Result<Vec<(String, f64)>> {
        let q = "SELECT name, max_cost_usd FROM api_keys WHERE max_cost_usd IS NOT NULL ORDER BY name";
        Ok(with_pool!(self, pool => sqlx::query_as::<_, (String, f64)>(q).fetch_all(pool).await?))
    }

    /// Revokes the key named `name`; false if there is no such live key.
    pub async fn revoke_key(&self, name: &str) -> Result<bool> {
        let q = self.sql("UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL");
        let n = with_pool!(self, pool => sqlx::query(&q).bind(now_ms()).bind(name).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }
}
