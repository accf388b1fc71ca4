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
use smoothd_browser::{BrowserPool, BrowserProcess, BrowserSession, SessionOptions, TempDir};
use smoothd_store::Blobs;

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

fn temp(prefix: &str) -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("cannot create a folder: {e}"))
}

/// Opens the task's browser.
pub async fn prepare(
    ctx: &TaskContext,
    pool: &BrowserPool,
    blobs: &Blobs,
    media: Option<&MediaServices>,
    mut opts: SessionOptions,
) -> Result<Prepared, String> {
    let spec = &ctx.spec;
    let owner = ctx.task.owner.clone();
    let (files, files_dir) = place_files(ctx, blobs).await?;
    if spec.profile_id.is_none() && spec.extensions.is_empty() && spec.certificates.is_empty() {
        let process = pool.shared().await.map_err(|e| e.to_string())?;
        let session = BrowserSession::open(process, opts)
            .await
            .map_err(|e| format!("cannot open a browser: {e}"))?;
        return Ok(Prepared {
            session,
            files,
            _files_dir: files_dir,
            dedicated: None,
            save_profile: None,
            _extensions: Vec::new(),
            media: None,
        }
        .with_media(ctx, media)
        .await);
    }

    // A profile or extensions need a Chromium of their own (its own profile folder and
    // command line), which a worker on a remote browser cannot start.
    let Some(launch) = pool.config() else {
        let needs = match (spec.profile_id.is_some(), spec.extensions.is_empty()) {
            _ if !spec.certificates.is_empty() => "certificates need",
            (true, false) => "profile_id and extensions need",
            (true, true) => "profile_id needs",
            _ => "extensions need",
        };
        return Err(format!(
            "{needs} a Chromium of its own, which this worker cannot start: it uses the remote \
             browser at {} (browser_ws); run such tasks on workers without browser_ws",
            pool.remote_endpoint().unwrap_or_default()
        ));
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
        let row = ctx
            .store()
            .get_profile(&owner, profile)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("profile {profile:?} was deleted"))?;
        if let Some(key) = &row.storage_key {
            let archive = blobs
                .get(key)
                .await
                .map_err(|e| format!("cannot read profile {profile:?}: {e}"))?;
            let dir = data_dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || unpack_profile(&archive, &dir))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot restore profile {profile:?}: {e}"))?;
        }
    }

    let mut ext_dirs = Vec::new();
    let mut ext_roots = Vec::new();
    for id in &spec.extensions {
        let row = ctx
            .store()
            .get_extension(&owner, id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("extension {id:?} was deleted"))?;
        let bytes = blobs
            .get(&row.storage_key)
            .await
            .map_err(|e| format!("cannot read extension {id:?}: {e}"))?;
        let dir = temp("smoothd-extension-")?;
        let path = dir.path().to_path_buf();
        let root = tokio::task::spawn_blocking(move || unpack_extension(&bytes, &path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("extension {id:?} ({}): {e}", row.file_name))?;
        ext_roots.push(root);
        ext_dirs.push(dir);
    }

    let mut args = Vec::new();
    if !ext_dirs.is_empty() {
        let list = ext_roots
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        args.push(format!("--load-extension={list}"));
        args.push(format!("--disable-extensions-except={list}"));
    }
    if let Some(proxy) = &opts.proxy_server {
        args.push(format!("--proxy-server={proxy}"));
        args.push("--proxy-bypass-list=<-loopback>".into());
    }
    if home.is_some()
        && let Err(e) = smoothd_browser::certs::auto_select_certificates(data_dir.path())
    {
        release(ctx, &owner, save_profile.as_deref()).await;
        return Err(e.to_string());
    }
    let process = match BrowserProcess::launch_with(launch, &args, Some(data_dir), home).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            release(ctx, &owner, save_profile.as_deref()).await;
            return Err(e.to_string());
        }
    };
    opts.default_context = true;
    match BrowserSession::open(process.clone(), opts).await {
        Ok(session) => Ok(Prepared {
            session,
            files,
            _files_dir: files_dir,
            dedicated: Some(process),
            save_profile,
            _extensions: ext_dirs,
            media: None,
        }
        .with_media(ctx, media)
        .await),
        Err(e) => {
            process.kill().await;
            release(ctx, &owner, save_profile.as_deref()).await;
            Err(format!("cannot open a browser: {e}"))
        }
    }
}

/// A `HOME` whose NSS database holds the task's client certificates, or None without any.
async fn certificate_home(spec: &smoothd_core::TaskSpec) -> Result<Option<TempDir>, String> {
    use base64::Engine as _;
    if spec.certificates.is_empty() {
        return Ok(None);
    }
    let mut certs = Vec::with_capacity(spec.certificates.len());
    for (i, c) in spec.certificates.iter().enumerate() {
        let p12 = base64::engine::general_purpose::STANDARD
            .decode(c.file.trim())
            .map_err(|e| format!("certificates[{i}].file: not valid base64: {e}"))?;
        certs.push(smoothd_browser::ClientCertificate {
            p12,
            password: c.password.clone().unwrap_or_default(),
        });
    }
    smoothd_browser::certs::nss_home(&certs)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Copies the task's uploaded files into a folder of their own, under their original names.
async fn place_files(ctx: &TaskContext, blobs: &Blobs) -> Result<(Vec<PlacedFile>, Option<TempDir>), String> {
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
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("file {id:?} was deleted"))?;
        let bytes = blobs
            .get(&row.storage_key)
            .await
            .map_err(|e| format!("cannot read file {id:?}: {e}"))?;
        // Same-named uploads each keep their name, in their own subfolder.
        let sub = dir.path().join(i.to_string());
        tokio::fs::create_dir_all(&sub).await.map_err(|e| e.to_string())?;
        let path = sub.join(&row.name);
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|e| format!("cannot place file {id:?}: {e}"))?;
        placed.push(PlacedFile {
            id: row.id,
            name: row.name,
            path,
        });
    }
    Ok((placed, Some(dir)))
}

/// Waits for the profile's write lock, telling the client once that it is waiting.
async fn lock_profile(ctx: &TaskContext, owner: &str, profile: &str) -> Result<(), String> {
    let mut told = false;
    loop {
        match ctx.store().lock_profile(owner, profile, ctx.id()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(format!("cannot lock profile {profile:?}: {e}")),
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
            _ = ctx.stop_token().cancelled() => return Err("stopped while waiting for the profile".into()),
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

    /// Ends the live view, closes the browser (saving a writable profile), then stores the
    /// recording and downloads.
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
            session.close().await;
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
