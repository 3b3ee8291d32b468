//! The results (serialized as JSON by `lb-bench`) and `BENCHMARKS.md`, rendered from them.
//!
//! Every figure of the Markdown comes from the JSON of one run; every table is followed by the
//! command, date and machine of that run. Target verdicts and the explanations of misses are
//! computed here from the same numbers.

use super::iqr_pct;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Everything one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Where and how the numbers were made.
    pub meta: Meta,
    /// Data-plane cases.
    pub dataplane: Option<DataplaneReport>,
    /// Scaling of the hit and SYN paths.
    pub scaling: Option<ScalingReport>,
    /// Director sync: its cost on new flows, and its rate.
    pub sync: Option<SyncReport>,
    /// Maglev, reload, health checks.
    pub control: Option<ControlReport>,
    /// End to end in namespaces.
    pub e2e: Option<E2eReport>,
}

/// Provenance of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// The command that produced it.
    pub command: String,
    /// When (UTC).
    pub date: String,
    /// On what.
    pub machine: Machine,
    /// Smoke mode (few iterations, tiny sizes: not figures to quote).
    pub smoke: bool,
    /// Wall time of the whole run.
    pub elapsed_s: f64,
    /// 1-minute load average when the run started and when it ended (other work on the
    /// machine shows here).
    pub load_avg: (f64, f64),
    /// Busy share of all CPUs (%, over one second) just before each part ran.
    pub busy_before: Vec<(String, f64)>,
}

/// The machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// Architecture.
    pub arch: String,
    /// Kernel name and release.
    pub kernel: String,
    /// Memory.
    pub memory_gib: f64,
    /// The CPU reports a hypervisor.
    pub virtual_machine: bool,
}

/// One subject's runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// ns per repetition of each run (thread CPU time of the call / repetitions).
    pub runs_ns: Vec<f64>,
    /// Median of `runs_ns`.
    pub median_ns: f64,
    /// Median of the kernel's own per-repetition averages (whole ns).
    pub kernel_median_ns: f64,
    /// Median of each loaded copy's runs.
    pub copy_medians_ns: Vec<f64>,
}

/// The data-plane cases.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataplaneReport {
    /// Repetitions per call.
    pub repeat: u32,
    /// Interleaved runs per case.
    pub runs: usize,
    /// Independently loaded copies of each program and its maps the runs are spread over.
    pub copies: usize,
    /// CPU other processes used during the runs, % of all CPUs.
    pub others_pct: f64,
    /// The maps.
    pub maps: String,
    /// The empty program.
    pub empty: Sample,
    /// The MAC-swap floor.
    pub floor: Sample,
    /// The cases.
    pub cases: Vec<DpCase>,
}

/// One data-plane case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DpCase {
    /// Short name.
    pub name: String,
    /// What the frame is.
    pub what: String,
    /// The program's action.
    pub action: String,
    /// Its runs.
    pub sample: Sample,
    /// Median minus the empty program's median.
    pub net_ns: f64,
    /// Median / the floor's median.
    pub x_floor: f64,
    /// Net / the floor's net.
    pub x_floor_net: f64,
}

/// Scaling dimensions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalingReport {
    /// Repetitions per call.
    pub repeat: u32,
    /// Interleaved runs.
    pub runs: usize,
    /// Loaded copies of each variant.
    pub copies: usize,
    /// Services, reals, connection table.
    pub dims: Vec<ScalingDim>,
}

/// One dimension.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalingDim {
    /// Name.
    pub name: String,
    /// How the variants are set up.
    pub setup: String,
    /// The empty program in the same run.
    pub empty_ns: f64,
    /// The spread of the empty program's runs, % (interquartile range / median).
    pub empty_iqr_pct: f64,
    /// CPU other processes used during the runs, % of all CPUs.
    pub others_pct: f64,
    /// max/min - 1 of the hit path's net figures.
    pub hit_spread: f64,
    /// max/min - 1 of the SYN path's net figures.
    pub syn_spread: f64,
    /// The variants.
    pub variants: Vec<ScalingVariant>,
}

/// One variant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalingVariant {
    /// Label.
    pub label: String,
    /// Hit path.
    pub hit: Sample,
    /// SYN path.
    pub syn: Sample,
    /// Hit path net of the empty program.
    pub hit_net_ns: f64,
    /// SYN path net of the empty program.
    pub syn_net_ns: f64,
}

/// Director sync: what it costs the data plane's new flows, and the rate at which one agent's
/// confirmed flows reach a peer's tables.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncReport {
    /// The SYN paths with sync off and on (`BPF_PROG_TEST_RUN`'s repetitions).
    pub syn: SyncSynReport,
    /// The confirming packet with sync off and on (each flow's once).
    pub confirm: ConfirmReport,
    /// The sync channel's rate: every attempt, the one kept (nothing lost) last.
    pub rate: Vec<SyncRate>,
}

/// The SYN paths with sync off and on, measured like the data-plane cases.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncSynReport {
    /// Repetitions per call.
    pub repeat: u32,
    /// Interleaved runs per case.
    pub runs: usize,
    /// Loaded copies of the program and its maps, each measured with sync off and on.
    pub copies: usize,
    /// CPU other processes used during the runs, % of all CPUs.
    pub others_pct: f64,
    /// The empty program in the same run.
    pub empty: Sample,
    /// `syn` and `syn_wlc`, each off and on.
    pub pairs: Vec<SyncPair>,
}

/// One frame with sync off and on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncPair {
    /// The data-plane case's name.
    pub name: String,
    /// What the frame is.
    pub what: String,
    /// Sync off.
    pub off: Sample,
    /// Sync on.
    pub on: Sample,
    /// On / off, medians.
    pub ratio: f64,
    /// On / off, both net of the empty program.
    pub net_ratio: f64,
}

/// The packet that confirms a flow (the ACK completing a handshake), which only its first run
/// does: every flow's SYN and ACK run once, some flows with sync off and as many others with it
/// on, the kernel's duration of each run kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfirmReport {
    /// Flows confirmed with sync on, and as many with it off.
    pub flows: usize,
    /// Flows per chunk (the sides take turns chunk by chunk).
    pub chunk: usize,
    /// Loaded copies the chunks are spread over (each runs both sides' turns of its chunks).
    pub copies: usize,
    /// The empty program run once per call, median kernel ns.
    pub empty_ns: f64,
    /// Each flow's SYN with sync off, median kernel ns.
    pub syn_off_ns: f64,
    /// Each flow's SYN with sync on, median kernel ns.
    pub syn_on_ns: f64,
    /// Each flow's confirming ACK with sync off, median kernel ns.
    pub ack_off_ns: f64,
    /// Each flow's confirming ACK with sync on, median kernel ns.
    pub ack_on_ns: f64,
    /// The ACK's on / off.
    pub ratio: f64,
    /// The ACK's on / off, both net of the empty program.
    pub net_ratio: f64,
    /// The SYN's on / off.
    pub syn_ratio: f64,
    /// The ACK's on / off medians of each chunk pair.
    pub chunk_ratios: Vec<f64>,
    /// Announcements drained with sync on (one per confirmed flow is required).
    pub events_on: u64,
    /// Announcements drained with sync off (none is required).
    pub events_off: u64,
    /// CPU other processes used meanwhile, % of all CPUs.
    pub others_pct: f64,
}

/// One attempt at the sync rate: confirmed flows from one lab's ring to another lab's table
/// over loopback UDP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncRate {
    /// Flows sent.
    pub flows: usize,
    /// Flows per drain of the ring.
    pub chunk: usize,
    /// Datagrams the sender lets be on the way (sent, not yet stored) at most; `None`: as
    /// fast as it can.
    pub window: Option<usize>,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Their bytes (UDP payload).
    pub bytes: u64,
    /// Datagram bytes per flow.
    pub bytes_per_flow: f64,
    /// With the IPv4 and UDP headers.
    pub wire_bytes_per_flow: f64,
    /// Time from the drains to the last store, summed over the chunks.
    pub secs: f64,
    /// Flows stored on the receiver (on their real) per second, end to end.
    pub flows_per_s: f64,
    /// CPU of the sending thread per flow sent, us (drain, translate, encode, send; loopback
    /// delivery runs in it).
    pub sender_us_per_flow: f64,
    /// CPU of the receiving thread per flow received, us (receive, check, translate, store).
    pub receiver_us_per_flow: f64,
    /// The receiver's socket buffer, bytes (`net.core.rmem_default`: the channel sets none).
    pub rcvbuf_bytes: usize,
    /// Datagrams that never reached the receiver's checks.
    pub dropped_datagrams: u64,
    /// Flows missing afterwards from the receiver's table, or on another real.
    pub lost: u64,
    /// CPU other processes used meanwhile, % of all CPUs.
    pub others_pct: f64,
}

