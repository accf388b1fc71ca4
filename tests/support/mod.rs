//! Test support: fresh databases on both backends, an in-process server on 127.0.0.1:0, and a
//! small HTTP client that speaks the wire protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::missing_panics_doc,
    reason = "test support: a failed precondition fails the test"
)]

use std::time::Duration;

use serde_json::{Value, json};
use smoothd::{Roles, Settings};
use smoothd_store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL admin URL the suite creates its databases from.
pub fn pg_admin_url() -> String {
    std::env::var("SMOOTHD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database: a SQLite file in a temp folder, or a new PostgreSQL database that is
/// dropped when this goes away.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("smoothd.db").display());
                Self {
                    url,
                    dir,
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let name = format!(
                    "smoothd_test_{}",
                    smoothd_core::ids::random_token(12).to_lowercase()
                );
                let admin = pg_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed for these tests: {e}"));
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
                Self {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url, &StoreOptions::default()).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            // Drop on a separate thread with its own runtime: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                        let _ = sqlx::Executor::execute(
                            &mut conn,
                            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                        )
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A server running in this process.
pub struct TestServer {
    pub base: String,
    pub key: String,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

/// Settings for a test server on `db`, with short timings.
pub fn test_settings(db: &TestDb) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: Some(db.url.clone().into()),
        data_dir: db.dir.path().to_path_buf(),
        api_key: Some(format!("test-key-{}", smoothd_core::ids::random_token(24)).into()),
        workers: 2,
        lease_seconds: 10,
        heartbeat_seconds: 1,
        long_poll_seconds: 5,
        close_grace_seconds: 2,
        drain_seconds: 5,
        max_upload_bytes: 64 * 1024,
        max_body_bytes: 64 * 1024,
        // Tests talk to loopback only; stop Chromium's background DNS lookups.
        chromium_args: vec![
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost".into(),
        ],
        ..Settings::default()
    }
}

impl TestServer {
    /// Starts with `settings`, in the given roles.
    /// An all-in-one process (API and workers) with `settings`.
    pub async fn all_in_one(settings: Settings) -> Self {
        Self::start_with(
            settings,
            Roles {
                api: true,
                workers: true,
            },
        )
        .await
    }

    /// An API-only process (`serve --no-workers`) with `settings`.
    pub async fn api_only(settings: Settings) -> Self {
        Self::start_with(
            settings,
            Roles {
                api: true,
                workers: false,
            },
        )
        .await
    }

    /// A workers-only process (`worker`) with `settings`.
    pub async fn workers_only(settings: Settings) -> Self {
        Self::start_with(
            settings,
            Roles {
                api: false,
                workers: true,
            },
        )
        .await
    }

    pub async fn start_with(settings: Settings, roles: Roles) -> Self {
        let store = smoothd::open_store(&settings).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(smoothd::run(
            settings.clone(),
            store,
            roles.api.then_some(listener),
            roles,
            shutdown.clone(),
        ));
        let key = settings
            .api_key
            .as_ref()
            .map(|k| k.expose().to_string())
            .unwrap_or_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base,
            key,
            settings,
            shutdown,
            handle: Some(handle),
            http,
        }
    }

    /// Starts API and workers on `db`.
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(
            test_settings(db),
            Roles {
                api: true,
                workers: true,
            },
        )
        .await
    }

    /// Stops and waits for a clean exit.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("server did not stop")
                .unwrap()
                .unwrap();
        }
    }

    /// A request with the server's key.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("apikey", &self.key)
    }

    /// A request with another key.
    pub fn req_as(&self, key: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("apikey", key)
    }

    /// Sends and returns (status, JSON body).
    pub async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
        (status, body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        Self::send(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        Self::send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        Self::send(self.req(reqwest::Method::DELETE, path)).await
    }

    /// Creates a second API key directly in the store.
    pub async fn other_key(&self, name: &str) -> String {
        let store = smoothd::open_store(&Settings {
            api_key: None,
            ..self.settings.clone()
        })
        .await
        .unwrap();
        let key = smoothd_core::ids::api_key();
        store.create_key(name, &key).await.unwrap();
        store.close().await;
        key
    }

    /// Polls `GET /v1/task/{id}` until the status is final (or panics after `limit`).
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (code, body) = self.get(&format!("/v1/task/{id}")).await;
            let status = body["r"]["status"].as_str().unwrap_or("").to_string();
            if ["done", "failed", "cancelled"].contains(&status.as_str()) {
                assert_eq!(code, 200, "final status answers 200: {body}");
                return body["r"].clone();
            }
            assert_eq!(code, 202, "non-final status answers 202: {body}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} not final in {limit:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the task reads `status`.
    pub async fn wait_status(&self, id: &str, status: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (_, body) = self.get(&format!("/v1/task/{id}")).await;
            if body["r"]["status"] == status {
                return body["r"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} never became {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Generates one `#[tokio::test]` per backend for `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Serves `tests/fixtures/site` on 127.0.0.1:0; returns its base URL.
pub async fn fixture_site() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/site");
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let dir = dir.clone();
        async move {
            let name = uri.path().trim_start_matches('/');
            let name = if name.is_empty() { "index.html" } else { name };
            if name.contains("..") {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "text/plain")],
                    Vec::new(),
                );
            }
            let kind = if name.ends_with(".js") {
                "application/javascript"
            } else {
                "text/html; charset=utf-8"
            };
            match std::fs::read(dir.join(name)) {
                Ok(bytes) => (axum::http::StatusCode::OK, [("content-type", kind)], bytes),
                Err(_) => (
                    axum::http::StatusCode::NOT_FOUND,
                    [("content-type", "text/plain")],
                    b"not found".to_vec(),
                ),
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    base
}

/// An open session driven by raw client events, as the SDK does it.
pub struct Session<'a> {
    pub server: &'a TestServer,
    pub id: String,
    last: std::sync::Mutex<i64>,
}

impl<'a> Session<'a> {
    /// Opens a session with extra request fields.
    pub async fn open(server: &'a TestServer, extra: Value) -> Session<'a> {
        let mut body = json!({"task": null});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (code, resp) = server.post("/v1/task", body).await;
        assert_eq!(code, 200, "{resp}");
        Session {
            server,
            id: resp["r"]["id"].as_str().unwrap().to_string(),
            last: std::sync::Mutex::new(0),
        }
    }

    /// Sends a client event and waits for its answer: (code, output).
    pub async fn cmd(&self, name: &str, action: &str, input: Value) -> (i64, Value) {
        let eid = smoothd_core::ids::event_id();
        let (code, body) = self
            .server
            .post(
                &format!("/v1/task/{}/event", self.id),
                json!({"id": eid, "name": name, "payload": {"name": action, "input": input}}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let last = *self.last.lock().unwrap();
            let (_, body) = self
                .server
                .get(&format!("/v1/task/{}?event_t={last}", self.id))
                .await;
            for e in body["r"]["events"].as_array().cloned().unwrap_or_default() {
                *self.last.lock().unwrap() = e["timestamp"].as_i64().unwrap();
                if e["id"] == eid.as_str() {
                    return (
                        e["payload"]["code"].as_i64().unwrap(),
                        e["payload"]["output"].clone(),
                    );
                }
            }
            assert!(
                ["waiting", "running"].contains(&body["r"]["status"].as_str().unwrap_or("")),
                "session ended while waiting for {action}: {body}"
            );
            assert!(tokio::time::Instant::now() < deadline, "no answer to {action}");
        }
    }

    pub async fn goto(&self, url: &str) -> (i64, Value) {
        self.cmd("browser_action", "goto", json!({"url": url})).await
    }

    /// Evaluates and returns the value, asserting success.
    pub async fn eval(&self, js: &str) -> Value {
        let (code, out) = self.cmd("browser_action", "evaluate_js", json!({"js": js})).await;
        assert_eq!(code, 200, "{js}: {out}");
        out["output"].clone()
    }
}

/// A small authenticating HTTP proxy on 127.0.0.1:0 (plain HTTP, absolute-form requests).
/// Returns its address and a log of the URLs it forwarded.
pub async fn auth_proxy(user: &str, pass: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let expected = expected.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut lines = head.split("\r\n");
                let first = lines.next().unwrap_or("");
                let mut parts = first.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let auth_ok = lines.clone().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("proxy-authorization") && v.trim() == expected
                    })
                });
                if !auth_ok {
                    let _ = client
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(url) = url::Url::parse(target) else { return };
                seen.lock().unwrap().push(target.to_string());
                let host = format!(
                    "{}:{}",
                    url.host_str().unwrap_or(""),
                    url.port_or_known_default().unwrap_or(80)
                );
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&host).await else {
                    return;
                };
                let mut path = url.path().to_string();
                if let Some(q) = url.query() {
                    path = format!("{path}?{q}");
                }
                let mut req = format!("{method} {path} HTTP/1.1\r\n");
                for l in lines.take_while(|l| !l.is_empty()) {
                    let k = l.split(':').next().unwrap_or("").to_ascii_lowercase();
                    if !["proxy-authorization", "proxy-connection", "connection"].contains(&k.as_str()) {
                        req.push_str(l);
                        req.push_str("\r\n");
                    }
                }
                req.push_str("Connection: close\r\n\r\n");
                if upstream.write_all(req.as_bytes()).await.is_err() {
                    return;
                }
                let mut resp = Vec::new();
                let _ = upstream.read_to_end(&mut resp).await;
                let _ = client.write_all(&resp).await;
            });
        }
    });
    (addr, log)
}
