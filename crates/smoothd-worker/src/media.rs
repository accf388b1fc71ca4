//! What the user sees of a run, for every task and session that has a browser: the live
//! view (the page's screencast, served to viewers by [`LiveServer`]), the recording
//! (screencast frames piped to ffmpeg), and the downloads archive.
//!
//! Started by `setup::prepare` and finalized by `Prepared::finish`, before the task's final
//! status is written, so a final task already reads its `recording_url` and `downloads_url`.
//!
//! For executors (the agent):
//! - [`crate::Prepared::downloads_dir`]: any file written there is in the task's downloads
//!   archive under its name (screenshots, `print_page` PDFs), beside the browser's downloads.
//! - [`crate::Prepared::set_status`]: the agent's latest step, shown in the live view.
//!
//! Recording format: MP4 (H.264, yuv420p, `+faststart`), variable frame rate of at most `fps`
//! (default 5). A frame is written when the page paints a new one (at most `fps` a second),
//! stamped with the time it arrives, and the latest once more at the end, so the video's
//! duration is the run's wall-clock time while a still page costs no encoding at all (a
//! session idling for minutes is one frame). x264 runs `ultrafast` on one thread.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smoothd_browser::{BrowserSession, Frame, MediaOptions, PageMedia, TempDir};
use smoothd_core::time::now_ms;
use smoothd_store::{ArtifactRow, Blobs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::context::TaskContext;
use crate::live::{LiveEntry, LiveServer};

/// How tasks are captured (one per process).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The ffmpeg binary; `None` turns recording off (tasks then read `recording_url: ""`).
    pub ffmpeg: Option<PathBuf>,
    /// Frames per second of the recording.
    pub fps: u32,
    /// Screencast settings (frame rate cap, JPEG quality, size).
    pub capture: MediaOptions,
    /// How long the end of a task waits for downloads still running.
    pub download_wait: Duration,
    /// The base of the live view links this process hands out (the `captcha` event); none: no
    /// link.
    pub public_url: Option<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            ffmpeg: Some(PathBuf::from("ffmpeg")),
            fps: 5,
            capture: MediaOptions::default(),
            download_wait: Duration::from_secs(10),
            public_url: None,
        }
    }
}

/// The process's media services.
#[derive(Clone)]
pub struct MediaServices {
    pub config: MediaConfig,
    /// The live-stream listener, when this process serves live views.
    pub live: Option<LiveServer>,
}

impl std::fmt::Debug for MediaServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaServices")
            .field("config", &self.config)
            .field("live", &self.live.as_ref().map(LiveServer::addr))
            .finish()
    }
}

/// One task's capture.
pub struct TaskMedia {
    page: Arc<PageMedia>,
    status: watch::Sender<String>,
    recorder: Option<Recorder>,
    downloads: TempDir,
    live: Option<LiveServer>,
    download_wait: Duration,
}

/// Why a task's media (screencast, recording, downloads folder) could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MediaError {
    /// A temporary folder could not be made.
    #[error("cannot create a folder: {0}")]
    Folder(std::io::Error),
    /// The browser refused the screencast or download capture.
    #[error("cannot start the screencast: {0}")]
    Screencast(smoothd_browser::BrowserError),
    /// The page ended or the task stopped before a frame was painted.
    #[error("the page never showed a frame")]
    NoFrame,
    /// The screencast closed before its first frame.
    #[error("the screencast ended before its first frame")]
    ScreencastEnded,
    /// ffmpeg could not be started or waited for.
    #[error("ffmpeg ({path}): {source}")]
    Ffmpeg { path: String, source: std::io::Error },
    /// ffmpeg has no stdin or stderr pipe.
    #[error("ffmpeg has no {0} pipe")]
    Pipe(&'static str),
    /// ffmpeg did not exit within its deadline after the end of input.
    #[error("ffmpeg did not finish within 60 s")]
    Timeout,
    /// ffmpeg exited with an error, or refused a frame.
    #[error("ffmpeg failed ({status}): {message}")]
    Encode {
        status: std::process::ExitStatus,
        message: String,
    },
    /// The finished file could not be read back.
    #[error("cannot read the recording: {0}")]
    Read(std::io::Error),
    /// The recorder's task panicked or was aborted.
    #[error("the recorder stopped: {0}")]
    Stopped(tokio::task::JoinError),
}

