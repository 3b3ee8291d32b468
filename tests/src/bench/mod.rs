//! The benchmark harness behind `cargo xtask bench` (binary `lb-bench`).
//!
//! Five parts, each producing numbers only from what it measures in this run:
//! - [`dataplane`]: the real XDP program on realistic maps through `BPF_PROG_TEST_RUN`, next to
//!   an empty program and a MAC-swapping floor measured the same way, interleaved; and how the
//!   hit and SYN paths scale with services, reals and connection-table fill.
//! - [`sync`]: director sync: the new-flow paths with sync on beside sync off, and the rate at
//!   which one agent's confirmed flows reach a peer's table over loopback UDP.
//! - [`control`]: Maglev builds, a reload of 1000 services (parse, plan, map writes), and the
//!   CPU used by TCP health checks of 10,000 reals.
//! - [`e2e`]: a client, a director and a real server in network namespaces: the same load sent
//!   directly to the real, through our VIP, and through HAProxy.
//! - [`report`]: the JSON results and the generated `BENCHMARKS.md`.
//!
//! `Options::smoke` runs every case with few iterations and tiny sizes, and [`check_complete`]
//! verifies that every case produced a number; the test suite runs it so the harness cannot rot.
//!
//! This module is compiled into the `lb-bench` binary and into the smoke test (by path), so it
//! uses only the `lb_tests` library and its own files.

pub mod control;
pub mod dataplane;
pub mod e2e;
pub mod report;
pub mod sync;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use lb_userspace::model::Limits;

use self::report::{Machine, Meta, Report};

/// Which parts to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// Data plane cases.
    pub dataplane: bool,
    /// Scaling of the hit and SYN paths.
    pub scaling: bool,
    /// Director sync.
    pub sync: bool,
    /// Maglev, reload and health checks.
    pub control: bool,
    /// End to end in namespaces.
    pub e2e: bool,
}

impl Parts {
    /// Every part.
    pub const ALL: Parts = Parts {
        dataplane: true,
        scaling: true,
        sync: true,
        control: true,
        e2e: true,
    };

    /// Parses a comma-separated list (`dataplane,scaling,sync,control,e2e`).
    pub fn parse(list: &str) -> Result<Parts> {
        let mut p = Parts {
            dataplane: false,
            scaling: false,
            sync: false,
            control: false,
            e2e: false,
        };
        for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match part {
                "dataplane" => p.dataplane = true,
                "scaling" => p.scaling = true,
                "sync" => p.sync = true,
                "control" => p.control = true,
                "e2e" => p.e2e = true,
                other => bail!("unknown part {other:?} (dataplane, scaling, sync, control, e2e)"),
            }
        }
        Ok(p)
    }
}

/// What to run and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// Few iterations and tiny sizes: checks that every case runs, not how fast.
    pub smoke: bool,
    /// The command recorded as the source of every figure.
    pub command: String,
    /// The eBPF object with the reference programs (`xdp_empty`, `xdp_swap_macs`).
    pub bench_ref: PathBuf,
    /// Parts to run.
    pub parts: Parts,
}

impl Options {
    /// Defaults: full run of every part, the reference object where `cargo xtask build-ebpf`
    /// puts it.
    pub fn new(smoke: bool, command: impl Into<String>) -> Self {
        Self {
            smoke,
            command: command.into(),
            bench_ref: default_bench_ref(),
            parts: Parts::ALL,
        }
    }
}

/// `target/bpfel-unknown-none/release/bench-ref` in this workspace, or `LB_BENCH_REF_OBJECT`.
pub fn default_bench_ref() -> PathBuf {
    match std::env::var_os("LB_BENCH_REF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/bpfel-unknown-none/release/bench-ref"
        )),
    }
}

