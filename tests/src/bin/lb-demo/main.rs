//! `lb-demo`: the narrated demonstration behind `cargo xtask demo` (needs root).
//!
//! It builds a direct-routing network in namespaces (a client, a director, three real servers
//! running an HTTP service), starts the real `lb-agent` on the configuration embedded below,
//! sends traffic through the VIP, shows what `lbadm` reports, stops and restarts one real's
//! service to show a health change, and removes everything it created, on success and on
//! failure (SIGINT and SIGTERM included). It reads no input and exits non-zero when a step
//! does not behave as described.
//!
//! `lb-agent` and `lbadm` are taken from the directory of this binary (`target/<profile>`),
//! rebuilt first if the sources changed.

mod http;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_tests::{
    agent::{Agent, bin},
    netns::{self, Netns},
    topo::DrTopology,
};

use crate::http::{HttpServer, KeepAlive};

/// The demo network is `10.NET.0.0/24` (client .1, director .2, reals .11 to .13, VIP .100),
/// on a bridge of its own: nothing is connected to the machine's network.
const NET: u8 = 1;
/// The service's port.
const PORT: u16 = 80;
/// How many real servers.
const REALS: usize = 3;
/// The real whose service is stopped and started again (index into the reals).
const FAILING: usize = 1;
/// Where the agent serves Prometheus metrics, inside the director's namespace.
const METRICS: &str = "127.0.0.1:9101";

/// The embedded default configuration: one HTTP service on the VIP, scheduled by wlc, three
/// reals with a TCP check every second, so that a failure shows within seconds.
const CONFIG: &str = "\
# lb-demo's configuration: one HTTP service, three real servers checked every second.
interface: eth0                  # the director's interface; XDP attaches here
xdp_mode: driver                 # native XDP
metrics_listen: 127.0.0.1:9101   # Prometheus text on /metrics
virtual_servers:
  - vip: 10.1.0.100
    port: 80
    lb_algo: wlc                 # weighted least-connection, keepalived's default
    lb_kind: dr                  # direct routing: replies go from the reals to the client
    delay_loop: 1                # a health check every second
    real_servers:
      - ip: 10.1.0.11
        tcp_check: { connect_timeout: 1, retry: 1, delay_before_retry: 1 }
      - ip: 10.1.0.12
        tcp_check: { connect_timeout: 1, retry: 1, delay_before_retry: 1 }
      - ip: 10.1.0.13
        tcp_check: { connect_timeout: 1, retry: 1, delay_before_retry: 1 }
";

/// Short requests in the first round of traffic.
const FIRST_ROUND: usize = 300;
/// Short requests while a real is down, and after it came back.
const LATER_ROUND: usize = 150;
/// Long-lived connections held open through the whole demo.
const LONG_LIVED: usize = 6;
/// Timeout of a client's connect and of its exchange.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound on detecting the failure: delay_loop 1 + connect_timeout 1 x (1 + retry 1)
/// + delay_before_retry 1 x retry 1 = 4 s, plus slack.
const DETECTION_LIMIT: Duration = Duration::from_secs(8);
/// Connection entries shown by `lbadm -L -n -c`.
const CONN_LINES: usize = 8;

/// Set by SIGINT and SIGTERM: every wait and every round of traffic stops, and the demo
/// cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// Fails once a signal asked the demo to stop.
fn check_interrupt() -> Result<()> {
    ensure!(
        !INTERRUPTED.load(Ordering::SeqCst),
        "interrupted by a signal"
    );
    Ok(())
}

fn main() -> ExitCode {
    install_signal_handlers();
    let started = Instant::now();
    match run() {
        Ok(()) => {
            println!(
                "\nlb-demo: done in {:.1} s; every step behaved as described.",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nlb-demo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the network, runs the narrated steps, then cleans up whatever happened.
fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() } == 0,
        "lb-demo needs root: it creates network namespaces and loads XDP programs \
         (run it through `cargo xtask demo`)"
    );
    for name in ["lb-agent", "lbadm"] {
        let path = bin(name);
        ensure!(
            path.exists(),
            "{} is missing: build the workspace first (`cargo xtask demo` does)",
            path.display()
        );
    }
    let stale = netns::remove_stale_namespaces().context("removing stale namespaces")?;
    if stale > 0 {
        println!("(removed {stale} namespaces left behind by an earlier run that was killed)");
    }
    let mut demo = Demo::build()?;
    let result = demo.narrate();
    if result.is_err() && demo.agent.is_some() && !INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!(
            "\nlb-demo: a step failed; the agent's log ends with:\n{}",
            demo.log_tail(20)
        );
    }
    let cleaned = demo.clean_up();
    if let (Err(_), Err(e)) = (&result, &cleaned) {
        eprintln!("lb-demo: cleaning up failed too: {e:#}");
    }
    result.and(cleaned)
}

