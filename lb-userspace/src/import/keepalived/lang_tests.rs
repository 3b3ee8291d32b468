//! Unit tests of keepalived's configuration language as the reader follows it: braces and
//! comments, `@id` lines, `$NAME` definitions (multi-line too), `~SEQ` / `~LST`, and
//! `include` across files.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use super::{
    lexer::{Node, read},
    reader::{Main, Reader},
    *,
};

/// Each statement as `line: words`, indented two spaces per block level.
fn flat(nodes: &[Node], depth: usize, out: &mut Vec<String>) {
    for n in nodes {
        out.push(format!(
            "{}{}: {}",
            "  ".repeat(depth),
            n.line,
            n.words.join(" ")
        ));
        flat(n.children(), depth + 1, out);
    }
}

/// Reads `text` as keepalived with config id `id`: its statements and the warnings.
fn read_as(text: &str, id: &str) -> Result<(Vec<String>, Vec<Warning>), ImportError> {
    let mut r = Reader::new(Main::Text(text), "keepalived.conf", Some(id.into()), false)?;
    let nodes = read(&mut r)?;
    let mut out = Vec::new();
    flat(&nodes, 0, &mut out);
    Ok((out, r.warnings))
}

fn lines(text: &str) -> Vec<String> {
    read_as(text, "lb1").unwrap().0
}

#[test]
fn braces_anywhere_no_indentation_and_comments_anywhere() {
    let text = "virtual_server 10.0.0.1 80\n{\nreal_server 10.0.0.2 80{\nweight 2 ! two\n}}\n\
                virtual_server 10.0.0.3 80 { # web\n\treal_server 10.0.0.4 80 {weight 3}\n\
                # a whole line\n  ! another\n}";
    assert_eq!(
        lines(text),
        [
            "1: virtual_server 10.0.0.1 80",
            "  3: real_server 10.0.0.2 80",
            "    4: weight 2",
            "6: virtual_server 10.0.0.3 80",
            "  7: real_server 10.0.0.4 80",
            "    7: weight 3",
        ]
    );
    // `{` right after a quoted word, and braces inside quotes are words.
    assert_eq!(
        lines("a \"x { }\"{\nb \"}\"\n}\n"),
        ["1: a x { }", "  2: b }"]
    );
}

#[test]
fn a_final_backslash_outside_a_definition_stays_on_its_line() {
    assert_eq!(decomment_of("a b   \\"), "a b\\");
    assert_eq!(lines("a b \\\nc\n"), ["1: a b\\", "2: c"]);
}

fn decomment_of(s: &str) -> String {
    lexer::decomment(s, 1).unwrap()
}

#[test]
fn definitions_follow_keepalived_rules() {
    let text = "$ADDRESS_BASE=10.2.${ADDRESS_BASE_SUB}\n$ADDRESS_BASE_SUB=0\n\
                a ${ADDRESS_BASE}.100/32\n$ADDRESS_BASE_SUB=10\nb ${ADDRESS_BASE}.100/32\n\
                $P=80\nc $P,$P) ${P}x $Px $P.1 [$P]\n$Q =1\nd \"${UNDEFINED}\" $UNDEFINED\n\
                $E=\ne x$E y\n";
    assert_eq!(
        lines(text),
        [
            "3: a 10.2.0.100/32",
            "5: b 10.2.10.100/32",
            // `$NAME` must be followed by a blank, `,`, `)` or the end of the line.
            "7: c 80,80) 80x $Px $P.1 [$P]",
            // A blank before `=`: not a definition.
            "8: $Q =1",
            "9: d ${UNDEFINED} $UNDEFINED",
            "11: e x y",
        ]
    );
}

