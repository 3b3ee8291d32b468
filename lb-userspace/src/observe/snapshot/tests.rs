use std::net::Ipv6Addr;

use lb_common::{Conn, Flow6Key, Persist6Key, Template, addr6};

use super::*;
use crate::reconcile::plan::ServiceParams;

fn checked(up: bool, ok: bool, detail: &str) -> CheckStatus {
    CheckStatus {
        checker: "tcp_check",
        up,
        last: Some(crate::health::Outcome {
            ok,
            detail: detail.into(),
        }),
        latency: None,
        latency_total: Duration::ZERO,
        since: Duration::ZERO,
        checks: 1,
        failures: u64::from(!ok),
        weight: None,
    }
}

#[test]
fn a_failed_check_says_failed_once_and_why_once() {
    let some = |s: &str| Some(s.to_owned());
    let down = checked(false, false, "connect refused");
    assert_eq!(
        result_and_reason(Some(&down), true),
        (some("failed"), some("connect refused"))
    );
    // Up, but the last probe failed (retries left): the reason is shown already.
    let retrying = checked(true, false, "timeout");
    assert_eq!(
        result_and_reason(Some(&retrying), true),
        (some("failed"), some("timeout"))
    );
    let up = checked(true, true, "HTTP 200");
    assert_eq!(result_and_reason(Some(&up), true), (some("HTTP 200"), None));
    assert_eq!(
        result_and_reason(Some(&up), false),
        (some("HTTP 200"), some("no neighbour"))
    );
    assert_eq!(result_and_reason(None, true), (None, None));
}

#[test]
fn a_real_with_several_checkers_shows_all_names_and_the_failing_one() {
    let (s, r) = (svc6(443), real6(1));
    let mut health = BTreeMap::new();
    assert_eq!(real_checks(&health, s, r), ("none".to_owned(), None));
    health.insert((s, r, 0), checked(true, true, "connected"));
    let mut file = checked(false, false, "file value 1");
    file.checker = "file_check";
    health.insert((s, r, 1), file.clone());
    // Another real's checker is not this real's.
    health.insert((s, real6(2), 0), checked(false, false, "timeout"));
    let (names, shown) = real_checks(&health, s, r);
    assert_eq!(names, "tcp_check+file_check");
    assert_eq!(shown, Some(&file));
    // All up: the first is shown.
    health.insert((s, r, 1), checked(true, true, "file value 0"));
    let (_, shown) = real_checks(&health, s, r);
    assert_eq!(
        shown.and_then(|s| s.last.clone()).unwrap().detail,
        "connected"
    );
}

/// The clock of the snapshot and `which` tests.
pub(super) const NOW: u32 = 10_000;

pub(super) fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

pub(super) fn svc6(port: u16) -> ServiceKey {
    ServiceKey {
        vip: IpAddr::V6(v6("2001:db8::100")),
        port,
        proto: Protocol::Tcp,
    }
}

pub(super) fn real6(last: u16) -> RealKey {
    RealKey {
        addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
        port: 443,
    }
}

pub(super) fn conn(real: u32, state: ConnState, stamp: u32) -> (Conn, u32) {
    let conn = Conn {
        real,
        state: state as u8,
        _pad: [0; 3],
    };
    (conn, stamp)
}

#[test]
fn ipv6_entries_and_templates_are_listed() {
    let key = svc6(443);
    let by_index: BTreeMap<u32, (ServiceKey, RealKey)> = [(7, (key, real6(0x11)))].into();
    let settings = Settings {
        clock: NOW,
        ..Settings::new([0; 6])
    };
    let flow = |port| {
        Flow6Key::from_parts(
            v6("2001:db8:1::5").octets(),
            port,
            v6("2001:db8::100").octets(),
            443,
            lb_common::proto::TCP,
        )
    };
    let entry = |port, real, state, stamp| {
        let (conn, stamp) = conn(real, state, stamp);
        ConnEntry {
            key: flow(port),
            conn,
            stamp,
        }
    };
    let entries = [
        entry(40000, 7, ConnState::Established, NOW - 100),
        entry(40001, 7, ConnState::Established, NOW - 901), // expired
        entry(40002, 9, ConnState::SynRecv, NOW),           // a real the maps no longer name
    ];
    let mut out = Vec::new();
    assert_eq!(
        listed_conns(&entries, &settings, &by_index, Some(&mut out)),
        2
    );
    assert_eq!(listed_conns(&entries, &settings, &by_index, None), 2);
    assert_eq!(
        out,
        [ConnInfo {
            proto: Protocol::Tcp,
            expire_secs: 800,
            state: "ESTABLISHED".into(),
            client: "[2001:db8:1::5]:40000".parse().unwrap(),
            virtual_addr: "[2001:db8::100]:443".parse().unwrap(),
            real: "[2001:db8::11]:443".parse().unwrap(),
        }]
    );
    let template = |client: &str, stamp| TemplateEntry {
        key: Persist6Key {
            service_id: 2,
            _pad: 0,
            client: addr6(v6(client).octets()),
        },
        template: Template { real: 7, _pad: 0 },
        stamp,
    };
    let mut out = Vec::new();
    listed_templates(
        vec![
            template("2001:db8:1::", NOW - 50),
            template("2001:db8:2::", NOW - 301), // expired
        ],
        NOW,
        |id| {
            let params = ServiceParams {
                persist_timeout: 300,
                ..ServiceParams::default()
            };
            (*id == 2).then_some((key, params.entry((0, 0))))
        },
        &by_index,
        &mut out,
    );
    assert_eq!(
        out,
        [ConnInfo {
            proto: Protocol::Tcp,
            expire_secs: 250,
            state: "NONE".into(),
            client: "[2001:db8:1::]:0".parse().unwrap(),
            virtual_addr: "[2001:db8::100]:443".parse().unwrap(),
            real: "[2001:db8::11]:443".parse().unwrap(),
        }]
    );
}
