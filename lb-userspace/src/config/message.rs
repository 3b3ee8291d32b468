//! How an error message shows the operator's input: quoted excerpts (between backticks) are
//! cut to [`MAX_EXCERPT`] characters with the full length said, and control characters (line
//! breaks, CR, NUL, escape sequences) are written as escapes, so that a message stays one line
//! that names its file and path, and nothing from the input reaches the terminal raw.

/// The longest quoted excerpt shown, in characters.
pub const MAX_EXCERPT: usize = 60;

/// `message` as it is shown.
pub fn shown(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4 * MAX_EXCERPT));
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        push_escaped(&mut out, &rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('`') else {
            // An unclosed quote: the rest is an excerpt.
            out.push('`');
            push_excerpt(&mut out, after, false);
            return out;
        };
        out.push('`');
        push_excerpt(&mut out, &after[..close], true);
        rest = &after[close + 1..];
    }
    push_escaped(&mut out, rest);
    out
}

/// The longest field path shown, in characters (keys come from the input).
pub const MAX_PATH: usize = 160;

/// A field path as it is shown: control characters in its keys escaped, and a path longer
/// than [`MAX_PATH`] cut in the middle.
pub fn path_shown(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len().min(2 * MAX_PATH));
    push_escaped(&mut escaped, path);
    let len = escaped.chars().count();
    if len <= MAX_PATH {
        return escaped;
    }
    let head: String = escaped.chars().take(MAX_PATH / 2).collect();
    let tail: String = escaped.chars().skip(len - MAX_PATH / 2 + 1).collect();
    format!("{head}…{tail}")
}

/// An excerpt, cut if long, then its closing backtick (when `closed`) and its length.
fn push_excerpt(out: &mut String, excerpt: &str, closed: bool) {
    let len = excerpt.chars().count();
    if len <= MAX_EXCERPT {
        push_escaped(out, excerpt);
        if closed {
            out.push('`');
        }
        return;
    }
    let head: String = excerpt.chars().take(MAX_EXCERPT - 1).collect();
    push_escaped(out, &head);
    out.push('…');
    if closed {
        out.push('`');
    }
    out.push_str(&format!(" ({len} characters)"));
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_are_unchanged() {
        let m = "`wrr ` is not a scheduler; use rr, wrr or mh";
        assert_eq!(shown(m), m);
    }

    #[test]
    fn control_characters_are_escaped_inside_and_outside_quotes() {
        assert_eq!(
            shown("interface name `eth0\nfoo\rbar\0` has \u{1b}[31m"),
            "interface name `eth0\\nfoo\\rbar\\0` has \\u{1b}[31m"
        );
    }

    #[test]
    fn paths_are_escaped_and_cut_in_the_middle() {
        assert_eq!(
            path_shown("virtual_servers[0].port"),
            "virtual_servers[0].port"
        );
        assert_eq!(path_shown("a.b\tc"), "a.b\\tc");
        let long = format!("virtual_servers[3].{}.x", "\t".repeat(200));
        let shown = path_shown(&long);
        assert_eq!(shown.chars().count(), MAX_PATH);
        assert!(shown.starts_with("virtual_servers[3].\\t\\t"), "{shown}");
        assert!(shown.ends_with("\\t.x"), "{shown}");
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn long_excerpts_are_cut_with_their_length() {
        let long = "x".repeat(100_000);
        let s = shown(&format!("`{long}` is not a valid IP address"));
        assert_eq!(
            s,
            format!(
                "`{}…` (100000 characters) is not a valid IP address",
                "x".repeat(MAX_EXCERPT - 1)
            )
        );
        let unclosed = shown(&format!("found `{long}"));
        assert!(unclosed.ends_with("… (100000 characters)"), "{unclosed}");
        assert!(unclosed.len() < 200);
    }
}
