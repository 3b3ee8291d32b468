//! Unit tests of the importer's parts: the lexer, suggestions and YAML scalars.

use std::path::Path;

use super::{
    importer::{edit_distance, suggest},
    keywords::{RS_KEYWORDS, VS_KEYWORDS},
    lexer::{Node, decomment, parse, script_words, shell_join, words},
    parsed::number,
    yaml::{header_is_only_comments, yaml_quoted, yaml_str},
    *,
};
use crate::config::Config;

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
