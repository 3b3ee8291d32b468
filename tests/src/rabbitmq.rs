//! Real RabbitMQ in the test network: Debian's `rabbitmq-server` nodes in real-server
//! namespaces, and the AMQP client (pika, `tests/python/amqp_client.py`) and management API
//! requests (curl) that reach them through the VIP from client namespaces.
//!
//! Each [`RabbitNode`] is a standalone node with everything of its own under a per-test
//! directory: node name `lbt<pid>-<tag>@localhost` (short names: inside `ip netns exec` the
//! host name is the machine's, but `localhost` resolves in every namespace), `HOME` holding its
//! own Erlang cookie, its own `rabbitmq.conf`, enabled-plugins file, mnesia and log
//! directories, and an empty `rabbitmq-env.conf` so that nothing under /etc/rabbitmq applies.
//! It listens on `0.0.0.0:5672` (AMQP) and `0.0.0.0:15672` (management), so the VIP on `lo`
//! and the real's own address both work: clients use the first, the checker the second.
//! `cluster_name` is the node's tag (`real1`, ...): RabbitMQ sends it to every AMQP client in
//! connection.start and in `/api/overview`, so each client learns which node answered.
//!
//! Every namespace has its own network stack, so each node gets its own epmd on 4369; the
//! harness starts it (in the foreground, as a child it reaps) before the node, which then
//! uses it instead of daemonizing one of its own. Dropping a node stops the node's process
//! group and its epmd, then kills whatever is still left in its namespace (port programs).

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::netns::Netns;

/// Debian's Python, where python3-pika lives (a `python3` earlier in PATH, such as a pyenv
/// shim, may lack pika).
pub const PYTHON: &str = "/usr/bin/python3";
/// The broker itself, not `/usr/sbin/rabbitmq-server`: that wrapper `su`s to the rabbitmq
/// user, which resets `HOME` and so the node's cookie.
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// The CLI, for the same reason not the `/usr/sbin` wrapper.
pub const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// Erlang's port mapper.
pub const EPMD: &str = "/usr/bin/epmd";
/// The AMQP client script.
pub const CLIENT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/amqp_client.py");
/// AMQP port.
pub const AMQP_PORT: u16 = 5672;
/// Management UI and HTTP API port.
pub const MANAGEMENT_PORT: u16 = 15672;
/// The administrator every node creates on its first boot (`guest` only works from
/// localhost).
pub const USER: &str = "lbtest";
/// Its password.
pub const PASSWORD: &str = "lbtest-secret";
/// The monitoring user `amqp_check` logs in as (configs/rabbitmq.yaml's), created by
/// [`RabbitNode::add_monitor_user`].
pub const MONITOR_USER: &str = "lb-health";
/// Its password.
pub const MONITOR_PASSWORD: &str = "lb-health-secret";

/// Fails with a clear message when what the RabbitMQ tests need is not installed.
pub fn require_installed() -> Result<()> {
    for path in [RABBITMQ_SERVER, RABBITMQCTL, EPMD, PYTHON, "/usr/bin/curl"] {
        ensure!(
            Path::new(path).exists(),
            "{path} is missing: `cargo xtask test` installs rabbitmq-server, python3-pika and curl"
        );
    }
    let pika = Command::new(PYTHON)
        .args(["-c", "import pika"])
        .stdin(Stdio::null())
        .output()
        .context("running python3")?;
    ensure!(
        pika.status.success(),
        "{PYTHON} cannot import pika (`cargo xtask test` installs python3-pika): {}",
        String::from_utf8_lossy(&pika.stderr).trim()
    );
    Ok(())
}

/// A scratch directory, removed (with everything in it) on drop.
pub struct Scratch {
    path: PathBuf,
}

static SCRATCH: AtomicU32 = AtomicU32::new(0);

impl Scratch {
    /// Creates `$TMPDIR/lb-<label>-<pid>-<n>`, empty.
    pub fn new(label: &str) -> Result<Self> {
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lb-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Sends `sig` to a process group.
fn kill_group(pgid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-(pgid as i32), sig) };
}

