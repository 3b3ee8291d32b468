//! A loaded data plane for packet tests: the real program and maps in the kernel, driven
//! through the same planner the agent uses, exercised with BPF_PROG_TEST_RUN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_userspace::{
    dataplane::{Dataplane, LoadOptions, TestRunOutcome},
    model::Limits,
    model::{
        DesiredState, Health, Persistence, Protocol, RealKey, RealSpec, SchedFlags, Scheduler,
        ServiceKey, ServiceSpec, Thresholds,
    },
    reconcile::plan::{Installed, Op},
};

use crate::packet::{DIRECTOR_MAC, dst_mac};

/// XDP_DROP.
pub const XDP_DROP: u32 = 1;
/// XDP_PASS.
pub const XDP_PASS: u32 = 2;
/// XDP_TX.
pub const XDP_TX: u32 = 3;

/// The data plane clock at the start of a packet test (tests advance it to age entries).
pub const START_CLOCK: u32 = 1_000_000;

/// Small maps for tests: cheap to create, one per test.
pub fn test_limits() -> Limits {
    Limits {
        max_services: 8,
        max_reals: 64,
        max_table_size: 65_537,
        conn_entries: 4096,
        persist_entries: 1024,
        conn_entries6: 4096,
        persist_entries6: 1024,
    }
}

/// A loaded program with its maps and the planner's view of them.
pub struct Lab {
    /// The data plane.
    pub dp: Dataplane,
    /// What the planner installed.
    pub installed: Installed,
    /// The last desired state applied.
    pub desired: DesiredState,
}

impl Lab {
    /// Loads the embedded program with test limits and the director MAC [`DIRECTOR_MAC`].
    pub fn new() -> Self {
        Self::with_limits(test_limits())
    }

