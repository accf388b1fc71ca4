//! The WebSocket that frpc's `wss` transport speaks (RFC 6455, server side), reduced to a byte
//! stream. frpc 0.65/0.66 (`golang.org/x/net/websocket`) sends the multiplexer's raw bytes in
//! *text* frames, which are not UTF-8: a general WebSocket library refuses them, so the frames
//! are read here, whatever their opcode, and their payloads concatenated. We send binary frames.
//! Also the plain HTTP/1.1 head parsing for the TLS listener and the worker relay.

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

use crate::TunnelError;

/// The path frpc asks for.
pub const FRP_PATH: &str = "/~!frp";

/// Largest frame accepted from a client.
const MAX_FRAME: u64 = 16 << 20;

/// A connection that sends nothing for this long is dead: frpc's multiplexer pings every 30 s
/// (`transport.tcpMuxKeepaliveInterval`), so this finds a peer gone without a FIN.
const IDLE: std::time::Duration = std::time::Duration::from_secs(95);

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// An HTTP/1.1 request or response head: the first line and the headers (names lowercased).
#[derive(Debug)]
pub struct Head {
    pub first_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a head byte by byte (so nothing after it is consumed), at most 16 KiB.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<Head, TunnelError> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let b = r.read_u8().await?;
        buf.push(b);
        if buf.ends_with(b"\r\n\r\n") {
            break;
        }
        if buf.len() > 16 * 1024 {
            return Err(TunnelError::Protocol("HTTP head too long".into()));
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let first_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Head { first_line, headers })
}

/// Answers a WebSocket upgrade request `head` on `io` (already read), or refuses it.
pub async fn accept_raw<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    head: &Head,
) -> Result<(), TunnelError> {
    let mut parts = head.first_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let key = head.header("sec-websocket-key");
    let upgrade = head
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (Some(key), true, "GET", FRP_PATH) = (key, upgrade, method, path) else {
        let body = "this listener only serves the FRP tunnel (GET /~!frp, WebSocket)\n";
        let resp = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        io.write_all(resp.as_bytes()).await?;
        return Err(TunnelError::Protocol(format!(
            "not a tunnel request: {}",
            head.first_line
        )));
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    io.write_all(resp.as_bytes()).await?;
    io.flush().await?;
    Ok(())
}

/// Runs the framing over an upgraded connection and hands back the byte stream inside it.
/// The stream ends when the peer closes or breaks the WebSocket; dropping it closes it.
pub fn into_stream<S>(io: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    into_stream_idle(io, IDLE)
}

fn into_stream_idle<S>(io: S, idle: std::time::Duration) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        if let Err(e) = pump(io, ours, idle).await {
            tracing::debug!(error = %e, "tunnel websocket ended");
        }
    });
    theirs
}

async fn pump<S>(io: S, inner: DuplexStream, idle: std::time::Duration) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (mut inner_rd, mut inner_wr) = tokio::io::split(inner);
    // Frames to write: our data, pongs and the close reply share the writer.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    let writer = tokio::spawn(async move {
        let mut wr = wr;
        while let Some((op, payload)) = rx.recv().await {
            if wr.write_all(&frame(op, &payload)).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            if op == 0x8 {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let tx_out = tx.clone();
    let outbound = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match inner_rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx_out.send((0x8, 1000u16.to_be_bytes().to_vec())).await;
                    break;
                }
                Ok(n) => {
                    if tx_out.send((0x2, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let result = async {
        loop {
            let (op, payload) = tokio::time::timeout(idle, read_frame(&mut rd))
                .await
                .map_err(|_| TunnelError::Protocol(format!("nothing received for {idle:?}")))??;
            match op {
                0x0..=0x2 => inner_wr.write_all(&payload).await?,
                0x8 => {
                    let _ = tx
                        .send((0x8, payload.get(..2).unwrap_or_default().to_vec()))
                        .await;
                    return Ok(());
                }
                0x9 => {
                    let _ = tx.send((0xA, payload)).await;
                }
                _ => {}
            }
        }
    }
    .await;
    outbound.abort();
    let _ = inner_wr.shutdown().await;
    drop(tx);
    let _ = writer.await;
    result
}

/// One client frame: its opcode and unmasked payload.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>), TunnelError> {
    let b0 = r.read_u8().await?;
    let b1 = r.read_u8().await?;
    let op = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let len = match b1 & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_FRAME {
        return Err(TunnelError::Protocol(format!("websocket frame of {len} bytes")));
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((op, payload))
}

/// An unmasked server frame.
fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | op);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn masked_text_frames_with_binary_payload_become_bytes() {
        let (client, server) = tokio::io::duplex(4096);
        let mut stream = into_stream(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        // A masked text frame whose payload is not UTF-8, as frpc 0.65 sends.
        let payload = [0xffu8, 0xfe, 0x00, 0x80];
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x81, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        cwr.write_all(&f).await.expect("write");
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(got, payload);
        stream.write_all(b"back").await.expect("write back");
        let mut head = [0u8; 6];
        crd.read_exact(&mut head).await.expect("frame");
        assert_eq!(&head, &[0x82, 4, b'b', b'a', b'c', b'k']);
    }

    #[tokio::test]
    async fn a_silent_peer_is_dropped() {
        let (_client, server) = tokio::io::duplex(4096);
        let mut stream = into_stream_idle(server, std::time::Duration::from_millis(200));
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the stream ends once the peer is silent too long")
            .expect("read");
        assert_eq!(n, 0);
    }
}