/// Sizes and iteration counts of one run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Map sizes of the data-plane cases (and the base of the scaling variants).
    pub limits: Limits,
    /// Repetitions per `BPF_PROG_TEST_RUN` call.
    pub repeat: u32,
    /// Interleaved runs per case (the median is reported).
    pub runs: usize,
    /// Attempts at a measurement disturbed by other processes (the quietest is kept).
    pub attempts: usize,
    /// Loaded copies of the program and maps for the basic cases.
    pub copies: usize,
    /// Loaded copies of each scaling variant.
    pub scale_copies: usize,
    /// Services in the service-scaling dimension.
    pub scale_services: Vec<u32>,
    /// Reals in the real-scaling dimension.
    pub scale_reals: Vec<u32>,
    /// Connection-table entries in the fill-scaling dimension.
    pub scale_conn_entries: u32,
    /// Flows confirmed with sync on, and as many with it off, one ACK each.
    pub sync_confirm_flows: usize,
    /// Flows per turn of each side while confirming.
    pub sync_confirm_chunk: usize,
    /// Flows sent from one lab to another to measure the sync rate.
    pub sync_rate_flows: usize,
    /// Flows per drain of the ring while measuring the rate (at most the ring's 16,384).
    pub sync_rate_chunk: usize,
    /// Reals of the Maglev builds.
    pub maglev_reals: Vec<u32>,
    /// Builds per Maglev size.
    pub maglev_reps: usize,
    /// Services of the reload benchmark.
    pub reload_services: u32,
    /// Repetitions of each reload.
    pub reload_reps: usize,
    /// Reals under health checks.
    pub health_reals: u32,
    /// Time allowed for the checks to settle before measuring.
    pub health_settle: Duration,
    /// Measurement window of the health checks.
    pub health_window: Duration,
    /// Rounds of the end-to-end scenarios (each round runs a, b, c once).
    pub e2e_rounds: usize,
    /// Seconds per end-to-end run.
    pub e2e_secs: f64,
    /// Client threads opening short connections.
    pub e2e_threads: usize,
}

impl Params {
    /// The full benchmark, or the smoke version.
    pub fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                // Small maps: the smoke test runs beside the other tests.
                limits: Limits {
                    max_services: 64,
                    max_reals: 256,
                    max_table_size: 65_537,
                    conn_entries: 4096,
                    persist_entries: 1024,
                    conn_entries6: 1024,
                    persist_entries6: 256,
                },
                repeat: 1000,
                runs: 4,
                attempts: 1,
                copies: 2,
                scale_copies: 2,
                scale_services: vec![1, 4, 16],
                scale_reals: vec![2, 10, 50],
                scale_conn_entries: 4096,
                sync_confirm_flows: 400,
                sync_confirm_chunk: 100,
                sync_rate_flows: 2000,
                sync_rate_chunk: 500,
                maglev_reals: vec![10, 100, 1000],
                maglev_reps: 1,
                reload_services: 10,
                reload_reps: 1,
                health_reals: 100,
                health_settle: Duration::from_millis(1200),
                health_window: Duration::from_millis(1000),
                e2e_rounds: 1,
                e2e_secs: 0.5,
                e2e_threads: 4,
            }
        } else {
            Self {
                limits: Limits::default(),
                repeat: 1_000_000,
                runs: 15,
                attempts: 3,
                copies: 5,
                scale_copies: 3,
                scale_services: vec![1, 100, 1000],
                scale_reals: vec![2, 100, 10_000],
                scale_conn_entries: 1 << 20,
                sync_confirm_flows: 20_000,
                sync_confirm_chunk: 1000,
                sync_rate_flows: 200_000,
                sync_rate_chunk: 4096,
                maglev_reals: vec![10, 100, 1000],
                maglev_reps: 21,
                reload_services: 1000,
                reload_reps: 3,
                health_reals: 10_000,
                health_settle: Duration::from_secs(3),
                health_window: Duration::from_secs(6),
                e2e_rounds: 3,
                e2e_secs: 5.0,
                e2e_threads: 16,
            }
        }
    }
}

