//! ipvsadm's output layouts, produced from a [`Snapshot`], so that `lbadm` answers exactly as
//! `ipvsadm` would (same columns, widths, trailing spaces, number scaling and ordering).
//!
//! Everything here is a pure function of its arguments; the only outside input is name
//! resolution (`-L` without `-n`), which goes through the [`Resolver`] trait so that tests can
//! be deterministic.
//!
//! Layouts follow ipvsadm 1.31:
//! - services are ordered by address family, protocol (TCP before UDP), address, port; reals by
//!   address and port;
//! - an IPv4 `PROTO  ADDR:PORT` column is cut at 33 characters and an IPv4 real at 28 (only
//!   names can be that long); IPv6 ones are never cut and push the columns right;
//! - `--stats`/`--rate` numbers are 9 wide, shown in K/M/G/T above 10^8 unless `--exact`
//!   (see [`largenum`]); a real's CPS, InPPS and OutPPS are never scaled.
//!
//! Two deliberate differences: addresses are sorted numerically (ipvsadm's comparator
//! overflows for addresses more than 2^31 apart), and IPv6 addresses get names too (ipvsadm
//! asks the resolver with an IPv4 length, so they always print as numbers).
//!
//! A sorry server shows only while it stands in for the reals (IPVS has it only then), except
//! with `--health`, which shows every real.
//!
//! `--health` (ours) appends columns to the default layout's real lines, after ipvsadm's own
//! (which keep their widths and trailing spaces):
//! `Checker` (10), `State` (8), `Since` (7), `Latency` (8), `Result` (10), `Reason`; an
//! unknown value is `-`, and the line has no trailing space.
//!
//! `-L --daemon` (director sync) is [`daemons`], in its own file.

mod daemon;
mod resolve;
#[cfg(test)]
mod tests;

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

pub use self::{
    daemon::daemons,
    resolve::{NumericResolver, Resolver, Services, SystemResolver},
};
use crate::{
    config::Timeouts,
    control::{ConnInfo, GlobalInfo, RealInfo, ServiceInfo, Snapshot},
    model::{Protocol, ServiceKey},
};

/// The IPVS version ipvsadm prints in its first line.
pub const IPVS_VERSION: &str = "1.2.1";

/// Longest `addr:port` text ipvsadm builds (its buffer holds 60 bytes with the NUL).
const MAX_ADDRPORT: usize = 59;
/// Width of the `Prot LocalAddress:Port` column; IPv4 service names are cut to it.
const SERVICE_WIDTH: usize = 33;
/// Width of the `RemoteAddress:Port` column; IPv4 real names are cut to it.
const REAL_WIDTH: usize = 28;
/// Length of ipvsadm's real line up to and including the padded `InActConn` column.
const DEFAULT_REAL_LINE: usize = 70;

/// How `list` lays out the table (`ipvsadm -L` options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    /// `-n`: numeric addresses and ports.
    pub numeric: bool,
    /// `--exact`: no K/M/G/T scaling.
    pub exact: bool,
    /// `--stats`: counters layout (wins over `rate`, as in ipvsadm).
    pub stats: bool,
    /// `--rate`: rates layout.
    pub rate: bool,
    /// `--health` (ours): health columns on the default layout's real lines.
    pub health: bool,
    /// `-t/-u VIP:PORT`: only this service, without the version line.
    pub only: Option<ServiceKey>,
}

/// `ipvsadm -L [-n] [--stats|--rate] [--exact] [-t|-u service]`, plus `--health`.
///
/// Resolves names with [`SystemResolver`] unless `fmt.numeric`. With `fmt.only` naming a
/// service the snapshot does not have, only the column titles are printed (check first).
pub fn list(snap: &Snapshot, fmt: &Format) -> String {
    if fmt.numeric {
        list_with(snap, fmt, &NumericResolver)
    } else {
        list_with(snap, fmt, &SystemResolver::new())
    }
}

/// [`list`] with a given resolver (used only when `fmt.numeric` is false).
pub fn list_with(snap: &Snapshot, fmt: &Format, resolver: &dyn Resolver) -> String {
    let resolver: &dyn Resolver = if fmt.numeric {
        &NumericResolver
    } else {
        resolver
    };
    let mut out = String::new();
    let services: Vec<&ServiceInfo> = match fmt.only {
        Some(key) => snap.services.iter().filter(|s| s.key == key).collect(),
        None => {
            let _ = writeln!(
                out,
                "IP Virtual Server version {IPVS_VERSION} (size={})",
                snap.conn_table_size
            );
            sorted_services(&snap.services)
        }
    };
    let layout = Layout::of(fmt);
    title(&mut out, layout);
    for svc in services {
        service_entry(&mut out, svc, layout, fmt.exact, resolver);
    }
    out
}

