//! Data-plane benchmarks: the real XDP program on realistic maps through `BPF_PROG_TEST_RUN`.
//!
//! Every measured thing is a *subject*: a program and a frame. Subjects are measured
//! round-robin (run 1 of every subject, then run 2 of every subject, ...), with the starting
//! subject rotating, so slow drifts of the machine hit every subject alike; each subject's
//! figure is the median over its runs. The empty program is one of the subjects of every
//! measurement, so "net" figures subtract an empty program measured the same way in the same
//! run.
//!
//! A run's figure is the CPU time the calling thread spent in the `BPF_PROG_TEST_RUN` call
//! divided by the repetitions: the kernel's own per-repetition average is whole nanoseconds,
//! too coarse for a floor a few nanoseconds above the empty program. Both are recorded; they
//! agree to within the syscall's own cost spread over the repetitions.
//!
//! Before measuring, every subject is run once and its action and the program's counters are
//! checked, so that each case measures the path it names (a hit counts a hit, a fragment a
//! fragment, and so on).
//!
//! [`sync_cost`] measures the new-flow paths with director sync on beside sync off the same
//! way, and the packet that confirms a flow, which only its first run does, one run per flow.

use std::{
    cell::RefCell,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{Ebpf, programs::Xdp};
use lb_common::{Conn, ConnState, Flow4Key, Flow6Key, GlobalStats, SyncedFlow, proto};
use lb_tests::{
    lab::{Lab, XDP_PASS, XDP_TX, desired, spec, spec6, tcp, tcp6, udp},
    packet::{Frame, Frame6, L4, flags, icmp_unreachable},
};
use lb_userspace::{
    dataplane::{TestRunOutcome, test_run},
    model::Limits,
    model::{DesiredState, Scheduler, ServiceKey, ServiceSpec},
};

use super::{
    OthersWatch, Params, iqr_pct, median, progress, quietest,
    report::{
        ConfirmReport, DataplaneReport, DpCase, Sample, ScalingDim, ScalingReport, ScalingVariant,
        SyncPair, SyncSynReport,
    },
    spread, thread_cpu,
};

/// The VIP of the benchmark services.
pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// An address that is no VIP.
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
/// The client of the measured flows.
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 21);
/// The client of the measured SYNs.
const CLIENT_SYN: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 22);
/// A router on the return path (sends the ICMP errors).
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The IPv6 VIP of the benchmark's IPv6 service.
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// The client of the measured IPv6 flows.
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 0x21);
/// The client of the measured IPv6 SYNs.
const CLIENT6_SYN: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 0x22);
/// Maglev table size of every service.
const M: u32 = 65_537;
/// Port of the benchmark's wlc service (on [`VIP`]).
const WLC_PORT: u16 = 81;
/// Client port of the measured TCP and UDP flows.
const SPORT: u16 = 40_000;
/// The first client of the flows the sync cases confirm.
const CLIENTS_SYNC: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 0);

/// The reference programs: an empty XDP program and a MAC swap with XDP_TX.
pub struct RefPrograms {
    ebpf: Ebpf,
}

/// Name of the empty reference program.
pub const EMPTY: &str = "xdp_empty";
/// Name of the floor reference program.
pub const FLOOR: &str = "xdp_swap_macs";

impl RefPrograms {
    /// Loads both programs from the object built by `cargo xtask build-ebpf`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading {} (run `cargo xtask build-ebpf` first)",
                path.display()
            )
        })?;
        let mut ebpf = Ebpf::load(&bytes).context("loading the reference object")?;
        for name in [EMPTY, FLOOR] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("{name} is missing from {}", path.display()))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        Ok(Self { ebpf })
    }

    /// Runs one of the programs.
    pub fn run(&self, name: &str, frame: &[u8], repeat: u32) -> Result<TestRunOutcome> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .with_context(|| format!("{name} not loaded"))?
            .try_into()?;
        Ok(test_run(prog, frame, repeat)?)
    }
}

/// Which counter a case must move by one per packet (proof that it takes its path).
#[derive(Clone, Copy, Debug)]
enum Counter {
    /// A reference program: no counters.
    None,
    ConnHit,
    ConnMiss,
    Passed,
    Fragment,
    Icmp,
}

impl Counter {
    fn get(self, g: &GlobalStats) -> u64 {
        match self {
            Counter::None => 0,
            Counter::ConnHit => g.conn_hits,
            Counter::ConnMiss => g.conn_misses,
            Counter::Passed => g.passed,
            Counter::Fragment => g.fragments,
            Counter::Icmp => g.icmp_forwarded,
        }
    }
}

/// One loaded copy of what a subject runs.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// The load balancer with its maps.
    Lab(&'a Lab),
    /// The load balancer with its maps, director sync switched on or off before each call.
    Sync(&'a RefCell<Lab>, bool),
    /// A reference program.
    Ref(&'a RefPrograms, &'static str),
}

/// A program and a frame to measure, on several independently loaded copies of the program
/// and its maps: where the JIT puts the code and the kernel the map memory changes the cost of
/// the same path by a few nanoseconds, and for the odd copy by tens, so every subject's runs
/// are spread over copies (run `r` uses copy `r % copies`).
struct Subject<'a> {
    name: String,
    frame: Vec<u8>,
    action: u32,
    counter: Counter,
    targets: Vec<Target<'a>>,
}