fn temp(prefix: &str) -> Result<TempDir, MediaError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(MediaError::Folder)
}

impl TaskMedia {
    /// Starts the screencast, download capture, recorder and live stream of a task.
    pub(crate) async fn start(
        ctx: &TaskContext,
        services: &MediaServices,
        session: &BrowserSession,
    ) -> Result<Self, MediaError> {
        let downloads = temp("smoothd-downloads-")?;
        let mut capture = services.config.capture.clone();
        capture.downloads_dir = Some(downloads.path().to_path_buf());
        capture.screencast = true;
        let page = Arc::new(
            session
                .start_media(&capture)
                .await
                .map_err(MediaError::Screencast)?,
        );
        let (status, status_rx) = watch::channel(if ctx.spec.is_session() {
            "session open".to_string()
        } else {
            "starting".to_string()
        });
        let recorder = match (&services.config.ffmpeg, ctx.spec.enable_recording) {
            (Some(ffmpeg), true) => Some(Recorder::start(
                ffmpeg.clone(),
                services.config.fps,
                page.frames(),
            )?),
            _ => None,
        };
        if let Some(live) = &services.live {
            live.register(
                ctx.id(),
                LiveEntry {
                    token: ctx.task.live_token.clone(),
                    media: page.clone(),
                    status: status_rx,
                    ended: CancellationToken::new(),
                },
            );
            if let Err(e) = ctx
                .store()
                .set_live_stream(ctx.id(), ctx.task.attempt, live.addr())
                .await
            {
                tracing::warn!(error = %e, "cannot record the live stream's address; the live view will wait");
            }
        }
        Ok(Self {
            page,
            status,
            recorder,
            downloads,
            live: services.live.clone(),
            download_wait: services.config.download_wait,
        })
    }

    /// Files written here are in the downloads archive under their names.
    pub fn downloads_dir(&self) -> &Path {
        self.downloads.path()
    }

    /// Shows `text` as the latest step in the live view.
    pub fn set_status(&self, text: &str) {
        self.status.send_replace(text.to_string());
    }

    /// A handle to publish the latest step from elsewhere (e.g. the agent loop).
    pub fn status_sender(&self) -> watch::Sender<String> {
        self.status.clone()
    }

    /// Ends the live view and the screencast and lets running downloads finish; the browser
    /// may close after this.
    pub(crate) async fn stop_capture(&self, ctx: &TaskContext) {
        self.page.stop(self.download_wait).await;
        if let Some(live) = &self.live {
            live.unregister(ctx.id());
            if let Err(e) = ctx.store().clear_live_stream(ctx.id(), ctx.task.attempt).await {
                tracing::warn!(error = %e, "cannot clear the live stream's address");
            }
        }
    }

    /// Stores the recording and the downloads archive and points the task at them (`""` for
    /// what there is none of). Call after [`TaskMedia::stop_capture`].
    pub(crate) async fn finalize(self, ctx: &TaskContext, blobs: &Blobs) {
        let TaskMedia {
            recorder, downloads, ..
        } = self;
        let recording = match recorder {
            None => String::new(),
            Some(r) => match r.finish().await {
                Ok(rec) => {
                    tracing::info!(
                        frames = rec.frames,
                        seconds = rec.seconds,
                        bytes = rec.bytes.len(),
                        "recording finished"
                    );
                    store_artifact(ctx, blobs, "recording", "recording.mp4", "video/mp4", rec.bytes)
                        .await
                        .unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no recording");
                    String::new()
                }
            },
        };
        let dir = downloads.path().to_path_buf();
        let archive = tokio::task::spawn_blocking(move || zip_folder(&dir)).await;
        let downloads_id = match archive {
            Ok(Ok(Some((bytes, count)))) => {
                tracing::info!(files = count, bytes = bytes.len(), "downloads archived");
                store_artifact(ctx, blobs, "downloads", "downloads.zip", "application/zip", bytes)
                    .await
                    .unwrap_or_default()
            }
            Ok(Ok(None)) => String::new(),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot archive the downloads");
                String::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "archiving the downloads panicked");
                String::new()
            }
        };
        match ctx
            .store()
            .set_task_media(ctx.id(), ctx.task.attempt, Some(&recording), Some(&downloads_id))
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!("lease lost before the recording and downloads were recorded"),
            Err(e) => tracing::error!(error = %e, "cannot record the recording and downloads"),
        }
    }
}

