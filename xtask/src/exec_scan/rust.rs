//! The external programs Rust source runs. Recognised spawn sites:
//!
//! - `Command::new(P)` with its chained `.arg(..)` / `.args([..])` calls;
//! - a literal command vector handed to `.exec(..)`, `.spawn(..)` or `.command(..)` (the
//!   namespace helpers of `tests/src/netns.rs`: `ip netns exec NS ...`);
//! - a command vector built in a variable: `let X = [..]` or `X.extend([..])`, where `X` is
//!   handed to one of those helpers in the same file or is named `cmd`, `argv` or `*_cmd`
//!   (the convention for a vector handed on to another function).
//!
//! - a command line that the agent or keepalived will run: the value of a configuration key
//!   ([`SCRIPT_KEYS`]: `notify_up`, `misc_path`, ...) as a struct field or inside a YAML
//!   string, scanned as shell.
//!
//! `P` may be a string literal, a `&str` constant of the tree, `env!("CARGO")`,
//! `env!("CARGO_BIN_EXE_x")` or `bin("x")` (this workspace's binaries). Inside a vector,
//! wrappers are followed to the program they run: `ip netns exec NS`, `env`, `nsenter`,
//! `setpriv`, `unshare`, `timeout`, `nohup`, and `sh -c SCRIPT` (the script is scanned as
//! shell, also when it is a `format!` string or a `let` binding of one). A site whose program
//! is computed at run time is reported unresolved unless a `// exec: NAME` comment on its line
//! or one of the two lines above names the program.

use std::collections::HashMap;

use super::{Found, shell};

/// The `&str` constants of a tree: `const NAME: &str = "value"`.
#[derive(Debug, Default)]
pub struct Consts(HashMap<String, String>);

impl Consts {
    /// Collects the constants of every source text.
    pub fn collect<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut map = HashMap::new();
        for text in texts {
            let (toks, _) = lex(text);
            for i in 0..toks.len() {
                if let Some((name, value)) = str_const(&toks[i..]) {
                    map.entry(name).or_insert(value);
                }
            }
        }
        Consts(map)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum T {
    Str(String),
    Ident(String),
    Punct(char),
}

#[derive(Debug, Clone)]
struct Tok {
    t: T,
    line: usize,
}

/// One element of a command vector.
#[derive(Debug, Clone, PartialEq)]
enum Elem {
    /// A literal string (or a constant's value).
    Lit(String),
    /// The text of a `format!` string, or of a `let` binding of one (for `sh -c`).
    Fmt(String),
    /// A binary of this workspace.
    Project(String),
    /// Something computed at run time: the tokens as text.
    Other(String),
}

/// Scans one Rust file; `config_scripts`: also the command lines of configuration keys (in
/// files whose configurations a running agent or keepalived executes).
pub fn scan(text: &str, consts: &Consts, config_scripts: bool, found: &mut Found) {
    let (toks, markers) = lex(text);
    let bindings = string_bindings(&toks);
    let vectors = command_vectors(&toks);
    let ctx = Ctx {
        toks: &toks,
        consts,
        bindings: &bindings,
        vectors: &vectors,
        markers: &markers,
    };
    let mut i = 0;
    while i < toks.len() {
        i = ctx.site(i, found).unwrap_or(i + 1);
    }
    if !config_scripts {
        return;
    }
    for (k, tok) in toks.iter().enumerate() {
        match &tok.t {
            T::Ident(key) if SCRIPT_KEYS.contains(&key.as_str()) && ctx.punct(k + 1, ':') => {
                if let (Elem::Lit(script) | Elem::Fmt(script), _) = ctx.elem(k + 2) {
                    ctx.script(&script, tok.line, found);
                }
            }
            T::Str(text) => {
                // Lines are the literal's: its text may hold `\n` escapes.
                for script in yaml_scripts(text) {
                    ctx.script(&script, tok.line, found);
                }
            }
            _ => {}
        }
    }
}

/// Configuration keys whose value is a command line that lb-agent or keepalived runs.
const SCRIPT_KEYS: &[&str] = &[
    "notify_up",
    "notify_down",
    "quorum_up",
    "quorum_down",
    "misc_path",
    "track_script",
];

/// The values of [`SCRIPT_KEYS`] in YAML text (`key: "value"`, `key: 'value'`, `key: value`).
fn yaml_scripts(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        for key in SCRIPT_KEYS {
            let mut rest = line;
            while let Some(at) = rest.find(key) {
                let after = rest[at + key.len()..].trim_start();
                rest = &rest[at + key.len()..];
                let Some(value) = after.strip_prefix(':') else {
                    continue;
                };
                let value = value.trim_start();
                let script = match value.chars().next() {
                    Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
                    _ => value.split([',', '}', '#']).next().unwrap_or("").trim_end(),
                };
                if !script.is_empty() {
                    out.push(script.to_owned());
                }
            }
        }
    }
    out
}

