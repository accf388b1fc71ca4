//! Getting a task its browser: a fresh context in the shared warm Chromium, or, when the task
//! needs state of its own (a profile, extensions, client certificates), a dedicated Chromium on
//! a restored profile folder with the extensions unpacked and loaded and, for certificates, a
//! `HOME` of its own whose NSS database holds only this task's certificates (removed with the
//! process). At the end a writable profile is saved back
//! through the artifact store and its lock released.
//!
//! Profile locking: a writable profile is held by one running task at a time (a database
//! lock tied to the task, so a crashed task cannot keep it); a second task waits for it.
//! Read-only users load the last saved state and never wait.
//!
//! Media: every browser gets its capture here (see [`crate::media`]): the live view, the
//! recording and the downloads, finalized in [`Prepared::finish`] before the task turns final.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use smoothd_browser::storage::{pack_profile, unpack_extension, unpack_profile};
use smoothd_browser::{BrowserError, BrowserPool, BrowserProcess, BrowserSession, SessionOptions, TempDir};
use smoothd_store::{Blobs, StoreError};

use crate::context::TaskContext;
use crate::media::{MediaServices, TaskMedia};

/// One of the task's uploaded files, on disk where the browser can read it.
#[derive(Debug, Clone)]
pub struct PlacedFile {
    pub id: String,
    pub name: String,
    pub path: std::path::PathBuf,
}

/// A task's browser and what must happen when it ends.
pub struct Prepared {
    pub session: BrowserSession,
    /// The task's `files`, ready for file inputs.
    pub files: Vec<PlacedFile>,
    _files_dir: Option<TempDir>,
    /// Set for a dedicated process (closed with the task).
    dedicated: Option<Arc<BrowserProcess>>,
    /// The profile to save at the end (writable ones only).
    save_profile: Option<String>,
    _extensions: Vec<TempDir>,
    /// Live view, recording and downloads (None when this process captures nothing).
    media: Option<TaskMedia>,
}

/// Why a task's browser could not be had. The text is the task's final error.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// This machine has no browser (the reason, e.g. Chromium is not installed).
    #[error("{0}")]
    NoBrowser(String),
    /// A temporary folder could not be made.
    #[error("cannot create a folder: {0}")]
    Folder(std::io::Error),
    /// The browser could not be started, reached or configured.
    #[error("{0}")]
    Browser(BrowserError),
    /// The browser is up but a session in it could not be opened.
    #[error("cannot open a browser: {0}")]
    Open(BrowserError),
    /// A profile, extensions or certificates need a Chromium of this worker's own, and it
    /// uses a remote browser.
    #[error(
        "{needs} a Chromium of its own, which this worker cannot start: it uses the remote \
         browser at {endpoint} (browser_ws); run such tasks on workers without browser_ws"
    )]
    RemoteBrowser { needs: &'static str, endpoint: String },
    /// The database could not be read.
    #[error("{0}")]
    Store(StoreError),
    /// A profile, extension or file the task names is gone.
    #[error("{what} {id:?} was deleted")]
    Deleted { what: &'static str, id: String },
    /// A stored archive could not be read.
    #[error("cannot read {what} {id:?}: {source}")]
    Read {
        what: &'static str,
        id: String,
        source: StoreError,
    },
    /// A profile archive could not be unpacked.
    #[error("cannot restore profile {id:?}: {source}")]
    Restore { id: String, source: std::io::Error },
    /// An extension could not be unpacked.
    #[error("extension {id:?} ({file}): {why}")]
    Extension { id: String, file: String, why: String },
    /// A client certificate is not base64.
    #[error("certificates[{index}].file: not valid base64: {source}")]
    Certificate {
        index: usize,
        source: base64::DecodeError,
    },
    /// An uploaded file could not be put on disk.
    #[error("cannot place file {id:?}: {source}")]
    PlaceFile { id: String, source: std::io::Error },
    /// A folder for uploaded files could not be made.
    #[error("{0}")]
    Io(std::io::Error),
    /// Unpacking on a blocking thread panicked.
    #[error("{0}")]
    Join(tokio::task::JoinError),
    /// The profile's write lock could not be taken.
    #[error("cannot lock profile {id:?}: {source}")]
    Lock { id: String, source: StoreError },
    /// The task was stopped while another task held its profile.
    #[error("stopped while waiting for the profile")]
    StoppedWaiting,
}

fn temp(prefix: &str) -> Result<TempDir, SetupError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(SetupError::Folder)
}