/// Which of ipvsadm's listing layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Default { health: bool },
    Stats,
    Rate,
}

impl Layout {
    fn of(fmt: &Format) -> Self {
        if fmt.stats {
            Layout::Stats
        } else if fmt.rate {
            Layout::Rate
        } else {
            Layout::Default { health: fmt.health }
        }
    }
}

/// Services in ipvsadm's order: family, protocol number, address, port.
fn sorted_services(services: &[ServiceInfo]) -> Vec<&ServiceInfo> {
    let mut v: Vec<&ServiceInfo> = services.iter().collect();
    v.sort_by_key(|s| {
        (
            s.key.vip.is_ipv6(),
            s.key.proto.number(),
            s.key.vip,
            s.key.port,
        )
    });
    v
}

/// Reals ipvsadm would show, in its order (address, port). With keepalived, a real that fails
/// its check is removed from IPVS (unless `inhibit_on_failure`, which keeps it at weight 0),
/// and a sorry server is in IPVS only while it stands in for the reals: so a down real and a
/// standby sorry server show only in the health view.
fn visible_reals(svc: &ServiceInfo, layout: Layout) -> Vec<&RealInfo> {
    let all = matches!(layout, Layout::Default { health: true });
    let mut v: Vec<&RealInfo> = svc
        .reals
        .iter()
        .filter(|r| all || !r.sorry_server || svc.sorry_server_active)
        .filter(|r| all || r.health.state != "down")
        .collect();
    v.sort_by_key(|r| (r.key.addr, r.key.port));
    v
}

fn title(out: &mut String, layout: Layout) {
    let numbers = |out: &mut String, names: [&str; 5]| {
        let _ = write!(out, "{:<SERVICE_WIDTH$}", "Prot LocalAddress:Port");
        for n in names {
            let _ = write!(out, " {n:>8}");
        }
        out.push_str("\n  -> RemoteAddress:Port\n");
    };
    match layout {
        Layout::Stats => numbers(out, ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]),
        Layout::Rate => numbers(out, ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]),
        Layout::Default { health } => {
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            let reals = "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn";
            if health {
                let _ = writeln!(
                    out,
                    "{reals:<DEFAULT_REAL_LINE$} {}",
                    health_columns(["Checker", "State", "Since", "Latency", "Result", "Reason"])
                );
            } else {
                let _ = writeln!(out, "{reals}");
            }
        }
    }
}

fn service_entry(
    out: &mut String,
    svc: &ServiceInfo,
    layout: Layout,
    exact: bool,
    resolver: &dyn Resolver,
) {
    let key = svc.key;
    let mut name = format!(
        "{}  {}",
        key.proto,
        addrport(key.vip, key.port, key.proto, resolver)
    );
    if key.vip.is_ipv4() {
        truncate(&mut name, SERVICE_WIDTH);
    }
    match layout {
        Layout::Stats => {
            let _ = write!(out, "{name:<SERVICE_WIDTH$}");
            counters(out, &svc.stats, exact);
        }
        Layout::Rate => {
            let _ = write!(out, "{name:<SERVICE_WIDTH$}");
            let r = &svc.rate;
            for n in [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps] {
                out.push_str(&largenum(n, exact));
            }
        }
        Layout::Default { .. } => {
            let _ = write!(out, "{name} {}", svc.scheduler);
            // As ipvsadm: the scheduler's flags in parentheses, `ops` after persistence.
            let sched_flags: Vec<&str> = svc
                .flags
                .iter()
                .map(String::as_str)
                .filter(|f| *f != "ops")
                .collect();
            if !sched_flags.is_empty() {
                let _ = write!(out, " ({})", sched_flags.join(","));
            }
            if let Some(p) = &svc.persistence {
                let _ = write!(out, " persistent {}", p.timeout);
                if !is_host_mask(&p.netmask) {
                    let _ = write!(out, " mask {}", p.netmask);
                }
            }
            if svc.flags.iter().any(|f| f == "ops") {
                out.push_str(" ops");
            }
        }
    }
    out.push('\n');

    for real in visible_reals(svc, layout) {
        let mut name = addrport(real.key.addr, real.key.port, key.proto, resolver);
        if key.vip.is_ipv4() {
            truncate(&mut name, REAL_WIDTH);
        }
        match layout {
            Layout::Stats => {
                let _ = write!(out, "  -> {name:<REAL_WIDTH$}");
                counters(out, &real.stats, exact);
            }
            Layout::Rate => {
                let r = &real.rate;
                let _ = write!(
                    out,
                    "  -> {name:<REAL_WIDTH$} {:>8} {:>8} {:>8}",
                    r.cps, r.in_pps, r.out_pps
                );
                out.push_str(&largenum(r.in_bps, exact));
                out.push_str(&largenum(r.out_bps, exact));
            }
            Layout::Default { health } => {
                let _ = write!(
                    out,
                    "  -> {name:<REAL_WIDTH$} {:<7} {:<6} {:<10} {:<10}",
                    real.forward.name(),
                    real.weight,
                    real.active_conns,
                    real.inactive_conns
                );
                if health {
                    out.push(' ');
                    out.push_str(&health_line(svc, real));
                }
            }
        }
        out.push('\n');
    }
}

