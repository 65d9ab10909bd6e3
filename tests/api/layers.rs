//! The crate's layers, kept (and its files short): every `crate::…` path in the gateway's sources points down this
//! table (or within a row), and the top-level modules form no cycle.
//!
//! The compiler would keep this for free if each layer were a crate of a workspace; in one crate,
//! this test does. It reads the modules the way the compiler finds them (from `src/lib.rs`,
//! following `mod` declarations) and parses them with `syn`, so that paths in `use` lines,
//! expressions, types and macro calls all count, and comments and strings do not. Test-only code
//! (`#[cfg(test)]` items and the files they declare) may reach up, as a dev-dependency may in a
//! workspace.

use proc_macro2::{TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// The layers, top to bottom. A module may use modules of its own row and of the rows below.
/// `config` sits above the owners whose settings it builds (each owner defines its own).
const LAYERS: &[&[&str]] = &[
    // The command line, the tenant check it runs, and the test rig (behind the `emulator`
    // feature).
    &["cli", "check", "demo", "bench", "emulator"],
    // Start-up and process signals.
    &["app", "lifecycle"],
    // The HTTP edge.
    &["api"],
    // Background work over the services.
    &["refresher"],
    // The composition root: builds every service and wires the observers.
    &["service"],
    // Configuration: reads, validates and resolves every section into its owner's type.
    &["config"],
    // Domain services and backends.
    &["fanout", "alerts", "history", "cluster"],
    // The score cache: reports to an observer it defines, knows no history nor alerts; each
    // tenant's controls (profiles and the joined snapshot), likewise with their observer.
    &["cache", "tenant_controls"],
    // The outbound stack: gate, quota, slots, token, call, classification.
    &["policy"],
    // Upstream sources, tokens, quotas, callers.
    &["upstream", "token", "quota", "auth"],
    // The registry, credentials, the metrics registry.
    &["tenants", "credential", "metrics"],
    // Vocabulary and pure logic over it (`controls` reads Graph's shapes through `wire`).
    &["model", "wire", "code", "cursor", "telemetry", "controls"],
];

/// Modules held to a narrower set than their layer allows: the emulator shares nothing with the
/// gateway but the bytes on the wire.
const ONLY: &[(&str, &[&str])] = &[("emulator", &["wire"]), ("model", &[])];

#[test]
fn every_crate_path_points_down_the_layers_and_the_modules_form_no_cycle() {
    let edges = crate_edges();
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, modules)| modules.iter().map(move |module| (*module, layer)))
        .collect();
    let mut problems = Vec::new();
    for module in edges.keys() {
        if !layer_of.contains_key(module.as_str()) {
            problems.push(format!(
                "`{module}` is in no layer: add it to LAYERS in tests/api/layers.rs"
            ));
        }
    }
    for ((from, to), files) in edges.iter().flat_map(|(from, targets)| {
        targets
            .iter()
            .map(move |(to, files)| ((from.as_str(), to.as_str()), files))
    }) {
        let (Some(&up), Some(&down)) = (layer_of.get(from), layer_of.get(to)) else {
            continue;
        };
        let narrowed = ONLY
            .iter()
            .find(|(module, _)| *module == from)
            .is_some_and(|(_, allowed)| !allowed.contains(&to));
        if down < up || narrowed {
            problems.push(format!(
                "`{from}` uses `{to}`, which is not below it ({})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        problems.push(format!("the modules form a cycle: {}", cycle.join(" → ")));
    }
    assert!(
        problems.is_empty(),
        "dependencies must point down the layers (tests/api/layers.rs, docs/contributing/layers.md):\n  {}",
        problems.join("\n  ")
    );
}

/// Top-level module → the top-level modules it uses → the files that use them. Every module of
/// the library appears as a key.
type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn crate_edges() -> Edges {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges = Edges::new();
    let mut seen = BTreeSet::new();
    let lib = parse(&src.join("lib.rs"));
    for (name, _) in declared_modules(&lib.items) {
        let file = module_file(&src, &name);
        walk(&src, &file, &name, &mut edges, &mut seen);
    }
    // Every source file is either compiled into the library (and read above), test-only, or the
    // binary's `main.rs`: none escapes the check.
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap_or(&file).to_path_buf();
        assert!(
            seen.contains(&file)
                || relative == Path::new("lib.rs")
                || relative == Path::new("main.rs")
                || is_test_file(&src, &file),
            "{} is not reached from src/lib.rs: declare it, or teach this test why not",
            relative.display()
        );
    }
    edges
}

/// Reads `file` (a module of the top-level module `top`) and the non-test modules it declares.
fn walk(src: &Path, file: &Path, top: &str, edges: &mut Edges, seen: &mut BTreeSet<PathBuf>) {
    seen.insert(file.to_path_buf());
    let parsed = parse(file);
    let relative = file.strip_prefix(src).unwrap_or(file).display().to_string();
    let mut collector = Collector::default();
    collector.visit_file(&parsed);
    let targets = edges.entry(top.to_owned()).or_default();
    for target in collector.targets {
        if target != top {
            targets.entry(target).or_default().insert(relative.clone());
        }
    }
    let dir = children_dir(file);
    for (name, test_only) in declared_modules(&parsed.items) {
        if !test_only {
            walk(src, &module_file(&dir, &name), top, edges, seen);
        }
    }
}

/// The `mod name;` declarations of `items` (not inline modules), with whether each is test-only.
fn declared_modules(items: &[syn::Item]) -> Vec<(String, bool)> {
    items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(module) if module.content.is_none() => {
                Some((module.ident.to_string(), is_test(&module.attrs)))
            }
            _ => None,
        })
        .collect()
}