/// Runs the selected parts and returns the report.
pub fn run(opts: &Options) -> Result<Report> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("lb-bench needs root: it loads XDP programs and creates network namespaces");
    }
    lb_userspace::dataplane::ensure_bpffs().context("mounting bpffs")?;
    // Namespaces left by a benchmark or test process that was killed.
    lb_tests::netns::remove_stale_namespaces().context("removing stale namespaces")?;
    let started = Instant::now();
    let params = Params::new(opts.smoke);
    let mut report = Report {
        meta: Meta {
            command: opts.command.clone(),
            date: utc_now(),
            machine: machine()?,
            smoke: opts.smoke,
            elapsed_s: 0.0,
            load_avg: (load_avg(), f64::NAN),
            busy_before: Vec::new(),
        },
        dataplane: None,
        scaling: None,
        sync: None,
        control: None,
        e2e: None,
    };
    // Other work on the machine skews every figure: before each part, wait (a while) for the
    // machine to be idle, and record how busy it was.
    let mut quiet = |part: &str| -> Result<()> {
        let busy = if opts.smoke {
            busy_pct(Duration::from_millis(100))?
        } else {
            wait_quiet(part)?
        };
        report.meta.busy_before.push((part.to_owned(), busy));
        Ok(())
    };
    if opts.parts.dataplane {
        quiet("dataplane")?;
        progress("data plane: BPF_PROG_TEST_RUN cases");
        report.dataplane = Some(dataplane::cases(&params, &opts.bench_ref)?);
    }
    if opts.parts.scaling {
        quiet("scaling")?;
        progress("data plane: scaling");
        report.scaling = Some(dataplane::scaling(&params, &opts.bench_ref)?);
    }
    if opts.parts.sync {
        quiet("sync")?;
        progress("director sync");
        report.sync = Some(sync::run(&params, &opts.bench_ref)?);
    }
    if opts.parts.control {
        quiet("control")?;
        progress("control plane");
        report.control = Some(control::run(&params)?);
    }
    if opts.parts.e2e {
        quiet("e2e")?;
        progress("end to end in network namespaces");
        report.e2e = Some(e2e::run(&params)?);
    }
    report.meta.elapsed_s = started.elapsed().as_secs_f64();
    report.meta.load_avg.1 = load_avg();
    Ok(report)
}

/// Other processes' CPU use above which a measurement is repeated, % of all CPUs.
pub const NOISY_PCT: f64 = 5.0;

/// Watches how much CPU the machine spends on other work than this benchmark: whole-machine
/// busy time minus this process, the processes in `ours` (HAProxy) and the kernel threads
/// (softirq work may run in ksoftirqd). Short-lived processes of others count too: they are
/// in the machine's total even when they have exited.
pub struct OthersWatch {
    busy0: f64,
    ours0: f64,
    ours: Vec<u32>,
    started: Instant,
}

impl OthersWatch {
    /// Starts watching; `ours` are processes of this benchmark besides itself.
    pub fn start(ours: &[u32]) -> Self {
        Self {
            busy0: machine_cpu().map_or(0.0, |m| m.0),
            ours0: ours_cpu(ours),
            ours: ours.to_vec(),
            started: Instant::now(),
        }
    }

    /// CPU seconds used since the start by the benchmark (this process, `ours`, kernel
    /// threads) and by everything else.
    pub fn split(&self) -> (f64, f64) {
        let busy = machine_cpu().map_or(0.0, |m| m.0) - self.busy0;
        let ours = ours_cpu(&self.ours) - self.ours0;
        (ours, (busy - ours).max(0.0))
    }

    /// CPU other work used since the start, % of all CPUs.
    pub fn pct(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        self.split().1 / self.started.elapsed().as_secs_f64().max(1e-3) / cores * 100.0
    }
}

/// Runs a measurement that reports how noisy the machine was meanwhile (in %: the CPU share of
/// other processes, or for BPF_PROG_TEST_RUN measurements also the spread of the empty
/// program's runs) up to `attempts` times, until that is at most [`NOISY_PCT`]; returns the
/// quietest attempt.
pub fn quietest<T>(
    what: &str,
    attempts: usize,
    mut run: impl FnMut() -> Result<(T, f64)>,
) -> Result<(T, f64)> {
    let mut best: Option<(T, f64)> = None;
    for attempt in 1..=attempts.max(1) {
        let (value, noise) = run()?;
        if best.as_ref().is_none_or(|b| noise < b.1) {
            best = Some((value, noise));
        }
        if noise <= NOISY_PCT {
            break;
        }
        if attempt < attempts {
            progress(&format!(
                "{what}: noise {noise:.0}% (other processes' CPU share, or the spread of the \
                 empty program's runs); measuring again"
            ));
            wait_quiet(what)?;
        }
    }
    Ok(best.expect("at least one attempt"))
}