fn counters(out: &mut String, c: &crate::control::Counters, exact: bool) {
    for n in [c.conns, c.in_pkts, c.out_pkts, c.in_bytes, c.out_bytes] {
        out.push_str(&largenum(n, exact));
    }
}

/// The health columns of one real (see the module documentation).
fn health_line(svc: &ServiceInfo, real: &RealInfo) -> String {
    let h = &real.health;
    let dash = || "-".to_owned();
    let mut reason = h.reason.clone().unwrap_or_else(dash);
    if real.sorry_server {
        let role = if svc.sorry_server_active {
            "sorry server (active)"
        } else {
            "sorry server (standby)"
        };
        reason = match &h.reason {
            Some(r) => format!("{role}: {r}"),
            None => role.to_owned(),
        };
    }
    health_columns([
        &h.checker,
        &h.state,
        &h.since_secs.map_or_else(dash, duration),
        &h.latency_ms.map_or_else(dash, latency),
        h.last_result.as_deref().unwrap_or("-"),
        &reason,
    ])
}

/// Lays out the six health columns; the last one is not padded.
fn health_columns(cols: [&str; 6]) -> String {
    let [checker, state, since, latency, result, reason] = cols;
    format!("{checker:<10} {state:<8} {since:<7} {latency:<8} {result:<10} {reason}")
}

/// A duration in seconds, two units at most: `42s`, `12m05s`, `3h07m`, `5d03h`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A check latency: `0.4ms`, `12ms`, `1.25s`.
fn latency(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "-".to_owned()
    } else if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Whether a persistence netmask is the per-client one (ipvsadm prints no `mask` then).
fn is_host_mask(mask: &str) -> bool {
    match mask.trim() {
        "255.255.255.255" | "32" | "/32" | "128" | "/128" => true,
        m => m
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|a| a.to_bits() == u128::MAX),
    }
}

/// A number the way ipvsadm's `--stats`/`--rate` prints it: 9 characters, right-aligned.
///
/// Below 10^8 as is; then in thousands (`K`) below 10^9, millions (`M`) below 10^11, billions
/// (`G`) below 10^14 and trillions (`T`) above, truncated, in 8 digits plus the letter. With
/// `exact`, the full number, one space wider than itself when it has more than 8 digits.
pub fn largenum(n: u64, exact: bool) -> String {
    if exact {
        let digits = n.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        return format!("{digits:>width$}");
    }
    match n {
        n if n < 100_000_000 => format!("{n:>9}"),
        n if n < 1_000_000_000 => format!("{:>8}K", n / 1_000),
        n if n < 100_000_000_000 => format!("{:>8}M", n / 1_000_000),
        n if n < 100_000_000_000_000 => format!("{:>8}G", n / 1_000_000_000),
        n => format!("{:>8}T", n / 1_000_000_000_000),
    }
}

/// `addr:port` as ipvsadm writes it: `[addr]:port` for IPv6, names when the resolver has them.
fn addrport(addr: IpAddr, port: u16, proto: Protocol, resolver: &dyn Resolver) -> String {
    let host = resolver.host(addr).unwrap_or_else(|| addr.to_string());
    let port = resolver
        .service(port, proto)
        .unwrap_or_else(|| port.to_string());
    let mut s = if addr.is_ipv4() {
        format!("{host}:{port}")
    } else {
        format!("[{host}]:{port}")
    };
    truncate(&mut s, MAX_ADDRPORT);
    s
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// `ipvsadm -L [-n] -c`: the connection table, in the snapshot's order.
///
/// A snapshot taken without connections prints the titles only.
pub fn connections(snap: &Snapshot, numeric: bool) -> String {
    if numeric {
        connections_with(snap, &NumericResolver)
    } else {
        connections_with(snap, &SystemResolver::new())
    }
}

/// [`connections`] with a given resolver.
pub fn connections_with(snap: &Snapshot, resolver: &dyn Resolver) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(
        out,
        "pro expire {:<11} {:<18} {:<18} destination",
        "state", "source", "virtual"
    );
    for c in snap.conns.iter().flatten() {
        let name = |a: std::net::SocketAddr| addrport(a.ip(), a.port(), c.proto, resolver);
        let expire = format!("{:02}:{:02}", c.expire_secs / 60, c.expire_secs % 60);
        let _ = writeln!(
            out,
            "{:<3} {expire:<6} {:<11} {:<18} {:<18} {}",
            c.proto.name(),
            c.state,
            name(c.client),
            name(c.virtual_addr),
            name(c.real)
        );
    }
    out
}

