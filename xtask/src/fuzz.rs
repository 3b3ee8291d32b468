//! The fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer, nightly): the configuration reader and
//! validation, the keepalived importer, the control-socket protocol and lbadm's arguments.
//!
//! `cargo xtask test` replays the saved regressions and seeds, then runs each target for a few
//! seconds (smoke); `cargo xtask fuzz` runs them longer. A crash leaves its input under
//! `fuzz/artifacts/<target>/`: once fixed, it goes to `fuzz/regressions/<target>/`, which the
//! test command replays on every run.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::deps;

/// The fuzz targets (`fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[&str] = &[
    "config_yaml",
    "keepalived_import",
    "control_protocol",
    "lbadm_args",
    "sync_datagram",
    "tcp_segments",
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
        // libFuzzer reports every new input; its log goes to a file, and the summary (or, on
        // a crash, the end of the log) to the terminal.
        let log_path = root.join("target").join(format!("fuzz-{target}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let status = std::process::Command::new("rustup")
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
            .arg("-print_final_stats=1")
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting cargo-fuzz")?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
            bail!(
                "fuzz target {target} failed ({status}); its log: {}; a crash's input is under \
                 fuzz/artifacts/{target}/",
                log_path.display()
            );
        }
        for line in text
            .lines()
            .filter(|l| l.starts_with("Done ") || l.starts_with("stat::number_of_executed_units"))
        {
            println!("    {line}");
        }
    }
    Ok(())
}
