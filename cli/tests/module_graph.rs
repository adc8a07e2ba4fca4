//! The CLI's modules import each other as a tree (no cycle): commands on top, then the helpers
//! they share, then the managed-volume library (`cowsnap-managed`) and the core. Every
//! `crate::<module>` path in `src/` (in `use` lines and inline) is an edge; the test fails on a
//! cycle and names it. The managed-volume library (`../managed/src`) is held to the same rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Module name of a source file: its first path component under `src/` (`backupstore/upload.rs`
/// belongs to `backupstore`).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::name` paths in `text` (`use crate::{a, b::c}` counts `a` and `b`).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// The module graph of the crate whose sources are `src` (relative to the CLI's directory) and
/// whose root file is `root` (`main.rs`, `lib.rs`: its `mod` lines name the modules).
fn graph(src: &str, root: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
    let main = fs::read_to_string(src.join(root)).unwrap();
    let modules: BTreeSet<String> = main
        .lines()
        .map(|l| l.trim().trim_start_matches("pub "))
        .filter_map(|l| l.strip_prefix("mod "))
        .map(|l| l.trim_end_matches(';').trim().to_string())
        .collect();
    assert!(modules.len() >= 5, "no `mod` lines found in {root}");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in all {
        let rel = f.strip_prefix(&src).unwrap();
        let m = module_of(rel);
        if rel == Path::new(root) {
            continue; // the root: it uses every module
        }
        let refs = crate_refs(&fs::read_to_string(&f).unwrap());
        let e = g.entry(m.clone()).or_default();
        for r in refs {
            if modules.contains(&r) && r != m {
                e.insert(r);
            }
        }
    }
    g
}

/// A cycle of `g`, if any (depth-first search).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|x| x == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_use_crate_graph_has_no_cycle() {
    let g = graph("src", "main.rs");
    if let Some(c) = cycle(&g) {
        panic!("import cycle between the CLI's modules: {}", c.join(" -> "));
    }
}

/// The same for the managed-volume library, where the CLI's volume modules went.
#[test]
fn the_managed_librarys_graph_has_no_cycle() {
    let g = graph("../managed/src", "lib.rs");
    assert!(g.contains_key("exec") && g.contains_key("volume"), "{g:?}");
    if let Some(c) = cycle(&g) {
        panic!(
            "import cycle between cowsnap-managed's modules: {}",
            c.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    // The check must be able to fail: the old managed <-> mount cycle, and a longer one.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("managed".into())
        .or_default()
        .insert("mount".into());
    g.entry("mount".into())
        .or_default()
        .insert("managed".into());
    assert!(cycle(&g).is_some());
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(cycle(&g).is_none());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(
        crate_refs("use crate::{x, y::z};\nlet a = crate::w::f();\n// crate::no"),
        ["w", "x", "y"].iter().map(|s| s.to_string()).collect()
    );
}
