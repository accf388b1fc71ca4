//! Artifact bytes (uploads, profiles, extensions, recordings, downloads) behind `object_store`:
//! a local folder for one machine, or an S3-compatible bucket that every API and worker process
//! shares, so no deployment depends on a shared disk. Callers only see storage keys (the same
//! keys in both cases; an S3 prefix is applied here, never stored in the database).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::Result;

/// Where artifact bytes live.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

/// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Cloudflare R2, ...).
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `https://host[:port]` of a non-AWS server (path-style requests); None for AWS.
    pub endpoint: Option<String>,
    /// None: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// None: the `AWS_*` environment (keys, web identity, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Keys are stored under this folder of the bucket (no leading or trailing `/`).
    pub prefix: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<hidden>"),
            )
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Blobs {
    /// Bytes under `dir` on the local disk (created if missing).
    pub fn local(dir: &std::path::Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(std::io::Error::other)?;
        Ok(Self { store: Arc::new(fs) })
    }

    /// Bytes in an S3-compatible bucket. Nothing is sent until the first call (see
    /// [`Blobs::check`]). An `http://` endpoint is allowed (a local S3 server); requests are
    /// retried for at most 30 s so an unreachable bucket fails a request rather than hangs it.
    pub fn s3(config: &S3Config) -> Result<Self, object_store::Error> {
        let allow_http = config
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        // Client options replace the builder's own, so `allow_http` is set here.
        let client = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(client)
            .with_bucket_name(&config.bucket);
        if let Some(endpoint) = &config.endpoint {
            b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &config.region {
            b = b.with_region(region);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let retry = RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        };
        let s3 = b.with_retry(retry).build()?;
        let store: Arc<dyn ObjectStore> = match config.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(prefix) if !prefix.is_empty() => Arc::new(PrefixStore::new(s3, prefix)),
            _ => Arc::new(s3),
        };
        Ok(Self { store })
    }

    /// Whether the storage answers and accepts our credentials: reads a key that does not
    /// exist (a missing object is the expected answer).
    pub async fn check(&self) -> Result<()> {
        match self.store.head(&Path::from("smoothd-check/absent")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores `bytes` under `key`.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.store.put(&Path::from(key), bytes.into()).await?;
        Ok(())
    }

    /// Reads the whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.store.get(&Path::from(key)).await?.bytes().await?)
    }

    /// The object's size in bytes.
    pub async fn size(&self, key: &str) -> Result<u64> {
        Ok(self.store.head(&Path::from(key)).await?.size)
    }

    /// Bytes `range` of the object (for HTTP range requests).
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self.store.get_range(&Path::from(key), range).await?)
    }

    /// Bytes `range` of the object as a stream (for serving large artifacts).
    pub async fn stream(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, object_store::Error>>> {
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..Default::default()
        };
        Ok(self.store.get_opts(&Path::from(key), opts).await?.into_stream())
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
