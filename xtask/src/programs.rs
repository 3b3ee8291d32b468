//! Every external program the test suite, `lb-demo`, `lb-bench` and this xtask run, and where
//! each comes from: a Debian package the dependency step installs, the base system, the Rust
//! toolchain, or this project. The dependency step installs what this table names (see
//! [`debian_packages`]), so a program can only be run by a test once it is declared here.
//!
//! Two checks keep the table true:
//! - the guard test below scans the sources ([`crate::exec_scan`]) and fails, naming the
//!   program and where it is run, for any program the table does not declare;
//! - [`verify_installed`] (a step of `cargo xtask test`, and `cargo xtask check-programs`)
//!   asks dpkg, after the installation, that each declared program is on the machine and is
//!   owned by the package declared for it, and that every base package is one of Debian's
//!   `Priority: required` packages (the set `debootstrap --variant=minbase` installs, so on
//!   every Debian system).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::exec_scan::Scope;

/// Where a program comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This Debian package, installed by the dependency step of `cargo xtask test` and
    /// `cargo xtask demo`.
    Debian(&'static str),
    /// This Debian package, installed by `cargo xtask bench` only (the smoke test of the
    /// benchmark skips what needs it when it is missing).
    BenchDebian(&'static str),
    /// This Debian package of `Priority: required`: part of every Debian root, the base
    /// system the project declares.
    Base(&'static str),
    /// The Rust toolchain (rustup, with stable and nightly) that the commands run on.
    Toolchain,
    /// Built by the dependency step with `cargo install`.
    CargoInstall,
    /// A binary this workspace builds, or a file a test writes and runs.
    Project,
}

/// Debian packages the build needs that provide no program the tests run: the LLVM 22
/// libraries bpf-linker links against.
pub const BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev"];

/// Every program run, as the sources name it (a bare name or an absolute path).
///
/// - iproute2, ethtool, procps (sysctl), tcpdump: namespace topologies and what the LAN sees;
/// - rabbitmq-server, erlang-base (epmd), curl, python3 (with python3-pika, see
///   [`PYTHON_MODULES`]): `tests/tests/rabbitmq_system.rs` runs three RabbitMQ nodes, an AMQP
///   client and management API requests through the VIP;
/// - keepalived, bird2: director high availability (`tests/tests/ha_system.rs`);
/// - haproxy: the proxy the end-to-end benchmark compares against.
pub const PROGRAMS: &[(&str, Source)] = &[
    ("ip", Source::Debian("iproute2")),
    ("bridge", Source::Debian("iproute2")),
    ("ethtool", Source::Debian("ethtool")),
    ("sysctl", Source::Debian("procps")),
    ("tcpdump", Source::Debian("tcpdump")),
    ("curl", Source::Debian("curl")),
    ("/usr/bin/python3", Source::Debian("python3-minimal")),
    (
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        Source::Debian("rabbitmq-server"),
    ),
    (
        "/usr/lib/rabbitmq/bin/rabbitmqctl",
        Source::Debian("rabbitmq-server"),
    ),
    ("/usr/bin/epmd", Source::Debian("erlang-base")),
    ("keepalived", Source::Debian("keepalived")),
    ("bird", Source::Debian("bird2")),
    ("haproxy", Source::BenchDebian("haproxy")),
    ("sh", Source::Base("dash")),
    ("bash", Source::Base("bash")),
    ("cat", Source::Base("coreutils")),
    ("env", Source::Base("coreutils")),
    ("id", Source::Base("coreutils")),
    ("mkdir", Source::Base("coreutils")),
    ("mv", Source::Base("coreutils")),
    ("readlink", Source::Base("coreutils")),
    ("rm", Source::Base("coreutils")),
    ("rmdir", Source::Base("coreutils")),
    ("touch", Source::Base("coreutils")),
    ("tr", Source::Base("coreutils")),
    ("awk", Source::Base("mawk")),
    ("mount", Source::Base("mount")),
    ("flock", Source::Base("util-linux")),
    ("nsenter", Source::Base("util-linux")),
    ("setpriv", Source::Base("util-linux")),
    ("unshare", Source::Base("util-linux")),
    ("apt-get", Source::Base("apt")),
    ("dpkg-query", Source::Base("dpkg")),
    ("rustup", Source::Toolchain),
    ("cargo", Source::Toolchain),
    ("bpf-linker", Source::CargoInstall),
    ("lb-agent", Source::Project),
    ("lbadm", Source::Project),
    ("lb-demo", Source::Project),
    ("lb-bench", Source::Project),
    ("policy-rc.d", Source::Project),
];

/// Python modules the scripts under `tests/python` import, with where each comes from
/// ([`Source::Base`] names no package here: Python's standard library, checked against
/// `sys.stdlib_module_names` of `/usr/bin/python3`).
pub const PYTHON_MODULES: &[(&str, Source)] = &[
    ("pika", Source::Debian("python3-pika")),
    ("argparse", Source::Base("")),
    ("json", Source::Base("")),
    ("signal", Source::Base("")),
    ("sys", Source::Base("")),
    ("threading", Source::Base("")),
    ("time", Source::Base("")),
];

/// The sources scanned: everything the test command, the demo and the bench run. The
/// scanner's own unit tests hold example spawn sites, so it is left out. Only the `tests`
/// crate runs lb-agent and keepalived on its configurations; lb-userspace's tests parse them.
pub const SCANNED: Scope<'static> = Scope {
    dirs: &[
        "tests",
        "xtask/src",
        "lb-userspace/src",
        "lb-userspace/tests",
        "scripts",
    ],
    skip: &["xtask/src/exec_scan"],
    config_scripts: &["tests"],
};

/// The Debian packages the dependency step installs: the build's and every
/// [`Source::Debian`] package of [`PROGRAMS`] and [`PYTHON_MODULES`], each once.
pub fn debian_packages() -> Vec<&'static str> {
    packages(
        |s| match s {
            Source::Debian(p) => Some(p),
            _ => None,
        },
        BUILD_PACKAGES,
    )
}

