//! The tree's layers, checked over the source: `src/` holds `main.rs`,
//! `lib.rs` and one folder per layer; a file imports (`crate::<layer>`)
//! only its own layer and the layers below it; the producer side imports
//! nothing of the server side. Test modules (from a file's
//! `#[cfg(test)]` on, or a whole file marked `#![cfg(test)]`) may also use
//! the producer side to script input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each layer and the layers it may import, bottom first. The order is the
/// data plane's: base, what is stored, byte formats, storage, the database
/// client, the sandbox, the producer side (which needs only the formats),
/// the lane, the control plane, selftest, tools, the commands.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("model", &["base"]),
    ("codec", &["base", "model"]),
    ("storage", &["base", "model", "codec"]),
    ("pg", &["base", "model", "codec"]),
    ("sandbox", &["base"]),
    ("producer", &["base", "model", "codec"]),
    ("lane", &["base", "model", "codec", "storage", "pg", "sandbox"]),
    ("control", &["base", "model", "codec", "storage", "pg", "sandbox", "lane"]),
    ("selftest", &["base", "model", "codec", "storage", "pg", "sandbox", "producer", "lane", "control"]),
    ("tools", &["base", "model", "codec", "storage", "pg", "sandbox", "producer", "lane", "control", "selftest"]),
    (
        "app",
        &["base", "model", "codec", "storage", "pg", "sandbox", "producer", "lane", "control", "selftest", "tools"],
    ),
];

/// The server side: the producer side must not import any of it.
const SERVER_SIDE: &[&str] = &["storage", "pg", "sandbox", "lane", "control", "selftest", "tools", "app"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code lines before its test module, comments left out.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_start)
        .take_while(|code| !code.starts_with("#[cfg(test)]") && !code.starts_with("#![cfg(test)]"))
        .filter(|code| !code.starts_with("//"))
}

/// The layers a file's non-test code names as `crate::<layer>`.
fn imported_layers(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for code in code_lines(text) {
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn imports_only_go_downward_and_the_producer_side_stands_alone() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    // The layers form a DAG: each may import only layers listed before it.
    for (index, (layer, below)) in LAYERS.iter().enumerate() {
        for dep in *below {
            let at = LAYERS.iter().position(|(l, _)| l == dep).unwrap();
            assert!(at < index, "{layer} may import {dep}, which is not below it");
        }
    }
    for dep in allowed["producer"] {
        assert!(!SERVER_SIDE.contains(dep), "the producer side may import the server side's {dep}");
    }
    // src/ holds main.rs, lib.rs and the layer folders only.
    let mut top: Vec<String> =
        std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    let mut expected: Vec<String> = LAYERS.iter().map(|(l, _)| l.to_string()).collect();
    expected.extend(["lib.rs".to_string(), "main.rs".to_string()]);
    expected.sort();
    assert_eq!(top, expected, "src/ holds main.rs, lib.rs and one folder per layer");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(layer) = relative.components().next().and_then(|c| c.as_os_str().to_str()) else { continue };
        let Some(below) = allowed.get(layer) else { continue }; // lib.rs, main.rs
        for imported in imported_layers(&std::fs::read_to_string(&file).unwrap()) {
            if imported != layer && !below.contains(&imported.as_str()) {
                violations.push(format!("src/{}: {layer} imports crate::{imported}", relative.display()));
            }
        }
    }
    assert!(violations.is_empty(), "imports that go upward or sideways:\n{}", violations.join("\n"));
}

#[test]
fn the_check_finds_an_upward_import() {
    let text =
        "use crate::base::limits;\nuse crate::control::cluster::StateDir;\n#[cfg(test)]\nuse crate::tools::demo;\n";
    let found = imported_layers(text);
    assert_eq!(found, BTreeSet::from(["base".to_string(), "control".to_string()]));
}

/// Module paths (`lane::core`) of the source files, and each file's path.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        modules.insert(parts.join("::"), file);
    }
    modules
}

/// The longest known module a path names (`lane::core::LaneCore` -> `lane::core`).
fn resolve(modules: &BTreeMap<String, PathBuf>, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| modules.contains_key(m))
}

/// The modules a file's non-test code names through `crate::` or `super::`.
fn module_edges(modules: &BTreeMap<String, PathBuf>, module: &str) -> BTreeSet<String> {
    let file = &modules[module];
    let text = std::fs::read_to_string(file).unwrap();
    let is_mod = file.file_name().is_some_and(|n| n == "mod.rs");
    // The module `super::` names from this file.
    let parent: Vec<&str> = {
        let own: Vec<&str> = module.split("::").collect();
        if is_mod { own[..own.len().saturating_sub(1)].to_vec() } else { own[..own.len() - 1].to_vec() }
    };
    let mut edges = BTreeSet::new();
    for code in code_lines(&text) {
        for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().last();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let path: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
                let mut full = base.join("::");
                if !full.is_empty() {
                    full.push_str("::");
                }
                full.push_str(path.trim_end_matches(':'));
                if let Some(target) = resolve(modules, &full) {
                    if target != module && !module.starts_with(&format!("{target}::")) {
                        edges.insert(target);
                    }
                }
            }
        }
    }
    edges
}

/// Cycles between source files (strongly connected components, Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in &s.graph[v] {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                s.low.insert(v, s.low[v].min(lw));
            } else if s.stack.contains(&w.as_str()) {
                let iw = s.index[w.as_str()];
                s.low.insert(v, s.low[v].min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// No two source files import each other, directly or around a loop.
#[test]
fn no_cycles_between_source_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let graph: BTreeMap<String, BTreeSet<String>> =
        modules.keys().map(|m| (m.clone(), module_edges(&modules, m))).collect();
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles between source files: {found:?}");
}
