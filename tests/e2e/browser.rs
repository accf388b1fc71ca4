//! Sessions in real Chromium, driven by client events against pages served on 127.0.0.1.
//! These need no model and run on one backend (the store is not what they test).

use std::time::Duration;

use serde_json::json;
use smoothd_tests::{Backend, Session, TestDb, TestServer, fixture_site};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn goto_and_the_three_javascript_forms() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db).await;
    let session = Session::open(&s, json!({})).await;
    let (code, out) = session.goto(&format!("{site}/index.html")).await;
    assert_eq!(code, 200, "{out}");
    assert!(out["duration"].as_f64().unwrap() >= 0.0);
    // An expression, a function called with args, a body with return.
    assert_eq!(session.eval("document.title").await, "Fixture home");
    let (code, out) = session
        .cmd(
            "browser_action",
            "evaluate_js",
            json!({"js": "(args) => args.a + args.b", "args": {"a": 2, "b": 40}}),
        )
        .await;
    assert_eq!((code, out["output"].clone()), (200, json!(42)));
    assert_eq!(
        session
            .eval("const h = document.querySelector('h1'); return h.textContent;")
            .await,
        "Hello from the fixture site"
    );
    // Objects come back as JSON, not text; promises are awaited.
    assert_eq!(
        session.eval("({n: 1, list: [1, 'a'], nested: {ok: true}})").await,
        json!({"n": 1, "list": [1, "a"], "nested": {"ok": true}})
    );
    assert_eq!(
        session
            .eval("new Promise(r => setTimeout(() => r('late'), 50))")
            .await,
        "late"
    );
    // The deprecated twin behaves the same.
    let (code, out) = session
        .cmd("browser_action", "exec_js", json!({"js": "location.pathname"}))
        .await;
    assert_eq!((code, out["output"].clone()), (200, json!("/index.html")));
    // A thrown exception is the user's error, with its message.
    let (code, out) = session
        .cmd(
            "browser_action",
            "evaluate_js",
            json!({"js": "throw new Error('boom here')"}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(out.as_str().unwrap().contains("boom here"), "{out}");
    let (code, out) = session
        .cmd(
            "browser_action",
            "evaluate_js",
            json!({"js": "this is not javascript ("}),
        )
        .await;
    assert_eq!(code, 400, "{out}");
    // A navigation error says why (a port nothing listens on).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out) = session.goto(&format!("http://127.0.0.1:{closed}/")).await;
    assert_eq!(code, 400);
    assert!(out.as_str().unwrap().contains("ERR_CONNECTION_REFUSED"), "{out}");
    let (code, _) = session.cmd("browser_action", "goto", json!({})).await;
    assert_eq!(code, 400);
    // Still usable after errors.
    assert_eq!(session.goto(&format!("{site}/probe.html")).await.0, 200);
    assert_eq!(session.eval("document.title").await, "Probe");
    s.delete(&format!("/v1/task/{}", session.id)).await;
    assert_eq!(
        s.wait_final(&session.id, Duration::from_secs(15)).await["status"],
        "cancelled"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_are_emulated_and_stealth_hides_automation() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db).await;
    let probe = format!("{site}/probe.html");

    let desktop = Session::open(&s, json!({"device": "desktop"})).await;
    desktop.goto(&probe).await;
    let d = desktop.eval("probe()").await;
    assert_eq!(d["innerWidth"], 1280, "{d}");
    assert_eq!(d["coarse"], false);
    assert_eq!(d["touch"], false);
    // Stealth is on by default: nothing reads as automation or headless.
    assert_eq!(d["webdriver"], false, "{d}");
    assert!(!d["ua"].as_str().unwrap().contains("Headless"), "{d}");
    assert!(!d["brands"].to_string().contains("Headless"), "{d}");
    assert_eq!(d["chrome"], "object");
    assert!(d["plugins"].as_i64().unwrap() > 0, "{d}");
    assert!(
        d["outerWidth"].as_i64().unwrap() >= 1280 && d["outerHeight"].as_i64().unwrap() >= 800,
        "{d}"
    );
    let webgl = d["webgl"].as_str().unwrap_or("");
    assert!(!webgl.is_empty() && !webgl.contains("SwiftShader"), "{d}");
    assert!(d["languages"].as_array().is_some_and(|l| !l.is_empty()));

    let desktop_cursor = desktop.eval("document.getElementById('__smoothd_cursor')").await;
    // Two workers in tests: close a session before the next takes its slot.
    s.delete(&format!("/v1/task/{}", desktop.id)).await;
    let large = Session::open(&s, json!({"device": "desktop-lg", "show_cursor": true})).await;
    large.goto(&probe).await;
    assert_eq!(large.eval("probe()").await["innerWidth"], 1920);
    // show_cursor draws an overlay that follows the mouse.
    let cursor = large
        .eval(
            "window.dispatchEvent(new MouseEvent('mousemove', {clientX: 120, clientY: 45})); \
             const c = document.getElementById('__smoothd_cursor'); return c && [c.style.left, c.style.top];",
        )
        .await;
    assert_eq!(cursor, json!(["120px", "45px"]));
    assert_eq!(desktop_cursor, json!(null), "no overlay without show_cursor");

    s.delete(&format!("/v1/task/{}", large.id)).await;
    let mobile = Session::open(&s, json!({"device": "mobile"})).await;
    mobile.goto(&probe).await;
    let m = mobile.eval("probe()").await;
    assert!(m["innerWidth"].as_i64().unwrap() < 500, "{m}");
    assert_eq!(m["dpr"], 3);
    assert_eq!(m["coarse"], true, "{m}");
    assert_eq!(m["touch"], true, "{m}");
    assert!(m["maxTouchPoints"].as_i64().unwrap() > 0);
    assert!(m["ua"].as_str().unwrap().contains("Mobile"), "{m}");
    assert_eq!(m["uaMobile"], true);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_urls_refuse_other_sites_and_sessions_are_isolated() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db).await;
    let port = site.rsplit(':').next().unwrap();
    let a = Session::open(
        &s,
        json!({"allowed_urls": [format!("http://127.0.0.1:{port}/**")]}),
    )
    .await;
    assert_eq!(a.goto(&format!("{site}/index.html")).await.0, 200);
    let (code, out) = a.goto(&format!("http://localhost:{port}/index.html")).await;
    assert_eq!(code, 400);
    assert!(out.as_str().unwrap().contains("not allowed"), "{out}");
    assert_eq!(
        a.eval("location.host").await,
        format!("127.0.0.1:{port}"),
        "the refused navigation did not happen"
    );
    // Requests made by the page are held to the same patterns.
    let fetched = a
        .eval(&format!(
            "fetch('http://localhost:{port}/app.js').then(() => 'loaded', () => 'blocked')"
        ))
        .await;
    assert_eq!(fetched, "blocked");
    let same = a
        .eval(&format!(
            "fetch('http://127.0.0.1:{port}/app.js').then(() => 'loaded', () => 'blocked')"
        ))
        .await;
    assert_eq!(same, "loaded");
    // Each session has its own browser context: storage does not leak between them.
    a.eval("localStorage.setItem('k', 'from-a'); return 1").await;
    let b = Session::open(&s, json!({})).await;
    b.goto(&format!("{site}/index.html")).await;
    assert_eq!(b.eval("localStorage.getItem('k')").await, json!(null));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_browser_fails_its_session_and_the_pool_heals() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    // Mark this server's browsers so only they are killed (tests share a process).
    let marker = format!("--smoothd-test-marker={}", smoothd_core::ids::random_token(12));
    let mut settings = smoothd_tests::test_settings(&db);
    settings.chromium_args.push(marker.clone());
    let s = TestServer::all_in_one(settings).await;
    let a = Session::open(&s, json!({})).await;
    assert_eq!(a.goto(&format!("{site}/index.html")).await.0, 200);
    // Kill the Chromium started for this server's sessions.
    let pids = chromium_pids(&marker);
    assert!(!pids.is_empty(), "a browser is running");
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let (code, out) = a.cmd("browser_action", "evaluate_js", json!({"js": "1"})).await;
    assert_eq!(code, 500, "{out}");
    let r = s.wait_final(&a.id, Duration::from_secs(20)).await;
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap().contains("crash"), "{r}");
    // The next session gets a new browser.
    let b = Session::open(&s, json!({})).await;
    assert_eq!(b.goto(&format!("{site}/index.html")).await.0, 200);
    assert_eq!(b.eval("document.title").await, "Fixture home");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_session_whose_browser_dies_fails_within_seconds_with_its_recording() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let marker = format!("--smoothd-test-marker={}", smoothd_core::ids::random_token(12));
    let mut settings = smoothd_tests::test_settings(&db);
    settings.chromium_args.push(marker.clone());
    let s = TestServer::all_in_one(settings).await;
    let a = Session::open(&s, json!({"enable_recording": true})).await;
    assert_eq!(a.goto(&format!("{site}/index.html")).await.0, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = chromium_pids(&marker);
    assert!(!pids.is_empty(), "a browser is running");
    let killed = std::time::Instant::now();
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    // No command follows: the session must notice by itself, well before any idle timeout.
    let r = s.wait_final(&a.id, Duration::from_secs(20)).await;
    let took = killed.elapsed();
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("browser crashed"), "{r}");
    eprintln!("the session ended {took:?} after its browser was killed");
    // The recording was finalised: a playable MP4 of what was seen before the crash.
    let rec = r["recording_url"].as_str().unwrap_or("").to_string();
    assert!(!rec.is_empty(), "no recording: {r}");
    let video = reqwest::get(&rec).await.unwrap().bytes().await.unwrap();
    assert_eq!(&video[4..8], b"ftyp", "not an MP4");
    // The next session works.
    let b = Session::open(&s, json!({})).await;
    assert_eq!(b.goto(&format!("{site}/index.html")).await.0, 200);
    assert_eq!(b.eval("document.title").await, "Fixture home");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_browser_runs_with_our_flags_and_environment_only() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let marker = format!("--smoothd-test-marker={}", smoothd_core::ids::random_token(12));
    let mut settings = smoothd_tests::test_settings(&db);
    settings.chromium_args.push(marker.clone());
    // What a user would write: Debian's launcher script.
    settings.chromium = Some("/usr/bin/chromium".into());
    let s = TestServer::all_in_one(settings).await;
    let a = Session::open(&s, json!({})).await;
    assert_eq!(a.goto(&format!("{site}/index.html")).await.0, 200);
    let pids = chromium_pids(&marker);
    assert_eq!(pids.len(), 1, "one browser process: {pids:?}");
    let pid = pids[0];
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    eprintln!("browser {}: {}", exe.display(), argv.join(" "));
    assert_eq!(exe, std::path::PathBuf::from("/usr/lib/chromium/chromium"));
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ] {
        assert!(argv.iter().any(|a| a == flag), "{flag} missing: {argv:?}");
    }
    assert!(argv.iter().any(|a| a.starts_with("--user-data-dir=")), "{argv:?}");
    // Nothing from /etc/chromium.d: no uBlock, no flags of Debian's.
    for added in [
        "--load-extension",
        "--disable-extensions-except",
        "--enable-remote-extensions",
        "--show-component-extension-options",
        "--enable-gpu-rasterization",
        "--disable-pings",
        "--media-router",
    ] {
        assert!(
            !argv.iter().any(|a| a.starts_with(added)),
            "{added} present: {argv:?}"
        );
    }
    assert!(!argv.iter().any(|a| a.contains("ublock")), "{argv:?}");
    let environ: Vec<String> = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    for var in [
        "GOOGLE_API_KEY",
        "GOOGLE_DEFAULT_CLIENT_ID",
        "GOOGLE_DEFAULT_CLIENT_SECRET",
        "CHROME_WRAPPER",
        "CHROME_DESKTOP",
        "CHROMIUM_FLAGS",
    ] {
        assert!(
            !environ.iter().any(|e| e.starts_with(&format!("{var}="))),
            "{var} in the browser's environment: {environ:?}"
        );
    }
    // Its own HOME (where NSS keeps client certificates), not the server's.
    let home = environ.iter().find_map(|e| e.strip_prefix("HOME=")).unwrap();
    assert!(home.contains("smoothd-home-"), "HOME={home}");
    assert_ne!(Some(home.to_string()), std::env::var("HOME").ok());
    s.stop().await;
}

