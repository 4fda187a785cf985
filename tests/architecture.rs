//! The module map of docs/ARCHITECTURE.md holds: imports follow the table
//! of allowed edges between groups, the leaves import nothing, and no
//! module cycle exists.
//!
//! Reads every file under `src/`, takes each `crate::module` path outside
//! comments (a doc link is not an import) as an edge from the file's module
//! to that module, and checks the graph: each module's group may import
//! only the groups [`ALLOWED`] lists for it (the tools use the relay, never
//! the reverse); a leaf ([`LEAVES`]: small shared kinds that `metrics` labels
//! by) imports nothing of the crate, so an edge into it is no edge into its
//! parent; and the graph has no cycle — between top-level modules
//! (`fanout → metrics → fanout`) and between the files of one module
//! directory (`transport::writer → transport::ws → transport::writer`).
//! Standard library only: it reads source text, it does not build it.
//!
//! It also holds the layout of the tests themselves (the integration tests
//! are the one binary `tests/it`, and this file the only other one) and the
//! size of what a reader opens: no source file over 700 lines of non-test
//! code without a reason in its header, docs/BENCHMARKS.md under 400 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A directed graph of module names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules that import nothing of the crate: kinds shared by the modules
/// that own them and by `metrics`, which labels by them. A leaf inside a
/// module directory (`feed::status`) is its own node.
const LEAVES: &[&str] = &[
    "auth",
    "clock",
    "price",
    "procfs",
    "admission",
    "feed::status",
    "transport::kind",
];

/// The groups, lowest first, and their modules.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "auth",
            "clock",
            "price",
            "procfs",
            "wire",
            "deflate",
            "admission",
            "feed::status",
            "transport::kind",
        ],
    ),
    ("metrics", &["metrics"]),
    ("ingest", &["retransmit", "nats", "feed", "table"]),
    ("config", &["config"]),
    (
        "serve",
        &["fanout", "transport", "api", "accept", "http", "usage"],
    ),
    ("server", &["server"]),
    ("tools", &["tools"]),
];

/// The allowed edges: each group and the groups it may import (itself
/// included where it may). Nothing imports `tools`; `server` only the
/// relay below it.
const ALLOWED: &[(&str, &[&str])] = &[
    ("base", &["base"]),
    ("metrics", &["base"]),
    ("ingest", &["base", "metrics", "ingest"]),
    ("config", &["base", "ingest"]),
    ("serve", &["base", "metrics", "ingest", "config", "serve"]),
    ("server", &["base", "metrics", "ingest", "config", "serve"]),
    (
        "tools",
        &[
            "base", "metrics", "ingest", "config", "serve", "server", "tools",
        ],
    ),
];

/// Cycles other branches are removing. Each entry is the sorted set of
/// modules of one cycle; the test fails if a listed cycle is gone, so the
/// entry is deleted when the fix lands.
const KNOWN: &[&[&str]] = &[];

fn group_of(module: &str) -> Option<&'static str> {
    GROUPS
        .iter()
        .find(|(_, ms)| ms.contains(&module))
        .map(|(g, _)| *g)
}

