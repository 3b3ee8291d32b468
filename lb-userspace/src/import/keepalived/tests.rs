//! Unit tests of the importer's parts: the lexer, suggestions and YAML scalars; and the
//! conversion of keepalived's `lvs_sync_daemon` to `sync:`.

use std::{net::IpAddr, path::Path, time::Duration};

use super::{
    importer::{edit_distance, suggest},
    keywords::{RS_KEYWORDS, VS_KEYWORDS},
    lexer::{Node, decomment, parse, script_words, shell_join, words},
    parsed::number,
    yaml::{header_is_only_comments, yaml_quoted, yaml_str},
    *,
};
use crate::config::{Config, SyncConfig};

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
    let text = format!("virtual_server 10.0.0.1 80 {{\n{}", "x {\n".repeat(400_000));
    assert_eq!(
        import(&text, "eth0").unwrap_err(),
        ImportError::TooDeep {
            line: MAX_BLOCK_DEPTH + 1
        }
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
    // keepalived's lines are short: an expansion past its line length is refused.
    let mut text = format!("$A={}\n", "x".repeat(1000));
    text += "$A $A\n";
    let start = std::time::Instant::now();
    assert_eq!(
        import(&text, "eth0").unwrap_err(),
        ImportError::LineTooLong { line: 2 }
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    // Many small expansions add up.
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
    assert_eq!(
        parse("a {\n\"open\n}\n"),
        Err(ImportError::UnterminatedQuote { line: 2 })
    );
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

/// A keepalived.conf with `global` on line 2, in global_defs; vrrp_instance VI_1 (interface
/// eth0, virtual_router_id 51) from line 4, with `vrrp` on line 7; one DR service from line 12.
fn with_sync(global: &str, vrrp: &str) -> String {
    format!(
        "global_defs {{\n    {global}\n}}\nvrrp_instance VI_1 {{\n    interface eth0\n    \
         virtual_router_id 51\n    {vrrp}\n    virtual_ipaddress {{\n        10.0.0.1\n    }}\n\
         }}\nvirtual_server 10.0.0.1 80 {{\n    lb_algo rr\n    lb_kind DR\n    \
         real_server 10.0.0.2 80 {{\n    }}\n}}\n"
    )
}

/// Imports `text` for eth0 and reads the YAML back, which lb-agent must accept.
fn accepted(text: &str) -> (Import, Config) {
    let im = import(text, "eth0").unwrap_or_else(|e| panic!("import failed: {e}\n{text}"));
    let config = Config::from_yaml(&im.yaml, Path::new("imported.yaml"))
        .unwrap_or_else(|e| panic!("YAML refused:\n{e}\n---\n{}", im.yaml));
    (im, config)
}

/// Asserts a warning on `line` that contains every fragment.
#[track_caller]
fn warned(im: &Import, line: usize, fragments: &[&str]) {
    let hit = im
        .warnings
        .iter()
        .any(|w| w.line == line && fragments.iter().all(|f| w.message.contains(f)));
    let all: String = im.warnings.iter().map(|w| format!("  {w}\n")).collect();
    assert!(
        hit,
        "no warning on line {line} with {fragments:?}; warnings:\n{all}"
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The `sync:` an import gives with keepalived's defaults: IPVS's group and TTL, lb-agent's
/// port, key file, startup wait and refresh.
fn imported_sync(id: u32, interface: &str) -> SyncConfig {
    SyncConfig {
        id,
        key_file: "/etc/lb-xdp/sync.key".into(),
        port: 8849,
        group: Some(ip("224.0.0.81")),
        interface: Some(interface.into()),
        peers: Vec::new(),
        ttl: 1,
        startup_wait: Duration::from_secs(3),
        refresh: Duration::from_secs(120),
    }
}

/// The note every converted sync daemon gets, as the operator reads it.
const KEY_NOTE: &str = "is converted to sync:, lb-agent's own director sync, on UDP port 8849 \
                        (not IPVS's 8848). keepalived's sync has no authentication; lb-agent's \
                        requires a shared secret: create /etc/lb-xdp/sync.key with the same \
                        secret on every director, for example `head -c 32 /dev/urandom | base64 \
                        > /etc/lb-xdp/sync.key; chmod 600 /etc/lb-xdp/sync.key` on one, then \
                        copy the file to the others";

#[test]
fn lvs_sync_daemon_full_form() {
    let text = with_sync(
        "lvs_sync_daemon eth1 VI_1 id 7 maxlen 1400 port 8848 ttl 2 group 239.0.0.81",
        "",
    );
    let (im, c) = accepted(&text);
    assert_eq!(
        c.sync,
        Some(SyncConfig {
            group: Some(ip("239.0.0.81")),
            ttl: 2,
            ..imported_sync(7, "eth1")
        })
    );
    warned(
        &im,
        1,
        &[
            "global_defs is handled by keepalived, not by lb-agent: not converted (it stays in \
           keepalived.conf), but for its lvs_sync_daemon (line 2), which becomes sync:",
        ],
    );
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon maxlen 1400 is not carried: lb-agent's sync datagrams always fit a \
           1500-byte MTU",
        ],
    );
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon port 8848 is not carried: it is a port of IPVS's sync format; \
           lb-agent's sync has its own, sync.port (default 8849)",
        ],
    );
    warned(&im, 2, &[&format!("lvs_sync_daemon {KEY_NOTE}")]);
    warned(&im, 4, &["vrrp_instance VI_1 is handled by keepalived"]);
    assert_eq!(im.warnings.len(), 5, "{:#?}", im.warnings);
    // The section names its line, keeps the key order of configs/example.yaml and says where
    // the values lb-agent adds come from; the header says what was converted.
    let expected = "\nsync:\n  # keepalived.conf line 2: lvs_sync_daemon eth1 VI_1 id 7 maxlen 1400 \
                    port 8848 ttl 2 group 239.0.0.81\n  id: 7\n  key_file: /etc/lb-xdp/sync.key   \
                    # create it, with the same secret on every director\n  port: 8849   \
                    # lb-agent's sync port, not IPVS's 8848\n  group: 239.0.0.81\n  \
                    interface: eth1\n  ttl: 2\n\nvirtual_servers:\n";
    assert!(im.yaml.contains(expected), "{}", im.yaml);
    assert!(
        im.yaml
            .contains("# Only keepalived's virtual_server blocks and its lvs_sync_daemon"),
        "{}",
        im.yaml
    );
    // An IPv6 group is carried too.
    let (_, c) = accepted(&with_sync("lvs_sync_daemon eth1 VI_1 group ff02::81", ""));
    assert_eq!(c.sync.unwrap().group, Some(ip("ff02::81")));
}

