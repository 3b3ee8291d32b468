//! System tests of `lb_userspace::netlink` in network namespaces: link facts, neighbour
//! resolution through managed entries (IPv4 and IPv6), following MAC changes and replaced
//! reals, unowned IPs, and VIP addresses. Needs root.
//!
//! Every test runs its async part on a tokio runtime created inside the director's
//! namespace, so the rtnetlink sockets belong to that namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_tests::netns::{Host, Lan, Netns, format_mac};
use lb_userspace::netlink::{MacState, NeighEvent, NeighState, NeighbourTracker, Netlink};
use tokio::sync::mpsc::UnboundedReceiver;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "netlink system tests need root");
}

/// Runs `f` to completion on a multi-threaded runtime created inside `ns`, so that the
/// tracker's tasks keep running while the test blocks on `ip` commands.
fn run_in<F, Fut>(ns: &Netns, f: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    ns.enter(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f());
    });
}

/// Waits for the first event satisfying `pred`, skipping others; panics after `limit`.
async fn wait_event(
    rx: &mut UnboundedReceiver<NeighEvent>,
    limit: Duration,
    what: &str,
    pred: impl Fn(&NeighEvent) -> bool,
) -> NeighEvent {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return ev,
            Ok(Some(ev)) => eprintln!("skipping event {ev:?} while waiting for {what}"),
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("no event within {limit:?}: {what}"),
        }
    }
}

