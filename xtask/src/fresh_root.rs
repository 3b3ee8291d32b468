//! `cargo xtask fresh-root`: proves the install list on the freshest Debian 12 there is. It
//! makes a minimal root (`debootstrap --variant=minbase`: Debian's `Priority: required`
//! packages and apt, nothing else), installs into it exactly what the dependency steps of
//! `cargo xtask test` and `cargo xtask bench` install, the same way (`--no-install-recommends`,
//! no service started), and then checks every declared program in it as the test command
//! checks this machine ([`crate::installed::verify`]).
//!
//! The root takes the package sources of this machine (its apt sources and their keyrings),
//! so it reaches the same archive the dependency step does. It is made anew on every run
//! under `target/fresh-root` and left there for inspection.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{
    deps,
    installed::{self, System},
    programs::{self, Step},
};

/// The Debian release the project's machines run.
const SUITE: &str = "bookworm";

/// Makes the root, installs the dependency steps' packages into it and checks it.
pub fn run(workspace: &Path) -> Result<()> {
    deps::ensure_root()?;
    deps::ensure_debian_packages(&programs::debian_packages(Step::FreshRoot))?;
    let root = workspace.join("target").join("fresh-root");
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing the previous {}", root.display()))?;
    }
    std::fs::create_dir_all(&root)?;

    let mirror = host_mirror()?;
    println!(
        "==> debootstrap --variant=minbase {SUITE} {}",
        root.display()
    );
    deps::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", SUITE])
            .arg(&root)
            .arg(&mirror),
    )?;
    copy_apt_sources(&root)?;

    let packages: Vec<&str> = [Step::Test, Step::Bench]
        .into_iter()
        .flat_map(programs::debian_packages)
        .collect();
    println!("==> installing into the root: {}", packages.join(" "));
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    chmod_x(&policy)?;
    let proc = ProcMount::new(&root)?;
    in_root(&root, &["apt-get", "update"])?;
    let mut install = vec!["apt-get", "install", "-y", "--no-install-recommends"];
    install.extend(&packages);
    in_root(&root, &install)?;
    drop(proc);
    std::fs::remove_file(&policy)?;

    println!("==> checking the declared programs in the root");
    installed::verify(&System::Chroot(root.clone()), &[Step::Test, Step::Bench])?;
    println!(
        "==> a fresh Debian 12 root with the dependency steps' packages has every declared \
         program ({})",
        root.display()
    );
    Ok(())
}

/// Runs `args` in the root, non-interactively.
fn in_root(root: &Path, args: &[&str]) -> Result<()> {
    deps::run(
        Command::new("chroot")
            .arg(root)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
    )
}

/// The archive this machine's apt takes the release's main component from.
fn host_mirror() -> Result<String> {
    let mut found = None;
    for (_, text) in apt_source_files()? {
        found = found.or_else(|| mirror_in(&text));
    }
    found.with_context(|| format!("no apt source of this machine serves {SUITE} main"))
}

/// The URI serving [`SUITE`] (not -updates or -security) with `main`, in a one-line
/// (`deb URI SUITE main`) or deb822 (`URIs:` / `Suites:`) source file.
fn mirror_in(text: &str) -> Option<String> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["deb", rest @ ..] = words.as_slice() {
            let rest: Vec<&&str> = rest.iter().filter(|w| !w.starts_with('[')).collect();
            if rest.len() >= 3 && *rest[1] == SUITE && rest[2..].iter().any(|c| **c == "main") {
                return Some(rest[0].to_string());
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
        };
        let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) else {
            continue;
        };
        let main = field("Components:").is_some_and(|c| c.contains(&"main"));
        if main && suites.contains(&SUITE) {
            return uris.first().map(|u| (*u).to_owned());
        }
    }
    None
}

/// This machine's enabled apt source files: `sources.list` and `sources.list.d/*.list`,
/// `*.sources`.
fn apt_source_files() -> Result<Vec<(PathBuf, String)>> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir {
            let path = entry?.path();
            if path
                .extension()
                .is_some_and(|e| e == "list" || e == "sources")
            {
                files.push(path);
            }
        }
    }
    Ok(files
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect())
}

/// Gives the root this machine's apt sources and the keyrings they name.
fn copy_apt_sources(root: &Path) -> Result<()> {
    let target = root.join("etc/apt/sources.list.d");
    std::fs::create_dir_all(&target)?;
    // debootstrap's own sources.list names the release only; ours add -updates and -security.
    let _ = std::fs::remove_file(root.join("etc/apt/sources.list"));
    for (path, text) in apt_source_files()? {
        let dest = if path.parent() == Some(Path::new("/etc/apt")) {
            root.join("etc/apt/sources.list")
        } else {
            target.join(path.file_name().context("a source file's name")?)
        };
        std::fs::write(&dest, &text).with_context(|| format!("writing {}", dest.display()))?;
        for keyring in keyrings(&text) {
            let dest = root.join(keyring.trim_start_matches('/'));
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(keyring, &dest).with_context(|| format!("copying {keyring}"))?;
        }
    }
    Ok(())
}

/// The keyring files a source file names (`Signed-By: /path`, `[signed-by=/path]`).
fn keyrings(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|w| w.trim_start_matches('[').trim_end_matches(']'))
        .map(|w| w.strip_prefix("signed-by=").unwrap_or(w))
        .filter(|w| w.starts_with('/') && (w.ends_with(".gpg") || w.ends_with(".asc")))
        .collect()
}

fn chmod_x(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// /proc mounted in the root while packages install (maintainer scripts read it); unmounted
/// on drop, also on an error path.
struct ProcMount(PathBuf);

impl ProcMount {
    fn new(root: &Path) -> Result<Self> {
        let target = root.join("proc");
        std::fs::create_dir_all(&target)?;
        deps::run(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(&target),
        )?;
        Ok(ProcMount(target))
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        if let Err(e) = deps::run(Command::new("umount").arg("-l").arg(&self.0)) {
            eprintln!("warning: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_archive_is_found_in_both_source_formats() {
        let a = Some("http://a.example/debian".to_owned());
        assert_eq!(
            mirror_in("deb http://a.example/debian bookworm main contrib\n"),
            a
        );
        assert_eq!(
            mirror_in("deb [signed-by=/k.gpg] http://a.example/debian bookworm main\n"),
            a
        );
        assert_eq!(
            mirror_in("deb http://s.example/ bookworm-security main\n"),
            None
        );
        let deb822 = "Types: deb\nURIs: http://b.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://b.example/debian-security\nSuites: bookworm-security\n\
                      Components: main\n";
        assert_eq!(
            mirror_in(deb822),
            Some("http://b.example/debian".to_owned())
        );
        assert_eq!(
            mirror_in("Types: deb\nURIs: http://c.example/\nSuites: nodistro\nComponents: main\n"),
            None
        );
        assert_eq!(
            keyrings(deb822),
            ["/usr/share/keyrings/debian-archive-keyring.gpg"]
        );
        assert_eq!(
            keyrings("deb [signed-by=/etc/k.asc] http://a/ x main"),
            ["/etc/k.asc"]
        );
    }
}