/// Everything the demo created. Dropping it (on an error or a panic) removes it all: the
/// agent gets SIGTERM, the servers stop, the namespaces are deleted.
struct Demo {
    // Fields drop in declaration order: clients, agent and servers before the network.
    long_lived: Vec<(String, KeepAlive)>,
    agent: Option<Agent>,
    servers: Vec<Option<HttpServer>>,
    topo: DrTopology,
    namespaces: Vec<String>,
}

impl Demo {
    /// Builds the network and starts the HTTP service on every real.
    fn build() -> Result<Self> {
        section("1. The network");
        let topo = DrTopology::new(NET, REALS).context("building the namespace network")?;
        let mut demo = Self {
            long_lived: Vec::new(),
            agent: None,
            servers: Vec::new(),
            namespaces: Vec::new(),
            topo,
        };
        demo.namespaces = std::iter::once(demo.topo.lan.switch())
            .chain([&demo.topo.client.ns, &demo.topo.director.ns])
            .chain(demo.topo.reals.iter().map(|r| &r.ns))
            .map(|ns| ns.name().to_owned())
            .collect();
        for i in 0..REALS {
            let server = demo.start_service(i)?;
            demo.servers.push(Some(server));
        }
        demo.show_network();
        Ok(demo)
    }

    fn vip(&self) -> SocketAddr {
        (self.topo.vip, PORT).into()
    }

    fn real_ip(&self, i: usize) -> Ipv4Addr {
        self.topo.reals[i].ip
    }

    fn agent(&self) -> Result<&Agent> {
        self.agent.as_ref().context("the agent is not running")
    }

    /// Starts the HTTP service on real `i` (`realN`, N = i + 1).
    fn start_service(&self, i: usize) -> Result<HttpServer> {
        let body = format!("served by {} ({})\n", real_name(i), self.real_ip(i));
        HttpServer::start(&self.topo.reals[i].ns, PORT, &body)
            .with_context(|| format!("starting the HTTP service on {}", real_name(i)))
    }

    fn show_network(&self) {
        let t = &self.topo;
        let vip = t.vip;
        println!(
            "Network namespaces on one bridge (br0 in {}):",
            t.lan.switch().name()
        );
        println!();
        println!("  {:<9} {:<13} {:<22} role", "host", "eth0", "namespace");
        let row = |host: &str, ip: Ipv4Addr, ns: &Netns, role: &str| {
            println!(
                "  {host:<9} {:<13} {:<22} {role}",
                format!("{ip}/24"),
                ns.name()
            );
        };
        row(
            "client",
            t.client.ip,
            &t.client.ns,
            &format!("routes the VIP {vip} via the director"),
        );
        row(
            "director",
            t.director.ip,
            &t.director.ns,
            "lb-agent; its XDP program runs in native mode on eth0",
        );
        for (i, real) in t.reals.iter().enumerate() {
            row(
                &real_name(i),
                real.ip,
                &real.ns,
                &format!("VIP on lo, ARP for it suppressed; HTTP on port {PORT}"),
            );
        }
        println!();
        println!(
            "A request to http://{vip}/ goes client -> director, whose XDP program picks a real \
             and\nsends the frame on to the real's MAC (XDP_TX); the real answers the client \
             directly.\nNothing here is connected to this machine's own network."
        );
    }

    /// The narrated steps after the network is up.
    fn narrate(&mut self) -> Result<()> {
        check_interrupt()?;
        self.start_agent()?;
        check_interrupt()?;
        self.first_traffic()?;
        check_interrupt()?;
        self.show_listings()?;
        check_interrupt()?;
        self.fail_a_real()?;
        check_interrupt()?;
        self.bring_it_back()?;
        check_interrupt()?;
        self.show_metrics()?;
        Ok(())
    }

