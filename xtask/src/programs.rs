//! Every external program the test suite, `lb-demo`, `lb-bench` and this xtask run, and where
//! each comes from: a Debian package a dependency step installs, the base system, the Rust
//! toolchain, or this project. The dependency steps install what this table names (see
//! [`debian_packages`]), so a program can only be run by a test once it is declared here.
//!
//! Three checks keep the table true:
//! - the guard test below scans the sources ([`crate::exec_scan`]) and fails, naming the
//!   program and where it is run, for any program the table does not declare;
//! - [`crate::installed::verify`] (a step of `cargo xtask test`, and `cargo xtask
//!   check-programs`) asks dpkg, after the installation, that each declared program is on the
//!   machine and is owned by the package declared for it, and that every base package is one
//!   of Debian's `Priority: required` packages (the set `debootstrap --variant=minbase`
//!   installs, so on every Debian system);
//! - `cargo xtask fresh-root` ([`crate::fresh_root`]) does the same in a new minimal Debian 12
//!   root after installing only what the dependency steps install.

use std::path::Path;

use anyhow::Result;

use crate::exec_scan::Scope;

/// Where a program comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This Debian package, installed by the dependency step of that command.
    Debian(&'static str, Step),
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

/// The command whose dependency step installs a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `cargo xtask test` and `cargo xtask demo` (and so every other command).
    Test,
    /// `cargo xtask bench` only: the smoke test of the benchmark skips what needs it when it
    /// is missing.
    Bench,
    /// `cargo xtask fresh-root` only, on the host that makes the root.
    FreshRoot,
}

use Source::{Base, CargoInstall, Debian, Project, Toolchain};
use Step::{Bench, FreshRoot, Test};

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
/// - dnsmasq, python3-aiosmtpd: real DNS and SMTP servers for keepalived's checkers
///   (`tests/tests/checker_peers.rs`);
/// - prometheus (promtool): the shipped alert rules and their unit tests
///   (`lb-userspace/tests/monitoring.rs`);
/// - haproxy: the proxy the end-to-end benchmark compares against;
/// - openssl: certificates and the TLS server `ssl_get`'s probe tests talk to
///   (`lb-userspace/src/health/tls/tests.rs`).
pub const PROGRAMS: &[(&str, Source)] = &[
    ("ip", Debian("iproute2", Test)),
    ("bridge", Debian("iproute2", Test)),
    ("ethtool", Debian("ethtool", Test)),
    ("sysctl", Debian("procps", Test)),
    ("tcpdump", Debian("tcpdump", Test)),
    ("curl", Debian("curl", Test)),
    ("/usr/bin/python3", Debian("python3-minimal", Test)),
    (
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        Debian("rabbitmq-server", Test),
    ),
    (
        "/usr/lib/rabbitmq/bin/rabbitmqctl",
        Debian("rabbitmq-server", Test),
    ),
    ("/usr/bin/epmd", Debian("erlang-base", Test)),
    ("keepalived", Debian("keepalived", Test)),
    ("dnsmasq", Debian("dnsmasq-base", Test)),
    ("promtool", Debian("prometheus", Test)),
    ("bird", Debian("bird2", Test)),
    ("haproxy", Debian("haproxy", Bench)),
    ("/usr/bin/openssl", Debian("openssl", Test)),
    ("sh", Base("dash")),
    ("bash", Base("bash")),
    ("cat", Base("coreutils")),
    ("env", Base("coreutils")),
    ("id", Base("coreutils")),
    ("mkdir", Base("coreutils")),
    ("mv", Base("coreutils")),
    ("readlink", Base("coreutils")),
    ("rm", Base("coreutils")),
    ("rmdir", Base("coreutils")),
    ("touch", Base("coreutils")),
    ("tr", Base("coreutils")),
    ("sleep", Base("coreutils")),
    ("awk", Base("mawk")),
    ("mount", Base("mount")),
    ("umount", Base("mount")),
    ("flock", Base("util-linux")),
    ("nsenter", Base("util-linux")),
    ("setpriv", Base("util-linux")),
    ("unshare", Base("util-linux")),
    ("apt-get", Base("apt")),
    ("dpkg-query", Base("dpkg")),
    ("rustup", Toolchain),
    ("cargo", Toolchain),
    ("bpf-linker", CargoInstall),
    ("cargo-fuzz", CargoInstall),
    ("lb-agent", Project),
    ("lbadm", Project),
    ("lb-demo", Project),
    ("lb-bench", Project),
    ("policy-rc.d", Project),
    ("debootstrap", Debian("debootstrap", FreshRoot)),
    ("chroot", Base("coreutils")),
];

/// Python modules the scripts under `tests/python` import, with where each comes from
/// ([`Base`] names no package here: Python's standard library, checked against
/// `sys.stdlib_module_names` of `/usr/bin/python3`).
pub const PYTHON_MODULES: &[(&str, Source)] = &[
    ("pika", Debian("python3-pika", Test)),
    ("aiosmtpd", Debian("python3-aiosmtpd", Test)),
    ("argparse", Base("")),
    ("json", Base("")),
    ("signal", Base("")),
    ("sys", Base("")),
    ("threading", Base("")),
    ("time", Base("")),
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
        "fuzz",
    ],
    skip: &["xtask/src/exec_scan"],
    config_scripts: &["tests"],
};

/// The Debian packages the dependency step of `step` installs: for [`Step::Test`] the
/// build's, then every [`Source::Debian`] package of that step in [`PROGRAMS`] and
/// [`PYTHON_MODULES`], each once.
pub fn debian_packages(step: Step) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = match step {
        Test => BUILD_PACKAGES.to_vec(),
        Bench | FreshRoot => Vec::new(),
    };
    for (_, source) in PROGRAMS.iter().chain(PYTHON_MODULES) {
        if let Debian(p, s) = *source
            && s == step
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

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
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
        let deb = debian_packages(Test);
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
        assert_eq!(debian_packages(Bench), ["haproxy"]);
        assert_eq!(debian_packages(FreshRoot), ["debootstrap"]);
        assert!(!deb.contains(&"haproxy"));
    }
}
