//! `cargo xtask demo`: installs what is missing (as `cargo xtask test` does), builds the XDP
//! object, `lb-agent`, `lbadm` and `lb-demo`, then runs `lb-demo`, whose narration streams to
//! the terminal. `lb-demo` (tests/src/bin/lb-demo) builds the namespace network, runs the
//! agent on its embedded configuration and removes everything it created when it ends.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::Result;

use crate::{build_ebpf, deps};

/// Runs the demo from the workspace at `root`; fails if a step fails or the demo does.
pub fn run(root: &Path) -> Result<()> {
    println!("==> dependencies");
    deps::ensure_all()?;
    println!("==> build eBPF object");
    build_ebpf::build_ebpf(root)?;
    println!("==> build lb-agent, lbadm and lb-demo");
    deps::run(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["build", "-p", "lb-userspace", "-p", "lb-tests"])
            .args(["--bin", "lb-agent", "--bin", "lbadm", "--bin", "lb-demo"]),
    )?;
    println!("==> run lb-demo");
    deps::run(
        // exec: lb-demo (built just above)
        Command::new(root.join("target").join("debug").join("lb-demo"))
            .current_dir(root)
            .stdin(Stdio::null()),
    )
}