/// One run: (copy, CPU ns per repetition, kernel ns per repetition).
type RunResult = (usize, f64, f64);

impl Subject<'_> {
    fn exec(&self, copy: usize, repeat: u32) -> Result<TestRunOutcome> {
        match self.targets[copy] {
            Target::Lab(lab) => Ok(lab.dp.test_run_repeat(&self.frame, repeat)?),
            Target::Sync(lab, on) => {
                let mut lab = lab.borrow_mut();
                lab.dp.set_sync(on)?;
                Ok(lab.dp.test_run_repeat(&self.frame, repeat)?)
            }
            Target::Ref(refs, prog) => refs.run(prog, &self.frame, repeat),
        }
    }

    /// Runs once on every copy and checks the action and the counter.
    fn check(&self) -> Result<()> {
        for (copy, target) in self.targets.iter().enumerate() {
            let stats = || -> Result<Option<GlobalStats>> {
                match target {
                    Target::Lab(lab) => Ok(Some(lab.dp.global_stats()?)),
                    Target::Sync(lab, _) => Ok(Some(lab.borrow().dp.global_stats()?)),
                    Target::Ref(..) => Ok(None),
                }
            };
            let before = stats()?;
            let out = self.exec(copy, 1)?;
            ensure!(
                out.action == self.action,
                "{}: action {} where {} was expected",
                self.name,
                out.action,
                self.action
            );
            if let (Some(before), Some(after)) = (before, stats()?) {
                let moved = self.counter.get(&after) - self.counter.get(&before);
                ensure!(
                    moved == 1,
                    "{}: the {:?} counter moved by {moved}, not 1: the frame takes another path",
                    self.name,
                    self.counter
                );
            }
        }
        Ok(())
    }

    fn measure(&self, run: usize, repeat: u32) -> Result<RunResult> {
        let copy = run % self.targets.len();
        let t0 = thread_cpu();
        let out = self.exec(copy, repeat)?;
        let cpu = thread_cpu() - t0;
        ensure!(out.action == self.action, "{}: action changed", self.name);
        Ok((
            copy,
            cpu.as_nanos() as f64 / f64::from(repeat),
            out.duration_ns as f64,
        ))
    }
}

