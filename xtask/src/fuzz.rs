//! The fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer, nightly): the configuration reader and
//! validation, the keepalived importer, the control-socket protocol and lbadm's arguments.
//!
//! `cargo xtask test` replays the saved regressions and seeds, then runs each target for a few
//! seconds (smoke); `cargo xtask fuzz` runs them longer. A crash leaves its input under
//! `fuzz/artifacts/<target>/`: once fixed, it goes to `fuzz/regressions/<target>/`, which the
//! test command replays on every run.

use std::path::Path;

use anyhow::Result;

use crate::deps;

/// The fuzz targets (`fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[&str] = &[
    "config_yaml",
    "keepalived_import",
    "control_protocol",
    "lbadm_args",
];

/// Seconds each target runs in the test command.
pub const SMOKE_SECONDS: u32 = 15;

/// Replays the regressions and seeds (stable Rust), then runs `targets` for `seconds` each.
pub fn run(root: &Path, targets: &[&str], seconds: u32) -> Result<()> {
    deps::run(
        std::process::Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["test", "--manifest-path", "fuzz/Cargo.toml"]),
    )?;
    for target in targets {
        let corpus = root.join("target").join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        println!("==> fuzz {target} for {seconds} s");
        deps::run(
            std::process::Command::new("rustup")
                .current_dir(root)
                .args([
                    "run",
                    "nightly",
                    "cargo-fuzz",
                    "fuzz",
                    "run",
                    "--fuzz-dir",
                    "fuzz",
                ])
                .arg(target)
                .arg(&corpus)
                .arg(root.join("fuzz").join("seeds").join(target))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg("-rss_limit_mb=2048")
                .arg("-print_final_stats=1"),
        )?;
    }
    Ok(())
}
