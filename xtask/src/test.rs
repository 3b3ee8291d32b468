//! `cargo xtask test`: the one command that installs what is missing, builds everything and
//! runs every check and test (unit, BPF_PROG_TEST_RUN packet tests, namespace system tests).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{build_ebpf, deps, fuzz, installed, programs};

/// Runs the whole suite from `root`.
pub fn run_all(root: &Path) -> Result<()> {
    let mut steps: Vec<(&str, Duration)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        println!("==> {name}");
        let t = Instant::now();
        f()?;
        steps.push((name, t.elapsed()));
        Ok(())
    };

    step("dependencies", &mut || deps::ensure_all())?;
    step("declared programs", &mut || {
        installed::verify(&installed::System::Host, &[programs::Step::Test])
    })?;
    step("build eBPF object", &mut || {
        build_ebpf::build_ebpf(root).map(|_| ())
    })?;
    step("rustfmt", &mut || {
        deps::run(cargo(root).args(["fmt", "--all", "--check"]))
    })?;
    step("clippy (userspace)", &mut || {
        deps::run(cargo(root).args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    })?;
    step("clippy (eBPF)", &mut || {
        deps::run(
            nightly_cargo(root)
                .args(["clippy", "--package", "lb-ebpf", "--release"])
                .args(["--target", build_ebpf::TARGET, "-Z", "build-std=core"])
                .args(["--", "-D", "warnings"]),
        )
    })?;
    step("tests", &mut || {
        deps::run(cargo(root).args(["test", "--all-targets", "--no-fail-fast"]))
    })?;
    step("library without the XDP object", &mut || {
        // The control plane builds and unit-tests without the eBPF build chain.
        deps::run(
            cargo(root)
                .args(["test", "-p", "lb-userspace", "--lib"])
                .env("LB_EBPF_OBJECT", root.join("target/no-such-xdp-object")),
        )
    })?;
    step("fuzz (regressions, smoke)", &mut || {
        fuzz::run(root, fuzz::TARGETS, fuzz::SMOKE_SECONDS)
    })?;

    println!("==> all checks passed");
    for (name, took) in &steps {
        println!("    {name:<22} {:>7.1} s", took.as_secs_f64());
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root);
    c
}

fn nightly_cargo(root: &Path) -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(root).args(["run", "nightly", "cargo"]);
    c.env("CARGO_ENCODED_RUSTFLAGS", build_ebpf::rustflags());
    for var in build_ebpf::LEAKY_ENV {
        c.env_remove(var);
    }
    c
}
