//! Reading: statements → blocks. keepalived's comments and words, the [`Node`] tree the
//! [`Reader`]'s lines and braces make, and keepalived's script word splitting.

use super::{ImportError, MAX_BLOCK_DEPTH, reader::Reader};
#[cfg(test)]
use super::{Warning, reader::Main};

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
pub(super) enum Token {
    /// A statement's text (comments removed, substitutions made).
    Words {
        /// Its (virtual) line.
        line: usize,
        /// The text.
        text: String,
    },
    /// `{`, on its line.
    Open(usize),
    /// `}`, on its line.
    Close(usize),
}

/// keepalived's white space.
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Reads everything `reader` reads into top-level statements with their blocks.
pub(super) fn read(reader: &mut Reader) -> Result<Vec<Node>, ImportError> {
    build(reader.tokens()?)
}

/// Reads `text` (no file, no config id) into statements, with the reader's warnings.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Result<(Vec<Node>, Vec<Warning>), ImportError> {
    let mut reader = Reader::new(Main::Text(text), "keepalived.conf", None, false)?;
    let nodes = read(&mut reader)?;
    Ok((nodes, reader.warnings))
}

/// keepalived's `decomment`: removes a comment (from the first `#` or `!` outside double
/// quotes to the end of the line; `\#` and `\!` outside quotes stand for the character
/// itself), and the blanks around the line and before a final `\` (which marks a line of a
/// multi-line definition).
pub(super) fn decomment(line: &str, no: usize) -> Result<String, ImportError> {
    let mut out = String::with_capacity(line.len());
    let mut quote = false;
    let mut chars = line.trim_start_matches([' ', '\t']).chars();
    let mut continued = false;
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
                None => continued = true,
            },
            '#' | '!' if !quote => break,
            _ => out.push(c),
        }
    }
    if quote {
        return Err(ImportError::UnterminatedQuote { line: no });
    }
    let kept = out.trim_end_matches([' ', '\t']).len();
    out.truncate(kept);
    if continued {
        out.push('\\');
    }
    Ok(out)
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
