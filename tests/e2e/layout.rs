//! The modules of every crate under `crates/` import one way: no module reaches back to one
//! that reaches it. A module is a top-level `src/x.rs` or `src/x/` (all its files); an import
//! is `crate::x` in code (comments are not imports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// The modules `crate::x` names in `text`'s code, other than `module` itself.
fn named(text: &str, module: &str) -> BTreeSet<String> {
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
    uses
}

/// Each top-level module of the crate at `src` and the modules its code imports.
fn imports(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let (module, files) = if path.is_dir() {
            (
                path.file_name().unwrap().to_string_lossy().to_string(),
                sources(&path),
            )
        } else if path.extension().is_some_and(|e| e == "rs") {
            (
                path.file_stem().unwrap().to_string_lossy().to_string(),
                vec![path.clone()],
            )
        } else {
            continue;
        };
        if module == "lib" || module == "main" {
            continue;
        }
        let uses = graph.entry(module.clone()).or_default();
        for file in files {
            uses.extend(named(&std::fs::read_to_string(&file).unwrap(), &module));
        }
    }
    graph
}

/// A path from `from` back to `from`, if there is one.
fn cycle(graph: &Graph, from: &str) -> Option<Vec<String>> {
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
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut scanned = BTreeMap::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let name = src
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let graph = imports(&src);
        for module in graph.keys() {
            assert_eq!(cycle(&graph, module), None, "modules of {name} import each other");
        }
        scanned.insert(name, graph);
    }
    // The scan sees what it should: a known one-way import, through a directory module.
    assert!(
        scanned["smoothd-worker"]["pool"].contains("executor")
            && scanned["smoothd-api"]["webhooks"].contains("models"),
        "{scanned:?}"
    );
}
