//! The worker pool: claims tasks, holds their leases by heartbeat, runs each through an
//! [`Executor`], relays cancellation, and writes a true final state fenced on the attempt.
//!
//! One task's path, top to bottom: `pool.rs` claims it and watches its lease, hands it to
//! the [`Executor`] (`executor.rs`, the seam); [`BasicExecutor`] (`basic.rs`) runs a session
//! (`session.rs`, with commands in `actions.rs`) or the agent (`agent.rs`) in a browser from
//! `setup.rs` drawing on the process's [`Services`]; the pool then writes the final state.

mod actions;
mod agent;
mod basic;
mod context;
mod executor;
mod live;
mod media;
mod pool;
mod services;
mod session;
mod setup;
mod tunnel;

pub use basic::BasicExecutor;
pub use context::{LeaseLost, StopReason, TaskContext};
pub use executor::Executor;
pub use live::LiveServer;
pub use media::{MediaConfig, MediaServices, TaskMedia};
pub use pool::{WorkerConfig, WorkerPool, reap_loop};
pub use services::Services;
pub use session::SessionConfig;
pub use setup::Prepared;
pub use smoothd_browser::{Blocker, BrowserPool, LaunchConfig, MediaOptions, find_chromium};

#[cfg(test)]
mod layout {
    //! The modules' imports run one way: no module reaches back to one that reaches it.

    use std::collections::{BTreeMap, BTreeSet};

    /// Each module and the modules its code (not its comments) names as `crate::x`.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let module = path.file_stem().unwrap().to_string_lossy().to_string();
            if module == "lib" || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut uses = BTreeSet::new();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        uses.insert(name);
                    }
                }
            }
            graph.insert(module, uses);
        }
        graph
    }

    /// A path from `from` back to `from`, if there is one.
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
        let mut stack = vec![vec![from.to_string()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().unwrap();
            for next in graph.get(last).into_iter().flatten() {
                if next == from {
                    let mut found = path.clone();
                    found.push(next.clone());
                    return Some(found);
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
        None
    }

    #[test]
    fn no_module_imports_one_that_imports_it() {
        let graph = imports();
        assert!(
            graph.contains_key("pool") && graph["pool"].contains("executor"),
            "{graph:?}"
        );
        for module in graph.keys() {
            assert_eq!(cycle(&graph, module), None, "modules import each other");
        }
    }
}