/// Waits until the tracker's view satisfies `pred`; panics after `limit`.
async fn wait_current(
    tracker: &NeighbourTracker,
    limit: Duration,
    what: &str,
    pred: impl Fn(&BTreeMap<IpAddr, MacState>) -> bool,
) -> BTreeMap<IpAddr, MacState> {
    let started = Instant::now();
    loop {
        let cur = tracker.current();
        if pred(&cur) {
            return cur;
        }
        assert!(started.elapsed() < limit, "{what} not reached: {cur:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn resolved_to(ip: IpAddr, mac: [u8; 6]) -> impl Fn(&NeighEvent) -> bool {
    move |ev| ev.ip == ip && ev.state == MacState::Resolved(mac)
}

/// `ip -d neigh show IP dev eth0` in the director.
fn neigh_line(host: &Host, ip: IpAddr) -> String {
    host.ns
        .ip(["-d", "neigh", "show", &ip.to_string(), "dev", "eth0"])
        .unwrap()
}

#[test]
fn link_and_resolution_of_reals_without_traffic() {
    require_root();
    let lan = Lan::new().unwrap();
    let director = lan.add_host("dir", "10.91.1.1/24").unwrap();
    let real1 = lan.add_host("real1", "10.91.1.11/24").unwrap();
    let real2 = lan.add_host("real2", "10.91.1.12/24").unwrap();
    let (ip1, ip2) = (IpAddr::V4(real1.ip), IpAddr::V4(real2.ip));

    run_in(&director.ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let link = nl.link("eth0").await.unwrap();
        assert_eq!(link.index, director.ifindex);
        assert_eq!(link.mac, director.mac);
        assert!(link.up);
        assert!(matches!(
            nl.link("nope0").await,
            Err(lb_userspace::netlink::NetlinkError::NoSuchLink(_))
        ));
        // Nothing sent yet: the director knows nobody.
        assert_eq!(nl.neighbour(link.index, ip1).await.unwrap(), None);

        let (tracker, mut rx) = NeighbourTracker::start(nl.clone(), link.index)
            .await
            .unwrap();
        let started = Instant::now();
        tracker.track(BTreeSet::from([ip1, ip2]));
        let mut seen = BTreeMap::new();
        while seen.len() < 2 {
            let ev = wait_event(&mut rx, Duration::from_secs(3), "both reals", |ev| {
                matches!(ev.state, MacState::Resolved(_))
            })
            .await;
            seen.insert(ev.ip, ev.state);
        }
        eprintln!("both reals resolved in {:?}", started.elapsed());
        assert_eq!(seen[&ip1], MacState::Resolved(real1.mac));
        assert_eq!(seen[&ip2], MacState::Resolved(real2.mac));
        assert_eq!(tracker.current(), seen);

        // The kernel's table says the same, through both lookups.
        let n1 = nl.neighbour(link.index, ip1).await.unwrap().unwrap();
        assert_eq!(n1.mac, Some(real1.mac));
        assert!(n1.state.usable(), "{n1:?}");
        let all = nl.neighbours(link.index).await.unwrap();
        let n2 = all.iter().find(|n| n.ip == ip2).expect("real2 in dump");
        assert_eq!(n2.mac, Some(real2.mac));
        // The entries are managed: the kernel keeps them resolved.
        for ip in [ip1, ip2] {
            let line = neigh_line(&director, ip);
            assert!(line.contains("managed"), "{line}");
            assert!(line.contains(&format_mac(seen_mac(&seen[&ip]))), "{line}");
        }

        // Someone deletes an entry: the loss is reported and the entry comes back.
        director
            .ns
            .ip(["neigh", "del", &ip1.to_string(), "dev", "eth0"])
            .unwrap();
        // (The kernel marks the entry FAILED before removing it.)
        let lost = wait_event(&mut rx, Duration::from_secs(1), "loss", |ev| ev.ip == ip1).await;
        assert!(matches!(lost.state, MacState::Unresolved(_)), "{lost:?}");
        wait_event(
            &mut rx,
            Duration::from_secs(1),
            "re-resolution",
            resolved_to(ip1, real1.mac),
        )
        .await;
        assert!(neigh_line(&director, ip1).contains("managed"));

        // Replacing the set: real2 is forgotten and its entry is no longer managed.
        tracker.track(BTreeSet::from([ip1]));
        assert_eq!(tracker.current().keys().copied().collect::<Vec<_>>(), [ip1]);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let line = neigh_line(&director, ip2);
            if !line.contains("managed") {
                assert!(line.contains(&format_mac(real2.mac)), "{line}");
                break;
            }
            assert!(Instant::now() < deadline, "still managed: {line}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(neigh_line(&director, ip1).contains("managed"));
    });
}

fn seen_mac(state: &MacState) -> [u8; 6] {
    match state {
        MacState::Resolved(mac) => *mac,
        MacState::Unresolved(r) => panic!("unresolved: {r}"),
    }
}

#[test]
fn mac_change_and_replaced_real_are_followed_within_a_second() {
    require_root();
    let lan = Lan::new().unwrap();
    let director = lan.add_host("dir", "10.91.2.1/24").unwrap();
    let real = lan.add_host("real", "10.91.2.11/24").unwrap();
    let spare = lan.add_host("spare", "10.91.2.13/24").unwrap();
    let ip = IpAddr::V4(real.ip);
    let new_mac = [0x02, 0x00, 0x0a, 0x5b, 0x02, 0xfe];

    run_in(&director.ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let (tracker, mut rx) = NeighbourTracker::start(nl, director.ifindex).await.unwrap();
        tracker.track(BTreeSet::from([ip]));
        wait_event(
            &mut rx,
            Duration::from_secs(3),
            "first resolution",
            resolved_to(ip, real.mac),
        )
        .await;

        // The real's NIC gets a new MAC; arp_notify makes it send a gratuitous ARP.
        real.ns
            .sysctl("net.ipv4.conf.eth0.arp_notify", "1")
            .unwrap();
        let t0 = Instant::now();
        real.ns
            .ip(["link", "set", "eth0", "address", &format_mac(new_mac)])
            .unwrap();
        wait_event(
            &mut rx,
            Duration::from_secs(1),
            "new MAC",
            resolved_to(ip, new_mac),
        )
        .await;
        let latency = t0.elapsed();
        eprintln!("MAC change seen after {latency:?}");
        assert!(latency < Duration::from_secs(1), "{latency:?}");
        assert_eq!(tracker.current()[&ip], MacState::Resolved(new_mac));

        // Another machine takes over the IP: the old one goes dark, the spare brings up a NIC
        // holding the IP, and announces it (arp_notify). The spare's NIC is a macvlan on its
        // uplink: a veth that comes up sends its gratuitous ARP before the bridge has seen
        // the carrier of its peer port, so the bridge would drop it (a test-topology
        // artifact; a host whose NIC comes up behind a ready switch port is what matters).
        real.ns.ip(["link", "set", "eth0", "down"]).unwrap();
        let nic_mac = [0x02, 0x00, 0x0a, 0x5b, 0x02, 0x31];
        spare
            .ns
            .ip([
                "link",
                "add",
                "eth1",
                "link",
                "eth0",
                "address",
                &format_mac(nic_mac),
                "type",
                "macvlan",
                "mode",
                "bridge",
            ])
            .unwrap();
        spare
            .ns
            .ip(["addr", "add", "10.91.2.11/24", "dev", "eth1"])
            .unwrap();
        spare
            .ns
            .sysctl("net.ipv4.conf.eth1.arp_notify", "1")
            .unwrap();
        let t1 = Instant::now();
        spare.ns.ip(["link", "set", "eth1", "up"]).unwrap();
        wait_event(
            &mut rx,
            Duration::from_secs(1),
            "spare's MAC",
            resolved_to(ip, nic_mac),
        )
        .await;
        let latency = t1.elapsed();
        eprintln!("replacement real seen after {latency:?}");
        assert!(latency < Duration::from_secs(1), "{latency:?}");
        assert_eq!(tracker.current()[&ip], MacState::Resolved(nic_mac));
    });
}

#[test]
fn unowned_ip_is_unresolved_until_a_host_appears() {
    require_root();
    let lan = Lan::new().unwrap();
    let director = lan.add_host("dir", "10.91.3.1/24").unwrap();
    let ip: IpAddr = "10.91.3.50".parse().unwrap();

    run_in(&director.ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let (tracker, mut rx) = NeighbourTracker::start(nl.clone(), director.ifindex)
            .await
            .unwrap();
        let started = Instant::now();
        tracker.track(BTreeSet::from([ip]));
        let ev = wait_event(&mut rx, Duration::from_secs(6), "failure", |ev| ev.ip == ip).await;
        eprintln!("unowned IP: {:?} after {:?}", ev.state, started.elapsed());
        let MacState::Unresolved(reason) = &ev.state else {
            panic!("resolved an IP nobody owns: {ev:?}");
        };
        assert!(reason.contains("FAILED"), "{reason}");
        assert_eq!(tracker.current()[&ip], ev.state);
        // The entry is managed, so the kernel keeps re-probing it: FAILED and INCOMPLETE
        // alternate, and neither may ever carry a MAC.
        let n = nl.neighbour(director.ifindex, ip).await.unwrap().unwrap();
        assert!(
            matches!(n.state, NeighState::Failed | NeighState::Incomplete),
            "kernel entry of an unowned IP: {n:?}"
        );
        assert_eq!(n.mac, None, "kernel entry of an unowned IP: {n:?}");

        // A host with that IP appears (without announcing itself).
        let late = lan.add_host("late", "10.91.3.50/24").unwrap();
        let appeared = Instant::now();
        wait_event(
            &mut rx,
            Duration::from_secs(7),
            "late host",
            resolved_to(ip, late.mac),
        )
        .await;
        eprintln!(
            "late host resolved {:?} after it appeared",
            appeared.elapsed()
        );
        wait_current(
            &tracker,
            Duration::from_secs(1),
            "current() resolved",
            |c| c[&ip] == MacState::Resolved(late.mac),
        )
        .await;
    });
}

