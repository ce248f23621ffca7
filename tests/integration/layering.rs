//! Dependencies between the top-level modules of `src/` point down, as `lib.rs` says: no
//! import cycles. The graph is read from the source: every `crate::NAME` path (in `use`
//! lines, `use crate::{a, b::c}` groups and inline paths) in a file under module `m` is an
//! edge from `m` to `NAME`. Lines that are comments (`//`, `///`, `//!`) do not count; test
//! code does (a cycle through a test module is a cycle in the test build).
//!
//! On failure the message names every cycle and the files that make each of its edges.
//! `SLUICE_LAYERING_SRC=DIR` checks another tree's `src/` (to compare with an older one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// module -> imported module -> files (relative to src/) that import it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let src = std::env::var_os("SLUICE_LAYERING_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let graph = read_graph(&src);
    assert!(graph.len() > 10, "no modules found under {}", src.display());
    let cycles = cycles(&graph);
    let report: Vec<String> = cycles.iter().map(|c| describe(&graph, c)).collect();
    assert!(
        report.is_empty(),
        "{} import cycle(s) between top-level modules of src/:\n{}",
        report.len(),
        report.join("\n")
    );
}

fn read_graph(src: &Path) -> Graph {
    let modules = top_level_modules(src);
    let mut graph = Graph::new();
    for module in &modules {
        graph.entry(module.clone()).or_default();
    }
    let mut files = Vec::new();
    collect_rs_files(src, &mut files);
    for file in files {
        let relative = file.strip_prefix(src).expect("under src").to_path_buf();
        let first = relative.components().next().expect("a component");
        let first = first.as_os_str().to_string_lossy();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        if !modules.contains(&module) {
            continue; // lib.rs, main.rs
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for target in imported_modules(&text) {
            if target != module && modules.contains(&target) {
                (graph.entry(module.clone()).or_default())
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let entries = std::fs::read_dir(src).expect("src/ readable");
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            if path.is_dir() {
                Some(name)
            } else {
                let module = name.strip_suffix(".rs")?;
                (module != "lib" && module != "main").then(|| module.to_owned())
            }
        })
        .collect()
}

fn collect_rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            collect_rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment after every `crate::` outside comment lines; for a group
/// (`crate::{a, b::c}`) the first segment of each item.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `$crate::` (macros) and identifiers ending in `crate` are not the crate root.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut item_depth = 0;
            let mut item_start = true;
            for (i, c) in group[..end].char_indices() {
                match c {
                    '{' => item_depth += 1,
                    '}' => item_depth -= 1,
                    ',' if item_depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.insert(identifier(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(identifier(rest));
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every strongly connected component of more than one module (Tarjan), each as one cycle
/// through all of its modules where there is one, else the component.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph[node].keys() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.components.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node.as_str()) {
            tarjan.visit(node);
        }
    }
    tarjan.components
}

/// `a -> b -> a`, then each edge inside the component with the files that make it.
fn describe(graph: &Graph, component: &[String]) -> String {
    let inside: BTreeSet<&str> = component.iter().map(String::as_str).collect();
    let start = component[0].as_str();
    // The shortest way back to `start` (breadth first), for a readable cycle.
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut back = None;
    while let Some(node) = queue.pop_front() {
        for next in graph[node].keys().map(String::as_str) {
            if !inside.contains(next) {
                continue;
            }
            if next == start {
                back = Some(node);
                break;
            }
            if !came_from.contains_key(next) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
        if back.is_some() {
            break;
        }
    }
    let mut path = vec![start];
    let mut node = back.unwrap_or(start);
    while node != start {
        path.push(node);
        node = came_from[node];
    }
    path[1..].reverse();
    path.push(start);
    let mut text = format!(
        "  cycle: {} (component: {})\n",
        path.join(" -> "),
        component.join(", ")
    );
    for from in component {
        for (to, files) in &graph[from] {
            if inside.contains(to.as_str()) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                text.push_str(&format!("    {from} -> {to}: {}\n", files.join(", ")));
            }
        }
    }
    text
}
