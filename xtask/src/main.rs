//! Project automation: `cargo xtask <command>`.

mod build_ebpf;
mod deps;
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
    }
    Ok(())
}
