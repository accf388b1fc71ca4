//! A `proxy_server: "self"` session's tunnel on this worker: the loopback SOCKS5 endpoint its
//! browser uses (fed through the caller's frpc, see `smoothd_tunnel::hub`), made reachable for
//! the API processes' relays on the live listener for as long as the session runs.

use std::time::Duration;

use smoothd_tunnel::Hub;

use crate::context::TaskContext;
use crate::live::LiveServer;

/// Why a session's tunnel is not there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TunnelError {
    /// The worker serves no live listener, which the API processes relay the tunnel through.
    #[error("proxy_server \"self\" needs this worker's live listener (live_listen), which is off")]
    NoLiveListener,
    /// The loopback SOCKS5 endpoint could not be opened.
    #[error("cannot open the tunnel's proxy endpoint: {0}")]
    Endpoint(std::io::Error),
    /// The caller's frpc did not connect (or dropped) within the wait.
    #[error(
        "the tunnel through your machine (proxy_server \"self\") is not connected: no frpc connection for \
         this session within {0} s (it has not connected yet, or it dropped; the smooth SDK runs it while \
         the session is open)"
    )]
    NotConnected(u64),
}

/// The tunnel of one session; dropping it ends the tunnel.
pub(crate) struct SessionTunnel {
    hub: Hub,
    live: LiveServer,
    task_id: String,
    wait: Duration,
}

impl SessionTunnel {
    /// The session's tunnel, if it asked for one.
    pub(crate) async fn open(
        ctx: &TaskContext,
        live: Option<&LiveServer>,
        wait: Duration,
    ) -> Result<Option<Self>, TunnelError> {
        if !ctx
            .spec
            .proxy
            .as_ref()
            .is_some_and(smoothd_core::request::Proxy::is_self)
        {
            return Ok(None);
        }
        let Some(live) = live.cloned() else {
            return Err(TunnelError::NoLiveListener);
        };
        let hub = Hub::start(ctx.id(), wait).await.map_err(TunnelError::Endpoint)?;
        live.register_tunnel(ctx.id(), &ctx.task.live_token, hub.clone());
        Ok(Some(Self {
            hub,
            live,
            task_id: ctx.id().to_string(),
            wait,
        }))
    }

    /// The proxy the session's browser uses.
    pub(crate) fn socks_url(&self) -> String {
        self.hub.socks_url().to_string()
    }

    /// Waits (bounded) for frpc; the error an action answers with when it is not there.
    pub(crate) async fn ready(&self) -> Result<(), TunnelError> {
        if self.hub.wait_up(self.wait).await {
            return Ok(());
        }
        Err(TunnelError::NotConnected(self.wait.as_secs()))
    }
}

impl Drop for SessionTunnel {
    fn drop(&mut self) {
        self.live.unregister_tunnel(&self.task_id);
    }
}
