//! The relay between an API process (holding frpc's connection) and the worker running the
//! session: plain HTTP/1.1 upgrades on the worker's live listener, `GET /tunnel/{task id}/
//! {control|work}?token={live token}` with `Upgrade: smoothd-tunnel`, after which the
//! connection is a raw byte stream. No sticky routing is needed: any API process can relay.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::TunnelError;
use crate::ws::read_head;

/// The `Upgrade` protocol name of the relays.
pub const UPGRADE: &str = "smoothd-tunnel";

/// Opens a relay of `kind` (`control` or `work`) for `task_id` at the worker's `addr`.
pub async fn connect(addr: &str, task_id: &str, kind: &str, token: &str) -> Result<TcpStream, TunnelError> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| TunnelError::Relay(format!("connecting to {addr} timed out")))??;
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET /tunnel/{task_id}/{kind}?token={token} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .map_err(|_| TunnelError::Relay(format!("{addr} did not answer")))??;
    if head.first_line.split_whitespace().nth(1) != Some("101") {
        return Err(TunnelError::Relay(format!("{addr} answered {}", head.first_line)));
    }
    Ok(s)
}
