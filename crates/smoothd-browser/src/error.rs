//! What can go wrong in the browser, split by whose fault it is: the user's (a bad URL, a
//! script that throws: answered 400) or ours (Chromium died: answered 500).

/// Browser errors.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Chromium could not be found or started.
    #[error("cannot start Chromium: {0}")]
    Launch(String),
    /// The remote browser (`browser_ws`) could not be reached.
    #[error("cannot connect to the browser at {0}")]
    Connect(String),
    /// The task needs a Chromium of its own, which cannot be had from a remote browser.
    #[error("{0}")]
    Unsupported(String),
    /// The browser process died or the CDP connection broke.
    #[error("the browser crashed or disconnected: {0}")]
    Crashed(String),
    /// A CDP command failed for a reason that is not the user's.
    #[error("browser error: {0}")]
    Cdp(String),
    /// Navigation failed (DNS, refused, blocked, not allowed): the user can fix it.
    #[error("{0}")]
    Navigation(String),
    /// The page's JavaScript threw, or the script does not parse.
    #[error("{0}")]
    Script(String),
    /// The operation took too long.
    #[error("timed out after {0} s")]
    Timeout(u64),
}

impl BrowserError {
    /// Whether the user can fix this (answered 400 rather than 500).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            BrowserError::Navigation(_) | BrowserError::Script(_) | BrowserError::Timeout(_)
        )
    }
}

impl From<chromiumoxide::error::CdpError> for BrowserError {
    fn from(e: chromiumoxide::error::CdpError) -> Self {
        use chromiumoxide::error::CdpError;
        match e {
            CdpError::Ws(_) | CdpError::ChannelSendError(_) | CdpError::NoResponse => {
                BrowserError::Crashed(e.to_string())
            }
            CdpError::Timeout => BrowserError::Timeout(30),
            other => BrowserError::Cdp(other.to_string()),
        }
    }
}
