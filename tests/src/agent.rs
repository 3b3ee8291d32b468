//! Runs the real `lb-agent` binary in a director namespace and talks to it like an operator:
//! writes its configuration, sends signals, reads its log.
//!
//! The agent joins only the director's *network* namespace (`nsenter --net`), so it sees the
//! host's bpffs (`ip netns exec` would remount /sys and hide it). Each agent pins under its
//! own directory on bpffs, removed on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_userspace::dataplane::{Dataplane, PinDir, ensure_bpffs};

use crate::netns::Netns;

/// The directory holding the workspace's built binaries (`target/<profile>`), built once per
/// process so that the binaries match the code under test.
///
/// The caller is a test (`target/<profile>/deps/<test>`) or one of this crate's binaries
/// (`target/<profile>/lb-demo`).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("executable path");
        let parent = exe
            .parent()
            .expect("the executable lives in target/<profile>");
        let dir = if parent.file_name().is_some_and(|n| n == "deps") {
            parent.parent().expect("target/<profile>/deps has a parent")
        } else {
            parent
        }
        .to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "lb-userspace", "--bins"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building lb-agent and lbadm failed");
        dir
    })
}

/// Path of a workspace binary (`lb-agent`, `lbadm`).
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A running `lb-agent`.
pub struct Agent {
    child: Option<Child>,
    /// The configuration file (rewritten by [`Agent::reload`]).
    pub config: PathBuf,
    /// The agent's log (stderr).
    pub log: PathBuf,
    /// Root of this agent's pin directories.
    pub pin_root: PathBuf,
    /// The instance name.
    pub instance: String,
    netns: String,
    dir: PathBuf,
}

static AGENTS: AtomicU32 = AtomicU32::new(0);

impl Agent {
    /// Writes `config_yaml` and starts `lb-agent` in `ns`, waiting until it serves. The YAML
    /// must not set `instance` (the harness picks a unique one and appends it).
    pub fn start(ns: &Netns, config_yaml: &str) -> Result<Self> {
        ensure_bpffs().context("bpffs")?;
        let n = AGENTS.fetch_add(1, Ordering::Relaxed);
        let instance = format!("t{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("lb-agent-{instance}"));
        fs::create_dir_all(&dir)?;
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/lb-xdp-test-{instance}"));
        let mut agent = Self {
            child: None,
            config: dir.join("lb-agent.yaml"),
            log: dir.join("lb-agent.log"),
            pin_root,
            instance,
            netns: ns.name().to_owned(),
            dir,
        };
        agent.write_config(config_yaml)?;
        agent.spawn()?;
        agent.wait_for_log("serving", Duration::from_secs(20))?;
        Ok(agent)
    }

    fn write_config(&self, yaml: &str) -> Result<()> {
        // A configuration saved from a running agent (`lbadm -S`) already names its instance
        // and socket.
        let text = if yaml.lines().any(|l| l.starts_with("instance:")) {
            yaml.to_owned()
        } else {
            format!("{yaml}\ninstance: {}\n", self.instance)
        };
        fs::write(&self.config, text).context("writing the agent's configuration")
    }

    /// The control socket (the default path of this instance).
    pub fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/lb-xdp/{}.sock", self.instance))
    }

    /// Runs `lbadm ARGS` against this agent; returns (exit code, stdout, stderr).
    pub fn lbadm(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin("lbadm"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("running lbadm");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `lbadm ARGS`, which must succeed; returns its output.
    pub fn lbadm_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.lbadm(args);
        assert_eq!(code, 0, "lbadm {args:?} failed: {err}");
        out
    }

    /// Starts `lb-agent` on `config_yaml` under an existing instance name (e.g. a saved
    /// configuration), waiting until it serves.
    pub fn start_instance(ns: &Netns, config_yaml: &str, instance: &str) -> Result<Self> {
        ensure_bpffs().context("bpffs")?;
        let dir = std::env::temp_dir().join(format!("lb-agent-{instance}-again"));
        fs::create_dir_all(&dir)?;
        let mut agent = Self {
            child: None,
            config: dir.join("lb-agent.yaml"),
            log: dir.join("lb-agent.log"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/lb-xdp-test-{instance}")),
            instance: instance.to_owned(),
            netns: ns.name().to_owned(),
            dir,
        };
        agent.write_config(config_yaml)?;
        agent.spawn()?;
        agent.wait_for_log("serving", Duration::from_secs(20))?;
        Ok(agent)
    }

    /// Starts the process (again, after a kill).
    pub fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .command()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lb-agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// `lb-agent` on this agent's configuration and pin root, inside its namespace.
    fn command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(bin("lb-agent"))
            .arg("--config")
            .arg(&self.config)
            .arg("--pin-root")
            .arg(&self.pin_root);
        cmd
    }

    /// The agent's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs a second `lb-agent` on this agent's configuration and pin root, as an operator
    /// starting one by hand next to the running one would, and waits (at most `limit`) for it
    /// to exit: its exit code and stderr. A second agent still running then is killed and
    /// reported as an error.
    pub fn run_another(&self, limit: Duration) -> Result<(i32, String)> {
        let err = self.dir.join("another.err");
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err)?)
            .spawn()
            .context("starting a second lb-agent")?;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the second lb-agent still runs after {limit:?}:\n{}",
                    fs::read_to_string(&err).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Ok((status.code().unwrap_or(-1), fs::read_to_string(&err)?))
    }

    /// The agent's resident memory (VmRSS) in KiB, while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `count` times in total.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.log_text().matches(needle).count() >= count {
                return Ok(());
            }
            if let Some(code) = self.exit_status() {
                bail!(
                    "lb-agent exited ({code}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > limit {
                bail!(
                    "no {needle:?} in the agent's log after {limit:?}:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> Result<()> {
        self.wait_for_log_count(needle, 1, limit)
    }

    fn exit_status(&self) -> Option<String> {
        let pid = self.child.as_ref()?.id();
        // A zombie or vanished process has exited.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.split_whitespace()
            .nth(2)
            .filter(|s| *s == "Z")
            .map(|_| "exited".to_owned())
    }

    /// Rewrites the configuration and sends SIGHUP.
    pub fn reload(&self, config_yaml: &str) -> Result<()> {
        self.write_config(config_yaml)?;
        self.signal(libc::SIGHUP)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) -> Result<()> {
        let child = self.child.as_ref().context("agent not running")?;
        // nsenter execs lb-agent, so the child's pid is the agent's.
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(child.id() as i32, sig) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `kill -9`, and reap the process.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        self.wait()
    }

    /// SIGTERM and wait for the process to exit.
    pub fn stop(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM)?;
        self.wait()
    }

    fn wait(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.wait()?;
        }
        Ok(())
    }

    /// The pin directory of this agent's instance.
    pub fn pins(&self) -> PinDir {
        PinDir::new(self.pin_root.join(&self.instance))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.exit_status().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Whatever the agent left (kill -9, keep_forwarding_on_stop) goes now.
        let _ = Dataplane::remove_pins(&self.pins());
        let _ = fs::remove_file(self.socket());
        let _ = fs::remove_dir(&self.pin_root);
        let _ = fs::remove_dir_all(&self.dir);
    }
}