struct Ctx<'a> {
    toks: &'a [Tok],
    consts: &'a Consts,
    bindings: &'a HashMap<String, String>,
    vectors: &'a [String],
    markers: &'a HashMap<usize, Vec<String>>,
}

impl Ctx<'_> {
    fn ident(&self, i: usize, name: &str) -> bool {
        matches!(self.toks.get(i), Some(Tok { t: T::Ident(s), .. }) if s == name)
    }

    fn punct(&self, i: usize, c: char) -> bool {
        matches!(self.toks.get(i), Some(Tok { t: T::Punct(p), .. }) if *p == c)
    }

    fn line(&self, i: usize) -> usize {
        self.toks.get(i).map_or(0, |t| t.line)
    }

    /// The program a `// exec: NAME` comment names for a site on `line`.
    fn marker(&self, line: usize) -> Option<&Vec<String>> {
        (0..=2)
            .filter_map(|d| line.checked_sub(d))
            .find_map(|l| self.markers.get(&l))
    }

    /// If a spawn site starts at `i`, records it and returns where scanning goes on.
    fn site(&self, i: usize, found: &mut Found) -> Option<usize> {
        // Command::new(P) and its .arg/.args chain.
        if self.ident(i, "Command")
            && self.punct(i + 1, ':')
            && self.punct(i + 2, ':')
            && self.ident(i + 3, "new")
            && self.punct(i + 4, '(')
        {
            let (program, end) = self.elem(i + 5);
            let mut vector = vec![program];
            let mut j = end + 1; // past ')'
            while self.punct(j, '.') && self.punct(j + 2, '(') {
                let method = match &self.toks[j + 1].t {
                    T::Ident(m) => m.clone(),
                    _ => break,
                };
                let close = self.matching(j + 2);
                match method.as_str() {
                    "arg" => vector.push(self.elem(j + 3).0),
                    "args" => match self.list_at(j + 3) {
                        Some((elems, _)) => vector.extend(elems),
                        None => vector.push(Elem::Other("args".into())),
                    },
                    _ => {}
                }
                j = close + 1;
            }
            self.expand(&vector, self.line(i), true, found);
            return Some(end + 1);
        }
        // .exec([..]), .spawn([..]), .command([..])
        if self.punct(i, '.')
            && SPAWNERS.iter().any(|m| self.ident(i + 1, m))
            && self.punct(i + 2, '(')
        {
            let (elems, end) = self.list_at(i + 3)?;
            self.expand(&elems, self.line(i + 1), true, found);
            return Some(end);
        }
        // X.extend([..]) of a command vector X
        if let T::Ident(x) = &self.toks[i].t
            && self.vectors.contains(x)
            && self.punct(i + 1, '.')
            && self.ident(i + 2, "extend")
            && self.punct(i + 3, '(')
        {
            let (elems, end) = self.list_at(i + 4)?;
            self.expand(&elems, self.line(i), false, found);
            return Some(end);
        }
        // let X = ["program", ...] of a command vector X
        if self.ident(i, "let") {
            let mut name = i + 1;
            if self.ident(name, "mut") {
                name += 1;
            }
            let T::Ident(x) = &self.toks.get(name)?.t else {
                return None;
            };
            let mut j = name + 1;
            while j < self.toks.len() && !self.punct(j, '=') && !self.punct(j, ';') {
                j += 1;
            }
            if self.vectors.contains(x)
                && self.punct(j, '=')
                && let Some((elems, end)) = self.list_at(j + 1)
            {
                self.expand(&elems, self.line(i), false, found);
                return Some(end);
            }
        }
        None
    }

    /// Records the programs of a command line that a configuration hands to a shell; a
    /// `// exec: NAME` comment names the program of one computed at run time.
    fn script(&self, script: &str, line: usize, found: &mut Found) {
        let mut own = Found::default();
        shell::scan(&placeholders_as_variables(script), line, &mut own);
        match self.marker(line) {
            Some(names) if !own.unresolved.is_empty() => {
                names.iter().for_each(|n| found.exec(n, line));
            }
            _ => found.unresolved.append(&mut own.unresolved),
        }
        found.execs.append(&mut own.execs);
    }

    /// The index of the bracket closing the one at `open`.
    fn matching(&self, open: usize) -> usize {
        let mut depth = 0i32;
        for (k, tok) in self.toks.iter().enumerate().skip(open) {
            match tok.t {
                T::Punct('(' | '[' | '{') => depth += 1,
                T::Punct(')' | ']' | '}') => {
                    depth -= 1;
                    if depth == 0 {
                        return k;
                    }
                }
                _ => {}
            }
        }
        self.toks.len()
    }

    /// A literal list at `i` (`[..]`, `&[..]`, `vec![..]`, `&vec![..]`): its elements and
    /// the index after it.
    fn list_at(&self, mut i: usize) -> Option<(Vec<Elem>, usize)> {
        while self.punct(i, '&') {
            i += 1;
        }
        if self.ident(i, "vec") && self.punct(i + 1, '!') {
            i += 2;
        }
        if !self.punct(i, '[') {
            return None;
        }
        let close = self.matching(i);
        let mut elems = Vec::new();
        let mut j = i + 1;
        while j < close {
            let (elem, end) = self.elem(j);
            elems.push(elem);
            j = end + 1;
        }
        Some((elems, close + 1))
    }

    /// The expression starting at `i`, up to a top-level `,` or the closing bracket: what it
    /// is, and the index of the token that ends it.
    fn elem(&self, i: usize) -> (Elem, usize) {
        let mut end = i;
        let mut depth = 0i32;
        while end < self.toks.len() {
            match self.toks[end].t {
                T::Punct('(' | '[' | '{') => depth += 1,
                T::Punct(')' | ']' | '}') if depth == 0 => break,
                T::Punct(')' | ']' | '}') => depth -= 1,
                T::Punct(',') if depth == 0 => break,
                _ => {}
            }
            end += 1;
        }
        let mut toks = &self.toks[i..end];
        while let [
            Tok {
                t: T::Punct('&'), ..
            },
            rest @ ..,
        ] = toks
        {
            toks = rest;
        }
        let ts: Vec<&T> = toks.iter().map(|t| &t.t).collect();
        let elem = match ts.as_slice() {
            [T::Str(s), ..] => Elem::Lit(s.clone()),
            [T::Ident(m), T::Punct('!'), T::Punct('('), T::Str(s), ..] if m == "format" => {
                Elem::Fmt(s.clone())
            }
            [T::Ident(m), T::Punct('!'), T::Punct('('), T::Str(s), ..] if m == "env" => {
                match s.strip_prefix("CARGO_BIN_EXE_") {
                    Some(bin) => Elem::Project(bin.to_owned()),
                    None if s == "CARGO" => Elem::Lit("cargo".into()),
                    None => Elem::Other(format!("env!({s:?})")),
                }
            }
            [T::Ident(f), T::Punct('('), T::Str(s), T::Punct(')')] if f == "bin" => {
                Elem::Project(s.clone())
            }
            [T::Ident(name), rest @ ..] => {
                let plain = rest.is_empty()
                    || matches!(rest, [T::Punct('.'), T::Ident(m), ..] if m == "as_str" || m == "as_ref");
                match (self.consts.0.get(name), self.bindings.get(name)) {
                    (Some(value), _) if plain => Elem::Lit(value.clone()),
                    (None, Some(text)) if plain => Elem::Fmt(text.clone()),
                    _ => Elem::Other(describe(toks)),
                }
            }
            _ => Elem::Other(describe(toks)),
        };
        (elem, end)
    }

    /// Records the program of a command vector and of the wrappers in it. `strict`: a
    /// first element that cannot be named is an unresolved site.
    fn expand(&self, elems: &[Elem], line: usize, strict: bool, found: &mut Found) {
        let Some(first) = elems.first() else { return };
        let program = match first {
            Elem::Lit(p) => p.clone(),
            Elem::Project(p) => {
                found.exec(p, line);
                return;
            }
            Elem::Fmt(t) | Elem::Other(t) => {
                match self.marker(line) {
                    Some(names) => names.iter().for_each(|n| found.exec(n, line)),
                    None if strict => {
                        found.unresolved(line, format!("a program computed at run time: {t}"));
                    }
                    None => {}
                }
                return;
            }
        };
        found.exec(&program, line);
        let rest = &elems[1..];
        let base = program.rsplit('/').next().unwrap_or(&program);
        let lit = |k: usize| match rest.get(k) {
            Some(Elem::Lit(s)) => Some(s.as_str()),
            _ => None,
        };
        match base {
            "ip" if lit(0) == Some("netns") && lit(1) == Some("exec") && rest.len() > 3 => {
                self.expand(&rest[3..], line, false, found);
            }
            // `rustup run TOOLCHAIN PROGRAM ...`
            "rustup" if lit(0) == Some("run") && rest.len() > 2 => {
                self.expand(&rest[2..], line, false, found);
            }
            "sh" | "bash" | "dash" if lit(0) == Some("-c") => {
                if let Some(Elem::Lit(script) | Elem::Fmt(script)) = rest.get(1) {
                    shell::scan(&placeholders_as_variables(script), line, found);
                }
            }
            _ if shell::is_wrapper(base) => {
                // A workspace binary is a program, whatever the wrapper's syntax.
                let words: Vec<Option<&str>> = rest
                    .iter()
                    .map_while(|e| match e {
                        Elem::Lit(s) => Some(Some(s.as_str())),
                        Elem::Fmt(_) | Elem::Other(_) => Some(None),
                        Elem::Project(_) => None,
                    })
                    .collect();
                let k = shell::wrapped_program(base, &words).unwrap_or(words.len());
                if k < rest.len() {
                    self.expand(&rest[k..], line, false, found);
                }
            }
            _ => {}
        }
    }
}

