//! The workspace's layout: no file of a crate reaches back to itself through the modules it
//! uses. A file's references are its `crate::` and `super::` paths (in `use` lines and in
//! code, `use crate::{a, b}` groups too), each resolved to the file that defines the deepest
//! module it names; test modules are left out. A parent reaching its own child modules by a
//! relative path (`mod up; up::run()`) is how modules are declared, not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module of the crate whose source root is `src`, with its file's text.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(module, without_tests(&text));
        }
    }
    out
}

/// The text with every `#[cfg(test)]` item blanked out.
fn without_tests(text: &str) -> String {
    let mut out = Vec::new();
    let (mut depth, mut skip_at) = (0i64, None);
    for line in text.lines() {
        if skip_at.is_none() && line.trim_start().starts_with("#[cfg(test)]") {
            skip_at = Some(depth);
        }
        let (opens, closes) = (line.matches('{').count(), line.matches('}').count());
        out.push(if skip_at.is_none() { line } else { "" });
        depth += opens as i64 - closes as i64;
        if skip_at.is_some_and(|at| depth <= at) && opens + closes > 0 {
            skip_at = None;
        }
    }
    out.join("\n")
}

/// Paths in `text` that start at the crate root or a parent module, as written:
/// "crate::a::b", "super::x".
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for start in ["crate::", "super::"] {
        for (at, _) in text.match_indices(start) {
            if at > 0 && ident(bytes[at - 1]) {
                continue;
            }
            let rest = &text[at..];
            let path_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..path_len].trim_end_matches(':');
            if rest[path_len..].starts_with('{') {
                let group = &rest[path_len + 1..rest.find('}').unwrap_or(rest.len())];
                for item in group.split(',') {
                    let item = item.split(" as ").next().unwrap().trim();
                    if !item.is_empty() && !item.contains('{') {
                        out.push(format!("{path}::{item}"));
                    }
                }
            }
            out.push(path.to_string());
        }
    }
    out
}

/// The module a path written in `here` names: the deepest prefix that is a module file.
fn resolve(known: &BTreeSet<Module>, here: &Module, path: &str) -> Option<Module> {
    let mut parts = path.split("::").filter(|p| !p.is_empty());
    let mut base: Module = match parts.next()? {
        "crate" => Vec::new(),
        // In foo.rs `super` is foo's parent, and in foo/mod.rs too.
        "super" => here[..here.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    let mut rest: Vec<&str> = parts.collect();
    while rest.first() == Some(&"super") {
        base.pop();
        rest.remove(0);
    }
    (0..=rest.len()).rev().find_map(|n| {
        let mut candidate = base.clone();
        candidate.extend(rest[..n].iter().map(|s| s.to_string()));
        known.contains(&candidate).then_some(candidate)
    })
}

/// Every set of modules that reach each other (Tarjan's strongly connected components).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a Module) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for next in &w.graph[v] {
            if !w.index.contains_key(next) {
                visit(w, next);
                let low = w.low[next].min(w.low[v]);
                w.low.insert(v, low);
            } else if w.stack.contains(&next) {
                let low = w.index[next].min(w.low[v]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().position(|m| *m == v).unwrap();
            let component: Vec<Module> = w.stack.drain(at..).cloned().collect();
            if component.len() > 1 {
                w.found.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            visit(&mut walk, v);
        }
    }
    walk.found
}

/// Which module uses which, from the texts of a crate's files.
fn graph(files: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(here, text)| {
            let uses = references(text)
                .iter()
                .filter_map(|p| resolve(&known, here, p))
                .filter(|m| m != here && !m.is_empty())
                .collect();
            (here.clone(), uses)
        })
        .collect()
}

#[test]
fn no_file_imports_a_module_that_imports_it_back() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    let mut checked = 0;
    for krate in std::fs::read_dir(&crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let files = modules(&src);
        checked += files.len();
        for cycle in cycles(&graph(&files)) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            problems.push(format!("{}: {}", src.display(), names.join(" <-> ")));
        }
    }
    assert!(checked > 50, "only {checked} files found under {crates:?}");
    assert!(
        problems.is_empty(),
        "import cycles (break them by moving what both sides need into a module of its own):\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_cycle_through_crate_paths_is_found_and_a_parent_using_its_child_is_not() {
    let module = |path: &str| -> Module { path.split("::").map(str::to_string).collect() };
    let files: BTreeMap<Module, String> = [
        (Vec::new(), "mod cli; mod daemon; mod output;"),
        (module("cli"), "mod up; use crate::daemon::run;"),
        (module("cli::up"), "use super::Context; up::go();"),
        (module("daemon"), "use crate::{output, cli::Args};"),
        (
            module("output"),
            "fn f() {}\n#[cfg(test)]\nmod tests {\n use crate::daemon;\n}\n",
        ),
    ]
    .into_iter()
    .map(|(m, text)| (m, without_tests(text)))
    .collect();
    let found = cycles(&graph(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    let mut cycle = found[0].clone();
    cycle.sort();
    assert_eq!(cycle, vec![module("cli"), module("daemon")]);
}