#[test]
fn imports_follow_the_allowed_edges() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let (top, _) = graphs(&src, &files);
    let mut wrong = Vec::new();
    for (from, tos) in &top {
        let Some(g) = group_of(from) else {
            wrong.push(format!("{from}: in no group of GROUPS"));
            continue;
        };
        let allowed = ALLOWED.iter().find(|(a, _)| *a == g).map(|(_, to)| *to);
        for to in tos {
            let Some(h) = group_of(to) else {
                continue; // reported as its own node above
            };
            if !allowed.is_some_and(|a| a.contains(&h)) {
                wrong.push(format!("{from} ({g}) → {to} ({h})"));
            }
        }
        if LEAVES.contains(&from.as_str()) && !tos.is_empty() {
            wrong.push(format!("{from} is a leaf but imports {tos:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the table of allowed edges (tests/architecture.rs, docs/ARCHITECTURE.md):\n  {}",
        wrong.join("\n  ")
    );
    // Every group and leaf names something that exists: a rename would make
    // the table vacuous.
    for (_, ms) in GROUPS {
        for m in *ms {
            assert!(top.contains_key(*m), "module {m} of GROUPS not found");
        }
    }
}

#[test]
fn no_module_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    assert!(files.len() > 20, "found only {} files", files.len());
    let (top, inner) = graphs(&src, &files);
    let mut cycles = cycles(&top);
    for g in inner.values() {
        cycles.extend(self::cycles(g));
    }
    let mut unexpected = Vec::new();
    let mut seen_known = BTreeSet::new();
    for cycle in &cycles {
        let mut set: Vec<&str> = cycle[..cycle.len() - 1]
            .iter()
            .map(String::as_str)
            .collect();
        set.sort_unstable();
        match KNOWN.iter().position(|k| *k == set.as_slice()) {
            Some(i) => {
                seen_known.insert(i);
            }
            None => unexpected.push(cycle.join(" → ")),
        }
    }
    assert!(
        unexpected.is_empty(),
        "module cycles (docs/ARCHITECTURE.md: data and imports flow one way):\n  {}",
        unexpected.join("\n  ")
    );
    for (i, k) in KNOWN.iter().enumerate() {
        assert!(
            seen_known.contains(&i),
            "the known cycle {k:?} is gone: delete it from KNOWN in tests/architecture.rs"
        );
    }
    // The transports share `api`; `http` only routes to them.
    for t in top.get("transport").into_iter().flatten() {
        assert_ne!(t, "http", "transport must not depend on http");
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level graph, and per module directory the graph of its files.
fn graphs(src: &Path, files: &[PathBuf]) -> (Graph, BTreeMap<String, Graph>) {
    let mut top = Graph::new();
    let mut inner: BTreeMap<String, Graph> = BTreeMap::new();
    let mut names = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
            continue;
        }
        // `transport/ws.rs` is `transport` (top) and `ws` (inner);
        // `transport/mod.rs` and `transport.rs` are `transport` alone; a
        // leaf such as `feed/status.rs` is `feed::status`, its own node.
        let mut module = parts[0].clone();
        let mut sub = parts.get(1).filter(|s| *s != "mod").cloned();
        if let Some(s) = &sub {
            let leaf = format!("{module}::{s}");
            if LEAVES.contains(&leaf.as_str()) {
                module = leaf;
                sub = None;
            }
        }
        top.entry(module.clone()).or_default();
        if let Some(s) = &sub {
            inner
                .entry(module.clone())
                .or_default()
                .entry(format!("{module}::{s}"))
                .or_default();
        }
        names.push((f, module, sub));
    }
    for (f, module, sub) in names {
        let text = strip_comments(&std::fs::read_to_string(f).unwrap());
        for path in crate_paths(&text) {
            let leaf = path.get(1).map(|s| format!("{}::{s}", path[0]));
            let first = match leaf {
                Some(l) if LEAVES.contains(&l.as_str()) => l,
                _ => path[0].clone(),
            };
            if first != module && top.contains_key(&first) {
                top.get_mut(&module).unwrap().insert(first.clone());
            }
            if let (Some(s), true, Some(second)) = (&sub, first == module, path.get(1)) {
                let from = format!("{module}::{s}");
                let to = format!("{module}::{second}");
                let g = inner.get_mut(&module).unwrap();
                if to != from && g.contains_key(&to) {
                    g.get_mut(&from).unwrap().insert(to);
                }
            }
        }
    }
    (top, inner)
}

/// `text` without `//` and `/* */` comments (doc comments included) and
/// without the contents of string literals.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && b[i + 1..].starts_with(b"#") || b[i..].starts_with(b"r\"") {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            while j < b.len() && b[j] == b'#' {
                j += 1;
            }
            let free = |k: usize| k == 0 || !is_ident(b[k - 1]);
            if j < b.len() && b[j] == b'"' && (free(i) || b[i - 1] == b'b' && free(i - 1)) {
                let hashes = j - i - 1;
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                i = j + 1;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('"', '\'', '\n'); lifetimes are left alone.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every path after `crate::`, as its first two segments where there are
/// two; a group `crate::{a, b::{c, d}}` gives `[a]`, `[b, c]`, `[b, d]`.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        if start > 0 && (is_ident(b[start - 1]) || matches!(b[start - 1], b':' | b'$')) {
            continue; // `$crate::`, `other_crate::`, `a::crate::`
        }
        group(text, from, &mut Vec::new(), &mut out);
    }
    out
}

