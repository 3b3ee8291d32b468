//! The external programs a POSIX shell script runs: the word at each command position that
//! is not a keyword, a builtin, an assignment or a function of the script, and the programs
//! behind `command`, `exec`, `env` and the other wrappers. Command substitutions (`$(...)`,
//! backquotes) are scanned too, also inside double quotes; here-document bodies are data.

use super::Found;

/// Reserved words that introduce a command position (or are one by themselves).
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
];

/// Builtins of dash and bash: no program is executed for them (`command` and `exec` only
/// when no program follows: see [`WRAPPERS`]).
const BUILTINS: &[&str] = &[
    ".", ":", "[", "[[", "alias", "bg", "break", "cd", "command", "continue", "declare", "echo",
    "eval", "exec", "exit", "export", "false", "fc", "fg", "getopts", "hash", "jobs", "kill",
    "let", "local", "printf", "pwd", "read", "readonly", "return", "set", "shift", "source",
    "test", "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias", "unset",
    "wait",
];

/// Commands that run the program named by a later word: the wrapper, its options that take
/// a value, and how many positional words come before the program (timeout's duration,
/// flock's lock file).
const WRAPPERS: &[(&str, &[&str], usize)] = &[
    ("command", &[], 0),
    ("exec", &[], 0),
    ("env", &["-u", "-C", "--unset", "--chdir"], 0),
    ("nohup", &[], 0),
    ("nsenter", &["-t", "--target"], 0),
    ("setpriv", &[], 0),
    ("unshare", &["--propagation"], 0),
    ("timeout", &["-s", "--signal", "-k", "--kill-after"], 1),
    (
        "flock",
        &["-w", "--timeout", "-E", "--conflict-exit-code"],
        1,
    ),
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A word: its text with quotes removed, whether any part of it was expanded (`$x`,
    /// `$(...)`), and its line.
    Word {
        text: String,
        dynamic: bool,
        line: usize,
    },
    /// `;`, `;;`, `&`, `&&`, `|`, `||`, `(`, `)` or a line end.
    Op(&'static str),
}

/// Scans `script`, whose first line is line `first_line` of its file.
pub fn scan(script: &str, first_line: usize, found: &mut Found) {
    let functions = function_names(script);
    let toks = tokenize(script, first_line, found, &functions);
    commands(&toks, &functions, found);
}

/// Names of the functions the script defines (`name() {`), anywhere in it.
fn function_names(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| {
            let l = l
                .trim_start()
                .strip_prefix("function ")
                .unwrap_or(l.trim_start());
            let (name, rest) = l.split_once('(')?;
            let name = name.trim_end();
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            (plain && rest.trim_start().starts_with(')')).then(|| name.to_owned())
        })
        .collect()
}

/// Splits the script into words and operators, scanning command substitutions recursively.
fn tokenize(script: &str, first_line: usize, found: &mut Found, functions: &[String]) -> Vec<Tok> {
    let chars: Vec<char> = script.chars().collect();
    let mut toks = Vec::new();
    let mut line = first_line;
    let mut i = 0;
    let mut word = String::new();
    let mut in_word = false;
    let mut dynamic = false;
    let mut word_line = line;
    let mut heredocs: Vec<String> = Vec::new();

    macro_rules! end_word {
        () => {
            if in_word {
                toks.push(Tok::Word {
                    text: std::mem::take(&mut word),
                    dynamic,
                    line: word_line,
                });
                in_word = false;
                dynamic = false;
            }
        };
    }
    macro_rules! start_word {
        () => {
            if !in_word {
                in_word = true;
                word_line = line;
            }
        };
    }

    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                end_word!();
                toks.push(Tok::Op("\n"));
                line += 1;
                i += 1;
                // Here-document bodies are data, up to their delimiter line.
                for delim in std::mem::take(&mut heredocs) {
                    while i < chars.len() {
                        let end = chars[i..]
                            .iter()
                            .position(|&c| c == '\n')
                            .map_or(chars.len(), |p| i + p);
                        let text: String = chars[i..end].iter().collect();
                        i = (end + 1).min(chars.len());
                        line += 1;
                        if text.trim() == delim {
                            break;
                        }
                    }
                }
            }
            ' ' | '\t' => {
                end_word!();
                i += 1;
            }
            '\\' => {
                // A line continuation joins lines; any other escaped character is literal.
                if chars.get(i + 1) == Some(&'\n') {
                    line += 1;
                } else if let Some(&n) = chars.get(i + 1) {
                    start_word!();
                    word.push(n);
                }
                i += 2;
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                start_word!();
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                start_word!();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    match chars[i] {
                        '\\' => {
                            if let Some(&n) = chars.get(i + 1) {
                                word.push(n);
                            }
                            i += 2;
                        }
                        '$' | '`' => {
                            dynamic = true;
                            i = expansion(&chars, i, &mut line, found, functions);
                        }
                        ch => {
                            if ch == '\n' {
                                line += 1;
                            }
                            word.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            '$' | '`' => {
                start_word!();
                dynamic = true;
                i = expansion(&chars, i, &mut line, found, functions);
            }
            ';' | '&' | '|' | '(' | ')' => {
                end_word!();
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = match two.as_str() {
                    ";;" => ";;",
                    "&&" => "&&",
                    "||" => "||",
                    _ => match c {
                        ';' => ";",
                        '&' => "&",
                        '|' => "|",
                        '(' => "(",
                        _ => ")",
                    },
                };
                toks.push(Tok::Op(op));
                i += op.len();
            }
            '<' | '>' => {
                // A redirection: an fd number before it, and its target, are no words.
                if in_word && word.chars().all(|c| c.is_ascii_digit()) && !dynamic {
                    word.clear();
                    in_word = false;
                }
                end_word!();
                let heredoc = c == '<' && chars.get(i + 1) == Some(&'<');
                while i < chars.len() && matches!(chars[i], '<' | '>' | '&' | '-') {
                    i += 1;
                }
                while i < chars.len() && matches!(chars[i], ' ' | '\t') {
                    i += 1;
                }
                let start = i;
                skip_target(&chars, &mut i, &mut line, found, functions);
                if heredoc {
                    let delim: String = chars[start..i]
                        .iter()
                        .filter(|c| !matches!(c, '\'' | '"' | '\\'))
                        .collect();
                    heredocs.push(delim);
                }
            }
            _ => {
                start_word!();
                word.push(c);
                i += 1;
            }
        }
    }
    if in_word {
        toks.push(Tok::Word {
            text: word,
            dynamic,
            line: word_line,
        });
    }
    toks
}

/// Skips a redirection's target word, scanning any command substitution in it.
fn skip_target(
    chars: &[char],
    i: &mut usize,
    line: &mut usize,
    found: &mut Found,
    functions: &[String],
) {
    while *i < chars.len() && !matches!(chars[*i], ' ' | '\t' | '\n' | ';' | '&' | '|' | ')') {
        match chars[*i] {
            '"' | '\'' => {
                let q = chars[*i];
                *i += 1;
                while *i < chars.len() && chars[*i] != q {
                    if q == '"' && matches!(chars[*i], '$' | '`') {
                        *i = expansion(chars, *i, line, found, functions);
                    } else {
                        *i += 1;
                    }
                }
                *i += 1;
            }
            '$' | '`' => *i = expansion(chars, *i, line, found, functions),
            _ => *i += 1,
        }
    }
}

/// An expansion starting at `chars[i]` (`$`, `` ` ``): a command substitution is scanned as a
/// script of its own. Returns the index after it.
fn expansion(
    chars: &[char],
    i: usize,
    line: &mut usize,
    found: &mut Found,
    functions: &[String],
) -> usize {
    let (open, body_start) = match (chars[i], chars.get(i + 1)) {
        ('`', _) => ('`', i + 1),
        ('$', Some('(')) if chars.get(i + 2) == Some(&'(') => ('A', i + 3), // $(( arithmetic ))
        ('$', Some('(')) => ('(', i + 2),
        ('$', Some('{')) => ('{', i + 2),
        _ => {
            // $name, $1, $@ ...
            let mut j = i + 1;
            if j < chars.len() && !chars[j].is_ascii_alphanumeric() && chars[j] != '_' {
                return j + 1;
            }
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            return j;
        }
    };
    let mut depth = 1;
    let mut j = body_start;
    let mut quote: Option<char> = None;
    while j < chars.len() {
        let c = chars[j];
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') if open != '`' => quote = Some(c),
            (None, '\\') => j += 1,
            (None, '`') if open == '`' => {
                depth = 0;
            }
            (None, '(' | '{') if matches!((open, c), ('(' | 'A', '(') | ('{', '{')) => depth += 1,
            (None, ')' | '}') if matches!((open, c), ('(' | 'A', ')') | ('{', '}')) => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            break;
        }
        j += 1;
    }
    let body: String = chars[body_start..j.min(chars.len())].iter().collect();
    if matches!(open, '(' | '`') {
        let functions_then = functions.to_vec();
        let toks = tokenize(&body, *line, found, &functions_then);
        commands(&toks, &functions_then, found);
    }
    *line += body.matches('\n').count();
    let end = if open == 'A' { j + 2 } else { j + 1 };
    end.min(chars.len())
}

/// Walks the tokens and records the program at each command position.
fn commands(toks: &[Tok], functions: &[String], found: &mut Found) {
    enum State {
        /// The next word is a command (after assignments and reserved words).
        Command,
        /// Arguments of the current command, up to a separator.
        Args,
        /// After `for`: the name and word list, up to `do`.
        ForHeader,
        /// After `case`: the word, up to `in`.
        CaseHeader,
        /// A `case` pattern, up to `)`.
        Pattern,
    }
    let mut state = State::Command;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Op(op) => {
                state = match (state, *op) {
                    (State::Pattern, ")") => State::Command,
                    (State::Pattern, _) | (_, ";;") => State::Pattern,
                    (s @ (State::ForHeader | State::CaseHeader), _) => s,
                    _ => State::Command,
                };
            }
            Tok::Word {
                text,
                dynamic,
                line,
            } => match state {
                State::Args => {}
                State::ForHeader if text == "do" => state = State::Command,
                State::CaseHeader if text == "in" => state = State::Pattern,
                State::Pattern if text == "esac" => state = State::Args,
                State::ForHeader | State::CaseHeader | State::Pattern => {}
                State::Command if is_assignment(text) => {}
                State::Command if *dynamic => {
                    found.unresolved(*line, format!("a command computed at run time: {text}"));
                    state = State::Args;
                }
                State::Command => match text.as_str() {
                    "case" => state = State::CaseHeader,
                    "for" => state = State::ForHeader,
                    "esac" => state = State::Args,
                    t if KEYWORDS.contains(&t) => {}
                    t => {
                        if let Some(next) = wrapped(toks, i, t) {
                            if t != "command" && t != "exec" {
                                found.exec(t, *line);
                            }
                            // Continue at the wrapped program's word.
                            i = next;
                            continue;
                        }
                        if !BUILTINS.contains(&t) && !functions.iter().any(|f| f == t) {
                            found.exec(t, *line);
                            if let Some(script) = shell_c_script(&toks[i + 1..], t) {
                                scan(&script.0, script.1, found);
                            }
                        }
                        state = State::Args;
                    }
                },
            },
        }
        i += 1;
    }
}

