//! The crate's layering, checked against its own sources.
//!
//! Every `.rs` file under `src/` (but `src/main.rs`, the binary, which goes through
//! `milvus_cdc::`) is read at run time, test modules included: a stage's tests must not reach
//! upward either. Each reference to another top-level module is collected: `crate::x` anywhere in
//! code (`use` lines, grouped `use crate::{a, b::c}`, inline paths, `$crate::x` in macros, and a
//! path that is the whole string of an attribute argument, as in `#[serde(with = "crate::x")]`,
//! `#[doc]` aside) and `super::` chains that climb out of the file's top-level module. Comments
//! and other string and char literals are blanked first, so a doc mention of `crate::task` is not
//! an import.
//!
//! Not followed: `#[path = ..]` module files (none today), and the crate root renamed with
//! `use crate as ..` / `extern crate self as ..` (none today).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One row per top-level module: what it may import from the rest of the crate, and why.
/// A module may always refer to itself. The test `rules_name_every_module` keeps it complete.
#[rustfmt::skip]
const RULES: &[(&str, &[&str], &str)] = &[
    ("model", &[], "the shared vocabulary every stage speaks, so it can lean on none of them"),
    ("metrics", &["model"], "a leaf every stage records into; knowing a stage would tie stages together through it"),
    ("health", &["model"], "a leaf every stage reports into, for the same reason"),
    ("failpoint", &["model"], "a leaf every stage may pause or fail at, for the same reason"),
    ("proto", &["model"], "the generated messages this project owns, read and written by several stages"),
    ("milvus_client", &["model"], "a client of any Milvus's public API, for the stages that read or write one"),
    ("journal", &["model", "metrics", "health", "failpoint", "proto"], "the durable middle of the flow: source writes it, apply reads it, it knows neither"),
    ("source", &["model", "journal", "metrics", "health", "failpoint", "proto", "milvus_client"], "captures into the journal and never sees how changes are applied"),
    ("apply", &["model", "journal", "metrics", "health", "failpoint", "proto", "milvus_client"], "replays from the journal and never sees where changes came from"),
    ("snapshot", &["model", "journal", "milvus_client", "failpoint"], "copies what exists at a task's start from the source's API to the target, beside the stages"),
    ("verify", &["model", "milvus_client"], "compares the source with the target, row by row, and writes nothing"),
    ("group", &["model"], "the appliances of a group in etcd (members, task records, owners, checkpoints) as bytes: it knows no stage"),
    ("config", &["model", "source", "group"], "parses settings, the source's `source::mq::MqConfig` among them, and runs nothing"),
    ("task", &["model", "journal", "source", "apply", "milvus_client", "verify", "snapshot", "metrics", "health", "failpoint", "proto", "config", "group"], "the lifecycle that wires the stages together, so it sits above all of them"),
    ("api", &["model", "journal", "source", "apply", "milvus_client", "verify", "snapshot", "metrics", "health", "failpoint", "proto", "config", "task", "group"], "the HTTP front end: drives tasks, but is not the command line"),
    ("cli", &["model", "journal", "source", "apply", "milvus_client", "verify", "snapshot", "metrics", "health", "failpoint", "proto", "config", "task", "group"], "the command line: drives tasks, but is not the HTTP front end"),
];

fn allowed(module: &str) -> Option<&'static [&'static str]> {
    RULES
        .iter()
        .find(|(name, _, _)| *name == module)
        .map(|(_, may, _)| *may)
}

/// One reference from code in top-level module `from` to top-level name `to` (`*` for a glob of
/// the crate root), at `line` of `file`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ref {
    file: String,
    line: usize,
    from: String,
    to: String,
}

// ---------------------------------------------------------------------------------------------
// Blanking comments and literals

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `crate::a::b`, `super::x`, `self::y`: a string that is nothing but a path into the crate.
fn is_crate_path(s: &str) -> bool {
    let mut segments = s.split("::");
    matches!(segments.next(), Some("crate" | "super" | "self"))
        && s.contains("::")
        && segments.all(|seg| !seg.is_empty() && seg.chars().all(is_ident_char))
}

