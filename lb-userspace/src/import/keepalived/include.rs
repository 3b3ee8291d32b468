//! keepalived's `include`: its glob (with csh braces, as glibc's `GLOB_BRACE`), its checks on
//! what matched, and its `include_check` flags.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

/// Error if a match is a directory, not a regular non-executable file, or unreadable.
pub(super) const READ: u8 = 0x01;
/// Error if nothing matches, unless the pattern has a wildcard.
pub(super) const MATCH: u8 = 0x02;
/// Error if nothing matches, even with a wildcard.
pub(super) const WILDCARD: u8 = 0x04;
/// Error if a brace alternative matches nothing.
pub(super) const BRACE: u8 = 0x08;
/// Every check (`include_check` without options, or keepalived's `--all-config`).
pub(super) const ALL: u8 = READ | MATCH | WILDCARD | BRACE;

/// An `include` line: its checks and its pattern (`None`: not an include line).
pub(super) fn include_line(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix("include")?;
    let b = rest.as_bytes();
    let (flags, pattern) = match b.first()? {
        c if c.is_ascii_whitespace() || *c == 0x0b => (0, &rest[1..]),
        c @ (b'r' | b'm' | b'w' | b'b' | b'a')
            if b.get(1)
                .is_some_and(|c| c.is_ascii_whitespace() || *c == 0x0b) =>
        {
            let flags = match c {
                b'r' => READ,
                b'm' => READ | MATCH,
                b'w' => READ | MATCH | WILDCARD,
                b'b' => READ | BRACE,
                _ => ALL,
            };
            (flags, &rest[2..])
        }
        _ => return None,
    };
    Some((flags, pattern.trim_start_matches([' ', '\t'])))
}

/// `include_check` (in `global_defs`): the new checks from the current ones, and what was
/// ignored in its words.
pub(super) fn include_check(current: u8, words: &[String]) -> (u8, Vec<String>) {
    let mut notes = Vec::new();
    if words.len() < 2 {
        return (ALL, notes);
    }
    let mut check = current;
    for (i, word) in words.iter().enumerate().skip(1) {
        let (mode, name) = match word.as_bytes().first() {
            Some(b'-') => (-1, &word[1..]),
            Some(b'+') => (1, &word[1..]),
            _ if i == 1 => {
                check = 0;
                (0, word.as_str())
            }
            _ => {
                notes.push(format!("include_check {word}: a second setting is ignored"));
                continue;
            }
        };
        let flag = match name {
            "read" => READ,
            "match" => MATCH,
            "wildcard_match" => WILDCARD,
            "brace_match" => BRACE,
            _ => {
                notes.push(format!("include_check {name}: unknown check, ignored"));
                continue;
            }
        };
        match mode {
            0 => check = READ | flag,
            1 => check |= flag,
            _ => check &= !flag,
        }
    }
    (check, notes)
}

/// What a glob found.
#[derive(Debug, Default)]
pub(super) struct Glob {
    /// The matches, in glob's order (each brace alternative sorted, alternatives in order);
    /// directories end with `/`.
    pub(super) paths: Vec<PathBuf>,
    /// A directory to search, or a file named without wildcards, did not exist.
    pub(super) missing: bool,
    /// A directory was searched for a wildcard.
    pub(super) wildcards: bool,
    /// The pattern has a `{` (unescaped).
    pub(super) brace: bool,
}

/// glob(3) of `pattern` with `GLOB_MARK | GLOB_BRACE`, relative patterns under `dir`.
pub(super) fn glob(pattern: &str, dir: &Path) -> Glob {
    let mut g = Glob {
        brace: has_brace(pattern),
        ..Glob::default()
    };
    for alternative in braces(pattern) {
        let mut found = Vec::new();
        let (start, rest) = match alternative.strip_prefix('/') {
            Some(rest) => (PathBuf::from("/"), rest.to_owned()),
            None => (dir.to_path_buf(), alternative.clone()),
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        walk(&start, &parts, &mut g, &mut found);
        found.sort();
        g.paths.extend(found);
    }
    g
}

fn has_brace(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '{' => return true,
            _ => {}
        }
    }
    false
}

