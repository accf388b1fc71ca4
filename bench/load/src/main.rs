//! smoothd-load: the load figures of BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p smoothd-load -- [api|queue|sessions|all] [--smoothd PATH] [--pg URL]
//!                                        [--seconds N] [--clients N] [--sessions N]
//! ```
//!
//! It starts the smoothd binary itself (SQLite in a temporary folder; PostgreSQL in a fresh
//! database created from the admin URL, dropped afterwards), drives it over HTTP on loopback the
//! way the SDK does, and prints Markdown tables:
//!
//! - `api`: `POST /v1/task` at rising concurrency against an API-only process (the queue only
//!   fills), then N simulated SDK clients each polling `GET /v1/task/{id}?event_t=` once a
//!   second; throughput and p50/p99 latency, on SQLite and PostgreSQL.
//! - `queue`: submit → claim (the task's `started_at` − `created_at`, from the database) and a
//!   session's client event → its answer as the client sees it, with 1, 2 and 4 worker
//!   processes on one PostgreSQL. Tasks carry no model, so a claimed task ends at once: what is
//!   measured is the queue, not the agent.
//! - `sessions`: concurrent browser sessions on this machine: start latency (submit → first
//!   command answered) and memory per session (Chromium PSS + smoothd RSS), from a warm shared
//!   browser, and cold (a profile, so a dedicated Chromium launches).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const KEY: &str = "smd_load_0123456789abcdef0123456789abcdef";
const PAGE: &str = "<!doctype html><title>load</title><h1>Load page</h1><p>A page for sessions.</p>";

struct Opts {
    what: String,
    smoothd: PathBuf,
    pg: String,
    seconds: u64,
    clients: usize,
    sessions: usize,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        what: "all".into(),
        smoothd: PathBuf::from("target/release/smoothd"),
        pg: std::env::var("SMOOTHD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        seconds: 5,
        clients: 1000,
        sessions: 40,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--smoothd" => o.smoothd = PathBuf::from(val()?),
            "--pg" => o.pg = val()?,
            "--seconds" => o.seconds = val()?.parse()?,
            "--clients" => o.clients = val()?.parse()?,
            "--sessions" => o.sessions = val()?.parse()?,
            "api" | "queue" | "sessions" | "all" => o.what = a,
            other => bail!("unknown argument {other:?} (see the module docs in bench/load/src/main.rs)"),
        }
    }
    if !o.smoothd.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p smoothd) or pass --smoothd",
            o.smoothd.display()
        );
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = opts()?;
    let site = serve_page().await?;
    println!(
        "# smoothd load figures ({}; {} cores)\n",
        o.smoothd.display(),
        std::thread::available_parallelism().map(usize::from).unwrap_or(1)
    );
    if o.what == "api" || o.what == "all" {
        api(&o).await?;
    }
    if o.what == "queue" || o.what == "all" {
        queue(&o, &site).await?;
    }
    if o.what == "sessions" || o.what == "all" {
        sessions(&o, &site).await?;
    }
    Ok(())
}

// --- processes and databases ---------------------------------------------------------------