/// The source with comments, strings and char literals replaced by spaces (newlines are kept, so
/// line numbers still hold). A string inside an attribute that is exactly a crate path is kept,
/// quotes blanked: `#[serde(with = "crate::x")]` names code.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let push_blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut brackets = 0usize;
    let mut attribute_at: Option<usize> = None; // bracket depth just outside `#[ .. ]`
    let mut attribute_name = String::new(); // `serde` in `#[serde(..)]`
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    push_blank(&mut out, c[i]);
                    i += 1;
                }
            }
            continue;
        }
        // A string: where it opens, where its text starts and ends, and the index after it.
        let mut string: Option<(usize, usize, usize, usize)> = None;
        if ch == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let j = j.min(c.len());
            string = Some((i, i + 1, j, (j + 1).min(c.len())));
        } else if ch == 'r' && (next == Some('"') || next == Some('#')) {
            // A raw string `r"..."`, `r#"..."#` (also after a `b` or `c` prefix), not `r#ident`.
            let prefix_start = match i.checked_sub(1).map(|p| c[p]) {
                Some('b' | 'c') => i - 1,
                _ => i,
            };
            let standalone = prefix_start == 0 || !is_ident_char(c[prefix_start - 1]);
            let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
            if standalone && c.get(i + 1 + hashes) == Some(&'"') {
                let text_start = i + 2 + hashes;
                let mut j = text_start;
                while j < c.len()
                    && !(c[j] == '"'
                        && c[j + 1..].iter().take_while(|&&h| h == '#').count() >= hashes)
                {
                    j += 1;
                }
                string = Some((i, text_start, j, (j + 1 + hashes).min(c.len())));
            }
        }
        if let Some((open, text_start, text_end, after)) = string {
            let text: String = c[text_start..text_end].iter().collect();
            let keep = attribute_at.is_some() && attribute_name != "doc" && is_crate_path(&text);
            for (k, &sc) in c.iter().enumerate().take(after).skip(open) {
                if keep && k >= text_start && k < text_end {
                    out.push(sc);
                } else {
                    push_blank(&mut out, sc);
                }
            }
            i = after;
            continue;
        }
        if ch == '\'' {
            // A char literal (`'x'`, `'"'`, `'\''`, `'\u{1F600}'`), or else a lifetime or label.
            let end = if next == Some('\\') {
                let mut j = i + 3;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                Some(j)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                for &sc in &c[i..(end + 1).min(c.len())] {
                    push_blank(&mut out, sc);
                }
                i = end + 1;
                continue;
            }
        }
        if ch == '[' {
            let before: Vec<char> = out
                .chars()
                .rev()
                .filter(|b| !b.is_whitespace())
                .take(2)
                .collect();
            let opens_attribute = before.first() == Some(&'#')
                || (before.first() == Some(&'!') && before.get(1) == Some(&'#'));
            if opens_attribute && attribute_at.is_none() {
                attribute_at = Some(brackets);
                let rest = c[i + 1..].iter().skip_while(|a| a.is_whitespace());
                attribute_name = rest.take_while(|&&a| is_ident_char(a)).collect();
            }
            brackets += 1;
        } else if ch == ']' {
            brackets = brackets.saturating_sub(1);
            if attribute_at == Some(brackets) {
                attribute_at = None;
            }
        }
        out.push(ch);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tokens and paths

