//! Fixed snapshots shared by the tests of `control`, `ipvsadm` and `metrics`.

use std::net::{IpAddr, SocketAddr};

use super::{
    ConnInfo, Counters, Forward, GlobalInfo, HealthInfo, PeerInfo, PersistInfo, Rates, RealInfo,
    ServiceInfo, Snapshot, SyncInfo,
};
use crate::{
    config::Timeouts,
    model::{Protocol, RealKey, ServiceKey},
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn tcp(vip: &str, port: u16) -> ServiceKey {
    ServiceKey {
        vip: ip(vip),
        port,
        proto: Protocol::Tcp,
    }
}

pub fn udp(vip: &str, port: u16) -> ServiceKey {
    ServiceKey {
        vip: ip(vip),
        port,
        proto: Protocol::Udp,
    }
}

pub fn rk(addr: &str, port: u16) -> RealKey {
    RealKey {
        addr: ip(addr),
        port,
    }
}

pub fn health(checker: &str, state: &str) -> HealthInfo {
    HealthInfo {
        checker: checker.into(),
        state: state.into(),
        last_result: None,
        reason: None,
        latency_ms: None,
        since_secs: None,
    }
}

pub fn real(addr: &str, port: u16, weight: u32, active: u64, inactive: u64) -> RealInfo {
    RealInfo {
        key: rk(addr, port),
        forward: Forward::Route,
        weight,
        active_conns: active,
        inactive_conns: inactive,
        stats: Counters::default(),
        rate: Rates::default(),
        health: health("tcp_check", "up"),
        sorry_server: false,
    }
}

pub fn service(key: ServiceKey, scheduler: &str, reals: Vec<RealInfo>) -> ServiceInfo {
    ServiceInfo {
        key,
        scheduler: scheduler.into(),
        flags: Vec::new(),
        persistence: None,
        stats: Counters::default(),
        rate: Rates::default(),
        reals,
        sorry_server_active: false,
        quorum_held: true,
    }
}

pub fn persist(timeout: u32, netmask: &str) -> Option<PersistInfo> {
    Some(PersistInfo {
        timeout,
        netmask: netmask.into(),
    })
}

pub fn counters(
    conns: u64,
    in_pkts: u64,
    out_pkts: u64,
    in_bytes: u64,
    out_bytes: u64,
) -> Counters {
    Counters {
        conns,
        in_pkts,
        out_pkts,
        in_bytes,
        out_bytes,
    }
}

pub fn rates(cps: u64, in_pps: u64, out_pps: u64, in_bps: u64, out_bps: u64) -> Rates {
    Rates {
        cps,
        in_pps,
        out_pps,
        in_bps,
        out_bps,
    }
}

pub fn conn(proto: Protocol, expire: u32, state: &str, c: &str, v: &str, d: &str) -> ConnInfo {
    ConnInfo {
        proto,
        expire_secs: expire,
        state: state.into(),
        client: sa(c),
        virtual_addr: sa(v),
        real: sa(d),
    }
}

pub fn snapshot(services: Vec<ServiceInfo>) -> Snapshot {
    Snapshot {
        conn_table_size: 4096,
        timeouts: Timeouts::default(),
        services,
        conns: None,
        global: GlobalInfo::default(),
        sync: None,
    }
}

/// The RabbitMQ example of `shared/reference/ipvsadm-output-layouts.txt`.
pub fn reference() -> Snapshot {
    let reals = |port| {
        vec![
            real("10.0.0.11", port, 1, 412, 3),
            real("10.0.0.12", port, 1, 409, 5),
            real("10.0.0.13", port, 0, 17, 0),
        ]
    };
    let mut amqp = service(tcp("10.0.0.100", 5672), "wlc", reals(5672));
    amqp.stats = counters(113_786, 19_495_479, 0, 2_110_654_321, 0);
    amqp.rate = rates(12, 2301, 0, 193_000, 0);
    amqp.reals[0].stats = counters(40_269, 10_218_905, 0, 1_105_123_456, 0);
    amqp.reals[0].rate = rates(4, 770, 0, 64_500, 0);
    let mut mgmt = service(tcp("10.0.0.100", 15672), "wlc", reals(15672));
    mgmt.persistence = persist(300, "255.255.255.255");
    let mut snap = snapshot(vec![amqp, mgmt]);
    snap.conns = Some(vec![
        conn(
            Protocol::Tcp,
            899,
            "ESTABLISHED",
            "192.168.7.21:51514",
            "10.0.0.100:5672",
            "10.0.0.11:5672",
        ),
        conn(
            Protocol::Tcp,
            113,
            "FIN_WAIT",
            "192.168.7.22:40210",
            "10.0.0.100:5672",
            "10.0.0.12:5672",
        ),
        conn(
            Protocol::Tcp,
            298,
            "NONE",
            "192.168.7.21:0",
            "10.0.0.100:15672",
            "10.0.0.11:15672",
        ),
    ]);
    snap
}

/// Director sync of a director that has run a while: a multicast group and two unicast peers,
/// both heard from (one recently, one not for over a minute), every outcome and rejection
/// counted, a last error. The received records add up: per peer and per outcome.
pub fn sync_info() -> SyncInfo {
    SyncInfo {
        id: 51,
        interface: "eth0".into(),
        port: 8848,
        group: Some(ip("224.0.0.81")),
        ttl: 1,
        peers: vec![ip("10.0.0.2"), ip("10.0.0.3")],
        sender: 0x5eed_0001_9a3c_77f1,
        sent_datagrams: 48_213,
        sent_records: 1_204_977,
        send_errors: 2,
        received_datagrams: 47_990,
        received_records: 1_199_310,
        stored: 1_150_002,
        refreshed: 48_100,
        kept: 1150,
        unplaced: 54,
        no_room: 4,
        rejected_auth: 3,
        rejected_replay: 1,
        rejected_instance: 0,
        rejected_malformed: 2,
        dropped: 7,
        overrun: 11,
        lag_ms: 3.5,
        lag_ms_max: 41.5,
        heard: vec![
            PeerInfo {
                addr: Some(sa("10.0.0.2:8848")),
                sender: 0x0c1d_2e3f_4a5b_6c7d,
                last_heard_secs: 0.5,
                records: 1_012_004,
            },
            PeerInfo {
                addr: Some(sa("10.0.0.3:8848")),
                sender: 0x00f0_0000_0000_0a0b,
                last_heard_secs: 95.0,
                records: 187_306,
            },
        ],
        resync: "done: 18342 flows from 10.0.0.2 in 1.2 s".into(),
        last_error: Some("send to 10.0.0.3:8848: No route to host (1m35s ago)".into()),
    }
}

/// Several services in [`ServiceKey`] order (not ipvsadm's): persistence with a mask, UDP,
/// IPv6, weight-0 reals, sorry servers (standby and active), every health shape, counters at
/// every K/M/G/T boundary, connections of both protocols and families and a template, and
/// director sync ([`sync_info`]).
pub fn sample() -> Snapshot {
    let mut dns = service(
        udp("10.0.0.53", 53),
        "rr",
        vec![real("10.0.0.31", 53, 1, 0, 7)],
    );
    dns.reals[0].health = health("none", "up");
    dns.stats = counters(7, 7, 0, 420, 0);

    let mut web = service(
        tcp("10.0.0.100", 80),
        "wrr",
        vec![
            real("10.0.0.11", 80, 1, 1200, 34),
            real("10.0.0.12", 80, 3, 0, 0),
            real("10.0.0.13", 80, 0, 5, 1),
        ],
    );
    web.stats = counters(
        99_999_999,
        100_000_000,
        0,
        99_999_999_999,
        100_000_000_000_000,
    );
    web.rate = rates(150_000_000, 99_999_999, 0, 2_500_000_000, 0);
    web.reals[0].stats = counters(
        999_999_999,
        1_000_000_000,
        0,
        100_000_000_000,
        99_999_999_999_999,
    );
    web.reals[0].rate = rates(123_456_789, 100, 0, 100_000_000, 999_999_999);
    web.reals[1].stats = counters(1, 2, 0, 999_999_999, u64::MAX);
    web.reals[0].health = HealthInfo {
        last_result: Some("connected".into()),
        latency_ms: Some(0.42),
        since_secs: Some(3725),
        ..health("tcp_check", "up")
    };
    web.reals[1].health = HealthInfo {
        last_result: Some("failed".into()),
        reason: Some("connect refused".into()),
        latency_ms: Some(1.0),
        since_secs: Some(42),
        ..health("tcp_check", "down")
    };
    web.reals[2].health = HealthInfo {
        last_result: Some("HTTP 200".into()),
        reason: Some("weight 0".into()),
        latency_ms: Some(12.6),
        since_secs: Some(90_061),
        ..health("http_get", "draining")
    };

    let mut tls = service(
        tcp("10.0.0.100", 443),
        "sh",
        vec![
            real("10.0.0.21", 443, 2, 3, 4),
            real("10.0.0.99", 443, 1, 0, 0),
        ],
    );
    tls.persistence = persist(600, "255.255.255.0");
    tls.reals[0].health = HealthInfo {
        last_result: Some("exit 0".into()),
        latency_ms: Some(1532.0),
        since_secs: Some(59),
        ..health("misc_check", "up")
    };
    tls.reals[1].sorry_server = true;
    tls.reals[1].health = health("none", "up");

    let mut api = service(
        tcp("10.0.0.200", 8080),
        "wrr",
        vec![
            real("10.0.0.41", 8080, 1, 0, 2),
            real("10.0.0.98", 8080, 1, 6, 0),
        ],
    );
    api.sorry_server_active = true;
    api.quorum_held = false;
    api.reals[0].health = HealthInfo {
        reason: Some("timeout".into()),
        latency_ms: Some(5000.0),
        since_secs: Some(600),
        ..health("tcp_check", "down")
    };
    api.reals[1].sorry_server = true;
    api.reals[1].health = health("none", "up");

    let mut v6 = service(
        tcp("2001:db8::100", 443),
        "mh",
        vec![
            real("2001:db8::11", 443, 1, 10, 2),
            real("2001:db8:aaaa:bbbb:cccc:dddd:eeee:1011", 443, 0, 0, 0),
        ],
    );
    v6.persistence = persist(300, "128");
    v6.stats = counters(12, 140, 0, 9000, 0);
    v6.reals[1].health = HealthInfo {
        reason: Some("no neighbour".into()),
        ..health("tcp_check", "down")
    };

    let mut snap = snapshot(vec![dns, web, tls, api, v6]);
    snap.conn_table_size = 1 << 20;
    snap.timeouts = Timeouts {
        tcp: 900,
        tcpfin: 120,
        udp: 300,
    };
    snap.global = GlobalInfo {
        dataplane: lb_common::GlobalStats {
            rx: 1_000_000,
            passed: 1000,
            transmitted: 998_000,
            drop_no_real: 1000,
            conn_hits: 990_000,
            conn_misses: 10_000,
            conn_rescheduled: 3,
            conn_insert_failed: 1,
            conn_insert_refused: 8,
            conn_evicted_established: 9,
            conn_evicted_other: 10,
            fragments: 2,
            icmp_forwarded: 4,
            persist_hits: 5,
            ext_hdr_passed: 7,
        },
        conn_table_used: 1234,
        reloads_ok: 6,
        reloads_failed: 1,
        checks_run: 500,
        check_latency_ms_sum: 1250.5,
    };
    snap.sync = Some(Box::new(sync_info()));
    snap.conns = Some(vec![
        conn(
            Protocol::Tcp,
            900,
            "ESTABLISHED",
            "192.168.7.21:51514",
            "10.0.0.100:80",
            "10.0.0.11:80",
        ),
        conn(
            Protocol::Tcp,
            59,
            "SYN_RECV",
            "192.168.100.200:65535",
            "10.0.0.100:80",
            "10.0.0.12:80",
        ),
        conn(
            Protocol::Udp,
            300,
            "UDP",
            "192.168.7.30:5353",
            "10.0.0.53:53",
            "10.0.0.31:53",
        ),
        conn(
            Protocol::Tcp,
            6000,
            "NONE",
            "192.168.7.0:0",
            "10.0.0.100:443",
            "10.0.0.21:443",
        ),
        conn(
            Protocol::Tcp,
            0,
            "CLOSE",
            "[2001:db8:1::5]:40000",
            "[2001:db8::100]:443",
            "[2001:db8::11]:443",
        ),
    ]);
    snap
}

/// Dual stack: IPv4 and IPv6 services side by side, one port served over both families, IPv6
/// persistence by a /64 (ipvsadm's `mask 64`), UDP over IPv6, and connections and a template
/// of both families.
pub fn dual_stack() -> Snapshot {
    let mut web4 = service(
        tcp("10.0.0.100", 80),
        "wrr",
        vec![
            real("10.0.0.11", 80, 2, 120, 3),
            real("10.0.0.12", 80, 1, 60, 1),
        ],
    );
    web4.stats = counters(5000, 81_000, 0, 9_400_000, 0);
    web4.rate = rates(20, 310, 0, 36_000, 0);
    let mut web6 = service(
        tcp("2001:db8::100", 80),
        "wrr",
        vec![
            real("2001:db8::11", 80, 2, 80, 2),
            real("2001:db8::12", 80, 1, 41, 0),
        ],
    );
    web6.stats = counters(3000, 150_000_000, 0, 210_000_000_000, 0);
    web6.rate = rates(12, 190, 0, 24_000, 0);
    web6.reals[0].stats = counters(2000, 100_000_000, 0, 140_000_000_000, 0);
    web6.reals[0].rate = rates(8, 127, 0, 16_000, 0);
    let mut tls6 = service(
        tcp("2001:db8::100", 443),
        "sh",
        vec![real("2001:db8:0:1::21", 443, 1, 7, 0)],
    );
    tls6.persistence = persist(300, "64");
    let mut dns6 = service(
        udp("2001:db8::53", 53),
        "rr",
        vec![real("2001:db8::31", 53, 1, 0, 9)],
    );
    dns6.stats = counters(9, 9, 0, 700, 0);
    let dns4 = service(
        udp("10.0.0.53", 53),
        "rr",
        vec![real("10.0.0.31", 53, 1, 0, 4)],
    );
    let mut snap = snapshot(vec![web4, dns4, web6, tls6, dns6]);
    snap.conn_table_size = (1 << 20) + (1 << 18);
    snap.conns = Some(vec![
        conn(
            Protocol::Tcp,
            899,
            "ESTABLISHED",
            "192.168.7.21:51514",
            "10.0.0.100:80",
            "10.0.0.11:80",
        ),
        conn(
            Protocol::Tcp,
            897,
            "ESTABLISHED",
            "[2001:db8:1:2::5]:40000",
            "[2001:db8::100]:80",
            "[2001:db8::12]:80",
        ),
        conn(
            Protocol::Tcp,
            61,
            "SYN_RECV",
            "[2001:db8:1:2::6]:40001",
            "[2001:db8::100]:443",
            "[2001:db8:0:1::21]:443",
        ),
        conn(
            Protocol::Tcp,
            299,
            "NONE",
            "[2001:db8:1:2::]:0",
            "[2001:db8::100]:443",
            "[2001:db8:0:1::21]:443",
        ),
        conn(
            Protocol::Udp,
            300,
            "UDP",
            "[2001:db8:1:2::7]:5353",
            "[2001:db8::53]:53",
            "[2001:db8::31]:53",
        ),
    ]);
    snap
}