/// `ipvsadm -L --timeout`.
pub fn timeouts(snap: &Snapshot) -> String {
    let t = snap.timeouts;
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcpfin, t.udp
    )
}

/// `lbadm -L --conn-table` (ours): how full the connection tables are and how they are
/// coping: inserts refused to protect established connections, live entries evicted by state,
/// inserts lost to a concurrent writer.
pub fn conn_table(snap: &Snapshot) -> String {
    let g = &snap.global;
    let d = &g.dataplane;
    let size = u64::from(snap.conn_table_size);
    let percent = if size == 0 {
        0.0
    } else {
        g.conn_table_used as f64 * 100.0 / size as f64
    };
    format!(
        "Connection table: {} of {size} entries live ({percent:.1}%)\n\
         Refused inserts (set full of established connections): {}\n\
         Evicted live entries: established {}, other {}\n\
         Inserts lost to a concurrent writer: {}\n",
        g.conn_table_used,
        d.conn_insert_refused,
        d.conn_evicted_established,
        d.conn_evicted_other,
        d.conn_insert_failed,
    )
}

/// Which part of the snapshot `--json` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonView {
    /// `-L` (any layout): `{"conn_table_size", "services", "global"}`; with a service
    /// (`-L -t`), that service's object alone.
    Services {
        /// Only this service.
        only: Option<ServiceKey>,
    },
    /// `-L -c`: the array of connections.
    Connections,
    /// `-L --timeout`: `{"tcp", "tcpfin", "udp"}`.
    Timeouts,
    /// `-L --conn-table`: `{"size", "live", "insert_refused", "evicted_established",
    /// "evicted_other", "insert_failed"}`.
    ConnTable,
    /// `-L --daemon`: the snapshot's `sync` object, `null` when sync is off.
    Daemon,
}

/// `--json`: the part of the snapshot a listing shows, pretty-printed, with the snapshot's
/// field names; ends with a newline. Services are in ipvsadm's order.
pub fn json(snap: &Snapshot, view: JsonView) -> String {
    #[derive(Serialize)]
    struct All<'a> {
        conn_table_size: u32,
        services: Vec<&'a ServiceInfo>,
        global: &'a GlobalInfo,
    }
    #[derive(Serialize)]
    struct ConnTableJson {
        size: u32,
        live: u64,
        insert_refused: u64,
        evicted_established: u64,
        evicted_other: u64,
        insert_failed: u64,
    }
    #[derive(Serialize)]
    struct TimeoutsJson {
        tcp: u32,
        tcpfin: u32,
        udp: u32,
    }
    let no_conns: &[ConnInfo] = &[];
    let text = match view {
        JsonView::Services { only: None } => serde_json::to_string_pretty(&All {
            conn_table_size: snap.conn_table_size,
            services: sorted_services(&snap.services),
            global: &snap.global,
        }),
        JsonView::Services { only: Some(key) } => {
            serde_json::to_string_pretty(&snap.services.iter().find(|s| s.key == key))
        }
        JsonView::Connections => {
            serde_json::to_string_pretty(snap.conns.as_deref().unwrap_or(no_conns))
        }
        JsonView::Timeouts => {
            let Timeouts { tcp, tcpfin, udp } = snap.timeouts;
            serde_json::to_string_pretty(&TimeoutsJson { tcp, tcpfin, udp })
        }
        JsonView::ConnTable => {
            let d = &snap.global.dataplane;
            serde_json::to_string_pretty(&ConnTableJson {
                size: snap.conn_table_size,
                live: snap.global.conn_table_used,
                insert_refused: d.conn_insert_refused,
                evicted_established: d.conn_evicted_established,
                evicted_other: d.conn_evicted_other,
                insert_failed: d.conn_insert_failed,
            })
        }
        JsonView::Daemon => serde_json::to_string_pretty(&snap.sync),
    };
    // Serializing plain data into a String cannot fail.
    let mut text = text.unwrap_or_default();
    text.push('\n');
    text
}
