//! Control-plane benchmarks: Maglev builds, a reload of many services, and the CPU used by
//! TCP health checks of many reals.

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use lb_tests::{lab::mac_of, netns::Netns};
use lb_userspace::{
    config::Config,
    dataplane::{Dataplane, LoadOptions},
    health::{
        CheckSpec, HealthChecker, Macs, Probe, ProbeContext, Timing,
        syn::{Interface, SynProber},
    },
    model::{DesiredState, Protocol, RealKey, ServiceKey},
    reconcile::desired::{Observed, desired_state},
    reconcile::plan::{Installed, Op},
    schedule::maglev::{Backend, BackendId, build},
};
use tokio::io::AsyncReadExt as _;

use super::{
    OthersWatch, Params, cpu_clock, median, progress, quietest,
    report::{ControlReport, HealthReport, MaglevRow, ReloadReport, ReloadRow},
    thread_cpu,
};

/// Maglev table size of every benchmark.
const M: u32 = 65_537;

/// Runs the control-plane benchmarks.
pub fn run(params: &Params) -> Result<ControlReport> {
    progress("  Maglev builds");
    let maglev = maglev(params)?;
    progress(&format!("  reload of {} services", params.reload_services));
    let reload = reload(params)?;
    progress(&format!(
        "  health checks of {} reals (about {} s)",
        params.health_reals,
        (params.health_settle + params.health_window).as_secs() + 2
    ));
    let health = health(params)?;
    Ok(ControlReport {
        maglev,
        reload,
        health,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn maglev(params: &Params) -> Result<Vec<MaglevRow>> {
    let mut rows = Vec::new();
    for &n in &params.maglev_reals {
        let backends: Vec<Backend> = (0..n)
            .map(|i| Backend {
                id: BackendId {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 8, 0, 1)) + i)),
                    port: 80,
                },
                weight: 1,
                index: i + 1,
            })
            .collect();
        // One build before timing (page faults of the allocator's first use).
        build(&backends, M)?;
        let mut times = Vec::with_capacity(params.maglev_reps);
        for _ in 0..params.maglev_reps {
            let t = Instant::now();
            let table = build(&backends, M)?;
            times.push(ms(t.elapsed()));
            ensure!(table.len() == M as usize);
        }
        rows.push(MaglevRow {
            reals: n,
            m: M,
            reps: params.maglev_reps,
            median_ms: median(&times),
            min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
        });
    }
    Ok(rows)
}

/// The services of the reload benchmark, and what a reload changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No service.
    Empty,
    /// `n` services of 3 reals.
    Base,
    /// Base plus one real in the first service.
    OneAdded,
    /// Base with the first real's weight changed in every service.
    AllWeights,
}

const REALS_PER_SERVICE: u32 = 3;

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 10, 0, 0)) + i + 1)
}

fn real(i: u32, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 20, 0, 0)) + i * 4 + j + 1)
}

fn config_yaml(services: u32, shape: Shape) -> String {
    let mut y = format!(
        "interface: eth0\nxdp_mode: driver\nlimits:\n  max_services: {services}\n  \
         max_reals: {}\n  max_table_size: {M}\nvirtual_servers:\n",
        (services * (REALS_PER_SERVICE + 1) + 2).next_power_of_two()
    );
    if shape == Shape::Empty {
        y += "  []\n";
        return y;
    }
    for i in 0..services {
        y += &format!(
            "  - vip: {}\n    port: 80\n    protocol: tcp\n    lb_algo: wrr\n    lb_kind: dr\n    \
             table_size: {M}\n    real_servers:\n",
            vip(i)
        );
        let extra = u32::from(shape == Shape::OneAdded && i == 0);
        for j in 0..REALS_PER_SERVICE + extra {
            let weight = if shape == Shape::AllWeights && j == 0 {
                2
            } else {
                1
            };
            y += &format!("      - ip: {}\n        weight: {weight}\n", real(i, j));
        }
    }
    y
}

/// Reload timings of one step.
struct Step {
    ops: usize,
    slots: usize,
    parse: f64,
    desired: f64,
    plan: f64,
    apply: f64,
}