/// Measures every subject `runs` times, round-robin with a rotating start; returns each
/// subject's runs.
fn interleave(subjects: &[Subject<'_>], runs: usize, repeat: u32) -> Result<Vec<Vec<RunResult>>> {
    for s in subjects {
        s.check()?;
        // Warm up (caches, branch predictors, page faults of the frame buffers).
        for copy in 0..s.targets.len() {
            s.measure(copy, repeat.min(10_000))?;
        }
    }
    let n = subjects.len();
    let mut results = vec![Vec::with_capacity(runs); n];
    for run in 0..runs {
        for k in 0..n {
            let i = (run + k) % n;
            results[i].push(subjects[i].measure(run, repeat)?);
        }
    }
    Ok(results)
}

/// [`interleave`] on the quietest of up to `params.attempts` attempts; the first subject must
/// be the empty program, whose runs' spread (interquartile range / median) counts as noise
/// besides other processes' CPU. Returns the runs and that CPU share (%).
fn measure_quietly(
    what: &str,
    subjects: &[Subject<'_>],
    params: &Params,
) -> Result<(Vec<Vec<RunResult>>, f64)> {
    let ((results, others), _) = quietest(what, params.attempts, || {
        let watch = OthersWatch::start(&[]);
        let results = interleave(subjects, params.runs, params.repeat)?;
        let others = watch.pct();
        let empty: Vec<f64> = results[0].iter().map(|r| r.1).collect();
        Ok(((results, others), others.max(iqr_pct(&empty))))
    })?;
    Ok((results, others))
}

fn sample(runs: &[RunResult]) -> Sample {
    let cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let kernel: Vec<f64> = runs.iter().map(|r| r.2).collect();
    let copies = runs.iter().map(|r| r.0).max().map_or(0, |m| m + 1);
    let copy_medians = (0..copies)
        .map(|c| {
            median(
                &runs
                    .iter()
                    .filter(|r| r.0 == c)
                    .map(|r| r.1)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    Sample {
        median_ns: median(&cpu),
        kernel_median_ns: median(&kernel),
        runs_ns: cpu,
        copy_medians_ns: copy_medians,
    }
}

pub(super) fn flow(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, p: u8) -> Flow4Key {
    Flow4Key::from_parts(src.octets(), sport, dst.octets(), dport, p)
}

fn addr(base: Ipv4Addr, offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + offset)
}

/// `n` reals of weight 1 from `base + 1` on.
fn reals(base: Ipv4Addr, n: u32) -> Vec<(Ipv4Addr, u32)> {
    (0..n).map(|i| (addr(base, i + 1), 1)).collect()
}

fn ack_frame(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    Frame::tcp(src, SPORT, VIP, dport, flags::ACK).build()
}

fn syn_frame(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    Frame::tcp(src, SPORT, VIP, dport, flags::SYN).build()
}

/// Opens the measured IPv6 TCP flow through the program (SYN, then ACK: ESTABLISHED).
fn establish6(lab: &Lab) -> Result<()> {
    for f in [flags::SYN, flags::ACK] {
        let out = lab
            .dp
            .test_run(&Frame6::tcp(CLIENT6, SPORT, VIP6, 80, f).build())?;
        ensure!(
            out.action == XDP_TX,
            "opening the measured IPv6 flow failed"
        );
    }
    let key = Flow6Key::from_parts(CLIENT6.octets(), SPORT, VIP6.octets(), 80, proto::TCP);
    let entry = lab
        .dp
        .conn6(&key)
        .context("the measured IPv6 flow has no connection entry")?;
    ensure!(entry.conn.state == ConnState::Established as u8);
    Ok(())
}

/// Opens the measured TCP flow through the program (SYN, then ACK: ESTABLISHED).
fn establish(lab: &Lab, src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Result<()> {
    for f in [flags::SYN, flags::ACK] {
        let out = lab
            .dp
            .test_run(&Frame::tcp(src, SPORT, dst, dport, f).build())?;
        ensure!(out.action == XDP_TX, "opening the measured flow failed");
    }
    let entry = lab
        .dp
        .conn4(&flow(src, SPORT, dst, dport, proto::TCP))
        .context("the measured flow has no connection entry")?;
    ensure!(entry.conn.state == ConnState::Established as u8);
    Ok(())
}

pub(super) fn lab(limits: Limits, state: &DesiredState) -> Lab {
    let mut lab = Lab::with_limits(limits);
    lab.apply(state);
    lab
}

/// The basic cases: default limits (64 services, 4096 reals, M = 65537, 1M connection
/// entries), 16 IPv4 services on 4 VIPs (one of them `wlc`) and one IPv6 service.
pub(super) fn basic_state() -> DesiredState {
    let mut services: Vec<(ServiceKey, ServiceSpec)> = vec![
        (
            tcp(VIP, 80),
            spec(80, M, &reals(Ipv4Addr::new(10, 0, 1, 0), 10)),
        ),
        (
            udp(VIP, 53),
            spec(53, M, &reals(Ipv4Addr::new(10, 0, 2, 0), 10)),
        ),
    ];
    let mut wlc = spec(WLC_PORT, M, &reals(Ipv4Addr::new(10, 0, 20, 0), 10));
    wlc.scheduler = Scheduler::WeightedLeastConn;
    services.push((tcp(VIP, WLC_PORT), wlc));
    for i in 0..13u32 {
        let vip = addr(VIP, 1 + i % 3);
        let port = 8000 + i as u16;
        let base = Ipv4Addr::new(10, 0, 3 + i as u8, 0);
        services.push((tcp(vip, port), spec(port, M, &reals(base, 4))));
    }
    let reals6: Vec<(Ipv6Addr, u32)> = (1..=10u16)
        .map(|i| (Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i), 1))
        .collect();
    services.push((tcp6(VIP6, 80), spec6(80, M, &reals6)));
    desired(services)
}

/// The frames of the basic cases, and the labs they need (each lab copy prepared the same).
struct BasicFrames {
    hit: Vec<u8>,
    syn: Vec<u8>,
    udp: Vec<u8>,
    pass: Vec<u8>,
    fragment: Vec<u8>,
    icmp: Vec<u8>,
    hit6: Vec<u8>,
    syn6: Vec<u8>,
    syn_wlc: Vec<u8>,
}

impl BasicFrames {
    fn new() -> Self {
        // The real's reply to the measured flow, too big for a router on the way back.
        let reply = Frame::tcp(VIP, 80, CLIENT, SPORT, flags::ACK).payload(&[0; 1400]);
        Self {
            hit: ack_frame(CLIENT, 80),
            syn: syn_frame(CLIENT_SYN, 80),
            udp: Frame::udp(CLIENT, 5353, VIP, 53)
                .payload(&[0x5a; 32])
                .build(),
            pass: Frame::tcp(CLIENT, SPORT, OTHER, 80, flags::ACK).build(),
            fragment: Frame::new(CLIENT, VIP, L4::Raw { proto: proto::UDP })
                .payload(&[0xcd; 72])
                .fragment(true, 9)
                .build(),
            icmp: icmp_unreachable(ROUTER, VIP, 4, 1400, &reply).build(),
            hit6: Frame6::tcp(CLIENT6, SPORT, VIP6, 80, flags::ACK).build(),
            syn6: Frame6::tcp(CLIENT6_SYN, SPORT, VIP6, 80, flags::SYN).build(),
            syn_wlc: syn_frame(CLIENT_SYN, WLC_PORT),
        }
    }

    fn lab(&self, limits: Limits) -> Result<Lab> {
        let lab = lab(limits, &basic_state());
        establish(&lab, CLIENT, VIP, 80)?;
        establish6(&lab)?;
        // The UDP flow's first datagram creates its entry; the measured ones hit it.
        ensure!(lab.dp.test_run(&self.udp)?.action == XDP_TX);
        Ok(lab)
    }
}

fn load_refs(path: &Path, copies: usize) -> Result<Vec<RefPrograms>> {
    (0..copies).map(|_| RefPrograms::load(path)).collect()
}

fn ref_subject<'a>(
    name: &str,
    prog: &'static str,
    action: u32,
    frame: &[u8],
    refs: &'a [RefPrograms],
) -> Subject<'a> {
    Subject {
        name: name.into(),
        frame: frame.to_vec(),
        action,
        counter: Counter::None,
        targets: refs.iter().map(|r| Target::Ref(r, prog)).collect(),
    }
}

fn lab_subject<'a>(
    name: &str,
    frame: &[u8],
    action: u32,
    counter: Counter,
    labs: &'a [Lab],
) -> Subject<'a> {
    Subject {
        name: name.into(),
        frame: frame.to_vec(),
        action,
        counter,
        targets: labs.iter().map(Target::Lab).collect(),
    }
}