/// Opens the task's browser: a context in the shared Chromium, or a dedicated one when the
/// task needs state of its own.
pub async fn prepare(
    ctx: &TaskContext,
    pool: &Arc<BrowserPool>,
    blobs: &Blobs,
    media: Option<&MediaServices>,
    opts: SessionOptions,
) -> Result<Prepared, SetupError> {
    let spec = &ctx.spec;
    let (files, files_dir) = place_files(ctx, blobs).await?;
    let prepared = if spec.profile_id.is_none() && spec.extensions.is_empty() && spec.certificates.is_empty()
    {
        let process = pool.shared_for(opts.device).await.map_err(SetupError::Browser)?;
        let session = pool.open_session(process, opts).await.map_err(SetupError::Open)?;
        Prepared {
            session,
            files,
            _files_dir: files_dir,
            dedicated: None,
            save_profile: None,
            _extensions: Vec::new(),
            media: None,
        }
    } else {
        let mut prepared = dedicated(ctx, pool, blobs, opts).await?;
        prepared.files = files;
        prepared._files_dir = files_dir;
        prepared
    };
    Ok(prepared.with_media(ctx, media).await)
}

/// A Chromium of the task's own on its restored profile, with its extensions and
/// certificates. A worker on a remote browser cannot start one.
async fn dedicated(
    ctx: &TaskContext,
    pool: &BrowserPool,
    blobs: &Blobs,
    mut opts: SessionOptions,
) -> Result<Prepared, SetupError> {
    let spec = &ctx.spec;
    let owner = ctx.task.owner.clone();
    let Some(launch) = pool.config() else {
        let needs = match (spec.profile_id.is_some(), spec.extensions.is_empty()) {
            _ if !spec.certificates.is_empty() => "certificates need",
            (true, false) => "profile_id and extensions need",
            (true, true) => "profile_id needs",
            _ => "extensions need",
        };
        return Err(SetupError::RemoteBrowser {
            needs,
            endpoint: pool.remote_endpoint().unwrap_or_default().to_string(),
        });
    };
    // Before the profile lock: a certificate that cannot be imported fails the task at once.
    let home = certificate_home(spec).await?;
    let data_dir = temp("smoothd-chromium-")?;
    let mut save_profile = None;
    if let Some(profile) = &spec.profile_id {
        if !spec.profile_read_only {
            lock_profile(ctx, &owner, profile).await?;
            save_profile = Some(profile.clone());
        }
        restore_profile(ctx, blobs, profile, data_dir.path()).await?;
    }
    let (ext_dirs, ext_roots) = unpack_extensions(ctx, blobs).await?;
    let args = chromium_args(&ext_roots, opts.proxy_server.as_deref());
    if home.is_some()
        && let Err(e) = smoothd_browser::certs::auto_select_certificates(data_dir.path())
    {
        release(ctx, &owner, save_profile.as_deref()).await;
        return Err(SetupError::Browser(e));
    }
    let process = match BrowserProcess::launch_with(launch, opts.device, &args, Some(data_dir), home).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            release(ctx, &owner, save_profile.as_deref()).await;
            return Err(SetupError::Browser(e));
        }
    };
    opts.default_context = true;
    match BrowserSession::open(process.clone(), opts).await {
        Ok(session) => Ok(Prepared {
            session,
            files: Vec::new(),
            _files_dir: None,
            dedicated: Some(process),
            save_profile,
            _extensions: ext_dirs,
            media: None,
        }),
        Err(e) => {
            process.kill().await;
            release(ctx, &owner, save_profile.as_deref()).await;
            Err(SetupError::Open(e))
        }
    }
}

/// Unpacks the last saved state of `profile` into `dir` (nothing when it was never saved).
async fn restore_profile(
    ctx: &TaskContext,
    blobs: &Blobs,
    profile: &str,
    dir: &std::path::Path,
) -> Result<(), SetupError> {
    let row = ctx
        .store()
        .get_profile(&ctx.task.owner, profile)
        .await
        .map_err(SetupError::Store)?
        .ok_or_else(|| SetupError::Deleted {
            what: "profile",
            id: profile.to_string(),
        })?;
    let Some(key) = &row.storage_key else {
        return Ok(());
    };
    let archive = blobs.get(key).await.map_err(|source| SetupError::Read {
        what: "profile",
        id: profile.to_string(),
        source,
    })?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || unpack_profile(&archive, &dir))
        .await
        .map_err(SetupError::Join)?
        .map_err(|source| SetupError::Restore {
            id: profile.to_string(),
            source,
        })
}