#[test]
fn substitution_may_start_a_comment_and_builtins_are_honored() {
    assert_eq!(
        lines("a ${_HASH} b\nc \"${_BANG}\" ${_INSTANCE}\n"),
        ["1: a", "2: c ! lb1"]
    );
    let (_, w) = read_as("a $_RANDOM\n", "lb1")
        .map(|_| ())
        .map_or_else(|e| ((), e), |()| panic!("${{_RANDOM}} imported"));
    assert!(matches!(w, ImportError::Unsupported { line: 1, .. }), "{w}");
    assert!(matches!(
        read_as("a ${_PWD}\n", "lb1"),
        Err(ImportError::Unsupported { line: 1, .. })
    ));
    // A redefined builtin is a plain definition.
    assert_eq!(lines("$_PWD=/etc\na $_PWD\n"), ["2: a /etc"]);
}

#[test]
fn a_substituted_line_is_not_read_again_for_config_ids() {
    // keepalived's manual shows `$IF_MAIN=@main` working, but its parser reads a substituted
    // line only once: the `@main` stays a word, as here.
    assert_eq!(
        lines("$IF_MAIN=@main\n$IF_MAIN priority 240\n"),
        ["2: @main priority 240"]
    );
    // A substituted value that starts with `~` stops the substitution of the line.
    assert_eq!(lines("$T=~x $B\n$B=b\n$T $B\n"), ["3: ~x $B $B"]);
}

#[test]
fn a_self_referring_definition_is_refused() {
    assert_eq!(
        read_as("$A=$A\nx $A\n", "lb1").unwrap_err(),
        ImportError::ExpansionLoop { line: 2 }
    );
    assert_eq!(
        read_as("$A=x$A\ny $A\n", "lb1").unwrap_err(),
        ImportError::LineTooLong { line: 2 }
    );
    // A multi-line definition whose lines expand it again.
    assert_eq!(
        read_as("$M=a \\\n$M \\\nb\n$M\n", "lb1").unwrap_err(),
        ImportError::ExpansionLoop { line: 4 }
    );
    let long = format!("a {}\n", "b".repeat(MAX_LINE));
    assert_eq!(
        read_as(&long, "lb1").unwrap_err(),
        ImportError::LineTooLong { line: 1 }
    );
}

#[test]
fn multi_line_definitions_expand_into_lines() {
    let text = "$RS= \\\nreal_server 192.168.${VS}.${N} 80 { \\\n  weight $N \\\n}\n\
                $VS=\\\nvirtual_server 10.0.${VS}.4 80 { \\\n\\\n  $N=1 \\\n  $RS \\\n  \
                $N=2 \\\n  $RS \\\n}\n\n$VS=ignored\n$VS=7\nvirtual_server 10.0.0.1 80 {\n}\n";
    // `$VS=ignored`: a second definition of VS, a single line, replaces the multi-line one.
    assert_eq!(
        lines(text),
        ["16: virtual_server 10.0.0.1 80"],
        "no reference: nothing expanded"
    );
    let text = "$RS= \\\nreal_server 192.168.${V}.${N} 80 { \\\n  weight $N \\\n}\n\
                $VS=\\\nvirtual_server 10.0.${V}.4 80 { \\\n  $N=1 \\\n  $RS \\\n  \
                $N=2 \\\n  $RS \\\n}\n\n$V=7\n$VS\n";
    assert_eq!(
        lines(text),
        [
            "14: virtual_server 10.0.7.4 80",
            "  14: real_server 192.168.7.1 80",
            "    14: weight 1",
            "  14: real_server 192.168.7.2 80",
            "    14: weight 2",
        ]
    );
    // Only alone at the end of its line; elsewhere it stays as written.
    assert_eq!(
        lines("$M=a\\\nb\n\nx $M\ny $M z\n"),
        ["4: x a", "4: b", "5: y $M z"]
    );
    // An empty line ends a definition whose lines all end with `\`.
    assert_eq!(lines("$M=a \\\n\nb\n$M\n"), ["3: b", "4: a"]);
}

