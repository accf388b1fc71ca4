//! Tabs: the session's tabs as the model sees them, which one the driver is on, and switching.

use super::{ActError, ActionResult, Driver};
use crate::session::Tab;

impl Driver<'_> {
    /// The session's tabs, oldest first.
    pub async fn tabs(&self) -> Result<Vec<Tab>, ActError> {
        Ok(self.session.tabs().await?)
    }

    /// Which of `tabs` the driver is on (0 when none matches).
    pub fn current_tab(&self, tabs: &[Tab]) -> usize {
        let id = self.page.target_id().as_ref();
        tabs.iter().position(|t| t.target_id == id).unwrap_or(0)
    }

    /// Makes tab `n` current.
    pub(super) async fn switch_tab(&mut self, n: usize) -> Result<ActionResult, ActError> {
        let tabs = self.tabs().await?;
        let tab = tabs
            .get(n)
            .ok_or_else(|| ActError::Model(format!("there is no tab {n}; there are {}", tabs.len())))?;
        self.page = self.session.tab_page(tab).await?;
        self.tab_count = tabs.len();
        self.last = None;
        Ok(ActionResult {
            navigated: true,
            note: format!("switched to tab {n}: {}", tab.url),
        })
    }
}
