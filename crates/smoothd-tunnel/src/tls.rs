//! The tunnel's own TLS listener (`tunnel_listen`), for when nothing in front of smoothd
//! terminates TLS on port 443 (frpc always dials 443). frpc does not check the certificate,
//! so a self-signed one generated at start serves unless files are configured. It answers only
//! `GET /~!frp` WebSocket upgrades.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::TunnelError;
use crate::server::{self, Sessions};
use crate::ws;

/// A TLS acceptor from PEM files, or with a self-signed certificate for `host` when none.
pub fn acceptor(cert_key: Option<(&Path, &Path)>, host: &str) -> Result<TlsAcceptor, TunnelError> {
    let (certs, key) = match cert_key {
        Some((cert, key)) => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| TunnelError::Tls(format!("reading {}: {e}", p.display())))
            };
            let cert_pem = read(cert)?;
            let key_pem = read(key)?;
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| TunnelError::Tls(format!("{}: {e}", cert.display())))?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .map_err(|e| TunnelError::Tls(format!("{}: {e}", key.display())))?
                .ok_or_else(|| TunnelError::Tls(format!("{}: no private key", key.display())))?;
            (certs, key)
        }
        None => {
            let c = rcgen::generate_simple_self_signed(vec![host.to_string(), "localhost".into()])
                .map_err(|e| TunnelError::Tls(format!("generating a certificate: {e}")))?;
            let key = PrivateKeyDer::try_from(c.key_pair.serialize_der())
                .map_err(|e| TunnelError::Tls(format!("generated key: {e}")))?;
            (vec![c.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TunnelError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves frpc connections on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sessions: Arc<dyn Sessions>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "tunnel listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let sessions = sessions.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let handshake = async {
                let mut tls = acceptor.accept(tcp).await?;
                let head = ws::read_head(&mut tls).await?;
                ws::accept_raw(&mut tls, &head).await?;
                Ok::<_, TunnelError>(tls)
            };
            match tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
                Ok(Ok(tls)) => {
                    server::serve(ws::into_stream(tls), sessions, peer.to_string(), shutdown).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tunnel handshake failed"),
                Err(_) => tracing::debug!(%peer, "tunnel handshake timed out"),
            }
        });
    }
}
