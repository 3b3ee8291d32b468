//! Import of a keepalived.conf: its `virtual_server` blocks become an `lb-agent` configuration.
//!
//! The file is read the way keepalived reads it, so that the result behaves like the services
//! keepalived actually ran, not like the ones the file seems to describe:
//!
//! - words are separated by white space, a `"quoted string"` is one word, and `{` / `}` outside
//!   quotes are block delimiters wherever they are on the line;
//! - `#` and `!` outside double quotes start a comment that runs to the end of the line (`\#`
//!   and `\!` are literal); comments may be in any language;
//! - keywords are case-sensitive; an unknown keyword is ignored, so its value keeps its
//!   default (a misspelled `protocal UDP` leaves the protocol TCP);
//! - a script (`notify_up`, `quorum_down`, `misc_path`, ...) is the first word after the
//!   keyword, split again into arguments with quotes and backslash escapes; later words name
//!   the user and group keepalived runs it as.
//!
//! Everything that is not a service (`global_defs`, `vrrp_instance`, ...) stays keepalived's job
//! and is reported, as is every keyword whose meaning the YAML cannot carry. What lb-agent
//! refuses (NAT, TUN, unserved schedulers, ...) is carried into the YAML as keepalived had it,
//! and reported with the reason `lb-agent --check-config` gives.
//!
//! IPv6 services convert like IPv4 ones; their `persistence_granularity` is a prefix length
//! (1 to 128), as keepalived takes it, and stays one in the YAML.

use std::{collections::BTreeSet, fmt, net::IpAddr, ops::RangeInclusive, path::Path};

use thiserror::Error;

use crate::config::Config;

/// Name used for the source in the YAML header when the caller does not give one.
const DEFAULT_SOURCE: &str = "keepalived.conf";

/// keepalived's checker defaults that lb-agent shares.
const DEFAULT_CONNECT_TIMEOUT: &str = "5";
/// keepalived's `delay_before_retry` for HTTP_GET and SSL_GET (1 s for the other checkers).
const HTTP_DEFAULT_DELAY_BEFORE_RETRY: f64 = 3.0;
/// keepalived's `persistence_timeout` when given without a value or implied by a granularity.
const DEFAULT_PERSISTENCE_TIMEOUT: u64 = 360;

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
    /// Line of keepalived.conf (1-based).
    pub line: usize,
    /// What happened, and what to do about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Input text reaches a terminal and YAML comments through warnings: no control
        // characters.
        write!(f, "line {}: {}", self.line, comment_text(&self.message))
    }
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
/// The largest text `$NAME` expansion may make.
pub const MAX_EXPANDED_BYTES: usize = crate::config::MAX_CONFIG_BYTES as usize;

impl ImportError {
    /// The line of keepalived.conf the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ImportError::UnexpectedClose { line }
            | ImportError::Unclosed { line, .. }
            | ImportError::StrayOpen { line }
            | ImportError::UnterminatedQuote { line }
            | ImportError::Unsupported { line, .. }
            | ImportError::TooDeep { line }
            | ImportError::ExpansionTooLarge { line } => Some(*line),
            ImportError::NoInterface
            | ImportError::BadInterface { .. }
            | ImportError::Unreadable { .. } => None,
        }
    }
}

/// Converts keepalived.conf `text` into an `lb-agent` configuration whose XDP program attaches
/// to `interface`. With an empty `interface`, the first `vrrp_instance`'s interface is used
/// (with a warning).
pub fn import(text: &str, interface: &str) -> Result<Import, ImportError> {
    import_named(text, interface, DEFAULT_SOURCE)
}

/// [`import`], naming the source file (`source`) in the YAML header (`lbadm import-keepalived
/// FILE` passes its FILE).
pub fn import_named(text: &str, interface: &str, source: &str) -> Result<Import, ImportError> {
    let (nodes, warnings) = parse(text)?;
    let mut im = Importer { warnings };
    let file = im.file(&nodes);
    let interface = match interface.trim() {
        "" => im.interface_from_vrrp(&file)?,
        name => name.to_owned(),
    };
    let mut body = Yaml::default();
    render(&mut body, &file, &interface);
    im.validate(&body, source)?;
    im.warnings.sort_by_key(|w| w.line);
    let header = header(source, &file, &im.warnings);
    header_is_only_comments(&header)?;
    let yaml = format!("{header}{}", body.out);
    Ok(Import {
        yaml,
        warnings: im.warnings,
    })
}

// ------------------------------------------------------------------------------------------
// Reading: lines → statements → blocks.

/// One statement: a line (or the part of one between braces) of words.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    /// Line number (1-based).
    line: usize,
    /// The words, quotes removed (keepalived's keyword tokenizer).
    words: Vec<String>,
    /// The statement's text, comments removed (re-read for scripts).
    raw: String,
    /// The block that follows the statement, if any.
    block: Option<Vec<Node>>,
}

impl Node {
    /// The keyword.
    fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// Word `i`, if present.
    fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }

    /// The children, empty when there is no block.
    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or_default()
    }
}

/// A piece of a line: words, or a brace.
#[derive(Debug)]
enum Token {
    Words { line: usize, text: String },
    Open(usize),
    Close(usize),
}

/// keepalived's white space.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Reads the whole file into top-level statements with their blocks, and warnings about lines
/// read differently from keepalived.
fn parse(text: &str) -> Result<(Vec<Node>, Vec<Warning>), ImportError> {
    let mut tokens = Vec::new();
    let mut warnings = Vec::new();
    let mut defs: Vec<(String, String)> = Vec::new();
    let mut budget = MAX_EXPANDED_BYTES;
    for (i, raw_line) in text.lines().enumerate() {
        let line = i + 1;
        let mut text = decomment(raw_line, line)?;
        if text.is_empty() {
            continue;
        }
        if let Some(rest) = text.strip_prefix('@') {
            // `@id ...` applies only where keepalived runs with that config id (`@^id`: only
            // where it does not). The importer cannot know the target director, so it reads the
            // line (dropping it could unbalance the braces) and says so.
            let (id, rest) = rest.split_once(is_space).unwrap_or((rest, ""));
            warnings.push(Warning {
                line,
                message: format!(
                    "this line applies only where keepalived's config id {} {}: imported as if \
                     it applied to this director",
                    if id.starts_with('^') { "is not" } else { "is" },
                    id.trim_start_matches('^')
                ),
            });
            text = rest.trim_matches(is_space).to_owned();
            if text.is_empty() {
                continue;
            }
        }
        if text.starts_with("~SEQ") {
            return Err(ImportError::Unsupported {
                line,
                what: "~SEQ (a generated sequence of lines)".to_owned(),
            });
        }
        if let Some(def) = definition(&text) {
            if def.1.ends_with('\\') {
                return Err(ImportError::Unsupported {
                    line,
                    what: format!("the multi-line definition ${}", def.0),
                });
            }
            defs.retain(|(n, _)| *n != def.0);
            defs.push(def);
            continue;
        }
        if !defs.is_empty() && text.contains('$') {
            text =
                substitute(&text, &defs, budget).ok_or(ImportError::ExpansionTooLarge { line })?;
        }
        budget = budget
            .checked_sub(text.len())
            .ok_or(ImportError::ExpansionTooLarge { line })?;
        split_braces(&text, line, &mut tokens);
    }
    Ok((build(tokens)?, warnings))
}

/// Removes a comment: from the first `#` or `!` outside double quotes to the end of the line.
/// `\#` and `\!` outside quotes stand for the character itself. Also trims the line.
fn decomment(line: &str, no: usize) -> Result<String, ImportError> {
    let mut out = String::with_capacity(line.len());
    let mut quote = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' => match chars.next() {
                Some(n @ ('#' | '!')) if !quote => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '#' | '!' if !quote => break,
            _ => out.push(c),
        }
    }
    if quote {
        return Err(ImportError::UnterminatedQuote { line: no });
    }
    Ok(out.trim_matches(is_space).to_owned())
}

/// `$NAME=value`: a keepalived parameter definition.
fn definition(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix('$')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim_end_matches([' ', '\t']);
    let mut chars = name.chars();
    let first = chars.next()?;
    let ok = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| (name.to_owned(), value.trim_matches(is_space).to_owned()))
}

/// Replaces `$NAME` and `${NAME}` by the values of the definitions made so far; `None` when
/// the result would be longer than `max` bytes.
fn substitute(text: &str, defs: &[(String, String)], max: usize) -> Option<String> {
    let mut out = String::with_capacity(text.len().min(max));
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match defs.iter().find(|(n, _)| n == name) {
            Some((_, value)) if !name.is_empty() => {
                if out.len() + value.len() > max {
                    return None;
                }
                out.push_str(value);
                rest = &after[used..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out.len() <= max).then_some(out)
}

/// Splits a comment-free line at every `{` and `}` outside double quotes.
fn split_braces(text: &str, line: usize, tokens: &mut Vec<Token>) {
    let mut start = 0;
    let mut quote = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quote = !quote,
            '{' | '}' if !quote => {
                push_words(&text[start..i], line, tokens);
                tokens.push(if c == '{' {
                    Token::Open(line)
                } else {
                    Token::Close(line)
                });
                start = i + 1;
            }
            _ => {}
        }
    }
    push_words(&text[start..], line, tokens);
}

fn push_words(text: &str, line: usize, tokens: &mut Vec<Token>) {
    let text = text.trim_matches(is_space);
    if !text.is_empty() {
        tokens.push(Token::Words {
            line,
            text: text.to_owned(),
        });
    }
}

/// keepalived's keyword tokenizer: white-space separated words; a word starting with `"` runs
/// to the next `"` (the quotes are dropped); an unquoted word also ends at a `"`.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(is_space);
        if rest.is_empty() {
            return out;
        }
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            out.push(quoted[..end].to_owned());
            rest = quoted.get(end + 1..).unwrap_or_default();
        } else {
            let end = rest
                .find(|c: char| is_space(c) || c == '"')
                .unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
}

/// Builds the block structure: a `{` opens a block for the statement just before it.
fn build(tokens: Vec<Token>) -> Result<Vec<Node>, ImportError> {
    let mut top: Vec<Node> = Vec::new();
    let mut open: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut may_open = false;
    for token in tokens {
        if let Token::Open(line) = token
            && open.len() >= MAX_BLOCK_DEPTH
        {
            return Err(ImportError::TooDeep { line });
        }
        let current = match open.last_mut() {
            Some((_, children)) => children,
            None => &mut top,
        };
        match token {
            Token::Words { line, text } => {
                current.push(Node {
                    line,
                    words: words(&text),
                    raw: text,
                    block: None,
                });
                may_open = true;
            }
            Token::Open(line) => {
                let node = current.pop().filter(|_| may_open);
                let Some(node) = node else {
                    return Err(ImportError::StrayOpen { line });
                };
                open.push((node, Vec::new()));
                may_open = false;
            }
            Token::Close(line) => {
                let Some((mut node, children)) = open.pop() else {
                    return Err(ImportError::UnexpectedClose { line });
                };
                node.block = Some(children);
                match open.last_mut() {
                    Some((_, children)) => children.push(node),
                    None => top.push(node),
                }
                may_open = false;
            }
        }
    }
    if let Some((node, _)) = open.into_iter().next() {
        return Err(ImportError::Unclosed {
            line: node.line,
            keyword: node.keyword().to_owned(),
        });
    }
    Ok(top)
}

