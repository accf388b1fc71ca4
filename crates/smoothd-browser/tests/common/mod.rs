//! What the driver tests share: the fixture site served on 127.0.0.1:0, a Chromium to drive,
//! and reading a view.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed expectation fails the test"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use smoothd_browser::{BrowserProcess, BrowserSession, LaunchConfig, PageView, find_chromium};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `tests/fixtures/site` on 127.0.0.1:0 (one request per connection); returns its base URL.
pub async fn fixture_site() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/site");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let root = root.clone();
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
                let target = head.split_whitespace().nth(1).unwrap_or("/");
                let name = target.split('?').next().unwrap_or("/").trim_start_matches('/');
                let name = if name.is_empty() { "index.html" } else { name };
                let (status, body) = match std::fs::read(root.join(name)) {
                    Ok(b) if !name.contains("..") => ("200 OK", b),
                    _ => ("404 Not Found", b"not found".to_vec()),
                };
                let kind = if name.ends_with(".js") {
                    "application/javascript"
                } else {
                    "text/html; charset=utf-8"
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
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

/// The index the view gives the element whose line contains `needle`.
pub fn index_of(view: &PageView, needle: &str) -> u32 {
    let line = view
        .text
        .lines()
        .find(|l| l.contains(needle) && l.contains("]<"))
        .unwrap_or_else(|| panic!("no element line with {needle:?} in the view:\n{}", view.text));
    let start = line.find('[').unwrap() + 1;
    let end = start + line[start..].find(']').unwrap();
    line[start..end].parse().unwrap()
}

pub async fn eval(session: &BrowserSession, js: &str) -> Value {
    session.evaluate(js, None).await.unwrap()
}