#[derive(Debug)]
struct Tok {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident_char(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            toks.push(Tok {
                text: c[start..i].iter().collect(),
                line,
            });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            toks.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    toks
}

/// The module a file is: `src/a/b.rs` is `a::b`, `src/a/mod.rs` is `a`, `src/lib.rs` the root.
fn module_of(rel: &str) -> Vec<String> {
    let rel = rel.strip_prefix("src/").unwrap_or(rel);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut path: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if matches!(
        path.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        path.pop();
    }
    path
}

/// Every reference in `src` (the text of the file at `rel`, e.g. `src/apply/mod.rs`) to a
/// top-level module, self-references included. Code at the crate root itself (outside every
/// top-level module, so only in `src/lib.rs`) is not attributed to a module and not returned.
fn scan(rel: &str, src: &str) -> Vec<Ref> {
    let toks = tokens(&blank(src));
    let t = |k: usize| toks.get(k).map(|tok| tok.text.as_str()).unwrap_or("");
    let file_module = module_of(rel);
    let mut inline: Vec<(String, usize)> = Vec::new(); // inline `mod x { .. }` and its depth
    let mut depth = 0usize;
    let mut refs = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match t(i) {
            "mod" if t(i + 2) == "{" && t(i + 1).chars().all(is_ident_char) => {
                depth += 1;
                inline.push((t(i + 1).to_owned(), depth));
                i += 3;
                continue;
            }
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        let starts_path = matches!(t(i), "crate" | "super" | "self")
            && t(i + 1) == "::"
            && (i == 0 || t(i - 1) != "::");
        if starts_path {
            let here: Vec<String> = file_module
                .iter()
                .cloned()
                .chain(inline.iter().map(|(m, _)| m.clone()))
                .collect();
            let mut target = match t(i) {
                "crate" => Some(Vec::new()),
                "self" => Some(here.clone()),
                _ => here.split_last().map(|(_, parent)| parent.to_vec()), // super
            };
            let mut j = i + 1; // at a `::`
            while t(j) == "::" && matches!(t(j + 1), "super" | "self") {
                if t(j + 1) == "super" {
                    target = target.and_then(|m| m.split_last().map(|(_, parent)| parent.to_vec()));
                }
                j += 2;
            }
            j += 1; // past the `::`
            let mut names = Vec::new();
            match target {
                None => {} // climbs above the crate root: not valid Rust, rustc reports it
                Some(m) if !m.is_empty() => names.push(m[0].clone()),
                Some(_) if t(j) == "{" => {
                    // `crate::{a, b::c, self}`: the first name of every item of the group.
                    let mut nest = 0;
                    let mut item_start = true;
                    let mut k = j + 1;
                    while k < toks.len() {
                        match t(k) {
                            "{" => nest += 1,
                            "}" if nest == 0 => break,
                            "}" => nest -= 1,
                            "," if nest == 0 => {
                                item_start = true;
                                k += 1;
                                continue;
                            }
                            name if item_start && name != "self" => names.push(name.to_owned()),
                            _ => {}
                        }
                        item_start = false;
                        k += 1;
                    }
                }
                Some(_) if !t(j).is_empty() => names.push(t(j).to_owned()),
                Some(_) => {}
            }
            if let Some(from) = here.first() {
                for to in names {
                    refs.push(Ref {
                        file: rel.to_owned(),
                        line: toks[i].line,
                        from: from.clone(),
                        to,
                    });
                }
            }
        }
        i += 1;
    }
    refs
}

// ---------------------------------------------------------------------------------------------
// The crate on disk

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Every reference in the crate's sources, `src/main.rs` aside.
fn scan_crate() -> Vec<Ref> {
    let root = crate_dir();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut refs = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "src/main.rs" {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
        refs.extend(scan(&rel, &src));
    }
    refs
}

/// The top-level modules that exist: `src/*.rs` and `src/*/` (not `lib.rs`, `main.rs`), and the
/// modules written inline in `src/lib.rs` (`proto`).
fn modules_on_disk() -> BTreeSet<String> {
    let src = crate_dir().join("src");
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            modules.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "lib"
            && stem != "main"
        {
            modules.insert(stem.to_owned());
        }
    }
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("reading src/lib.rs");
    let toks = tokens(&blank(&lib));
    let mut depth = 0;
    for (k, tok) in toks.iter().enumerate() {
        match tok.text.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            "mod" if depth == 0 && toks.get(k + 2).is_some_and(|b| b.text == "{") => {
                modules.insert(toks[k + 1].text.clone());
            }
            _ => {}
        }
    }
    modules
}

/// One line per reference that crosses the layering, as `file:line: a imports crate::b (...)`.
fn violations(refs: &[Ref]) -> Vec<String> {
    let mut lines = BTreeSet::new();
    for r in refs {
        if r.from == r.to {
            continue;
        }
        let line = match allowed(&r.from) {
            Some(may) if may.contains(&r.to.as_str()) => continue,
            Some(may) => {
                let may = if may.is_empty() {
                    "nothing else".to_owned()
                } else {
                    may.join(", ")
                };
                format!(
                    "{}:{}: {} imports crate::{} ({} may import: {})",
                    r.file, r.line, r.from, r.to, r.from, may
                )
            }
            None => format!(
                "{}:{}: {} imports crate::{} ({} has no row in RULES)",
                r.file, r.line, r.from, r.to, r.from
            ),
        };
        lines.insert((r.file.clone(), r.line, line));
    }
    lines.into_iter().map(|(_, _, line)| line).collect()
}

