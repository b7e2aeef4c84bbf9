//! The gateway's modules import each other in one direction only: the front door
//! (`edge/`) uses the servers (`serve/`), which use the workers' side (`upstream/`), and
//! none of them reaches back. Read from the sources (every `crate::…` path outside
//! comments), at two levels: the crate's modules, and the files inside each folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → the modules it names, for every `.rs` file under `dir` (a folder counts
/// as one module at the top level).
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(src, &mut files);
    for file in files {
        let rel = file
            .strip_prefix(src)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string_lossy()
            .replace(".rs", "");
        let mut parts = rel.split('/');
        let top = parts.next().unwrap_or_default().to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let inner = parts.next().filter(|m| *m != "mod").map(str::to_string);
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in code.match_indices("crate::") {
            let path: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut names = path.split("::");
            let target = names.next().unwrap_or_default().to_string();
            if target != top {
                graph.entry(top.clone()).or_default().insert(target);
            } else if let (Some(from), Some(to)) = (&inner, names.next()) {
                // Between two files of one folder.
                if to != from && to.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    graph
                        .entry(format!("{top}/{from}"))
                        .or_default()
                        .insert(format!("{top}/{to}"));
                }
            }
        }
        graph.entry(top).or_default();
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_of_the_gateway_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    for expected in ["edge", "serve", "upstream", "decide"] {
        assert!(
            graph.contains_key(expected),
            "{expected} not found in {graph:?}"
        );
    }
    assert!(graph["edge"].contains("serve"), "{graph:?}");
    assert!(graph["serve"].contains("upstream"), "{graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!("import cycle: {}", found.join(" → "));
    }
}

#[test]
fn the_cycle_finder_finds_one() {
    let mut graph = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")] {
        graph
            .entry(from.to_string())
            .or_insert_with(BTreeSet::new)
            .insert(to.to_string());
    }
    let found = cycle(&graph).unwrap_or_default();
    assert_eq!(found.first(), found.last());
    assert_eq!(found.len(), 4, "{found:?}");
    graph.remove("c");
    assert_eq!(cycle(&graph), None);
}