/// The data-plane cases, the empty program and the floor.
pub fn cases(params: &Params, bench_ref: &Path) -> Result<DataplaneReport> {
    let copies = params.copies;
    let refs = load_refs(bench_ref, copies)?;
    let frames = BasicFrames::new();
    let labs = (0..copies)
        .map(|_| frames.lab(params.limits))
        .collect::<Result<Vec<_>>>()?;
    let subjects = vec![
        ref_subject("empty", EMPTY, XDP_PASS, &frames.hit, &refs),
        ref_subject("floor", FLOOR, XDP_TX, &frames.hit, &refs),
        lab_subject("hit", &frames.hit, XDP_TX, Counter::ConnHit, &labs),
        lab_subject("syn", &frames.syn, XDP_TX, Counter::ConnMiss, &labs),
        lab_subject("udp", &frames.udp, XDP_TX, Counter::ConnHit, &labs),
        lab_subject("pass", &frames.pass, XDP_PASS, Counter::Passed, &labs),
        lab_subject(
            "fragment",
            &frames.fragment,
            XDP_TX,
            Counter::Fragment,
            &labs,
        ),
        lab_subject("icmp", &frames.icmp, XDP_TX, Counter::Icmp, &labs),
        lab_subject("hit6", &frames.hit6, XDP_TX, Counter::ConnHit, &labs),
        lab_subject("syn6", &frames.syn6, XDP_TX, Counter::ConnMiss, &labs),
        lab_subject("syn_wlc", &frames.syn_wlc, XDP_TX, Counter::ConnMiss, &labs),
    ];
    let what = [
        "empty XDP program (returns XDP_PASS)",
        "floor: swap the MACs, XDP_TX",
        "TCP ACK of an established connection (connection-table hit)",
        "TCP SYN: new connection (scheduled by the Maglev table, entry written)",
        "UDP datagram of a known flow",
        "TCP to a non-VIP address (XDP_PASS)",
        "UDP fragment without ports (scheduled by addresses)",
        "ICMP fragmentation-needed about an established flow",
        "IPv6: TCP ACK of an established connection (connection-table hit)",
        "IPv6: TCP SYN, new connection",
        "TCP SYN to a wlc service of 10 reals: the least loaded of its 8 candidates",
    ];
    let (results, others) = measure_quietly("data plane cases", &subjects, params)?;
    let samples: Vec<Sample> = results.iter().map(|r| sample(r)).collect();
    let empty = samples[0].median_ns;
    let floor = samples[1].median_ns;
    let floor_net = floor - empty;
    let cases = subjects
        .iter()
        .zip(&samples)
        .zip(what)
        .skip(2)
        .map(|((s, sample), what)| {
            let net = sample.median_ns - empty;
            DpCase {
                name: s.name.clone(),
                what: what.into(),
                action: if s.action == XDP_TX {
                    "XDP_TX"
                } else {
                    "XDP_PASS"
                }
                .into(),
                sample: sample.clone(),
                net_ns: net,
                x_floor: sample.median_ns / floor,
                x_floor_net: net / floor_net,
            }
        })
        .collect();
    Ok(DataplaneReport {
        repeat: params.repeat,
        runs: params.runs,
        copies,
        others_pct: others,
        maps: format!(
            "{} limits: {} services, {} reals, M = {}, {} connection entries, {} persistence \
             entries; 16 IPv4 services on 4 VIPs (10 reals on the measured TCP, UDP and wlc \
             services, 4 on the others) and an IPv6 TCP service of 10 reals",
            if params.limits == Limits::default() {
                "the default"
            } else {
                "test"
            },
            params.limits.max_services,
            params.limits.max_reals,
            params.limits.max_table_size,
            params.limits.conn_entries,
            params.limits.persist_entries
        ),
        empty: samples[0].clone(),
        floor: samples[1].clone(),
        cases,
    })
}

