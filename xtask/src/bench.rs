//! `cargo xtask bench`: installs what the benchmarks need (the test dependencies and HAProxy),
//! builds the XDP object and `lb-bench` (release), runs it, and renders `BENCHMARKS.md` at the
//! workspace root from its JSON results, printing the tables.
//!
//! `--smoke` (every case, few iterations) and `--only PARTS` write under `target/bench/`
//! instead and leave `BENCHMARKS.md` alone: only a full run may produce it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::{build_ebpf, deps};

/// Options of `cargo xtask bench`.
#[derive(Clone, Debug, Default)]
pub struct BenchArgs {
    /// Few iterations, tiny sizes.
    pub smoke: bool,
    /// Only these parts (comma-separated: dataplane, scaling, sync, control, e2e).
    pub only: Option<String>,
}

impl BenchArgs {
    fn full(&self) -> bool {
        !self.smoke && self.only.is_none()
    }

    /// The command line as the user typed it, recorded with every figure.
    fn command(&self) -> String {
        let mut c = String::from("cargo xtask bench");
        if self.smoke {
            c += " --smoke";
        }
        if let Some(only) = &self.only {
            c += &format!(" --only {only}");
        }
        c
    }
}

/// Runs the benchmarks and writes their report.
pub fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    println!("==> dependencies");
    deps::ensure_bench()?;
    println!("==> build eBPF objects");
    let obj = build_ebpf::build_ebpf(root)?;
    let bench_ref = obj.with_file_name("bench-ref");
    println!("==> build lb-bench (release)");
    deps::run(cargo(root).args(["build", "--release", "-p", "lb-tests", "--bin", "lb-bench"]))?;
    let bin = root.join("target").join("release").join("lb-bench");

    let out = root.join("target").join("bench");
    std::fs::create_dir_all(&out)?;
    let (json, md): (PathBuf, PathBuf) = if args.full() {
        (out.join("results.json"), root.join("BENCHMARKS.md"))
    } else {
        (out.join("partial.json"), out.join("BENCHMARKS.partial.md"))
    };
    println!("==> run lb-bench (several minutes)");
    // exec: lb-bench (built just above)
    let mut cmd = Command::new(&bin);
    cmd.current_dir(root)
        .arg("--json")
        .arg(&json)
        .arg("--command")
        .arg(args.command())
        .arg("--bench-ref")
        .arg(&bench_ref);
    if args.smoke {
        cmd.arg("--smoke");
    }
    if let Some(only) = &args.only {
        cmd.args(["--only", only]);
    }
    deps::run(&mut cmd)?;

    println!("==> render {}", md.display());
    deps::run(
        // exec: lb-bench
        Command::new(&bin)
            .current_dir(root)
            .arg("render")
            .arg(&json)
            .arg("--markdown")
            .arg(&md),
    )?;
    println!("==> wrote {} (results: {})", md.display(), json.display());
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root);
    c
}