/// The directory holding the files of the modules `file` declares.
fn children_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("")).to_path_buf();
    match file.file_stem().and_then(|stem| stem.to_str()) {
        Some("mod" | "lib") => parent,
        Some(stem) => parent.join(stem),
        None => parent,
    }
}

/// `dir/name.rs` or `dir/name/mod.rs`.
fn module_file(dir: &Path, name: &str) -> PathBuf {
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        flat
    } else {
        dir.join(name).join("mod.rs")
    }
}

/// Whether `file` is declared by its parent module under `#[cfg(test)]`.
fn is_test_file(src: &Path, file: &Path) -> bool {
    let Some(name) = file.file_stem().and_then(|stem| stem.to_str()) else {
        return false;
    };
    let (name, dir) = if name == "mod" {
        match file.parent() {
            Some(dir) => (
                dir.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned(),
                dir.parent().unwrap_or(src).to_path_buf(),
            ),
            None => return false,
        }
    } else {
        (name.to_owned(), file.parent().unwrap_or(src).to_path_buf())
    };
    let parents = if dir == src {
        vec![src.join("lib.rs")]
    } else {
        vec![dir.join("mod.rs"), dir.with_extension("rs")]
    };
    parents
        .iter()
        .filter(|parent| parent.exists())
        .any(|parent| {
            declared_modules(&parse(parent).items)
                .iter()
                .any(|(declared, test_only)| *declared == name && *test_only)
        })
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `#[cfg(test)]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .meta
                .require_list()
                .is_ok_and(|list| list.tokens.to_string() == "test")
    })
}

/// Collects the top-level module of every `crate::…` path, skipping test-only items.
#[derive(Default)]
struct Collector {
    targets: BTreeSet<String>,
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_impl_item_fn(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next()) {
            if first.ident == "crate" {
                self.targets.insert(second.ident.to_string());
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if let syn::UseTree::Path(path) = &item.tree {
            if path.ident == "crate" {
                use_roots(&path.tree, &mut self.targets);
            }
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        crate_paths_in(mac.tokens.clone(), &mut self.targets);
        syn::visit::visit_macro(self, mac);
    }
}

/// The first names of `tree` (`a` of `crate::a::b`, `a` and `b` of `crate::{a, b::c}`).
fn use_roots(tree: &syn::UseTree, targets: &mut BTreeSet<String>) {
    match tree {
        syn::UseTree::Path(path) => {
            targets.insert(path.ident.to_string());
        }
        syn::UseTree::Name(name) => {
            targets.insert(name.ident.to_string());
        }
        syn::UseTree::Rename(rename) => {
            targets.insert(rename.ident.to_string());
        }
        syn::UseTree::Group(group) => {
            for item in &group.items {
                use_roots(item, targets);
            }
        }
        syn::UseTree::Glob(_) => {}
    }
}

/// `crate :: name` inside a macro call's tokens (`tracing::warn!(…, crate::telemetry::…)`).
fn crate_paths_in(tokens: TokenStream, targets: &mut BTreeSet<String>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (index, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Group(group) => crate_paths_in(group.stream(), targets),
            TokenTree::Ident(ident) if ident == "crate" => {
                if let [TokenTree::Punct(a), TokenTree::Punct(b), TokenTree::Ident(name), ..] =
                    &tokens[index + 1..]
                {
                    if a.as_char() == ':' && b.as_char() == ':' {
                        targets.insert(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
}

/// A cycle among the modules, as the path that closes it, if there is one.
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        edges: &Edges,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in edges
            .get(module)
            .into_iter()
            .flat_map(|targets| targets.keys())
        {
            if let Some(cycle) = visit(next, edges, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|module| visit(module, edges, &mut done, &mut Vec::new()))
}

/// Longest source file kept: a file over it is a module doing several jobs, or tests that want a
/// file of their own.
const MAX_LINES: usize = 600;

#[test]
fn no_source_file_is_over_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = rust_files(&root.join("src"));
    files.extend(rust_files(&root.join("tests")));
    let long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines: split by job, or move long tests to a tests.rs: {long:?}"
    );
}