/// Control-plane figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlReport {
    /// Maglev builds.
    pub maglev: Vec<MaglevRow>,
    /// Reloads.
    pub reload: ReloadReport,
    /// Health checks.
    pub health: HealthReport,
}

/// Maglev build time for one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MaglevRow {
    /// Reals (weight 1 each).
    pub reals: u32,
    /// Table size.
    pub m: u32,
    /// Builds.
    pub reps: usize,
    /// Median.
    pub median_ms: f64,
    /// Fastest.
    pub min_ms: f64,
}

/// Reloads of a configuration with many services.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Services.
    pub services: u32,
    /// Reals per service.
    pub reals_per_service: u32,
    /// Table size.
    pub m: u32,
    /// Size of the YAML file.
    pub yaml_bytes: usize,
    /// One service's Maglev build (its reals, M), median ms.
    pub build_ms_per_service: f64,
    /// The reloads.
    pub rows: Vec<ReloadRow>,
}

/// One kind of reload (medians over its repetitions).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadRow {
    /// What changes.
    pub case: String,
    /// Repetitions.
    pub reps: usize,
    /// Map updates planned.
    pub ops: usize,
    /// Lookup slots written.
    pub slots: usize,
    /// YAML parse and validation.
    pub parse_ms: f64,
    /// Desired state from the configuration.
    pub desired_ms: f64,
    /// Planning (Maglev builds and diff).
    pub plan_ms: f64,
    /// Writing the maps.
    pub apply_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// Health checks of many reals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthReport {
    /// Reals checked (`tcp_check`).
    pub reals: u32,
    /// delay_loop.
    pub delay_loop_s: f64,
    /// Measurement window.
    pub window_s: f64,
    /// Probes completed per second in the window.
    pub probes_per_s: f64,
    /// Failed probes in the window.
    pub failures: u64,
    /// CPU of the checker's runtime threads, % of one core.
    pub checker_cpu_pct: f64,
    /// CPU of the listeners' thread, % of one core.
    pub listener_cpu_pct: f64,
    /// This process and the kernel threads (checker, listener, softirq), % of one core.
    pub machine_cpu_pct: f64,
    /// CPU other processes used during the window, % of all CPUs.
    pub others_pct: f64,
    /// Checker CPU per probe.
    pub checker_us_per_probe: f64,
    /// Share of the checker's CPU spent in the kernel (system time), %.
    pub checker_kernel_pct: f64,
    /// Share of the floor loop's CPU spent in the kernel, %.
    pub floor_kernel_pct: f64,
    /// CPU per probe of a minimal blocking loop doing the same socket calls.
    pub floor_us_per_probe: f64,
    /// That floor at the checker's probe rate, % of one core.
    pub floor_cpu_pct: f64,
}

/// End-to-end scenarios.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct E2eReport {
    /// Rounds (each runs every scenario once, in turn).
    pub rounds: usize,
    /// Seconds per run.
    pub secs: f64,
    /// Client threads of the short-connection load.
    pub threads: usize,
    /// Request size.
    pub request_bytes: usize,
    /// Reply size.
    pub reply_bytes: usize,
    /// The scenarios, (a) first.
    pub scenarios: Vec<Scenario>,
    /// Scenarios that could not run, and why.
    pub skipped: Vec<String>,
}

/// One scenario (medians over rounds).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    /// "a", "b" or "c".
    pub key: String,
    /// Description.
    pub name: String,
    /// Completed short connections per second, each round.
    pub conns_per_s_runs: Vec<f64>,
    /// Median.
    pub conns_per_s: f64,
    /// Failed connections over all rounds.
    pub failures: u64,
    /// Whole-machine busy CPU per completed connection, µs (median).
    pub cpu_us_per_conn: f64,
    /// CPU of the benchmark's processes and the kernel threads during the short-connection
    /// load, % of all cores (median).
    pub busy_pct: f64,
    /// CPU other work used meanwhile, % of all cores (median).
    pub others_pct: f64,
    /// CPU of the HAProxy process per connection, µs (median; HAProxy only).
    pub proxy_us_per_conn: Option<f64>,
    /// Bulk stream throughput, Gbit/s, each round.
    pub gbps_runs: Vec<f64>,
    /// Median.
    pub gbps: f64,
    /// Whole-machine busy CPU per GB of the bulk stream, seconds (median).
    pub cpu_s_per_gb: f64,
    /// Whole-machine busy CPU during the bulk stream, other processes excluded, % of all
    /// cores (median).
    pub bulk_busy_pct: f64,
}

fn f(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "n/a".into()
    }
}

/// The problems of an incomplete report: a part that ran without one of its cases, or a case
/// without a finite number.
pub fn missing(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let mut nan = Vec::new();
    let mut num = |what: String, x: f64| {
        if !x.is_finite() {
            nan.push(format!("{what}: no number ({x})"));
        }
    };
    if let Some(d) = &r.dataplane {
        num("empty".into(), d.empty.median_ns);
        num("floor".into(), d.floor.median_ns);
        for c in &d.cases {
            num(format!("data plane {}", c.name), c.net_ns);
            num(format!("data plane {} x floor", c.name), c.x_floor_net);
        }
        for name in [
            "hit", "syn", "udp", "pass", "fragment", "icmp", "hit6", "syn6", "syn_wlc",
        ] {
            if !d.cases.iter().any(|c| c.name == name) {
                out.push(format!("data plane case {name} missing"));
            }
        }
    }
    if let Some(s) = &r.scaling {
        if s.dims.len() != 3 {
            out.push(format!("{} scaling dimensions, not 3", s.dims.len()));
        }
        for d in &s.dims {
            if d.variants.len() != 3 {
                out.push(format!("scaling {}: {} variants", d.name, d.variants.len()));
            }
            for v in &d.variants {
                num(format!("scaling {} {} hit", d.name, v.label), v.hit_net_ns);
                num(format!("scaling {} {} syn", d.name, v.label), v.syn_net_ns);
            }
        }
    }
    if let Some(y) = &r.sync {
        num("sync: empty".into(), y.syn.empty.median_ns);
        for name in ["syn", "syn_wlc"] {
            match y.syn.pairs.iter().find(|p| p.name == name) {
                Some(p) => {
                    num(format!("sync: {name} on/off"), p.ratio);
                    num(format!("sync: {name} on/off, net"), p.net_ratio);
                }
                None => out.push(format!("sync: {name} sync on beside off missing")),
            }
        }
        let c = &y.confirm;
        num("sync: confirming ACK, empty".into(), c.empty_ns);
        num("sync: confirming ACK on/off".into(), c.ratio);
        num("sync: confirming ACK on/off, net".into(), c.net_ratio);
        num("sync: first SYN on/off".into(), c.syn_ratio);
        if c.flows == 0 || c.events_on != c.flows as u64 || c.events_off != 0 {
            out.push(format!(
                "sync: {} flows confirmed, {} announced with sync on, {} with it off",
                c.flows, c.events_on, c.events_off
            ));
        }
        match y.rate.last() {
            Some(rate) => {
                num("sync: flows/s".into(), rate.flows_per_s);
                num("sync: bytes per flow".into(), rate.bytes_per_flow);
                num("sync: sender CPU per flow".into(), rate.sender_us_per_flow);
                num(
                    "sync: receiver CPU per flow".into(),
                    rate.receiver_us_per_flow,
                );
                if rate.flows == 0 || rate.lost != 0 {
                    out.push(format!(
                        "sync: {} of {} flows lost in the kept attempt",
                        rate.lost, rate.flows
                    ));
                }
            }
            None => out.push("sync: no rate".into()),
        }
    }
    if let Some(c) = &r.control {
        if c.maglev.len() != 3 {
            out.push("maglev: not 3 sizes".into());
        }
        for m in &c.maglev {
            num(format!("maglev {} reals", m.reals), m.median_ms);
        }
        if c.reload.rows.is_empty() {
            out.push("reload: no rows".into());
        }
        for row in &c.reload.rows {
            num(format!("reload {}", row.case), row.total_ms);
        }
        let h = &c.health;
        num("health probes/s".into(), h.probes_per_s);
        num("health checker cpu".into(), h.checker_cpu_pct);
        num("health floor".into(), h.floor_us_per_probe);
        if h.probes_per_s <= 0.0 {
            out.push("health: no probe completed".into());
        }
    }
    if let Some(e) = &r.e2e {
        for key in ["a", "r", "b", "c"] {
            let present = e.scenarios.iter().any(|s| s.key == key);
            let skipped = e.skipped.iter().any(|s| s.starts_with(&format!("({key})")));
            if !present && !skipped {
                out.push(format!("end to end ({key}) missing"));
            }
        }
        for s in &e.scenarios {
            num(format!("e2e ({}) conns/s", s.key), s.conns_per_s);
            num(format!("e2e ({}) Gbit/s", s.key), s.gbps);
            num(format!("e2e ({}) cpu/conn", s.key), s.cpu_us_per_conn);
            if s.conns_per_s <= 0.0 || s.gbps <= 0.0 {
                out.push(format!("e2e ({}): nothing completed", s.key));
            }
        }
    }
    out.extend(nan);
    out
}