#[test]
fn seq_generates_lines() {
    assert_eq!(
        lines("~SEQ(SUBNET, 0, 3) ip_address 10.0.${SUBNET}.1\n"),
        [
            "1: ip_address 10.0.0.1",
            "1: ip_address 10.0.1.1",
            "1: ip_address 10.0.2.1",
            "1: ip_address 10.0.3.1",
        ]
    );
    assert_eq!(
        lines("~SEQx(S, 0x90, 0x10, 0xc0) a fe80::${S}:1\n"),
        [
            "1: a fe80::90:1",
            "1: a fe80::a0:1",
            "1: a fe80::b0:1",
            "1: a fe80::c0:1",
        ]
    );
    // One number: from 1 (or -1) to it; two: start and end; descending with a negative step.
    assert_eq!(lines("~SEQ(i, 3) a $i\n"), ["1: a 1", "1: a 2", "1: a 3"]);
    assert_eq!(
        lines("~SEQ(i, 3, 1) a $i\n"),
        ["1: a 3", "1: a 2", "1: a 1"]
    );
    assert_eq!(
        lines("~SEQ(i, 5, -2, 1) a $i\n"),
        ["1: a 5", "1: a 3", "1: a 1"]
    );
    // Nested: the inner one runs for each value of the outer one; parameters may be $NAMEs.
    assert_eq!(
        lines("$N=2\n~SEQ(a, $N) ~SEQ(b, 1, $N) x ${a}.${b}\n"),
        ["2: x 1.1", "2: x 1.2", "2: x 2.1", "2: x 2.2"]
    );
    // A generated line may open a block.
    assert_eq!(
        lines("~SEQ(i, 2) real_server 10.0.0.$i 80 {\n}\n}\n").len(),
        2,
        "the braces of the generated lines pair with the following ones"
    );
}

#[test]
fn generators_inside_multi_line_definitions_run_before_its_next_lines() {
    let text = "$VS=virtual_server 10.0.0.${V} 80 { \\\n  \
                ~SEQ(R, 1, 2) real_server 10.0.${V}.${R} 80 { weight $R } \\\n}\n\
                ~SEQ(V, 1, 2) $VS\n";
    assert_eq!(
        lines(text),
        [
            "4: virtual_server 10.0.0.1 80",
            "  4: real_server 10.0.1.1 80",
            "    4: weight 1",
            "  4: real_server 10.0.1.2 80",
            "    4: weight 2",
            "4: virtual_server 10.0.0.2 80",
            "  4: real_server 10.0.2.1 80",
            "    4: weight 1",
            "  4: real_server 10.0.2.2 80",
            "    4: weight 2",
        ]
    );
}

#[test]
fn invalid_seq_is_skipped_with_a_warning_and_big_ones_are_bounded() {
    let (l, w) = read_as("~SEQ(i, 1, -1, 3) a $i\nb\n", "lb1").unwrap();
    assert_eq!(l, ["2: b"]);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].line, 1);
    assert!(w[0].message.contains("invalid ~SEQ"), "{}", w[0]);
    let long = format!("~SEQ(i, 1, 1000000000000) {} $i\n", "x".repeat(900));
    assert!(matches!(
        read_as(&long, "lb1"),
        Err(ImportError::ExpansionTooLarge { line: 1 })
    ));
    // Parameters too long, or a multi-line one, or a multibyte character after the name: invalid.
    for bad in [
        "$N=1\\\n2\n\n~SEQ(i, $N) a\nb\n",
        "$N=11111111111111111111111111111111111111111111111111111111111111111111\n\
         ~SEQ(i, $N) a\nb\n",
        "~SEQ(i é1, 2) a\nb\n",
    ] {
        let (l, w) = read_as(bad, "lb1").unwrap();
        assert_eq!(l.len(), 1, "{bad:?}: {l:?}");
        assert!(l[0].ends_with(": b"), "{bad:?}: {l:?}");
        assert!(w[0].message.contains("invalid ~SEQ"), "{}", w[0]);
    }
    // Generating nothing still ends.
    assert!(matches!(
        read_as("~SEQ(i, 1, 1000000000000)\n", "lb1"),
        Err(ImportError::ExpansionTooLarge { line: 1 })
    ));
}