/// Methods that take a command vector (the namespace helpers).
const SPAWNERS: &[&str] = &["exec", "spawn", "command"];

/// The variables of a file that hold command vectors: handed to a [`SPAWNERS`] method, or
/// named `cmd`, `argv` or `*_cmd`.
fn command_vectors(toks: &[Tok]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, tok) in toks.iter().enumerate() {
        let T::Ident(x) = &tok.t else { continue };
        let named = x == "cmd" || x == "argv" || x.ends_with("_cmd");
        // `.exec(X)`, `.spawn(&X)`, `.command(&&X)`: back over the `&`s to the `(`.
        let open = toks[..k]
            .iter()
            .rposition(|t| t.t != T::Punct('&'))
            .filter(|&o| toks[o].t == T::Punct('('));
        let handed = open.is_some_and(|o| {
            o >= 2
                && toks[o - 2].t == T::Punct('.')
                && matches!(&toks[o - 1].t, T::Ident(m) if SPAWNERS.contains(&m.as_str()))
        });
        if (named || handed) && !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// `{name}` placeholders of a `format!` string become shell variables (computed at run time);
/// `{{` and `}}` are literal braces.
fn placeholders_as_variables(fmt: &str) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                out.push_str("$FMT");
            }
            c => out.push(c),
        }
    }
    out
}