/// keepalived's script tokenizer: white-space separated words, `"` and `'` quote (also inside a
/// word), and `\` escapes (`\n`, `\t`, `\x41`, `\101`, `\cX`, or the character itself).
fn script_words(text: &str) -> Result<Vec<String>, String> {
    let cs: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < cs.len() && is_space(cs[i]) {
            i += 1;
        }
        if i == cs.len() {
            return Ok(out);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while i < cs.len() {
            let c = cs[i];
            i += 1;
            match (quote, c) {
                (_, '\\') => {
                    let Some(&e) = cs.get(i) else {
                        return Err("a `\\` ends the script".to_owned());
                    };
                    i += 1;
                    word.push(escape(e, &cs, &mut i));
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '"' | '\'') => quote = Some(c),
                (None, c) if is_space(c) => break,
                (None, c) => word.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!("a closing {q} is missing"));
        }
        out.push(word);
    }
}

/// The character a backslash escape `\e...` stands for; `i` is just after `e`.
fn escape(e: char, cs: &[char], i: &mut usize) -> char {
    let digits = |i: &mut usize, radix: u32, max: usize| {
        let mut value: u32 = 0;
        let mut n = 0;
        while n < max {
            match cs.get(*i).and_then(|c| c.to_digit(radix)) {
                Some(d) => value = value * radix + d,
                None => break,
            }
            *i += 1;
            n += 1;
        }
        char::from_u32(value & 0xff).unwrap_or('?')
    };
    match e {
        'x' if cs.get(*i).is_some_and(char::is_ascii_hexdigit) => digits(i, 16, 2),
        'c' if *i < cs.len() => {
            let c = cs[*i];
            *i += 1;
            char::from_u32(u32::from(c) & 0x1f).unwrap_or('?')
        }
        '0'..='7' => {
            *i -= 1;
            digits(i, 8, 3)
        }
        'a' => '\x07',
        'b' => '\x08',
        'E' => '\x1b',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        other => other,
    }
}

