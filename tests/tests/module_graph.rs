//! No two modules of a crate in the workspace use each other, directly or
//! through others: every crate's modules form a layered graph.
//!
//! The check reads the sources (comments and `#[cfg(test)]` modules left
//! out), takes each `crate::…` and `super::…` path as an edge from the file's
//! module to the deepest module the path names, and looks for strongly
//! connected components of more than one module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every `src` directory of the workspace's crates.
fn crate_roots(workspace: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let mut stack = vec![workspace.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() || name.starts_with('.') || name == "target" {
                continue;
            }
            if name == "src" && dir.join("Cargo.toml").is_file() {
                roots.push(path);
            } else {
                stack.push(path);
            }
        }
    }
    roots.sort();
    roots
}

/// The module each non-test source file under `src` defines.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.iter().any(|p| p == "tests" || p == "bin") {
                continue;
            }
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts.clear();
            }
            found.insert(parts, path);
        }
    }
    found
}

/// The source without line comments and without a trailing test module.
fn code(text: &str) -> String {
    let kept: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut end = kept.len();
    let mut from = 0;
    while let Some(at) = kept[from..].find("#[cfg(test)]") {
        let at = from + at;
        if kept[at..]
            .trim_start_matches("#[cfg(test)]")
            .trim_start()
            .starts_with("mod tests")
        {
            end = at;
            break;
        }
        from = at + 1;
    }
    kept[..end].to_string()
}

fn identifier(s: &str) -> &str {
    let len = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..len]
}

/// Paths that follow `prefix` (`crate::` or `super::`), a use-group
/// (`crate::{a, b::c}`) giving one path per member.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(prefix) {
        let start = from + at;
        from = start + prefix.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut member_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => member_start = true,
                    c if member_start && !c.is_whitespace() => {
                        member_start = false;
                        paths.push(path_at(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            paths.push(path_at(rest));
        }
    }
    paths
}

/// `a::b::c` at the start of `s` (a trailing `{` group or `*` ends it).
fn path_at(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let id = identifier(rest);
        if id.is_empty() {
            break;
        }
        parts.push(id.to_string());
        match rest[id.len()..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    parts
}

fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules(src);
    let resolve = |mut path: Module| {
        while !path.is_empty() && !modules.contains_key(&path) {
            path.pop();
        }
        path
    };
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
        let mut targets = BTreeSet::new();
        for path in paths_after(&text, "crate::") {
            targets.insert(resolve(path));
        }
        for path in paths_after(&text, "super::") {
            let mut full = parent.clone();
            full.extend(path.into_iter().filter(|p| p != "super"));
            targets.insert(resolve(full));
        }
        // A module reaching its own ancestors or descendants is not a cycle
        // between siblings (a parent declares and re-exports its children).
        targets.retain(|t| !module.starts_with(t) && !t.starts_with(module));
        edges.insert(module.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let roots = crate_roots(workspace);
    assert!(roots.len() >= 8, "crates found: {roots:?}");
    let mut report = Vec::new();
    for src in &roots {
        for component in cycles(&graph(src)) {
            let names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
            report.push(format!("{}: {}", src.display(), names.join(" <-> ")));
        }
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn the_check_finds_a_cycle_and_resolves_groups_and_super() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod inner;\n").unwrap();
    std::fs::write(
        src.join("a/inner.rs"),
        "use crate::{c::X, b};\n// use crate::c; (a comment)\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "fn f() { super::a::inner::g() }\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "#[cfg(test)]\nmod tests { use crate::b; }\n",
    )
    .unwrap();
    let g = graph(src);
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Module>();
    assert_eq!(g[&m("a::inner")], [m("b"), m("c")].into_iter().collect());
    assert_eq!(g[&m("c")], BTreeSet::new());
    let found = cycles(&g);
    assert_eq!(found.len(), 1, "{found:?}");
    let members: BTreeSet<Module> = found[0].iter().cloned().collect();
    assert_eq!(members, [m("a::inner"), m("b")].into_iter().collect());
}
