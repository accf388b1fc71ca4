//! The FRP server side for one frpc connection (the part frpc uses with `proxy_server: "self"`).
//! Over the byte stream (the WebSocket's), frpc runs a yamux session and opens every stream:
//! the first is the control stream, each later one a work connection. Login is accepted when
//! its privilege key matches the `proxy_password` of a waiting or running self-proxy session;
//! after `LoginResp` both directions of the control stream are encrypted with that token.
//! The `tcp` proxy must be named `socks5_tunnel_{session id}` of a session the token matched:
//! that binds this connection to the session. Its `remotePort` is answered, never opened.
//! Then a bridge keeps a control relay to the worker running the session (which asks for work
//! connections) and relays each work connection there. The session's end, frpc's `CloseProxy`
//! or a lost connection ends it all; frpc logging in again starts afresh.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, poll_fn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

use crate::crypto::{Decryptor, Encryptor, auth_key, derive_key};
use crate::msg::{self, LoginResp, Message, NewProxyResp, Pong};
use crate::relay;
use smoothd_core::ids::same_secret;

/// The version we answer frpc with.
const SERVER_VERSION: &str = "0.65.0";
/// frpc must log in this soon.
const LOGIN_WAIT: Duration = Duration::from_secs(10);

/// A session frpc may log in to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub task_id: String,
    pub password: String,
}

/// Where the session's worker is.
#[derive(Debug, Clone)]
pub enum WorkerLookup {
    /// Not started yet: ask again.
    Pending,
    /// Its relay listener and the token it wants.
    At { addr: String, token: String },
    /// The session is over.
    Ended,
}

/// What the tunnel server needs from the store.
pub trait Sessions: Send + Sync + 'static {
    /// The waiting or running sessions with `proxy_server: "self"`.
    fn candidates(&self) -> BoxFuture<'_, Result<Vec<Candidate>, String>>;
    /// Where `task_id` runs.
    fn worker(&self, task_id: &str) -> BoxFuture<'_, WorkerLookup>;
}

/// Serves one frpc connection until it ends or `shutdown` fires.
pub async fn serve<S>(io: S, sessions: Arc<dyn Sessions>, peer: String, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut cfg = yamux::Config::default();
    cfg.set_max_num_streams(1024);
    let mut conn = yamux::Connection::new(io.compat(), cfg, yamux::Mode::Server);
    let (stream_tx, mut streams) = mpsc::channel::<yamux::Stream>(64);
    let done = shutdown.child_token();
    let driver_done = done.clone();
    let driver = tokio::spawn(async move {
        loop {
            tokio::select! {
                s = poll_fn(|cx| conn.poll_next_inbound(cx)) => match s {
                    Some(Ok(s)) => { if stream_tx.send(s).await.is_err() { break; } }
                    Some(Err(e)) => { tracing::debug!(error = %e, "tunnel multiplexer ended"); break; }
                    None => break,
                },
                _ = driver_done.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), poll_fn(|cx| conn.poll_close(cx))).await;
                    break;
                }
            }
        }
        driver_done.cancel();
    });
    let control = tokio::select! {
        s = tokio::time::timeout(LOGIN_WAIT, streams.recv()) => s.ok().flatten(),
        _ = done.cancelled() => None,
    };
    if let Some(control) = control {
        let ctl = Control {
            sessions,
            peer,
            done: done.clone(),
            bound: Arc::new(Mutex::new(None)),
            worker: Arc::new(Mutex::new(None)),
        };
        ctl.run(control.compat(), streams).await;
    }
    done.cancel();
    let _ = driver.await;
}

/// A login the server accepted.
struct Accepted {
    /// The sessions whose token the login's key matches.
    matching: Vec<Candidate>,
    token: String,
    run_id: String,
}

struct Control {
    sessions: Arc<dyn Sessions>,
    peer: String,
    done: CancellationToken,
    /// The session this connection serves, once frpc named its proxy.
    bound: Arc<Mutex<Option<String>>>,
    /// The worker's relay address and token, while known.
    worker: Arc<Mutex<Option<(String, String)>>>,
}