/// A command line for `sh -c` that runs exactly `argv` (keepalived runs scripts without a
/// shell, so every word is quoted where a shell would change it).
fn shell_join(argv: &[String]) -> String {
    let quote = |w: &String| {
        let plain = !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
        if plain {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

// ------------------------------------------------------------------------------------------
// Interpreting: statements → the services keepalived would run.

/// A value and the line it was set on.
type At<T> = Option<(T, usize)>;

/// What the file describes: the services, and what keepalived keeps doing.
#[derive(Default)]
struct File {
    services: Vec<Service>,
    vrrp: Vec<Vrrp>,
}

/// A `vrrp_instance`.
struct Vrrp {
    name: String,
    interface: At<String>,
    vips: Vec<String>,
}

/// A `virtual_server`.
struct Service {
    line: usize,
    vip: IpAddr,
    port: Option<u16>,
    protocol: At<String>,
    lb_algo: At<String>,
    lb_kind: At<String>,
    persistence_timeout: At<u64>,
    persistence_granularity: At<String>,
    delay_loop: At<f64>,
    warmup: At<f64>,
    alpha: At<bool>,
    omega: At<bool>,
    inhibit_on_failure: At<bool>,
    quorum: At<u64>,
    hysteresis: At<u64>,
    quorum_up: At<String>,
    quorum_down: At<String>,
    sorry_server: Option<(IpAddr, Option<u16>, usize)>,
    timing: Timing,
    reals: Vec<Real>,
    /// Unknown keywords that probably meant one of ours: (meant, line, as written).
    misspelled: Vec<(&'static str, usize, String)>,
}

/// Checker timing, set on a checker or inherited from its real or virtual server.
#[derive(Clone, Default)]
struct Timing {
    connect_timeout: At<f64>,
    retry: At<u64>,
    delay_before_retry: At<f64>,
    warmup: At<f64>,
}

/// A `real_server`.
struct Real {
    line: usize,
    ip: IpAddr,
    port: Option<u16>,
    weight: At<u64>,
    inhibit_on_failure: At<bool>,
    notify_up: At<String>,
    notify_down: At<String>,
    method: At<String>,
    timing: Timing,
    /// keepalived's per-real `delay_loop` (lb-agent has one per service).
    delay_loop: At<f64>,
    check: Option<Check>,
}

/// The checker kinds lb-agent has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckKind {
    Tcp,
    Http,
    Misc,
}

/// A `TCP_CHECK`, `HTTP_GET` (or `SSL_GET` as a TCP check) or `MISC_CHECK`.
struct Check {
    kind: CheckKind,
    line: usize,
    /// The keepalived keyword (`SSL_GET` differs from `kind`).
    keyword: &'static str,
    connect_ip: At<IpAddr>,
    connect_port: At<u16>,
    bindto: At<IpAddr>,
    bind_port: At<u16>,
    timing: Timing,
    urls: Vec<Url>,
    misc_path: At<String>,
    misc_timeout: At<u64>,
    /// keepalived's per-checker `delay_loop` (lb-agent has one per service).
    delay_loop: At<f64>,
    /// Value and line of an `nb_get_retry` in a TCP_CHECK, which keepalived does not know (so
    /// it is not applied).
    tcp_nb_get_retry: Option<(u64, usize)>,
}

/// One `url` of an HTTP_GET.
struct Url {
    line: usize,
    path: At<String>,
    status_code: At<u16>,
    /// No status_code: keepalived accepts any 2xx.
    any_2xx: bool,
}

/// Root keywords that keepalived handles itself, with what to tell the operator.
const KEEPALIVED_ONLY: &[(&str, &str)] = &[
    ("global_defs", "not converted (it stays in keepalived.conf)"),
    ("vrrp_script", "keep running keepalived for VRRP"),
    ("vrrp_sync_group", "keep running keepalived for VRRP"),
    (
        "static_ipaddress",
        "not converted (it stays in keepalived.conf)",
    ),
    (
        "static_routes",
        "not converted (it stays in keepalived.conf)",
    ),
    (
        "static_rules",
        "not converted (it stays in keepalived.conf)",
    ),
    ("linkbeat_interfaces", "keep running keepalived for VRRP"),
    ("vrrp_track_process", "keep running keepalived for VRRP"),
    ("track_file", "keep running keepalived for VRRP"),
    ("vrrp_track_file", "keep running keepalived for VRRP"),
    ("garp_group", "keep running keepalived for VRRP"),
    ("bfd_instance", "lb-agent has no BFD checker"),
    ("SSL", "lb-agent has no SSL_GET checker"),
    (
        "net_namespace",
        "not converted (lb-agent runs where it is started)",
    ),
    (
        "net_namespace_ipvs",
        "not converted (lb-agent does not use IPVS)",
    ),
    (
        "instance",
        "not converted (lb-agent's `instance` key is its own)",
    ),
    ("use_pid_dir", "not converted"),
    ("child_wait_time", "not converted"),
];

/// Keywords keepalived knows at the top level.
const ROOT_KEYWORDS: &[&str] = &[
    "virtual_server",
    "virtual_server_group",
    "vrrp_instance",
    "include",
    "global_defs",
    "vrrp_script",
    "vrrp_sync_group",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_interfaces",
    "vrrp_track_process",
    "track_file",
    "vrrp_track_file",
    "garp_group",
    "bfd_instance",
    "SSL",
    "net_namespace",
    "net_namespace_ipvs",
    "instance",
    "use_pid_dir",
    "child_wait_time",
];

/// Keywords of a `virtual_server` (keepalived 2.x).
const VS_KEYWORDS: &[&str] = &[
    "delay_loop",
    "lb_algo",
    "lvs_sched",
    "lb_kind",
    "lvs_method",
    "persistence_timeout",
    "persistence_granularity",
    "protocol",
    "alpha",
    "omega",
    "quorum",
    "hysteresis",
    "quorum_up",
    "quorum_down",
    "sorry_server",
    "inhibit_on_failure",
    "ha_suspend",
    "virtualhost",
    "warmup",
    "connect_timeout",
    "retry",
    "delay_before_retry",
    "real_server",
    "ip_family",
    "hashed",
    "ops",
    "flag-1",
    "flag-2",
    "flag-3",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "mh-fallback",
    "persistence_engine",
    "smtp_alert",
    "snmp_name",
    "weight",
    "sorry_server_inhibit",
    "sorry_server_lvs_method",
    "nat_mask",
];

/// Keywords of a `real_server` (keepalived 2.x), checkers included.
const RS_KEYWORDS: &[&str] = &[
    "weight",
    "inhibit_on_failure",
    "notify_up",
    "notify_down",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "SMTP_CHECK",
    "DNS_CHECK",
    "UDP_CHECK",
    "PING_CHECK",
    "FILE_CHECK",
    "BFD_CHECK",
    "lvs_method",
    "uthreshold",
    "lthreshold",
    "alpha",
    "retry",
    "delay_before_retry",
    "warmup",
    "connect_timeout",
    "delay_loop",
    "smtp_alert",
    "virtualhost",
    "snmp_name",
];

/// Keywords of every network checker.
const CHECK_KEYWORDS: &[&str] = &[
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "delay_before_retry",
    "warmup",
    "bind_if",
    "fwmark",
    "delay_loop",
    "alpha",
    "log_all_failures",
];

/// Keywords HTTP_GET and SSL_GET add.
const HTTP_KEYWORDS: &[&str] = &[
    "url",
    "nb_get_retry",
    "virtualhost",
    "http_protocol",
    "enable_sni",
    "fast_recovery",
];

/// Keywords of a `url` block.
const URL_KEYWORDS: &[&str] = &[
    "path",
    "status_code",
    "digest",
    "virtualhost",
    "regex",
    "regex_no_match",
    "regex_options",
    "regex_min_offset",
    "regex_max_offset",
    "regex_stack",
];

/// Keywords of a MISC_CHECK.
const MISC_KEYWORDS: &[&str] = &[
    "misc_path",
    "misc_timeout",
    "warmup",
    "misc_dynamic",
    "user",
    "retry",
    "delay_before_retry",
    "delay_loop",
    "alpha",
    "log_all_failures",
];

/// IPVS schedulers keepalived accepts (names are lower case).
const KEEPALIVED_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos",
];

/// An unknown keyword, reported once its block is read (so the report can say what the value
/// it was probably meant for ended up as).
struct Unknown {
    line: usize,
    word: String,
    suggestion: Option<&'static str>,
    has_block: bool,
}

/// Collects warnings while the file is interpreted.
#[derive(Default)]
struct Importer {
    warnings: Vec<Warning>,
}

impl Importer {
    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.warnings.push(Warning {
            line,
            message: message.into(),
        });
    }

    /// The whole file.
    fn file(&mut self, nodes: &[Node]) -> File {
        let scripts: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.keyword() == "vrrp_script")
            .filter_map(|n| n.word(1))
            .collect();
        let mut file = File::default();
        let mut unknown = Vec::new();
        for n in nodes {
            match n.keyword() {
                "virtual_server" => {
                    if let Some(s) = self.service(n) {
                        file.services.push(s);
                    }
                }
                "virtual_server_group" => self.warn(
                    n.line,
                    format!(
                        "virtual_server_group {} is not supported by lb-agent: not converted \
                         (write one virtual_server per address and port)",
                        n.word(1).unwrap_or("")
                    ),
                ),
                "vrrp_instance" => file.vrrp.push(self.vrrp(n, &scripts)),
                "include" => self.warn(
                    n.line,
                    format!(
                        "include {} is not followed: import that file too and merge its \
                         virtual_servers",
                        n.words[1..].join(" ")
                    ),
                ),
                kw => match KEEPALIVED_ONLY.iter().find(|(k, _)| *k == kw) {
                    Some((_, advice)) => {
                        let name = if n.block.is_some() {
                            n.word(1).map(|w| format!(" {w}")).unwrap_or_default()
                        } else {
                            String::new()
                        };
                        self.warn(
                            n.line,
                            format!(
                                "{kw}{name} is handled by keepalived, not by lb-agent: {advice}"
                            ),
                        );
                    }
                    None => unknown.push(self.unknown(n, ROOT_KEYWORDS)),
                },
            }
        }
        self.report_unknown(unknown, |_| None);
        if nodes.is_empty() || file.services.is_empty() {
            let line = nodes.first().map_or(1, |n| n.line);
            self.warn(
                line,
                "no virtual_server to convert: the YAML has no virtual_servers",
            );
        }
        self.check_vips(&file);
        file
    }

    /// A `vrrp_instance`: not converted, but its interface and VIPs matter.
    fn vrrp(&mut self, n: &Node, scripts: &BTreeSet<&str>) -> Vrrp {
        let name = n.word(1).unwrap_or("").to_owned();
        let mut vrrp = Vrrp {
            name: name.clone(),
            interface: None,
            vips: Vec::new(),
        };
        for c in n.children() {
            match c.keyword() {
                "interface" => {
                    if let Some(i) = c.word(1) {
                        vrrp.interface = Some((i.to_owned(), c.line));
                    }
                }
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    for a in c.children() {
                        let addr = a.keyword();
                        let addr = addr.split_once('/').map_or(addr, |(a, _)| a);
                        vrrp.vips.push(addr.to_owned());
                    }
                }
                "track_script" => {
                    for s in c.children() {
                        if !scripts.contains(s.keyword()) {
                            self.warn(
                                s.line,
                                format!(
                                    "vrrp_instance {name} tracks the script {}, which no \
                                     vrrp_script in this file defines: keepalived ignores that \
                                     track (not converted; fix it in keepalived.conf)",
                                    s.keyword()
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        let owns = match vrrp.vips.len() {
            0 => "it owns no VIP".to_owned(),
            1 => format!("it owns the VIP {}", vrrp.vips[0]),
            _ => format!("it owns the VIPs {}", vrrp.vips.join(", ")),
        };
        self.warn(
            n.line,
            format!(
                "vrrp_instance {name} is handled by keepalived, not by lb-agent: keep running \
                 keepalived for VRRP ({owns})"
            ),
        );
        vrrp
    }

    /// With no interface given: the first vrrp_instance's.
    fn interface_from_vrrp(&mut self, file: &File) -> Result<String, ImportError> {
        let found = file
            .vrrp
            .iter()
            .find_map(|v| v.interface.clone().map(|i| (v, i)));
        let Some((v, (name, line))) = found else {
            return Err(ImportError::NoInterface);
        };
        self.warn(
            line,
            format!(
                "no interface given: using {name}, the interface of vrrp_instance {} (the VIP \
                 traffic must arrive there)",
                v.name
            ),
        );
        Ok(name)
    }

    /// Services whose VIP no vrrp_instance of the file holds (a file without vrrp_instance is
    /// explained in the YAML header instead).
    fn check_vips(&mut self, file: &File) {
        if file.vrrp.is_empty() {
            return;
        }
        let held: BTreeSet<IpAddr> = file
            .vrrp
            .iter()
            .flat_map(|v| v.vips.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        let mut told = BTreeSet::new();
        for s in &file.services {
            if !held.contains(&s.vip) && told.insert(s.vip) {
                self.warn(
                    s.line,
                    format!(
                        "VIP {} is not a virtual_ipaddress of any vrrp_instance in this file: \
                         with manage_vip: false, lb-agent expects keepalived or something else \
                         to hold it (set manage_vip: true to have lb-agent add it)",
                        s.vip
                    ),
                );
            }
        }
    }

    /// An unknown keyword, to report after its block is read.
    fn unknown(&mut self, n: &Node, known: &[&'static str]) -> Unknown {
        Unknown {
            line: n.line,
            word: n.keyword().to_owned(),
            suggestion: suggest(n.keyword(), known),
            has_block: n.block.is_some(),
        }
    }

    /// Reports unknown keywords; `stays` says what the suggested keyword's value is.
    fn report_unknown(&mut self, unknown: Vec<Unknown>, stays: impl Fn(&str) -> Option<String>) {
        for u in unknown {
            let mut msg = format!("unknown keyword \"{}\"", u.word);
            if let Some(s) = u.suggestion {
                msg.push_str(&format!(" (did you mean \"{s}\"?)"));
            }
            if u.has_block {
                msg.push_str(
                    ": ignored with its block (keepalived ignores the keyword but then reads the \
                     block's lines into the enclosing block, which the block's `}` closes \
                     early): fix the keyword",
                );
            } else {
                msg.push_str(": ignored as keepalived does");
                if let Some(what) = u.suggestion.and_then(&stays) {
                    msg.push_str("; ");
                    msg.push_str(&what);
                }
            }
            self.warn(u.line, msg);
        }
    }

    /// Word 1 of `n`, warning when it is missing or followed by more words.
    fn value<'n>(&mut self, n: &'n Node, stays: &str) -> Option<&'n str> {
        let Some(v) = n.word(1) else {
            self.warn(
                n.line,
                format!(
                    "{} has no value: ignored as keepalived does; {stays}",
                    n.keyword()
                ),
            );
            return None;
        };
        self.extra_words(n, 2);
        self.no_block(n);
        Some(v)
    }

    /// Warns about words after the first `used` ones.
    fn extra_words(&mut self, n: &Node, used: usize) {
        if n.words.len() > used {
            self.warn(
                n.line,
                format!(
                    "\"{}\" after {} is ignored, as keepalived ignores extra words (one keyword \
                     per line)",
                    n.words[used..].join(" "),
                    n.words[..used].join(" ")
                ),
            );
        }
    }

    /// Warns about a block after a keyword that takes none.
    fn no_block(&mut self, n: &Node) {
        if n.block.is_some() {
            self.warn(
                n.line,
                format!(
                    "{} takes no block: its block is ignored (keepalived would read the block's \
                     lines into the enclosing block): remove the braces",
                    n.keyword()
                ),
            );
        }
    }

    /// A whole number in `range`, or a warning that keepalived ignores the value.
    fn uint(&mut self, n: &Node, range: RangeInclusive<u64>, stays: &str) -> Option<u64> {
        let v = self.value(n, stays)?;
        match v.parse::<u64>() {
            Ok(x) if range.contains(&x) => Some(x),
            _ => {
                let expected = format!("a whole number from {} to {}", range.start(), range.end());
                self.invalid(n, v, &expected, stays);
                None
            }
        }
    }

    /// A number of seconds (fractions allowed, as keepalived's timers).
    fn seconds(&mut self, n: &Node, min: f64, stays: &str) -> Option<f64> {
        let v = self.value(n, stays)?;
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= min => Some(x),
            _ => {
                self.invalid(n, v, "a number of seconds", stays);
                None
            }
        }
    }

    /// A port, 1 to 65535.
    fn port(&mut self, n: &Node, stays: &str) -> Option<u16> {
        let v = self.value(n, stays)?;
        match v.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.invalid(n, v, "a port (1 to 65535)", stays);
                None
            }
        }
    }

    /// An IP address.
    fn address(&mut self, n: &Node, stays: &str) -> Option<IpAddr> {
        let v = self.value(n, stays)?;
        match v.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.invalid(n, v, "an IP address", stays);
                None
            }
        }
    }

    /// A flag with keepalived's optional `true|on|yes` / `false|off|no`.
    fn flag(&mut self, n: &Node, stays: &str) -> Option<bool> {
        self.no_block(n);
        self.extra_words(n, 2);
        match n.word(1) {
            None => Some(true),
            Some("true" | "on" | "yes") => Some(true),
            Some("false" | "off" | "no") => Some(false),
            Some(v) => {
                self.invalid(n, v, "true/on/yes or false/off/no", stays);
                None
            }
        }
    }

    /// A flag keepalived takes without a value (a value is ignored, as keepalived does).
    fn bare_flag(&mut self, n: &Node) -> bool {
        self.no_block(n);
        self.extra_words(n, 1);
        true
    }

    fn invalid(&mut self, n: &Node, v: &str, expected: &str, stays: &str) {
        self.warn(
            n.line,
            format!(
                "{} {v}: not {expected}, so keepalived ignores it; {stays}",
                n.keyword()
            ),
        );
    }

    /// A keyword keepalived accepts but lb-agent does not carry.
    fn not_carried(&mut self, n: &Node, why: &str) {
        self.warn(
            n.line,
            format!("{} is not carried by lb-agent: ignored ({why})", n.raw),
        );
    }

    /// A script: the command (word 1, split into arguments) as a `sh -c` line. Later words are
    /// the user and group keepalived runs it as, which lb-agent does not do.
    fn script(&mut self, n: &Node, stays: &str) -> Option<String> {
        self.no_block(n);
        let all = match script_words(&n.raw) {
            Ok(w) => w,
            Err(e) => {
                self.warn(
                    n.line,
                    format!(
                        "{}: {e}: keepalived ignores the script; {stays}",
                        n.keyword()
                    ),
                );
                return None;
            }
        };
        let Some(command) = all.get(1) else {
            self.warn(
                n.line,
                format!(
                    "{} has no script: ignored as keepalived does; {stays}",
                    n.keyword()
                ),
            );
            return None;
        };
        let argv = match script_words(command) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                self.warn(
                    n.line,
                    format!(
                        "{} has an empty script: ignored as keepalived does; {stays}",
                        n.keyword()
                    ),
                );
                return None;
            }
            Err(e) => {
                self.warn(
                    n.line,
                    format!(
                        "{}: {e}: keepalived ignores the script; {stays}",
                        n.keyword()
                    ),
                );
                return None;
            }
        };
        if all.len() > 2 {
            self.warn(
                n.line,
                format!(
                    "{}: keepalived runs \"{}\" as user {} (the words after the script); \
                     lb-agent runs its scripts as its own user. To pass arguments, quote the \
                     whole command line",
                    n.keyword(),
                    command,
                    all[2..].join(" and group ")
                ),
            );
        }
        Some(shell_join(&argv))
    }

    /// A `virtual_server` block; `None` when keepalived would not create it.
    fn service(&mut self, n: &Node) -> Option<Service> {
        let what = n.words[1..].join(" ");
        match n.word(1) {
            Some("fwmark") | Some("group") => {
                self.warn(
                    n.line,
                    format!(
                        "virtual_server {what} is not supported by lb-agent (it serves one \
                         address and port per service): block skipped"
                    ),
                );
                return None;
            }
            None => {
                self.warn(
                    n.line,
                    "virtual_server without an address: block skipped, as keepalived does",
                );
                return None;
            }
            Some(_) => {}
        }
        let vip = n.word(1).and_then(|v| v.parse::<IpAddr>().ok());
        let port = match n.word(2) {
            None => Some(None),
            Some(p) => p.parse::<u16>().ok().map(Some),
        };
        let (Some(vip), Some(port)) = (vip, port) else {
            self.warn(
                n.line,
                format!(
                    "virtual_server {what}: not an IP address and port, so keepalived skips the \
                     block; not converted"
                ),
            );
            return None;
        };
        self.extra_words(n, 3);
        if n.block.is_none() {
            self.warn(
                n.line,
                format!("virtual_server {what} has no block: converted with keepalived's defaults"),
            );
        }
        let mut s = Service {
            line: n.line,
            vip,
            port,
            protocol: None,
            lb_algo: None,
            lb_kind: None,
            persistence_timeout: None,
            persistence_granularity: None,
            delay_loop: None,
            warmup: None,
            alpha: None,
            omega: None,
            inhibit_on_failure: None,
            quorum: None,
            hysteresis: None,
            quorum_up: None,
            quorum_down: None,
            sorry_server: None,
            timing: Timing::default(),
            reals: Vec::new(),
            misspelled: Vec::new(),
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            self.service_keyword(&mut s, c, &mut unknown);
        }
        s.misspelled = unknown
            .iter()
            .filter(|u| !u.has_block)
            .filter_map(|u| Some((u.suggestion?, u.line, u.word.clone())))
            .collect();
        self.report_unknown(unknown, |k| service_stays(&s, k));
        self.forwarding(&mut s);
        self.after_service(&s);
        Some(s)
    }

    fn service_keyword(&mut self, s: &mut Service, c: &Node, unknown: &mut Vec<Unknown>) {
        let l = c.line;
        match c.keyword() {
            "delay_loop" => {
                if let Some(v) = self.seconds(c, 1e-6, "delay_loop stays 60") {
                    s.delay_loop = Some((v, l));
                }
            }
            "lb_algo" | "lvs_sched" => {
                let stays = format!("lb_algo stays {}", current(&s.lb_algo, "wlc"));
                if let Some(v) = self.value(c, &stays) {
                    if KEEPALIVED_SCHEDULERS.contains(&v) {
                        s.lb_algo = Some((v.to_owned(), l));
                    } else {
                        let hint = if KEEPALIVED_SCHEDULERS.contains(&v.to_lowercase().as_str()) {
                            " (scheduler names are lower case)"
                        } else {
                            ""
                        };
                        self.warn(
                            l,
                            format!(
                                "{} {v} is not a keepalived scheduler{hint}: ignored as \
                                 keepalived does; {stays}",
                                c.keyword()
                            ),
                        );
                    }
                }
            }
            "lb_kind" | "lvs_method" => {
                let stays = format!("lb_kind stays {}", current(&s.lb_kind, "NAT"));
                if let Some(v) = self.value(c, &stays) {
                    s.lb_kind = self
                        .method(c, v, &stays)
                        .map(|m| (m, l))
                        .or(s.lb_kind.take());
                }
            }
            "persistence_timeout" => {
                if c.word(1).is_none() {
                    self.no_block(c);
                    s.persistence_timeout = Some((DEFAULT_PERSISTENCE_TIMEOUT, l));
                } else if let Some(v) = self.uint(c, 1..=31_536_000, "persistence stays off") {
                    s.persistence_timeout = Some((v, l));
                }
            }
            "persistence_granularity" => {
                let stays = granularity_stays(s.vip);
                if let Some(v) = self.value(c, stays) {
                    let (valid, expected) = match s.vip {
                        IpAddr::V4(_) => (v.parse::<std::net::Ipv4Addr>().is_ok(), "a netmask"),
                        IpAddr::V6(_) => (
                            v.parse::<u8>().is_ok_and(|p| (1..=128).contains(&p)),
                            "a prefix length from 1 to 128",
                        ),
                    };
                    if valid {
                        s.persistence_granularity = Some((v.to_owned(), l));
                    } else {
                        self.invalid(c, v, expected, stays);
                    }
                }
            }
            "protocol" => {
                let stays = format!("protocol stays {}", current(&s.protocol, "TCP"));
                if let Some(v) = self.value(c, &stays) {
                    match v.to_ascii_uppercase().as_str() {
                        "TCP" | "UDP" | "SCTP" => s.protocol = Some((v.to_ascii_lowercase(), l)),
                        _ => self.warn(
                            l,
                            format!(
                                "protocol {v} is not TCP, UDP or SCTP: ignored as keepalived \
                                 does; {stays}"
                            ),
                        ),
                    }
                }
            }
            "alpha" => s.alpha = Some((self.bare_flag(c), l)),
            "omega" => s.omega = Some((self.bare_flag(c), l)),
            "inhibit_on_failure" => s.inhibit_on_failure = Some((self.bare_flag(c), l)),
            "quorum" => {
                // keepalived sets an invalid quorum to 1.
                let q = self.uint(c, 1..=u64::from(u32::MAX), "quorum is set to 1");
                s.quorum = Some((q.unwrap_or(1), l));
            }
            "hysteresis" => {
                if let Some(v) = self.uint(c, 0..=u64::from(u32::MAX), "hysteresis stays 0") {
                    s.hysteresis = Some((v, l));
                }
            }
            "quorum_up" => {
                if let Some(v) = self.script(c, "no script runs when quorum is gained") {
                    s.quorum_up = s.quorum_up.take().or(Some((v, l)));
                }
            }
            "quorum_down" => {
                if let Some(v) = self.script(c, "no script runs when quorum is lost") {
                    s.quorum_down = s.quorum_down.take().or(Some((v, l)));
                }
            }
            "sorry_server" => {
                self.no_block(c);
                self.extra_words(c, 3);
                let ip = c.word(1).and_then(|v| v.parse::<IpAddr>().ok());
                let port = match c.word(2) {
                    None => Some(None),
                    Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).map(Some),
                };
                match (ip, port) {
                    (Some(ip), Some(port)) => s.sorry_server = Some((ip, port, l)),
                    _ => self.warn(
                        l,
                        format!(
                            "{}: not an IP address and port, so keepalived ignores it; there is \
                             no sorry server",
                            c.raw
                        ),
                    ),
                }
            }
            "warmup" => {
                if let Some(v) = self.seconds(c, 0.0, "warmup stays 0") {
                    s.warmup = Some((v, l));
                }
            }
            "connect_timeout" | "retry" | "delay_before_retry" => {
                self.timing(&mut s.timing, c, "inherited from keepalived's default");
            }
            "real_server" => {
                if let Some(r) = self.real(c) {
                    s.reals.push(r);
                }
            }
            "ip_family" => {
                let family = if s.vip.is_ipv4() { "inet" } else { "inet6" };
                if c.word(1) != Some(family) {
                    self.warn(
                        l,
                        format!("{}: the VIP {} is {family}: ignored", c.raw, s.vip),
                    );
                }
            }
            "ha_suspend" => self.not_carried(
                c,
                "lb-agent checks the reals whether or not this director holds the VIP",
            ),
            "virtualhost" => {
                self.not_carried(c, "lb-agent's HTTP checks send the real's address as Host")
            }
            "smtp_alert" => self.not_carried(c, "lb-agent has no e-mail alerts; see its logs"),
            "snmp_name" => self.not_carried(c, "lb-agent has no SNMP; see its metrics"),
            "hashed" | "ops" | "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback"
            | "mh-port" | "mh-fallback" => self.not_carried(
                c,
                "an IPVS scheduler flag; lb-agent's schedulers are described in its README",
            ),
            "persistence_engine" => {
                self.not_carried(c, "lb-agent's persistence is by client address only")
            }
            "weight" => self.not_carried(c, "a virtual_server_group weight"),
            "sorry_server_inhibit" | "sorry_server_lvs_method" => {
                self.not_carried(c, "lb-agent forwards to the sorry server like to any real")
            }
            "nat_mask" => self.not_carried(c, "lb-agent does direct routing only"),
            _ => unknown.push(self.unknown(c, VS_KEYWORDS)),
        }
    }

    /// `lb_kind` / `lvs_method`: keepalived knows NAT, DR and TUN, in capitals.
    fn method(&mut self, c: &Node, v: &str, stays: &str) -> Option<String> {
        if matches!(v, "NAT" | "DR" | "TUN") {
            return Some(v.to_owned());
        }
        let hint = if matches!(v.to_ascii_uppercase().as_str(), "NAT" | "DR" | "TUN") {
            " (keepalived wants it in capitals)"
        } else {
            ""
        };
        self.warn(
            c.line,
            format!(
                "{} {v} is not NAT, DR or TUN{hint}: ignored as keepalived does; {stays}",
                c.keyword()
            ),
        );
        None
    }

    /// The forwarding method of the service: a real's `lvs_method` overrides the service's, and
    /// lb-agent has one per service.
    fn forwarding(&mut self, s: &mut Service) {
        let methods: BTreeSet<&str> = s
            .reals
            .iter()
            .map(|r| {
                r.method
                    .as_ref()
                    .or(s.lb_kind.as_ref())
                    .map_or("NAT", |(m, _)| m.as_str())
            })
            .collect();
        if methods.len() == 1 {
            let only = methods.iter().next().copied().unwrap_or("NAT");
            let line = s
                .reals
                .iter()
                .find_map(|r| r.method.as_ref().map(|(_, l)| *l));
            if s.lb_kind.as_ref().map(|(m, _)| m.as_str()) != Some(only)
                && let Some(line) = line
            {
                // Every real overrides the service's method the same way.
                s.lb_kind = Some((only.to_owned(), line));
            }
        } else if methods.len() > 1 {
            let list: Vec<&str> = methods.into_iter().collect();
            self.warn(
                s.line,
                format!(
                    "the real servers use different forwarding methods ({}); lb-agent has one \
                     per virtual server: lb_kind {} is used",
                    list.join(", "),
                    current(&s.lb_kind, "NAT")
                ),
            );
        }
    }

    /// `connect_timeout`, `retry` or `delay_before_retry` into `t`.
    fn timing(&mut self, t: &mut Timing, c: &Node, stays: &str) {
        let l = c.line;
        let stays = format!("{} {stays}", c.keyword());
        match c.keyword() {
            "connect_timeout" => {
                if let Some(v) = self.seconds(c, 1e-6, &stays) {
                    t.connect_timeout = Some((v, l));
                }
            }
            "retry" | "nb_get_retry" => {
                if let Some(v) = self.uint(c, 0..=u64::from(u32::MAX), &stays) {
                    t.retry = Some((v, l));
                }
            }
            "delay_before_retry" => {
                if let Some(v) = self.seconds(c, 0.0, &stays) {
                    t.delay_before_retry = Some((v, l));
                }
            }
            _ => {
                if let Some(v) = self.seconds(c, 0.0, &stays) {
                    t.warmup = Some((v, l));
                }
            }
        }
    }

    /// A `real_server` block; `None` when keepalived would skip it.
    fn real(&mut self, n: &Node) -> Option<Real> {
        let ip = n.word(1).and_then(|v| v.parse::<IpAddr>().ok());
        let port = match n.word(2) {
            None => Some(None),
            Some(p) => p.parse::<u16>().ok().map(Some),
        };
        let (Some(ip), Some(port)) = (ip, port) else {
            self.warn(
                n.line,
                format!(
                    "{}: not an IP address and port, so keepalived skips this real server; not \
                     converted",
                    n.raw
                ),
            );
            return None;
        };
        self.extra_words(n, 3);
        let mut r = Real {
            line: n.line,
            ip,
            port,
            weight: None,
            inhibit_on_failure: None,
            notify_up: None,
            notify_down: None,
            method: None,
            timing: Timing::default(),
            delay_loop: None,
            check: None,
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            self.real_keyword(&mut r, c, &mut unknown);
        }
        self.report_unknown(unknown, |k| real_stays(&r, k));
        Some(r)
    }

    fn real_keyword(&mut self, r: &mut Real, c: &Node, unknown: &mut Vec<Unknown>) {
        let l = c.line;
        match c.keyword() {
            "weight" => {
                let max = u64::from(i32::MAX.unsigned_abs());
                if let Some(v) = self.uint(c, 0..=max, "weight stays 1") {
                    r.weight = Some((v, l));
                }
            }
            "inhibit_on_failure" => {
                let stays = "inhibit_on_failure stays the virtual server's";
                if let Some(v) = self.flag(c, stays) {
                    r.inhibit_on_failure = Some((v, l));
                }
            }
            "notify_up" => {
                if let Some(v) = self.script(c, "no script runs when the real comes up") {
                    r.notify_up = r.notify_up.take().or(Some((v, l)));
                }
            }
            "notify_down" => {
                if let Some(v) = self.script(c, "no script runs when the real goes down") {
                    r.notify_down = r.notify_down.take().or(Some((v, l)));
                }
            }
            "lvs_method" => {
                let stays = "the real uses the virtual server's lb_kind";
                if let Some(v) = self.value(c, stays) {
                    r.method = self.method(c, v, stays).map(|m| (m, l)).or(r.method.take());
                }
            }
            "connect_timeout" | "retry" | "delay_before_retry" | "warmup" => {
                self.timing(&mut r.timing, c, "stays the virtual server's");
            }
            "delay_loop" => {
                let stays = "the virtual server's delay_loop applies";
                if let Some(v) = self.seconds(c, 1e-6, stays) {
                    r.delay_loop = Some((v, l));
                }
            }
            "alpha" => self.not_carried(
                c,
                "lb-agent's alpha is per virtual server: set alpha there to start every real down",
            ),
            "uthreshold" | "lthreshold" => {
                self.not_carried(c, "lb-agent has no connection thresholds")
            }
            "smtp_alert" => self.not_carried(c, "lb-agent has no e-mail alerts; see its logs"),
            "virtualhost" => {
                self.not_carried(c, "lb-agent's HTTP checks send the real's address as Host")
            }
            "snmp_name" => self.not_carried(c, "lb-agent has no SNMP; see its metrics"),
            kw @ ("TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK") => {
                let check = self.check(c);
                match (&r.check, check) {
                    (None, check) => r.check = check,
                    (Some(first), Some(_)) => self.warn(
                        l,
                        format!(
                            "{kw} is a second checker of this real server, and lb-agent takes \
                             one: only the {} of line {} is converted (keepalived needs every \
                             checker to pass)",
                            first.keyword, first.line
                        ),
                    ),
                    (Some(_), None) => {}
                }
            }
            kw @ ("SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK" | "FILE_CHECK"
            | "BFD_CHECK") => self.warn(
                l,
                format!(
                    "{kw} is not supported by lb-agent (it has tcp_check, http_get and \
                     misc_check): not converted; without another checker the real is always up"
                ),
            ),
            _ => unknown.push(self.unknown(c, RS_KEYWORDS)),
        }
    }

    /// What can only be judged once the virtual server is read (keepalived resolves what
    /// checkers inherit at the end): per-real and per-checker `delay_loop`, and the retry a
    /// TCP_CHECK with `nb_get_retry` really ran with.
    fn after_service(&mut self, s: &Service) {
        let service = s.delay_loop.map_or(60.0, |(d, _)| d);
        for r in &s.reals {
            let ck = r.check.as_ref();
            let own = [
                (r.delay_loop, "its real_server"),
                (ck.and_then(|c| c.delay_loop), ck.map_or("", |c| c.keyword)),
            ];
            for (v, of) in own {
                if let Some((v, l)) = v.filter(|(v, _)| *v != service) {
                    self.warn(
                        l,
                        format!(
                            "delay_loop {} of {of} is not carried: lb-agent checks every real of \
                             a virtual server every delay_loop ({} here)",
                            number(v),
                            number(service)
                        ),
                    );
                }
            }
            let Some(ck) = ck else {
                continue;
            };
            if let Some((v, l)) = ck.tcp_nb_get_retry {
                let ran = ck
                    .timing
                    .retry
                    .or(r.timing.retry)
                    .or(s.timing.retry)
                    .map_or(1, |(r, _)| r);
                self.warn(
                    l,
                    format!(
                        "unknown keyword \"nb_get_retry\" in TCP_CHECK (only HTTP_GET and SSL_GET \
                         take this old name of retry): ignored as keepalived does; this check \
                         ran with retry {ran} and is converted as it ran; write `retry: {v}` in \
                         tcp_check if {v} retries were meant"
                    ),
                );
            }
        }
    }

    /// A checker block.
    fn check(&mut self, n: &Node) -> Option<Check> {
        let (kind, keyword, known): (CheckKind, &'static str, Vec<&'static str>) = match n.keyword()
        {
            "TCP_CHECK" => (CheckKind::Tcp, "TCP_CHECK", CHECK_KEYWORDS.to_vec()),
            "HTTP_GET" => (
                CheckKind::Http,
                "HTTP_GET",
                [CHECK_KEYWORDS, HTTP_KEYWORDS].concat(),
            ),
            "SSL_GET" => {
                self.warn(
                    n.line,
                    "SSL_GET is not supported by lb-agent (no TLS checks): converted to a \
                     tcp_check of the same address and port, which only opens a connection",
                );
                (
                    CheckKind::Tcp,
                    "SSL_GET",
                    [CHECK_KEYWORDS, HTTP_KEYWORDS].concat(),
                )
            }
            _ => (CheckKind::Misc, "MISC_CHECK", MISC_KEYWORDS.to_vec()),
        };
        self.extra_words(n, 1);
        let mut ck = Check {
            kind,
            line: n.line,
            keyword,
            connect_ip: None,
            connect_port: None,
            bindto: None,
            bind_port: None,
            timing: Timing::default(),
            urls: Vec::new(),
            misc_path: None,
            misc_timeout: None,
            delay_loop: None,
            tcp_nb_get_retry: None,
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            self.check_keyword(&mut ck, c, &known, &mut unknown);
        }
        let timing = ck.timing.clone();
        self.report_unknown(unknown, |k| check_stays(kind, &timing, k));
        match kind {
            CheckKind::Http if ck.urls.is_empty() => {
                self.warn(
                    n.line,
                    "HTTP_GET has no url with a path, so keepalived drops this checker: not \
                     converted",
                );
                None
            }
            CheckKind::Misc if ck.misc_path.is_none() => {
                self.warn(
                    n.line,
                    "MISC_CHECK has no misc_path: not converted (without another checker the \
                     real is always up)",
                );
                None
            }
            _ => Some(ck),
        }
    }

    fn check_keyword(
        &mut self,
        ck: &mut Check,
        c: &Node,
        known: &[&'static str],
        unknown: &mut Vec<Unknown>,
    ) {
        let l = c.line;
        let misc = ck.kind == CheckKind::Misc;
        match c.keyword() {
            // keepalived knows no nb_get_retry in a TCP_CHECK; see `after_service`.
            "nb_get_retry" if ck.keyword == "TCP_CHECK" => {
                // Parsed only to quote it in the warning; keepalived ignores it.
                let mut ignored = Timing::default();
                self.timing(&mut ignored, c, "stays the real server's");
                if let Some((v, at)) = ignored.retry.filter(|(_, at)| *at == l) {
                    ck.tcp_nb_get_retry = Some((v, at));
                }
            }
            kw if !known.contains(&kw) => unknown.push(self.unknown(c, known)),
            "retry" | "delay_before_retry" if misc => {
                self.not_carried(c, "lb-agent's misc_check is down at the first failing run")
            }
            "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" | "warmup" => {
                self.timing(&mut ck.timing, c, "stays the real server's");
            }
            "connect_ip" => {
                if let Some(a) = self.address(c, "the check connects to the real's address") {
                    ck.connect_ip = Some((a, l));
                }
            }
            "connect_port" => {
                if let Some(p) = self.port(c, "the check connects to the real's port") {
                    ck.connect_port = Some((p, l));
                }
            }
            "bindto" => {
                if let Some(a) = self.address(c, "the kernel picks the source address") {
                    ck.bindto = Some((a, l));
                }
            }
            "bind_port" => {
                if let Some(p) = self.port(c, "the kernel picks the source port") {
                    ck.bind_port = Some((p, l));
                }
            }
            "delay_loop" => {
                let stays = "the virtual server's delay_loop applies";
                if let Some(v) = self.seconds(c, 1e-6, stays) {
                    ck.delay_loop = Some((v, l));
                }
            }
            // SSL_GET becomes a tcp_check (see `check`): its urls cannot be checked.
            "url" if ck.keyword == "SSL_GET" => {}
            "url" => {
                if let Some(u) = self.url(c) {
                    ck.urls.push(u);
                }
            }
            "misc_path" => {
                if let Some(p) = self.script(c, "the MISC_CHECK has no script") {
                    ck.misc_path = Some((p, l));
                }
            }
            "misc_timeout" => {
                let stays = "misc_timeout stays the delay_loop";
                if let Some(v) = self.uint(c, 0..=u64::from(u32::MAX), stays) {
                    ck.misc_timeout = Some((v, l));
                }
            }
            "misc_dynamic" => self.not_carried(
                c,
                "lb-agent does not set weights from the script's exit status; only 0 = up",
            ),
            "user" => self.not_carried(c, "lb-agent runs scripts as its own user"),
            "alpha" => self.not_carried(
                c,
                "lb-agent's alpha is per virtual server: set alpha there to start every real down",
            ),
            "bind_if" => self.not_carried(c, "the route to the real picks the interface"),
            "fwmark" => self.not_carried(c, "lb-agent does not mark check packets"),
            "log_all_failures" => self.not_carried(c, "lb-agent logs every state change"),
            "virtualhost" => {
                self.not_carried(c, "lb-agent's HTTP checks send the real's address as Host")
            }
            _ => self.not_carried(c, "lb-agent's HTTP check sends a plain HTTP/1.0 GET"),
        }
    }

    /// A `url` block; `None` without a path (keepalived drops it).
    fn url(&mut self, n: &Node) -> Option<Url> {
        self.extra_words(n, 1);
        let mut u = Url {
            line: n.line,
            path: None,
            status_code: None,
            any_2xx: false,
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            match c.keyword() {
                "path" => {
                    if let Some(p) = self.value(c, "the url has no path") {
                        u.path = Some((p.to_owned(), c.line));
                    }
                }
                "status_code" => self.status_code(&mut u, c),
                "digest" => self.not_carried(
                    c,
                    "lb-agent checks the status code only, not an MD5 digest of the body",
                ),
                "virtualhost" => {
                    self.not_carried(c, "lb-agent's HTTP checks send the real's address as Host")
                }
                "regex" | "regex_no_match" | "regex_options" | "regex_min_offset"
                | "regex_max_offset" | "regex_stack" => {
                    self.not_carried(c, "lb-agent checks the status code only, not the body")
                }
                _ => unknown.push(self.unknown(c, URL_KEYWORDS)),
            }
        }
        self.report_unknown(unknown, |_| None);
        if u.path.is_none() {
            self.warn(
                n.line,
                "url has no path, so keepalived ignores it: not converted",
            );
            return None;
        }
        if u.status_code.is_none() {
            u.any_2xx = true;
            self.warn(
                n.line,
                "url has no status_code, so keepalived accepts any 2xx status; lb-agent checks \
                 one status: 200 is used",
            );
        }
        Some(u)
    }

    /// `status_code`: keepalived takes several codes and ranges (`200 201 300-399`); lb-agent
    /// checks one.
    fn status_code(&mut self, u: &mut Url, c: &Node) {
        self.no_block(c);
        let mut codes = Vec::new();
        for w in &c.words[1..] {
            let (lo, hi) = w.split_once('-').unwrap_or((w, w));
            match (lo.parse::<u16>(), hi.parse::<u16>()) {
                (Ok(lo), Ok(hi)) if (100..=599).contains(&lo) && lo <= hi && hi <= 599 => {
                    codes.push((lo, hi));
                }
                _ => self.warn(
                    c.line,
                    format!("status_code {w} is not an HTTP status: ignored as keepalived does"),
                ),
            }
        }
        let Some(&(first, _)) = codes.first() else {
            if c.words.len() == 1 {
                self.warn(
                    c.line,
                    "status_code has no value: ignored as keepalived does",
                );
            }
            return;
        };
        if codes.len() > 1 || codes[0].0 != codes[0].1 {
            self.warn(
                c.line,
                format!(
                    "{}: lb-agent checks one status code: {first} is used, the others are \
                     not accepted",
                    c.raw
                ),
            );
        }
        u.status_code = Some((first, c.line));
    }
}