/// One configuration of a scaling dimension: its copies and measured frames.
struct Variant {
    label: String,
    labs: Vec<Lab>,
    hit: Vec<u8>,
    syn: Vec<u8>,
}

impl Variant {
    fn new(
        label: String,
        copies: usize,
        hit: Vec<u8>,
        syn: Vec<u8>,
        build: impl Fn() -> Result<Lab>,
    ) -> Result<Self> {
        Ok(Self {
            label,
            labs: (0..copies).map(|_| build()).collect::<Result<Vec<_>>>()?,
            hit,
            syn,
        })
    }
}

/// The services dimension: `n` services with 4 reals each on their own VIPs; the measured
/// flows go to the last one. Map sizes are the same for every variant.
fn services_variant(base: Limits, n: u32, max: u32, copies: usize) -> Result<Variant> {
    let limits = Limits {
        max_services: max,
        ..base
    };
    ensure!(
        n * 4 < limits.max_reals,
        "{n} services of 4 reals exceed max_reals"
    );
    let vip_of = |i: u32| addr(Ipv4Addr::new(10, 1, 0, 0), i + 1);
    let state = desired(
        (0..n)
            .map(|i| {
                let base = addr(Ipv4Addr::new(10, 2, 0, 0), i * 4);
                (tcp(vip_of(i), 80), spec(80, M, &reals(base, 4)))
            })
            .collect(),
    );
    let vip = vip_of(n - 1);
    Variant::new(
        format!("{n} services"),
        copies,
        Frame::tcp(CLIENT, SPORT, vip, 80, flags::ACK).build(),
        Frame::tcp(CLIENT_SYN, SPORT, vip, 80, flags::SYN).build(),
        || {
            let lab = lab(limits, &state);
            establish(&lab, CLIENT, vip, 80)?;
            Ok(lab)
        },
    )
}

/// The reals dimension: one service with `n` reals.
fn reals_variant(base: Limits, n: u32, max_reals: u32, copies: usize) -> Result<Variant> {
    let limits = Limits { max_reals, ..base };
    let state = desired(vec![(
        tcp(VIP, 80),
        spec(80, M, &reals(Ipv4Addr::new(10, 3, 0, 0), n)),
    )]);
    Variant::new(
        format!("{n} reals"),
        copies,
        ack_frame(CLIENT, 80),
        syn_frame(CLIENT_SYN, 80),
        || {
            let lab = lab(limits, &state);
            establish(&lab, CLIENT, VIP, 80)?;
            Ok(lab)
        },
    )
}

/// The connection-table dimension: `entries` entries, each set filled with `per_set` of its
/// 4 slots (0 = empty but for the measured flows, 2 = half, 4 = full).
fn conns_variant(base: Limits, entries: u32, per_set: u8, copies: usize) -> Result<Variant> {
    let limits = Limits {
        conn_entries: entries,
        ..base
    };
    let sets = limits.conn_sets();
    let slots = u64::from(sets) * lb_common::CONN_WAYS as u64;
    let state = desired(vec![(
        tcp(VIP, 80),
        spec(80, M, &reals(Ipv4Addr::new(10, 4, 0, 0), 10)),
    )]);
    let syn = syn_frame(CLIENT_SYN, 80);
    let measured = [
        flow(CLIENT, SPORT, VIP, 80, proto::TCP),
        flow(CLIENT_SYN, SPORT, VIP, 80, proto::TCP),
    ];
    let used = std::cell::Cell::new(0u64);
    let build = || -> Result<Lab> {
        let mut lab = lab(limits, &state);
        establish(&lab, CLIENT, VIP, 80)?;
        ensure!(lab.dp.test_run(&syn)?.action == XDP_TX);
        let mut count = vec![0u8; sets as usize];
        for key in &measured {
            count[(key.hash() & (sets - 1)) as usize] += 1;
        }
        let real = lab
            .dp
            .conn4(&measured[0])
            .context("measured flow")?
            .conn
            .real;
        let conn = Conn {
            real,
            state: ConnState::Established as u8,
            _pad: [0; 3],
        };
        let target = u64::from(sets) * u64::from(per_set);
        let mut filled: u64 = count.iter().map(|&c| u64::from(c.min(per_set))).sum();
        let mut i: u64 = 0;
        let started = Instant::now();
        while filled < target {
            let src = addr(Ipv4Addr::new(172, 16, 0, 0), (i / 50_000) as u32);
            let key = flow(src, 10_000 + (i % 50_000) as u16, VIP, 80, proto::TCP);
            i += 1;
            let set = (key.hash() & (sets - 1)) as usize;
            if count[set] < per_set {
                ensure!(lab.dp.insert_conn4(&key, &conn), "insert failed");
                count[set] += 1;
                filled += 1;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(120),
                "filling the connection table takes too long"
            );
        }
        for key in &measured {
            ensure!(
                lab.dp.conn4(key).is_some(),
                "a measured flow was evicted while filling"
            );
        }
        used.set(count.iter().map(|&c| u64::from(c)).sum());
        Ok(lab)
    };
    let mut v = Variant::new(
        String::new(),
        copies,
        ack_frame(CLIENT, 80),
        syn.clone(),
        build,
    )?;
    let used = used.get();
    v.label = match per_set {
        0 => format!("empty ({used} of {slots} slots)"),
        4 => format!("full ({used} of {slots} slots)"),
        _ => format!("{per_set}/4 full ({used} of {slots} slots)"),
    };
    Ok(v)
}

