//! A linear pre-check of YAML nesting. The YAML parser takes time that grows faster than the
//! input with deeply nested flow collections (`[[[[...`: 100,000 levels in 200 KB took 18 s in a
//! release build, during which a reload stalls), and refuses them only afterwards. This scan
//! refuses them first, in one pass. It counts `[` and `{` outside quoted scalars and comments;
//! brackets inside plain scalars count too, so it can only err towards refusing text that nests
//! brackets more than [`MAX_FLOW_DEPTH`] deep, which no configuration needs.

/// The deepest nesting of flow collections (`[`, `{`) accepted. A configuration needs 3.
pub const MAX_FLOW_DEPTH: usize = 32;

/// The line and column (1-based) of the first bracket nested deeper than [`MAX_FLOW_DEPTH`].
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let (mut line, mut column) = (1, 0);
    let mut quote: Option<char> = None;
    let mut comment = false;
    // The last character, and the last one that is not a blank, on this line.
    let (mut last, mut last_solid) = ('\n', '\n');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        if c == '\n' {
            (line, column) = (line + 1, 0);
            comment = false;
            (last, last_solid) = ('\n', '\n');
            continue;
        }
        match quote {
            _ if comment => {}
            Some('\'') if c == '\'' => {
                // '' is an escaped quote inside a single-quoted scalar.
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    quote = None;
                }
            }
            Some('"') if c == '\\' => {
                chars.next();
                column += 1;
            }
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
            None => match c {
                '#' if matches!(last, ' ' | '\t' | '\n') => comment = true,
                // A quote opens a scalar only where a scalar may start.
                '\'' | '"' if matches!(last_solid, '\n' | ':' | '-' | '[' | '{' | ',' | '?') => {
                    quote = Some(c);
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        last = c;
        if c != ' ' && c != '\t' {
            last_solid = c;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn deep_flow_nesting_is_found_fast_and_located() {
        let n = 100_000;
        let text = format!(
            "interface: eth0\nvirtual_servers: {}{}",
            "[".repeat(n),
            "]".repeat(n)
        );
        let start = Instant::now();
        assert_eq!(too_deep(&text), Some((2, 17 + MAX_FLOW_DEPTH + 1)));
        assert!(start.elapsed() < Duration::from_secs(1));
        let maps = format!("a: {}1{}", "{b: ".repeat(40), "}".repeat(40));
        assert_eq!(too_deep(&maps), Some((1, 4 + 4 * MAX_FLOW_DEPTH)));
    }

    #[test]
    fn ordinary_configurations_and_brackets_in_strings_pass() {
        for text in [
            include_str!("../../../configs/example.yaml"),
            include_str!("../../../configs/rabbitmq.yaml"),
        ] {
            assert_eq!(too_deep(text), None);
        }
        let deep = "[".repeat(MAX_FLOW_DEPTH + 5);
        let hidden = format!(
            "a: \"{deep}\"\nb: '{deep}'' {deep}'\nc: x # {deep}\nd: it's [x] and {{y}}\n\
             e: {}{}\n",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert_eq!(too_deep(&hidden), None);
    }
}