#[test]
fn lst_generates_lines() {
    assert_eq!(
        lines("~LST({IP, IP1}, {10,1},{20,4}) 192.168.${IP}.${IP1}\n"),
        ["1: 192.168.10.1", "1: 192.168.20.4"]
    );
    assert_eq!(
        lines("~LST(IP, 1, 2) ~LST(IP1, 5,6) a 192.169.${IP}.${IP1}\n"),
        [
            "1: a 192.169.1.5",
            "1: a 192.169.1.6",
            "1: a 192.169.2.5",
            "1: a 192.169.2.6",
        ]
    );
    // Missing values are empty; too many make the ~LST invalid.
    assert_eq!(
        lines("~LST({A, B}, {1}, {2, 3}) x a${A} b${B}\n"),
        ["1: x a1 b", "1: x a2 b3"]
    );
    let (l, w) = read_as("~LST({A}, {1, 2}) x $A\n", "lb1").unwrap();
    assert!(l.is_empty());
    assert!(w[0].message.contains("invalid ~LST"), "{}", w[0]);
    assert_eq!(
        lines("~LST({IP, IP1}, {10,1},{20,4}) ~SEQ(IP2,168,2,170) 192.${IP2}.${IP}.${IP1}\n"),
        [
            "1: 192.168.10.1",
            "1: 192.170.10.1",
            "1: 192.168.20.4",
            "1: 192.170.20.4",
        ]
    );
}

#[test]
fn config_id_lines_are_kept_or_skipped_with_a_warning() {
    let text = "@main a 1\n@backup b 2\n@^main c 3\n@^backup d 4\n@main\n@main $P=9\ne $P\n";
    let (l, w) = read_as(text, "main").unwrap();
    assert_eq!(l, ["1: a 1", "4: d 4", "7: e 9"]);
    let said: Vec<(usize, bool)> = w
        .iter()
        .map(|w| (w.line, w.message.contains("imported")))
        .collect();
    assert_eq!(
        said,
        [
            (1, true),
            (2, false),
            (3, false),
            (4, true),
            (5, false),
            (6, true)
        ]
    );
    assert!(w[1].message.contains("config id is `main`"), "{}", w[1]);
    assert!(w[4].message.contains("nothing follows"), "{}", w[4]);
    // Another director.
    assert_eq!(
        read_as(text, "backup").unwrap().0,
        ["2: b 2", "3: c 3", "7: e $P"]
    );
    // The default id says where it comes from.
    let im = import("@x- a\nvirtual_server 10.0.0.1 80 {\n}\n", "eth0").unwrap();
    let w = im.warnings.iter().find(|w| w.line == 1).unwrap();
    assert!(
        w.message.contains("skipped") && w.message.contains("host name"),
        "{w}"
    );
}

#[test]
fn a_generated_line_is_reported_once() {
    let (l, w) = read_as("~SEQ(i, 3) @lb2 a $i\n", "lb1").unwrap();
    assert!(l.is_empty());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].message.contains("skipped"), "{}", w[0]);
}

#[test]
fn include_needs_a_file() {
    assert_eq!(
        read_as("a\ninclude /etc/keepalived/x.conf\n", "lb1")
            .unwrap_err()
            .line(),
        Some(2)
    );
    // `include` must be followed by a blank; `includex` is a keyword like any other.
    assert_eq!(
        lines("includex y\ninclude\n"),
        ["1: includex y", "2: include"]
    );
}

/// A fresh directory under the system's temporary one.
fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "kalang-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn read_file(path: &Path) -> Result<(Vec<String>, Vec<Warning>, Reader), ImportError> {
    let name = path.display().to_string();
    let mut r = Reader::new(Main::File(path), &name, Some("lb1".into()), false)?;
    let nodes = read(&mut r)?;
    let mut out = Vec::new();
    flat(&nodes, 0, &mut out);
    let w = std::mem::take(&mut r.warnings);
    Ok((out, w, r))
}