/// Reads a path or a `{…}` group at `at` under `prefix` into `out`;
/// returns where it ended.
fn group(text: &str, mut at: usize, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let b = text.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    at = skip_ws(at);
    if at < b.len() && b[at] == b'{' {
        at += 1;
        loop {
            at = skip_ws(at);
            if at >= b.len() || b[at] == b'}' {
                return at + 1;
            }
            if b[at] == b',' {
                at += 1;
                continue;
            }
            let before = at;
            at = group(text, at, &mut prefix.clone(), out);
            if at == before {
                at += 1; // `self`, `*` or something unexpected: step over
            }
        }
    }
    let start = at;
    while at < b.len() && is_ident(b[at]) {
        at += 1;
    }
    if at == start {
        // `crate::a::<T>`, `crate::a::*`: the path so far.
        if !prefix.is_empty() {
            out.push(prefix.clone());
        }
        return at;
    }
    let name = &text[start..at];
    if name != "self" && prefix.len() < 2 {
        prefix.push(name.to_owned());
    }
    if text[at..].starts_with("::") {
        return group(text, at + 2, prefix, out);
    }
    if !prefix.is_empty() {
        out.push(prefix.clone());
    }
    at
}

/// One cycle per strongly connected component of more than one node, each
/// as a path that returns to its start (`a → b → a`), found by Tarjan's
/// algorithm.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        sccs: Vec<BTreeSet<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.insert(w);
                    if w == v {
                        break;
                    }
                }
                self.sccs.push(scc);
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        sccs: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    let mut out = Vec::new();
    for scc in t.sccs.iter().filter(|s| s.len() > 1) {
        // Walk from the first node, inside the component, until a node
        // repeats; the walk from there is a cycle.
        let start = *scc.iter().next().unwrap();
        let mut path = vec![start];
        loop {
            let last = *path.last().unwrap();
            let next = g[last]
                .iter()
                .map(String::as_str)
                .find(|w| scc.contains(w))
                .unwrap();
            if let Some(pos) = path.iter().position(|p| *p == next) {
                let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
                cycle.push(next.to_owned());
                out.push(cycle);
                break;
            }
            path.push(next);
        }
    }
    out
}

#[test]
fn a_cycle_is_found_and_named() {
    let g = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    // Two cycles of an earlier layout: fanout ⇄ metrics and http ⇄ transport.
    let main = g(&[
        ("fanout", "feed"),
        ("fanout", "metrics"),
        ("metrics", "fanout"),
        ("feed", "metrics"),
        ("http", "transport"),
        ("transport", "http"),
        ("server", "http"),
    ]);
    let found = cycles(&main);
    let joined: Vec<String> = found.iter().map(|c| c.join(" → ")).collect();
    assert_eq!(found.len(), 2, "{joined:?}");
    assert!(
        joined
            .iter()
            .any(|c| c.contains("fanout") && c.contains("metrics"))
    );
    assert!(
        joined.contains(&"http → transport → http".to_owned()),
        "{joined:?}"
    );
    let tree = g(&[("http", "api"), ("transport", "api"), ("http", "transport")]);
    assert!(cycles(&tree).is_empty());
}

