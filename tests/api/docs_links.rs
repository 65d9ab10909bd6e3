//! The documentation's links hold: every relative link and anchor in `README.md` and `docs/`
//! resolves, every page of `docs/` can be reached from the README, and the README stays the
//! front door (short).
//!
//! Links are found by parsing the Markdown with pulldown-cmark (so code blocks and inline code
//! never count), anchors are computed from the target page's headings the way GitHub computes
//! them, and a link to a file outside `docs/` (`../deploy/compose.yaml`, `../src/…`) must name a
//! file or folder that exists. Links with a scheme (`https:`, `mailto:`) are not followed.

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// The README's length limit: it introduces, the pages under `docs/` explain.
const README_MAX_LINES: usize = 250;

/// One link found in a page: where it is and what it points at.
struct Link {
    line: usize,
    dest: String,
}

/// What a page offers (its anchors) and what it points at (its links).
struct Page {
    anchors: BTreeSet<String>,
    links: Vec<Link>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every `.md` file under `docs/`, relative to the repository's root.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    let mut found = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut found);
    found.sort();
    found
}

/// GitHub's anchor for a heading's text: lower case; letters, digits, `-` and `_` kept, each
/// space a `-`, everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Reads one page: its headings' anchors (a repeated heading gets `-1`, `-2`… as on GitHub) and
/// its links, with their line numbers. A reference link without its definition (`[text][label]`,
/// `[text][]`) is reported as a link to `[label]`, which never resolves; a bare `[word]` is text
/// (GitHub shows it as typed), not a link.
fn read_page(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    let mut broken = Vec::new();
    let mut callback = |link: pulldown_cmark::BrokenLink<'_>| {
        if link.link_type != LinkType::Shortcut {
            broken.push((link.span.start, format!("[{}]", link.reference)));
        }
        None
    };
    let parser = Parser::new_with_broken_link_callback(&text, options, Some(&mut callback));

    let mut anchors = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut links = Vec::new();
    let mut heading: Option<String> = None;
    for (event, range) in parser.into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_insert(0);
                anchors.insert(if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                });
                *n += 1;
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => links.push(Link {
                line: line_of(range.start),
                dest: dest_url.to_string(),
            }),
            _ => {}
        }
    }
    for (offset, label) in broken {
        links.push(Link {
            line: line_of(offset),
            dest: label,
        });
    }
    Page { anchors, links }
}

/// `a/b/../c` → `a/c`, without touching the file system (the target may not exist).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether a link leaves the repository's files (a scheme such as `https:` or `mailto:`).
fn is_external(dest: &str) -> bool {
    dest.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    })
}

/// Every broken link of every page, as `page:line: destination: why`.
fn broken_links(pages: &BTreeMap<PathBuf, Page>) -> Vec<String> {
    let root = root();
    let mut broken = Vec::new();
    for (path, page) in pages {
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        for link in &page.links {
            let mut fail =
                |why: &str| broken.push(format!("{shown}:{}: {}: {why}", link.line, link.dest));
            if link.dest.starts_with('[') {
                fail("a reference link without its definition");
                continue;
            }
            if is_external(&link.dest) {
                continue;
            }
            let (file, anchor) = link.dest.split_once('#').unwrap_or((&link.dest, ""));
            let file = file.replace("%20", " ");
            let target = if file.is_empty() {
                path.clone()
            } else if let Some(from_root) = file.strip_prefix('/') {
                normalise(&root.join(from_root))
            } else {
                normalise(&path.parent().unwrap().join(&file))
            };
            if !target.exists() {
                fail("no such file");
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            match pages.get(&target) {
                Some(target_page) if target_page.anchors.contains(anchor) => {}
                Some(_) => fail("no heading with this anchor"),
                None if target.extension().is_some_and(|e| e == "md") => {
                    fail("not a page of the docs")
                }
                None => fail("an anchor into a file that is not Markdown"),
            }
        }
    }
    broken
}

#[test]
fn github_anchors_are_computed_as_github_does() {
    assert_eq!(
        slug("Many tenants: `GET /scores` and `GET /scores.csv`"),
        "many-tenants-get-scores-and-get-scorescsv"
    );
    assert_eq!(
        slug("Metrics: device, exposure and Secure Score"),
        "metrics-device-exposure-and-secure-score"
    );
    assert_eq!(slug("After 2027-02-01"), "after-2027-02-01");
    assert_eq!(slug("Reload (SIGHUP)"), "reload-sighup");
    assert_eq!(
        slug("Shutdown (SIGTERM, SIGINT)"),
        "shutdown-sigterm-sigint"
    );
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_docs_resolves() {
    let pages: BTreeMap<PathBuf, Page> = pages()
        .into_iter()
        .map(|p| (p.clone(), read_page(&p)))
        .collect();
    assert!(pages.len() > 1, "no pages found under docs/");
    let broken = broken_links(&pages);
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn every_page_of_the_docs_can_be_reached_from_the_readme() {
    let pages: BTreeMap<PathBuf, Page> = pages()
        .into_iter()
        .map(|p| (p.clone(), read_page(&p)))
        .collect();
    let mut reached = BTreeSet::from([root().join("README.md")]);
    let mut queue = vec![root().join("README.md")];
    while let Some(path) = queue.pop() {
        for link in &pages[&path].links {
            if is_external(&link.dest) || link.dest.starts_with('[') {
                continue;
            }
            let file = link.dest.split('#').next().unwrap_or_default();
            if file.is_empty() {
                continue;
            }
            let target = normalise(&path.parent().unwrap().join(file));
            if pages.contains_key(&target) && reached.insert(target.clone()) {
                queue.push(target);
            }
        }
    }
    let orphans: Vec<String> = pages
        .keys()
        .filter(|p| !reached.contains(*p))
        .map(|p| p.strip_prefix(root()).unwrap_or(p).display().to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "pages no link leads to (link them from docs/index.md):\n{}",
        orphans.join("\n")
    );
}

#[test]
fn the_readme_stays_the_front_door() {
    let lines = std::fs::read_to_string(root().join("README.md"))
        .unwrap()
        .lines()
        .count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines (at most {README_MAX_LINES}): move the detail to a page under docs/ and link it"
    );
}
