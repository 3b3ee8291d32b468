//! Reading: lines → statements → blocks. keepalived's words, quotes and comments, `@` lines
//! and `$NAME` definitions, braces into a [`Node`] tree, and its script word splitting.

use super::{ImportError, MAX_BLOCK_DEPTH, MAX_EXPANDED_BYTES, Warning};

/// One statement: a line (or the part of one between braces) of words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Node {
    /// Line number (1-based).
    pub(super) line: usize,
    /// The words, quotes removed (keepalived's keyword tokenizer).
    pub(super) words: Vec<String>,
    /// The statement's text, comments removed (re-read for scripts).
    pub(super) raw: String,
    /// The block that follows the statement, if any.
    pub(super) block: Option<Vec<Node>>,
}

impl Node {
    /// The keyword.
    pub(super) fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// Word `i`, if present.
    pub(super) fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }

    /// The children, empty when there is no block.
    pub(super) fn children(&self) -> &[Node] {
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
pub(super) fn parse(text: &str) -> Result<(Vec<Node>, Vec<Warning>), ImportError> {
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
pub(super) fn decomment(line: &str, no: usize) -> Result<String, ImportError> {
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
pub(super) fn words(text: &str) -> Vec<String> {
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
pub(super) fn script_words(text: &str) -> Result<Vec<String>, String> {
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
pub(super) fn shell_join(argv: &[String]) -> String {
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
