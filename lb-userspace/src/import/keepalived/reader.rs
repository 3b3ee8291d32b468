//! keepalived's line reader (its `read_line`): the files and their `include`s, comments,
//! `@id` lines, `$NAME=` definitions (multi-line too) and their substitution, `~SEQ` / `~LST`
//! line generators, and the split of a line at its first brace. The order of these steps, and
//! where each is allowed, is keepalived's: a definition or a generator must start its line; a
//! substituted line is not read again for `@`, definitions or generators, but it may become an
//! `include`.
//!
//! Every line read gets a reading-order number (its *virtual* line): the main file's lines keep
//! their own numbers until the first include; [`Reader::origins`] maps them back.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    rc::Rc,
};

use super::{
    ImportError, MAX_EXPANDED_BYTES, MAX_INCLUDE_DEPTH, MAX_LINE, Warning,
    include::{self, check_file, glob, include_check, include_line},
    lexer::{Token, decomment, words},
};

/// Substitutions in one line before it is taken for a definition that refers to itself.
const MAX_SUBSTITUTIONS: usize = 10_000;
/// Lines `~SEQ` and `~LST` may generate in all (keepalived's own example makes 65024 blocks).
const MAX_GENERATED: usize = 1 << 20;
/// Multi-line expansions inside one another before it is taken for one that refers to itself.
const MAX_NESTED_EXPANSIONS: usize = 1000;
/// keepalived's `~SEQ` parameters (three numbers) fit in this many bytes.
const SEQ_PARAMS: usize = 3 * 20 + 3;