/// The task's extensions, each unpacked in a folder of its own; the folders (kept for the
/// task's life) and the extensions' roots.
async fn unpack_extensions(
    ctx: &TaskContext,
    blobs: &Blobs,
) -> Result<(Vec<TempDir>, Vec<std::path::PathBuf>), SetupError> {
    let mut ext_dirs = Vec::new();
    let mut ext_roots = Vec::new();
    for id in &ctx.spec.extensions {
        let row = ctx
            .store()
            .get_extension(&ctx.task.owner, id)
            .await
            .map_err(SetupError::Store)?
            .ok_or_else(|| SetupError::Deleted {
                what: "extension",
                id: id.clone(),
            })?;
        let bytes = blobs
            .get(&row.storage_key)
            .await
            .map_err(|source| SetupError::Read {
                what: "extension",
                id: id.clone(),
                source,
            })?;
        let dir = temp("smoothd-extension-")?;
        let path = dir.path().to_path_buf();
        let root = tokio::task::spawn_blocking(move || unpack_extension(&bytes, &path))
            .await
            .map_err(SetupError::Join)?
            .map_err(|why| SetupError::Extension {
                id: id.clone(),
                file: row.file_name.clone(),
                why,
            })?;
        ext_roots.push(root);
        ext_dirs.push(dir);
    }
    Ok((ext_dirs, ext_roots))
}

/// The dedicated Chromium's extra flags: its extensions and its proxy.
fn chromium_args(ext_roots: &[std::path::PathBuf], proxy: Option<&str>) -> Vec<String> {
    let mut args = Vec::new();
    if !ext_roots.is_empty() {
        let list = ext_roots
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        args.push(format!("--load-extension={list}"));
        args.push(format!("--disable-extensions-except={list}"));
    }
    if let Some(proxy) = proxy {
        args.push(format!("--proxy-server={proxy}"));
        args.push("--proxy-bypass-list=<-loopback>".into());
    }
    args
}

/// A `HOME` whose NSS database holds the task's client certificates, or None without any.
async fn certificate_home(spec: &smoothd_core::TaskSpec) -> Result<Option<TempDir>, SetupError> {
    use base64::Engine as _;
    if spec.certificates.is_empty() {
        return Ok(None);
    }
    let mut certs = Vec::with_capacity(spec.certificates.len());
    for (index, c) in spec.certificates.iter().enumerate() {
        let p12 = base64::engine::general_purpose::STANDARD
            .decode(c.file.trim())
            .map_err(|source| SetupError::Certificate { index, source })?;
        certs.push(smoothd_browser::ClientCertificate {
            p12,
            password: c.password.clone().unwrap_or_default(),
        });
    }
    smoothd_browser::certs::nss_home(&certs)
        .await
        .map(Some)
        .map_err(SetupError::Browser)
}

/// Copies the task's uploaded files into a folder of their own, under their original names.
async fn place_files(
    ctx: &TaskContext,
    blobs: &Blobs,
) -> Result<(Vec<PlacedFile>, Option<TempDir>), SetupError> {
    if ctx.spec.files.is_empty() {
        return Ok((Vec::new(), None));
    }
    let dir = temp("smoothd-files-")?;
    let mut placed = Vec::new();
    for (i, id) in ctx.spec.files.iter().enumerate() {
        let row = ctx
            .store()
            .get_file(&ctx.task.owner, id)
            .await
            .map_err(SetupError::Store)?
            .ok_or_else(|| SetupError::Deleted {
                what: "file",
                id: id.clone(),
            })?;
        let bytes = blobs
            .get(&row.storage_key)
            .await
            .map_err(|source| SetupError::Read {
                what: "file",
                id: id.clone(),
                source,
            })?;
        // Same-named uploads each keep their name, in their own subfolder.
        let sub = dir.path().join(i.to_string());
        tokio::fs::create_dir_all(&sub).await.map_err(SetupError::Io)?;
        let path = sub.join(&row.name);
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|source| SetupError::PlaceFile {
                id: id.clone(),
                source,
            })?;
        placed.push(PlacedFile {
            id: row.id,
            name: row.name,
            path,
        });
    }
    Ok((placed, Some(dir)))
}