#[test]
fn vip_addresses_are_added_and_removed_idempotently() {
    require_root();
    let lan = Lan::new().unwrap();
    let director = lan.add_host("dir", "10.91.4.1/24").unwrap();
    let addrs = || {
        director
            .ns
            .ip(["-j", "addr", "show", "dev", "eth0"])
            .unwrap()
    };
    let v4: IpAddr = "10.91.4.100".parse().unwrap();
    let v6: IpAddr = "fd00:91:4::100".parse().unwrap();
    let v4_json = r#""local":"10.91.4.100","prefixlen":32"#;
    let v6_json = r#""local":"fd00:91:4::100","prefixlen":128"#;

    run_in(&director.ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let idx = director.ifindex;
        assert!(nl.add_address(idx, v4, 32).await.unwrap());
        assert!(!nl.add_address(idx, v4, 32).await.unwrap());
        assert!(nl.add_address(idx, v6, 128).await.unwrap());
        assert!(!nl.add_address(idx, v6, 128).await.unwrap());
        let json = addrs();
        assert!(json.contains(v4_json), "{json}");
        assert!(json.contains(v6_json), "{json}");
        // No duplicate address detection for VIPs: usable at once.
        let v6_info = director
            .ns
            .ip([
                "-6",
                "addr",
                "show",
                "dev",
                "eth0",
                "to",
                "fd00:91:4::100/128",
            ])
            .unwrap();
        assert!(!v6_info.contains("tentative"), "{v6_info}");
        // The subnet address is untouched.
        assert!(
            json.contains(r#""local":"10.91.4.1","prefixlen":24"#),
            "{json}"
        );

        assert!(nl.remove_address(idx, v4, 32).await.unwrap());
        assert!(!nl.remove_address(idx, v4, 32).await.unwrap());
        assert!(nl.remove_address(idx, v6, 128).await.unwrap());
        assert!(!nl.remove_address(idx, v6, 128).await.unwrap());
        let json = addrs();
        assert!(!json.contains("10.91.4.100"), "{json}");
        assert!(!json.contains("fd00:91:4::100"), "{json}");
        assert!(
            json.contains(r#""local":"10.91.4.1","prefixlen":24"#),
            "{json}"
        );

        // Errors are typed and carry the errno.
        let err = nl.add_address(9999, v4, 32).await.unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
    });
}

#[test]
fn ipv6_reals_are_resolved_through_ndp() {
    require_root();
    let lan = Lan::new().unwrap();
    let director = lan.add_host("dir", "10.91.5.1/24").unwrap();
    let real1 = lan.add_host("real1", "10.91.5.11/24").unwrap();
    let real2 = lan.add_host("real2", "10.91.5.12/24").unwrap();
    for (host, addr) in [
        (&director, "fd00:91:5::1/64"),
        (&real1, "fd00:91:5::11/64"),
        (&real2, "fd00:91:5::12/64"),
    ] {
        host.ns
            .ip(["-6", "addr", "add", addr, "dev", "eth0", "nodad"])
            .unwrap();
    }
    // The kernel sends neighbour solicitations from the link-local address, so it waits for
    // that address's duplicate address detection on a freshly created interface.
    let dad_started = Instant::now();
    while !director
        .ns
        .ip([
            "-6",
            "addr",
            "show",
            "dev",
            "eth0",
            "scope",
            "link",
            "tentative",
        ])
        .unwrap()
        .trim()
        .is_empty()
    {
        assert!(
            dad_started.elapsed() < Duration::from_secs(5),
            "DAD too slow"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "director's link-local usable after {:?}",
        dad_started.elapsed()
    );
    let ip1: IpAddr = "fd00:91:5::11".parse().unwrap();
    let ip2: IpAddr = "fd00:91:5::12".parse().unwrap();
    let ip1_v4 = IpAddr::V4(real1.ip);

    run_in(&director.ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let (tracker, mut rx) = NeighbourTracker::start(nl.clone(), director.ifindex)
            .await
            .unwrap();
        let started = Instant::now();
        tracker.track(BTreeSet::from([ip1, ip2, ip1_v4]));
        wait_current(&tracker, Duration::from_secs(1), "all resolved", |c| {
            c.values().all(|s| matches!(s, MacState::Resolved(_)))
        })
        .await;
        eprintln!("IPv6 and IPv4 reals resolved in {:?}", started.elapsed());
        let cur = tracker.current();
        assert_eq!(cur[&ip1], MacState::Resolved(real1.mac));
        assert_eq!(cur[&ip2], MacState::Resolved(real2.mac));
        assert_eq!(cur[&ip1_v4], MacState::Resolved(real1.mac));
        let mut resolved = BTreeSet::new();
        while resolved.len() < 3 {
            let ev = rx.try_recv().expect("one event per resolved IP");
            assert!(matches!(ev.state, MacState::Resolved(_)), "{ev:?}");
            resolved.insert(ev.ip);
        }
        let n = nl.neighbour(director.ifindex, ip2).await.unwrap().unwrap();
        assert_eq!(n.mac, Some(real2.mac));
        assert!(n.state.usable(), "{n:?}");
        assert!(neigh_line(&director, ip1).contains("managed"));
        let all = nl.neighbours(director.ifindex).await.unwrap();
        assert!(all.iter().any(|n| n.ip == ip1 && n.mac == Some(real1.mac)));
        assert!(
            all.iter()
                .any(|n| n.ip == ip1_v4 && n.mac == Some(real1.mac))
        );
    });
}

#[test]
fn resolve_keeps_a_learned_entry_intact() {
    require_root();
    let lan = Lan::new().unwrap();
    let director = lan.add_host("dir", "10.91.6.1/24").unwrap();
    let real = lan.add_host("real", "10.91.6.11/24").unwrap();
    let ip = IpAddr::V4(real.ip);
    // The real talks to the director first, so the director learns its MAC from the ARP
    // request (a plain, unmanaged entry).
    real.ns
        .exec(&["bash", "-c", "echo hi > /dev/udp/10.91.6.1/9"])
        .unwrap();

    run_in(&director.ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let before = nl.neighbour(director.ifindex, ip).await.unwrap();
        let before = before.expect("learned entry");
        assert_eq!(before.mac, Some(real.mac));
        assert!(before.state.usable(), "{before:?}");
        assert!(!neigh_line(&director, ip).contains("managed"));

        let (tracker, mut rx) = NeighbourTracker::start(nl.clone(), director.ifindex)
            .await
            .unwrap();
        tracker.track(BTreeSet::from([ip]));
        let ev = wait_event(&mut rx, Duration::from_secs(2), "learned MAC", |ev| {
            ev.ip == ip
        })
        .await;
        assert_eq!(ev.state, MacState::Resolved(real.mac));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !neigh_line(&director, ip).contains("managed") {
            assert!(Instant::now() < deadline, "{}", neigh_line(&director, ip));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Adding the managed flag kept the MAC and a usable state: no loss event.
        let after = nl.neighbour(director.ifindex, ip).await.unwrap().unwrap();
        assert_eq!(after.mac, Some(real.mac));
        assert!(after.state.usable(), "{after:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "unexpected event");
        // Resolving again is harmless.
        nl.resolve(director.ifindex, ip).await.unwrap();
        let again = nl.neighbour(director.ifindex, ip).await.unwrap().unwrap();
        assert_eq!(again.mac, Some(real.mac));
        assert!(again.state.usable(), "{again:?}");
    });
}
