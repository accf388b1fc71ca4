//! What the user sees of a run: the live view (relayed across processes), the recording
//! (decoded with ffprobe) and the downloads archive, through signed links with ranges, and
//! their retention. Real Chromium and real ffmpeg.

use std::io::Read as _;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use smoothd_tests::{Backend, Session, TestDb, TestServer, backend_tests, fixture_site, test_settings};
use tokio_tungstenite::tungstenite::Message;

backend_tests!(
    live_view_relayed_from_another_process,
    recording_and_downloads_of_a_session
);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to a task's live WebSocket as the live page does.
async fn live_socket(live_url: &str, interactive: bool) -> Socket {
    let (base, query) = live_url.split_once('?').unwrap();
    let url = format!(
        "{}/ws?{query}&interactive={interactive}",
        base.replacen("http://", "ws://", 1)
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next frame (JPEG bytes) and the latest meta message seen before it.
async fn next_frame(ws: &mut Socket) -> (Vec<u8>, Option<Value>) {
    let mut meta = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => return (b.to_vec(), meta),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "meta" {
                    meta = Some(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no frame from the live view: {other:?}"),
        }
    }
}

/// The next text message of `kind`.
async fn next_text(ws: &mut Socket, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no {kind} message from the live view: {other:?}"),
        }
    }
}

async fn click(ws: &mut Socket, x: f64, y: f64) {
    for action in ["down", "up"] {
        let m = json!({"type": "mouse", "action": action, "x": x, "y": y, "button": "left", "clicks": 1});
        ws.send(Message::Text(m.to_string().into())).await.unwrap();
    }
}