#[test]
fn no_module_imports_across_the_layering() {
    let refs = scan_crate();
    let lines = violations(&refs);
    if lines.is_empty() {
        return;
    }
    let mut by_edge: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut files = BTreeSet::new();
    for r in &refs {
        if r.from != r.to && !allowed(&r.from).is_some_and(|may| may.contains(&r.to.as_str())) {
            *by_edge.entry((r.from.clone(), r.to.clone())).or_default() += 1;
            files.insert(r.file.clone());
        }
    }
    let mut msg = lines.join("\n");
    let edges: Vec<String> = by_edge
        .iter()
        .map(|((a, b), n)| format!("{a} -> {b} ({n})"))
        .collect();
    write!(
        msg,
        "\n\n{} references in {} file(s) cross the layering: {}\n(the rules are RULES at the top of tests/layering.rs)",
        by_edge.values().sum::<usize>(),
        files.len(),
        edges.join(", ")
    )
    .unwrap();
    panic!("{msg}");
}

/// A shortest cycle in the graph `from -> to` of top-level modules, as the modules along it (the
/// first repeated at the end), or `None`.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut best: Option<Vec<String>> = None;
    for start in edges.keys() {
        // Breadth first from `start`, until an edge leads back to it.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start.as_str()]);
        'search: while let Some(node) = queue.pop_front() {
            for next in edges.get(node).into_iter().flatten() {
                if next == start {
                    let mut cycle = vec![start.clone()];
                    let mut at = node;
                    while at != start {
                        cycle.push(at.to_owned());
                        at = parent[at];
                    }
                    cycle.push(start.clone());
                    cycle.reverse();
                    if best.as_ref().is_none_or(|b| cycle.len() < b.len()) {
                        best = Some(cycle);
                    }
                    break 'search;
                }
                if !parent.contains_key(next.as_str()) {
                    parent.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
    }
    best
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let refs = scan_crate();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut first_seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in refs.iter().filter(|r| r.from != r.to) {
        edges
            .entry(r.from.clone())
            .or_default()
            .insert(r.to.clone());
        first_seen
            .entry((r.from.clone(), r.to.clone()))
            .or_insert_with(|| format!("{}:{}", r.file, r.line));
    }
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                format!(
                    "  {} -> {}  (e.g. {})",
                    w[0],
                    w[1],
                    first_seen[&(w[0].clone(), w[1].clone())]
                )
            })
            .collect();
        panic!(
            "the top-level modules import in a cycle: {}\n{}",
            cycle.join(" -> "),
            steps.join("\n")
        );
    }
}