    fn start_agent(&mut self) -> Result<()> {
        section("2. The agent and its configuration");
        ensure!(
            CONFIG.contains(&format!("vip: {}\n", self.topo.vip)),
            "the embedded configuration does not match the network"
        );
        let agent = Agent::start(&self.topo.director.ns, CONFIG).context("starting lb-agent")?;
        let text = std::fs::read_to_string(&agent.config).context("reading the configuration")?;
        println!("lb-agent runs in the director's namespace on this configuration");
        println!(
            "({}; the demo appends a unique instance name):",
            agent.config.display()
        );
        println!();
        for line in text.lines() {
            if line.is_empty() {
                println!();
            } else {
                println!("  {line}");
            }
        }
        println!();
        println!(
            "lb-agent is serving (log: {}). lbadm reaches it below through\n\
             --socket {}, left out of the commands shown; an agent with the\n\
             default instance name needs no flag.",
            agent.log.display(),
            agent.socket().display()
        );
        self.agent = Some(agent);
        Ok(())
    }

    fn first_traffic(&mut self) -> Result<()> {
        section("3. Traffic through the VIP");
        let url = format!("http://{}/", self.topo.vip);
        command(&format!("curl -s {url}"));
        let reply = self
            .topo
            .client
            .ns
            .exec(&["curl", "-s", "-S", "--max-time", "3", &url])
            .context("curl from the client (curl is installed by `cargo xtask demo`)")?;
        print!("{reply}");
        ensure!(
            reply.starts_with("served by real"),
            "unexpected reply {reply:?}"
        );
        println!();

        let vip = self.vip();
        let conns = self
            .topo
            .client
            .ns
            .try_enter(|| -> Result<Vec<KeepAlive>> {
                (0..LONG_LIVED)
                    .map(|_| KeepAlive::connect(vip, CLIENT_TIMEOUT))
                    .collect()
            })?
            .context("opening the long-lived connections")?;
        for mut conn in conns {
            let real = real_of(&conn.get()?)?;
            self.long_lived.push((real, conn));
        }
        println!(
            "Opened {LONG_LIVED} long-lived HTTP/1.1 connections (kept open until the end): {}",
            describe_long_lived(&self.long_lived)
        );
        println!();

        println!("{FIRST_ROUND} short requests from the client (one connection each):");
        let tally = self.round(FIRST_ROUND)?;
        for i in 0..REALS {
            ensure!(
                tally.count(&real_name(i)) > 0,
                "{} served none of the requests",
                real_name(i)
            );
        }
        Ok(())
    }

    fn show_listings(&self) -> Result<()> {
        section("4. What the balancer sees, ipvsadm-style");
        self.lbadm_shown(&["-L", "-n"])?;
        println!(
            "ActiveConn counts the long-lived connections; InActConn the closed ones, until \
             they expire."
        );
        println!();
        self.lbadm_shown(&["-L", "-n", "--stats"])?;
        println!();
        let out = self.lbadm(&["-L", "-n", "-c"])?;
        command("lbadm -L -n -c");
        let lines: Vec<&str> = out.lines().collect();
        let head = 2 + CONN_LINES;
        for line in lines.iter().take(head) {
            println!("{line}");
        }
        if lines.len() > head {
            println!("... ({} more connection entries)", lines.len() - head);
        }
        Ok(())
    }

    fn fail_a_real(&mut self) -> Result<()> {
        let name = real_name(FAILING);
        let ip = self.real_ip(FAILING);
        section(&format!("5. A health change: the service on {name} stops"));
        println!(
            "Stopping the HTTP service on {name} ({ip}): its port closes, its connections are \
             closed."
        );
        self.servers[FAILING] = None;
        let stopped = Instant::now();
        let line = self.wait_for_log(
            &format!("real {ip}:{PORT} of TCP {} failed its check", self.vip()),
            1,
            DETECTION_LIMIT,
        )?;
        println!(
            "After {:.1} s the agent's log says:\n  {line}",
            stopped.elapsed().as_secs_f64()
        );
        let gone = format!("  -> {ip}:{PORT}");
        wait_until(
            Duration::from_secs(3),
            "the failed real leaving the listing",
            || Ok(!self.lbadm(&["-L", "-n"])?.contains(&gone)),
        )?;
        println!();
        self.lbadm_shown(&["-L", "-n", "--health"])?;
        println!(
            "The plain listing (`lbadm -L -n`) now leaves {name} out, as keepalived removes a \
             failed real from IPVS."
        );
        println!();

        println!("{LATER_ROUND} more short requests:");
        let tally = self.round(LATER_ROUND)?;
        ensure!(
            tally.count(&name) == 0,
            "{} requests reached {name} while it was down",
            tally.count(&name)
        );
        println!("None reached {name}, and none failed.");
        println!();

        let mut answered: BTreeMap<String, usize> = BTreeMap::new();
        let mut closed = 0;
        for (real, conn) in &mut self.long_lived {
            if *real == name {
                // Its server closed it; the agent has also dropped the flow.
                if conn.get().is_err() {
                    closed += 1;
                }
                continue;
            }
            let reply = conn
                .get()
                .with_context(|| format!("a long-lived connection on {real} broke"))?;
            ensure!(
                real_of(&reply)? == *real,
                "a long-lived connection moved from {real}: {reply:?}"
            );
            *answered.entry(real.clone()).or_default() += 1;
        }
        self.long_lived.retain(|(real, _)| *real != name);
        let answered: Vec<String> = answered
            .iter()
            .map(|(real, n)| format!("{n} on {real}"))
            .collect();
        println!(
            "Long-lived connections: {} still answer, on the same real; the {closed} on {name} \
             were closed by its server.",
            answered.join(", ")
        );
        Ok(())
    }