#[test]
fn lvs_sync_daemon_minimal_form() {
    // The sync id is the named instance's virtual_router_id, even when the instance comes
    // later in the file; the group and TTL are IPVS's.
    let (im, c) = accepted(&with_sync("lvs_sync_daemon eth1 VI_1", ""));
    assert_eq!(c.sync, Some(imported_sync(51, "eth1")));
    warned(&im, 2, &[&format!("lvs_sync_daemon {KEY_NOTE}")]);
    assert_eq!(im.warnings.len(), 3, "{:#?}", im.warnings);
    for line in [
        "  id: 51   # the virtual_router_id of vrrp_instance VI_1, keepalived's default\n",
        "  group: 224.0.0.81   # IPVS's default\n",
        "  ttl: 1   # IPVS's default\n",
    ] {
        assert!(
            im.yaml.contains(line),
            "{line:?} missing from:\n{}",
            im.yaml
        );
    }
    // keepalived's older third word: the sync id without `id`.
    let (_, c) = accepted(&with_sync("lvs_sync_daemon eth1 VI_1 9", ""));
    assert_eq!(c.sync.unwrap().id, 9);
    // `inst NAME` names the instance too.
    let (_, c) = accepted(&with_sync("lvs_sync_daemon eth1 inst VI_1", ""));
    assert_eq!(c.sync.unwrap().id, 51);
    // An instance that is not in the file, or none: sync id 0, said so.
    let (im, c) = accepted(&with_sync("lvs_sync_daemon eth1 VI_9", ""));
    assert_eq!(c.sync, Some(imported_sync(0, "eth1")));
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon: vrrp_instance VI_9, whose virtual_router_id is keepalived's default \
           sync id, is not in this file: sync.id 0 is used; every director needs the same \
           sync.id",
        ],
    );
    assert!(
        im.yaml
            .contains("  id: 0   # no sync id in keepalived.conf: see the warnings\n"),
        "{}",
        im.yaml
    );
    let (im, c) = accepted(&with_sync("lvs_sync_daemon eth1", ""));
    assert_eq!(c.sync.unwrap().id, 0);
    warned(
        &im,
        2,
        &["lvs_sync_daemon names no VRRP instance and no id: sync.id 0 is used"],
    );
    // No lvs_sync_daemon: no sync, and the header and global_defs warning as before.
    let (im, c) = accepted(&with_sync("router_id lb1", ""));
    assert_eq!(c.sync, None);
    assert!(!im.yaml.contains("sync"), "{}", im.yaml);
    warned(
        &im,
        1,
        &[
            "global_defs is handled by keepalived, not by lb-agent: not converted (it stays in \
           keepalived.conf)",
        ],
    );
    assert_eq!(im.warnings.len(), 2, "{:#?}", im.warnings);
}