/// What a service's granularity stays when keepalived ignores a `persistence_granularity`.
fn granularity_stays(vip: IpAddr) -> &'static str {
    match vip {
        IpAddr::V4(_) => "persistence_granularity stays 255.255.255.255",
        IpAddr::V6(_) => "persistence_granularity stays 128",
    }
}

/// `value`, else `default`, for messages.
fn current(v: &At<String>, default: &str) -> String {
    v.as_ref()
        .map_or_else(|| default.to_owned(), |(s, _)| s.clone())
}

/// What a virtual server's `keyword` ended up as, for an unknown keyword that meant it.
fn service_stays(s: &Service, keyword: &str) -> Option<String> {
    let set = |line: usize, what: String| format!("{what} is set on line {line}");
    Some(match keyword {
        "protocol" => match &s.protocol {
            Some((p, l)) => set(*l, format!("protocol {}", p.to_uppercase())),
            None => "protocol stays TCP".to_owned(),
        },
        "lb_algo" | "lvs_sched" => match &s.lb_algo {
            Some((a, l)) => set(*l, format!("lb_algo {a}")),
            None => "lb_algo stays wlc".to_owned(),
        },
        "lb_kind" | "lvs_method" => match &s.lb_kind {
            Some((k, l)) => set(*l, format!("lb_kind {k}")),
            None => "lb_kind stays NAT".to_owned(),
        },
        "delay_loop" => match s.delay_loop {
            Some((d, l)) => set(l, format!("delay_loop {}", number(d))),
            None => "delay_loop stays 60".to_owned(),
        },
        "persistence_timeout" => match s.persistence_timeout {
            Some((p, l)) => set(l, format!("persistence_timeout {p}")),
            None => "persistence stays off".to_owned(),
        },
        "persistence_granularity" => granularity_stays(s.vip).to_owned(),
        "quorum" => "quorum stays 1".to_owned(),
        "hysteresis" => "hysteresis stays 0".to_owned(),
        "alpha" | "omega" | "inhibit_on_failure" | "ha_suspend" => format!("{keyword} stays off"),
        "sorry_server" => "there is no sorry server".to_owned(),
        "warmup" => "warmup stays 0".to_owned(),
        _ => return None,
    })
}