/// Measures hit and SYN over the variants of one dimension, with the empty program.
fn dimension(
    name: &str,
    setup: String,
    variants: &[Variant],
    refs: &[RefPrograms],
    params: &Params,
) -> Result<ScalingDim> {
    let mut subjects = vec![ref_subject(
        "empty",
        EMPTY,
        XDP_PASS,
        &variants[0].hit,
        refs,
    )];
    for v in variants {
        subjects.push(lab_subject(
            &format!("{} hit", v.label),
            &v.hit,
            XDP_TX,
            Counter::ConnHit,
            &v.labs,
        ));
        subjects.push(lab_subject(
            &format!("{} syn", v.label),
            &v.syn,
            XDP_TX,
            Counter::ConnMiss,
            &v.labs,
        ));
    }
    let (results, others) = measure_quietly(&format!("scaling, {name}"), &subjects, params)?;
    let samples: Vec<Sample> = results.iter().map(|r| sample(r)).collect();
    let empty = samples[0].median_ns;
    let rows: Vec<ScalingVariant> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (hit, syn) = (&samples[1 + 2 * i], &samples[2 + 2 * i]);
            ScalingVariant {
                label: v.label.clone(),
                hit: hit.clone(),
                syn: syn.clone(),
                hit_net_ns: hit.median_ns - empty,
                syn_net_ns: syn.median_ns - empty,
            }
        })
        .collect();
    let hits: Vec<f64> = rows.iter().map(|r| r.hit_net_ns).collect();
    let syns: Vec<f64> = rows.iter().map(|r| r.syn_net_ns).collect();
    Ok(ScalingDim {
        name: name.into(),
        setup,
        empty_ns: empty,
        empty_iqr_pct: iqr_pct(&samples[0].runs_ns),
        others_pct: others,
        hit_spread: spread(&hits),
        syn_spread: spread(&syns),
        variants: rows,
    })
}

/// The scaling dimensions: services, reals, connection-table fill.
pub fn scaling(params: &Params, bench_ref: &Path) -> Result<ScalingReport> {
    let copies = params.scale_copies;
    let refs = load_refs(bench_ref, copies)?;
    let mut dims = Vec::new();

    let max_services = *params.scale_services.iter().max().context("no sizes")?;
    progress(&format!(
        "  services {:?} (M = {M}, max_services = {max_services}, {copies} copies each)",
        params.scale_services
    ));
    let variants = params
        .scale_services
        .iter()
        .map(|&n| services_variant(params.limits, n, max_services, copies))
        .collect::<Result<Vec<_>>>()?;
    let lookup_mib = Limits {
        max_services,
        ..params.limits
    }
    .lookup_slots() as u64
        * 4
        / (1 << 20);
    dims.push(dimension(
        "services",
        format!(
            "every variant: max_services = {max_services}, M = {M} (LOOKUP array of {lookup_mib} \
             MiB per copy), 4 reals per service, each service on its own VIP; the measured \
             flows go to the last service"
        ),
        &variants,
        &refs,
        params,
    )?);
    drop(variants);

    let max_reals = (params.scale_reals.iter().max().context("no sizes")? + 1)
        .next_power_of_two()
        .max(params.limits.max_reals);
    progress(&format!("  reals {:?}", params.scale_reals));
    let variants = params
        .scale_reals
        .iter()
        .map(|&n| reals_variant(params.limits, n, max_reals, copies))
        .collect::<Result<Vec<_>>>()?;
    dims.push(dimension(
        "reals",
        format!("one service, M = {M}, max_reals = {max_reals} in every variant"),
        &variants,
        &refs,
        params,
    )?);
    drop(variants);

    let entries = params.scale_conn_entries;
    progress(&format!(
        "  connection table of {entries} entries: empty, half, full"
    ));
    let variants = [0u8, 2, 4]
        .iter()
        .map(|&per_set| conns_variant(params.limits, entries, per_set, copies))
        .collect::<Result<Vec<_>>>()?;
    dims.push(dimension(
        "connection table",
        format!(
            "conn_entries = {entries} (4-way sets), one service with 10 reals; half = 2 of 4 \
             slots used in every set, full = all 4; the measured flows sit in used sets"
        ),
        &variants,
        &refs,
        params,
    )?);
    if dims.iter().any(|d| d.variants.is_empty()) {
        bail!("a scaling dimension has no variant");
    }
    Ok(ScalingReport {
        repeat: params.repeat,
        runs: params.runs,
        copies,
        dims,
    })
}

