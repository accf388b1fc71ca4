//! The process's shared parts that every task draws on: the agent, the browsers, the ad
//! blocker, the artifact store and media capture. Built once at start; tasks borrow them.

use std::sync::Arc;

use smoothd_agent::Agent;
use smoothd_browser::{Blocker, BrowserPool, SessionOptions};
use smoothd_store::Blobs;

use crate::context::TaskContext;
use crate::media::MediaServices;
use crate::setup::{self, Prepared, SetupError};
use crate::tunnel::SessionTunnel;

/// The final error of a task or session whose browser died under it.
pub(crate) const BROWSER_CRASHED: &str =
    "the browser crashed (its process exited or the connection to it was lost); the task cannot continue";

/// Why a task that needs the model cannot run.
pub(crate) const NO_MODEL: &str = "no model configured: set SMOOTHD_LLM_BASE_URL and SMOOTHD_LLM_MODEL (and \
     SMOOTHD_LLM_API_KEY if the endpoint needs one) to run tasks";

/// What every task of this process shares.
#[derive(Clone)]
pub struct Services {
    /// The agent, when a model endpoint is configured.
    pub agent: Option<Agent>,
    /// The browsers, or why there are none (e.g. Chromium is not installed).
    pub browsers: Result<Arc<BrowserPool>, String>,
    /// The compiled ad and tracker lists (shared by every task), if any were found.
    pub blocker: Option<Arc<Blocker>>,
    /// Artifact bytes: profiles, extensions, uploaded files.
    pub blobs: Blobs,
    /// Live view, recording and downloads for tasks with a browser (none: tasks get none).
    pub media: Option<Arc<MediaServices>>,
}

impl Services {
    /// The agent for this task's `agent` choice, or why there is none.
    pub(crate) fn agent_for(&self, ctx: &TaskContext) -> Result<Agent, &'static str> {
        self.agent
            .as_ref()
            .map(|a| a.for_task(&ctx.spec.agent))
            .ok_or(NO_MODEL)
    }

    /// Opens the task's browser with its request's options (through `tunnel` for a
    /// `proxy_server: "self"` session).
    pub(crate) async fn open_browser(
        &self,
        ctx: &TaskContext,
        tunnel: Option<&SessionTunnel>,
    ) -> Result<Prepared, SetupError> {
        let pool = self
            .browsers
            .as_ref()
            .map_err(|why| SetupError::NoBrowser(why.clone()))?;
        let spec = &ctx.spec;
        let opts = SessionOptions {
            device: spec.device,
            stealth: spec.use_stealth,
            allowed_urls: spec.allowed_urls.clone(),
            default_context: false,
            show_cursor: spec.show_cursor,
            proxy_server: match tunnel {
                Some(t) => Some(t.socks_url()),
                None => spec.proxy.as_ref().map(|p| p.server.clone()),
            },
            proxy_credentials: spec.proxy.as_ref().filter(|p| !p.is_self()).and_then(|p| {
                match (&p.username, &p.password) {
                    (None, None) => None,
                    (u, pw) => Some((u.clone().unwrap_or_default(), pw.clone().unwrap_or_default())),
                }
            }),
            blocker: if spec.use_adblock {
                self.blocker.clone()
            } else {
                None
            },
        };
        setup::prepare(ctx, pool, &self.blobs, self.media.as_deref(), opts).await
    }
}