#[test]
fn paths_are_read_from_code_not_comments_or_strings() {
    let text = strip_comments(
        "use crate::{a::{X, Y}, b, c::d::e};\n\
         /// See [`crate::doc`].\n\
         // crate::line\n\
         /* crate::block */\n\
         let s = \"crate::string\"; let r = r#\"crate::raw\"#;\n\
         let q = '\"'; let v = crate::f::g(); fn h<'a>(x: &'a str) {}\n\
         $crate::m::n",
    );
    let paths = crate_paths(&text);
    let firsts: BTreeSet<&str> = paths.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(
        firsts,
        ["a", "b", "c", "f"].into_iter().collect::<BTreeSet<_>>(),
        "{paths:?}"
    );
    assert!(paths.contains(&vec!["a".to_owned(), "X".to_owned()]));
    assert!(paths.contains(&vec!["c".to_owned(), "d".to_owned()]));
}

/// The integration tests are one binary, `tests/it`: each binary Cargo
/// makes for a `tests/*.rs` file or `tests/*/main.rs` links the whole relay
/// and its dependencies again, minutes of build on two cores. So the only
/// other binary is this one, and every file under `tests/it/` is a module
/// `tests/it/main.rs` declares (a file left out would never run).
#[test]
fn integration_tests_are_one_binary() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&tests).expect("read tests/") {
        let path = entry.expect("read tests/").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let binary = if path.is_dir() {
            path.join("main.rs").exists() && name != "it"
        } else {
            name.ends_with(".rs") && name != "architecture.rs"
        };
        if binary {
            wrong.push(format!(
                "tests/{name} is a test binary of its own: move it to tests/it/ \
                 (`git mv`), declare it in tests/it/main.rs with a `mod` line, and \
                 replace its `mod support;` with `use crate::support;`"
            ));
        }
    }
    let main = std::fs::read_to_string(tests.join("it/main.rs")).expect("read tests/it/main.rs");
    let declared: BTreeSet<&str> = main
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    for entry in std::fs::read_dir(tests.join("it")).expect("read tests/it/") {
        let path = entry.expect("read tests/it/").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let module = match name.strip_suffix(".rs") {
            Some("main") => continue,
            Some(m) => m.to_owned(),
            None if path.join("mod.rs").exists() => name.clone(),
            None => continue,
        };
        if !declared.contains(module.as_str()) {
            wrong.push(format!(
                "tests/it/{name} is not declared in tests/it/main.rs: add `mod {module};`"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Most lines of non-test code in one source file, and of the benchmarks
/// page: past them a file is split (or says in its header why not, with
/// the words "over 700 lines because").
const MAX_CODE_LINES: usize = 700;
const MAX_BENCHMARKS_LINES: usize = 400;

/// A file's lines before its first top-level `#[cfg(test)]`.
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

#[test]
fn no_source_file_is_over_700_lines_of_code_without_saying_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    for dir in ["src", "fuzz/src", "benches"] {
        if !root.join(dir).exists() {
            continue;
        }
        for file in rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            let n = code_lines(&text);
            let header: String = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join(" ");
            if n > MAX_CODE_LINES && !header.contains("over 700 lines because") {
                long.push(format!(
                    "{}: {n} lines of non-test code (split it, or say in its header why not)",
                    file.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn the_benchmarks_page_stays_short() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/BENCHMARKS.md");
    let n = std::fs::read_to_string(&page)
        .expect("read docs/BENCHMARKS.md")
        .lines()
        .count();
    assert!(
        n < MAX_BENCHMARKS_LINES,
        "docs/BENCHMARKS.md is {n} lines: today's results first, the history to git"
    );
}

#[test]
fn code_lines_stop_at_the_test_module() {
    assert_eq!(code_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(code_lines("a\n    #[cfg(test)]\nb\n"), 3);
}