/// What a real server's `keyword` ended up as, for an unknown keyword that meant it.
fn real_stays(r: &Real, keyword: &str) -> Option<String> {
    Some(match keyword {
        "weight" => match r.weight {
            Some((w, l)) => format!("weight {w} is set on line {l}"),
            None => "weight stays 1".to_owned(),
        },
        "inhibit_on_failure" => "inhibit_on_failure stays the virtual server's".to_owned(),
        "notify_up" => "no script runs when the real comes up".to_owned(),
        "notify_down" => "no script runs when the real goes down".to_owned(),
        _ => return None,
    })
}

/// What a checker's `keyword` ended up as, for an unknown keyword that meant it.
fn check_stays(kind: CheckKind, t: &Timing, keyword: &str) -> Option<String> {
    Some(match keyword {
        "connect_timeout" => match t.connect_timeout {
            Some((v, l)) => format!("connect_timeout {} is set on line {l}", number(v)),
            None => format!("connect_timeout stays {DEFAULT_CONNECT_TIMEOUT}"),
        },
        "retry" | "nb_get_retry" => match t.retry {
            Some((v, l)) => format!("retry {v} is set on line {l}"),
            None => "retry stays 1".to_owned(),
        },
        "delay_before_retry" => match (t.delay_before_retry, kind) {
            (Some((v, l)), _) => format!("delay_before_retry {} is set on line {l}", number(v)),
            (None, CheckKind::Http) => "delay_before_retry stays 3".to_owned(),
            (None, _) => "delay_before_retry stays 1".to_owned(),
        },
        "connect_port" => "the check connects to the real server's port".to_owned(),
        "connect_ip" => "the check connects to the real server's address".to_owned(),
        _ => return None,
    })
}