/// The agent's reload path, timed: YAML -> Config -> desired state -> plan -> maps.
fn reload_step(
    yaml: &str,
    observed: &Observed,
    installed: &mut Installed,
    dp: &mut Dataplane,
) -> Result<Step> {
    let t = Instant::now();
    let config = Config::from_yaml(yaml, Path::new("bench.yaml"))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the generated configuration is invalid")?;
    let parse = ms(t.elapsed());
    let t = Instant::now();
    let desired: DesiredState = desired_state(&config, observed);
    let desired_t = ms(t.elapsed());
    let t = Instant::now();
    let (ops, next) = installed.plan(&desired)?;
    let plan = ms(t.elapsed());
    let t = Instant::now();
    dp.apply(&ops)?;
    let apply = ms(t.elapsed());
    *installed = next;
    let slots = ops
        .iter()
        .map(|op| match op {
            Op::WriteSlots { slots, .. } => slots.len(),
            _ => 0,
        })
        .sum();
    Ok(Step {
        ops: ops.len(),
        slots,
        parse,
        desired: desired_t,
        plan,
        apply,
    })
}

fn reload(params: &Params) -> Result<ReloadReport> {
    let n = params.reload_services;
    let base = config_yaml(n, Shape::Base);
    let limits = Config::from_yaml(&base, Path::new("bench.yaml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .limits;
    let mut dp = Dataplane::load(&LoadOptions {
        limits,
        ebpf_log_level: 0,
    })
    .context("loading the data plane")?;
    let mut installed = Installed::new(limits);
    let mut observed = Observed::default();
    for i in 0..n {
        for j in 0..=REALS_PER_SERVICE {
            let a = real(i, j);
            observed.macs.insert(IpAddr::V4(a), mac_of(a));
        }
    }
    // The reloads in order: (case, shape reloaded to, whether it is measured).
    let sequence = [
        ("initial: 0 -> all services", Shape::Base, true),
        ("nothing changed", Shape::Base, true),
        ("one real added to one service", Shape::OneAdded, true),
        ("(back)", Shape::Base, false),
        (
            "one weight changed in every service",
            Shape::AllWeights,
            true,
        ),
        ("(back)", Shape::Base, false),
        ("all services removed", Shape::Empty, true),
    ];
    let yamls: BTreeMap<u8, String> = [
        Shape::Empty,
        Shape::Base,
        Shape::OneAdded,
        Shape::AllWeights,
    ]
    .into_iter()
    .map(|s| (s as u8, config_yaml(n, s)))
    .collect();
    let mut steps: BTreeMap<&str, Vec<Step>> = BTreeMap::new();
    for _ in 0..params.reload_reps {
        for (case, shape, measured) in sequence {
            let step = reload_step(&yamls[&(shape as u8)], &observed, &mut installed, &mut dp)?;
            if measured {
                steps.entry(case).or_default().push(step);
            }
        }
    }
    let rows = sequence
        .iter()
        .filter(|(_, _, measured)| *measured)
        .map(|(case, _, _)| {
            let s = &steps[case];
            let med = |sel: fn(&Step) -> f64| median(&s.iter().map(sel).collect::<Vec<_>>());
            ReloadRow {
                case: (*case).into(),
                reps: s.len(),
                ops: s[0].ops,
                slots: s[0].slots,
                parse_ms: med(|x| x.parse),
                desired_ms: med(|x| x.desired),
                plan_ms: med(|x| x.plan),
                apply_ms: med(|x| x.apply),
                total_ms: med(|x| x.parse + x.desired + x.plan + x.apply),
            }
        })
        .collect();
    observed.macs.clear();
    // One service's table on its own, for comparison with the planning times.
    let backends: Vec<Backend> = (0..REALS_PER_SERVICE)
        .map(|j| Backend {
            id: BackendId {
                addr: IpAddr::V4(real(0, j)),
                port: 80,
            },
            weight: 1,
            index: j + 1,
        })
        .collect();
    let builds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let table = build(&backends, M);
            let took = ms(t.elapsed());
            drop(table);
            took
        })
        .collect();
    Ok(ReloadReport {
        build_ms_per_service: median(&builds),
        services: n,
        reals_per_service: REALS_PER_SERVICE,
        m: M,
        yaml_bytes: base.len(),
        rows,
    })
}

/// Port of the health-check listener.
const HC_PORT: u16 = 7000;