/// A database for one run: a SQLite file, or a fresh PostgreSQL database dropped at the end.
struct Db {
    url: String,
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Db {
    async fn new(backend: &str, admin: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        if backend == "sqlite" {
            let url = format!("sqlite://{}", dir.path().join("smoothd.db").display());
            return Ok(Self {
                url,
                pg: None,
                _dir: dir,
            });
        }
        let name = format!("smoothd_load_{}", std::process::id());
        let pool = sqlx::PgPool::connect(admin)
            .await
            .context("PostgreSQL admin URL")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&pool)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await?;
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').context("admin URL without a database")?;
        Ok(Self {
            url: format!("{base}/{name}"),
            pg: Some((admin.to_string(), name)),
            _dir: dir,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    async fn drop_pg(self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(pool) = sqlx::PgPool::connect(admin).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await;
        }
    }

    /// One row of numbers from the database.
    async fn column(&self, sql: &str) -> Result<Vec<i64>> {
        if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await?;
            let v: Vec<(i64,)> = sqlx::query_as(sql).fetch_all(&pool).await?;
            pool.close().await;
            Ok(v.into_iter().map(|r| r.0).collect())
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await?;
            let v: Vec<(i64,)> = sqlx::query_as(sql).fetch_all(&pool).await?;
            pool.close().await;
            Ok(v.into_iter().map(|r| r.0).collect())
        }
    }
}

/// A smoothd process we started; killed when dropped.
struct Proc {
    child: Child,
    base: String,
}

impl Proc {
    async fn start(o: &Opts, db: &Db, args: &[&str], env: &[(&str, String)]) -> Result<Self> {
        let port = free_port()?;
        let metrics = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(&o.smoothd);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("SMOOTHD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SMOOTHD_PUBLIC_URL", &base)
            .env("SMOOTHD_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
            .env("SMOOTHD_DATA_DIR", db.data_dir())
            .env("SMOOTHD_DATABASE_URL", &db.url)
            .env("SMOOTHD_API_KEY", KEY)
            .env("SMOOTHD_LOG", "warn")
            .env(
                "SMOOTHD_CHROMIUM_ARGS",
                r#"["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]"#,
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting smoothd")?;
        let ready = if args.first() == Some(&"worker") {
            format!("http://127.0.0.1:{metrics}/healthz")
        } else {
            format!("{base}/readyz")
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(&ready).send().await
                && r.status().is_success()
            {
                return Ok(Self { child, base });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("smoothd {args:?} not ready within 60 s")
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A one-page site on loopback for sessions to open.
async fn serve_page() -> Result<String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", l.local_addr()?);
    let app = axum::Router::new().fallback(|| async { axum::response::Html(PAGE) });
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(url)
}

fn client(max_conns: usize) -> Result<reqwest::Client> {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("apikey", reqwest::header::HeaderValue::from_static(KEY));
    Ok(reqwest::Client::builder()
        .default_headers(h)
        .pool_max_idle_per_host(max_conns)
        .timeout(Duration::from_secs(30))
        .build()?)
}

// --- statistics ------------------------------------------------------------------------------

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// --- api ---------------------------------------------------------------------------------------

async fn submit(http: &reqwest::Client, base: &str, body: &Value) -> Result<String> {
    let r = http.post(format!("{base}/v1/task")).json(body).send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("POST /v1/task: {status} {v}");
    }
    Ok(v["r"]["id"].as_str().context("no task id")?.to_string())
}

/// Gathers the clients' latencies and errors and prints one table row.
async fn row(
    backend: &str,
    load: &str,
    started: Instant,
    clients: Vec<tokio::task::JoinHandle<(Vec<f64>, usize)>>,
) -> Result<()> {
    let (mut lat, mut errors) = (Vec::new(), 0);
    for c in clients {
        let (l, e) = c.await?;
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    let lat = sorted(lat);
    println!(
        "| {backend} | {load} | {} | {:.0}/s | {:.1} ms | {:.1} ms | {errors} |",
        lat.len(),
        lat.len() as f64 / secs,
        pct(&lat, 50.0),
        pct(&lat, 99.0)
    );
    Ok(())
}

async fn api(o: &Opts) -> Result<()> {
    println!("## API: `POST /v1/task` and SDK polling (API-only process, no workers)\n");
    println!("| backend | load | requests | throughput | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        let db = Db::new(backend, &o.pg).await?;
        let p = Proc::start(o, &db, &["serve", "--no-workers"], &[]).await?;
        let body = json!({"task": "Find the cheapest flight from London to Paris today", "max_steps": 8});
        for conc in [1usize, 16, 64] {
            let http = client(conc)?;
            let stop = Instant::now() + Duration::from_secs(o.seconds);
            let started = Instant::now();
            let mut runners = Vec::new();
            for _ in 0..conc {
                let (http, base, body) = (http.clone(), p.base.clone(), body.clone());
                runners.push(tokio::spawn(async move {
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    while Instant::now() < stop {
                        let t = Instant::now();
                        match submit(&http, &base, &body).await {
                            Ok(_) => lat.push(ms(t.elapsed())),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                }));
            }
            row(backend, &format!("POST, {conc} concurrent"), started, runners).await?;
        }
        // SDK clients: each owns a task and polls it once a second, as `_poller` does.
        let http = client(o.clients)?;
        let mut ids = Vec::with_capacity(o.clients);
        for _ in 0..o.clients {
            ids.push(submit(&http, &p.base, &body).await?);
        }
        let window = Duration::from_secs(o.seconds.max(10));
        let started = Instant::now();
        let stop = started + window;
        let mut pollers = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            let (http, base) = (http.clone(), p.base.clone());
            // Spread the clients over the first second, as independent users would be.
            let offset = Duration::from_millis((i as u64 * 1000) / o.clients.max(1) as u64);
            pollers.push(tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                tokio::time::sleep(offset).await;
                while Instant::now() < stop {
                    let t = Instant::now();
                    match http.get(format!("{base}/v1/task/{id}?event_t=0")).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(ms(t.elapsed()));
                        }
                        _ => errors += 1,
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                (lat, errors)
            }));
        }
        let load = format!("{} SDK clients polling 1/s", o.clients);
        row(backend, &load, started, pollers).await?;
        drop(p);
        db.drop_pg().await;
    }
    println!();
    Ok(())
}

// --- queue -------------------------------------------------------------------------------------

/// Sends a client event and waits (long-polling as newer clients do) for its answer.
async fn command(http: &reqwest::Client, base: &str, id: &str, js: &str, since: &mut i64) -> Result<Value> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let eid = format!("evt_{:016x}{n:08x}", rand_u64());
    let body =
        json!({"name": "browser_action", "id": eid, "payload": {"name": "evaluate_js", "input": {"js": js}}});
    let r = http
        .post(format!("{base}/v1/task/{id}/event"))
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("POST event: {} {}", r.status(), r.text().await?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let v: Value = http
            .get(format!("{base}/v1/task/{id}?event_t={since}"))
            .send()
            .await?
            .json()
            .await?;
        for e in v["r"]["events"].as_array().into_iter().flatten() {
            if let Some(t) = e["timestamp"].as_i64() {
                *since = (*since).max(t);
            }
            if e["id"] == eid.as_str() {
                return Ok(e["payload"].clone());
            }
        }
        let status = v["r"]["status"].as_str().unwrap_or("");
        if !matches!(status, "waiting" | "running") {
            bail!("session ended: {}", v["r"]);
        }
    }
    bail!("no answer to {eid} within 60 s")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

async fn queue(o: &Opts, site: &str) -> Result<()> {
    println!("## Queue: submit → claim and client event → answer (PostgreSQL, 1 API process)\n");
    println!(
        "| worker processes | tasks | submit → claim p50 | p99 | drain of a burst | event → answer p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for workers in [1usize, 2, 4] {
        let db = Db::new("postgres", &o.pg).await?;
        let env = [
            ("SMOOTHD_WORKERS", "4".to_string()),
            ("SMOOTHD_QUEUE_POLL_SECONDS", "5".to_string()),
        ];
        let api = Proc::start(o, &db, &["serve", "--no-workers"], &env).await?;
        let mut procs = Vec::new();
        for _ in 0..workers {
            procs.push(Proc::start(o, &db, &["worker"], &env).await?);
        }
        let http = client(64)?;
        // A steady stream: 50 tasks a second for the window.
        let body = json!({"task": "queue probe", "max_steps": 2});
        let n = (o.seconds.max(4) * 50) as usize;
        for _ in 0..n {
            submit(&http, &api.base, &body).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_drained(&db, Duration::from_secs(60)).await?;
        // A burst of 200 at once: how long the workers take to claim them all.
        let burst_start = smoothd_now_ms();
        let mut b = Vec::new();
        for _ in 0..200 {
            let (http, base, body) = (http.clone(), api.base.clone(), body.clone());
            b.push(tokio::spawn(async move { submit(&http, &base, &body).await }));
        }
        for t in b {
            t.await??;
        }
        wait_drained(&db, Duration::from_secs(120)).await?;
        let last_claim = db
            .column(&format!(
                "SELECT COALESCE(MAX(started_at), 0) FROM tasks WHERE created_at >= {burst_start}"
            ))
            .await?;
        let drain = last_claim.first().copied().unwrap_or(0) - burst_start;
        let waits = db
            .column(&format!(
                "SELECT started_at - created_at FROM tasks WHERE started_at IS NOT NULL AND created_at < {burst_start}"
            ))
            .await?;
        let waits = sorted(waits.into_iter().map(|w| w as f64).collect());
        // Client events: one session per worker process, 30 commands each, in parallel.
        let mut sessions = Vec::new();
        for _ in 0..workers {
            let id = submit(&http, &api.base, &json!({"task": null, "url": site})).await?;
            sessions.push(id);
        }
        let mut runs = Vec::new();
        for id in sessions.clone() {
            let (http, base) = (http.clone(), api.base.clone());
            runs.push(tokio::spawn(async move {
                let mut since = 0;
                // The first command waits for the session to start; it is not counted.
                command(&http, &base, &id, "1", &mut since).await?;
                let mut lat = Vec::new();
                for i in 0..30 {
                    let t = Instant::now();
                    let a = command(&http, &base, &id, &format!("{i} + 1"), &mut since).await?;
                    if a["code"] != 200 {
                        bail!("command failed: {a}");
                    }
                    lat.push(ms(t.elapsed()));
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut lat = Vec::new();
        for r in runs {
            lat.extend(r.await??);
        }
        for id in &sessions {
            let _ = http.delete(format!("{}/v1/task/{id}", api.base)).send().await;
        }
        let lat = sorted(lat);
        println!(
            "| {workers} | {} | {:.0} ms | {:.0} ms | 200 in {drain} ms | {:.1} ms | {:.1} ms |",
            waits.len(),
            pct(&waits, 50.0),
            pct(&waits, 99.0),
            pct(&lat, 50.0),
            pct(&lat, 99.0)
        );
        drop(procs);
        drop(api);
        db.drop_pg().await;
    }
    println!();
    Ok(())
}

fn smoothd_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn wait_drained(db: &Db, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let left = db
            .column("SELECT COUNT(*) FROM tasks WHERE status IN ('waiting', 'running') AND kind <> 'session'")
            .await?;
        if left.first() == Some(&0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the queue did not drain within {limit:?}")
}

// --- sessions ----------------------------------------------------------------------------------

/// Memory in MiB of `pid` and its descendants: (Chromium PSS, ffmpeg PSS, smoothd RSS).
fn memory(pid: u32) -> (f64, f64, f64) {
    let (mut chromium, mut ffmpeg) = (0u64, 0u64);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0.0, 0.0, 0.0);
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if p == pid || !descends(p, pid) {
            continue;
        }
        let pss = kib(&format!("/proc/{p}/smaps_rollup"), "Pss:");
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm.trim() == "ffmpeg" {
            ffmpeg += pss;
        } else {
            chromium += pss;
        }
    }
    let own = kib(&format!("/proc/{pid}/status"), "VmRSS:");
    let mib = |k: u64| k as f64 / 1024.0;
    (mib(chromium), mib(ffmpeg), mib(own))
}

fn descends(mut p: u32, ancestor: u32) -> bool {
    for _ in 0..16 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            return false;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        p = ppid;
    }
    false
}

fn kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn sessions(o: &Opts, site: &str) -> Result<()> {
    println!("## Sessions on one machine (all-in-one process, SQLite)\n");
    let db = Db::new("sqlite", &o.pg).await?;
    let slots = (o.sessions + 8).to_string();
    let p = Proc::start(o, &db, &["serve"], &[("SMOOTHD_WORKERS", slots)]).await?;
    let pid = p.pid().context("no pid")?;
    let http = client(64)?;
    // The shared browser starts in the background: let one session wait for it.
    let id = submit(&http, &p.base, &json!({"task": null, "url": site})).await?;
    command(&http, &p.base, &id, "1", &mut 0).await?;
    let _ = http.delete(format!("{}/v1/task/{id}", p.base)).send().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c0, f0, s0) = memory(pid);
    println!(
        "Idle server with its warm browser (after one session opened and closed): Chromium {c0:.0} MiB PSS, \
         ffmpeg {f0:.0} MiB, smoothd {s0:.0} MiB RSS. Sessions are opened one after another as the SDK \
         opens them (recording on, the default), and all stay open.\n"
    );
    println!(
        "| sessions open | start p50 (last 10) | start max (last 10) | Chromium PSS | ffmpeg PSS | smoothd RSS | per session |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut open: Vec<(String, i64)> = Vec::new();
    let mut starts = Vec::new();
    let mut failed = None;
    for i in 1..=o.sessions {
        let t = Instant::now();
        let id = submit(&http, &p.base, &json!({"task": null, "url": site})).await?;
        let mut since = 0;
        match command(&http, &p.base, &id, "document.title", &mut since).await {
            Ok(a) if a["code"] == 200 => {}
            Ok(a) => {
                failed = Some(format!("session {i}: {a}"));
                break;
            }
            Err(e) => {
                failed = Some(format!("session {i}: {e}"));
                break;
            }
        }
        starts.push(ms(t.elapsed()));
        open.push((id, since));
        if i % 10 == 0 || i == o.sessions {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (c, f, s) = memory(pid);
            let last = sorted(starts[starts.len().saturating_sub(10)..].to_vec());
            println!(
                "| {i} | {:.0} ms | {:.0} ms | {c:.0} MiB | {f:.0} MiB | {s:.0} MiB | {:.0} MiB |",
                pct(&last, 50.0),
                pct(&last, 100.0),
                ((c + f + s) - (c0 + f0 + s0)) / i as f64
            );
        }
    }
    if let Some(f) = failed {
        println!("\nStopped early: {f}");
    }
    // Every open session still answers.
    let mut alive = 0;
    for (id, since) in &mut open {
        if let Ok(a) = command(&http, &p.base, id, "1 + 1", since).await
            && a["code"] == 200
        {
            alive += 1;
        }
    }
    println!(
        "\nAll {} sessions open at once; {alive} answered a command afterwards.\n",
        open.len()
    );
    for (id, _) in &open {
        let _ = http.delete(format!("{}/v1/task/{id}", p.base)).send().await;
    }
    // Warm (a context in the shared browser) against cold (a profile: a dedicated Chromium).
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let t = Instant::now();
        let id = submit(&http, &p.base, &json!({"task": null, "url": site})).await?;
        command(&http, &p.base, &id, "1", &mut 0).await?;
        warm.push(ms(t.elapsed()));
        let _ = http.delete(format!("{}/v1/task/{id}", p.base)).send().await;
        let profile = format!("load-{i}");
        let r = http
            .post(format!("{}/v1/profile", p.base))
            .json(&json!({"id": profile}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("POST /v1/profile: {}", r.text().await?);
        }
        let t = Instant::now();
        let id = submit(
            &http,
            &p.base,
            &json!({"task": null, "url": site, "profile_id": profile}),
        )
        .await?;
        command(&http, &p.base, &id, "1", &mut 0).await?;
        cold.push(ms(t.elapsed()));
        let _ = http.delete(format!("{}/v1/task/{id}", p.base)).send().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (warm, cold) = (sorted(warm), sorted(cold));
    println!("| session start (submit → first command answered), 5 each | p50 | max |");
    println!("|---|---|---|");
    println!(
        "| warm: a new context in the shared browser | {:.0} ms | {:.0} ms |",
        pct(&warm, 50.0),
        pct(&warm, 100.0)
    );
    println!(
        "| cold: a profile, so a dedicated Chromium launches | {:.0} ms | {:.0} ms |",
        pct(&cold, 50.0),
        pct(&cold, 100.0)
    );
    println!(
        "| ratio cold / warm (p50) | {:.1}× | |\n",
        pct(&cold, 50.0) / pct(&warm, 50.0)
    );
    drop(p);
    Ok(())
}