/// Stores bytes as a task artifact; its id, or None (logged) on failure.
async fn store_artifact(
    ctx: &TaskContext,
    blobs: &Blobs,
    kind: &str,
    name: &str,
    content_type: &str,
    bytes: Bytes,
) -> Option<String> {
    let id = smoothd_core::ids::artifact_id();
    let key = format!("tasks/{}/{id}/{name}", ctx.id());
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    if let Err(e) = blobs.put(&key, bytes).await {
        tracing::error!(error = %e, kind, "cannot store an artifact");
        return None;
    }
    let row = ArtifactRow {
        id: id.clone(),
        owner: ctx.task.owner.clone(),
        task_id: Some(ctx.id().to_string()),
        kind: kind.to_string(),
        name: name.to_string(),
        content_type: content_type.to_string(),
        size_bytes: size,
        storage_key: key.clone(),
        created_at: now_ms(),
    };
    if let Err(e) = ctx.store().insert_artifact(&row).await {
        tracing::error!(error = %e, kind, "cannot index an artifact");
        let _ = blobs.delete(&key).await;
        return None;
    }
    Some(id)
}

/// A zip of the regular files directly in `dir` (not `.incoming`), or None if there are none.
fn zip_folder(dir: &Path) -> std::io::Result<Option<(Bytes, usize)>> {
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        names.push((name, entry.path()));
    }
    if names.is_empty() {
        return Ok(None);
    }
    names.sort();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, path) in &names {
        zip.start_file(name.as_str(), opts)
            .map_err(std::io::Error::other)?;
        let mut f = std::fs::File::open(path)?;
        std::io::copy(&mut f, &mut zip)?;
    }
    let cursor = zip.finish().map_err(std::io::Error::other)?;
    Ok(Some((Bytes::from(cursor.into_inner()), names.len())))
}

/// A finished recording.
struct Recording {
    bytes: Bytes,
    frames: u64,
    seconds: f64,
}

/// Feeds the page's frames to ffmpeg as they change, at most `fps` a second.
struct Recorder {
    /// Dropping the recorder without `finish` (an early return, a panic) still stops the
    /// writer: ffmpeg gets its end of input, exits, and its folder is removed, instead of
    /// waiting for frames forever.
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<Result<Recording, MediaError>>,
}

impl Recorder {
    fn start(
        ffmpeg: PathBuf,
        fps: u32,
        frames: watch::Receiver<Option<Arc<Frame>>>,
    ) -> Result<Self, MediaError> {
        let dir = temp("smoothd-recording-")?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(record(ffmpeg, fps.clamp(1, 30), frames, dir, stop.clone()));
        Ok(Self {
            stop: stop.drop_guard(),
            task,
        })
    }

    async fn finish(self) -> Result<Recording, MediaError> {
        let Self { stop, task } = self;
        drop(stop);
        match task.await {
            Ok(r) => r,
            Err(e) => Err(MediaError::Stopped(e)),
        }
    }
}

/// The page's first frame, once it paints one.
async fn first_frame(
    frames: &mut watch::Receiver<Option<Arc<Frame>>>,
    stop: &CancellationToken,
) -> Result<Arc<Frame>, MediaError> {
    loop {
        if let Some(f) = frames.borrow_and_update().clone() {
            return Ok(f);
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(MediaError::NoFrame),
            r = frames.changed() => if r.is_err() { return Err(MediaError::ScreencastEnded) },
        }
    }
}