/// The keyword of `known` that `word` probably meant: the same but for case, or at most two
/// edits away (one for short words).
fn suggest(word: &str, known: &[&'static str]) -> Option<&'static str> {
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(word)) {
        return Some(k);
    }
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&word.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Seconds as keepalived wrote them: whole numbers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

// ------------------------------------------------------------------------------------------
// Writing the YAML.

/// The YAML under construction, with the keepalived line of every path written.
#[derive(Default)]
struct Yaml {
    out: String,
    lines: Vec<(String, usize)>,
}

impl Yaml {
    fn raw(&mut self, indent: usize, text: &str) {
        self.out.push_str(&" ".repeat(indent));
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// The keepalived line a YAML path (from `Config` validation) comes from: the longest
    /// recorded prefix.
    fn line_of(&self, path: &str) -> Option<usize> {
        self.lines
            .iter()
            .filter(|(p, _)| {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(_, l)| *l)
    }
}

/// A mapping being written: its indentation, its path, and whether the next key starts a list
/// item (`- key: ...`).
struct Map<'y> {
    y: &'y mut Yaml,
    indent: usize,
    path: String,
    dash: bool,
}

impl Map<'_> {
    fn prefix(&mut self) -> String {
        if self.dash {
            self.dash = false;
            format!("{}- ", " ".repeat(self.indent - 2))
        } else {
            " ".repeat(self.indent)
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// `key: value  # comment`, recording that the key comes from `line`.
    fn kv(&mut self, key: &str, value: &str, line: usize, comment: Option<&str>) {
        let prefix = self.prefix();
        let mut text = format!("{prefix}{key}: {value}");
        if let Some(c) = comment {
            text.push_str("   # ");
            text.push_str(&comment_text(c));
        }
        self.y.out.push_str(&text);
        self.y.out.push('\n');
        let path = self.child_path(key);
        self.y.lines.push((path, line));
    }

    /// `key:` opening a nested mapping.
    fn map(&mut self, key: &str, line: usize) -> Map<'_> {
        let prefix = self.prefix();
        self.y.out.push_str(&format!("{prefix}{key}:\n"));
        let path = self.child_path(key);
        self.y.lines.push((path.clone(), line));
        Map {
            y: self.y,
            indent: self.indent + 2,
            path,
            dash: false,
        }
    }

    /// `key:` opening a list; items are added with [`Map::item`].
    fn list(&mut self, key: &str, line: usize) -> String {
        let prefix = self.prefix();
        self.y.out.push_str(&format!("{prefix}{key}:\n"));
        let path = self.child_path(key);
        self.y.lines.push((path.clone(), line));
        path
    }

    /// Item `i` of the list at `list` (a mapping), from `line`.
    fn item(&mut self, list: &str, i: usize, line: usize) -> Map<'_> {
        let path = format!("{list}[{i}]");
        self.y.lines.push((path.clone(), line));
        Map {
            y: self.y,
            indent: self.indent + 4,
            path,
            dash: true,
        }
    }

    fn comment(&mut self, text: &str) {
        let indent = if self.dash {
            self.indent - 2
        } else {
            self.indent
        };
        self.y.raw(indent, &format!("# {}", comment_text(text)));
    }
}

/// Text from the input made safe for a YAML comment: a control character (a line break, CR,
/// NUL, an escape sequence) would end the comment or reach the terminal, so each is written as
/// `\u{..}`.
fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A string as a YAML scalar: plain when that is unambiguous, double-quoted otherwise.
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !s.starts_with(['-', '.'])
        && s.parse::<f64>().is_err()
        && !["true", "false", "yes", "no", "on", "off", "null", "y", "n"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(s));
    if plain { s.to_owned() } else { yaml_quoted(s) }
}

/// A string as a double-quoted YAML scalar (scripts are always quoted, as in
/// `configs/example.yaml`).
fn yaml_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yaml_ip(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => a.to_string(),
        IpAddr::V6(_) => format!("\"{a}\""),
    }
}