async fn live_view_relayed_from_another_process(b: Backend) {
    let site = fixture_site().await;
    let db = TestDb::new(b).await;
    let settings = test_settings(&db);
    // The viewer reaches an API-only process; the browser runs in a worker-only process.
    let api = TestServer::api_only(settings.clone()).await;
    let workers = TestServer::workers_only(settings).await;
    let session = Session::open(&api, json!({"url": format!("{site}/media.html")})).await;
    let started = Instant::now();
    let running = api
        .wait_status(&session.id, "running", Duration::from_secs(20))
        .await;
    let live_url = running["live_url"].as_str().unwrap().to_string();
    assert!(
        live_url.contains(&session.id) && live_url.contains("token="),
        "{live_url}"
    );

    // The page itself needs no API key; a wrong token is refused.
    let page = reqwest::get(format!("{live_url}&interactive=true&embed=false"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("new WebSocket"));
    let bad = reqwest::get(live_url.replace("token=", "token=x")).await.unwrap();
    assert_eq!(bad.status(), 404);
    let bad_flag = reqwest::get(format!("{live_url}&interactive=maybe"))
        .await
        .unwrap();
    assert_eq!(bad_flag.status(), 422);
    assert!(bad_flag.text().await.unwrap().contains("interactive"));

    // The session opens its start URL after it turns running; a command queues behind that
    // navigation, so once it answers, the page the viewer should see is loaded.
    assert!(
        session
            .eval("location.href")
            .await
            .as_str()
            .unwrap()
            .ends_with("/media.html"),
        "the start URL is open"
    );
    let mut ws = live_socket(&live_url, true).await;
    let (jpeg, meta) = next_frame(&mut ws).await;
    let latency = started.elapsed();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "frames are JPEG");
    let meta = meta.expect("a meta message comes with the first frame");
    assert_eq!(
        (meta["width"].as_f64(), meta["height"].as_f64()),
        (Some(1280.0), Some(800.0)),
        "{meta}"
    );
    assert!(meta["url"].as_str().unwrap().ends_with("/media.html"), "{meta}");
    eprintln!(
        "first live frame {latency:?} after the session started running; {} bytes",
        jpeg.len()
    );

    // A click in the live view lands in the task's page, at the matching CSS pixel.
    click(&mut ws, 0.25, 0.75).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let clicks = loop {
        let clicks = session.eval("window.clicks").await;
        if !clicks.as_array().unwrap().is_empty() || Instant::now() > deadline {
            break clicks;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        clicks,
        json!([[320, 600]]),
        "the click landed at 0.25 x 1280, 0.75 x 800"
    );
    // Keys too.
    for key in ["h", "i"] {
        for action in ["down", "up"] {
            let m = json!({"type": "key", "action": action, "key": key});
            ws.send(Message::Text(m.to_string().into())).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(session.eval("window.keys").await, "hi");

    // View-only: input is refused by the server and never reaches the page.
    let mut view = live_socket(&live_url, false).await;
    next_frame(&mut view).await;
    click(&mut view, 0.75, 0.25).await;
    let refused = next_text(&mut view, "error").await;
    assert!(
        refused["detail"].as_str().unwrap().contains("view-only"),
        "{refused}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        session.eval("window.clicks.length").await,
        1,
        "a view-only click reached the page"
    );

    // The end of the task ends the stream and the link.
    let (code, _) = session.cmd("session_action", "close", json!({})).await;
    assert_eq!(code, 200);
    let ended = next_text(&mut ws, "ended").await;
    assert_eq!(ended["type"], "ended");
    let r = api.wait_final(&session.id, Duration::from_secs(30)).await;
    assert_eq!(r["live_url"], Value::Null, "{r}");
    assert_eq!(reqwest::get(&live_url).await.unwrap().status(), 410);
    workers.stop().await;
    api.stop().await;
}

/// Runs `ffprobe` on a file: (duration in seconds, codec, width, height).
fn ffprobe(path: &std::path::Path) -> (f64, String, u64, u64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian: apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    (
        v["format"]["duration"].as_str().unwrap().parse().unwrap(),
        s["codec_name"].as_str().unwrap().to_string(),
        s["width"].as_u64().unwrap(),
        s["height"].as_u64().unwrap(),
    )
}

/// How many different decoded frames a video has.
fn distinct_frames(path: &std::path::Path) -> usize {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hashes: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next())
        .map(str::trim)
        .collect();
    hashes.len()
}

async fn recording_and_downloads_of_a_session(b: Backend) {
    let site = fixture_site().await;
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    let session = Session::open(&s, json!({"url": format!("{site}/index.html")})).await;
    let (code, out) = session.goto(&format!("{site}/media.html")).await;
    assert_eq!(code, 200, "{out}");
    session.eval("document.getElementById('dl').click(); true").await;
    // Let the page be seen a while (and the download finish).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, _) = session.cmd("session_action", "close", json!({})).await;
    assert_eq!(code, 200);
    let r = s.wait_final(&session.id, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "done", "{r}");
    let row = db
        .store()
        .await
        .get_task_unscoped(&session.id)
        .await
        .unwrap()
        .unwrap();
    let run = (row.finished_at.unwrap() - row.started_at.unwrap()) as f64 / 1000.0;

    // The recording: a signed link that needs no key, an H.264 MP4 as long as the run.
    let rec_url = r["recording_url"].as_str().unwrap().to_string();
    assert!(
        rec_url.starts_with(&s.base) && rec_url.contains("signature="),
        "{rec_url}"
    );
    let resp = reqwest::get(&rec_url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    let video = resp.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.mp4");
    std::fs::write(&path, &video).unwrap();
    let (duration, codec, w, h) = ffprobe(&path);
    eprintln!(
        "recording: {} bytes, {duration:.1} s for a {run:.1} s run, {codec} {w}x{h}",
        video.len()
    );
    assert_eq!((codec.as_str(), w, h), ("h264", 1280, 800));
    assert!(
        (duration - run).abs() <= run * 0.2,
        "the video lasts {duration} s, the run {run} s"
    );
    assert!(
        distinct_frames(&path) > 1,
        "the video shows more than one picture"
    );

    // Ranges, for seeking.
    let part = s
        .http
        .get(&rec_url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 10-19/{}", video.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), video.slice(10..20));
    let past = s
        .http
        .get(&rec_url)
        .header("range", format!("bytes={}-", video.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
    // A tampered or foreign link is refused with a reason.
    let forged = reqwest::get(rec_url.replace("signature=", "signature=00"))
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("signature"), "{body}");

    // Downloads: only with downloads=true, an archive with the exact bytes under the original name.
    assert_eq!(r["downloads_url"], Value::Null);
    let (_, d) = s.get(&format!("/v1/task/{}?downloads=true", session.id)).await;
    let dl_url = d["r"]["downloads_url"].as_str().unwrap().to_string();
    let zip_bytes = reqwest::get(&dl_url).await.unwrap().bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.to_vec())).unwrap();
    assert_eq!(archive.len(), 1);
    let mut file = archive.by_name("quarterly report.bin").unwrap();
    let mut got = Vec::new();
    file.read_to_end(&mut got).unwrap();
    let want =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/site/report.bin"))
            .unwrap();
    assert_eq!(got, want);
    drop(file);

    // Nothing downloaded and recording off: both say "none" ("").
    let quiet = Session::open(&s, json!({"enable_recording": false})).await;
    s.wait_status(&quiet.id, "running", Duration::from_secs(20)).await;
    quiet.cmd("session_action", "close", json!({})).await;
    s.wait_final(&quiet.id, Duration::from_secs(30)).await;
    let (_, q) = s.get(&format!("/v1/task/{}?downloads=true", quiet.id)).await;
    assert_eq!(
        (q["r"]["recording_url"].clone(), q["r"]["downloads_url"].clone()),
        (json!(""), json!(""))
    );

    // Retention: expired artifacts are deleted with their links, and the task says so.
    let store = db.store().await;
    let blobs = smoothd_store::Blobs::local(&db.dir.path().join("artifacts")).unwrap();
    let keys = store
        .reap_artifacts(&blobs, smoothd_core::time::now_ms() + 1)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "the recording and the archive");
    for key in &keys {
        assert!(
            blobs.size(key).await.unwrap_err().is_blob_not_found(),
            "{key} kept its bytes"
        );
    }
    assert_eq!(reqwest::get(&rec_url).await.unwrap().status(), 404);
    let (_, after) = s.get(&format!("/v1/task/{}?downloads=true", session.id)).await;
    assert_eq!(after["r"]["recording_url"], "");
    assert_eq!(after["r"]["downloads_url"], "");
    assert_eq!(store.artifact_usage().await.unwrap(), (0, 0));
    s.stop().await;
}
