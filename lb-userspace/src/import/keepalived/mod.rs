//! Import of a keepalived.conf: its `virtual_server` blocks become an `lb-agent` configuration.
//!
//! The file is read the way keepalived reads it, so that the result behaves like the services
//! keepalived actually ran, not like the ones the file seems to describe:
//!
//! - words are separated by white space, a `"quoted string"` is one word, and `{` / `}` outside
//!   quotes are block delimiters wherever they are on the line (`real_server 1.2.3.4 80{`, a
//!   `{` on its own line); indentation does not matter;
//! - `#` and `!` outside double quotes start a comment that runs to the end of the line (`\#`
//!   and `\!` are literal); comments may be in any language;
//! - `include PATTERN` (and `includer`, `includem`, `includew`, `includeb`, `includea`) reads the
//!   files the glob matches (with `{a,b}` braces, each alternative sorted), a relative pattern
//!   under the including file's directory, as keepalived does after its `chdir`. What keepalived
//!   only logs (no match, a directory, an executable) is a warning; what its include checks
//!   (the variant, `include_check` in `global_defs`, or [`Options::all_config`]) make an error
//!   is an error. Includes need [`import_file`]; in text ([`import`]) they are an error naming
//!   the line. A cycle, or nesting past [`MAX_INCLUDE_DEPTH`], is refused;
//! - `$NAME=value` at the start of a line (no blank before `=`) defines a parameter; a value
//!   ending in `\` continues on the next lines (until one without `\`, or an empty line). `$NAME`
//!   (followed by a blank, `,`, `)` or the end of the line) and `${NAME}` are replaced where they
//!   are used, again over the replacement; a multi-line parameter only alone at the end of a
//!   line, its lines read as lines of the file. keepalived's own: `${_INSTANCE}` (the config id),
//!   `${_PWD}` (the file's directory), `${_ENV VAR}` (from this environment, with a warning),
//!   `${_HASH}` and `${_BANG}`; `${_RANDOM}` is refused (keepalived draws it at each start);
//! - `~SEQ(var, start, step, end)`, `~SEQx(...)` (hex) and `~LST(var, v1, v2...)` /
//!   `~LST({a, b}, {1, 2}, ...)` at the start of a line repeat the rest of the line for each
//!   value, nested ones inside; an invalid one is skipped with a warning, as keepalived does;
//! - `@ID line` is read only where the config id is ID, `@^ID line` only where it is not: the
//!   config id is [`Options::config_id`] (`lbadm import-keepalived --config-id`), by default
//!   keepalived's (this host's name up to its first dot); each such line gets a warning saying
//!   whether it was imported;
//! - a line longer than keepalived reads ([`MAX_LINE`], before or after substitution) is
//!   refused, as is a definition that refers to itself; everything read and generated is
//!   bounded by [`MAX_EXPANDED_BYTES`], and `~SEQ` / `~LST` by about a million lines;
//! - warnings and errors name the line, and the included file it is in (`line 12 of
//!   conf.d/web.conf`);
//! - keywords are case-sensitive; an unknown keyword is ignored, so its value keeps its
//!   default (a misspelled `protocal UDP` leaves the protocol TCP);
//! - a script (`notify_up`, `quorum_down`, `misc_path`, ...) is the first word after the
//!   keyword, split again into arguments with quotes and backslash escapes; later words name
//!   the user and group keepalived runs it as.
//!
//! Everything that is not a service (`global_defs`, `vrrp_instance`, ...) stays keepalived's job
//! and is reported, as is every keyword whose meaning the YAML cannot carry. Two exceptions:
//! the global `SSL` block's client `certificate` and `key`, which every `SSL_GET` (an
//! `ssl_get`) presents; and IPVS's connection sync (`lvs_sync_daemon` in `global_defs`, or the old
//! `lvs_sync_daemon_interface` of a `vrrp_instance`) becomes the `sync:` section, with IPVS's
//! defaults where keepalived has them, lb-agent's own port, and a key file the operator must
//! create (keepalived's sync is not authenticated, lb-agent's is). What lb-agent
//! refuses (NAT, TUN, unserved schedulers, ...) is carried into the YAML as keepalived had it,
//! and reported with the reason `lb-agent --check-config` gives.
//!
//! IPv6 services convert like IPv4 ones; their `persistence_granularity` is a prefix length
//! (1 to 128), as keepalived takes it, and stays one in the YAML.

mod importer;
mod include;
mod keywords;
mod lexer;
mod parsed;
mod reader;
mod yaml;