    /// Loads with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        let mut dp = Dataplane::load(&LoadOptions {
            limits,
            ebpf_log_level: 0,
        })
        .unwrap_or_else(|e| panic!("loading the XDP program failed (are we root?): {e}"));
        dp.set_mac(DIRECTOR_MAC);
        dp.set_clock(START_CLOCK);
        Self {
            dp,
            installed: Installed::new(limits),
            desired: DesiredState::default(),
        }
    }

    /// Plans and applies `desired`; returns the ops.
    pub fn apply(&mut self, desired: &DesiredState) -> Vec<Op> {
        let (ops, next) = self
            .installed
            .plan(desired)
            .unwrap_or_else(|e| panic!("plan rejected: {e}"));
        self.dp.apply(&ops).expect("apply");
        self.installed = next;
        self.desired = desired.clone();
        ops
    }

    /// Runs the program once on each frame: how many went to each of `reals` (by the MAC they
    /// were sent to), dropped ones under `None`. Panics on another action or an unknown MAC.
    pub fn destinations(
        &self,
        frames: impl IntoIterator<Item = Vec<u8>>,
        reals: &[Ipv4Addr],
    ) -> std::collections::BTreeMap<Option<Ipv4Addr>, u32> {
        let mut seen = std::collections::BTreeMap::new();
        for frame in frames {
            let out = self.run(&frame);
            let to = match out.action {
                XDP_TX => {
                    let mac = dst_mac(&out.frame);
                    let real = reals.iter().copied().find(|r| mac_of(*r) == mac);
                    Some(real.unwrap_or_else(|| panic!("sent to an unknown MAC {mac:02x?}")))
                }
                XDP_DROP => None,
                other => panic!("unexpected action {other}"),
            };
            *seen.entry(to).or_default() += 1;
        }
        seen
    }

    /// Runs the program on a frame.
    pub fn run(&self, frame: &[u8]) -> TestRunOutcome {
        self.dp
            .test_run(frame)
            .unwrap_or_else(|e| panic!("test run of a {}-byte frame: {e}", frame.len()))
    }

    /// Index of a real in `REALS`.
    pub fn real_index(&self, svc: &ServiceKey, real: &RealKey) -> u32 {
        self.installed.services[svc].reals[real].index
    }

    /// Id of a service.
    pub fn service_id(&self, svc: &ServiceKey) -> u32 {
        self.installed.services[svc].id
    }

    /// Sets the counts of real `index` to `(active, inactive)` connection-table entries, as if
    /// it held them.
    pub fn set_load(&mut self, index: u32, active: i64, inactive: i64) {
        let now = self.dp.real_load(index).expect("real load");
        let delta = lb_common::RealLoad {
            active: active - now.active,
            inactive: inactive - now.inactive,
            ..Default::default()
        };
        self.dp.adjust_real_load(index, delta).expect("adjust load");
    }

    /// The counts of real `index`'s connection-table entries, as the data plane keeps them.
    pub fn load_of(&self, index: u32) -> (i64, i64) {
        let l = self.dp.real_load(index).expect("real load");
        (l.active, l.inactive)
    }

    /// Moves the data plane's clock forward.
    pub fn advance_clock(&mut self, seconds: u32) {
        let now = self.dp.clock();
        self.dp.set_clock(now + seconds);
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP service key.
pub fn tcp(vip: Ipv4Addr, port: u16) -> ServiceKey {
    ServiceKey {
        vip: IpAddr::V4(vip),
        port,
        proto: Protocol::Tcp,
    }
}

/// A UDP service key.
pub fn udp(vip: Ipv4Addr, port: u16) -> ServiceKey {
    ServiceKey {
        vip: IpAddr::V4(vip),
        port,
        proto: Protocol::Udp,
    }
}

/// A real key.
pub fn rk(addr: Ipv4Addr, port: u16) -> RealKey {
    RealKey {
        addr: IpAddr::V4(addr),
        port,
    }
}

/// The MAC tests give the real at `addr`: 02:00:<addr octets>.
pub fn mac_of(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// A service spec over reals `(address, weight)` on `port`, Maglev, table size M.
pub fn spec(port: u16, m: u32, reals: &[(Ipv4Addr, u32)]) -> ServiceSpec {
    let reals: Vec<(IpAddr, u32)> = reals.iter().map(|&(a, w)| (a.into(), w)).collect();
    spec_any(port, m, &reals)
}

/// A service spec over reals of either family (MACs from [`mac_of`] and [`mac_of6`]).
pub fn spec_any(port: u16, m: u32, reals: &[(IpAddr, u32)]) -> ServiceSpec {
    ServiceSpec {
        scheduler: Scheduler::Maglev,
        flags: SchedFlags::default(),
        persistence: None,
        table_size: m,
        reals: reals
            .iter()
            .map(|&(a, w)| {
                (
                    RealKey { addr: a, port },
                    RealSpec {
                        weight: w,
                        thresholds: Thresholds::default(),
                        mac: Some(mac_of_any(a)),
                        health: Health::Up,
                    },
                )
            })
            .collect(),
    }
}

/// The same spec with persistence on.
pub fn persistent(mut s: ServiceSpec, timeout: u32, granularity: Ipv4Addr) -> ServiceSpec {
    s.persistence = Some(Persistence {
        timeout,
        granularity,
        prefix6: 128,
    });
    s
}

/// An IPv6 TCP service key.
pub fn tcp6(vip: Ipv6Addr, port: u16) -> ServiceKey {
    ServiceKey {
        vip: IpAddr::V6(vip),
        port,
        proto: Protocol::Tcp,
    }
}

/// An IPv6 UDP service key.
pub fn udp6(vip: Ipv6Addr, port: u16) -> ServiceKey {
    ServiceKey {
        vip: IpAddr::V6(vip),
        port,
        proto: Protocol::Udp,
    }
}

/// An IPv6 real key.
pub fn rk6(addr: Ipv6Addr, port: u16) -> RealKey {
    RealKey {
        addr: IpAddr::V6(addr),
        port,
    }
}

/// The MAC tests give the IPv6 real at `addr`: 02:06:<the address's last 4 bytes> (never one
/// of [`mac_of`]'s).
pub fn mac_of6(addr: Ipv6Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x06, o[12], o[13], o[14], o[15]]
}

/// [`mac_of`] or [`mac_of6`].
pub fn mac_of_any(addr: IpAddr) -> [u8; 6] {
    match addr {
        IpAddr::V4(a) => mac_of(a),
        IpAddr::V6(a) => mac_of6(a),
    }
}

/// A service spec over IPv6 reals `(address, weight)` on `port`, Maglev, table size M.
pub fn spec6(port: u16, m: u32, reals: &[(Ipv6Addr, u32)]) -> ServiceSpec {
    let reals: Vec<(IpAddr, u32)> = reals.iter().map(|&(a, w)| (a.into(), w)).collect();
    spec_any(port, m, &reals)
}

/// The same spec with persistence on, IPv6 clients grouped by their first `prefix_len` bits
/// (128 = per client).
pub fn persistent6(mut s: ServiceSpec, timeout: u32, prefix_len: u8) -> ServiceSpec {
    s.persistence = Some(Persistence {
        timeout,
        granularity: Ipv4Addr::BROADCAST,
        prefix6: prefix_len,
    });
    s
}

/// A desired state from services.
pub fn desired(services: Vec<(ServiceKey, ServiceSpec)>) -> DesiredState {
    DesiredState {
        services: services.into_iter().collect(),
    }
}

/// The frame `input` as the program must emit it when forwarding to `real_mac`: destination
/// MAC = the real, source MAC = the director, every other byte unchanged.
pub fn forwarded(input: &[u8], real_mac: [u8; 6]) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&real_mac);
    out[6..12].copy_from_slice(&DIRECTOR_MAC);
    out
}

/// Runs `frame`, asserts it was forwarded with only the MACs changed, and returns the real's
/// MAC.
#[track_caller]
pub fn expect_tx(lab: &Lab, frame: &[u8]) -> [u8; 6] {
    let out = lab.run(frame);
    assert_eq!(out.action, XDP_TX, "expected XDP_TX");
    let mac = dst_mac(&out.frame);
    assert_eq!(out.frame, forwarded(frame, mac), "only the MACs may change");
    mac
}

/// Runs `frame` and asserts it was passed to the kernel untouched.
#[track_caller]
pub fn expect_pass(lab: &Lab, frame: &[u8]) {
    let out = lab.run(frame);
    assert_eq!(out.action, XDP_PASS, "expected XDP_PASS");
    assert_eq!(out.frame, frame, "a passed frame must be untouched");
}

/// Runs `frame` and asserts it was dropped.
#[track_caller]
pub fn expect_drop(lab: &Lab, frame: &[u8]) {
    assert_eq!(lab.run(frame).action, XDP_DROP, "expected XDP_DROP");
}