/// For a wrapper at `toks[i]`, the index of the word naming the program it runs.
fn wrapped(toks: &[Tok], i: usize, wrapper: &str) -> Option<usize> {
    let words: Vec<Option<&str>> = toks[i + 1..]
        .iter()
        .map_while(|t| match t {
            Tok::Word { text, dynamic, .. } => Some((!dynamic).then_some(text.as_str())),
            Tok::Op(_) => None,
        })
        .collect();
    // `exec 9<file`, `command -v` at the end of a line: nothing is run.
    wrapped_program(wrapper, &words).map(|k| i + 1 + k)
}

/// Whether `program` runs the program a later word names (see [`WRAPPERS`]).
pub(super) fn is_wrapper(program: &str) -> bool {
    WRAPPERS.iter().any(|(w, ..)| *w == program)
}

/// Where, among the words after a wrapper, stands the program it runs: its options (and their
/// values), `env`'s assignments, its leading positionals and words computed at run time
/// (`None`) come first. `None` when no program follows.
pub(super) fn wrapped_program(wrapper: &str, words: &[Option<&str>]) -> Option<usize> {
    let &(_, valued, mut positionals) = WRAPPERS.iter().find(|(w, ..)| *w == wrapper)?;
    let mut k = 0;
    while let Some(word) = words.get(k) {
        match word {
            Some(w) if valued.contains(w) => k += 2,
            Some(w) if w.starts_with('-') || (wrapper == "env" && w.contains('=')) => k += 1,
            Some(_) if positionals == 0 => return Some(k),
            _ => {
                positionals = positionals.saturating_sub(1);
                k += 1;
            }
        }
    }
    None
}

