//! Artifact bytes (uploads, recordings, downloads) behind `object_store`, so the local data
//! folder can later be swapped for S3-compatible storage without touching callers.

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::Result;

/// Where artifact bytes live.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl Blobs {
    /// Bytes under `dir` on the local disk (created if missing).
    pub fn local(dir: &std::path::Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(std::io::Error::other)?;
        Ok(Self { store: Arc::new(fs) })
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
