//! Project automation: `cargo xtask <command>`.

mod bench;
mod build_ebpf;
mod demo;
mod deps;
mod exec_scan;
mod fresh_root;
mod fuzz;
mod installed;
mod programs;
mod test;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test, demo and benchmark the load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the XDP object (nightly, build-std, bpf-linker).
    BuildEbpf,
    /// Install what is missing, build everything, run every check and test (needs root).
    Test,
    /// Install what is missing, build, and run the narrated demo in network namespaces: a
    /// client, a director and three real servers (needs root; about 6 s after the build).
    Demo,
    /// Check that every program the tests, the demo and the bench run is declared, and that
    /// each is on this machine from the Debian package declared for it (run after `test`).
    CheckPrograms {
        /// The benchmark's packages are installed too (after `cargo xtask bench`).
        #[arg(long)]
        bench: bool,
    },
    /// Install what is missing, build the XDP object, and run the fuzz targets: each for
    /// SECONDS (default 300), all of them or those named (needs root).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u32,
        /// Targets: config_yaml, keepalived_import, control_protocol, lbadm_args,
        /// sync_datagram, tcp_segments.
        targets: Vec<String>,
    },
    /// Make a minimal Debian 12 root (debootstrap), install into it what the dependency steps
    /// install, and check every declared program in it (needs root; several minutes, about
    /// 1 GB under target/fresh-root).
    FreshRoot,
    /// Run the benchmarks and write BENCHMARKS.md (needs root; several minutes).
    Bench {
        /// Every case with few iterations and tiny sizes (writes under target/bench/).
        #[arg(long)]
        smoke: bool,
        /// Only these parts, comma-separated: dataplane, scaling, sync, control, e2e (writes
        /// under target/bench/).
        #[arg(long)]
        only: Option<String>,
    },
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Cmd::BuildEbpf => {
            let obj = build_ebpf::build_ebpf(&root)?;
            println!("eBPF object: {}", obj.display());
        }
        Cmd::Test => test::run_all(&root)?,
        Cmd::CheckPrograms { bench } => installed::check(&root, bench)?,
        Cmd::FreshRoot => fresh_root::run(&root)?,
        Cmd::Fuzz { seconds, targets } => {
            let unknown: Vec<&String> = targets
                .iter()
                .filter(|t| !fuzz::TARGETS.contains(&t.as_str()))
                .collect();
            anyhow::ensure!(
                unknown.is_empty(),
                "unknown fuzz targets {unknown:?}; the targets are {}",
                fuzz::TARGETS.join(", ")
            );
            let chosen: Vec<&str> = if targets.is_empty() {
                fuzz::TARGETS.to_vec()
            } else {
                targets.iter().map(String::as_str).collect()
            };
            deps::ensure_all()?;
            build_ebpf::build_ebpf(&root)?;
            fuzz::run(&root, &chosen, seconds)?;
        }
        Cmd::Demo => demo::run(&root)?,
        Cmd::Bench { smoke, only } => bench::run(&root, &bench::BenchArgs { smoke, only })?,
    }
    Ok(())
}