/// The configuration: keys in the order of `configs/example.yaml`.
fn render(y: &mut Yaml, file: &File, interface: &str) {
    let mut root = Map {
        y,
        indent: 0,
        path: String::new(),
        dash: false,
    };
    let first = file.services.first().map_or(1, |s| s.line);
    root.kv("interface", &yaml_str(interface), first, None);
    let owner = if file.vrrp.is_empty() {
        "no vrrp_instance in keepalived.conf: see the header".to_owned()
    } else {
        let names: Vec<&str> = file.vrrp.iter().map(|v| v.name.as_str()).collect();
        format!(
            "keepalived's vrrp_instance {} owns the VIPs",
            names.join(", ")
        )
    };
    root.kv("manage_vip", "false", first, Some(&owner));
    root.y.out.push('\n');
    if file.services.is_empty() {
        root.kv("virtual_servers", "[]", first, None);
        return;
    }
    let list = root.list("virtual_servers", first);
    for (i, s) in file.services.iter().enumerate() {
        let mut m = root.item(&list, i, s.line);
        let port = s.port.map(|p| format!(" {p}")).unwrap_or_default();
        m.comment(&format!(
            "keepalived.conf line {}: virtual_server {}{port}",
            s.line, s.vip
        ));
        service(&mut m, s);
    }
}

/// `default`, plus where the file misspells `key` if it does (`line 30 has "protocal"`).
fn default_note(s: &Service, keys: &[&str], default: &str) -> String {
    let typo = s.misspelled.iter().find(|(k, _, _)| keys.contains(k));
    match typo {
        Some((_, line, word)) => format!("{default}; line {line} has \"{word}\""),
        None => default.to_owned(),
    }
}

fn service(m: &mut Map<'_>, s: &Service) {
    m.kv("vip", &yaml_ip(s.vip), s.line, None);
    if let Some(p) = s.port {
        m.kv("port", &p.to_string(), s.line, None);
    } else {
        m.comment("port: not set in keepalived.conf (an all-ports service)");
    }
    match &s.protocol {
        Some((p, l)) => m.kv("protocol", p, *l, None),
        None => {
            let note = default_note(s, &["protocol"], "keepalived's default");
            m.kv("protocol", "tcp", s.line, Some(&note));
        }
    }
    match &s.lb_algo {
        Some((a, l)) => m.kv("lb_algo", a, *l, None),
        None => m.comment(&format!(
            "lb_algo: not set in keepalived.conf ({})",
            default_note(s, &["lb_algo", "lvs_sched"], "keepalived's default is wlc")
        )),
    }
    match &s.lb_kind {
        Some((k, l)) => m.kv("lb_kind", &k.to_ascii_lowercase(), *l, None),
        None => m.comment(&format!(
            "lb_kind: not set in keepalived.conf ({})",
            default_note(s, &["lb_kind", "lvs_method"], "keepalived's default is NAT")
        )),
    }
    match (s.persistence_timeout, &s.persistence_granularity) {
        (Some((t, l)), _) => m.kv("persistence_timeout", &t.to_string(), l, None),
        (None, Some((_, l))) => m.kv(
            "persistence_timeout",
            &DEFAULT_PERSISTENCE_TIMEOUT.to_string(),
            *l,
            Some("keepalived's default, implied by persistence_granularity"),
        ),
        (None, None) => {}
    }
    if let Some((g, l)) = &s.persistence_granularity {
        // A netmask for IPv4; for IPv6 a prefix length, which the YAML takes as a number.
        let value = if s.vip.is_ipv4() {
            yaml_str(g)
        } else {
            g.clone()
        };
        m.kv("persistence_granularity", &value, *l, None);
    }
    if let Some((d, l)) = s.delay_loop {
        m.kv("delay_loop", &number(d), l, None);
    }
    if let Some((w, l)) = s.warmup {
        m.kv("warmup", &number(w), l, None);
    }
    for (key, v) in [
        ("alpha", s.alpha),
        ("omega", s.omega),
        ("inhibit_on_failure", s.inhibit_on_failure),
    ] {
        if let Some((b, l)) = v {
            m.kv(key, &b.to_string(), l, None);
        }
    }
    if let Some((q, l)) = s.quorum {
        m.kv("quorum", &q.to_string(), l, None);
    }
    if let Some((h, l)) = s.hysteresis {
        m.kv("hysteresis", &h.to_string(), l, None);
    }
    if let Some((c, l)) = &s.quorum_up {
        m.kv("quorum_up", &yaml_quoted(c), *l, None);
    }
    if let Some((c, l)) = &s.quorum_down {
        m.kv("quorum_down", &yaml_quoted(c), *l, None);
    }
    if let Some((ip, port, l)) = s.sorry_server {
        let mut sorry = m.map("sorry_server", l);
        sorry.kv("ip", &yaml_ip(ip), l, None);
        if let Some(p) = port {
            sorry.kv("port", &p.to_string(), l, None);
        }
    }
    if s.reals.is_empty() {
        m.kv("real_servers", "[]", s.line, None);
        return;
    }
    let list = m.list("real_servers", s.line);
    for (i, r) in s.reals.iter().enumerate() {
        let mut rm = m.item(&list, i, r.line);
        let port = r.port.map(|p| format!(" {p}")).unwrap_or_default();
        rm.comment(&format!("line {}: real_server {}{port}", r.line, r.ip));
        real(&mut rm, s, r);
    }
}

fn real(m: &mut Map<'_>, s: &Service, r: &Real) {
    m.kv("ip", &yaml_ip(r.ip), r.line, None);
    if let Some(p) = r.port {
        m.kv("port", &p.to_string(), r.line, None);
    }
    if let Some((w, l)) = r.weight {
        m.kv("weight", &w.to_string(), l, None);
    }
    if let Some((b, l)) = r.inhibit_on_failure {
        m.kv("inhibit_on_failure", &b.to_string(), l, None);
    }
    if let Some((c, l)) = &r.notify_up {
        m.kv("notify_up", &yaml_quoted(c), *l, None);
    }
    if let Some((c, l)) = &r.notify_down {
        m.kv("notify_down", &yaml_quoted(c), *l, None);
    }
    let Some(ck) = &r.check else {
        return;
    };
    match ck.kind {
        CheckKind::Misc => {
            let mut c = m.map("misc_check", ck.line);
            if let Some((p, l)) = &ck.misc_path {
                c.kv("misc_path", &yaml_quoted(p), *l, None);
            }
            if let Some((t, l)) = ck.misc_timeout {
                c.kv("misc_timeout", &t.to_string(), l, None);
            }
            if let Some((w, l)) = ck.timing.warmup.or(r.timing.warmup) {
                c.kv("warmup", &number(w), l, None);
            }
        }
        CheckKind::Tcp | CheckKind::Http => {
            let key = if ck.kind == CheckKind::Http {
                "http_get"
            } else {
                "tcp_check"
            };
            let mut c = m.map(key, ck.line);
            if ck.kind == CheckKind::Http {
                let list = c.list("url", ck.line);
                for (i, u) in ck.urls.iter().enumerate() {
                    let mut um = c.item(&list, i, u.line);
                    if let Some((p, l)) = &u.path {
                        um.kv("path", &yaml_str(p), *l, None);
                    }
                    match u.status_code {
                        Some((code, l)) => um.kv("status_code", &code.to_string(), l, None),
                        None if u.any_2xx => um.kv(
                            "status_code",
                            "200",
                            u.line,
                            Some("keepalived accepted any 2xx"),
                        ),
                        None => {}
                    }
                }
            }
            if let Some((a, l)) = ck.connect_ip {
                c.kv("connect_ip", &yaml_ip(a), l, None);
            }
            if let Some((p, l)) = ck.connect_port {
                c.kv("connect_port", &p.to_string(), l, None);
            }
            if let Some((a, l)) = ck.bindto {
                c.kv("bindto", &yaml_ip(a), l, None);
            }
            if let Some((p, l)) = ck.bind_port {
                c.kv("bind_port", &p.to_string(), l, None);
            }
            let (own, real, vs) = (&ck.timing, &r.timing, &s.timing);
            let timeout = inherit(
                own.connect_timeout,
                real.connect_timeout,
                vs.connect_timeout,
            );
            if let Some((t, l, from)) = timeout {
                c.kv("connect_timeout", &number(t), l, from);
            }
            if let Some((n, l, from)) = inherit(own.retry, real.retry, vs.retry) {
                c.kv("retry", &n.to_string(), l, from);
            }
            let delay = inherit(
                own.delay_before_retry,
                real.delay_before_retry,
                vs.delay_before_retry,
            );
            match delay {
                Some((d, l, from)) => c.kv("delay_before_retry", &number(d), l, from),
                None if ck.keyword != "TCP_CHECK" => c.kv(
                    "delay_before_retry",
                    &number(HTTP_DEFAULT_DELAY_BEFORE_RETRY),
                    ck.line,
                    Some("keepalived's default for HTTP_GET and SSL_GET"),
                ),
                None => {}
            }
            if let Some((w, l)) = ck.timing.warmup.or(r.timing.warmup) {
                c.kv("warmup", &number(w), l, None);
            }
        }
    }
}