/// Waits up to `limit` for `child` to exit; true if it has.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Stops a child that leads its own process group: SIGTERM to the group, then SIGKILL after
/// `grace`; reaps it.
fn stop_group(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    kill_group(child.id(), libc::SIGTERM);
    if !wait_exit(child, grace) {
        kill_group(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }
}

/// The last `lines` lines of a file, or a note that it could not be read.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Whether a TCP connection to `to` from inside `ns` is accepted within `timeout`.
pub fn tcp_accepts(ns: &Netns, to: (Ipv4Addr, u16), timeout: Duration) -> bool {
    ns.try_enter(|| TcpStream::connect_timeout(&to.into(), timeout).is_ok())
        .unwrap_or(false)
}

/// A standalone RabbitMQ node running in a real server's namespace.
pub struct RabbitNode {
    /// The node's tag, also its `cluster_name`: which node a client reached.
    pub tag: String,
    /// The Erlang node name (`lbt<pid>-<tag>@localhost`).
    pub nodename: String,
    ns: Netns,
    dir: PathBuf,
    epmd: Option<Child>,
    server: Option<Child>,
}

impl RabbitNode {
    /// Writes the node's files under `base/<tag>` and starts epmd and the node inside `ns`.
    /// Returns at once: see [`RabbitNode::wait_ready`].
    pub fn start(ns: &Netns, base: &Path, tag: &str) -> Result<Self> {
        let dir = base.join(tag);
        for sub in ["home", "mnesia", "log"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let pid = std::process::id();
        let cookie_path = dir.join("home/.erlang.cookie");
        fs::write(
            &cookie_path,
            format!("LBTEST{pid}X{nanos}X{tag}").to_uppercase(),
        )?;
        // Erlang refuses a cookie file that others can read.
        fs::set_permissions(&cookie_path, fs::Permissions::from_mode(0o400))?;
        fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = {AMQP_PORT}\n\
                 management.tcp.port = {MANAGEMENT_PORT}\n\
                 default_user = {USER}\n\
                 default_pass = {PASSWORD}\n\
                 default_user_tags.administrator = true\n\
                 cluster_name = {tag}\n\
                 # A nearly full test disk must not block publishers (the default is 50MB).\n\
                 disk_free_limit.absolute = 1MB\n"
            ),
        )?;
        fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n")?;
        fs::write(dir.join("rabbitmq-env.conf"), "")?;
        let mut node = Self {
            tag: tag.to_owned(),
            nodename: format!("lbt{pid}-{tag}@localhost"),
            ns: ns.clone_handle()?,
            dir,
            epmd: None,
            server: None,
        };

        let epmd_log = fs::File::create(node.dir.join("epmd.log"))?;
        let epmd = node
            .ns
            .command(&[EPMD])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(epmd_log.try_clone()?)
            .stderr(epmd_log)
            .spawn()
            .context("starting epmd")?;
        node.epmd = Some(epmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tcp_accepts(ns, (Ipv4Addr::LOCALHOST, 4369), Duration::from_millis(200)) {
            ensure!(
                Instant::now() < deadline,
                "epmd in {} is not listening after 10 s: {}",
                ns.name(),
                tail(&node.dir.join("epmd.log"), 20)
            );
            thread::sleep(Duration::from_millis(50));
        }

        let out = fs::File::create(node.dir.join("stdout.log"))?;
        let mut cmd = node.ns.command(&[RABBITMQ_SERVER]);
        node.env(&mut cmd);
        let server = cmd
            // Three VMs share two CPUs with the test: no busy-waiting schedulers.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "+sbwt none +sbwtdcpu none +sbwtdio none",
            )
            .current_dir(&node.dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting rabbitmq-server")?;
        node.server = Some(server);
        Ok(node)
    }

    /// What the node and its CLI share: the node name, `HOME` (the cookie) and the node's own
    /// files instead of anything under /etc/rabbitmq or /var/lib/rabbitmq.
    fn env(&self, cmd: &mut Command) {
        let dir = &self.dir;
        cmd.env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.nodename)
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("LC_ALL", "C.UTF-8");
    }

    /// The node's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The end of the node's console output and of its log file.
    pub fn logs(&self) -> String {
        format!(
            "--- {} console ({}):\n{}\n--- {} log:\n{}",
            self.nodename,
            self.dir.join("stdout.log").display(),
            tail(&self.dir.join("stdout.log"), 120),
            self.nodename,
            tail(&self.dir.join(format!("log/{}.log", self.nodename)), 40)
        )
    }

    /// Whether the node's process has exited.
    pub fn exited(&mut self) -> bool {
        self.server
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until the node accepts AMQP connections and its management API answers 200 for
    /// [`USER`] with this node's name, both inside its namespace. Fails with the node's logs
    /// if it exits or does not get there within `limit`.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if self.exited() {
                bail!(
                    "RabbitMQ node {} exited while starting\n{}",
                    self.nodename,
                    self.logs()
                );
            }
            let last = if tcp_accepts(
                &self.ns,
                (Ipv4Addr::LOCALHOST, AMQP_PORT),
                Duration::from_millis(500),
            ) {
                match management_get(&self.ns, Ipv4Addr::LOCALHOST, "/api/overview") {
                    Ok((200, body)) if body["node"] == self.nodename.as_str() => return Ok(()),
                    Ok((status, body)) => format!("HTTP {status}: {body}"),
                    Err(e) => format!("{e:#}"),
                }
            } else {
                format!("127.0.0.1:{AMQP_PORT} refuses connections")
            };
            if started.elapsed() > limit {
                bail!(
                    "RabbitMQ node {} is not ready after {limit:?} ({last})\n{}",
                    self.nodename,
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts `rabbitmqctl stop` for this node in the background (the operator's stop: the
    /// node closes its listeners and connections and halts). Reap it with
    /// [`RabbitNode::wait_stopped`].
    pub fn stop_in_background(&self) -> Result<Child> {
        let mut cmd = self
            .ns
            .command(&[RABBITMQCTL, "-n", &self.nodename, "stop"]);
        self.env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting rabbitmqctl stop")
    }

    /// Waits for `rabbitmqctl stop` (from [`RabbitNode::stop_in_background`]) to succeed and
    /// for the node's process to exit, both within `limit`.
    pub fn wait_stopped(&mut self, mut ctl: Child, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        if !wait_exit(&mut ctl, limit) {
            let _ = ctl.kill();
            let _ = ctl.wait();
            bail!("rabbitmqctl stop {} took over {limit:?}", self.nodename);
        }
        let out = ctl.wait_with_output()?;
        ensure!(
            out.status.success(),
            "rabbitmqctl stop {} failed ({}): {}{}\n{}",
            self.nodename,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(server) = self.server.as_mut() {
            ensure!(
                wait_exit(server, left),
                "node {} still runs {limit:?} after rabbitmqctl stop\n{}",
                self.nodename,
                self.logs()
            );
        }
        Ok(())
    }

    /// Runs `rabbitmqctl -n <node> <args>` in the node's namespace with `stdin` as its input;
    /// its standard output, or an error with everything it printed. Bounded by 60 s.
    pub fn ctl(&self, args: &[&str], stdin: &str) -> Result<String> {
        let mut argv = vec![RABBITMQCTL, "-n", &self.nodename];
        argv.extend_from_slice(args);
        let mut cmd = self.ns.command(&argv);
        self.env(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting rabbitmqctl {args:?}"))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes())?;
        }
        if !wait_exit(&mut child, Duration::from_secs(60)) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("rabbitmqctl {args:?} on {} took over 60 s", self.nodename);
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "rabbitmqctl {args:?} on {} failed ({}): {}{}",
            self.nodename,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates [`MONITOR_USER`] as configs/rabbitmq.yaml tells the operator to (the password
    /// on standard input), with the permissions `amqp_check` with `alarm` needs: to log in to
    /// `/` and to publish to the default exchange (`amq.default`), nothing else.
    pub fn add_monitor_user(&self) -> Result<()> {
        self.ctl(
            &["add_user", MONITOR_USER],
            &format!("{MONITOR_PASSWORD}\n"),
        )?;
        self.ctl(
            &[
                "set_permissions",
                "-p",
                "/",
                MONITOR_USER,
                "^$",
                "^amq\\.default$",
                "^$",
            ],
            "",
        )?;
        Ok(())
    }

    /// `rabbitmqctl set_vm_memory_high_watermark <fraction>`: a tiny fraction (0.0001) raises
    /// the memory alarm at once, RabbitMQ's default (0.4) clears it.
    pub fn set_memory_watermark(&self, fraction: &str) -> Result<()> {
        self.ctl(&["set_vm_memory_high_watermark", fraction], "")
            .map(drop)
    }

    /// The node's resource alarms, as `rabbitmqctl status` lists them (`memory`, `disk`), empty
    /// without one.
    pub fn alarms(&self) -> Result<Vec<String>> {
        let out = self.ctl(&["status", "--formatter", "json"], "")?;
        let status: Value = serde_json::from_str(&out)
            .with_context(|| format!("rabbitmqctl status printed {out:?}"))?;
        Ok(status["alarms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
            .collect())
    }

    /// The state of each connection of `user` on the node (`running`, `blocked`, ...).
    pub fn connection_states(&self, user: &str) -> Result<Vec<String>> {
        let out = self.ctl(
            &["list_connections", "user", "state", "--formatter", "json"],
            "",
        )?;
        let conns: Value = serde_json::from_str(&out)
            .with_context(|| format!("rabbitmqctl list_connections printed {out:?}"))?;
        Ok(conns
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["user"] == user)
            .map(|c| c["state"].as_str().unwrap_or("?").to_owned())
            .collect())
    }

    /// Asks the node to stop (SIGTERM to its process group: a graceful shutdown) without
    /// waiting; [`Drop`] then waits.
    pub fn signal_stop(&mut self) {
        if let Some(server) = self.server.as_mut()
            && matches!(server.try_wait(), Ok(None))
        {
            kill_group(server.id(), libc::SIGTERM);
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            stop_group(&mut server, Duration::from_secs(15));
        }
        if let Some(mut epmd) = self.epmd.take() {
            stop_group(&mut epmd, Duration::from_secs(2));
        }
        // Port programs the VM started in their own sessions (inet_gethost, an `epmd -daemon`
        // that found the port taken) normally exit with it; anything left in this test's own
        // namespace goes now.
        let leftovers = Command::new("ip")
            .args(["netns", "pids", self.ns.name()])
            .stdin(Stdio::null())
            .output();
        if let Ok(out) = leftovers {
            let own = std::process::id() as i32;
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .filter(|&p| p != own)
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// `GET path` on the management API at `host:15672` with [`USER`]'s credentials, by curl
/// inside `ns` (a new connection each time): the status and the body parsed as JSON (null if
/// it is not JSON).
pub fn management_get(ns: &Netns, host: Ipv4Addr, path: &str) -> Result<(u16, Value)> {
    let url = format!("http://{host}:{MANAGEMENT_PORT}{path}");
    let out = ns
        .command(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-u",
            &format!("{USER}:{PASSWORD}"),
            "-w",
            "\n%{http_code}",
            &url,
        ])
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "curl {url} from {} failed ({}): {}",
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let (body, status) = text.trim_end().rsplit_once('\n').unwrap_or(("", &text));
    let status: u16 = status
        .trim()
        .parse()
        .with_context(|| format!("curl printed no status: {text:?}"))?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The client script's command line inside `ns`.
fn client_command(ns: &Netns, vip: Ipv4Addr, args: &[String]) -> Command {
    let mut argv: Vec<String> = vec![
        PYTHON.into(),
        CLIENT_SCRIPT.into(),
        args[0].clone(),
        "--host".into(),
        vip.to_string(),
        "--port".into(),
        AMQP_PORT.to_string(),
        "--user".into(),
        USER.into(),
        "--password".into(),
        PASSWORD.into(),
    ];
    argv.extend_from_slice(&args[1..]);
    ns.command(&argv)
}

/// One connect, publish, consume, close cycle of the client.
#[derive(Clone, Debug)]
pub struct Cycle {
    /// It all worked: every message was confirmed and consumed back.
    pub ok: bool,
    /// The node that answered (its `cluster_name`), if the connection opened.
    pub node: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The whole line the client printed.
    pub raw: Value,
}

/// Runs `count` cycles of `messages` messages from each of `clients` to `vip:5672`, the
/// clients in parallel and each client's cycles one after the other; returns each client's
/// cycles.
pub fn run_cycles(
    clients: &[&Netns],
    vip: Ipv4Addr,
    count: usize,
    messages: usize,
) -> Result<Vec<Vec<Cycle>>> {
    let args = vec![
        "cycles".to_owned(),
        "--count".into(),
        count.to_string(),
        "--messages".into(),
        messages.to_string(),
        "--max-seconds".into(),
        "90".into(),
    ];
    let children = clients
        .iter()
        .map(|ns| {
            client_command(ns, vip, &args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting the AMQP client")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut all = Vec::new();
    // The script bounds its own run time (an alarm), so waiting cannot hang.
    for (ns, child) in clients.iter().zip(children) {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let cycles: Vec<Cycle> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "cycle")
            .map(|v| Cycle {
                ok: v["ok"] == true,
                node: v["node"].as_str().map(str::to_owned),
                error: v["error"].as_str().map(str::to_owned),
                raw: v,
            })
            .collect();
        ensure!(
            out.status.success() && cycles.len() == count,
            "the AMQP client in {} ran {} of {count} cycles ({}):\n{stdout}\n{}",
            ns.name(),
            cycles.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        all.push(cycles);
    }
    Ok(all)
}

/// The client's `hold` command: long-lived connections that keep publishing and consuming
/// through the VIP, reconnecting when one breaks, and report every event.
pub struct AmqpHold {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    label: String,
}

impl AmqpHold {
    /// Opens `conns` connections from `ns` to `vip:5672`, exchanging a message on each every
    /// `period`; returns once all are open and have exchanged one message.
    pub fn start(ns: &Netns, vip: Ipv4Addr, conns: usize, period: Duration) -> Result<Self> {
        let args = vec![
            "hold".to_owned(),
            "--conns".into(),
            conns.to_string(),
            "--period".into(),
            format!("{:.3}", period.as_secs_f64()),
            "--max-seconds".into(),
            "240".into(),
        ];
        let mut child = client_command(ns, vip, &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the AMQP client")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().context("client stdout")?;
        let err = child.stderr.take().context("client stderr")?;
        let (ev, er) = (events.clone(), stderr.clone());
        let readers = vec![
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let v = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({"event": "raw", "line": line}));
                    ev.lock().expect("events").push(v);
                }
            }),
            thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = er.lock().expect("stderr");
                    s.push_str(&line);
                    s.push('\n');
                }
            }),
        ];
        let hold = Self {
            stdin: child.stdin.take(),
            child: Some(child),
            events,
            stderr,
            readers,
            label: ns.name().to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while hold.ready().is_none() {
            ensure!(
                Instant::now() < deadline && !hold.exited(),
                "the AMQP hold client in {} did not get ready: {:?}\n{}",
                hold.label,
                hold.events(),
                hold.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
        Ok(hold)
    }

    fn exited(&self) -> bool {
        let Some(child) = &self.child else {
            return true;
        };
        // A zombie has exited; try_wait needs &mut.
        fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    }

    /// The `ready` event: the node of each connection when it opened.
    pub fn ready(&self) -> Option<Value> {
        self.events().into_iter().find(|e| e["event"] == "ready")
    }

    /// The node each connection first opened on.
    pub fn initial_nodes(&self) -> Vec<String> {
        self.ready()
            .map(|r| {
                r["conns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["node"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// The events named `name` so far.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// What the client wrote on stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Stops the client (it closes its connections) and returns its `summary` event.
    pub fn finish(mut self) -> Result<Value> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let mut child = self.child.take().context("client already finished")?;
        if !wait_exit(&mut child, Duration::from_secs(20)) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the AMQP hold client in {} did not stop", self.label);
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.events()
            .into_iter()
            .find(|e| e["event"] == "summary")
            .with_context(|| {
                format!(
                    "the AMQP hold client in {} printed no summary: {:?}\n{}",
                    self.label,
                    self.events(),
                    self.stderr()
                )
            })
    }
}

impl Drop for AmqpHold {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take()
            && !wait_exit(&mut child, Duration::from_secs(5))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}
