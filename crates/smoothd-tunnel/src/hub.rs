//! The worker's end of one session's tunnel. The session's browser uses [`Hub::socks_url`], a
//! SOCKS5 address on loopback; every connection it opens there waits (bounded) for the tunnel,
//! asks the API process holding frpc's control connection for a work connection, announces it
//! with `StartWorkConn` and is then spliced byte for byte onto it, so the SOCKS5 conversation
//! itself is held with frpc's `socks5` plugin on the caller's machine. No other port is opened.
//!
//! API processes attach through the worker's relay listener: one control relay (a byte `w` from
//! us asks for one work connection; its end means the tunnel is down) and one relay per work
//! connection. A newer control relay (a reconnected frpc) replaces the older one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::msg::{self, Message, StartWorkConn};

/// A relayed byte stream from an API process.
pub trait Relay: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Relay for T {}

type Work = (u64, Box<dyn Relay>);

/// How long a browser connection waits for a work connection once the tunnel is up.
const WORK_WAIT: Duration = Duration::from_secs(15);

/// One session's tunnel on the worker.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    proxy_name: String,
    socks: String,
    wait: Duration,
    /// `Some(generation)` while a control relay is attached.
    up: watch::Sender<Option<u64>>,
    control: Mutex<(u64, Option<mpsc::UnboundedSender<()>>)>,
    work_tx: mpsc::Sender<Work>,
    work_rx: tokio::sync::Mutex<mpsc::Receiver<Work>>,
    closed: CancellationToken,
}

impl Hub {
    /// Opens the SOCKS5 endpoint for session `task_id`; browser connections wait up to `wait`
    /// for frpc to be connected.
    pub async fn start(task_id: &str, wait: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let socks = format!("socks5://{}", listener.local_addr()?);
        let (work_tx, work_rx) = mpsc::channel(64);
        let hub = Self {
            inner: Arc::new(Inner {
                proxy_name: format!("socks5_tunnel_{task_id}"),
                socks,
                wait,
                up: watch::channel(None).0,
                control: Mutex::new((0, None)),
                work_tx,
                work_rx: tokio::sync::Mutex::new(work_rx),
                closed: CancellationToken::new(),
            }),
        };
        let accept = hub.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = accept.inner.closed.cancelled() => return,
                    c = listener.accept() => c,
                };
                match conn {
                    Ok((conn, _)) => {
                        let hub = accept.clone();
                        tokio::spawn(async move { hub.carry(conn).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "tunnel socks endpoint accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(hub)
    }

    /// The proxy address for the session's browser (`socks5://127.0.0.1:port`).
    pub fn socks_url(&self) -> &str {
        &self.inner.socks
    }

    /// The proxy name frpc registers for this session.
    pub fn proxy_name(&self) -> &str {
        &self.inner.proxy_name
    }

    /// Whether frpc is connected now.
    pub fn is_up(&self) -> bool {
        self.inner.up.borrow().is_some()
    }

    /// Waits up to `d` for frpc to be connected; whether it is.
    pub async fn wait_up(&self, d: Duration) -> bool {
        let mut rx = self.inner.up.subscribe();
        let ok = tokio::time::timeout(d, rx.wait_for(Option::is_some)).await;
        matches!(ok, Ok(Ok(_)))
    }

    /// Ends the tunnel: the endpoint closes and attached relays are dropped.
    pub fn close(&self) {
        self.inner.closed.cancel();
        self.inner.up.send_replace(None);
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Serves a control relay until it or the tunnel ends.
    pub async fn attach_control(&self, mut io: Box<dyn Relay>) {
        if self.is_closed() {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let generation = {
            let Ok(mut c) = self.inner.control.lock() else {
                return;
            };
            c.0 += 1;
            c.1 = Some(tx);
            c.0
        };
        self.inner.up.send_replace(Some(generation));
        tracing::info!(proxy = %self.inner.proxy_name, generation, "tunnel connected");
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                _ = self.inner.closed.cancelled() => break,
                want = rx.recv() => {
                    if want.is_none() || io.write_all(b"w").await.is_err() || io.flush().await.is_err() {
                        break;
                    }
                }
                r = io.read(&mut byte) => {
                    if !matches!(r, Ok(n) if n > 0) {
                        break;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
        if let Ok(mut c) = self.inner.control.lock()
            && c.0 == generation
        {
            c.1 = None;
            self.inner.up.send_replace(None);
            tracing::info!(proxy = %self.inner.proxy_name, generation, "tunnel disconnected");
        }
    }

    /// Takes a work connection relayed from frpc.
    pub async fn attach_work(&self, io: Box<dyn Relay>) {
        let generation = self.inner.up.borrow().unwrap_or(0);
        let _ = self.inner.work_tx.send((generation, io)).await;
    }

    fn ask_for_work(&self) -> bool {
        self.inner
            .control
            .lock()
            .ok()
            .and_then(|c| c.1.as_ref().map(|tx| tx.send(()).is_ok()))
            .unwrap_or(false)
    }

    /// One browser connection: a work connection, `StartWorkConn`, then bytes both ways.
    async fn carry(&self, mut conn: TcpStream) {
        if !self.wait_up(self.inner.wait).await {
            tracing::info!(proxy = %self.inner.proxy_name, "browser connection refused: tunnel not connected");
            return;
        }
        let Some(mut work) = self.take_work().await else {
            tracing::warn!(proxy = %self.inner.proxy_name, "no work connection from frpc in time");
            return;
        };
        let peer = conn.peer_addr().ok();
        let start = Message::StartWorkConn(StartWorkConn {
            proxy_name: self.inner.proxy_name.clone(),
            src_addr: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            src_port: peer.map(|p| p.port()).unwrap_or_default(),
            dst_addr: "127.0.0.1".into(),
            dst_port: 1080,
            error: String::new(),
        });
        if msg::write(&mut work, &start).await.is_err() {
            return;
        }
        tokio::select! {
            _ = self.inner.closed.cancelled() => {}
            _ = tokio::io::copy_bidirectional(&mut conn, &mut work) => {}
        }
    }

    async fn take_work(&self) -> Option<Box<dyn Relay>> {
        if !self.ask_for_work() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + WORK_WAIT;
        let mut rx = tokio::time::timeout_at(deadline, self.inner.work_rx.lock())
            .await
            .ok()?;
        loop {
            let (generation, io) = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
            // One from a previous frpc connection is dead: ask again.
            if Some(generation) == *self.inner.up.borrow() {
                return Some(io);
            }
            if !self.ask_for_work() {
                return None;
            }
        }
    }
}
