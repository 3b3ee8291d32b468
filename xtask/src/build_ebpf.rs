//! `cargo xtask build-ebpf`: builds the XDP object with nightly, build-std and bpf-linker.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Target triple of the eBPF object.
pub const TARGET: &str = "bpfel-unknown-none";

/// Where the object lands, relative to the workspace root.
pub fn object_path(root: &Path) -> PathBuf {
    root.join("target")
        .join(TARGET)
        .join("release")
        .join("lb-ebpf")
}

/// Environment the outer (stable) cargo sets that would leak into the nightly build.
pub const LEAKY_ENV: [&str; 5] = [
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO",
];

/// The flags aya-build passes: target arch for aya-ebpf's cfgs, BTF for the loader.
pub fn rustflags() -> String {
    [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f")
}

/// Builds `lb-ebpf` for the BPF target and returns the object's path.
pub fn build_ebpf(root: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--package",
            "lb-ebpf",
            "--bins",
        ])
        .args(["--release", "--target", TARGET, "-Z", "build-std=core"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags());
    for var in LEAKY_ENV {
        cmd.env_remove(var);
    }
    let status = cmd.status().context("running nightly cargo for lb-ebpf")?;
    if !status.success() {
        bail!("building lb-ebpf failed ({status})");
    }
    let obj = object_path(root);
    if !obj.exists() {
        bail!("build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}