#[cfg(test)]
mod lang_tests;
#[cfg(test)]
mod tests;

use std::{fmt, path::Path};

use thiserror::Error;

use importer::Importer;
use reader::{Main, Reader};
use yaml::{Yaml, comment_text, header, header_is_only_comments, render};

/// Name used for the source in the YAML header when the caller does not give one.
const DEFAULT_SOURCE: &str = "keepalived.conf";

/// A converted keepalived.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The `lb-agent` configuration (YAML, with explanatory comments).
    pub yaml: String,
    /// What was not converted, or not as written, in line order.
    pub warnings: Vec<Warning>,
}

/// Something in keepalived.conf that the YAML does not carry as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Line (1-based) of keepalived.conf, or of [`Warning::file`].
    pub line: usize,
    /// The included file the line is in; `None` for the main file.
    pub file: Option<String>,
    /// What happened, and what to do about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Input text reaches a terminal and YAML comments through warnings: no control
        // characters.
        write!(f, "line {}", self.line)?;
        if let Some(file) = &self.file {
            write!(f, " of {}", comment_text(file))?;
        }
        write!(f, ": {}", comment_text(&self.message))
    }
}

/// How to read a keepalived configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The director's interface; empty: the first `vrrp_instance`'s (with a warning).
    pub interface: String,
    /// keepalived's `--config-id`, which `@id` lines are compared with; `None`: keepalived's
    /// default, the first label of this host's name.
    pub config_id: Option<String>,
    /// keepalived's `--all-config`: every include check on from the start, as `include_check`
    /// without options (a missing or unreadable include is an error, not a warning).
    pub all_config: bool,
}

/// A keepalived.conf that cannot be converted at all.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ImportError {
    /// A `}` with no open block.
    #[error("line {line}: `}}` closes no block (one `{{` too few, or one `}}` too many)")]
    UnexpectedClose {
        /// Line of the `}`.
        line: usize,
    },
    /// A block that is still open at the end of the file.
    #[error(
        "line {line}: the {keyword} block opened here is never closed: a `}}` is missing in it or \
         after it"
    )]
    Unclosed {
        /// Line of the keyword that opened the outermost unclosed block.
        line: usize,
        /// That keyword.
        keyword: String,
    },
    /// A `{` that follows no keyword.
    #[error("line {line}: `{{` does not follow a keyword")]
    StrayOpen {
        /// Line of the `{`.
        line: usize,
    },
    /// A `"` that is never closed on its line.
    #[error("line {line}: unterminated quote (a `\"` is missing)")]
    UnterminatedQuote {
        /// Line of the quote.
        line: usize,
    },
    /// A keepalived feature the importer cannot follow.
    #[error("line {line}: {what} is not supported by the importer")]
    Unsupported {
        /// Line of the feature.
        line: usize,
        /// What it is.
        what: String,
    },
    /// No interface was given and no `vrrp_instance` names one.
    #[error(
        "no interface given, and no vrrp_instance in the file names one: pass the interface the \
         VIP traffic arrives on"
    )]
    NoInterface,
    /// The interface name is not one Linux accepts.
    #[error("interface: {message}")]
    BadInterface {
        /// Why (as `lb-agent --check-config` says it).
        message: String,
    },
    /// Blocks nested deeper than keepalived's syntax ever needs.
    #[error("line {line}: blocks nested more than {MAX_BLOCK_DEPTH} deep")]
    TooDeep {
        /// Line of the `{` that is one too deep.
        line: usize,
    },
    /// `$NAME` expansion makes the text too large.
    #[error(
        "line {line}: expanding the $parameters makes the configuration larger than \
         {MAX_EXPANDED_BYTES} bytes"
    )]
    ExpansionTooLarge {
        /// Line where the limit was passed.
        line: usize,
    },
    /// A line longer than keepalived reads (before or after substitution).
    #[error(
        "line {line}: longer than keepalived's {MAX_LINE} characters (keepalived would not read \
         it as written)"
    )]
    LineTooLong {
        /// The line.
        line: usize,
    },
    /// `$NAME` substitution that does not end (a definition that refers to itself).
    #[error(
        "line {line}: the $parameters never stop expanding (a definition refers to itself; \
         keepalived would hang)"
    )]
    ExpansionLoop {
        /// The line.
        line: usize,
    },
    /// The main file cannot be read.
    #[error("{file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// An include keepalived refuses (its `includer`/`includem`/... or `include_check` asks
    /// for the check that fails): keepalived would not start.
    #[error("line {line}: {message} (keepalived stops here)")]
    Include {
        /// Line of the include.
        line: usize,
        /// keepalived's complaint.
        message: String,
    },
    /// A file that includes itself, directly or not.
    #[error("line {line}: include of {file}, which is already being read (an include cycle)")]
    IncludeCycle {
        /// Line of the include.
        line: usize,
        /// The file.
        file: String,
    },
    /// Includes nested deeper than the importer follows.
    #[error("line {line}: includes nested more than {MAX_INCLUDE_DEPTH} deep")]
    IncludeTooDeep {
        /// Line of the include.
        line: usize,
    },
    /// An error on a line of an included file.
    #[error("{file}: {error}")]
    InFile {
        /// The included file.
        file: String,
        /// The error, its line counted in `file`.
        error: Box<ImportError>,
    },
    /// The importer wrote YAML that does not read back as written: a bug of the importer,
    /// reported rather than printed.
    #[error("the importer produced YAML that does not read back ({reason}); please report this")]
    Unreadable {
        /// What the YAML reader said.
        reason: String,
    },
}