/// `n` clients (address, port) of TCP flows to [`VIP`] port 80 that `lab`'s connection table
/// holds without pushing any entry out: no set ends up with more than its 4 slots used,
/// counting the entries already there (a table with the same limits and fewer entries holds
/// them too).
pub(super) fn fitting_flows(lab: &Lab, n: usize) -> Result<Vec<(Ipv4Addr, u16)>> {
    let sets = lab.dp.limits().conn_sets();
    let mut count = vec![0usize; sets as usize];
    for e in lab.dp.conns4() {
        count[(e.key.hash() & (sets - 1)) as usize] += 1;
    }
    let mut out = Vec::with_capacity(n);
    let mut i: u32 = 0;
    while out.len() < n {
        ensure!(
            i < 1 << 24,
            "the connection table has no room for {n} more flows"
        );
        let (src, sport) = (addr(CLIENTS_SYNC, i / 50_000), 10_000 + (i % 50_000) as u16);
        i += 1;
        let used = &mut count[(flow(src, sport, VIP, 80, proto::TCP).hash() & (sets - 1)) as usize];
        if *used < lb_common::CONN_WAYS {
            *used += 1;
            out.push((src, sport));
        }
    }
    Ok(out)
}

/// The new-flow paths with director sync off and on (`Settings::sync`): the `syn` and
/// `syn_wlc` cases through the repetitions, interleaved with the empty program as [`cases`]
/// does, on `params.copies` copies each measured with sync off and with it on (switched before
/// each call, so where the JIT put a copy's code and the kernel its maps weighs on both
/// alike); then the confirming packet ([`confirm`]) on the same copies.
pub fn sync_cost(params: &Params, bench_ref: &Path) -> Result<(SyncSynReport, ConfirmReport)> {
    let copies = params.copies;
    let refs = load_refs(bench_ref, copies)?;
    let frames = BasicFrames::new();
    let labs = (0..copies)
        .map(|_| frames.lab(params.limits).map(RefCell::new))
        .collect::<Result<Vec<_>>>()?;
    let toggled = |name: &str, frame: &[u8], on: bool| Subject {
        name: format!("{name}, sync {}", if on { "on" } else { "off" }),
        frame: frame.to_vec(),
        action: XDP_TX,
        counter: Counter::ConnMiss,
        targets: labs.iter().map(|lab| Target::Sync(lab, on)).collect(),
    };
    let subjects = vec![
        ref_subject("empty", EMPTY, XDP_PASS, &frames.syn, &refs),
        toggled("syn", &frames.syn, false),
        toggled("syn", &frames.syn, true),
        toggled("syn_wlc", &frames.syn_wlc, false),
        toggled("syn_wlc", &frames.syn_wlc, true),
    ];
    let (results, others) = measure_quietly("sync: SYN paths", &subjects, params)?;
    drop(subjects);
    let mut labs: Vec<Lab> = labs.into_iter().map(RefCell::into_inner).collect();
    // A SYN is never announced: the rings stay empty through millions of them.
    for lab in &mut labs {
        let events = lab.dp.drain_sync_ring(usize::MAX)?.events.len();
        ensure!(events == 0, "sync: {events} SYNs were announced");
    }
    let samples: Vec<Sample> = results.iter().map(|r| sample(r)).collect();
    let empty = samples[0].median_ns;
    let pair = |name: &str, what: &str, off: &Sample, on: &Sample| SyncPair {
        name: name.into(),
        what: what.into(),
        off: off.clone(),
        on: on.clone(),
        ratio: on.median_ns / off.median_ns,
        net_ratio: (on.median_ns - empty) / (off.median_ns - empty),
    };
    let syn = SyncSynReport {
        repeat: params.repeat,
        runs: params.runs,
        copies,
        others_pct: others,
        empty: samples[0].clone(),
        pairs: vec![
            pair(
                "syn",
                "TCP SYN: new connection (Maglev), entry written",
                &samples[1],
                &samples[2],
            ),
            pair(
                "syn_wlc",
                "TCP SYN to a wlc service of 10 reals",
                &samples[3],
                &samples[4],
            ),
        ],
    };
    let confirm = confirm(params, &refs, &mut labs)?;
    Ok((syn, confirm))
}