    fn bring_it_back(&mut self) -> Result<()> {
        let name = real_name(FAILING);
        let ip = self.real_ip(FAILING);
        section(&format!("6. {name} comes back"));
        println!("Starting the HTTP service on {name} again.");
        self.servers[FAILING] = Some(self.start_service(FAILING)?);
        let started = Instant::now();
        let line = self.wait_for_log(
            &format!("real {ip}:{PORT} of TCP {} passed its check", self.vip()),
            1,
            DETECTION_LIMIT,
        )?;
        println!(
            "After {:.1} s the agent's log says:\n  {line}",
            started.elapsed().as_secs_f64()
        );
        let back = format!("  -> {ip}:{PORT}");
        wait_until(
            Duration::from_secs(3),
            "the real back in the listing",
            || Ok(self.lbadm(&["-L", "-n"])?.contains(&back)),
        )?;
        println!();
        println!("{LATER_ROUND} more short requests:");
        let tally = self.round(LATER_ROUND)?;
        ensure!(
            tally.count(&name) > 0,
            "no request reached {name} after it came back"
        );
        println!(
            "wlc sends each new connection to the real with the least ActiveConn x 256 + \
             InActConn (per\nweight): {name} came back with none, so it takes new connections \
             until the reals are level."
        );
        println!();
        self.lbadm_shown(&["-L", "-n"])?;
        Ok(())
    }

    fn show_metrics(&self) -> Result<()> {
        section("7. Prometheus metrics");
        let url = format!("http://{METRICS}/metrics");
        let wanted = ["lb_real_up", "lb_real_connections_total"];
        // The metrics snapshot is refreshed every 2 s: wait until it shows every real up.
        let mut excerpt = Vec::new();
        wait_until(
            Duration::from_secs(5),
            "every real up in the metrics",
            || {
                let body =
                    self.topo
                        .director
                        .ns
                        .exec(&["curl", "-s", "-S", "--max-time", "3", &url])?;
                excerpt = body
                    .lines()
                    .filter(|l| wanted.iter().any(|w| l.starts_with(&format!("{w}{{"))))
                    .map(str::to_owned)
                    .collect();
                Ok(excerpt
                    .iter()
                    .filter(|l| l.starts_with("lb_real_up{") && l.ends_with(" 1"))
                    .count()
                    == REALS)
            },
        )?;
        command(&format!(
            "curl -s {url} | grep -E '^lb_real_(up|connections_total)\\{{'"
        ));
        for line in excerpt {
            println!("{line}");
        }
        Ok(())
    }

    /// Sends `n` short requests through the VIP and prints how many each real served.
    fn round(&self, n: usize) -> Result<Tally> {
        let vip = self.vip();
        let tally = self.topo.client.ns.try_enter(|| -> Result<Tally> {
            let mut tally = Tally::default();
            for _ in 0..n {
                check_interrupt()?;
                match http::get(vip, CLIENT_TIMEOUT) {
                    Ok(body) => *tally.per_real.entry(real_of(&body)?).or_default() += 1,
                    Err(e) => tally.failures.push(format!("{e:#}")),
                }
            }
            Ok(tally)
        })??;
        let widest = tally.per_real.values().copied().max().unwrap_or(1).max(1);
        for i in 0..REALS {
            let name = real_name(i);
            let count = tally.count(&name);
            let bar = "#".repeat(usize::try_from(count * 40 / widest).unwrap_or(40));
            println!("  {name} ({}) {count:>4}  {bar}", self.real_ip(i));
        }
        let mut summary = format!("  answered {} of {n}:", tally.ok());
        for i in 0..REALS {
            let name = real_name(i);
            let _ = write!(summary, " {name}={}", tally.count(&name));
        }
        println!("{summary}");
        ensure!(
            tally.failures.is_empty(),
            "{} of {n} requests failed, the first: {}",
            tally.failures.len(),
            tally.failures[0]
        );
        Ok(tally)
    }

