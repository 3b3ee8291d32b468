//! Installs what a fresh machine lacks, idempotently: Debian packages, nightly's rust-src,
//! bpf-linker, and a mounted bpffs. Every step checks first and does nothing when satisfied.
//! Which Debian packages: those of the programs declared in [`crate::programs`], which a test
//! keeps complete.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::programs::{self, Step};

/// The cargo-fuzz release the fuzz targets are run with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The bpf-linker release that works with this machine's LLVM 22 and rustc.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Runs every installation step, then installs the benchmark's extra packages.
pub fn ensure_bench() -> Result<()> {
    ensure_all()?;
    ensure_debian_packages(&programs::debian_packages(Step::Bench))
}

/// Runs every installation step.
pub fn ensure_all() -> Result<()> {
    ensure_root()?;
    ensure_debian_packages(&programs::debian_packages(Step::Test))?;
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    ensure_bpffs()?;
    Ok(())
}

/// Fails unless this process runs as root.
pub fn ensure_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        bail!(
            "this command needs root: it installs packages, loads XDP programs and creates network namespaces"
        );
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the packages that are missing (after one `apt-get update`).
///
/// Packages such as rabbitmq-server (and erlang's epmd) would start a system-wide service in
/// the root namespace; the tests start their own instances in namespaces and need none. So
/// the installation runs under a policy-rc.d that forbids starting services (written only if
/// the machine has none, and removed afterwards), and any RabbitMQ node or epmd that appears
/// in the root namespace during the installation is stopped. One that was already running
/// before is left alone.
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("==> installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    let before = root_ns_service_pids();
    let policy = NoServiceStarts::install()?;
    let installed = run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    policy.remove()?;
    stop_new_services(&before);
    installed
}

/// The policy-rc.d that Debian's maintainer scripts ask before starting a service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// What [`NoServiceStarts`] writes there: exit status 101 means "action forbidden".
const POLICY_RC_D_DENY: &str = "#!/bin/sh\n# Written by `cargo xtask` while it installs packages: start no service.\nexit 101\n";

/// A temporary policy-rc.d forbidding service starts, present while it lives. It is only
/// written when the machine has no policy-rc.d of its own, and then removed on drop.
struct NoServiceStarts {
    path: &'static Path,
    written: bool,
}

impl NoServiceStarts {
    fn install() -> Result<Self> {
        Self::install_at(Path::new(POLICY_RC_D))
    }

    fn install_at(path: &'static Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if path.symlink_metadata().is_ok() {
            // The machine's own policy (a Docker image's denies everything) stays in charge.
            return Ok(Self {
                path,
                written: false,
            });
        }
        std::fs::write(path, POLICY_RC_D_DENY)
            .with_context(|| format!("writing {}", path.display()))?;
        let guard = Self {
            path,
            written: true,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(guard)
    }

    fn remove(mut self) -> Result<()> {
        self.remove_written()
    }

    fn remove_written(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.written) {
            return Ok(());
        }
        // Only our own file: never one a package installed meanwhile.
        if std::fs::read_to_string(self.path).is_ok_and(|s| s == POLICY_RC_D_DENY) {
            std::fs::remove_file(self.path)
                .with_context(|| format!("removing {}", self.path.display()))?;
        }
        Ok(())
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        let _ = self.remove_written();
    }
}

/// Pids of RabbitMQ nodes (`beam.smp` running `rabbit`) and `epmd` daemons in this process's
/// network namespace (the root one: test namespaces have their own).
fn root_ns_service_pids() -> Vec<u32> {
    let Ok(own_ns) = std::fs::read_link("/proc/self/ns/net") else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let proc = format!("/proc/{pid}");
            let comm = std::fs::read_to_string(format!("{proc}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("{proc}/cmdline")).unwrap_or_default();
            let service = match comm.trim() {
                "epmd" => true,
                "beam.smp" => String::from_utf8_lossy(&cmdline).contains("rabbit"),
                _ => false,
            };
            service && std::fs::read_link(format!("{proc}/ns/net")).is_ok_and(|ns| ns == own_ns)
        })
        .collect()
}

/// Stops (SIGTERM, then SIGKILL after 15 s) the RabbitMQ nodes and epmd daemons that appeared
/// in the root namespace since `before` was taken: started by a package's maintainer script
/// despite the policy.
fn stop_new_services(before: &[u32]) {
    let new: Vec<u32> = root_ns_service_pids()
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    if new.is_empty() {
        return;
    }
    println!("==> stopping the RabbitMQ/epmd processes the installation started: {new:?}");
    let signal = |pid: u32, sig: i32| {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, sig) };
    };
    for &pid in &new {
        signal(pid, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
    while new.iter().any(alive) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for &pid in new.iter().filter(|p| alive(p)) {
        signal(pid, libc::SIGKILL);
    }
}

fn ensure_nightly_rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is the nightly toolchain installed?)")?;
    if !out.status.success() {
        bail!(
            "rustup has no nightly toolchain: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    println!("==> adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn ensure_bpf_linker() -> Result<()> {
    if reports_version("bpf-linker", BPF_LINKER_VERSION) {
        return Ok(());
    }
    println!("==> building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)");
    run(cargo_install("bpf-linker", BPF_LINKER_VERSION)
        .args(["--no-default-features", "--features", "llvm-22"])
        // llvm-sys finds LLVM through the first, bpf-linker's build script through the second.
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .env("LLVM_PREFIX", LLVM_PREFIX))
}

/// cargo-fuzz, which builds the fuzz targets with nightly and libFuzzer and runs them.
fn ensure_cargo_fuzz() -> Result<()> {
    if reports_version("cargo-fuzz", CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    println!("==> installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(&mut cargo_install("cargo-fuzz", CARGO_FUZZ_VERSION))
}

/// Whether `program --version` runs and names `version`.
fn reports_version(program: &str, version: &str) -> bool {
    // exec: bpf-linker cargo-fuzz
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version))
        .unwrap_or(false)
}

/// `cargo install` of exactly `version` of `krate`, with its lock file, over what is there.
fn cargo_install(krate: &str, version: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        krate,
        "--version",
        version,
        "--locked",
        "--force",
    ]);
    cmd
}

fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    if !Path::new("/sys/fs/bpf").exists() {
        std::fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
    }
    println!("==> mounting bpffs on /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// Runs a command, failing with its name if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path under the temporary directory, leaked so that it is `'static`.
    fn scratch(name: &str) -> &'static Path {
        let dir = std::env::temp_dir().join(format!("xtask-deps-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Box::leak(dir.join("policy-rc.d").into_boxed_path())
    }

    #[test]
    fn policy_forbids_service_starts_while_installing_and_goes_away() {
        let path = scratch("absent");
        let policy = NoServiceStarts::install_at(path).unwrap();
        // invoke-rc.d runs it with the service and the action: 101 means "forbidden".
        // exec: policy-rc.d (written by this test)
        let status = Command::new(path)
            .args(["rabbitmq-server", "start"])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(101));
        policy.remove().unwrap();
        assert!(!path.exists());
        // Dropped on an error path: removed too.
        drop(NoServiceStarts::install_at(path).unwrap());
        assert!(!path.exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_policy_of_the_machine_is_left_alone() {
        let path = scratch("present");
        std::fs::write(path, "#!/bin/sh\nexit 0\n").unwrap();
        NoServiceStarts::install_at(path).unwrap().remove().unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