impl Control {
    async fn run<C>(self, mut control: C, mut streams: mpsc::Receiver<yamux::Stream>)
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some(Accepted {
            matching,
            token,
            run_id,
        }) = self.login(&mut control).await
        else {
            return;
        };
        let key = derive_key(&token);
        let (rd, mut wr) = tokio::io::split(control);
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let writer_done = self.done.clone();
        let writer = tokio::spawn(async move {
            let mut enc = Encryptor::new(&key);
            loop {
                tokio::select! {
                    m = out_rx.recv() => {
                        let Some(m) = m else { break };
                        if wr.write_all(&enc.seal(&m.encode())).await.is_err() || wr.flush().await.is_err() {
                            break;
                        }
                    }
                    _ = writer_done.cancelled() => break,
                }
            }
            writer_done.cancel();
        });
        let work = {
            let this = self.clone_refs();
            let run_id = run_id.clone();
            tokio::spawn(async move {
                while let Some(s) = streams.recv().await {
                    let this = this.clone_refs();
                    let run_id = run_id.clone();
                    tokio::spawn(async move { this.work_conn(s.compat(), &run_id).await });
                }
            })
        };
        self.control_loop(rd, key, matching, out_tx).await;
        self.done.cancel();
        work.abort();
        let _ = writer.await;
    }

    /// Reads frpc's login and answers it: accepted when its key matches a session's token.
    /// `None` when the connection ends here (refused, or gone).
    async fn login<C>(&self, control: &mut C) -> Option<Accepted>
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let login = match tokio::time::timeout(LOGIN_WAIT, msg::read(control)).await {
            Ok(Ok(Message::Login(l))) => l,
            Ok(Ok(other)) => {
                tracing::info!(peer = %self.peer, ?other, "tunnel: expected a login");
                return None;
            }
            _ => return None,
        };
        let candidates = match self.sessions.candidates().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel: reading sessions failed");
                refuse(control, "the server cannot check the token now; retry").await;
                return None;
            }
        };
        let matching: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| same_secret(&auth_key(&c.password, login.timestamp), &login.privilege_key))
            .collect();
        let Some(token) = matching.first().map(|c| c.password.clone()) else {
            tracing::info!(peer = %self.peer, "tunnel login refused: the token matches no session");
            refuse(
                control,
                "register control error: the token matches no waiting or running session with proxy_server \"self\"",
            )
            .await;
            return None;
        };
        let run_id = if login.run_id.is_empty() || login.run_id.len() > 64 {
            format!("{:016x}", rand::random::<u64>())
        } else {
            login.run_id.clone()
        };
        let resp = Message::LoginResp(LoginResp {
            version: SERVER_VERSION.into(),
            run_id: run_id.clone(),
            error: String::new(),
        });
        if msg::write(control, &resp).await.is_err() {
            return None;
        }
        tracing::info!(peer = %self.peer, version = %login.version, "tunnel login accepted");
        Some(Accepted {
            matching,
            token,
            run_id,
        })
    }

    fn clone_refs(&self) -> Self {
        Self {
            sessions: self.sessions.clone(),
            peer: self.peer.clone(),
            done: self.done.clone(),
            bound: self.bound.clone(),
            worker: self.worker.clone(),
        }
    }

    async fn control_loop<R: AsyncRead + Unpin>(
        &self,
        mut rd: R,
        key: [u8; 16],
        matching: Vec<Candidate>,
        out: mpsc::UnboundedSender<Message>,
    ) {
        let mut dec = Decryptor::new(&key);
        let mut plain = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r { Ok(n) if n > 0 => n, _ => return },
                _ = self.done.cancelled() => return,
            };
            plain.extend(dec.open(&buf[..n]));
            loop {
                let m = match Message::take(&mut plain) {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(peer = %self.peer, error = %e, "tunnel control stream unreadable");
                        return;
                    }
                };
                match m {
                    Message::NewProxy(p) => {
                        let error = self.bind(&p, &matching, out.clone());
                        let resp = NewProxyResp {
                            proxy_name: p.proxy_name.clone(),
                            remote_addr: if error.is_empty() {
                                format!(":{}", p.remote_port)
                            } else {
                                String::new()
                            },
                            error,
                        };
                        let _ = out.send(Message::NewProxyResp(resp));
                    }
                    Message::Ping(_) => {
                        let _ = out.send(Message::Pong(Pong::default()));
                    }
                    Message::CloseProxy(c) => {
                        tracing::info!(proxy = %c.proxy_name, "tunnel: frpc closed its proxy");
                        return;
                    }
                    other => tracing::debug!(?other, "tunnel: message ignored"),
                }
            }
        }
    }

    /// Binds this connection to the session its proxy names; the error to answer, or "".
    fn bind(&self, p: &msg::NewProxy, matching: &[Candidate], out: mpsc::UnboundedSender<Message>) -> String {
        if p.proxy_type != "tcp" {
            return format!("proxy type {:?} is not supported here; only tcp", p.proxy_type);
        }
        let Some(c) = matching
            .iter()
            .find(|c| p.proxy_name == format!("socks5_tunnel_{}", c.task_id))
        else {
            return format!(
                "proxy name {:?} is not socks5_tunnel_<id> of a session this token opens",
                p.proxy_name
            );
        };
        let Ok(mut bound) = self.bound.lock() else {
            return "internal error".into();
        };
        if bound.is_some() {
            return "this connection already carries a proxy".into();
        }
        *bound = Some(c.task_id.clone());
        let this = self.clone_refs();
        let task_id = c.task_id.clone();
        tokio::spawn(async move { this.bridge(task_id, out).await });
        String::new()
    }

    /// Keeps a control relay to the session's worker; ends the connection with the session.
    async fn bridge(self, task_id: String, out: mpsc::UnboundedSender<Message>) {
        loop {
            let (addr, token) = match self.sessions.worker(&task_id).await {
                WorkerLookup::At { addr, token } => (addr, token),
                WorkerLookup::Ended => {
                    tracing::info!(task.id = %task_id, "tunnel closed: the session ended");
                    self.done.cancel();
                    return;
                }
                WorkerLookup::Pending => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => continue,
                        _ = self.done.cancelled() => return,
                    }
                }
            };
            if let Ok(mut w) = self.worker.lock() {
                *w = Some((addr.clone(), token.clone()));
            }
            match relay::connect(&addr, &task_id, "control", &token).await {
                Ok(mut io) => {
                    let mut b = [0u8; 64];
                    loop {
                        tokio::select! {
                            r = io.read(&mut b) => match r {
                                Ok(n) if n > 0 => {
                                    for _ in 0..b[..n].iter().filter(|x| **x == b'w').count() {
                                        let _ = out.send(Message::ReqWorkConn);
                                    }
                                }
                                _ => break,
                            },
                            _ = self.done.cancelled() => { let _ = io.shutdown().await; return; }
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(task.id = %task_id, %addr, error = %e, "tunnel: worker relay unavailable")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = self.done.cancelled() => return,
            }
        }
    }

    /// A work connection from frpc, relayed to the session's worker.
    async fn work_conn<S: AsyncRead + AsyncWrite + Unpin>(&self, mut s: S, run_id: &str) {
        match tokio::time::timeout(LOGIN_WAIT, msg::read(&mut s)).await {
            Ok(Ok(Message::NewWorkConn(w))) if w.run_id == run_id => {}
            _ => return,
        }
        let task_id = self.bound.lock().ok().and_then(|b| b.clone());
        let worker = self.worker.lock().ok().and_then(|w| w.clone());
        let (Some(task_id), Some((addr, token))) = (task_id, worker) else {
            return;
        };
        let mut up = match relay::connect(&addr, &task_id, "work", &token).await {
            Ok(io) => io,
            Err(e) => {
                tracing::info!(task.id = %task_id, error = %e, "tunnel: work relay failed");
                return;
            }
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut s, &mut up) => {}
            _ = self.done.cancelled() => {}
        }
    }
}

async fn refuse<C: AsyncWrite + Unpin>(control: &mut C, error: &str) {
    let resp = Message::LoginResp(LoginResp {
        version: SERVER_VERSION.into(),
        run_id: String::new(),
        error: error.into(),
    });
    let _ = msg::write(control, &resp).await;
    let _ = control.shutdown().await;
}