/// Browser processes started by smoothd with `marker` among their flags, owned by this test
/// process (renderers and helpers have `--type=`; killing the browser takes them down).
fn chromium_pids(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if !cmd.contains(marker) || cmd.contains("--type=") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adblock_blocks_easylist_matches_only_when_on() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    // The real lists from Debian's webext-ublock-origin-chromium.
    let mut settings = smoothd_tests::test_settings(&db);
    settings.adblock_lists = None;
    let s = TestServer::all_in_one(settings).await;
    let page = format!("{site}/adblock.html");
    let probe = "({ad: !!window.adLoaded, tracker: !!window.trackerLoaded, app: !!window.appLoaded})";

    let on = Session::open(&s, json!({})).await; // use_adblock defaults to true
    assert_eq!(on.goto(&page).await.0, 200);
    assert_eq!(
        on.eval(probe).await,
        json!({"ad": false, "tracker": false, "app": true})
    );
    s.delete(&format!("/v1/task/{}", on.id)).await;

    let off = Session::open(&s, json!({"use_adblock": false})).await;
    assert_eq!(off.goto(&page).await.0, 200);
    assert_eq!(
        off.eval(probe).await,
        json!({"ad": true, "tracker": true, "app": true})
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_with_credentials_carries_all_traffic_and_a_wrong_password_is_explained() {
    let site = fixture_site().await;
    let (proxy, log) = smoothd_tests::auth_proxy("alice", "s3cret").await;
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db).await;
    let good = Session::open(
        &s,
        json!({"proxy_server": format!("http://{proxy}"), "proxy_username": "alice", "proxy_password": "s3cret"}),
    )
    .await;
    let (code, out) = good.goto(&format!("{site}/adblock.html")).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(good.eval("document.title").await, "Ad block probe");
    assert_eq!(
        good.eval("!!window.appLoaded").await,
        true,
        "subresources load through the proxy"
    );
    let forwarded = log.lock().unwrap().clone();
    assert!(
        forwarded.iter().any(|u| u.ends_with("/adblock.html")),
        "{forwarded:?}"
    );
    assert!(forwarded.iter().any(|u| u.ends_with("/app.js")), "{forwarded:?}");
    s.delete(&format!("/v1/task/{}", good.id)).await;

    let bad = Session::open(
        &s,
        json!({"proxy_server": format!("http://{proxy}"), "proxy_username": "alice", "proxy_password": "wrong"}),
    )
    .await;
    let (code, out) = bad.goto(&format!("{site}/index.html")).await;
    assert_eq!(code, 400, "{out}");
    assert!(
        out.as_str().unwrap().contains("proxy refused the credentials"),
        "{out}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profiles_persist_cookies_and_storage_and_writers_take_turns() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Postgres).await;
    let s = TestServer::start(&db).await;
    s.post("/v1/profile", json!({"id": "shop"})).await;
    let page = format!("{site}/index.html");

    let first = Session::open(&s, json!({"profile_id": "shop"})).await;
    assert_eq!(first.goto(&page).await.0, 200);
    first
        .eval(
            "document.cookie = 'login=alice; max-age=3600; path=/'; localStorage.setItem('cart', '3 items'); \
             await new Promise((ok, err) => { const r = indexedDB.open('db', 1); \
               r.onupgradeneeded = () => r.result.createObjectStore('s'); \
               r.onsuccess = () => { const tx = r.result.transaction('s', 'readwrite'); tx.objectStore('s').put('kept', 'k'); \
                 tx.oncomplete = () => { r.result.close(); ok(); }; tx.onerror = err; }; r.onerror = err; }); return true;",
        )
        .await;
    // A second writer waits for the first to finish.
    let second = Session::open(&s, json!({"profile_id": "shop"})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = s.get(&format!("/v1/task/{}?event_t=0", second.id)).await;
    assert!(
        body["r"]["events"].to_string().contains("waiting for profile"),
        "{body}"
    );
    let (code, _) = first.cmd("session_action", "close", json!({})).await;
    assert_eq!(code, 200);
    s.wait_final(&first.id, Duration::from_secs(30)).await;
    let (_, profiles) = s.get("/v1/profile").await;
    let p = &profiles["r"][0];
    assert_eq!(p["id"], "shop");
    assert_eq!(p["cookie_count"], 1, "{p}");
    assert_eq!(p["cookie_domains"], json!(["127.0.0.1"]));
    assert!(p["profile_size_bytes"].as_i64().unwrap() > 0);
    assert!(p["last_saved_at"].as_i64().unwrap() > 1_600_000_000);

    // The second session starts from the saved state.
    assert_eq!(second.goto(&page).await.0, 200);
    let state = second
        .eval(
            "({cookie: document.cookie, cart: localStorage.getItem('cart'), idb: await new Promise(ok => { \
               const r = indexedDB.open('db', 1); r.onsuccess = () => { const g = r.result.transaction('s').objectStore('s').get('k'); \
               g.onsuccess = () => ok(g.result); g.onerror = () => ok(null); }; r.onerror = () => ok(null); })})",
        )
        .await;
    assert_eq!(
        state,
        json!({"cookie": "login=alice", "cart": "3 items", "idb": "kept"})
    );
    second
        .eval("localStorage.setItem('cart', 'changed'); return 1")
        .await;
    s.delete(&format!("/v1/task/{}", second.id)).await;
    s.wait_final(&second.id, Duration::from_secs(30)).await;

    // Read-only: loads the saved state, saves nothing back.
    let reader = Session::open(&s, json!({"profile_id": "shop", "profile_read_only": true})).await;
    assert_eq!(reader.goto(&page).await.0, 200);
    assert_eq!(reader.eval("localStorage.getItem('cart')").await, "changed");
    reader
        .eval("localStorage.setItem('cart', 'not saved'); return 1")
        .await;
    s.delete(&format!("/v1/task/{}", reader.id)).await;
    s.wait_final(&reader.id, Duration::from_secs(30)).await;
    let check = Session::open(&s, json!({"profile_id": "shop", "profile_read_only": true})).await;
    assert_eq!(check.goto(&page).await.0, 200);
    assert_eq!(check.eval("localStorage.getItem('cart')").await, "changed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploaded_extensions_run_in_the_page() {
    use std::io::Write;
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db).await;
    // A Manifest V3 extension whose content script marks every page.
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default();
        z.start_file("manifest.json", o).unwrap();
        z.write_all(
            br#"{"manifest_version": 3, "name": "marker", "version": "1.0",
                "content_scripts": [{"matches": ["<all_urls>"], "js": ["mark.js"], "run_at": "document_end"}]}"#,
        )
        .unwrap();
        z.start_file("mark.js", o).unwrap();
        z.write_all(b"document.documentElement.dataset.marked = 'by-extension';")
            .unwrap();
        z.finish().unwrap();
    }
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(buf.into_inner()).file_name("marker.zip"),
    );
    let (code, e) = TestServer::send(s.req(reqwest::Method::POST, "/v1/extension").multipart(form)).await;
    assert_eq!(code, 200, "{e}");
    let ext = e["r"]["id"].as_str().unwrap();
    let with = Session::open(&s, json!({"extensions": [ext]})).await;
    assert_eq!(with.goto(&format!("{site}/index.html")).await.0, 200);
    let marked = with
        .eval("new Promise(r => setTimeout(() => r(document.documentElement.dataset.marked || null), 300))")
        .await;
    assert_eq!(marked, "by-extension");
    s.delete(&format!("/v1/task/{}", with.id)).await;
    let without = Session::open(&s, json!({})).await;
    assert_eq!(without.goto(&format!("{site}/index.html")).await.0, 200);
    assert_eq!(
        without
            .eval("document.documentElement.dataset.marked || null")
            .await,
        json!(null)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_files_can_be_attached_to_file_inputs() {
    let site = fixture_site().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db).await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"name,total\nalice,42\n".to_vec()).file_name("report.csv"),
    );
    let (_, f) = TestServer::send(s.req(reqwest::Method::POST, "/v1/file").multipart(form)).await;
    let fid = f["r"]["id"].as_str().unwrap();
    let session = Session::open(&s, json!({"files": [fid]})).await;
    assert_eq!(session.goto(&format!("{site}/upload.html")).await.0, 200);
    let (code, out) = session
        .cmd(
            "browser_action",
            "upload_file",
            json!({"selector": "#f", "file": "report.csv"}),
        )
        .await;
    assert_eq!(code, 200, "{out}");
    let got = session
        .eval("const f = document.getElementById('f').files[0]; return [f.name, await f.text()];")
        .await;
    assert_eq!(got, json!(["report.csv", "name,total\nalice,42\n"]));
    let (code, out) = session
        .cmd(
            "browser_action",
            "upload_file",
            json!({"selector": "#f", "file": "other.pdf"}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(out.as_str().unwrap().contains("report.csv"), "{out}");
    s.stop().await;
}