/// The deepest block nesting read (keepalived's own configurations nest four deep).
pub const MAX_BLOCK_DEPTH: usize = 32;
/// The largest text all files, `$NAME` expansions and `~SEQ` / `~LST` lines may make together.
pub const MAX_EXPANDED_BYTES: usize = crate::config::MAX_CONFIG_BYTES as usize;
/// keepalived's longest line (its line buffer): a longer one is refused, as keepalived would
/// not read it as written.
pub const MAX_LINE: usize = 1022;
/// The deepest include nesting followed (keepalived has no limit, and loops on a cycle).
pub const MAX_INCLUDE_DEPTH: usize = 32;

impl ImportError {
    /// The line the error is about, if it is about one (in [`ImportError::file`], if any).
    pub fn line(&self) -> Option<usize> {
        let mut e = self.clone();
        e.line_mut().map(|l| *l)
    }

    /// The included file the error is in (`None`: the main file, or no file).
    pub fn file(&self) -> Option<&str> {
        match self {
            ImportError::InFile { file, .. } => Some(file),
            _ => None,
        }
    }

    fn line_mut(&mut self) -> Option<&mut usize> {
        match self {
            ImportError::UnexpectedClose { line }
            | ImportError::Unclosed { line, .. }
            | ImportError::StrayOpen { line }
            | ImportError::UnterminatedQuote { line }
            | ImportError::Unsupported { line, .. }
            | ImportError::TooDeep { line }
            | ImportError::ExpansionTooLarge { line }
            | ImportError::LineTooLong { line }
            | ImportError::ExpansionLoop { line }
            | ImportError::Include { line, .. }
            | ImportError::IncludeCycle { line, .. }
            | ImportError::IncludeTooDeep { line } => Some(line),
            ImportError::InFile { error, .. } => error.line_mut(),
            ImportError::NoInterface
            | ImportError::BadInterface { .. }
            | ImportError::Read { .. }
            | ImportError::Unreadable { .. } => None,
        }
    }
}

/// Converts keepalived.conf `text` into an `lb-agent` configuration whose XDP program attaches
/// to `interface`. With an empty `interface`, the first `vrrp_instance`'s interface is used
/// (with a warning). `@id` lines are read as keepalived does on this host; an `include` is an
/// error (there is no file to resolve it from: see [`import_file`]).
pub fn import(text: &str, interface: &str) -> Result<Import, ImportError> {
    import_named(text, interface, DEFAULT_SOURCE)
}

/// [`import`], naming the source file (`source`) in the YAML header.
pub fn import_named(text: &str, interface: &str, source: &str) -> Result<Import, ImportError> {
    let options = Options {
        interface: interface.to_owned(),
        ..Options::default()
    };
    import_text(text, source, &options)
}

/// [`import_named`] with [`Options`].
pub fn import_text(text: &str, source: &str, options: &Options) -> Result<Import, ImportError> {
    convert(Main::Text(text), source, options)
}

/// Converts the keepalived configuration in file `path`, with the files it includes
/// (`lbadm import-keepalived FILE` calls this). Warnings and errors about an included file name
/// it, as its path from `path`'s directory.
pub fn import_file(path: &Path, options: &Options) -> Result<Import, ImportError> {
    convert(Main::File(path), &path.display().to_string(), options)
}

/// keepalived's default config id: the host name up to its first dot.
fn host_config_id() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let first = name.split('.').next().unwrap_or(name);
    (!first.is_empty()).then(|| first.to_owned())
}