/// csh brace expansion: `a{b,c{d,e}}f` is `abf acdf acef`; an unbalanced brace is literal.
fn braces(pattern: &str) -> Vec<String> {
    let b = pattern.as_bytes();
    let mut i = 0;
    let mut open = None;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'{' => {
                open = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let Some(open) = open else {
        return vec![pattern.to_owned()];
    };
    // The matching `}` and the top-level commas between.
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    let mut j = open + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 1,
            b'{' => depth += 1,
            b'}' if depth == 0 => {
                close = Some(j);
                break;
            }
            b'}' => depth -= 1,
            b',' if depth == 0 => commas.push(j),
            _ => {}
        }
        j += 1;
    }
    let Some(close) = close else {
        return vec![pattern.to_owned()];
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let alternative = format!("{head}{}{tail}", &pattern[w[0] + 1..w[1]]);
        out.extend(braces(&alternative));
    }
    out
}

fn is_magic(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

fn unescape(part: &str) -> String {
    let mut out = String::new();
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn walk(base: &Path, parts: &[&str], g: &mut Glob, found: &mut Vec<PathBuf>) {
    let Some((part, rest)) = parts.split_first() else {
        let mut path = base.as_os_str().to_owned();
        if base.is_dir() {
            path.push("/");
        }
        found.push(PathBuf::from(path));
        return;
    };
    if !is_magic(part) {
        let next = base.join(unescape(part));
        if fs::symlink_metadata(&next).is_err() {
            g.missing = true;
            return;
        }
        walk(&next, rest, g, found);
        return;
    }
    g.wildcards = true;
    let here = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let Ok(entries) = fs::read_dir(here) else {
        g.missing = true;
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') || part.starts_with('.'))
        .filter(|n| matches(part.as_bytes(), n.as_bytes()))
        .collect();
    names.sort();
    for name in names {
        let next = base.join(&name);
        if !rest.is_empty() && !next.is_dir() {
            continue;
        }
        walk(&next, rest, g, found);
    }
}

/// fnmatch(3) of one path component: `*`, `?`, `[...]` (with `!`/`^` and ranges), `\`.
pub(super) fn matches(p: &[u8], s: &[u8]) -> bool {
    let Some((&c, rest)) = p.split_first() else {
        return s.is_empty();
    };
    match c {
        b'*' => (0..=s.len()).any(|i| matches(rest, &s[i..])),
        b'?' => !s.is_empty() && matches(rest, &s[1..]),
        b'[' => {
            let Some((&first, tail)) = s.split_first() else {
                return false;
            };
            let mut i = 0;
            let negate = matches!(rest.first(), Some(b'!' | b'^'));
            if negate {
                i += 1;
            }
            let mut hit = false;
            let mut first_in_set = true;
            loop {
                let Some(&m) = rest.get(i) else {
                    // No `]`: the `[` is literal.
                    return first == b'[' && matches(rest, tail);
                };
                if m == b']' && !first_in_set {
                    break;
                }
                first_in_set = false;
                if rest.get(i + 1) == Some(&b'-') && rest.get(i + 2).is_some_and(|&e| e != b']') {
                    if (m..=rest[i + 2]).contains(&first) {
                        hit = true;
                    }
                    i += 3;
                } else {
                    hit |= m == first;
                    i += 1;
                }
            }
            hit != negate && matches(&rest[i + 1..], tail)
        }
        b'\\' if !rest.is_empty() => s.first() == Some(&rest[0]) && matches(&rest[1..], &s[1..]),
        c => s.first() == Some(&c) && matches(rest, &s[1..]),
    }
}

/// keepalived's check of a match: a directory, or not a regular non-executable file, is
/// skipped (and is an error under [`READ`]).
pub(super) fn check_file(path: &Path) -> Result<(), String> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err("is a directory - skipping".to_owned());
    }
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 == 0 => Ok(()),
        _ => Err("is not a regular non-executable file - skipping".to_owned()),
    }
}
