//! The invariants ARCHITECTURE.md states about lb-userspace, checked on its sources: the layers
//! import only downwards, only `dataplane` touches aya, and the pure layers do no I/O. A change
//! that breaks one fails here with the file and line, before it blurs the design.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The top-level modules from the bottom layer up. A module may use the modules of the layers
/// below its own, never one of its own layer or above.
const LAYERS: &[&[&str]] = &[
    &["model"],
    &["schedule"],
    &["config"],
    &["import"],
    &["control"],
    &["reconcile"],
    &["dataplane", "netlink", "health", "sync"],
    &["observe"],
    &["agent"],
];

/// Layers that do no I/O: what they compute depends on their arguments only.
const PURE: &[&str] = &["model", "schedule", "reconcile", "config"];

/// The one file of a pure layer allowed to read a file: the configuration's bounded reader.
const PURE_EXCEPT: &[&str] = &["config/file.rs"];

/// Words that mean I/O in a pure layer.
const IO_WORDS: &[&str] = &[
    "std::fs",
    "fs::",
    "File::",
    "tokio",
    "TcpStream",
    "UdpSocket",
    "UnixStream",
    "Command::new",
    "stdin()",
    "stdout()",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file (not the binaries), with its path relative to `src/`.
fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                if rel != "bin" {
                    dirs.push(path);
                }
            } else if rel.ends_with(".rs") {
                out.push((rel, fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`reconcile/plan.rs` -> `reconcile`).
fn module_of(rel: &str) -> &str {
    let first = rel.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The layer of a top-level module.
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Whether a file is test code only (unit-test files and fixtures).
fn is_test_file(rel: &str) -> bool {
    rel.ends_with("/tests.rs") || rel.ends_with("/fixtures.rs")
}

/// The lines of a file before its `#[cfg(test)] mod tests`, numbered from 1.
fn non_test_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .take_while(|(_, l)| !l.starts_with("mod tests"))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// The top-level modules a line names through `crate::`, including the first segments of a
/// `use crate::{...}` group, which may span lines: `group` carries the brace depth across
/// lines (0 outside a group).
fn crate_modules(line: &str, group: &mut usize) -> Vec<String> {
    let mut found = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(inner) = after.strip_prefix('{') {
            *group = 1;
            rest = inner;
            break;
        }
        found.push(ident(after));
        rest = after;
    }
    if *group == 0 {
        return found;
    }
    // Inside a group: names that start an item at depth 1.
    let mut at_item_start = true;
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => *group += 1,
            '}' => {
                *group -= 1;
                if *group == 0 {
                    break;
                }
            }
            ',' if *group == 1 => at_item_start = true,
            c if c.is_whitespace() => {}
            _ => {
                if at_item_start && *group == 1 {
                    let name = ident(&rest[i..]);
                    if !name.is_empty() {
                        found.push(name.clone());
                        for _ in 1..name.len() {
                            chars.next();
                        }
                    }
                }
                at_item_start = false;
            }
        }
    }
    found
}

#[test]
fn every_module_has_a_layer() {
    for (rel, _) in sources() {
        let m = module_of(&rel);
        assert!(
            m == "lib" || layer(m).is_some(),
            "src/{rel}: module `{m}` is in no layer; add it to LAYERS here and to \
             ARCHITECTURE.md"
        );
    }
}

#[test]
fn layers_import_only_downwards() {
    let mut wrong = Vec::new();
    for (rel, text) in sources() {
        let m = module_of(&rel);
        let (Some(own), false) = (layer(m), is_test_file(&rel)) else {
            continue;
        };
        let mut group = 0;
        for (no, line) in non_test_lines(&text) {
            for used in crate_modules(line, &mut group) {
                if used == m {
                    continue;
                }
                if let Some(theirs) = layer(&used)
                    && theirs >= own
                {
                    wrong.push(format!(
                        "src/{rel}:{no}: `{m}` uses `{used}`, which is not below it"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn only_the_dataplane_touches_aya() {
    for (rel, text) in sources() {
        if module_of(&rel) == "dataplane" {
            continue;
        }
        for (no, line) in non_test_lines(&text) {
            assert!(
                !line.contains("aya::") && !line.contains("use aya"),
                "src/{rel}:{no}: aya outside dataplane/: {line}"
            );
        }
    }
}

#[test]
fn pure_layers_do_no_io() {
    for (rel, text) in sources() {
        if !PURE.contains(&module_of(&rel)) || PURE_EXCEPT.contains(&rel.as_str()) {
            continue;
        }
        if is_test_file(&rel) {
            continue;
        }
        for (no, line) in non_test_lines(&text) {
            for word in IO_WORDS {
                assert!(
                    !line.contains(word),
                    "src/{rel}:{no}: `{word}` in a layer that does no I/O: {line}"
                );
            }
        }
    }
}

#[test]
fn the_scanner_sees_groups_and_paths() {
    let mut group = 0;
    assert_eq!(
        crate_modules("use crate::model::Limits;", &mut group),
        ["model"]
    );
    assert_eq!(
        crate_modules("use crate::{", &mut group),
        Vec::<String>::new()
    );
    assert_eq!(
        crate_modules("    schedule::load::{self, Counts},", &mut group),
        ["schedule"]
    );
    assert_eq!(
        crate_modules("    model::{A, B}, agent::X", &mut group),
        ["model", "agent"]
    );
    assert_eq!(crate_modules("};", &mut group), Vec::<String>::new());
    assert_eq!(group, 0);
    assert_eq!(
        crate_modules("let x = crate::observe::snapshot::which(v);", &mut group),
        ["observe"]
    );
}
