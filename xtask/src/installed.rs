//! Checks a Debian system against the declared programs ([`crate::programs`]): each is on the
//! system, dpkg says it belongs to the package declared for it, base packages are
//! `Priority: required`, and the Python modules import from their packages. The system is this
//! machine or a root directory entered with `chroot` (`cargo xtask fresh-root`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::programs::{self, PROGRAMS, PYTHON_MODULES, Source, Step};

/// The PATH programs are looked up in: the caller's, then the system folders (the tests run as
/// root, and a chroot has no PATH of its own).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A Debian system to check.
#[derive(Debug, Clone)]
pub enum System {
    /// This machine.
    Host,
    /// The root directory of another Debian system, entered with `chroot`.
    Chroot(PathBuf),
}

impl System {
    /// `program` run on the system.
    fn command(&self, program: &str) -> Command {
        match self {
            // exec: sh readlink dpkg-query /usr/bin/python3 (what the methods below run)
            System::Host => Command::new(program),
            System::Chroot(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(program).env("PATH", SYSTEM_PATH);
                c
            }
        }
    }

    /// What `program`'s command prints, trimmed; `None` when it fails.
    fn output(&self, program: &str, args: &[&str]) -> Result<Option<String>> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} on {self:?}"))?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }

    /// Where an executable `program` is (an absolute path as given, else looked up in PATH).
    fn locate(&self, program: &str) -> Result<Option<String>> {
        let path = match self {
            System::Host => format!(
                "{}:{SYSTEM_PATH}",
                std::env::var("PATH").unwrap_or_default()
            ),
            System::Chroot(_) => SYSTEM_PATH.to_owned(),
        };
        let script = "PATH=$1; p=$(command -v \"$2\") && [ -x \"$p\" ] && echo \"$p\"";
        self.output("sh", &["-c", script, "sh", &path, program])
    }

    /// The packages dpkg says own `path`, its resolved path (alternatives, symlinks) or their
    /// merged-/usr twins.
    fn owners(&self, path: &str) -> Result<Vec<String>> {
        let mut candidates = vec![path.to_owned()];
        if let Some(real) = self.output("readlink", &["-f", path])? {
            candidates.push(real);
        }
        for p in candidates.clone() {
            candidates.push(match p.strip_prefix("/usr") {
                Some(rest) => rest.to_owned(),
                None => format!("/usr{p}"),
            });
        }
        // One query for all of them: it lists the paths it knows (and fails for the others).
        let out = self
            .command("dpkg-query")
            .arg("-S")
            .args(&candidates)
            .output()
            .context("running dpkg-query")?;
        let mut owners = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("diversion "))
        {
            let Some((packages, _)) = line.split_once(": ") else {
                continue;
            };
            for package in packages.split(", ") {
                // Drop the architecture qualifier (`libc6:amd64`).
                let package = package.split(':').next().unwrap_or(package).to_owned();
                if !owners.contains(&package) {
                    owners.push(package);
                }
            }
        }
        Ok(owners)
    }

    fn priority(&self, package: &str) -> Result<String> {
        Ok(self
            .output("dpkg-query", &["-W", "-f=${Priority}", package])?
            .unwrap_or_default())
    }
}

/// Checks `system` after the dependency steps of `steps` ran on it. On a chroot the toolchain
/// and bpf-linker are not looked for (the root has only Debian's packages).
pub fn verify(system: &System, steps: &[Step]) -> Result<()> {
    let mut problems = Vec::new();
    for &(program, source) in PROGRAMS {
        let package = match source {
            Source::Debian(p, step) if steps.contains(&step) => Some(p),
            Source::Base(p) => Some(p),
            Source::Toolchain | Source::CargoInstall if matches!(system, System::Host) => None,
            _ => continue,
        };
        let Some(path) = system.locate(program)? else {
            problems.push(format!("`{program}` is not installed ({source:?})"));
            continue;
        };
        let Some(package) = package else { continue };
        let owners = system.owners(&path)?;
        if !owners.iter().any(|o| o == package) {
            let owners = if owners.is_empty() {
                "no package".to_owned()
            } else {
                owners.join(", ")
            };
            problems.push(format!(
                "`{program}` ({path}) is declared as coming from {package}, but dpkg says it \
                 belongs to {owners}"
            ));
        }
        if matches!(source, Source::Base(_)) {
            let priority = system.priority(package)?;
            if priority != "required" {
                problems.push(format!(
                    "`{program}` is declared part of the base system, but its package {package} \
                     has priority {priority:?}, not \"required\": install it in a dependency step"
                ));
            }
        }
    }
    problems.extend(verify_python_modules(system, steps)?);
    if !problems.is_empty() {
        bail!(
            "the declared programs do not match {system:?}:\n  {}",
            problems.join("\n  ")
        );
    }
    println!(
        "    {} programs and {} Python modules checked on {system:?}: each installed, from the \
         package declared",
        PROGRAMS.len(),
        PYTHON_MODULES.len()
    );
    Ok(())
}

fn verify_python_modules(system: &System, steps: &[Step]) -> Result<Vec<String>> {
    let python = |code: &str| system.output("/usr/bin/python3", &["-c", code]);
    let mut problems = Vec::new();
    let stdlib = python("import sys; print('\\n'.join(sorted(sys.stdlib_module_names)))")?
        .context("/usr/bin/python3 does not run")?;
    for &(module, source) in PYTHON_MODULES {
        match source {
            Source::Base(_) if !stdlib.lines().any(|l| l == module) => problems.push(format!(
                "Python module `{module}` is declared as standard library, but /usr/bin/python3 \
                 does not list it"
            )),
            Source::Debian(package, step) if steps.contains(&step) => {
                match python(&format!("import {module}; print({module}.__file__)"))? {
                    None => problems.push(format!("/usr/bin/python3 cannot import `{module}`")),
                    Some(file) if !system.owners(&file)?.iter().any(|o| o == package) => problems
                        .push(format!(
                            "Python module `{module}` ({file}) does not come from {package}"
                        )),
                    Some(_) => {}
                }
            }
            _ => {}
        }
    }
    Ok(problems)
}

/// `cargo xtask check-programs`: the guard over the sources, then [`verify`] on this machine.
pub fn check(root: &Path, bench: bool) -> Result<()> {
    let problems = programs::undeclared(root)?;
    if !problems.is_empty() {
        bail!(
            "programs run without an install step:\n  {}",
            problems.join("\n  ")
        );
    }
    let steps: &[Step] = if bench {
        &[Step::Test, Step::Bench]
    } else {
        &[Step::Test]
    };
    verify(&System::Host, steps)
}
