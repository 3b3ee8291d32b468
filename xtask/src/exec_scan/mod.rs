//! Finds the external programs that source files run, without running anything: Rust
//! (`Command::new`, command vectors handed to the test helpers, wrappers such as
//! `ip netns exec` and `sh -c`), shell scripts and the Python modules a script imports.
//!
//! It is deliberately over-inclusive: a spawn it cannot name (a program computed at run time)
//! is reported as unresolved, so that the guard in [`crate::programs`] fails until the site
//! names its program with a `// exec: NAME` (or `# exec: NAME`) comment.

mod python;
mod rust;
mod shell;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// One program a file runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// As the source names it: a bare name looked up in PATH, or an absolute path.
    pub program: String,
    /// 1-based line of the file.
    pub line: usize,
}

/// What the scan of one file found.
#[derive(Debug, Default)]
pub struct Found {
    /// Programs it runs.
    pub execs: Vec<Exec>,
    /// Python modules it imports, with their lines.
    pub imports: Vec<Exec>,
    /// Spawn sites whose program cannot be told: line and what was seen.
    pub unresolved: Vec<(usize, String)>,
}

impl Found {
    fn exec(&mut self, program: &str, line: usize) {
        self.execs.push(Exec {
            program: program.to_owned(),
            line,
        });
    }

    fn unresolved(&mut self, line: usize, what: String) {
        self.unresolved.push((line, what));
    }
}

/// What one file of a tree runs.
#[derive(Debug)]
pub struct FileFindings {
    /// Relative to the scanned root.
    pub path: PathBuf,
    /// What was found in it.
    pub found: Found,
}

/// What to scan below a root.
pub struct Scope<'a> {
    /// Folders to scan, relative to the root.
    pub dirs: &'a [&'a str],
    /// Paths below them to leave out.
    pub skip: &'a [&'a str],
    /// Folders whose Rust sources hold configurations that a running lb-agent or keepalived
    /// executes (`notify_up: "..."`): their command lines are scanned too. Elsewhere such
    /// configurations are only parsed.
    pub config_scripts: &'a [&'a str],
}

/// Scans the text of one file, by its extension (`.rs`, `.sh`, `.py`); other files run
/// nothing. `consts` are the `&str` constants of the whole tree, for `Command::new(CONST)`.
fn scan_text(path: &Path, text: &str, consts: &rust::Consts, config_scripts: bool) -> Found {
    let mut found = Found::default();
    match path.extension().and_then(|e| e.to_str()) {
        Some("rs") => rust::scan(text, consts, config_scripts, &mut found),
        Some("sh") => shell::scan(text, 1, &mut found),
        Some("py") => python::scan(text, &mut found),
        _ => {}
    }
    found
}

/// Scans every `.rs`, `.sh` and `.py` file of `scope` below `root` (skipping `target/`), and
/// reports what each runs.
pub fn scan_tree(root: &Path, scope: &Scope) -> Result<Vec<FileFindings>> {
    let mut files = Vec::new();
    for dir in scope
        .dirs
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
    {
        collect(root, &dir, scope.skip, &mut files)?;
    }
    files.sort();
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|rel| {
            let text = std::fs::read_to_string(root.join(&rel))
                .with_context(|| format!("reading {}", rel.display()))?;
            Ok((rel, text))
        })
        .collect::<Result<_>>()?;
    let consts = rust::Consts::collect(
        texts
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "rs"))
            .map(|(_, t)| t.as_str()),
    );
    Ok(texts
        .into_iter()
        .map(|(path, text)| {
            let config_scripts = scope.config_scripts.iter().any(|d| path.starts_with(d));
            FileFindings {
                found: scan_text(&path, &text, &consts, config_scripts),
                path,
            }
        })
        .collect())
}

fn collect(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let shown = rel.to_string_lossy();
        if shown.ends_with("/target") || skip.iter().any(|s| shown == *s) {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, skip, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "sh" | "py")
        ) {
            out.push(rel);
        }
    }
    Ok(())
}