/// Where the main text comes from.
pub(super) enum Main<'a> {
    /// Text without a file: `include` and `${_PWD}` cannot be followed.
    Text(&'a str),
    /// A file, read from disk with what it includes.
    File(&'a Path),
}

/// A definition (`$NAME=value`, or one of keepalived's own).
struct Def {
    name: String,
    value: Rc<str>,
    multiline: bool,
    builtin: Option<Builtin>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Pwd,
    Instance,
    Random,
    Env,
}

/// A `~SEQ` or `~LST` still generating lines.
enum Gen {
    Seq {
        var: String,
        next: i64,
        step: i64,
        last: i64,
        hex: bool,
        text: String,
    },
    Lst {
        vars: Vec<String>,
        sets: Vec<Vec<String>>,
        next: usize,
        text: String,
    },
}

/// An open file.
struct Open {
    /// Index in [`Reader::names`].
    name: usize,
    /// Directory its relative includes are under (as shown).
    dir: PathBuf,
    /// Its canonical path, for cycles.
    canonical: Option<PathBuf>,
    lines: Vec<String>,
    next: usize,
}

/// An `include` being read: the files its glob matched.
struct Included {
    pending: std::vec::IntoIter<PathBuf>,
    flags: u8,
    saved_check: u8,
    line: usize,
    file: Option<Open>,
}

/// Rest of a multi-line definition being expanded.
struct Pending {
    value: Rc<str>,
    at: usize,
}

/// The reader's state: keepalived's globals, per import.
pub(super) struct Reader {
    config_id: Option<String>,
    id_is_default: bool,
    /// Names of the files read (0 is the main one).
    pub(super) names: Vec<String>,
    /// Virtual line `n` is `origins[n - 1]`: file index and line in it.
    pub(super) origins: Vec<(usize, usize)>,
    pub(super) warnings: Vec<Warning>,
    warned: HashSet<(usize, String)>,
    main: Option<Open>,
    stack: Vec<Included>,
    defs: Vec<Def>,
    gens: Vec<Gen>,
    seq_depth: usize,
    /// The multi-line expansion being read.
    pending: Option<Pending>,
    /// The expansions it is inside, each with the generators that were running then (only
    /// generators started inside an expansion run before its lines are read).
    pending_stack: Vec<(Pending, usize)>,
    residue: Option<String>,
    defining: Option<usize>,
    include_check: u8,
    budget: usize,
    generated: usize,
    /// Block keywords open, to see `include_check` in `global_defs`.
    blocks: Vec<String>,
    last_words: Option<String>,
}

impl Reader {
    /// A reader of `main`, named `name`; `config_id` is keepalived's (`None`: the host's).
    pub(super) fn new(
        main: Main<'_>,
        name: &str,
        config_id: Option<String>,
        id_is_default: bool,
    ) -> Result<Self, ImportError> {
        let mut r = Reader {
            config_id,
            id_is_default,
            names: vec![name.to_owned()],
            origins: Vec::new(),
            warnings: Vec::new(),
            warned: HashSet::new(),
            main: None,
            stack: Vec::new(),
            defs: Vec::new(),
            gens: Vec::new(),
            seq_depth: 0,
            pending: None,
            pending_stack: Vec::new(),
            residue: None,
            defining: None,
            include_check: 0,
            budget: MAX_EXPANDED_BYTES,
            generated: 0,
            blocks: Vec::new(),
            last_words: None,
        };
        for (name, builtin, value) in [
            ("_PWD", Some(Builtin::Pwd), ""),
            ("_INSTANCE", Some(Builtin::Instance), ""),
            ("_RANDOM", Some(Builtin::Random), ""),
            ("_ENV", Some(Builtin::Env), ""),
            ("_HASH", None, "#"),
            ("_BANG", None, "!"),
        ] {
            r.defs.push(Def {
                name: name.to_owned(),
                value: value.into(),
                multiline: false,
                builtin,
            });
        }
        let open = match main {
            Main::Text(text) => {
                r.take_budget(text.len(), 0)?;
                Open {
                    name: 0,
                    dir: PathBuf::new(),
                    canonical: None,
                    lines: text.lines().map(str::to_owned).collect(),
                    next: 0,
                }
            }
            Main::File(path) => {
                let text = read(path).map_err(|reason| ImportError::Read {
                    file: name.to_owned(),
                    reason,
                })?;
                r.take_budget(text.len(), 0)?;
                Open {
                    name: 0,
                    dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                    canonical: path.canonicalize().ok(),
                    lines: text.lines().map(str::to_owned).collect(),
                    next: 0,
                }
            }
        };
        r.main = Some(open);
        Ok(r)
    }

    /// keepalived's `--all-config`: every include check, from the start.
    pub(super) fn check_all_includes(&mut self) {
        self.include_check = include::ALL;
    }

    fn take_budget(&mut self, n: usize, line: usize) -> Result<(), ImportError> {
        self.budget = self
            .budget
            .checked_sub(n)
            .ok_or(ImportError::ExpansionTooLarge { line })?;
        Ok(())
    }

    fn cur(&self) -> usize {
        self.origins.len().max(1)
    }

    /// A warning on the current line; once only, however many lines it generates.
    fn warn(&mut self, message: String) {
        let line = self.cur();
        if self.warned.insert((line, message.clone())) {
            self.warnings.push(Warning {
                line,
                file: None,
                message,
            });
        }
    }

    /// Reads everything into tokens.
    pub(super) fn tokens(&mut self) -> Result<Vec<Token>, ImportError> {
        let mut tokens = Vec::new();
        while let Some(line) = self.next_line()? {
            let at = self.cur();
            match line.as_str() {
                "{" => {
                    let kw = self.last_words.take().unwrap_or_default();
                    self.blocks.push(kw);
                    tokens.push(Token::Open(at));
                }
                "}" => {
                    self.blocks.pop();
                    self.last_words = None;
                    tokens.push(Token::Close(at));
                }
                _ => {
                    let w = words(&line);
                    if w.first().is_some_and(|k| k == "include_check")
                        && self.blocks.len() == 1
                        && self.blocks[0] == "global_defs"
                    {
                        let (check, notes) = include_check(self.include_check, &w);
                        self.include_check = check;
                        for n in notes {
                            self.warn(n);
                        }
                    }
                    self.last_words = w.first().cloned();
                    tokens.push(Token::Words {
                        line: at,
                        text: line.trim_matches(super::lexer::is_space).to_owned(),
                    });
                }
            }
        }
        Ok(tokens)
    }

    /// keepalived's `read_line`: the next line, or the part of one before or from a brace.
    fn next_line(&mut self) -> Result<Option<String>, ImportError> {
        loop {
            let buf = if let Some(r) = self.residue.take() {
                r
            } else if self.gens.len() > self.seq_depth {
                self.generate()?
            } else if let Some(p) = self.pending.take() {
                let rest = &p.value[p.at.min(p.value.len())..];
                match rest.find('\n') {
                    Some(end) => {
                        let line = rest[..end].to_owned();
                        self.take_budget(line.len(), self.cur())?;
                        self.pending = Some(Pending {
                            at: p.at + end + 1,
                            ..p
                        });
                        line
                    }
                    None => {
                        let line = rest.to_owned();
                        self.take_budget(line.len(), self.cur())?;
                        match self.pending_stack.pop() {
                            Some((outer, seq_depth)) => {
                                self.seq_depth = seq_depth;
                                self.pending = Some(outer);
                            }
                            None => self.seq_depth = 0,
                        }
                        line
                    }
                }
            } else {
                match self.physical()? {
                    Some(line) => line,
                    None => return Ok(None),
                }
            };
            if let Some(i) = self.defining {
                self.continue_definition(i, buf);
                continue;
            }
            if buf.is_empty() {
                continue;
            }
            let buf = self.process(buf)?;
            if buf.is_empty() {
                continue;
            }
            if let Some((flags, pattern)) = include_line(&buf) {
                self.include(flags, pattern)?;
                continue;
            }
            return Ok(Some(self.split(buf)));
        }
    }

    /// The next non-empty line of the files, comments removed.
    fn physical(&mut self) -> Result<Option<String>, ImportError> {
        loop {
            let Some(open) = self.current() else {
                return Ok(None);
            };
            let Some(raw) = open.lines.get(open.next).cloned() else {
                self.end_file()?;
                continue;
            };
            open.next += 1;
            let (file, no) = (open.name, open.next);
            self.origins.push((file, no));
            let line = self.cur();
            if raw.len() > MAX_LINE {
                return Err(ImportError::LineTooLong { line });
            }
            let raw = raw.trim_end_matches(['\r', '\n']);
            if raw.is_empty() {
                if let Some(i) = self.defining.take()
                    && self.defs[i].value.is_empty()
                {
                    self.defs[i].multiline = false;
                }
                continue;
            }
            // (The file's bytes were counted when it was opened.)
            let text = decomment(raw, line)?;
            if !text.is_empty() {
                return Ok(Some(text));
            }
        }
    }

    fn current(&mut self) -> Option<&mut Open> {
        if self.stack.is_empty() {
            return self.main.as_mut();
        }
        self.stack.last_mut()?.file.as_mut()
    }

    /// The end of a file: the include's next match, or back to the including file.
    fn end_file(&mut self) -> Result<(), ImportError> {
        let Some(inc) = self.stack.last_mut() else {
            self.main = None;
            return Ok(());
        };
        inc.file = None;
        self.include_check = inc.saved_check;
        if !self.open_next()? {
            self.stack.pop();
        }
        Ok(())
    }

    /// A problem keepalived reports with an include: an error when `flags` (the include's own
    /// and `include_check`'s) ask for this check, else a warning (keepalived reads on).
    fn include_problem(
        &mut self,
        flags: u8,
        check: u8,
        line: usize,
        message: String,
    ) -> Result<(), ImportError> {
        if flags & check != 0 {
            return Err(ImportError::Include { line, message });
        }
        self.warnings.push(Warning {
            line,
            file: None,
            message: format!("{message} (keepalived reads on without it)"),
        });
        Ok(())
    }

    /// Opens the next readable match of the innermost include; false when there is none.
    fn open_next(&mut self) -> Result<bool, ImportError> {
        loop {
            let Some(inc) = self.stack.last_mut() else {
                return Ok(false);
            };
            let Some(path) = inc.pending.next() else {
                return Ok(false);
            };
            let (flags, line) = (inc.flags, inc.line);
            let shown = path.display().to_string();
            if let Err(why) = check_file(&path) {
                self.include_problem(flags, include::READ, line, format!("'{shown}' {why}"))?;
                continue;
            }
            let canonical = path.canonicalize().ok();
            let open_files = self
                .main
                .iter()
                .chain(self.stack.iter().filter_map(|i| i.file.as_ref()))
                .filter_map(|o| o.canonical.as_ref());
            if canonical.is_some() && open_files.clone().any(|c| Some(c) == canonical.as_ref()) {
                return Err(ImportError::IncludeCycle { line, file: shown });
            }
            let text = match read(&path) {
                Ok(text) => text,
                Err(why) => {
                    self.include_problem(
                        flags,
                        include::READ,
                        line,
                        format!("'{shown}' cannot be read ({why}) - skipping"),
                    )?;
                    continue;
                }
            };
            self.take_budget(text.len(), line)?;
            self.names.push(shown);
            let open = Open {
                name: self.names.len() - 1,
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                canonical,
                lines: text.lines().map(str::to_owned).collect(),
                next: 0,
            };
            if let Some(inc) = self.stack.last_mut() {
                inc.file = Some(open);
            }
            return Ok(true);
        }
    }

    /// `include PATTERN` (or `includer`, `includem`, ...): its files are read next.
    fn include(&mut self, flags: u8, pattern: &str) -> Result<(), ImportError> {
        let line = self.cur();
        let Some(dir) = self.current_dir() else {
            return Err(ImportError::Unsupported {
                line,
                what: format!(
                    "include {pattern} (the configuration was given as text, not as a file)"
                ),
            });
        };
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(ImportError::IncludeTooDeep { line });
        }
        let flags = flags | self.include_check;
        let g = glob(pattern, &dir);
        if g.paths.is_empty() {
            if g.missing {
                let check = if g.brace {
                    include::BRACE
                } else {
                    include::MATCH
                };
                self.include_problem(
                    flags,
                    check,
                    line,
                    format!("config files missing '{pattern}'"),
                )?;
            } else if g.wildcards {
                self.include_problem(
                    flags,
                    include::WILDCARD,
                    line,
                    format!("no config files matched '{pattern}'"),
                )?;
            }
            return Ok(());
        }
        if g.missing {
            self.include_problem(
                flags,
                include::BRACE,
                line,
                format!("some config files missing: '{pattern}'"),
            )?;
        }
        self.stack.push(Included {
            pending: g.paths.into_iter(),
            flags,
            saved_check: self.include_check,
            line,
            file: None,
        });
        if !self.open_next()? {
            self.stack.pop();
        }
        Ok(())
    }

    /// The directory of the file being read, if it is a file.
    fn current_dir(&self) -> Option<PathBuf> {
        let open = match self.stack.last() {
            Some(inc) => inc.file.as_ref()?,
            None => self.main.as_ref()?,
        };
        open.canonical.as_ref()?;
        Some(open.dir.clone())
    }

    /// keepalived's `@id`, definitions, generators and substitution, on one line.
    fn process(&mut self, mut buf: String) -> Result<String, ImportError> {
        if let Some(rest) = buf.strip_prefix('@') {
            let (negate, rest) = match rest.strip_prefix('^') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let Some(end) = rest.find([' ', '\t']) else {
                self.warn(format!(
                    "{}: nothing follows the config id, so keepalived ignores the line",
                    buf
                ));
                return Ok(String::new());
            };
            let id = &rest[..end];
            let matched = self.config_id.as_deref() == Some(id);
            let keep = matched != negate;
            let whose = match (&self.config_id, self.id_is_default) {
                (Some(c), true) => format!(
                    "keepalived's config id here is `{c}` (the host name's first label; \
                     --config-id imports for another director)"
                ),
                (Some(c), false) => format!("the config id is `{c}`"),
                (None, _) => "the host name is unknown, so no config id matches".to_owned(),
            };
            let verdict = if keep { "imported" } else { "skipped" };
            let cond = if negate {
                format!("@^{id} (all but config id {id})")
            } else {
                format!("@{id} (config id {id} only)")
            };
            self.warn(format!("{cond}: {verdict}, as {whose}"));
            if !keep {
                return Ok(String::new());
            }
            buf = rest[end..].trim_start_matches([' ', '\t']).to_owned();
        }
        if buf.starts_with('$') && self.definition(&buf) {
            return Ok(String::new());
        }
        if buf.starts_with("~SEQ") || buf.starts_with("~LST") {
            let added = if buf.as_bytes()[1] == b'S' {
                self.add_seq(&buf)?
            } else {
                self.add_lst(&buf)
            };
            if !added {
                let kind = &buf[..4];
                self.warn(format!(
                    "invalid {kind} specification '{buf}': keepalived reports it and skips the \
                     line"
                ));
            }
            return Ok(String::new());
        }
        if buf.starts_with('~') || !buf.contains('$') {
            return Ok(buf);
        }
        // keepalived's buffer holds one character more than the longest line it reads.
        if !self.substitute(&mut buf, MAX_LINE + 1)? {
            return Ok(buf);
        }
        let line = self.cur();
        self.take_budget(buf.len(), line)?;
        decomment(&buf, line)
    }

    /// `$NAME=value`: saves it; false when the line is not a definition.
    fn definition(&mut self, buf: &str) -> bool {
        let b = buf.as_bytes();
        if !b
            .get(1)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        {
            return false;
        }
        let Some(eq) = buf[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) else {
            return false;
        };
        let eq = eq + 1;
        if b[eq] != b'=' {
            return false;
        }
        let name = &buf[1..eq];
        let mut value = buf[eq + 1..].trim_start_matches([' ', '\t']).to_owned();
        let multiline = value.ends_with('\\');
        if multiline {
            value.pop();
            let kept = value.trim_end_matches([' ', '\t']).len();
            value.truncate(kept);
            if !value.is_empty() {
                value.push('\n');
            }
        }
        let i = self.set(name, value);
        self.defs[i].multiline = multiline;
        if multiline {
            self.defining = Some(i);
        }
        true
    }

    /// Sets `name` to `value` (a new definition goes last); its index.
    fn set(&mut self, name: &str, value: String) -> usize {
        match self.defs.iter().position(|d| d.name == name) {
            Some(i) => {
                self.defs[i].value = value.into();
                self.defs[i].builtin = None;
                i
            }
            None => {
                self.defs.push(Def {
                    name: name.to_owned(),
                    value: value.into(),
                    multiline: false,
                    builtin: None,
                });
                self.defs.len() - 1
            }
        }
    }

    /// A line of a multi-line definition.
    fn continue_definition(&mut self, i: usize, mut buf: String) {
        let more = buf.ends_with('\\');
        if more {
            buf.pop();
            let kept = buf.trim_end_matches([' ', '\t']).len();
            buf.truncate(kept);
            buf.push('\n');
        } else {
            self.defining = None;
            if self.defs[i].value.is_empty() {
                self.defs[i].multiline = false;
            }
        }
        if buf.len() >= 2 || (!buf.is_empty() && !more) {
            let value = format!("{}{buf}", self.defs[i].value);
            self.defs[i].value = value.into();
        }
    }

    /// keepalived's `replace_param`: replaces `$NAME` / `${NAME}` in place, again over what was
    /// put in; true when something was replaced.
    fn substitute(&mut self, buf: &mut String, max: usize) -> Result<bool, ImportError> {
        let line = self.cur();
        let mut pos = 0;
        let mut found = false;
        let mut count = 0;
        while let Some(at) = buf[pos..].find('$').map(|i| i + pos) {
            if at + 1 >= buf.len() {
                break;
            }
            let Some((i, span, params)) = self.find(&buf[at + 1..]) else {
                pos = at + 1;
                continue;
            };
            count += 1;
            if count > MAX_SUBSTITUTIONS {
                return Err(ImportError::ExpansionLoop { line });
            }
            found = true;
            let value = self.value_of(i, params.as_deref())?;
            let replacing = if self.defs[i].multiline {
                let first = value.find('\n').unwrap_or(value.len());
                if let Some(p) = self.pending.take() {
                    if self.pending_stack.len() >= MAX_NESTED_EXPANSIONS {
                        return Err(ImportError::ExpansionLoop { line });
                    }
                    self.pending_stack.push((p, self.seq_depth));
                }
                self.pending = Some(Pending {
                    value: value.clone(),
                    at: first + 1,
                });
                self.seq_depth = self.gens.len();
                &value[..first]
            } else {
                &value[..]
            };
            if buf.len() - (span + 1) + replacing.len() > max {
                return Err(ImportError::LineTooLong { line });
            }
            buf.replace_range(at..at + 1 + span, replacing);
            if !replacing.is_empty() && value.trim_start_matches([' ', '\t']).starts_with('~') {
                break;
            }
        }
        Ok(found)
    }

    /// keepalived's `find_definition` for a reference (`s` is just after the `$`): the
    /// definition, the length of the reference after the `$`, and its parameters.
    fn find(&mut self, s: &str) -> Option<(usize, usize, Option<String>)> {
        let b = s.as_bytes();
        let braces = b.first() == Some(&b'{');
        let start = usize::from(braces);
        if !b
            .get(start)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        {
            return None;
        }
        let mut end = start + 1;
        while b
            .get(end)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            end += 1;
        }
        let name = &s[start..end];
        let mut params = None;
        let span;
        let alone;
        if braces {
            let mut p = end;
            while b
                .get(p)
                .is_some_and(|c| matches!(c, b' ' | b'\t' | b'_') || c.is_ascii_alphanumeric())
            {
                p += 1;
            }
            let text = &s[end..p];
            if !text.is_empty() {
                if text.ends_with([' ', '\t']) {
                    return None;
                }
                params = Some(text.trim_start_matches([' ', '\t']).to_owned());
            }
            if b.get(p) != Some(&b'}') {
                return None;
            }
            span = p + 1;
            alone = params.is_none() && span == s.len();
        } else {
            if !matches!(b.get(end), None | Some(b' ' | b'\t' | b',' | b')')) {
                return None;
            }
            span = end;
            alone = end == s.len();
        }
        let i = self
            .defs
            .iter()
            .position(|d| d.name == name && (alone || !d.multiline))?;
        if let Some(p) = &params {
            let (min, max, numbers) = match self.defs[i].builtin {
                Some(Builtin::Random) => (0, 2, true),
                Some(Builtin::Env) => (1, 1, false),
                _ => return None,
            };
            let n = p.split([' ', '\t']).filter(|w| !w.is_empty()).count();
            if numbers
                && !p
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ' ' || c == '\t')
            {
                self.warn(format!(
                    "${{{name} {p}}}: keepalived requires numeric parameters only, and leaves \
                     it as written"
                ));
                return None;
            }
            if n < min || n > max {
                self.warn(format!(
                    "${{{name} {p}}}: keepalived requires between {min} and {max} parameters, \
                     and leaves it as written"
                ));
                return None;
            }
        } else if self.defs[i].builtin == Some(Builtin::Env) {
            // `${_ENV}` needs its variable name.
            return None;
        }
        Some((i, span, params))
    }

    /// The value a reference stands for.
    fn value_of(&mut self, i: usize, params: Option<&str>) -> Result<Rc<str>, ImportError> {
        let line = self.cur();
        Ok(match self.defs[i].builtin {
            None => self.defs[i].value.clone(),
            Some(Builtin::Instance) => self.config_id.clone().unwrap_or_default().into(),
            Some(Builtin::Pwd) => {
                let dir = self.current_dir().ok_or_else(|| ImportError::Unsupported {
                    line,
                    what: "${_PWD} (the configuration was given as text, not as a file)".to_owned(),
                })?;
                let dir = if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir
                };
                let abs = dir.canonicalize().unwrap_or(dir);
                abs.display().to_string().into()
            }
            Some(Builtin::Random) => {
                return Err(ImportError::Unsupported {
                    line,
                    what: "${_RANDOM} (a number keepalived draws anew at each start: write \
                           the value the director should use)"
                        .to_owned(),
                });
            }
            Some(Builtin::Env) => {
                let var = params.unwrap_or_default().trim().to_owned();
                let value = std::env::var(&var).unwrap_or_default();
                self.warn(format!(
                    "${{_ENV {var}}} is keepalived's environment variable {var}: imported with \
                     this environment's value \"{value}\""
                ));
                value.into()
            }
        })
    }

    /// The next line of the innermost `~SEQ` / `~LST`.
    fn generate(&mut self) -> Result<String, ImportError> {
        let line = self.cur();
        let Some(g) = self.gens.last_mut() else {
            return Ok(String::new());
        };
        let (sets, text, done) = match g {
            Gen::Seq {
                var,
                next,
                step,
                last,
                hex,
                text,
            } => {
                let value = if *hex {
                    format!("{:x}", *next as u64)
                } else {
                    next.to_string()
                };
                let sets = vec![(var.clone(), value)];
                let done = match next.checked_add(*step) {
                    Some(n) => {
                        *next = n;
                        (*step > 0 && n > *last) || (*step < 0 && n < *last)
                    }
                    None => true,
                };
                (sets, text.clone(), done)
            }
            Gen::Lst {
                vars,
                sets,
                next,
                text,
            } => {
                let values = sets[*next].clone();
                let pairs = vars.iter().cloned().zip(values).collect();
                *next += 1;
                (pairs, text.clone(), *next == sets.len())
            }
        };
        if done {
            self.gens.pop();
        }
        for (name, value) in sets {
            self.set_keep_multiline(&name, value);
        }
        // A generated line costs its text and its end, and there are at most MAX_GENERATED: a
        // generator of nothing still ends.
        self.generated += 1;
        if self.generated > MAX_GENERATED {
            return Err(ImportError::ExpansionTooLarge { line });
        }
        self.take_budget(text.len() + 1, line)?;
        Ok(text)
    }

    /// keepalived's `set_definition`: a new value, the multi-line mark unchanged.
    fn set_keep_multiline(&mut self, name: &str, value: String) {
        let multiline = self
            .defs
            .iter()
            .find(|d| d.name == name)
            .is_some_and(|d| d.multiline);
        let i = self.set(name, value);
        self.defs[i].multiline = multiline;
    }

    /// `~SEQ(var, start, step, end) text` (or `~SEQx`, in hex); false when invalid.
    fn add_seq(&mut self, buf: &str) -> Result<bool, ImportError> {
        let b = buf.as_bytes();
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        let blanks = |mut i: usize| {
            while matches!(at(i), b' ' | b'\t') {
                i += 1;
            }
            i
        };
        let mut p = 4;
        let hex = at(p) == b'x';
        if hex {
            p += 1;
        }
        p = blanks(p);
        if at(p) != b'(' {
            return Ok(false);
        }
        p = blanks(p + 1);
        let var_start = p;
        while !matches!(at(p), 0 | b' ' | b'\t' | b',' | b')') {
            p += 1;
        }
        let var = &buf[var_start..p];
        p = blanks(p);
        if at(p) == 0 || at(p) == b')' || var.is_empty() || var.starts_with('{') {
            return Ok(false);
        }
        // keepalived steps over the byte after the name, whatever it is.
        p = blanks(p + 1);
        if !buf.is_char_boundary(p) {
            return Ok(false);
        }
        let Some(close) = buf[p..].find(')').map(|i| i + p) else {
            return Ok(false);
        };
        if close + 2 - p > SEQ_PARAMS + 1 {
            return Ok(false);
        }
        let mut params = buf[p..=close].to_owned();
        // The parameters may be $NAMEs, not multi-line ones; the expansion being read is kept.
        let (pending, stacked, seq_depth) = (
            self.pending.take(),
            self.pending_stack.len(),
            self.seq_depth,
        );
        let substituted = self.substitute(&mut params, SEQ_PARAMS);
        let multiline = self.pending.is_some();
        self.pending = pending;
        self.pending_stack.truncate(stacked);
        self.seq_depth = seq_depth;
        match substituted {
            Err(ImportError::LineTooLong { .. }) => return Ok(false),
            Err(e) => return Err(e),
            Ok(_) if multiline => return Ok(false),
            Ok(_) => {}
        }
        let nums = params.as_bytes();
        let mut q = 0;
        let mut numbers = Vec::new();
        loop {
            let (n, used) = strtol(&nums[q..]);
            numbers.push(n);
            q += used;
            while matches!(nums.get(q), Some(b' ' | b'\t')) {
                q += 1;
            }
            match nums.get(q) {
                Some(b')') => break,
                Some(b',') if numbers.len() < 3 => q += 1,
                _ => return Ok(false),
            }
        }
        let (start, step, end) = match numbers[..] {
            [end] => (
                if end < 0 { -1 } else { 1 },
                if end < 1 { -1 } else { 1 },
                end,
            ),
            [start, end] => (start, if start <= end { 1 } else { -1 }, end),
            [start, step, end] => {
                if step == 0 || (start < end && step < 0) || (start > end && step > 0) {
                    return Ok(false);
                }
                (start, step, end)
            }
            _ => return Ok(false),
        };
        if hex && (start < 0 || end < 0) {
            return Ok(false);
        }
        let text = buf[close + 1..].trim_start_matches([' ', '\t']).to_owned();
        self.gens.push(Gen::Seq {
            var: var.to_owned(),
            next: start,
            step,
            last: end,
            hex,
            text,
        });
        Ok(true)
    }

    /// `~LST(var, v1, v2, ...) text` or `~LST({a, b}, {1, 2}, {3, 4}) text`; false when
    /// invalid.
    fn add_lst(&mut self, buf: &str) -> bool {
        let b = buf.as_bytes();
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        let blanks = |mut i: usize| {
            while matches!(at(i), b' ' | b'\t') {
                i += 1;
            }
            i
        };
        let upto = |mut i: usize, stops: &[u8]| {
            while at(i) != 0 && !stops.contains(&at(i)) {
                i += 1;
            }
            i
        };
        let mut p = blanks(4);
        if at(p) != b'(' {
            return false;
        }
        p = blanks(p + 1);
        let mut end_char = b',';
        if at(p) == b'{' {
            end_char = b'}';
            p = blanks(p + 1);
        }
        let mut vars = Vec::new();
        loop {
            let e = upto(p, b" \t,}");
            vars.push(buf[p..e].to_owned());
            p = blanks(e);
            if at(p) == end_char {
                break;
            }
            if at(p) != b',' {
                return false;
            }
            p = blanks(p + 1);
        }
        if at(p) == b'}' {
            p = blanks(p + 1);
        }
        if at(p) != b',' {
            return false;
        }
        p = blanks(p + 1);
        let mut sets = Vec::new();
        loop {
            let mut end_char = b',';
            if at(p) == b'{' {
                end_char = b'}';
                p = blanks(p + 1);
            }
            let mut values = Vec::new();
            loop {
                let e = upto(p, b" \t,})");
                values.push(buf[p..e].to_owned());
                p = blanks(e);
                if at(p) == end_char || (at(p) == b')' && end_char == b',') {
                    break;
                }
                if at(p) != b',' {
                    return false;
                }
                p = blanks(p + 1);
                if values.len() >= vars.len() {
                    return false;
                }
            }
            values.resize(vars.len(), String::new());
            sets.push(values);
            if at(p) == b'}' && end_char == b'}' {
                p = blanks(p + 1);
            }
            if at(p) == b')' {
                break;
            }
            if at(p) != b',' {
                return false;
            }
            p = blanks(p + 1);
        }
        let text = buf[p + 1..].trim_start_matches([' ', '\t']).to_owned();
        self.gens.push(Gen::Lst {
            vars,
            sets,
            next: 0,
            text,
        });
        true
    }

    /// keepalived's split of a line at its first brace outside quotes: the part before it (or
    /// the brace itself), the rest read next.
    fn split(&mut self, buf: String) -> String {
        let b = buf.as_bytes();
        let mut brace = None;
        if matches!(b.first(), Some(b'{' | b'}')) {
            brace = Some(0);
        } else {
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'{' | b'}' => {
                        brace = Some(i);
                        break;
                    }
                    b'"' => match buf[i + 1..].find('"') {
                        Some(j) => i += j + 2,
                        None => break,
                    },
                    _ => i += 1,
                }
            }
        }
        let Some(at) = brace else {
            return buf.trim_end_matches([' ', '\t']).to_owned();
        };
        let (head, rest) = if at == 0 {
            let rest = buf[1..].trim_start_matches([' ', '\t']);
            (buf[..1].to_owned(), rest)
        } else {
            (buf[..at].to_owned(), &buf[at..])
        };
        let rest = rest.trim_end_matches([' ', '\t']);
        if !rest.is_empty() {
            self.residue = Some(rest.to_owned());
        }
        head.trim_end_matches([' ', '\t']).to_owned()
    }
}

/// C's `strtol(s, &end, 0)`: the number and the bytes it used (0 when there is none).
fn strtol(s: &[u8]) -> (i64, usize) {
    let mut i = 0;
    while s.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    let negative = s.get(i) == Some(&b'-');
    if matches!(s.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let (radix, digits_at) = if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, i + 2)
    } else if s.get(i) == Some(&b'0') {
        (8, i)
    } else {
        (10, i)
    };
    let mut j = digits_at;
    let mut value: i64 = 0;
    while let Some(d) = s.get(j).and_then(|c| char::from(*c).to_digit(radix)) {
        value = value
            .saturating_mul(i64::from(radix))
            .saturating_add(i64::from(d));
        j += 1;
    }
    if j == digits_at {
        return (0, 0);
    }
    (if negative { -value } else { value }, j)
}

/// A configuration file's text (bounded as the agent's own configuration).
fn read(path: &Path) -> Result<String, String> {
    crate::config::read_text(path).map_err(|e| e.to_string())
}