fn describe(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match &t.t {
            T::Str(s) => format!("{s:?}"),
            T::Ident(s) => s.clone(),
            T::Punct(c) => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join("")
}

/// `const NAME: &str = "value"` (or `&'static str`) at the start of `toks`.
fn str_const(toks: &[Tok]) -> Option<(String, String)> {
    let ts: Vec<&T> = toks.iter().take(8).map(|t| &t.t).collect();
    match ts.as_slice() {
        [
            T::Ident(k),
            T::Ident(name),
            T::Punct(':'),
            T::Punct('&'),
            T::Ident(s),
            T::Punct('='),
            T::Str(v),
            ..,
        ] if k == "const" && s == "str" => Some((name.clone(), v.clone())),
        [
            T::Ident(k),
            T::Ident(name),
            T::Punct(':'),
            T::Punct('&'),
            T::Ident(st),
            T::Ident(s),
            T::Punct('='),
            T::Str(v),
        ] if k == "const" && st == "static" && s == "str" => Some((name.clone(), v.clone())),
        _ => None,
    }
}

/// `let NAME = format!("..")` and `let NAME = ".."` bindings of a file: name -> text.
fn string_bindings(toks: &[Tok]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for w in toks.windows(7) {
        let ts: Vec<&T> = w.iter().map(|t| &t.t).collect();
        match ts.as_slice() {
            [
                T::Ident(l),
                T::Ident(n),
                T::Punct('='),
                T::Ident(f),
                T::Punct('!'),
                T::Punct('('),
                T::Str(s),
            ] if l == "let" && f == "format" => {
                map.entry(n.clone()).or_insert_with(|| s.clone());
            }
            [T::Ident(l), T::Ident(n), T::Punct('='), T::Str(s), ..] if l == "let" => {
                map.entry(n.clone()).or_insert_with(|| s.clone());
            }
            _ => {}
        }
    }
    map
}

/// Splits Rust source into string literals, identifiers (and numbers) and punctuation,
/// dropping comments; `// exec: NAME` comments are returned by line.
fn lex(text: &str) -> (Vec<Tok>, HashMap<usize, Vec<String>>) {
    let c: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut markers = HashMap::new();
    let mut line = 1;
    let mut i = 0;
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            let end = c[i..]
                .iter()
                .position(|&x| x == '\n')
                .map_or(c.len(), |p| i + p);
            let comment: String = c[i + 2..end].iter().collect();
            let comment = comment.trim_start_matches('/').trim();
            // `// exec: a b (why)`: the names up to the explanation.
            if let Some(names) = comment.strip_prefix("exec:") {
                let names: Vec<String> = names
                    .split_whitespace()
                    .take_while(|w| !w.starts_with('('))
                    .map(str::to_owned)
                    .collect();
                markers.insert(line, names);
            }
            i = end;
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let start_line = line;
            let (s, end) = string(&c, i + 1, &mut line);
            toks.push(Tok {
                t: T::Str(s),
                line: start_line,
            });
            i = end;
        } else if (ch == 'r' || (ch == 'b' && at(i + 1) == 'r'))
            && matches!(at(i + 1 + usize::from(ch == 'b')), '"' | '#')
            && (i == 0 || !is_ident(c[i - 1]))
        {
            // Raw string: r"..", r#".."#, br"..".
            let mut j = i + 1 + usize::from(ch == 'b');
            let hashes = c[j..].iter().take_while(|&&x| x == '#').count();
            j += hashes;
            if at(j) != '"' {
                // r#ident (a raw identifier)
                i = j;
                continue;
            }
            j += 1;
            let start_line = line;
            let mut s = String::new();
            while j < c.len() {
                if c[j] == '"'
                    && c[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&x| x == '#')
                        .count()
                        == hashes
                {
                    break;
                }
                if c[j] == '\n' {
                    line += 1;
                }
                s.push(c[j]);
                j += 1;
            }
            toks.push(Tok {
                t: T::Str(s),
                line: start_line,
            });
            i = j + 1 + hashes;
        } else if ch == 'b' && at(i + 1) == '"' && (i == 0 || !is_ident(c[i - 1])) {
            let start_line = line;
            let (s, end) = string(&c, i + 2, &mut line);
            toks.push(Tok {
                t: T::Str(s),
                line: start_line,
            });
            i = end;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if is_ident(ch) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            toks.push(Tok {
                t: T::Ident(c[start..i].iter().collect()),
                line,
            });
        } else {
            toks.push(Tok {
                t: T::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    (toks, markers)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A string literal's value from `start` (after the quote): the text and the index after
/// the closing quote.
fn string(c: &[char], start: usize, line: &mut usize) -> (String, usize) {
    let mut s = String::new();
    let mut i = start;
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
            match c.get(i) {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('0') => s.push('\0'),
                Some('\n') => {
                    // A continuation: the newline and the next line's indentation vanish.
                    *line += 1;
                    while i + 1 < c.len() && c[i + 1].is_whitespace() {
                        if c[i + 1] == '\n' {
                            *line += 1;
                        }
                        i += 1;
                    }
                }
                Some('x') => {
                    let hex: String = c[i + 1..(i + 3).min(c.len())].iter().collect();
                    s.push(u8::from_str_radix(&hex, 16).map_or('?', char::from));
                    i += 2;
                }
                Some('u') => {
                    let end = c[i..].iter().position(|&x| x == '}').map_or(i, |p| i + p);
                    let hex: String = c[i + 2..end].iter().collect();
                    s.push(
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('?'),
                    );
                    i = end;
                }
                Some(&other) => s.push(other),
                None => {}
            }
            i += 1;
        } else {
            if c[i] == '\n' {
                *line += 1;
            }
            s.push(c[i]);
            i += 1;
        }
    }
    (s, i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_src(src: &str) -> Found {
        let consts = Consts::collect([src]);
        let mut found = Found::default();
        scan(src, &consts, true, &mut found);
        found
    }

    fn programs(src: &str) -> Vec<(String, usize)> {
        let found = scan_src(src);
        assert!(found.unresolved.is_empty(), "{:?}", found.unresolved);
        found
            .execs
            .into_iter()
            .map(|e| (e.program, e.line))
            .collect()
    }

    fn names(src: &str) -> Vec<String> {
        programs(src).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn command_new_with_literals_constants_and_workspace_binaries() {
        let src = r#"
const PY: &str = "/usr/bin/python3";
fn f() {
    Command::new("tcpdump").arg("-n");
    std::process::Command::new(PY).args(["-c", "import pika"]);
    Command::new(env!("CARGO")).args(["build"]);
    Command::new(env!("CARGO_BIN_EXE_lb-demo"));
    Command::new(bin("lbadm")).args(&["-L"]);
}
"#;
        assert_eq!(
            programs(src),
            [
                ("tcpdump".into(), 4),
                ("/usr/bin/python3".into(), 5),
                ("cargo".into(), 6),
                ("lb-demo".into(), 7),
                ("lbadm".into(), 8)
            ]
        );
    }

    #[test]
    fn namespace_helper_vectors_over_several_lines() {
        let src = r#"
fn f(ns: &Netns) {
    ns.exec(&["ethtool", "-K", dev, "tx", "off"])?;
    let child = ns
        .command(&[
            "haproxy".as_ref(),
            "-f".as_ref(),
        ])
        .spawn();
    ns.spawn(&[EPMD, "-d"]);
}
const EPMD: &str = "/usr/bin/epmd";
"#;
        assert_eq!(
            programs(src),
            [
                ("ethtool".into(), 3),
                ("haproxy".into(), 5),
                ("/usr/bin/epmd".into(), 10)
            ]
        );
    }

    #[test]
    fn wrappers_are_followed_to_the_program_they_run() {
        let src = r#"
fn f() {
    Command::new("ip").args(["netns", "exec", &name, "tcpdump", "-n"]);
    Command::new("nsenter").arg(format!("--net={p}")).arg(bin("lb-agent")).arg("--config");
    cmd.extend(["env", &env, "sh", &script]);
    let nobody_cmd = ["setpriv", "--reuid=65534", "--clear-groups"];
    let args = vec!["route", "add"];
    args.extend(["via", gw]);
    let wrapped = vec!["tcpdump", "-n"];
    ns.spawn(&wrapped);
    ns.command(&["unshare", "--mount", "--propagation", "private", "sh", "-c", &hide]);
    ns.exec(&["bash", "-c", "echo hi > /dev/udp/10.0.0.1/9 && curl -s x"]);
    ns.exec(&["timeout", "5", "env", "A=1", "socat", "-"]);
    Command::new("rustup").args(["run", "nightly", "cargo-fuzz", "fuzz", "run"]);
    Command::new("flock").arg("--no-fork").arg(&dir).args(["sleep", "60"]);
}
"#;
        let hide = "let hide = format!(\"mount --bind /dev/null \\\"$(readlink -f \\\"$(command -v ip)\\\")\\\" && exec sh {script} status\");\n";
        let src = format!("{hide}{src}");
        assert_eq!(
            names(&src),
            [
                "ip",
                "tcpdump",
                "nsenter",
                "lb-agent",
                "env",
                "sh",
                "setpriv",
                "tcpdump",
                "unshare",
                "sh",
                "ip",
                "readlink",
                "mount",
                "sh",
                "bash",
                "curl",
                "timeout",
                "env",
                "socat",
                "rustup",
                "cargo-fuzz",
                "flock",
                "sleep"
            ]
        );
    }

    #[test]
    fn strings_comments_and_other_arrays_run_nothing() {
        let src = r#"
// Command::new("commented-out")
/* ns.exec(&["in-a-block"]) */
fn f() {
    let text = "Command::new(\"inside-a-string\")";
    let names = ["-L", "-n"];
    let schedulers = ["rr", "wrr"];
    let a = b'"'; let c = '\'';
    agent.lbadm_ok(&["-A", "-t", "10.0.0.1:80"]);
    bytes.extend([0, 0, 0]);
    Command::new("ip").args(["link"]);
}
"#;
        assert_eq!(names(src), ["ip"]);
    }

    #[test]
    fn command_lines_of_configuration_keys() {
        let src = r#"
fn f() {
    let yaml = format!("    quorum_down: \"touch {d}/down\"\n    notify_up: 'logger up'\n    misc_path: nc -z x\n");
    let node = Node {
        track_script: format!("pgrep keepalived"),
    };
    let k = "keepalived: notify_up \"not yaml\"";
}
"#;
        assert_eq!(
            programs(src),
            [
                ("touch".into(), 3),
                ("logger".into(), 3),
                ("nc".into(), 3),
                ("pgrep".into(), 5)
            ]
        );
        let marked =
            "fn f() {\n    // exec: lbadm\n    track_script: format!(\"{} -L\", lbadm),\n}\n";
        assert_eq!(programs(marked), [("lbadm".into(), 3)]);
    }

    #[test]
    fn a_program_computed_at_run_time_needs_a_marker() {
        let src =
            "fn f() {\n    Command::new(&bin).arg(\"x\");\n    ns.exec(&[prog.as_str()]);\n}\n";
        let found = scan_src(src);
        let lines: Vec<usize> = found.unresolved.iter().map(|u| u.0).collect();
        assert_eq!(lines, [2, 3]);
        assert!(found.execs.is_empty());

        let marked = "fn f() {\n    // exec: lb-bench (built by this workspace)\n    Command::new(&bin);\n}\n";
        assert_eq!(programs(marked), [("lb-bench".into(), 3)]);
        let several = "fn f() {\n    // exec: sh readlink (what callers pass)\n    Command::new(program)\n}\n";
        assert_eq!(
            programs(several),
            [("sh".into(), 3), ("readlink".into(), 3)]
        );
    }

    #[test]
    fn raw_and_escaped_strings_keep_lines() {
        let src = "const A: &str = r#\"a\n\"b\"\n\"#;\nconst B: &str = \"x\\\n    y\";\nfn f() { Command::new(\"z\"); }\n";
        let consts = Consts::collect([src]);
        assert_eq!(consts.0["A"], "a\n\"b\"\n");
        assert_eq!(consts.0["B"], "xy");
        assert_eq!(programs(src), [("z".into(), 6)]);
    }
}