/// Waits for the profile's write lock, telling the client once that it is waiting.
async fn lock_profile(ctx: &TaskContext, owner: &str, profile: &str) -> Result<(), SetupError> {
    let mut told = false;
    loop {
        match ctx.store().lock_profile(owner, profile, ctx.id()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(source) => {
                return Err(SetupError::Lock {
                    id: profile.to_string(),
                    source,
                });
            }
        }
        if !told {
            told = true;
            let _ = ctx
                .notify(
                    "notice",
                    json!({"message": format!("waiting for profile {profile:?}: another task is using it")}),
                )
                .await;
        }
        tokio::select! {
            _ = ctx.stop_token().cancelled() => return Err(SetupError::StoppedWaiting),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn release(ctx: &TaskContext, owner: &str, profile: Option<&str>) {
    if let Some(p) = profile
        && let Err(e) = ctx.store().unlock_profile(owner, p, ctx.id()).await
    {
        tracing::warn!(error = %e, "could not release a profile lock");
    }
}

impl Prepared {
    /// Starts the task's media capture; a failure leaves the task without it (logged).
    async fn with_media(mut self, ctx: &TaskContext, media: Option<&MediaServices>) -> Self {
        if let Some(services) = media {
            match TaskMedia::start(ctx, services, &self.session).await {
                Ok(m) => self.media = Some(m),
                Err(e) => tracing::warn!(error = %e, "no live view, recording or downloads for this task"),
            }
        }
        self
    }

    /// A folder whose files go into the task's downloads archive under their names (the
    /// agent's screenshots and PDFs); None when this process captures no media.
    pub fn downloads_dir(&self) -> Option<&std::path::Path> {
        self.media.as_ref().map(TaskMedia::downloads_dir)
    }

    /// Shows `text` as the agent's latest step in the live view.
    pub fn set_status(&self, text: &str) {
        if let Some(m) = &self.media {
            m.set_status(text);
        }
    }

    /// The task's media capture, for executors that publish steps from another task
    /// ([`TaskMedia::status_sender`]).
    pub fn media(&self) -> Option<&TaskMedia> {
        self.media.as_ref()
    }

    /// Ends the live view, closes the browser (saving a writable profile; a context in the
    /// shared Chromium closes in the background), then stores the recording and downloads.
    pub async fn finish(mut self, ctx: &TaskContext, blobs: &Blobs) {
        let media = self.media.take();
        if let Some(m) = &media {
            m.stop_capture(ctx).await;
        }
        self.close_browser(ctx, blobs).await;
        if let Some(m) = media {
            m.finalize(ctx, blobs).await;
        }
    }

    /// Closes the browser; saves and unlocks a writable profile.
    async fn close_browser(self, ctx: &TaskContext, blobs: &Blobs) {
        let Prepared {
            session,
            dedicated,
            save_profile,
            ..
        } = self;
        let Some(process) = dedicated else {
            // A context in the shared Chromium goes while the media is stored and the final
            // state written: nothing waits on it (downloads still running were left out above,
            // and those in `.incoming` are never archived).
            tokio::spawn(session.close());
            return;
        };
        let owner = ctx.task.owner.clone();
        let Some(profile) = save_profile else {
            drop(session);
            process.kill().await;
            return;
        };
        let summary = process.cookie_summary().await;
        drop(session);
        process.close_gracefully().await;
        let Some(dir) = process.data_dir().map(std::path::Path::to_path_buf) else {
            // Dedicated processes are always ones we started; nothing to save otherwise.
            tracing::error!(profile = %profile, "the profile's browser has no folder; nothing saved");
            release(ctx, &owner, Some(&profile)).await;
            return;
        };
        let packed = tokio::task::spawn_blocking(move || pack_profile(&dir)).await;
        match (packed, summary) {
            (Ok(Ok(archive)), Ok((cookie_count, domains))) => {
                let key = format!("profiles/{owner}/{profile}.tar");
                let size = i64::try_from(archive.len()).unwrap_or(i64::MAX);
                match blobs.put(&key, Bytes::from(archive)).await {
                    Ok(()) => {
                        if let Err(e) = ctx
                            .store()
                            .save_profile(&owner, &profile, &key, size, cookie_count, &domains)
                            .await
                        {
                            tracing::error!(error = %e, "could not record the saved profile");
                        } else {
                            tracing::info!(profile = %profile, size, cookie_count, "profile saved");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not store the profile archive"),
                }
            }
            (packed, summary) => {
                tracing::error!(packed = ?packed.map(|r| r.map(|a| a.len())), summary = ?summary.map(|s| s.0), "could not save the profile")
            }
        }
        release(ctx, &owner, Some(&profile)).await;
    }
}