#[test]
fn rules_name_every_module() {
    let on_disk = modules_on_disk();
    let in_rules: BTreeSet<String> = RULES
        .iter()
        .map(|(name, _, _)| (*name).to_owned())
        .collect();
    let mut problems = Vec::new();
    for missing in on_disk.difference(&in_rules) {
        problems.push(format!(
            "module `{missing}` exists under src/ but has no row in RULES"
        ));
    }
    for stale in in_rules.difference(&on_disk) {
        problems.push(format!(
            "RULES has a row for `{stale}`, which is no module under src/"
        ));
    }
    for (name, may, _) in RULES {
        for m in *may {
            if !on_disk.contains(*m) {
                problems.push(format!(
                    "RULES lets `{name}` import `{m}`, which is no module under src/"
                ));
            }
        }
    }
    assert!(
        on_disk.contains("proto"),
        "the inline `proto` module of src/lib.rs was not found"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The scanner on sources written here, so a pass above means what it says.
mod scanner {
    use super::*;

    fn targets(rel: &str, src: &str) -> Vec<(usize, String, String)> {
        scan(rel, src)
            .into_iter()
            .filter(|r| r.from != r.to)
            .map(|r| (r.line, r.from, r.to))
            .collect()
    }

    fn one(line: usize, from: &str, to: &str) -> Vec<(usize, String, String)> {
        vec![(line, from.to_owned(), to.to_owned())]
    }

    #[test]
    fn an_upward_use_is_flagged_with_its_line() {
        let src = "use std::fmt;\nuse crate::task::TaskSpec;\n";
        assert_eq!(targets("src/apply/plan.rs", src), one(2, "apply", "task"));
        let lines = violations(&scan("src/apply/plan.rs", src));
        assert_eq!(
            lines,
            [
                "src/apply/plan.rs:2: apply imports crate::task (apply may import: model, journal, metrics, health, failpoint, proto, milvus_client)"
            ]
        );
    }

    #[test]
    fn comments_and_strings_are_not_imports() {
        let src = r####"
            // crate::task
            /// See [`crate::task::Task`].
            //! crate::task
            /* crate::task /* nested */ crate::task */
            const A: &str = "crate::task::X";
            const B: &str = r#"use crate::task; "# ;
            const C: &[u8] = br##"crate::task"##;
            const D: &str = "escaped \" crate::task \\";
            #[doc = "crate::task::Task"]
            fn f() {}
        "####;
        assert_eq!(targets("src/apply/mod.rs", src), []);
    }

    #[test]
    fn code_after_char_literals_and_lifetimes_is_still_read() {
        let src =
            "fn f<'a>(s: &'a str) -> char { let q = '\"'; let e = '\\''; crate::task::go(); 'x' }";
        assert_eq!(targets("src/apply/mod.rs", src), one(1, "apply", "task"));
    }

    #[test]
    fn grouped_inline_and_macro_paths_are_read() {
        let src = "use crate::{model::Change, task::{A, B}, self};\nlet x = crate::journal::Row { a: 1 };\n$crate::config::load()\n";
        assert_eq!(
            targets("src/model/mod.rs", src),
            [
                (1, "model".into(), "task".into()),
                (2, "model".into(), "journal".into()),
                (3, "model".into(), "config".into())
            ]
        );
    }

    #[test]
    fn super_chains_resolve_from_the_file_and_its_inline_modules() {
        // src/apply/plan/tests.rs is apply::plan::tests: three climbs reach the root.
        let src = "use super::super::Lane;\nuse super::super::super::task::X;\nuse super::super::super::{journal, task};\n";
        assert_eq!(
            targets("src/apply/plan/tests.rs", src),
            [
                (2, "apply".into(), "task".into()),
                (3, "apply".into(), "journal".into()),
                (3, "apply".into(), "task".into())
            ]
        );
        // `super` in an inline test module of a top-level file is that file, not the root.
        let src = "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::task::X;\n}\nuse super::journal::Y;\n";
        assert_eq!(
            targets("src/metrics.rs", src),
            [
                (5, "metrics".into(), "task".into()),
                (7, "metrics".into(), "journal".into())
            ]
        );
    }

    #[test]
    fn inline_modules_of_lib_rs_are_their_own_top_level_module() {
        let src = "pub mod api;\npub mod proto {\n    use crate::task::X;\n    pub mod inner { use super::super::model::Y; }\n}\n";
        assert_eq!(
            targets("src/lib.rs", src),
            [
                (3, "proto".into(), "task".into()),
                (4, "proto".into(), "model".into())
            ]
        );
    }

    #[test]
    fn an_attribute_naming_a_path_is_an_import() {
        let src = "#[derive(Serialize)]\nstruct S {\n    #[serde(with = \"crate::task::as_text\")]\n    t: T,\n}\n";
        assert_eq!(targets("src/model/mod.rs", src), one(3, "model", "task"));
    }

    #[test]
    fn a_module_without_a_row_is_reported() {
        let lines = violations(&scan("src/newstage/mod.rs", "use crate::model::X;"));
        assert_eq!(
            lines,
            ["src/newstage/mod.rs:1: newstage imports crate::model (newstage has no row in RULES)"]
        );
    }

    #[test]
    fn a_shortest_cycle_is_found_and_a_chain_is_not() {
        let graph = |pairs: &[(&str, &str)]| {
            let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                g.entry((*a).into()).or_default().insert((*b).into());
            }
            g
        };
        assert_eq!(
            find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
            None
        );
        assert_eq!(
            find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "b")])),
            Some(vec!["b".into(), "c".into(), "b".into()])
        );
        assert_eq!(
            find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
