//! The keepalived.conf corpus (`tests/keepalived-corpus/`): files written for this project, one
//! construct of keepalived's configuration each (schedulers, checkers, groups, firewall marks,
//! forwarding methods, the configuration language), each imported by
//! `lbadm import-keepalived` and loaded by lb-agent's configuration reader.
//!
//! For every entry (a `.conf` file, or a directory whose `keepalived.conf` includes the rest)
//! the import's YAML, its warnings and lb-agent's verdict are compared with the entry's
//! `.expected` file, and the share of `virtual_server` blocks that become services lb-agent
//! accepts, without a warning about them, is compared with `SUMMARY.md`. `UPDATE_GOLDEN=1` rewrites both after a deliberate
//! change; the diff is the review.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use lb_userspace::{
    config::Config,
    import::keepalived::{Import, Options, import_file},
};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keepalived-corpus");

/// One corpus entry: its name and main file.
struct Entry {
    name: String,
    main: PathBuf,
    /// Every file of the entry (the main file first).
    files: Vec<PathBuf>,
}

fn entries() -> Vec<Entry> {
    let mut out = Vec::new();
    for e in fs::read_dir(CORPUS).expect("the corpus directory") {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let main = path.join("keepalived.conf");
            let mut files = vec![main.clone()];
            let mut rest = conf_files_below(&path);
            rest.retain(|f| *f != main);
            files.extend(rest);
            out.push(Entry { name, main, files });
        } else if let Some(stem) = name.strip_suffix(".conf") {
            out.push(Entry {
                name: stem.to_owned(),
                main: path.clone(),
                files: vec![path],
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn conf_files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(conf_files_below(&path));
        } else if path.extension().is_some_and(|x| x == "conf") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The line ranges (1-based, inclusive) of the `virtual_server` blocks of `text` (not
/// `virtual_server_group`): from the keyword to the `}` that closes its block. The corpus's
/// own files put no brace in a string.
fn service_blocks(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut open: Option<(usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let code = line.split(['#', '!']).next().unwrap_or("");
        let first = code.split_whitespace().next().unwrap_or("");
        if open.is_none() && first == "virtual_server" {
            open = Some((i + 1, depth));
        }
        for c in code.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if let Some((start, at)) = open
                        && depth == at
                    {
                        out.push((start, i + 1));
                        open = None;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// What happened to one entry.
struct Outcome {
    /// The `.expected` text.
    report: String,
    /// `virtual_server` blocks in the entry's files.
    blocks: usize,
    /// Blocks lb-agent accepts.
    accepted: usize,
    /// Blocks lb-agent accepts with no warning about them.
    clean: usize,
}

fn run(entry: &Entry) -> Outcome {
    // Lines for `@lb1` apply, `@^lb1` ones do not (whatever this host is called).
    let options = Options {
        interface: "eth0".to_owned(),
        config_id: Some("lb1".to_owned()),
        all_config: false,
    };
    let per_file: Vec<Vec<(usize, usize)>> = entry
        .files
        .iter()
        .map(|f| service_blocks(&fs::read_to_string(f).unwrap()))
        .collect();
    let blocks = per_file.iter().map(Vec::len).sum();
    let mut report = String::new();
    let (accepted, clean) = match import_file(&entry.main, &options) {
        Err(e) => {
            writeln!(report, "import: refused: {e}").unwrap();
            (0, 0)
        }
        Ok(Import { yaml, warnings }) => {
            writeln!(report, "import: converted, {} warnings", warnings.len()).unwrap();
            for w in &warnings {
                writeln!(report, "  {w}").unwrap();
            }
            let verdict = Config::from_yaml(&yaml, Path::new("imported.yaml"));
            match &verdict {
                Ok(_) => writeln!(report, "lb-agent: accepted").unwrap(),
                Err(e) => writeln!(report, "lb-agent: refused: {e}").unwrap(),
            }
            writeln!(report, "--- yaml\n{yaml}").unwrap();
            // The YAML names the line of each block it converted.
            let converted = |start: usize| {
                yaml.contains(&format!("# keepalived.conf line {start}: virtual_server"))
            };
            if verdict.is_err() {
                (0, 0)
            } else if entry.files.len() > 1 {
                // Blocks of included files: counted by the services the YAML has, and clean
                // only when nothing was said about an included file.
                let services = yaml
                    .lines()
                    .filter(|l| l.starts_with("  # ") && l.contains(": virtual_server "))
                    .count()
                    .min(blocks);
                (
                    services,
                    if warnings.iter().any(|w| w.file.is_some()) {
                        0
                    } else {
                        services
                    },
                )
            } else {
                let converted: Vec<_> = per_file[0]
                    .iter()
                    .filter(|(start, _)| converted(*start))
                    .collect();
                let clean = converted
                    .iter()
                    .filter(|(start, end)| {
                        !warnings.iter().any(|w| (*start..=*end).contains(&w.line))
                    })
                    .count();
                (converted.len(), clean)
            }
        }
    };
    Outcome {
        // Where the corpus lies on this machine is not part of the result.
        report: report.replace(&format!("{CORPUS}/"), ""),
        blocks,
        accepted,
        clean,
    }
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

#[test]
fn every_entry_imports_as_recorded_and_the_share_accepted_is_the_summarys() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let entries = entries();
    assert!(entries.len() >= 20, "the corpus is missing");
    let mut summary = String::from(
        "# keepalived.conf corpus: what lb-agent accepts\n\n\
         Written by `lb-userspace/tests/keepalived_corpus.rs` (`UPDATE_GOLDEN=1 cargo test -p \
         lb-userspace --test keepalived_corpus` after a deliberate change). A `virtual_server` \
         block is accepted when the imported YAML has its service and lb-agent loads it, and clean when no import \
         warning is about it.\n\n\
         | entry | blocks | accepted | clean |\n|---|---:|---:|---:|\n",
    );
    let (mut blocks, mut accepted, mut clean) = (0, 0, 0);
    let mut mismatches = Vec::new();
    for entry in &entries {
        let outcome = run(entry);
        blocks += outcome.blocks;
        accepted += outcome.accepted;
        clean += outcome.clean;
        writeln!(
            summary,
            "| {} | {} | {} | {} |",
            entry.name, outcome.blocks, outcome.accepted, outcome.clean
        )
        .unwrap();
        let expected_path = Path::new(CORPUS).join(format!("{}.expected", entry.name));
        if update {
            fs::write(&expected_path, &outcome.report).unwrap();
        } else {
            let expected = fs::read_to_string(&expected_path).unwrap_or_default();
            if expected != outcome.report {
                mismatches.push(format!(
                    "{}: the import differs from {}:\n{}",
                    entry.name,
                    expected_path.display(),
                    outcome.report
                ));
            }
        }
    }
    writeln!(
        summary,
        "| **all** | **{blocks}** | **{accepted}** ({}) | **{clean}** ({}) |",
        percent(accepted, blocks),
        percent(clean, blocks)
    )
    .unwrap();
    let summary_path = Path::new(CORPUS).join("SUMMARY.md");
    if update {
        fs::write(&summary_path, &summary).unwrap();
    } else {
        let recorded = fs::read_to_string(&summary_path).unwrap_or_default();
        if recorded != summary {
            mismatches.push(format!(
                "the summary differs from {}:\n{summary}",
                summary_path.display()
            ));
        }
    }
    println!("{summary}");
    assert!(
        mismatches.is_empty(),
        "{}\n(UPDATE_GOLDEN=1 rewrites the recorded files)",
        mismatches.join("\n")
    );
}

#[test]
fn blocks_are_found_with_their_lines() {
    let text = "virtual_server_group g {\n 10.0.0.1 80\n}\nvirtual_server 10.0.0.1 80\n{\n real_server 10.0.0.2 80 { TCP_CHECK { } }\n}\n# virtual_server 10.0.0.9 80 {\nvirtual_server group g { }\n";
    assert_eq!(service_blocks(text), [(4, 7), (9, 9)]);
}