/// The packet that confirms a flow (the ACK moving SYN_RECV to ESTABLISHED) does so only on
/// its first run, so `BPF_PROG_TEST_RUN`'s repetitions cannot measure it: each of
/// `params.sync_confirm_flows` flows with sync off and as many other flows with it on gets its
/// SYN, and later its ACK, run once, and the empty program is run as often; each run's
/// duration is the kernel's, so the syscall is not in it. Each chunk goes to the next copy,
/// whose sync setting is switched for each turn: sync off, the empty program, sync on, and on
/// every other round of the copies the other way round. A copy's first turn of a chunk runs
/// slower (its table's memory has gone cold while the other copies ran), so each side goes
/// first, on every copy, as often; and neither follows the other directly. After every turn
/// the ring is drained: with
/// sync on, exactly the turn's flows must have been announced, in order, as ESTABLISHED, by
/// their ACKs; with it off, nothing.
fn confirm(params: &Params, refs: &[RefPrograms], labs: &mut [Lab]) -> Result<ConfirmReport> {
    // Every copy holds the same entries; alternate flows go to either side.
    let both = fitting_flows(&labs[0], 2 * params.sync_confirm_flows)?;
    let sides: [Vec<(Ipv4Addr, u16)>; 2] = [
        both.iter().step_by(2).copied().collect(),
        both.iter().skip(1).step_by(2).copied().collect(),
    ];
    let chunk = params.sync_confirm_chunk.max(1);
    let copies = labs.len();
    let established = ConnState::Established as u8;
    let watch = OthersWatch::start(&[]);
    // Kernel ns of every run: [SYN, ACK] x [empty, off, on].
    let mut ns: [[Vec<f64>; 3]; 2] = Default::default();
    let mut chunk_ratios = Vec::new();
    let mut overrun = 0u64;
    let mut events = [0u64; 2];
    for (phase, tcp_flags) in [flags::SYN, flags::ACK].into_iter().enumerate() {
        for k in 0..sides[0].len().div_ceil(chunk) {
            let copy = k % copies;
            let lab = &mut labs[copy];
            let mut medians = [f64::NAN; 3];
            let order = if (k / copies).is_multiple_of(2) {
                [1, 0, 2]
            } else {
                [2, 0, 1]
            };
            for side in order {
                // The empty program runs the frames of the side off.
                let flows = &sides[side.max(1) - 1];
                let part = &flows[k * chunk..((k + 1) * chunk).min(flows.len())];
                let frames: Vec<Vec<u8>> = part
                    .iter()
                    .map(|&(src, sport)| Frame::tcp(src, sport, VIP, 80, tcp_flags).build())
                    .collect();
                if side > 0 {
                    lab.dp.set_sync(side == 2)?;
                }
                let mut runs = Vec::with_capacity(frames.len());
                for frame in &frames {
                    let (out, action) = if side == 0 {
                        (refs[copy].run(EMPTY, frame, 1)?, XDP_PASS)
                    } else {
                        (lab.dp.test_run(frame)?, XDP_TX)
                    };
                    ensure!(
                        out.action == action,
                        "sync: confirming flows: action {} where {action} was expected",
                        out.action
                    );
                    runs.push(out.duration_ns as f64);
                }
                medians[side] = median(&runs);
                ns[phase][side].extend(runs);
                if side == 0 {
                    continue;
                }
                let drain = lab.dp.drain_sync_ring(usize::MAX)?;
                overrun += drain.lost;
                let announced = drain.events;
                events[side - 1] += announced.len() as u64;
                if side == 1 || tcp_flags == flags::SYN {
                    ensure!(
                        announced.is_empty(),
                        "sync: {} flows announced by SYNs or with sync off",
                        announced.len()
                    );
                } else {
                    ensure!(
                        announced.len() == part.len(),
                        "sync: {} announcements for {} confirmed flows",
                        announced.len(),
                        part.len()
                    );
                }
                for (i, &(src, sport)) in part.iter().enumerate() {
                    let key = flow(src, sport, VIP, 80, proto::TCP);
                    if let Some(event) = announced.get(i) {
                        ensure!(
                            event.flow() == Some(SyncedFlow::V4(key)) && event.state == established,
                            "sync: an announcement names another flow or state: {event:?}"
                        );
                    } else if tcp_flags == flags::ACK {
                        ensure!(
                            lab.dp
                                .conn4(&key)
                                .is_some_and(|e| e.conn.state == established),
                            "sync: an ACK with sync off did not confirm its flow"
                        );
                    }
                }
            }
            if tcp_flags == flags::ACK {
                chunk_ratios.push(medians[2] / medians[1]);
            }
        }
    }
    let others = watch.pct();
    ensure!(
        overrun == 0,
        "sync: {overrun} announcements overwritten before they were read"
    );
    let [syn, ack] = &ns;
    let empty: Vec<f64> = syn[0].iter().chain(&ack[0]).copied().collect();
    let empty_ns = median(&empty);
    let (ack_off, ack_on) = (median(&ack[1]), median(&ack[2]));
    let (syn_off, syn_on) = (median(&syn[1]), median(&syn[2]));
    Ok(ConfirmReport {
        flows: sides[1].len(),
        chunk,
        copies,
        empty_ns,
        syn_off_ns: syn_off,
        syn_on_ns: syn_on,
        ack_off_ns: ack_off,
        ack_on_ns: ack_on,
        ratio: ack_on / ack_off,
        net_ratio: (ack_on - empty_ns) / (ack_off - empty_ns),
        syn_ratio: syn_on / syn_off,
        chunk_ratios,
        events_on: events[1],
        events_off: events[0],
        others_pct: others,
    })
}