#[test]
fn includes_follow_globs_braces_and_relative_paths() {
    let d = temp_dir("chain");
    write(
        &d,
        "etc/keepalived.conf",
        "global_defs {\n}\ninclude conf.d/*.conf\ninclude ../shared/{one,two}.conf\nlast\n",
    );
    // conf.d's own includes are relative to conf.d.
    write(&d, "etc/conf.d/b.conf", "b1\ninclude sub/c.conf\nb3\n");
    write(&d, "etc/conf.d/a.conf", "a1 ${_PWD}\n");
    write(&d, "etc/conf.d/skip.txt", "not included\n");
    write(&d, "etc/conf.d/sub/c.conf", "c1\n");
    write(&d, "shared/one.conf", "one\n");
    write(&d, "shared/two.conf", "two\n");
    let (l, w, r) = read_file(&d.join("etc/keepalived.conf")).unwrap();
    let conf_d = fs::canonicalize(d.join("etc/conf.d")).unwrap();
    let words: Vec<&str> = l.iter().map(|s| s.split_once(": ").unwrap().1).collect();
    assert_eq!(
        words,
        [
            "global_defs",
            &format!("a1 {}", conf_d.display()),
            "b1",
            "c1",
            "b3",
            "one",
            "two",
            "last"
        ]
    );
    assert!(w.is_empty(), "{w:?}");
    let names: Vec<String> = r
        .names
        .iter()
        .map(|n| n.strip_prefix(&d.display().to_string()).unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "/etc/keepalived.conf",
            "/etc/conf.d/a.conf",
            "/etc/conf.d/b.conf",
            "/etc/conf.d/sub/c.conf",
            "/etc/../shared/one.conf",
            "/etc/../shared/two.conf",
        ]
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn include_problems_are_warnings_unless_keepalived_checks() {
    let d = temp_dir("checks");
    write(
        &d,
        "k.conf",
        "include missing.conf\ninclude none/*.conf\ninclude {a,missing}.conf\nx\n",
    );
    write(&d, "a.conf", "a\n");
    let (l, w, _) = read_file(&d.join("k.conf")).unwrap();
    let words: Vec<&str> = l.iter().map(|s| s.split_once(": ").unwrap().1).collect();
    assert_eq!(words, ["a", "x"]);
    let said: Vec<(usize, &str)> = w.iter().map(|w| (w.line, w.message.as_str())).collect();
    assert_eq!(said.len(), 3, "{said:?}");
    assert_eq!(said[0].0, 1);
    assert!(said[0].1.contains("missing.conf"), "{said:?}");
    assert!(said[2].1.contains("some config files missing"), "{said:?}");
    // includea checks everything; includeb the braces; include_check in global_defs applies
    // to the includes after it.
    write(&d, "k.conf", "includea none/*.conf\n");
    assert!(matches!(
        read_file(&d.join("k.conf")).map(|_| ()),
        Err(ImportError::Include { line: 1, .. })
    ));
    write(&d, "k.conf", "includeb {a,missing}.conf\n");
    assert!(matches!(
        read_file(&d.join("k.conf")).map(|_| ()),
        Err(ImportError::Include { line: 1, .. })
    ));
    write(&d, "k.conf", "include missing.conf\n");
    let all = Options {
        interface: "eth0".into(),
        all_config: true,
        ..Options::default()
    };
    assert!(matches!(
        import_file(&d.join("k.conf"), &all),
        Err(ImportError::Include { line: 1, .. })
    ));
    write(
        &d,
        "k.conf",
        "include missing.conf\nglobal_defs {\ninclude_check\n}\ninclude missing.conf\n",
    );
    assert!(matches!(
        read_file(&d.join("k.conf")).map(|_| ()),
        Err(ImportError::Include { line: 5, .. })
    ));
    // A directory or an executable file is skipped.
    fs::create_dir_all(d.join("dir.inc")).unwrap();
    write(&d, "k.conf", "include *.inc\n");
    let (_, w, _) = read_file(&d.join("k.conf")).unwrap();
    assert!(
        w.iter()
            .any(|w| w.message.contains("dir.inc/' is a directory")),
        "{w:?}"
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_include_cycle_is_refused() {
    let d = temp_dir("cycle");
    write(&d, "a.conf", "a\ninclude b.conf\n");
    write(&d, "b.conf", "b\n\ninclude ./a.conf\n");
    let e = read_file(&d.join("a.conf")).map(|_| ()).unwrap_err();
    assert!(
        matches!(&e, ImportError::IncludeCycle { file, .. } if file.ends_with("a.conf")),
        "{e}"
    );
    // Through the API, the error names the included file and its line.
    let e = import_file(&d.join("a.conf"), &Options::default()).unwrap_err();
    assert_eq!(e.file().map(|f| f.ends_with("b.conf")), Some(true), "{e}");
    assert_eq!(e.line(), Some(3), "{e}");
    assert!(e.to_string().contains("b.conf: line 3: include of"), "{e}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn warnings_and_errors_name_the_included_file_and_line() {
    let d = temp_dir("names");
    write(
        &d,
        "keepalived.conf",
        "! main\ninclude services.conf\nvirtual_server 10.0.0.9 80 {\n  protocal UDP\n}\n",
    );
    write(
        &d,
        "services.conf",
        "\n\nvirtual_server 10.0.0.1 80 {\n  lb_kind DR\n  bogus 1\n  real_server \
         10.0.0.2 80 {\n  }\n}\n",
    );
    let options = Options {
        interface: "eth0".into(),
        config_id: Some("lb1".into()),
        ..Options::default()
    };
    let im = import_file(&d.join("keepalived.conf"), &options).unwrap();
    let bogus = im
        .warnings
        .iter()
        .find(|w| w.message.contains("bogus"))
        .expect("the unknown keyword is reported");
    assert_eq!(bogus.line, 5);
    assert!(bogus.file.as_deref().unwrap().ends_with("services.conf"));
    assert!(bogus.to_string().starts_with("line 5 of "), "{bogus}");
    let misspelled = im
        .warnings
        .iter()
        .find(|w| w.message.contains("protocal"))
        .expect("the misspelling is reported");
    assert_eq!((misspelled.line, misspelled.file.as_deref()), (4, None));
    // The YAML's comments name lines as the warnings do.
    assert!(im.yaml.contains("line 3 of "), "{}", im.yaml);
    assert!(
        im.yaml.contains("# line 3 of ")
            && im.yaml.contains("services.conf: virtual_server 10.0.0.1"),
        "{}",
        im.yaml
    );
    assert!(
        im.yaml
            .contains("keepalived.conf line 3: virtual_server 10.0.0.9"),
        "{}",
        im.yaml
    );
    // A structure error in the included file.
    write(&d, "services.conf", "a {\n}\n}\n");
    let e = import_file(&d.join("keepalived.conf"), &options).unwrap_err();
    match e {
        ImportError::InFile { file, error } => {
            assert!(file.ends_with("services.conf"));
            assert_eq!(*error, ImportError::UnexpectedClose { line: 3 });
        }
        e => panic!("{e}"),
    }
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn only_yaml_comments_get_their_line_references_mapped() {
    assert_eq!(comment_start("# line 3: x"), Some(0));
    assert_eq!(comment_start("  vip: 10.0.0.1  # line 3"), Some(17));
    assert_eq!(comment_start("  cmd: 'echo # line 3'  # line 4"), Some(24));
    assert_eq!(comment_start("  cmd: \"a \\\" # b\""), None);
    assert_eq!(comment_start("  cmd: a#b"), None);
}

#[test]
fn odd_mixtures_of_the_language_do_not_panic() {
    const PIECES: &[&str] = &[
        "$A=",
        "$B=x \\",
        "$A",
        "${A}",
        "${_HASH}",
        "${_ENV HOME}",
        "${_RANDOM 1 x}",
        "~SEQ(",
        "~SEQx(",
        "~LST(",
        "{",
        "}",
        "(",
        ")",
        ",",
        " ",
        "\t",
        "\n",
        "\\",
        "\"",
        "#",
        "!",
        "@lb1 ",
        "@^lb1 ",
        "@",
        "é",
        "1",
        "-1",
        "0x10",
        "i",
        "virtual_server 10.0.0.1 80",
        "include x",
        "includea ",
        "$",
        "~",
    ];
    // A fixed xorshift: the same inputs on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..24 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(PIECES[(state % PIECES.len() as u64) as usize]);
        }
        let _ = read_as(&text, "lb1");
    }
}
