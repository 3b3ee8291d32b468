//! `lb-bench`: the benchmark harness behind `cargo xtask bench` (needs root).
//!
//! ```text
//! lb-bench [--smoke] [--only dataplane,scaling,sync,control,e2e] [--json FILE] [--command CMD]
//!          [--bench-ref OBJECT]
//! lb-bench render FILE.json [--markdown OUT.md]
//! ```
//!
//! The first form runs the benchmarks and writes their results as JSON (to stdout without
//! `--json`). The second renders `BENCHMARKS.md` from such a file and prints its tables.
//! `--smoke` runs every case with few iterations and fails unless each produced a number.

#[path = "../bench/mod.rs"]
mod bench;

use std::{fs, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, bail};

use bench::{Options, Parts, report};

const USAGE: &str = "usage:
  lb-bench [--smoke] [--only dataplane,scaling,sync,control,e2e] [--json FILE] [--command CMD] [--bench-ref OBJECT]
  lb-bench render FILE.json [--markdown OUT.md]";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("render") {
        return render(&args[1..]);
    }
    let mut opts = Options::new(false, format!("lb-bench {}", args.join(" ")));
    let mut json: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--smoke" => opts.smoke = true,
            "--only" => opts.parts = Parts::parse(value()?)?,
            "--json" => json = Some(PathBuf::from(value()?)),
            "--command" => opts.command = value()?.clone(),
            "--bench-ref" => opts.bench_ref = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let report = bench::run(&opts)?;
    let text = serde_json::to_string_pretty(&report)?;
    match &json {
        Some(path) => {
            fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    let problems = bench::check_complete(&report);
    if !problems.is_empty() {
        bail!("incomplete results:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

fn render(args: &[String]) -> Result<()> {
    let mut input: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--markdown" => out = Some(PathBuf::from(it.next().context("--markdown FILE")?)),
            other if input.is_none() => input = Some(PathBuf::from(other)),
            other => bail!("unexpected {other:?}\n{USAGE}"),
        }
    }
    let input = input.with_context(|| format!("no JSON file\n{USAGE}"))?;
    let text =
        fs::read_to_string(&input).with_context(|| format!("reading {}", input.display()))?;
    let report: report::Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not lb-bench output", input.display()))?;
    let md = report::markdown(&report);
    if let Some(out) = &out {
        fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{md}");
    Ok(())
}