/// ffmpeg reading JPEG frames on stdin, stamped as they arrive, into a `w`×`h` MP4 at `out`.
fn spawn_ffmpeg(ffmpeg: &Path, w: u32, h: u32, out: &Path) -> Result<tokio::process::Child, MediaError> {
    let filter = format!(
        "scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=white,format=yuv420p"
    );
    tokio::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            // Each frame is stamped when it arrives: a still page sends none.
            "-use_wallclock_as_timestamps",
            "1",
            "-f",
            "image2pipe",
        ])
        .args(["-c:v", "mjpeg", "-i", "pipe:0", "-vf", &filter])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "stillimage",
            "-crf",
            "28",
        ])
        .args([
            "-threads",
            "1",
            "-fps_mode",
            "vfr",
            "-movflags",
            "+faststart",
            "-y",
        ])
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| MediaError::Ffmpeg {
            path: ffmpeg.display().to_string(),
            source,
        })
}

async fn record(
    ffmpeg: PathBuf,
    fps: u32,
    mut frames: watch::Receiver<Option<Arc<Frame>>>,
    dir: TempDir,
    stop: CancellationToken,
) -> Result<Recording, MediaError> {
    // The video starts with the first frame.
    let first = first_frame(&mut frames, &stop).await?;
    let (w, h) = (first.width.max(2) & !1, first.height.max(2) & !1);
    let out = dir.path().join("recording.mp4");
    let mut child = spawn_ffmpeg(&ffmpeg, w, h, &out)?;
    let mut stdin = child.stdin.take().ok_or(MediaError::Pipe("stdin"))?;
    let mut stderr = child.stderr.take().ok_or(MediaError::Pipe("stderr"))?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let started = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let mut written = 0u64;
    let mut write_error = None;
    let mut jpeg = first.jpeg.clone();
    let mut screencast_open = true;
    loop {
        // The frame now (the first, a new one, or the last once more at the end).
        if let Err(e) = stdin.write_all(&jpeg).await {
            write_error = Some(e);
            break;
        }
        written += 1;
        let last_write = tokio::time::Instant::now();
        if stop.is_cancelled() {
            break;
        }
        // Wait for a new frame (or the end), then no sooner than `period` after the last write.
        tokio::select! {
            _ = stop.cancelled() => {}
            r = frames.changed(), if screencast_open => {
                if r.is_err() {
                    // The page is gone: its last frame stands until the end.
                    screencast_open = false;
                    stop.cancelled().await;
                } else {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        () = tokio::time::sleep_until(last_write + period) => {}
                    }
                }
            }
        }
        if let Some(f) = frames.borrow_and_update().as_ref() {
            jpeg = f.jpeg.clone();
        }
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| MediaError::Timeout)?
        .map_err(|source| MediaError::Ffmpeg {
            path: ffmpeg.display().to_string(),
            source,
        })?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() || write_error.is_some() {
        return Err(MediaError::Encode {
            status,
            message: errors.lines().last().unwrap_or("no message").to_string(),
        });
    }
    let bytes = tokio::fs::read(&out).await.map_err(MediaError::Read)?;
    Ok(Recording {
        bytes: Bytes::from(bytes),
        frames: written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-frame JPEG made by ffmpeg itself.
    async fn jpeg(ffmpeg: &std::path::Path, dir: &std::path::Path) -> Bytes {
        let out = dir.join("frame.jpg");
        let status = tokio::process::Command::new(ffmpeg)
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "color=c=red:s=64x48",
            ])
            .args(["-frames:v", "1", "-y"])
            .arg(&out)
            .status()
            .await
            .unwrap();
        assert!(status.success());
        Bytes::from(std::fs::read(&out).unwrap())
    }

    #[tokio::test]
    async fn a_dropped_recorder_stops_its_writer() {
        let ffmpeg = PathBuf::from("ffmpeg");
        let dir = tempfile::tempdir().unwrap();
        let frame = Frame {
            jpeg: jpeg(&ffmpeg, dir.path()).await,
            width: 64,
            height: 48,
            css_width: 64.0,
            css_height: 48.0,
            seq: 1,
        };
        let (tx, rx) = watch::channel(Some(Arc::new(frame)));
        let recorder = Recorder::start(ffmpeg, 5, rx).unwrap();
        // Let it start ffmpeg and write the first frame.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(recorder);
        // The writer task holds the only receiver: it is released once the writer has ended.
        // Without the guard it would wait for the next frame (the sender is still open) forever.
        tokio::time::timeout(Duration::from_secs(60), tx.closed())
            .await
            .expect("the recorder's writer kept running after the recorder was dropped");
    }
}