fn convert(main: Main<'_>, source: &str, options: &Options) -> Result<Import, ImportError> {
    let (config_id, id_is_default) = match &options.config_id {
        Some(id) => (Some(id.clone()), false),
        None => (host_config_id(), true),
    };
    let mut reader = Reader::new(main, source, config_id, id_is_default)?;
    if options.all_config {
        reader.check_all_includes();
    }
    let result = lexer::read(&mut reader);
    let at = Locator {
        names: std::mem::take(&mut reader.names),
        origins: std::mem::take(&mut reader.origins),
    };
    let nodes = result.map_err(|e| at.error(e))?;
    let mut im = Importer {
        warnings: std::mem::take(&mut reader.warnings),
        ..Importer::default()
    };
    let file = im.file(&nodes);
    let interface = match options.interface.trim() {
        "" => im.interface_from_vrrp(&file).map_err(|e| at.error(e))?,
        name => name.to_owned(),
    };
    let mut body = Yaml::default();
    render(&mut body, &file, &interface);
    im.validate(&body, source).map_err(|e| at.error(e))?;
    im.warnings.sort_by_key(|w| w.line);
    let warnings: Vec<Warning> = im.warnings.into_iter().map(|w| at.warning(w)).collect();
    let header = header(source, &file, &warnings);
    header_is_only_comments(&header)?;
    let yaml = format!("{header}{}", at.yaml_comments(&body.out));
    Ok(Import { yaml, warnings })
}

/// Maps the reader's reading-order lines back to files and their lines.
struct Locator {
    names: Vec<String>,
    origins: Vec<(usize, usize)>,
}

impl Locator {
    /// Whether lines need mapping at all (only after an include).
    fn included(&self) -> bool {
        self.names.len() > 1
    }

    /// File (`None`: the main one) and line of reading-order line `n`.
    fn place(&self, n: usize) -> (Option<&str>, usize) {
        match self.origins.get(n.wrapping_sub(1)) {
            Some(&(0, line)) => (None, line),
            Some(&(f, line)) => (self.names.get(f).map(String::as_str), line),
            None => (None, n),
        }
    }

    fn warning(&self, w: Warning) -> Warning {
        if !self.included() {
            return w;
        }
        let (file, line) = self.place(w.line);
        Warning {
            line,
            file: file.map(str::to_owned),
            message: self.text(&w.message),
        }
    }

    fn error(&self, mut e: ImportError) -> ImportError {
        if !self.included() {
            return e;
        }
        let Some(n) = e.line_mut() else {
            return e;
        };
        let (file, line) = self.place(*n);
        *n = line;
        match file {
            Some(file) => ImportError::InFile {
                file: file.to_owned(),
                error: Box::new(e),
            },
            None => e,
        }
    }

    /// The YAML with the line references of its comments mapped (values are left alone).
    fn yaml_comments(&self, yaml: &str) -> String {
        if !self.included() {
            return yaml.to_owned();
        }
        let mut out = String::with_capacity(yaml.len());
        for line in yaml.split_inclusive('\n') {
            let at = comment_start(line).unwrap_or(line.len());
            out.push_str(&line[..at]);
            out.push_str(&self.text(&line[at..]));
        }
        out
    }

    /// `text` with each `line N` (a reading-order line) written as `line N of FILE`, or as the
    /// main file's `line N`.
    fn text(&self, text: &str) -> String {
        if !self.included() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("line ") {
            let word_start = rest[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            out.push_str(&rest[..i + 5]);
            rest = &rest[i + 5..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if !word_start || digits == 0 {
                continue;
            }
            let n: usize = rest[..digits].parse().unwrap_or(0);
            let (file, line) = self.place(n);
            // The YAML's "keepalived.conf line N" is in another file now.
            if file.is_some() && out.ends_with("keepalived.conf line ") {
                out.truncate(out.len() - "keepalived.conf line ".len());
                out.push_str("line ");
            }
            out.push_str(&line.to_string());
            if let Some(file) = file {
                out.push_str(" of ");
                out.push_str(&comment_text(file));
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
        out
    }
}

/// Where a YAML line's comment starts: a `#` at the start or after a blank, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if previous == ' ' || previous == '\t' => return Some(i),
            (None, '"' | '\'') => quote = Some(c),
            (Some('"'), '\\') => {}
            (Some(q), c) if c == q && !(q == '"' && previous == '\\') => quote = None,
            _ => {}
        }
        previous = c;
    }
    None
}