#[test]
fn old_lvs_sync_daemon_interface_takes_the_virtual_router_id() {
    let (im, c) = accepted(&with_sync(
        "router_id lb1",
        "lvs_sync_daemon_interface eth2",
    ));
    assert_eq!(c.sync, Some(imported_sync(51, "eth2")));
    warned(&im, 7, &[&format!("lvs_sync_daemon_interface {KEY_NOTE}")]);
    assert_eq!(im.warnings.len(), 3, "{:#?}", im.warnings);
    assert!(
        im.yaml
            .contains("# keepalived.conf line 7: lvs_sync_daemon_interface eth2\n"),
        "{}",
        im.yaml
    );
    // Before virtual_router_id in its block, the same.
    let text = "vrrp_instance VI_2 {\n    lvs_sync_daemon_interface bond1\n    interface eth0\n    \
                virtual_router_id 42\n}\n";
    let (_, c) = accepted(text);
    assert_eq!(c.sync, Some(imported_sync(42, "bond1")));
    // Without a virtual_router_id (keepalived would refuse the instance): sync id 0, said so.
    let (im, c) = accepted(&text.replace("    virtual_router_id 42\n", ""));
    assert_eq!(c.sync, Some(imported_sync(0, "bond1")));
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon_interface: vrrp_instance VI_2 has no virtual_router_id to take the \
           sync id from: sync.id 0 is used; every director needs the same sync.id",
        ],
    );
    // keepalived runs one sync daemon: the first of the file.
    let (im, c) = accepted(&with_sync(
        "lvs_sync_daemon eth1 VI_1 id 3",
        "lvs_sync_daemon_interface eth2",
    ));
    assert_eq!(c.sync, Some(imported_sync(3, "eth1")));
    warned(
        &im,
        7,
        &[
            "lvs_sync_daemon_interface is ignored, as keepalived runs one sync daemon: the \
           lvs_sync_daemon of line 2 becomes sync:",
        ],
    );
}

#[test]
fn bad_lvs_sync_daemon_values_are_ignored_as_keepalived_does() {
    let (im, c) = accepted(&with_sync(
        "lvs_sync_daemon eth1 VI_1 id 300 ttl 0 group 10.0.0.9 prot 8848 maxlen",
        "",
    ));
    // What keepalived ignores leaves its default: the instance's id, IPVS's TTL and group.
    assert_eq!(c.sync, Some(imported_sync(51, "eth1")));
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon id 300: not a whole number from 0 to 255, so keepalived ignores it; \
           the sync id stays the VRRP instance's virtual_router_id",
        ],
    );
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon ttl 0: not a whole number from 1 to 255, so keepalived ignores it; \
           ttl stays 1",
        ],
    );
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon group 10.0.0.9: not a multicast address, so keepalived ignores it; \
           group stays IPVS's 224.0.0.81",
        ],
    );
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon: unknown option \"prot\" (did you mean \"port\"?): ignored as \
           keepalived does",
        ],
    );
    warned(
        &im,
        2,
        &["lvs_sync_daemon: unknown option \"8848\": ignored as keepalived does"],
    );
    warned(
        &im,
        2,
        &["lvs_sync_daemon maxlen has no value: ignored as keepalived does"],
    );
    let (im, _) = accepted(&with_sync(
        "lvs_sync_daemon eth1 VI_1 group 224.0.0.x ttl x",
        "",
    ));
    warned(&im, 2, &["group 224.0.0.x: not an IP address"]);
    warned(&im, 2, &["ttl x: not a whole number from 1 to 255"]);
    let (im, _) = accepted(&with_sync("lvs_sync_daemon eth1 VI_1 prot", ""));
    warned(
        &im,
        2,
        &[
            "lvs_sync_daemon: \"prot\" (did you mean \"port\"?), the fourth word, is read as the \
           sync id and is not a whole number from 0 to 255, so keepalived ignores it",
        ],
    );
    // Without an interface, or with one IPVS cannot take, keepalived runs no sync daemon.
    for (line, what) in [
        (
            "lvs_sync_daemon",
            "lvs_sync_daemon has no interface: ignored as keepalived does",
        ),
        (
            "lvs_sync_daemon averyveryverylongname VI_1",
            "lvs_sync_daemon: the interface name averyveryverylongname is 21 bytes long",
        ),
    ] {
        let (im, c) = accepted(&with_sync(line, ""));
        assert_eq!(c.sync, None, "{line}");
        warned(&im, 2, &[what, "there is no sync:"]);
        assert!(!im.yaml.contains("\nsync:"), "{}", im.yaml);
    }
    let (im, c) = accepted(&with_sync("router_id lb1", "lvs_sync_daemon_interface"));
    assert_eq!(c.sync, None);
    warned(&im, 7, &["lvs_sync_daemon_interface has no interface"]);
    // An interface keepalived takes but lb-agent refuses: carried, and the refusal is on its
    // line.
    let im = import(&with_sync("lvs_sync_daemon eth/1 VI_1", ""), "eth0").unwrap();
    warned(
        &im,
        2,
        &["lb-agent will refuse the YAML: sync.interface: interface name `eth/1`"],
    );
    assert!(Config::from_yaml(&im.yaml, Path::new("x")).is_err());
    // A second lvs_sync_daemon is ignored.
    let (im, c) = accepted(&with_sync(
        "lvs_sync_daemon eth1 VI_1\n    lvs_sync_daemon eth2 VI_1",
        "",
    ));
    assert_eq!(c.sync.unwrap().interface.as_deref(), Some("eth1"));
    warned(
        &im,
        3,
        &[
            "lvs_sync_daemon is ignored, as keepalived runs one sync daemon: the lvs_sync_daemon \
           of line 2 becomes sync:",
        ],
    );
}