/// The script of `sh -c SCRIPT` (and bash's, dash's), with its line, when it is literal.
fn shell_c_script(args: &[Tok], program: &str) -> Option<(String, usize)> {
    if !matches!(program, "sh" | "bash" | "dash") {
        return None;
    }
    match args {
        [
            Tok::Word { text: c, .. },
            Tok::Word {
                text,
                dynamic: false,
                line,
            },
            ..,
        ] if c == "-c" => Some((text.clone(), *line)),
        _ => None,
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(script: &str) -> Vec<String> {
        let mut found = Found::default();
        scan(script, 1, &mut found);
        assert!(found.unresolved.is_empty(), "{:?}", found.unresolved);
        found.execs.into_iter().map(|e| e.program).collect()
    }

    #[test]
    fn commands_after_every_separator() {
        let s = "ip link set lo up; tcpdump -i eth0 | awk '{ print $1 }' && sysctl -w a=1 || mv a b &\n";
        assert_eq!(programs(s), ["ip", "tcpdump", "awk", "sysctl", "mv"]);
    }

    #[test]
    fn builtins_keywords_assignments_and_functions_are_no_programs() {
        let s = "die() {\n    printf '%s\\n' x >&2\n    exit 1\n}\nPATH=/bin X=1 cat /f\n\
                 if [ -f x ]; then echo y; else die 2; fi\nwhile read -r a b; do rm -f \"$a\"; done <list\n";
        assert_eq!(programs(s), ["cat", "rm"]);
    }

    #[test]
    fn substitutions_are_scanned_also_inside_quotes() {
        let s =
            "netns=$(readlink /proc/self/ns/net | tr -cd 0-9)\necho \"all $(id -u) `hostname`\"\n";
        assert_eq!(programs(s), ["readlink", "tr", "id", "hostname"]);
    }

    #[test]
    fn case_patterns_for_lists_and_heredocs_are_data() {
        let s = "case $1 in\nstart | stop) run ;;\n*/*) die 2 x ;;\n-h) cat <<EOF\nusage: ip x\nEOF\n ;;\nesac\n\
                 for dev in all lo; do\n    touch \"$dev\"\ndone\n";
        assert_eq!(programs(s), ["run", "die", "cat", "touch"]);
    }

    #[test]
    fn wrappers_name_the_program_they_run() {
        let s = "command -v flock >/dev/null\nexec 9<\"$dir\"\nexec sh x\nenv A=1 B=2 tcpdump -n\n\
                 unshare --mount --propagation private sh -c 'ethtool -k x'\ntimeout 5 curl -s u\n\
                 flock -w 3 /run/x mkdir d\n\
                 mount --bind /dev/null \"$(command -v ip)\"\n";
        assert_eq!(
            programs(s),
            [
                // A substitution runs before the command it is an argument of.
                "ip", "flock", "sh", "env", "tcpdump", "unshare", "sh", "ethtool", "timeout",
                "curl", "flock", "mkdir", "mount"
            ]
        );
    }

    #[test]
    fn a_computed_command_is_reported() {
        let mut found = Found::default();
        scan("\"$tool\" --version\n", 1, &mut found);
        assert_eq!(found.unresolved.len(), 1);
        assert_eq!(found.unresolved[0].0, 1);
    }

    #[test]
    fn lines_are_counted_across_continuations_and_heredocs() {
        let mut found = Found::default();
        scan("cat <<X\na\nb\nX\nip a \\\n  b\ntcpdump\n", 10, &mut found);
        let lines: Vec<_> = found
            .execs
            .iter()
            .map(|e| (e.program.as_str(), e.line))
            .collect();
        assert_eq!(lines, [("cat", 10), ("ip", 14), ("tcpdump", 16)]);
    }
}