    /// Runs `lbadm ARGS` against the demo's agent and returns its output.
    fn lbadm(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.agent()?.lbadm(args);
        ensure!(code == 0, "lbadm {} failed ({code}): {err}", args.join(" "));
        Ok(out)
    }

    /// Shows `lbadm ARGS` as an operator would type it, then its output.
    fn lbadm_shown(&self, args: &[&str]) -> Result<()> {
        let out = self.lbadm(args)?;
        command(&format!("lbadm {}", args.join(" ")));
        print!("{out}");
        Ok(())
    }

    /// Waits until the agent's log holds `needle` `count` times; returns the last such line,
    /// without its colours.
    fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) -> Result<String> {
        let agent = self.agent()?;
        let mut found = String::new();
        wait_until(limit, &format!("{needle:?} in the agent's log"), || {
            let log = strip_ansi(&agent.log_text());
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
            if lines.len() >= count {
                found = lines[count - 1].trim().to_owned();
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// The last `n` lines of the agent's log, without colours.
    fn log_tail(&self, n: usize) -> String {
        let Some(agent) = &self.agent else {
            return "(the agent did not start)".to_owned();
        };
        let log = strip_ansi(&agent.log_text());
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the agent with SIGTERM (it detaches its program and removes its pins), stops the
    /// services, deletes the namespaces, and checks that nothing is left.
    fn clean_up(mut self) -> Result<()> {
        section("8. Clean up");
        self.long_lived.clear();
        let mut pins: Option<PathBuf> = None;
        if let Some(mut agent) = self.agent.take() {
            pins = Some(agent.pin_root.clone());
            let stopped = agent.stop();
            drop(agent);
            stopped.context("stopping lb-agent")?;
            println!(
                "lb-agent stopped (SIGTERM): it detached its XDP program and removed its pins."
            );
        }
        self.servers.clear();
        let namespaces = std::mem::take(&mut self.namespaces);
        drop(self);
        let left: Vec<String> = netns::list_namespaces()?
            .into_iter()
            .filter(|n| namespaces.contains(n))
            .collect();
        ensure!(left.is_empty(), "namespaces left behind: {left:?}");
        println!(
            "Removed the {} namespaces: {}.",
            namespaces.len(),
            namespaces.join(" ")
        );
        if let Some(pins) = pins {
            ensure!(
                !Path::new(&pins).exists(),
                "{} is left behind",
                pins.display()
            );
        }
        println!("Nothing is left behind: no namespace, no process, no pinned map.");
        Ok(())
    }
}

/// How many requests each real answered, and the failures.
#[derive(Default)]
struct Tally {
    per_real: BTreeMap<String, u64>,
    failures: Vec<String>,
}

impl Tally {
    fn count(&self, real: &str) -> u64 {
        self.per_real.get(real).copied().unwrap_or(0)
    }

    fn ok(&self) -> u64 {
        self.per_real.values().sum()
    }
}

/// The name of real `i`: `real1`, `real2`, ...
fn real_name(i: usize) -> String {
    format!("real{}", i + 1)
}

/// The real named by a reply `served by realN (ip)`.
fn real_of(body: &str) -> Result<String> {
    match body
        .strip_prefix("served by ")
        .and_then(|r| r.split_whitespace().next())
    {
        Some(real) => Ok(real.to_owned()),
        None => bail!("unexpected reply {body:?}"),
    }
}

fn describe_long_lived(conns: &[(String, KeepAlive)]) -> String {
    let mut per_real: BTreeMap<&str, usize> = BTreeMap::new();
    for (real, _) in conns {
        *per_real.entry(real).or_default() += 1;
    }
    per_real
        .iter()
        .map(|(real, n)| format!("{n} on {real}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls `f` every 50 ms until it returns true; fails after `limit` or on a signal.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        check_interrupt()?;
        if f()? {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Removes terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints a section header.
fn section(title: &str) {
    println!();
    println!(
        "== {title} {}",
        "=".repeat(74usize.saturating_sub(title.len()))
    );
    println!();
}

/// Prints a command as an operator would type it.
fn command(cmd: &str) {
    println!("$ {cmd}");
}