/// Address of the health-checked real `i`: distinct addresses of 127.0.0.0/8, all on `lo`.
fn hc_target(i: u32) -> SocketAddr {
    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 1)) + i);
    SocketAddr::from((a, HC_PORT))
}

/// The calling thread's CPU-time clock.
fn own_cpu_clock() -> libc::clockid_t {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self is always valid; the call writes into `id`.
    unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    id
}

/// User and system CPU seconds of thread `tid` of this process (scheduler-tick split).
fn task_times(tid: libc::pid_t) -> (f64, f64) {
    let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    let get = |field: usize| f.get(field - 3).copied().unwrap_or(0.0) / hz;
    (get(14), get(15))
}

fn sum_times(tids: &[libc::pid_t]) -> (f64, f64) {
    tids.iter()
        .map(|&t| task_times(t))
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// User and system CPU seconds of the calling thread.
fn own_times() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

fn sum_clocks(ids: &[libc::clockid_t]) -> Duration {
    ids.iter().map(|&id| cpu_clock(id)).sum()
}

/// A listener that accepts, reads until the peer's FIN and closes, on one thread with a
/// current-thread runtime (in the calling thread's namespace).
struct Listener {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    clock: libc::clockid_t,
}

impl Listener {
    fn start() -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("hc-listener".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let bind = || -> std::io::Result<tokio::net::TcpListener> {
                        let s = tokio::net::TcpSocket::new_v4()?;
                        s.set_reuseaddr(true)?;
                        s.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, HC_PORT)))?;
                        s.listen(4096)
                    };
                    let listener = match bind() {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::anyhow!("listen: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(own_cpu_clock()));
                    let accept = async {
                        loop {
                            if let Ok((mut s, _)) = listener.accept().await {
                                tokio::spawn(async move {
                                    let mut buf = [0u8; 64];
                                    while let Ok(n) = s.read(&mut buf).await {
                                        if n == 0 {
                                            break;
                                        }
                                    }
                                });
                            }
                        }
                    };
                    tokio::select! {
                        () = accept => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        let clock = ready_rx.recv().context("listener thread")??;
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
            clock,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn health(params: &Params) -> Result<HealthReport> {
    let (report, _) = quietest("health checks", params.attempts, || {
        let ns = Netns::new("bench-hc")?;
        let report = ns.try_enter(|| health_in_namespace(params))??;
        let noise = report.others_pct;
        Ok((report, noise))
    })?;
    Ok(report)
}

fn health_in_namespace(params: &Params) -> Result<HealthReport> {
    // The probes' SYNs are written onto `lo` from 127.0.0.1 to the reals' 127.1.x.x: frames
    // that enter with a local source and a loopback destination, which the kernel takes only
    // with these two (on a real interface neither is needed).
    for key in ["accept_local", "route_localnet"] {
        for dev in ["all", "lo"] {
            fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/{key}"), "1")
                .with_context(|| format!("setting {dev}.{key} in the bench namespace"))?;
        }
    }
    let listener = Listener::start()?;
    let reals = params.health_reals;
    let delay_loop = Duration::from_secs(1);
    let service = ServiceKey {
        vip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
        port: HC_PORT,
        proto: Protocol::Tcp,
    };
    let specs: Vec<CheckSpec> = (0..reals)
        .map(|i| {
            let target = hc_target(i);
            CheckSpec {
                key: (
                    service,
                    RealKey {
                        addr: target.ip(),
                        port: target.port(),
                    },
                    0,
                ),
                // The default tcp_check of an IPv4 real: half-open (here to the real's own
                // address: the listener is on loopback, there is no VIP to go through).
                probe: match target {
                    SocketAddr::V4(to) => Probe::Syn {
                        target: to,
                        real: *to.ip(),
                    },
                    SocketAddr::V6(_) => Probe::Tcp { target, bind: None },
                },
                // keepalived's defaults but for delay_loop.
                timing: Timing {
                    delay_loop,
                    retry: 1,
                    delay_before_retry: Duration::from_secs(1),
                    connect_timeout: Duration::from_secs(5),
                },
                alpha: false,
                warmup: None,
            }
        })
        .collect();

    // The agent's runtime: multi-threaded, one worker per core (2 here); its worker threads'
    // CPU clocks are collected as they start.
    let clocks: Arc<Mutex<Vec<(libc::clockid_t, libc::pid_t)>>> = Arc::default();
    let recorded = clocks.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("hc-checker")
        .on_thread_start(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            recorded
                .lock()
                .expect("clock list")
                .push((own_cpu_clock(), tid));
        })
        .build()?;
    let (checks, failures, window, checker_cpu, checker_split, listener_cpu, busy, others) = rt
        .block_on(async {
            // The agent's half-open prober, on this namespace's loopback (MACs are all zero
            // there).
            let lo = Interface {
                ifindex: 1,
                mac: [0; 6],
            };
            let macs = Macs::default();
            macs.write()
                .expect("macs")
                .extend((0..reals).map(|i| (hc_target(i).ip(), [0u8; 6])));
            let ctx = ProbeContext {
                syn: Some(SynProber::start(lo)?),
                macs,
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            // The agent's limit on probes in flight.
            let checker = HealthChecker::start(specs, BTreeMap::new(), tx, 1024, ctx);
            let transitions = tokio::spawn(async move {
                let mut n = 0u64;
                while rx.recv().await.is_some() {
                    n += 1;
                }
                n
            });
            tokio::time::sleep(params.health_settle).await;
            let totals = |c: &HealthChecker| {
                c.status()
                    .values()
                    .fold((0u64, 0u64), |(a, b), s| (a + s.checks, b + s.failures))
            };
            let threads = clocks.lock().expect("clock list").clone();
            let ids: Vec<libc::clockid_t> = threads.iter().map(|t| t.0).collect();
            let tids: Vec<libc::pid_t> = threads.iter().map(|t| t.1).collect();
            let us0 = sum_times(&tids);
            let (c0, f0) = totals(&checker);
            let cpu0 = sum_clocks(&ids);
            let l0 = cpu_clock(listener.clock);
            let watch = OthersWatch::start(&[]);
            let t0 = Instant::now();
            tokio::time::sleep(params.health_window).await;
            let window = t0.elapsed();
            let cpu1 = sum_clocks(&ids);
            let us1 = sum_times(&tids);
            let l1 = cpu_clock(listener.clock);
            let (busy, others) = watch.split();
            let (c1, f1) = totals(&checker);
            drop(checker);
            transitions.abort();
            let split = (us1.0 - us0.0, us1.1 - us0.1);
            anyhow::Ok((
                c1 - c0,
                f1 - f0,
                window,
                cpu1 - cpu0,
                split,
                l1 - l0,
                busy,
                others,
            ))
        })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    let secs = window.as_secs_f64();
    let probes_per_s = checks as f64 / secs;
    ensure!(checks > 0, "no health check completed in the window");

    // The floor: the probe's socket calls in a plain blocking loop on one thread.
    let n = (reals * 2).clamp(200, 20_000);
    let t0 = thread_cpu();
    let split0 = own_times();
    for i in 0..n {
        let mut s = TcpStream::connect(hc_target(i % reals)).context("floor probe connect")?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut buf = [0u8; 64];
        while s.read(&mut buf)? > 0 {}
    }
    let floor_us = (thread_cpu() - t0).as_secs_f64() * 1e6 / f64::from(n);
    let split1 = own_times();
    let sys_share = |(user, sys): (f64, f64)| sys / (user + sys) * 100.0;
    drop(listener);

    let checker_us = checker_cpu.as_secs_f64() * 1e6 / checks as f64;
    Ok(HealthReport {
        reals,
        delay_loop_s: delay_loop.as_secs_f64(),
        window_s: secs,
        probes_per_s,
        failures,
        checker_cpu_pct: checker_cpu.as_secs_f64() / secs * 100.0,
        listener_cpu_pct: listener_cpu.as_secs_f64() / secs * 100.0,
        machine_cpu_pct: busy / secs * 100.0,
        others_pct: others / secs / thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
            * 100.0,
        checker_us_per_probe: checker_us,
        checker_kernel_pct: sys_share(checker_split),
        floor_kernel_pct: sys_share((split1.0 - split0.0, split1.1 - split0.1)),
        floor_us_per_probe: floor_us,
        floor_cpu_pct: floor_us * probes_per_s / 1e6 * 100.0,
    })
}