/// The Debian packages `cargo xtask bench` installs besides [`debian_packages`].
pub fn bench_packages() -> Vec<&'static str> {
    packages(
        |s| match s {
            Source::BenchDebian(p) => Some(p),
            _ => None,
        },
        &[],
    )
}

fn packages(
    pick: impl Fn(Source) -> Option<&'static str>,
    first: &[&'static str],
) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = first.to_vec();
    for (_, source) in PROGRAMS.iter().chain(PYTHON_MODULES) {
        if let Some(p) = pick(*source)
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// What the table says of a program, if anything.
pub fn source_of(program: &str) -> Option<Source> {
    PROGRAMS
        .iter()
        .find(|(name, _)| *name == program)
        .map(|(_, s)| *s)
}

/// The programs of the tree below `root` that the table does not declare, one line each
/// (`program (file:line)`), and the sites whose program cannot be told.
pub fn undeclared(root: &Path) -> Result<Vec<String>> {
    let files = crate::exec_scan::scan_tree(root, &SCANNED)?;
    let mut problems = Vec::new();
    for file in &files {
        let at = |line: usize| format!("{}:{line}", file.path.display());
        for e in &file.found.execs {
            if source_of(&e.program).is_none() {
                problems.push(format!(
                    "`{}` ({}) is run but is neither installed by the dependency step nor part of \
                     the declared base system: add it to PROGRAMS in xtask/src/programs.rs",
                    e.program,
                    at(e.line)
                ));
            }
        }
        for m in &file.found.imports {
            if !PYTHON_MODULES.iter().any(|(name, _)| *name == m.program) {
                problems.push(format!(
                    "Python module `{}` ({}) is imported but not declared: add it to \
                     PYTHON_MODULES in xtask/src/programs.rs",
                    m.program,
                    at(m.line)
                ));
            }
        }
        for (line, what) in &file.found.unresolved {
            problems.push(format!(
                "{}: cannot tell which program this runs ({what}); name it with a \
                 `// exec: NAME` comment",
                at(*line)
            ));
        }
    }
    Ok(problems)
}

/// `cargo xtask check-programs`: the guard over the sources, then [`verify_installed`].
pub fn check(root: &Path, bench: bool) -> Result<()> {
    let problems = undeclared(root)?;
    if !problems.is_empty() {
        bail!(
            "programs run without an install step:\n  {}",
            problems.join("\n  ")
        );
    }
    verify_installed(bench)
}

/// Checks on this machine, after the dependency step, that every declared program is there
/// and comes from the package the table names, and that base packages are `required` ones.
/// `bench`: the bench's packages are installed too.
pub fn verify_installed(bench: bool) -> Result<()> {
    let mut problems = Vec::new();
    for (program, source) in PROGRAMS {
        let package = match source {
            Source::Debian(p) | Source::Base(p) => Some(*p),
            Source::BenchDebian(p) if bench => Some(*p),
            Source::Toolchain | Source::CargoInstall => None,
            Source::BenchDebian(_) | Source::Project => continue,
        };
        let Some(path) = locate(program) else {
            problems.push(format!("`{program}` is not on this machine ({source:?})"));
            continue;
        };
        let Some(package) = package else { continue };
        let owners = owners(&path)?;
        if !owners.iter().any(|o| o == package) {
            problems.push(format!(
                "`{program}` ({}) is declared as coming from {package}, but dpkg says it belongs \
                 to {}",
                path.display(),
                if owners.is_empty() {
                    "no package".to_owned()
                } else {
                    owners.join(", ")
                }
            ));
        }
        if matches!(source, Source::Base(_)) {
            let priority = dpkg_field(package, "Priority")?;
            if priority != "required" {
                problems.push(format!(
                    "`{program}` is declared part of the base system, but its package {package} \
                     has priority {priority:?}, not \"required\": install it in the dependency step"
                ));
            }
        }
    }
    problems.extend(verify_python_modules()?);
    if !problems.is_empty() {
        bail!(
            "the declared programs do not match this machine:\n  {}",
            problems.join("\n  ")
        );
    }
    println!(
        "    {} programs and {} Python modules: each on the machine, from the package declared",
        PROGRAMS.len(),
        PYTHON_MODULES.len()
    );
    Ok(())
}

fn verify_python_modules() -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let stdlib = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys; print('\\n'.join(sorted(sys.stdlib_module_names)))",
        ])
        .output()
        .context("running /usr/bin/python3")?;
    let stdlib = String::from_utf8_lossy(&stdlib.stdout).into_owned();
    for (module, source) in PYTHON_MODULES {
        match source {
            Source::Base(_) if !stdlib.lines().any(|l| l == *module) => problems.push(format!(
                "Python module `{module}` is declared as standard library, but /usr/bin/python3 \
                 does not list it"
            )),
            Source::Debian(package) => {
                let out = Command::new("/usr/bin/python3")
                    .args(["-c", &format!("import {module}; print({module}.__file__)")])
                    .output()
                    .context("running /usr/bin/python3")?;
                let file = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !out.status.success() {
                    problems.push(format!("/usr/bin/python3 cannot import `{module}`"));
                } else if !owners(Path::new(&file))?.iter().any(|o| o == package) {
                    problems.push(format!(
                        "Python module `{module}` ({file}) does not come from {package}"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(problems)
}

/// Where a program is: itself when absolute, else the first executable of that name in
/// PATH and the sbin folders (the tests run as root).
fn locate(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.starts_with('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p))
}

/// The packages dpkg says own `path`, its canonical path (alternatives, symlinks) or their
/// merged-/usr twins.
fn owners(path: &Path) -> Result<Vec<String>> {
    let mut candidates = vec![path.to_path_buf()];
    if let Ok(real) = path.canonicalize() {
        candidates.push(real);
    }
    for p in candidates.clone() {
        let s = p.to_string_lossy().into_owned();
        if let Some(rest) = s.strip_prefix("/usr") {
            candidates.push(PathBuf::from(rest));
        } else {
            candidates.push(PathBuf::from(format!("/usr{s}")));
        }
    }
    let mut owners = Vec::new();
    for p in candidates {
        let out = Command::new("dpkg-query")
            .arg("-S")
            .arg(&p)
            .output()
            .context("running dpkg-query")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("diversion ") {
                continue;
            }
            let Some((pkgs, _)) = line.split_once(": ") else {
                continue;
            };
            for pkg in pkgs.split(", ") {
                let pkg = pkg.split(':').next().unwrap_or(pkg).to_owned();
                if !owners.contains(&pkg) {
                    owners.push(pkg);
                }
            }
        }
    }
    Ok(owners)
}

fn dpkg_field(package: &str, field: &str) -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", &format!("-f=${{{field}}}"), package])
        .output()
        .context("running dpkg-query")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::workspace_root()
    }

    #[test]
    fn every_program_the_tests_the_demo_and_the_bench_run_is_declared() {
        let problems = undeclared(&root()).unwrap();
        assert!(
            problems.is_empty(),
            "programs run without an install step:\n  {}",
            problems.join("\n  ")
        );
    }

    #[test]
    fn the_scan_sees_the_programs_the_suite_is_known_to_run() {
        // Guards the guard: a scanner that found nothing would pass the test above.
        let files = crate::exec_scan::scan_tree(&root(), &SCANNED).unwrap();
        let seen = |file: &str, program: &str| {
            files.iter().any(|f| {
                f.path.to_string_lossy() == file
                    && f.found.execs.iter().any(|e| e.program == program)
            })
        };
        for (file, program) in [
            ("tests/src/netns.rs", "tcpdump"),
            ("tests/src/netns.rs", "ethtool"),
            ("tests/src/ha.rs", "keepalived"),
            ("tests/src/bench/e2e.rs", "haproxy"),
            (
                "tests/src/rabbitmq.rs",
                "/usr/lib/rabbitmq/bin/rabbitmq-server",
            ),
            ("tests/tests/realserver_script.rs", "setpriv"),
            ("tests/tests/realserver_script.rs", "mount"),
            ("scripts/realserver.sh", "awk"),
            ("xtask/src/deps.rs", "apt-get"),
        ] {
            assert!(seen(file, program), "{program} not found in {file}");
        }
    }

    #[test]
    fn the_table_declares_only_what_the_sources_run() {
        let files = crate::exec_scan::scan_tree(&root(), &SCANNED).unwrap();
        let run = |name: &str| {
            files.iter().any(|f| {
                f.found
                    .execs
                    .iter()
                    .chain(&f.found.imports)
                    .any(|e| e.program == name)
            })
        };
        for (name, _) in PROGRAMS.iter().chain(PYTHON_MODULES) {
            assert!(
                run(name),
                "{name} is declared but nothing runs or imports it"
            );
        }
    }

    #[test]
    fn a_new_program_in_a_test_fails_the_guard_with_its_name_and_place() {
        let dir = std::env::temp_dir().join(format!("xtask-programs-{}", std::process::id()));
        let tests = dir.join("tests");
        std::fs::create_dir_all(&tests).unwrap();
        std::fs::write(
            tests.join("t.rs"),
            "fn t(ns: &Netns) {\n    ns.exec(&[\"ip\", \"link\"]);\n    ns.spawn(&[\"iperf3\", \"-s\"]);\n}\n",
        )
        .unwrap();
        let problems = undeclared(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("`iperf3` (tests/t.rs:3)"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn packages_are_listed_once_and_the_build_libraries_first() {
        let deb = debian_packages();
        assert_eq!(&deb[..3], BUILD_PACKAGES);
        for p in [
            "iproute2",
            "tcpdump",
            "python3-pika",
            "rabbitmq-server",
            "erlang-base",
        ] {
            assert_eq!(deb.iter().filter(|d| **d == p).count(), 1, "{p}");
        }
        assert_eq!(bench_packages(), ["haproxy"]);
        assert!(!deb.contains(&"haproxy"));
    }
}
