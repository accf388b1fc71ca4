//! The ad and tracker blocker: EasyList and EasyPrivacy (or any lists) compiled once per
//! process into Brave's `adblock` engine, then consulted for every request of every task that
//! keeps `use_adblock` on.

use std::path::{Path, PathBuf};

use adblock::Engine;
use adblock::lists::{FilterSet, ParseOptions};
use adblock::request::Request;

/// Where Debian's `webext-ublock-origin-chromium` keeps EasyList and EasyPrivacy.
pub const DEBIAN_LISTS: [&str; 2] = [
    "/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist/easylist.txt",
    "/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist/easyprivacy.txt",
];

/// A compiled rule set.
pub struct Blocker {
    engine: Engine,
    rules: usize,
}

impl std::fmt::Debug for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocker").field("rules", &self.rules).finish()
    }
}

impl Blocker {
    /// Compiles the lists at `paths` (a missing file is an error naming it).
    pub fn from_files(paths: &[PathBuf]) -> Result<Self, String> {
        let mut texts = Vec::with_capacity(paths.len());
        for p in paths {
            texts.push(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read filter list {}: {e}", p.display()))?,
            );
        }
        Ok(Self::from_texts(&texts))
    }

    /// Compiles rule texts.
    pub fn from_texts(texts: &[String]) -> Self {
        let mut set = FilterSet::new(false);
        let mut rules = 0;
        for t in texts {
            rules += t
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('!'))
                .count();
            set.add_filter_list(t.clone(), ParseOptions::default());
        }
        Self {
            engine: Engine::new_with_filter_set(set),
            rules,
        }
    }

    /// The default lists that exist on this machine.
    pub fn default_lists() -> Vec<PathBuf> {
        DEBIAN_LISTS
            .iter()
            .map(PathBuf::from)
            .filter(|p| Path::new(p).is_file())
            .collect()
    }

    /// How many rule lines were compiled.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// Whether a request for `url` made by a page at `source` should be blocked.
    /// `resource_type` uses the adblock names (script, image, xmlhttprequest, ...).
    pub fn blocks(&self, url: &str, source: &str, resource_type: &str) -> bool {
        match Request::new(url, source, resource_type, "GET") {
            Ok(req) => self.engine.check_network_request(&req).should_block(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_rules_match_and_exceptions_win() {
        let b =
            Blocker::from_texts(&["/banner-ads/*\n||tracker.example^\n@@/banner-ads/allowed.js".to_string()]);
        assert!(b.blocks(
            "http://127.0.0.1:8000/banner-ads/x.js",
            "http://127.0.0.1:8000/",
            "script"
        ));
        assert!(b.blocks("https://tracker.example/p.gif", "https://site.test/", "image"));
        assert!(!b.blocks(
            "http://127.0.0.1:8000/banner-ads/allowed.js",
            "http://127.0.0.1:8000/",
            "script"
        ));
        assert!(!b.blocks("http://127.0.0.1:8000/app.js", "http://127.0.0.1:8000/", "script"));
    }
}