/// Busy share of all CPUs over `window`, in %.
pub fn busy_pct(window: Duration) -> Result<f64> {
    let (b0, t0) = machine_cpu()?;
    std::thread::sleep(window);
    let (b1, t1) = machine_cpu()?;
    Ok(if t1 > t0 {
        (b1 - b0) / (t1 - t0) * 100.0
    } else {
        0.0
    })
}

/// Waits up to a minute until the machine is idle (under 10% busy over one second); returns
/// the last busy share measured.
fn wait_quiet(part: &str) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut said = false;
    loop {
        let busy = busy_pct(Duration::from_secs(1))?;
        if busy < 10.0 || Instant::now() >= deadline {
            if busy >= 10.0 {
                progress(&format!(
                    "the machine is still {busy:.0}% busy with other work; measuring {part} \
                     anyway (recorded in the report)"
                ));
            }
            return Ok(busy);
        }
        if !said {
            progress(&format!(
                "waiting for the machine to be idle ({busy:.0}% busy with other work)"
            ));
            said = true;
        }
    }
}

/// Checks that every part that ran produced every case with a finite number; returns the
/// problems found.
pub fn check_complete(report: &Report) -> Vec<String> {
    report::missing(report)
}

/// Prints a progress line on stderr.
pub fn progress(what: &str) {
    eprintln!("lb-bench: {what}");
}

/// Median of `xs` (the mean of the two middle values for an even count); NaN if empty.
/// The interquartile range of `xs` relative to their median, in %: how much repeated runs of
/// the same thing disagree. The empty program's figure is the benchmark's gauge of a noisy
/// machine (a virtual machine's neighbours are invisible in its own CPU accounting).
pub fn iqr_pct(xs: &[f64]) -> f64 {
    if xs.len() < 4 {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.75) - at(0.25)) / median(&v) * 100.0
}

/// The median of `xs` (NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Spread of positive values: max / min - 1 (0.1 = 10 %).
pub fn spread(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    max / min - 1.0
}

/// CPU time consumed so far by the calling thread.
pub fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Reads a CPU-time clock.
pub fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Whole-machine CPU time from `/proc/stat`: (busy, total) in seconds, where busy is
/// everything but idle and iowait.
pub fn machine_cpu() -> Result<(f64, f64)> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = (0..8).map(get).sum();
    let idle = get(3) + get(4);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(((total - idle) as f64 / hz, total as f64 / hz))
}

/// CPU seconds (user + system, with exited threads) so far of this process, of the
/// processes `ours`, and of all kernel threads.
pub fn ours_cpu(ours: &[u32]) -> f64 {
    let me = std::process::id();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3; flags is field 9, utime 14, stime 15.
        let get = |field: usize| f.get(field - 3).and_then(|x| x.parse::<u64>().ok());
        const PF_KTHREAD: u64 = 0x0020_0000;
        let kthread = get(9).unwrap_or(0) & PF_KTHREAD != 0;
        if pid == me || ours.contains(&pid) || kthread {
            total += get(14).unwrap_or(0) + get(15).unwrap_or(0);
        }
    }
    total as f64 / hz
}

/// CPU time (user + system) of process `pid` from `/proc/<pid>/stat`, in seconds.
pub fn process_cpu(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15; children 16, 17.
    let get =
        |field: usize| -> f64 { f.get(field - 3).and_then(|x| x.parse().ok()).unwrap_or(0.0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((get(14) + get(15) + get(16) + get(17)) / hz)
}

/// The 1-minute load average.
pub fn load_avg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The machine: cores, CPU model, kernel, memory.
pub fn machine() -> Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let hypervisor = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // SAFETY: uname writes into the zeroed struct.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid utsname.
    unsafe { libc::uname(&mut uts) };
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let kernel = format!("{} {}", field(&uts.sysname), field(&uts.release));
    let arch = field(&uts.machine);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    Ok(Machine {
        cores,
        cpu_model,
        arch,
        kernel,
        memory_gib: mem_kib / (1024.0 * 1024.0),
        virtual_machine: hypervisor,
    })
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}
