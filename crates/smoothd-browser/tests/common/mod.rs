//! What the driver tests share: a small HTTP server on 127.0.0.1:0 (the fixture site, or pages a
//! test makes), a Chromium to drive, and reading a view.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed expectation fails the test"
)]
#![allow(dead_code, reason = "each test binary uses its own part of what is shared")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use smoothd_browser::{
    BrowserProcess, BrowserSession, Driver, LaunchConfig, PageView, SessionOptions, find_chromium,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One response: its type, its body, and how long the server holds it back first.
pub struct Reply {
    pub kind: &'static str,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    /// An HTML page sent at once.
    pub fn html(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            kind: "text/html; charset=utf-8",
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

/// When each request target's response was written (after its delay).
pub type Served = Arc<Mutex<HashMap<String, Instant>>>;

/// Serves what `route` answers for each request target (path and query; None is a 404) on
/// 127.0.0.1:0, one request per connection, uncached; returns the base URL and the log of what
/// was served when.
pub async fn serve(route: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> (String, Served) {
    let route = Arc::new(route);
    let served: Served = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = served.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (route, log) = (route.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, reply) = match route(&target) {
                    Some(r) => ("200 OK", r),
                    None => (
                        "404 Not Found",
                        Reply {
                            kind: "text/plain",
                            body: b"not found".to_vec(),
                            delay: Duration::ZERO,
                        },
                    ),
                };
                tokio::time::sleep(reply.delay).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                    reply.kind,
                    reply.body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&reply.body).await;
                let _ = sock.flush().await;
                log.lock().unwrap().insert(target, Instant::now());
            });
        }
    });
    (base, served)
}

/// Serves `tests/fixtures/site` on 127.0.0.1:0 (one request per connection); returns its base URL.
pub async fn fixture_site() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/site");
    let (base, _) = serve(move |target| {
        let name = target.split('?').next().unwrap_or("/").trim_start_matches('/');
        let name = if name.is_empty() { "index.html" } else { name };
        if name.contains("..") {
            return None;
        }
        let body = std::fs::read(root.join(name)).ok()?;
        let kind = if name.ends_with(".js") {
            "application/javascript"
        } else {
            "text/html; charset=utf-8"
        };
        Some(Reply {
            kind,
            body,
            delay: Duration::ZERO,
        })
    })
    .await;
    base
}

pub async fn browser() -> Arc<BrowserProcess> {
    let chromium: PathBuf = find_chromium(std::env::var("SMOOTHD_CHROMIUM").ok().as_deref())
        .unwrap_or_else(|e| panic!("these tests need Chromium: {e}"));
    Arc::new(
        BrowserProcess::launch(&LaunchConfig::new(chromium), &[])
            .await
            .unwrap(),
    )
}

/// A session with the default options in a browser of its own.
pub async fn session() -> BrowserSession {
    BrowserSession::open(browser().await, SessionOptions::default())
        .await
        .unwrap()
}

/// A driver of `session`'s tab, with the page helper installed.
pub async fn driver(session: &BrowserSession) -> Driver<'_> {
    let mut d = Driver::new(session);
    d.install().await.unwrap();
    d
}

/// Opens `url` in `d`'s tab and reads the view.
pub async fn open(d: &mut Driver<'_>, url: String) -> PageView {
    d.act(smoothd_browser::Action::Goto { url }).await.unwrap();
    d.observe().await.unwrap()
}

/// The index the view gives the element whose line contains `needle`.
pub fn index_of(view: &PageView, needle: &str) -> u32 {
    indexes_of(view, needle)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no element line with {needle:?} in the view:\n{}", view.text))
}

/// The indexes the view gives the elements whose lines contain `needle`, in the view's order.
pub fn indexes_of(view: &PageView, needle: &str) -> Vec<u32> {
    view.text
        .lines()
        .filter(|l| l.contains(needle) && l.contains("]<"))
        .map(|line| {
            let start = line.find('[').unwrap() + 1;
            let end = start + line[start..].find(']').unwrap();
            line[start..end].parse().unwrap()
        })
        .collect()
}

pub async fn eval(session: &BrowserSession, js: &str) -> Value {
    session.evaluate(js, None).await.unwrap()
}