/// One target and whether this run met it.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The target as the issue states it.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met.
    pub met: bool,
    /// Why it was missed (from the measurements), when it was.
    pub why: Option<String>,
}

fn case<'a>(d: &'a DataplaneReport, name: &str) -> Option<&'a DpCase> {
    d.cases.iter().find(|c| c.name == name)
}

fn scenario<'a>(e: &'a E2eReport, key: &str) -> Option<&'a Scenario> {
    e.scenarios.iter().find(|s| s.key == key)
}

/// The targets of the issue, judged on this run's numbers.
pub fn verdicts(r: &Report) -> Vec<Verdict> {
    let mut v = Vec::new();
    if let Some(d) = &r.dataplane
        && let (Some(hit), Some(syn)) = (case(d, "hit"), case(d, "syn"))
    {
        let floor_net = d.floor.median_ns - d.empty.median_ns;
        let met = hit.x_floor <= 5.0;
        v.push(Verdict {
            target: "hit path <= 5x the floor (both as measured)".into(),
            measured: format!(
                "{}x ({} / {} ns)",
                f(hit.x_floor, 2),
                f(hit.sample.median_ns, 1),
                f(d.floor.median_ns, 1)
            ),
            met,
            why: (!met).then(|| hit_decomposition(d)),
        });
        let met = hit.x_floor_net <= 5.0;
        v.push(Verdict {
            target: "hit path <= 5x the floor, both net of the empty program".into(),
            measured: format!(
                "{}x ({} / {} ns)",
                f(hit.x_floor_net, 2),
                f(hit.net_ns, 1),
                f(floor_net, 1)
            ),
            met,
            why: (!met).then(|| {
                format!(
                    "Net of the empty program the floor does {} ns of work (two 6-byte loads \
                     and stores), so 5x allows {} ns for the whole load-balancing path. {}",
                    f(floor_net, 1),
                    f(5.0 * floor_net, 1),
                    hit_decomposition(d)
                )
            }),
        });
        let met = hit.net_ns <= 30.0;
        v.push(Verdict {
            target: "hit <= 30 ns net of the empty program".into(),
            measured: format!("{} ns", f(hit.net_ns, 1)),
            met,
            why: (!met).then(|| {
                format!(
                    "{} ns ({}%) over. {}",
                    f(hit.net_ns - 30.0, 1),
                    f((hit.net_ns / 30.0 - 1.0) * 100.0, 0),
                    hit_decomposition(d)
                )
            }),
        });
        let met = syn.net_ns <= 80.0;
        v.push(Verdict {
            target: "new connection (SYN) <= 80 ns net of the empty program".into(),
            measured: format!("{} ns", f(syn.net_ns, 1)),
            met,
            why: (!met).then(|| {
                format!(
                    "{} ns over; the SYN path is {} ns more than the hit path: the Maglev slot \
                     and the locked insert into the connection set.",
                    f(syn.net_ns - 80.0, 1),
                    f(syn.net_ns - hit.net_ns, 1)
                )
            }),
        });
    }
    if let Some(s) = &r.scaling {
        for d in &s.dims {
            let worst = d.hit_spread.max(d.syn_spread);
            let met = worst <= 0.10;
            v.push(Verdict {
                target: format!("scaling, {}: hit and SYN flat within 10%", d.name),
                measured: format!(
                    "spread (max/min - 1) hit {}%, SYN {}%",
                    f(d.hit_spread * 100.0, 1),
                    f(d.syn_spread * 100.0, 1)
                ),
                met,
                why: (!met)
                    .then(|| scaling_miss(d, r.dataplane.as_ref().map(|x| x.empty.median_ns))),
            });
        }
    }
    if let Some(y) = &r.sync {
        let c = &y.confirm;
        let syn = &y.syn.pairs;
        let worst = syn
            .iter()
            .map(|p| p.ratio)
            .fold(c.ratio.max(c.syn_ratio), f64::max);
        let met = worst <= 1.15;
        v.push(Verdict {
            target: "confirming packet (and SYN) with sync on <= 1.15x sync off".into(),
            measured: format!(
                "ACK {}x ({} / {} ns, kernel; net of the empty program {}x), first SYN {}x, {}",
                f(c.ratio, 3),
                f(c.ack_on_ns, 0),
                f(c.ack_off_ns, 0),
                f(c.net_ratio, 2),
                f(c.syn_ratio, 3),
                syn.iter()
                    .map(|p| format!("{} {}x", p.name, f(p.ratio, 3)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met,
            why: (!met).then(|| sync_miss(y)),
        });
    }
    if let Some(c) = &r.control {
        if let Some(m) = c.maglev.iter().find(|m| m.reals == 1000) {
            let met = m.median_ms <= 2.0;
            v.push(Verdict {
                target: format!("Maglev build, M = {}, 1000 reals <= 2 ms", m.m),
                measured: format!("{} ms (median of {})", f(m.median_ms, 2), m.reps),
                met,
                why: (!met).then(|| {
                    let row = |n: u32| {
                        c.maglev
                            .iter()
                            .find(|m| m.reals == n)
                            .map_or("n/a".into(), |m| f(m.median_ms, 2))
                    };
                    format!(
                        "{} ms over. With 10 reals a build takes {} ms and with 100 {} ms: \
                         most of the time is filling the {} slots, the rest grows with the \
                         number of reals' preference lists walked.",
                        f(m.median_ms - 2.0, 2),
                        row(10),
                        row(100),
                        m.m
                    )
                }),
            });
        }
        let h = &c.health;
        let met = h.checker_cpu_pct <= 10.0;
        v.push(Verdict {
            target: format!(
                "CPU of health checks, {} reals at delay_loop {} s, <= 10% of one core",
                h.reals, h.delay_loop_s
            ),
            measured: format!(
                "{}% of one core ({} probes/s, {} us each)",
                f(h.checker_cpu_pct, 1),
                f(h.probes_per_s, 0),
                f(h.checker_us_per_probe, 1)
            ),
            met,
            why: (!met).then(|| health_miss(h)),
        });
    }
    if let Some(e) = &r.e2e
        && let Some(a) = scenario(e, "a")
    {
        let cores = r.meta.machine.cores;
        if let Some(b) = scenario(e, "b") {
            for (what, ratio, bulk) in [
                ("connections/s", b.conns_per_s / a.conns_per_s, false),
                ("bulk throughput", b.gbps / a.gbps, true),
            ] {
                let met = ratio >= 0.95;
                v.push(Verdict {
                    target: format!("(b) through our VIP >= 0.95x (a) direct, {what}"),
                    measured: format!("{}x", f(ratio, 3)),
                    met,
                    why: (!met).then(|| e2e_miss_b(e, a, b, cores, bulk)),
                });
            }
        }
        if let (Some(b), Some(c)) = (scenario(e, "b"), scenario(e, "c")) {
            for (what, ratio, bulk) in [
                ("connections/s", b.conns_per_s / c.conns_per_s, false),
                ("bulk throughput", b.gbps / c.gbps, true),
            ] {
                let met = ratio >= 3.0;
                v.push(Verdict {
                    target: format!("(b) through our VIP >= 3x (c) HAProxy, {what}"),
                    measured: format!("{}x", f(ratio, 2)),
                    met,
                    why: (!met).then(|| e2e_miss_c(a, b, c, cores, bulk)),
                });
            }
        }
    }
    v
}

/// Where the hit path's time goes, from differences between measured cases.
fn hit_decomposition(d: &DataplaneReport) -> String {
    let net = |name: &str| case(d, name).map_or(f64::NAN, |c| c.net_ns);
    let (pass, frag, udp, hit) = (net("pass"), net("fragment"), net("udp"), net("hit"));
    format!(
        "Differences between the measured cases (net ns) locate the hit path's {} ns: \
         parsing and the VIP-table probe take {} (the pass case, which stops there); a found \
         service, the real's entry, the MAC rewrite and the counters add {} (fragment - pass: \
         the fragment path does the same with a table slot instead of the connection table); \
         the 5-tuple hash and the connection-set probe instead of the table slot add {} \
         (udp - fragment); TCP flags and the state machine add {} (hit - udp).",
        f(hit, 1),
        f(pass, 1),
        f(frag - pass, 1),
        f(udp - frag, 1),
        f(hit - udp, 1)
    )
}

fn scaling_miss(d: &ScalingDim, basic_empty: Option<f64>) -> String {
    let list = |sel: fn(&ScalingVariant) -> f64| {
        d.variants
            .iter()
            .map(|v| format!("{} {} ns", v.label, f(sel(v), 1)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut why = format!(
        "Net figures: hit {}; SYN {}.",
        list(|v| v.hit_net_ns),
        list(|v| v.syn_net_ns)
    );
    if d.name == "connection table" && d.syn_spread > 0.10 && d.hit_spread <= 0.10 {
        why += " Only the SYN path grows with the fill. A new connection's insert reads every \
                slot of its 4-way set to choose where to go (the slot already holding the key, \
                else an empty one, else an expired one, else the least recently used): an \
                empty slot costs one tag read, a used one its key, value and stamp and an \
                expiry check. So the insert costs more in a fuller set, bounded by the 4 ways; \
                the hit path stops at the first matching tag and stays flat.";
    } else {
        for (path, sel, sample, spread) in [
            (
                "hit",
                (|v: &ScalingVariant| v.hit_net_ns) as fn(&ScalingVariant) -> f64,
                (|v: &ScalingVariant| &v.hit) as fn(&ScalingVariant) -> &Sample,
                d.hit_spread,
            ),
            ("SYN", |v| v.syn_net_ns, |v| &v.syn, d.syn_spread),
        ] {
            if spread > 0.10 {
                why += " ";
                why += &spread_why(d, path, sel, sample);
            }
        }
    }
    let drift = basic_empty.map(|e| (d.empty_ns / e - 1.0).abs());
    if d.others_pct > 5.0 || drift.is_some_and(|x| x > 0.05) {
        why += &format!(
            " Interference: other processes used {}% of the machine's CPUs during these runs, \
             and the empty program measured {} ns here against {} ns in the data-plane \
             cases, so part of this spread is the machine, not the path.",
            f(d.others_pct, 1),
            f(d.empty_ns, 1),
            basic_empty.map_or("n/a".into(), |e| f(e, 1))
        );
    }
    why
}

/// Why one path of a scaling dimension spread over 10%: a cost that grows with the dimension,
/// or (when the largest variant is not the dearest) the placement of each loaded copy.
fn spread_why(
    d: &ScalingDim,
    path: &str,
    net: fn(&ScalingVariant) -> f64,
    sample: fn(&ScalingVariant) -> &Sample,
) -> String {
    let (Some(first), Some(last)) = (d.variants.first(), d.variants.last()) else {
        return String::new();
    };
    let dearest = d
        .variants
        .iter()
        .max_by(|a, b| net(a).total_cmp(&net(b)))
        .unwrap_or(last);
    let mut widest_copies = 0.0f64;
    let ranges = d
        .variants
        .iter()
        .map(|v| {
            let copies = &sample(v).copy_medians_ns;
            let lo = copies.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = copies.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            widest_copies = widest_copies.max(hi - lo);
            format!("{} {} to {}", v.label, f(lo, 1), f(hi, 1))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let nets: Vec<f64> = d.variants.iter().map(net).collect();
    let between = nets.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - nets.iter().copied().fold(f64::INFINITY, f64::min);
    let copies = format!(
        "Each variant runs on several independently loaded copies (medians per copy, ns, \
         before subtracting the empty program: {ranges}); the widest spread among the copies \
         of one variant is {} ns, the spread between the variants {} ns",
        f(widest_copies, 1),
        f(between, 1)
    );
    if dearest.label != last.label || net(last) <= net(first) {
        let verdict = if widest_copies >= between {
            ": where the JIT put each copy's code and the kernel its maps moves the figure \
             as much as the variant does."
        } else {
            "."
        };
        format!(
            "The {path} path does not grow with the {}: the dearest variant is {}, not the \
             largest ({}). {copies}{verdict}",
            d.name, dearest.label, last.label
        )
    } else {
        format!(
            "The {path} path rises from {} ns ({}) to {} ns ({}). {copies}.",
            f(net(first), 1),
            first.label,
            f(net(last), 1),
            last.label
        )
    }
}

fn sync_miss(y: &SyncReport) -> String {
    let c = &y.confirm;
    let lo = c.chunk_ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = c
        .chunk_ratios
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let mut why = format!(
        "With sync on the confirming ACK takes {} ns more than with it off ({} against {} ns, \
         kernel medians over {} flows each; the empty program run the same way takes {} ns, \
         so net of it {} against {} ns, {}x). That is the announcement, which only the ACK \
         that completes a handshake makes: the CPU id, then a {}-byte event and its sequence \
         number stored in this CPU's ring. The chunks' ratios ranged from {}x to {}x.",
        f(c.ack_on_ns - c.ack_off_ns, 0),
        f(c.ack_on_ns, 0),
        f(c.ack_off_ns, 0),
        c.flows,
        f(c.empty_ns, 0),
        f(c.ack_on_ns - c.empty_ns, 0),
        f(c.ack_off_ns - c.empty_ns, 0),
        f(c.net_ratio, 2),
        size_of::<lb_common::SyncEvent>(),
        f(lo, 2),
        f(hi, 2)
    );
    for p in y.syn.pairs.iter().filter(|p| p.ratio > 1.15) {
        let list = |s: &Sample| {
            s.copy_medians_ns
                .iter()
                .map(|x| f(*x, 1))
                .collect::<Vec<_>>()
                .join(" ")
        };
        why += &format!(
            " The {} path makes no announcement with sync on (the ring stayed empty through \
             every repetition), so its {}x is the loaded copies, not sync: the copies' medians \
             are {} ns with sync off and {} ns with it on.",
            p.name,
            f(p.ratio, 3),
            list(&p.off),
            list(&p.on)
        );
    }
    if c.syn_ratio > 1.15 {
        why += &format!(
            " A new flow's first SYN makes no announcement with sync on either (the ring \
             stayed empty after every turn): {} against {} ns is the loaded copies and the \
             machine, not sync.",
            f(c.syn_on_ns, 0),
            f(c.syn_off_ns, 0)
        );
    }
    why
}

fn health_miss(h: &HealthReport) -> String {
    let ratio = h.checker_us_per_probe / h.floor_us_per_probe;
    let own = if ratio <= 1.05 {
        format!(
            "The checker runs at {}x that floor: its own code and the tokio runtime add \
             nothing measurable.",
            f(ratio, 2)
        )
    } else {
        format!(
            "The checker runs at {}x that floor: its own code and the tokio runtime add {} us \
             per probe.",
            f(ratio, 2),
            f(h.checker_us_per_probe - h.floor_us_per_probe, 1)
        )
    };
    format!(
        "The checker spends {} us of CPU per probe, {}% of it in the kernel. A probe is a \
         half-open SYN on the packet socket and the SYN-ACK read back (the kernel resets it); \
         probes due in the same millisecond share one `sendmmsg`, one `recvmmsg` and the \
         prober's one timer, so wake-ups and system calls are shared too. A full TCP connection (socket, connect, handshake, FIN, \
         close) in a minimal blocking loop, the previous probe, costs {} us \
         per probe here ({}% in the kernel); at {} probes/s that alone is {}% of one core. \
         {own} The target allows at most {} us per probe at this rate, less than the kernel's \
         own cost of one loopback TCP connection on this machine. Over loopback the \
         listener's side of each packet (SYN, handshake ACK, FIN) is processed in softirq on \
         the sending thread and counts here; with remote reals that part runs on the reals. \
         The benchmark's process and the kernel threads during the window, listener and \
         softirq included: {}% of one core.",
        f(h.checker_us_per_probe, 1),
        f(h.checker_kernel_pct, 0),
        f(h.floor_us_per_probe, 1),
        f(h.floor_kernel_pct, 0),
        f(h.probes_per_s, 0),
        f(h.floor_cpu_pct, 1),
        f(0.10 * 1e6 / h.probes_per_s.max(1.0), 1),
        f(h.machine_cpu_pct, 1)
    )
}

fn e2e_miss_b(e: &E2eReport, a: &Scenario, b: &Scenario, cores: usize, bulk: bool) -> String {
    let r = scenario(e, "r");
    if bulk {
        let mut why = format!(
            "(b) moves {} Gbit/s at {} s of machine CPU per GB, (a) {} Gbit/s at {} s; the \
             machine is {}% busy in (a), {}% in (b). The director forwards only the client's \
             ACKs; the data goes from the real to the client directly.",
            f(b.gbps, 2),
            f(b.cpu_s_per_gb, 2),
            f(a.gbps, 2),
            f(a.cpu_s_per_gb, 2),
            f(a.bulk_busy_pct, 0),
            f(b.bulk_busy_pct, 0)
        );
        if let Some(r) = r {
            why += &format!(
                " The same ACKs routed by the director's kernel (r): {}x of (a), {} s per GB.",
                f(r.gbps / a.gbps, 3),
                f(r.cpu_s_per_gb, 2)
            );
        }
        return why;
    }
    let mut why = format!(
        "Client, real server and director all run on this machine's {cores} CPUs, which the \
         load saturates ({}% busy in (a), {}% in (b)), so every microsecond the director \
         spends is taken from the client and the server. Per connection the machine spends \
         {} us in (a) and {} us in (b), {} us more.",
        f(a.busy_pct, 0),
        f(b.busy_pct, 0),
        f(a.cpu_us_per_conn, 1),
        f(b.cpu_us_per_conn, 1),
        f(b.cpu_us_per_conn - a.cpu_us_per_conn, 1)
    );
    if let Some(r) = r {
        why += &format!(
            " The reference (r) sends the same traffic through the director as a plain \
             kernel IP router, no XDP: {}x the connections of (a), at {} us more per \
             connection. So on one machine the extra hop alone (every client packet crosses \
             two more veth devices and the bridge once more; on a real network that hop is \
             switch hardware) costs about {}% of the connection rate. XDP costs {} us per \
             connection {} kernel forwarding in this topology, where native XDP runs on veth \
             devices (the frame is handed to XDP from an skb, and XDP_TX needs an XDP program \
             on the peer as well) rather than in a NIC driver before any skb exists.",
            f(r.conns_per_s / a.conns_per_s, 3),
            f(r.cpu_us_per_conn - a.cpu_us_per_conn, 1),
            f((1.0 - r.conns_per_s / a.conns_per_s) * 100.0, 0),
            f((b.cpu_us_per_conn - r.cpu_us_per_conn).abs(), 1),
            if b.cpu_us_per_conn >= r.cpu_us_per_conn {
                "more than"
            } else {
                "less than"
            }
        );
    }
    why
}

fn e2e_miss_c(a: &Scenario, b: &Scenario, c: &Scenario, cores: usize, bulk: bool) -> String {
    if bulk {
        let (db, dc) = (
            b.cpu_s_per_gb - a.cpu_s_per_gb,
            c.cpu_s_per_gb - a.cpu_s_per_gb,
        );
        return format!(
            "(c) moves {} Gbit/s at {} s of machine CPU per GB, (b) {} Gbit/s at {} s ((a): \
             {} s). HAProxy receives and sends again every byte, {} s per GB more than (a); \
             our director forwards only the client's ACKs, {} s per GB against (a). Client, \
             server and proxy share the same {cores} CPUs ({}% busy in (b), {}% in (c)), so \
             HAProxy's work competes with the client's and the server's, whose own cost \
             ({} s per GB in (a)) is the same in every scenario and dilutes the ratio; with \
             them on other machines the director's own cost is what limits it.",
            f(c.gbps, 2),
            f(c.cpu_s_per_gb, 2),
            f(b.gbps, 2),
            f(b.cpu_s_per_gb, 2),
            f(a.cpu_s_per_gb, 2),
            f(dc, 2),
            if db >= 0.0 {
                format!("+{}", f(db, 2))
            } else {
                f(db, 2)
            },
            f(b.bulk_busy_pct, 0),
            f(c.bulk_busy_pct, 0),
            f(a.cpu_s_per_gb, 2)
        );
    }
    let (db, dc) = (
        b.cpu_us_per_conn - a.cpu_us_per_conn,
        c.cpu_us_per_conn - a.cpu_us_per_conn,
    );
    format!(
        "Per connection, HAProxy adds {} us of machine CPU to (a)'s {} us (its own process: \
         {} us), our director {} us: the director's cost is {}x lower. But client, server \
         and director share the same {cores} CPUs, saturated, so the connection rate follows \
         the total cost per connection, ({} + {}) / ({} + {}) = {}x, and not the directors' \
         ratio: the client's and the server's own {} us dilute it. With client and server on \
         other machines the director's CPU is what limits it.",
        f(dc, 1),
        f(a.cpu_us_per_conn, 1),
        c.proxy_us_per_conn.map_or("n/a".into(), |x| f(x, 1)),
        f(db, 1),
        f(dc / db, 1),
        f(a.cpu_us_per_conn, 1),
        f(dc, 1),
        f(a.cpu_us_per_conn, 1),
        f(db, 1),
        f((a.cpu_us_per_conn + dc) / (a.cpu_us_per_conn + db), 2),
        f(a.cpu_us_per_conn, 1)
    )
}

/// `cmd`, date, machine: the line under every table.
pub fn source_line(m: &Meta) -> String {
    format!(
        "<sub>Source: `{}`, {}, {} ({}{} cores, {}, {:.0} GiB RAM){}.</sub>",
        m.command,
        m.date,
        m.machine.kernel,
        if m.machine.virtual_machine {
            "virtual machine, "
        } else {
            ""
        },
        m.machine.cores,
        m.machine.cpu_model,
        m.machine.memory_gib,
        if m.smoke {
            "; SMOKE MODE: few iterations, not figures to quote"
        } else {
            ""
        }
    )
}

/// `BENCHMARKS.md`.
pub fn markdown(r: &Report) -> String {
    let m = &r.meta;
    let src = source_line(m);
    let mut o = String::new();
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Generated by `{}` on {}: every figure below comes from that single run, written by \
         the benchmark itself. Do not edit by hand; run the command again instead (it needs \
         root and took {:.1} min here).\n",
        m.command,
        m.date,
        m.elapsed_s / 60.0
    );
    let _ = writeln!(
        o,
        "Machine: {} cores, {} ({}), {}, {:.1} GiB RAM{}.\n",
        m.machine.cores,
        m.machine.cpu_model,
        m.machine.arch,
        m.machine.kernel,
        m.machine.memory_gib,
        if m.machine.virtual_machine {
            ", virtual machine"
        } else {
            ""
        }
    );
    if !m.busy_before.is_empty() {
        let _ = writeln!(
            o,
            "Other work on the machine, measured over one second before each part (% of all \
             CPUs busy; the benchmark waits up to a minute for it to fall under 10%): {}.\n",
            m.busy_before
                .iter()
                .map(|(part, busy)| format!("{part} {}%", f(*busy, 0)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if m.smoke {
        let _ = writeln!(
            o,
            "**Smoke mode**: few iterations and tiny sizes; these figures only show that every \
             case runs.\n"
        );
    }

    let verdicts = verdicts(r);
    if !verdicts.is_empty() {
        let _ = writeln!(o, "## Targets\n");
        let _ = writeln!(o, "| target | measured | met |\n| --- | --- | --- |");
        for v in &verdicts {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                v.target,
                v.measured,
                if v.met { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(o, "\n{src}\n");
    }

    if let Some(d) = &r.dataplane {
        dataplane_md(&mut o, d, &src);
    }
    if let Some(s) = &r.scaling {
        scaling_md(&mut o, s, &src);
    }
    if let Some(y) = &r.sync {
        sync_md(&mut o, y, &src);
    }
    if let Some(c) = &r.control {
        control_md(&mut o, c, &src);
    }
    if let Some(e) = &r.e2e {
        e2e_md(&mut o, e, &src);
    }

    let misses: Vec<&Verdict> = verdicts.iter().filter(|v| !v.met).collect();
    if !misses.is_empty() {
        let _ = writeln!(o, "## Misses explained\n");
        let _ = writeln!(
            o,
            "Each explanation is computed from this run's measurements.\n"
        );
        for v in misses {
            let _ = writeln!(
                o,
                "- **{}** (measured: {}). {}",
                v.target,
                v.measured,
                v.why.clone().unwrap_or_default()
            );
        }
        let _ = writeln!(o);
    }
    o
}

fn dataplane_md(o: &mut String, d: &DataplaneReport, src: &str) {
    let _ = writeln!(o, "## Data plane (BPF_PROG_TEST_RUN)\n");
    let _ = writeln!(
        o,
        "The real XDP program with its real maps ({}), run by the kernel's \
         `BPF_PROG_TEST_RUN` {} times per call; {} calls per case, interleaved round-robin \
         with every other case and the two reference programs, median reported. The calls \
         are spread over {} independently loaded copies of each program and its maps: where \
         the JIT puts the code and the kernel the map memory moves the same path by a few \
         ns, and on the odd copy by tens (the last column shows the copies' medians). `ns` is \
         the CPU time of the call divided by the repetitions (the kernel's own average, in \
         whole ns, is shown as a check). `net` subtracts the empty XDP program measured the \
         same way in the same run. The floor is a program that only swaps the MACs and \
         returns XDP_TX. Before measuring, each case's action and the program counter of its \
         path (hit, miss, pass, fragment, ICMP) are checked on every copy.\n",
        d.maps, d.repeat, d.runs, d.copies
    );
    let _ = writeln!(
        o,
        "| case | frame | action | ns | kernel ns | net ns | x floor | x floor, net | copies, ns |"
    );
    let _ = writeln!(
        o,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let floor_net = d.floor.median_ns - d.empty.median_ns;
    let _ = writeln!(
        o,
        "| empty | empty XDP program | XDP_PASS | {} | {} | 0 | {} | | {} |",
        f(d.empty.median_ns, 1),
        f(d.empty.kernel_median_ns, 0),
        f(d.empty.median_ns / d.floor.median_ns, 2),
        copies(&d.empty)
    );
    let _ = writeln!(
        o,
        "| floor | swap MACs | XDP_TX | {} | {} | {} | 1.00 | 1.00 | {} |",
        f(d.floor.median_ns, 1),
        f(d.floor.kernel_median_ns, 0),
        f(floor_net, 1),
        copies(&d.floor)
    );
    for c in &d.cases {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            c.what,
            c.action,
            f(c.sample.median_ns, 1),
            f(c.sample.kernel_median_ns, 0),
            f(c.net_ns, 1),
            f(c.x_floor, 2),
            f(c.x_floor_net, 2),
            copies(&c.sample)
        );
    }
    let ratio = |a: &str, b: &str| {
        d.cases
            .iter()
            .find(|c| c.name == a)
            .zip(d.cases.iter().find(|c| c.name == b))
            .map(|(a, b)| (a.net_ns, b.net_ns, a.net_ns / b.net_ns))
    };
    if let (Some((h6, h4, hx)), Some((s6, s4, sx))) = (ratio("hit6", "hit"), ratio("syn6", "syn")) {
        let _ = writeln!(
            o,
            "\nIPv6 beside IPv4, net: the hit path {} ns vs {} ns ({}x), a new connection {} ns \
             vs {} ns ({}x).",
            f(h6, 1),
            f(h4, 1),
            f(hx, 2),
            f(s6, 1),
            f(s4, 1),
            f(sx, 2)
        );
    }
    if let Some((wlc, maglev, x)) = ratio("syn_wlc", "syn") {
        let _ = writeln!(
            o,
            "\nA new connection under wlc (the service's 8 candidate reals, the least loaded at \
             the agent's last refresh, compared by their live counts, then the connection entry \
             and the counts) costs {} ns net against {} ns under Maglev alone: {}x.",
            f(wlc, 1),
            f(maglev, 1),
            f(x, 2)
        );
    }
    let _ = writeln!(
        o,
        "\nOther processes used {}% of the machine's CPUs during these runs, and the empty \
         program's runs varied by {}% (interquartile range / median). The measurement is \
         repeated, up to 3 times, while either exceeds 5%, and the quietest attempt kept: a \
         virtual machine's neighbours do not show in its own CPU accounting, but they slow \
         the empty program too.\n\n{src}\n",
        f(d.others_pct, 1),
        f(iqr_pct(&d.empty.runs_ns), 1)
    );
}

/// The copies' medians, e.g. "58.1 58.4 61.0".
fn copies(s: &Sample) -> String {
    s.copy_medians_ns
        .iter()
        .map(|x| f(*x, 1))
        .collect::<Vec<_>>()
        .join(" ")
}

fn scaling_md(o: &mut String, s: &ScalingReport, src: &str) {
    let _ = writeln!(o, "## Scaling of the hit and SYN paths\n");
    let _ = writeln!(
        o,
        "Same method as above ({} repetitions per call, {} interleaved calls over {} loaded \
         copies of each variant, median), all variants of a dimension loaded at once and \
         measured round-robin with the empty program; net figures subtract it. States are built by the planner (Maglev tables of \
         every service written to the maps); connection tables are filled with entries the \
         way the data plane writes them. Spread = max/min - 1.\n",
        s.repeat, s.runs, s.copies
    );
    for d in &s.dims {
        let _ = writeln!(o, "### {}\n", d.name);
        let _ = writeln!(o, "{}.\n", d.setup);
        let _ = writeln!(
            o,
            "| variant | hit ns | hit net ns | SYN ns | SYN net ns |\n| --- | ---: | ---: | ---: | ---: |"
        );
        for v in &d.variants {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                v.label,
                f(v.hit.median_ns, 1),
                f(v.hit_net_ns, 1),
                f(v.syn.median_ns, 1),
                f(v.syn_net_ns, 1)
            );
        }
        let _ = writeln!(
            o,
            "| **spread** | | {}% | | {}% |",
            f(d.hit_spread * 100.0, 1),
            f(d.syn_spread * 100.0, 1)
        );
        let _ = writeln!(
            o,
            "\nEmpty program in the same run: {} ns, its runs varying by {}% (interquartile \
             range / median). Other processes used {}% of the machine's CPUs meanwhile.\n\n\
             {src}\n",
            f(d.empty_ns, 1),
            f(d.empty_iqr_pct, 1),
            f(d.others_pct, 1)
        );
    }
    let _ = writeln!(
        o,
        "`BPF_PROG_TEST_RUN` repeats one frame, so its flow's set, service and table row stay \
         in the CPU cache: these figures show that the paths do no work that grows with the \
         number of services, reals or connections, not the cost of cache misses under many \
         concurrent flows (the end-to-end test below has those).\n"
    );
}

fn sync_md(o: &mut String, y: &SyncReport, src: &str) {
    let _ = writeln!(o, "## Director sync\n");
    let _ = writeln!(o, "### New flows with sync on and off\n");
    let s = &y.syn;
    let c = &y.confirm;
    let _ = writeln!(
        o,
        "The data plane with director sync off and on (`Settings::sync`), on the maps of the \
         data-plane cases, {} loaded copies, each measured with sync off and with it on (the \
         setting is switched before each call), so where the JIT put a copy's code and the \
         kernel its maps weighs on both alike. The SYN paths as the data-plane cases measure \
         them: {} repetitions per call, {} calls per case interleaved with the empty program, \
         CPU ns per repetition, median. The packet that confirms a flow (the ACK completing \
         the handshake, which announces the flow with sync on) does so only on its first run, \
         so repetitions cannot measure it: {} flows of distinct clients with sync off and as \
         many others with it on each got their SYN and later their ACK run once (repeat 1); \
         the kernel's duration of each run is kept (the syscall is outside it), and the empty \
         program was run as often. They took turns {} flows at a time, each chunk on the \
         next copy: sync off, the empty program, sync on, and on every other round of the \
         copies the other way round (a copy's first turn runs slower, its memory having gone \
         cold while the other copies ran, so each side goes first as often); medians over all \
         runs. After every turn the ring was drained: after a turn with sync \
         on it held exactly one announcement per flow its ACK confirmed ({} in all, in order, \
         as ESTABLISHED), none for any SYN; after a turn with sync off nothing ({}).\n",
        s.copies, s.repeat, s.runs, c.flows, c.chunk, c.events_on, c.events_off
    );
    let _ = writeln!(
        o,
        "| case | frame | sync off ns | sync on ns | on / off | on / off, net |\n\
         | --- | --- | ---: | ---: | ---: | ---: |"
    );
    let empty = s.empty.median_ns;
    for p in &s.pairs {
        let _ = writeln!(
            o,
            "| {} | {}, repeated | {} | {} | {} | {} |",
            p.name,
            p.what,
            f(p.off.median_ns, 1),
            f(p.on.median_ns, 1),
            f(p.ratio, 3),
            f(p.net_ratio, 3)
        );
    }
    let _ = writeln!(
        o,
        "| empty | empty XDP program, repeated | {} | | | |",
        f(empty, 1)
    );
    let net = |on: f64, off: f64| (on - c.empty_ns) / (off - c.empty_ns);
    let _ = writeln!(
        o,
        "| first SYN | a new flow's SYN, once (kernel ns) | {} | {} | {} | {} |",
        f(c.syn_off_ns, 0),
        f(c.syn_on_ns, 0),
        f(c.syn_ratio, 3),
        f(net(c.syn_on_ns, c.syn_off_ns), 3)
    );
    let _ = writeln!(
        o,
        "| confirming ACK | the ACK completing its handshake, once (kernel ns) | {} | {} | {} \
         | {} |",
        f(c.ack_off_ns, 0),
        f(c.ack_on_ns, 0),
        f(c.ratio, 3),
        f(c.net_ratio, 3)
    );
    let _ = writeln!(
        o,
        "| empty, once | empty XDP program, once (kernel ns) | {} | | | |",
        f(c.empty_ns, 0)
    );
    let lo = c.chunk_ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = c
        .chunk_ratios
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let _ = writeln!(
        o,
        "\nWith sync on the confirming ACK takes {} ns more (kernel medians): the \
         announcement: the CPU id, then a {}-byte event and its sequence number stored in \
         this CPU's ring. Each chunk's ratio of \
         its two turns' medians ranged from {}x to {}x: a copy's first turn runs slower, which \
         the alternating order cancels over all chunks, not within one. A run once includes the kernel's timer \
         around it (the empty program's {} ns), which the repeated cases spread over their \
         repetitions, and pays for memory that repetitions keep in the CPU cache (the flow's \
         connection set above all), so it costs several times a repetition. Other processes used {}% of the machine's CPUs during the repeated \
         runs, {}% during the single ones.\n\n{src}\n",
        f(c.ack_on_ns - c.ack_off_ns, 0),
        size_of::<lb_common::SyncEvent>(),
        f(lo, 3),
        f(hi, 3),
        f(c.empty_ns, 0),
        f(s.others_pct, 1),
        f(c.others_pct, 1)
    );

    let _ = writeln!(o, "### Sync rate\n");
    let Some(kept) = y.rate.last() else {
        return;
    };
    let _ = writeln!(
        o,
        "One agent's confirmed flows into a peer's table, with the pieces the agent uses, \
         between two labs with the same services in one process: the sender's program \
         confirms {} flows (SYN, then ACK, untimed); then, timed until the chunk's last flow is \
         stored, the sender drains its ring (announcements for {} flows at a time), translates \
         them into records by address, encodes them into authenticated datagrams and sends \
         them over loopback UDP, and the receiver, on its own thread, receives and checks each \
         datagram (tag, group, replay), translates its records into its own real indices \
         (which differ from the sender's) and stores the flows. Afterwards every flow must be \
         in the receiver's table, ESTABLISHED, on the real it has on the sender. `flows/s` counts \
         the flows stored; the figure is one agent pair's, both ends on this machine's CPUs. \
         CPU is each thread's own (loopback delivery runs in the sender's).\n",
        kept.flows, kept.chunk
    );
    let _ = writeln!(
        o,
        "| attempt | datagrams on the way | flows | datagrams | bytes per flow | with IPv4 + UDP \
         headers | flows/s | sender CPU us/flow | receiver CPU us/flow | dropped datagrams | \
         lost flows | others |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (i, r) in y.rate.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}% |",
            i + 1,
            r.window
                .map_or("any (unpaced)".into(), |w| format!("at most {w}")),
            r.flows,
            r.datagrams,
            f(r.bytes_per_flow, 1),
            f(r.wire_bytes_per_flow, 1),
            f(r.flows_per_s, 0),
            f(r.sender_us_per_flow, 2),
            f(r.receiver_us_per_flow, 2),
            r.dropped_datagrams,
            r.lost,
            f(r.others_pct, 1)
        );
    }
    let pacing = match (y.rate.first(), kept.window) {
        (Some(first), Some(w)) => {
            let slower = if first.receiver_us_per_flow > first.sender_us_per_flow {
                format!(
                    "The receiver is the slower end: {} us of CPU per flow against the \
                     sender's {}.",
                    f(first.receiver_us_per_flow, 2),
                    f(first.sender_us_per_flow, 2)
                )
            } else {
                format!(
                    "The receiver spends less CPU per flow than the sender ({} against {} us), \
                     so it fell behind for want of a CPU, not of speed: other processes used \
                     {}% of the machine's CPUs meanwhile.",
                    f(first.receiver_us_per_flow, 2),
                    f(first.sender_us_per_flow, 2),
                    f(first.others_pct, 0)
                )
            };
            format!(
                "Sent as fast as the sender could, a chunk's burst of {} datagrams overflowed \
                 the receiver's socket buffer ({} bytes, the kernel's default): {} datagrams \
                 dropped, {} flows lost. {slower} Paced to at most {w} datagrams sent but not \
                 yet stored, nothing was lost: {} flows/s is the rate one agent pair sustains \
                 here, and that pacing is its real limit.",
                first.chunk.div_ceil(lb_userspace::sync::wire::MAX_RECORDS),
                first.rcvbuf_bytes,
                first.dropped_datagrams,
                first.lost,
                f(kept.flows_per_s, 0)
            )
        }
        _ => format!(
            "Sent as fast as the sender could, nothing was lost: the receiver's socket buffer \
             took every chunk's burst, so {} flows/s is the rate one agent pair sustains here.",
            f(kept.flows_per_s, 0)
        ),
    };
    let _ = writeln!(
        o,
        "\n{pacing} A flow takes {} bytes of datagram ({} with the IPv4 and UDP headers).\n\n\
         {src}\n",
        f(kept.bytes_per_flow, 1),
        f(kept.wire_bytes_per_flow, 1)
    );
}

fn control_md(o: &mut String, c: &ControlReport, src: &str) {
    let _ = writeln!(o, "## Control plane\n");
    let _ = writeln!(o, "### Maglev build\n");
    let _ = writeln!(
        o,
        "`lb_userspace::schedule::maglev::build`, reals of weight 1, release build.\n"
    );
    let _ = writeln!(
        o,
        "| reals | M | builds | median ms | fastest ms |\n| ---: | ---: | ---: | ---: | ---: |"
    );
    for m in &c.maglev {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            m.reals,
            m.m,
            m.reps,
            f(m.median_ms, 3),
            f(m.min_ms, 3)
        );
    }
    let _ = writeln!(o, "\n{src}\n");

    let r = &c.reload;
    let _ = writeln!(o, "### Reload with {} services\n", r.services);
    let _ = writeln!(
        o,
        "What `lb-agent` does on SIGHUP before the maps are consistent: parse and validate the \
         YAML ({} bytes, {} services of {} reals, M = {}), build the desired state, plan \
         (Maglev tables and diff), write the maps (real entries, changed lookup slots into \
         the inactive buffers, publication, VIP table). Medians of the repetitions; the \
         maps are the real ones, memory-mapped.\n",
        r.yaml_bytes, r.services, r.reals_per_service, r.m
    );
    let _ = writeln!(
        o,
        "| reload | reps | map ops | slots written | parse ms | desired ms | plan ms | apply ms | total ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in &r.rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.case,
            row.reps,
            row.ops,
            row.slots,
            f(row.parse_ms, 1),
            f(row.desired_ms, 1),
            f(row.plan_ms, 1),
            f(row.apply_ms, 1),
            f(row.total_ms, 1)
        );
    }
    let row = |case: &str| r.rows.iter().find(|x| x.case == case);
    if let (Some(same), Some(every)) = (
        row("nothing changed"),
        row("one weight changed in every service"),
    ) {
        let builds = r.build_ms_per_service * f64::from(r.services);
        let _ = writeln!(
            o,
            "\nPlanning rebuilds only the Maglev tables whose reals, weights or size changed \
             (the unchanged reload plans in {} ms). One build takes {} ms here, so a change \
             that touches all {} services rebuilds {} ms worth of tables, {}% of the {} ms its \
             plan takes.",
            f(same.plan_ms, 1),
            f(r.build_ms_per_service, 2),
            r.services,
            f(builds, 0),
            f(builds / every.plan_ms * 100.0, 0),
            f(every.plan_ms, 0)
        );
    }
    let _ = writeln!(o, "\n{src}\n");

    let h = &c.health;
    let _ = writeln!(o, "### Health checks\n");
    let _ = writeln!(
        o,
        "`HealthChecker` with {} `tcp_check` reals, delay_loop {} s, on a 2-worker tokio \
         runtime like the agent's, against one listener on 0.0.0.0 in a network namespace of \
         its own (each real is a distinct address of 127.0.0.0/8). Each probe is the default \
         `tcp_check` of an IPv4 real: half-open, a SYN written onto `lo` by the agent's packet \
         socket, the listener's SYN-ACK read back through the socket's filter (the checker hands \
         the probes due in the same millisecond to the prober as one batch: one `sendmmsg` for \
         their SYNs, replies read with `recvmmsg`, timeouts under one timer of the prober's; \
         the director's kernel resets each SYN-ACK, as for any probe to a real's own \
         address). The floor is the previous probe's cost, a full TCP connect and close, in a plain blocking \
         loop. Measured over {:.1} s after \
         the first round of checks: CPU time of the checker's runtime threads (scheduler \
         accounting, so kernel work done on their behalf, loopback softirq included, counts), \
         of the listener's thread, and of the benchmark's process with the kernel's threads \
         (`machine CPU`; `others` is the rest of the machine's busy time, % of all CPUs, and a \
         measurement is repeated, up to 3 times, while it exceeds 5%).\n",
        h.reals, h.delay_loop_s, h.window_s
    );
    let _ = writeln!(
        o,
        "| probes/s | failures | checker CPU (% of a core) | us per probe | of it in kernel | listener CPU | machine CPU | others | floor us per probe | floor at this rate |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        o,
        "| {} | {} | {}% | {} | {}% | {}% | {}% | {}% | {} | {}% |",
        f(h.probes_per_s, 0),
        h.failures,
        f(h.checker_cpu_pct, 1),
        f(h.checker_us_per_probe, 1),
        f(h.checker_kernel_pct, 0),
        f(h.listener_cpu_pct, 1),
        f(h.machine_cpu_pct, 1),
        f(h.others_pct, 1),
        f(h.floor_us_per_probe, 1),
        f(h.floor_cpu_pct, 1)
    );
    let _ = writeln!(
        o,
        "\nThe floor is a minimal blocking loop on one thread doing the probe's socket calls \
         (socket, connect, shutdown, read to EOF, close) against the same listener.\n\n{src}\n"
    );
}

fn e2e_md(o: &mut String, e: &E2eReport, src: &str) {
    let _ = writeln!(o, "## End to end in network namespaces\n");
    let _ = writeln!(
        o,
        "A client, a director and one real server, each in its own network namespace on one \
         bridge (veth pairs, TX checksum offload off as XDP_TX on veth needs). The same load \
         goes (a) directly to the real, (b) to the VIP through our XDP program on the \
         director (native mode; the real holds the VIP on `lo` and answers the client \
         directly), (c) to HAProxy in TCP mode on the director (Debian's package, default \
         settings), which connects to the same real; and, as a reference for the cost of the \
         extra hop itself, (r) to the real's address with the client routing it via the \
         director, which forwards in its kernel (no XDP; the real answers directly, as in \
         direct routing). Short connections: {} client threads, each connecting, sending {} \
         bytes, reading the {}-byte reply until the server closes, in a loop for {} s. Bulk: \
         one TCP stream from the real to the client for {} s. {} rounds, each running a, r, \
         b, c in turn; medians. CPU is the time the benchmark's processes (client, servers, \
         HAProxy) and the kernel's threads were busy during the run, softirq included, from \
         /proc: XDP runs in softirq, charged to whatever runs at the time, so the director's \
         CPU per connection is a scenario's figure minus (a)'s. The rest of the machine's \
         busy time is other work (column `others`, % of all CPUs; a run is repeated, up to 3 \
         times, while it exceeds 5%).\n",
        e.threads, e.request_bytes, e.reply_bytes, e.secs, e.secs, e.rounds
    );
    let a = scenario(e, "a");
    let ratio = |x: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{}x", f(x / b, 3)),
        _ => "n/a".into(),
    };
    let _ = writeln!(
        o,
        "| scenario | conn/s | vs (a) | failed | machine CPU us/conn | vs (a) | director CPU us/conn | others | bulk Gbit/s | vs (a) | CPU s/GB |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in &e.scenarios {
        let director = match (s.key.as_str(), a) {
            ("a", _) => "0 (none)".to_owned(),
            (_, Some(a)) => {
                let d = f(s.cpu_us_per_conn - a.cpu_us_per_conn, 1);
                match s.proxy_us_per_conn {
                    Some(p) => format!("{d} (HAProxy process: {})", f(p, 1)),
                    None => d,
                }
            }
            _ => "n/a".into(),
        };
        let _ = writeln!(
            o,
            "| ({}) {} | {} | {} | {} | {} | {} | {} | {}% | {} | {} | {} |",
            s.key,
            s.name,
            f(s.conns_per_s, 0),
            ratio(s.conns_per_s, a.map(|a| a.conns_per_s)),
            s.failures,
            f(s.cpu_us_per_conn, 1),
            ratio(s.cpu_us_per_conn, a.map(|a| a.cpu_us_per_conn)),
            director,
            f(s.others_pct, 1),
            f(s.gbps, 2),
            ratio(s.gbps, a.map(|a| a.gbps)),
            f(s.cpu_s_per_gb, 3)
        );
    }
    for s in &e.skipped {
        let _ = writeln!(o, "\nSkipped: {s}");
    }
    let _ = writeln!(o, "\nPer-round figures (conn/s; Gbit/s):\n");
    for s in &e.scenarios {
        let join =
            |xs: &[f64], d: usize| xs.iter().map(|x| f(*x, d)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            o,
            "- ({}): {}; {}",
            s.key,
            join(&s.conns_per_s_runs, 0),
            join(&s.gbps_runs, 2)
        );
    }
    let _ = writeln!(o, "\n{src}\n");
}