/// A checker setting as keepalived resolves it: the checker's own, else its real server's, else
/// its virtual server's; with a comment saying where an inherited value comes from.
fn inherit<T>(own: At<T>, real: At<T>, vs: At<T>) -> Option<(T, usize, Option<&'static str>)> {
    let from = |v: At<T>, what| v.map(|(v, l)| (v, l, what));
    from(own, None)
        .or_else(|| from(real, Some("from the real_server")))
        .or_else(|| from(vs, Some("from the virtual_server")))
}

/// The comment header: where the file comes from, and every warning.
/// Checks that the header, which carries text from the input (the file name, warnings), reads
/// as YAML comments only, so that the file means what the validated body means.
fn header_is_only_comments(header: &str) -> Result<(), ImportError> {
    match serde_yaml::from_str::<serde_yaml::Value>(header) {
        Ok(serde_yaml::Value::Null) => Ok(()),
        Ok(_) => Err(ImportError::Unreadable {
            reason: "the header holds more than comments".to_owned(),
        }),
        Err(e) => Err(ImportError::Unreadable {
            reason: e.to_string(),
        }),
    }
}

fn header(source: &str, file: &File, warnings: &[Warning]) -> String {
    let mut h = String::new();
    h.push_str(&format!(
        "# lb-agent configuration generated from {} by `lbadm import-keepalived`.\n",
        comment_text(source)
    ));
    h.push_str("#\n");
    h.push_str(
        "# Only keepalived's virtual_server blocks are converted; each service and real server \
         below\n# names its line in keepalived.conf. Check this file with\n#   lb-agent \
         --check-config FILE\n",
    );
    if file.vrrp.is_empty() {
        h.push_str(
            "# keepalived.conf has no vrrp_instance: something must still hold the VIPs on this\n\
             # director (keepalived's VRRP, or manage_vip: true to have lb-agent add them).\n",
        );
    } else {
        h.push_str(
            "# keepalived keeps running for VRRP and owns the VIPs (manage_vip: false). Once \
             lb-agent\n# serves these services, remove the virtual_server blocks from \
             keepalived.conf.\n",
        );
    }
    h.push_str("#\n");
    if warnings.is_empty() {
        h.push_str("# No warnings.\n");
    } else {
        h.push_str(&format!("# Warnings ({}):\n", warnings.len()));
        for w in warnings {
            h.push_str(&format!("#   {w}\n"));
        }
    }
    h.push('\n');
    h
}

impl Importer {
    /// Validates the YAML as `lb-agent --check-config` does; what it refuses becomes warnings
    /// on the keepalived lines it comes from.
    fn validate(&mut self, y: &Yaml, source: &str) -> Result<(), ImportError> {
        let Err(e) = Config::from_yaml(&y.out, Path::new(source)) else {
            return Ok(());
        };
        for fe in e.errors {
            if fe.path == "interface" {
                return Err(ImportError::BadInterface {
                    message: fe.message,
                });
            }
            let line = y.line_of(&fe.path).unwrap_or(1);
            let what = if fe.path.is_empty() {
                fe.message
            } else {
                format!("{}: {}", fe.path, fe.message)
            };
            self.warn(line, format!("lb-agent will refuse the YAML: {what}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(usize, Vec<String>)> {
        fn walk(nodes: &[Node], out: &mut Vec<(usize, Vec<String>)>) {
            for n in nodes {
                out.push((n.line, n.words.clone()));
                walk(n.children(), out);
            }
        }
        let mut out = Vec::new();
        walk(&parse(text).unwrap().0, &mut out);
        out
    }

    fn w(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn deep_blocks_are_refused_without_recursing() {
        let text = format!("virtual_server 10.0.0.1 80 {}", "x {".repeat(400_000));
        assert_eq!(
            import(&text, "eth0").unwrap_err(),
            ImportError::TooDeep { line: 1 }
        );
        let ok = format!(
            "a {{{}{}",
            "b {".repeat(MAX_BLOCK_DEPTH - 1),
            "}".repeat(MAX_BLOCK_DEPTH)
        );
        assert!(parse(&ok).is_ok());
        let deeper = format!(
            "a {{{}{}",
            "b {".repeat(MAX_BLOCK_DEPTH),
            "}".repeat(MAX_BLOCK_DEPTH + 1)
        );
        assert!(matches!(parse(&deeper), Err(ImportError::TooDeep { .. })));
    }

    #[test]
    fn parameter_expansion_is_bounded() {
        let mut text = format!("$A={}\n", "x".repeat(100_000));
        for _ in 0..100 {
            text += &"$A ".repeat(1000);
            text += "\n";
        }
        let start = std::time::Instant::now();
        assert_eq!(
            import(&text, "eth0").unwrap_err(),
            ImportError::ExpansionTooLarge { line: 2 }
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // Many small expansions add up too.
        let mut many = format!("$A={}\n", "y".repeat(1000));
        many += &"$A\n".repeat(MAX_EXPANDED_BYTES / 1000 + 1);
        assert!(matches!(
            import(&many, "eth0"),
            Err(ImportError::ExpansionTooLarge { .. })
        ));
    }

    #[test]
    fn control_characters_of_the_input_do_not_reach_the_yaml_or_the_terminal() {
        let text = "virtual_server 10.0.0.1 80 {\n  lb_kind DR\n  bogus\r\x1b[31mred\x00 1\n  \
                    real_server 10.0.0.2 80 {\n    weight 1\n  }\n}\n";
        let import = import_named(text, "eth0", "evil\nname\r.conf").unwrap();
        assert!(!import.warnings.is_empty());
        for w in &import.warnings {
            let shown = w.to_string();
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
        assert!(
            !import.yaml.chars().any(|c| c.is_control() && c != '\n'),
            "{}",
            import.yaml
        );
        assert!(import.yaml.contains("evil\\u{a}name\\u{d}.conf"));
        // Unescaped, the same name would have put a key into the header.
        assert!(header_is_only_comments("# a\n# b\n\n").is_ok());
        assert!(header_is_only_comments("# from evil\nname: x\n").is_err());
        Config::from_yaml(&import.yaml, Path::new("x")).expect("lb-agent accepts it");
    }

    #[test]
    fn comments_start_anywhere_outside_double_quotes() {
        assert_eq!(decomment("a b # c", 1).unwrap(), "a b");
        assert_eq!(decomment("a b ! c", 1).unwrap(), "a b");
        assert_eq!(decomment("a#b", 1).unwrap(), "a");
        assert_eq!(decomment("x \"a # b\" # c", 1).unwrap(), "x \"a # b\"");
        assert_eq!(decomment("x 'a # b'", 1).unwrap(), "x 'a");
        assert_eq!(decomment(r"x a\#b", 1).unwrap(), "x a#b");
        assert_eq!(decomment("  设置 # 中文注释", 1).unwrap(), "设置");
        assert_eq!(
            decomment("x \"open", 7),
            Err(ImportError::UnterminatedQuote { line: 7 })
        );
    }

    #[test]
    fn braces_split_statements_wherever_they_are() {
        let t = tokens("a 1 { b 2 } c{d{e}}\nf \"{x}\" {\n}\n");
        assert_eq!(
            t,
            vec![
                (1, w(&["a", "1"])),
                (1, w(&["b", "2"])),
                (1, w(&["c"])),
                (1, w(&["d"])),
                (1, w(&["e"])),
                (2, w(&["f", "{x}"])),
            ]
        );
    }

    #[test]
    fn quoted_words_and_script_words() {
        assert_eq!(
            words(r#"a "b c" d"e f"g"#),
            w(&["a", "b c", "d", "e f", "g"])
        );
        assert_eq!(
            script_words(r#"notify "/bin/x 'a b' c\"d" user"#).unwrap(),
            w(&["notify", r#"/bin/x 'a b' c"d"#, "user"])
        );
        assert_eq!(
            script_words(r#"/bin/x 'a b' c"d e"\tf \101"#).unwrap(),
            w(&["/bin/x", "a b", "cd e\tf", "A"])
        );
        assert!(script_words("'open").is_err());
        assert_eq!(
            shell_join(&w(&["/bin/x", "a b", "it's", "$HOME", "ok-1"])),
            r#"/bin/x 'a b' 'it'\''s' '$HOME' ok-1"#
        );
    }

    #[test]
    fn definitions_are_substituted() {
        let t = tokens("$PORT=5672\nvirtual_server 10.0.0.1 $PORT {\nweight ${PORT}\n}\n");
        assert_eq!(t[0], (2, w(&["virtual_server", "10.0.0.1", "5672"])));
        assert_eq!(t[1], (3, w(&["weight", "5672"])));
    }

    #[test]
    fn config_id_lines_are_read_with_a_warning() {
        let (nodes, warnings) = parse("@lb1 a 1\n@^lb1 b 2\n").unwrap();
        let kw: Vec<&str> = nodes.iter().map(Node::keyword).collect();
        assert_eq!(kw, ["a", "b"]);
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].message.contains("config id is lb1"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1].message.contains("config id is not lb1"),
            "{}",
            warnings[1]
        );
    }

    #[test]
    fn structure_errors_name_the_line() {
        assert_eq!(
            parse("a {\n b {\n }\n"),
            Err(ImportError::Unclosed {
                line: 1,
                keyword: "a".into()
            })
        );
        assert_eq!(
            parse("a {\n}\n}\n"),
            Err(ImportError::UnexpectedClose { line: 3 })
        );
        assert_eq!(
            parse("a {\n{\n}\n}\n"),
            Err(ImportError::StrayOpen { line: 2 })
        );
        assert!(matches!(
            parse("~SEQ(i, 1, 3) x\n"),
            Err(ImportError::Unsupported { line: 1, .. })
        ));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("protocal", VS_KEYWORDS), Some("protocol"));
        assert_eq!(suggest("tcp_check", RS_KEYWORDS), Some("TCP_CHECK"));
        assert_eq!(suggest("lb_alog", VS_KEYWORDS), Some("lb_algo"));
        assert_eq!(suggest("frobnicate", VS_KEYWORDS), None);
        assert_eq!(edit_distance("abc", "acb"), 1);
    }

    #[test]
    fn yaml_scalars() {
        assert_eq!(yaml_str("/healthz"), "/healthz");
        assert_eq!(yaml_str("eth0"), "eth0");
        assert_eq!(yaml_str("yes"), "\"yes\"");
        assert_eq!(yaml_str("12"), "\"12\"");
        assert_eq!(yaml_str("/a b#c"), "\"/a b#c\"");
        assert_eq!(yaml_quoted("a \"b\" \\"), r#""a \"b\" \\""#);
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.5), "0.5");
    }
}
