//! Argument parsing to requests, usage errors, and rendering of answers; no agent needed.
use std::{
    io::{BufRead as _, BufReader},
    os::unix::net::UnixListener,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use lb_userspace::{
    config::{LbAlgo, Timeouts},
    control::{
        Counters, Edit, Forward, GlobalInfo, HealthInfo, PeerInfo, Rates, RealInfo, Request,
        ServiceInfo, Snapshot, SyncInfo, WhichAnswer,
    },
    model::{Protocol, RealKey, ServiceKey, Thresholds},
    observe::ipvsadm::Format,
};

use super::{cli::DEFAULT_SOCKET, plan::Planned, *};

fn services_db() -> Services {
    Services::parse("amqp 5672/tcp\nhttp 80/tcp www\ndomain 53/udp\n")
}

/// Parses and plans a command line (without the program name).
fn planned(args: &str) -> Result<Planned, Failure> {
    let argv = std::iter::once("lbadm").chain(args.split_whitespace());
    let cli = Cli::try_parse_from(argv).map_err(|e| Failure {
        code: u8::try_from(e.exit_code()).unwrap(),
        message: e.to_string(),
    })?;
    plan(&cli, &services_db())
}

fn action(args: &str) -> Action {
    let p = planned(args).unwrap_or_else(|f| panic!("{args}: {f:?}"));
    assert!(p.warnings.is_empty(), "{args}: {:?}", p.warnings);
    p.action
}

fn request(args: &str) -> Request {
    action(args).request().unwrap()
}

/// Asserts a usage error (exit 2) whose message contains `want`.
fn usage_error(args: &str, want: &str) {
    match planned(args) {
        Ok(p) => panic!("{args}: accepted as {p:?}"),
        Err(f) => {
            assert_eq!(f.code, 2, "{args}: {f:?}");
            assert!(
                f.message.contains(want),
                "{args}: {:?} lacks {want:?}",
                f.message
            );
        }
    }
}

fn key(text: &str, proto: Protocol) -> ServiceKey {
    let (vip, port) = text.rsplit_once(':').unwrap();
    ServiceKey {
        vip: vip.trim_matches(['[', ']']).parse().unwrap(),
        port: port.parse().unwrap(),
        proto,
    }
}

fn tcp(text: &str) -> ServiceKey {
    key(text, Protocol::Tcp)
}

fn real(addr: &str, port: u16) -> RealKey {
    RealKey {
        addr: addr.parse().unwrap(),
        port,
    }
}

fn numeric() -> Format {
    Format {
        numeric: true,
        ..Format::default()
    }
}

#[test]
fn list_commands() {
    let list = |format, json| Action::List { format, json };
    assert_eq!(action(""), list(Format::default(), false));
    assert_eq!(action("-L"), list(Format::default(), false));
    assert_eq!(action("-l"), list(Format::default(), false));
    assert_eq!(action("--list --numeric"), list(numeric(), false));
    assert_eq!(action("-Ln"), list(numeric(), false));
    assert_eq!(action("-nL"), list(numeric(), false));
    assert_eq!(action("-ln"), list(numeric(), false));
    assert_eq!(
        action("-L -n --stats"),
        list(
            Format {
                stats: true,
                ..numeric()
            },
            false
        )
    );
    assert_eq!(
        action("-L --rate --exact"),
        list(
            Format {
                rate: true,
                exact: true,
                ..Format::default()
            },
            false
        )
    );
    assert_eq!(
        action("-L -n --stats --rate"),
        list(
            Format {
                stats: true,
                rate: true,
                ..numeric()
            },
            false
        )
    );
    assert_eq!(
        action("-Ln --health"),
        list(
            Format {
                health: true,
                ..numeric()
            },
            false
        )
    );
    assert_eq!(
        action("-L -n -t 10.0.0.100:5672"),
        list(
            Format {
                only: Some(tcp("10.0.0.100:5672")),
                ..numeric()
            },
            false
        )
    );
    assert_eq!(
        action("-Ln -u 10.0.0.53:domain --json"),
        list(
            Format {
                only: Some(key("10.0.0.53:53", Protocol::Udp)),
                ..numeric()
            },
            true
        )
    );
    assert_eq!(request("-Ln"), Request::Snapshot { conns: false });

    assert_eq!(
        action("-Lnc"),
        Action::Connections {
            numeric: true,
            json: false
        }
    );
    assert_eq!(
        action("-L --connection --json"),
        Action::Connections {
            numeric: false,
            json: true
        }
    );
    assert_eq!(request("-L -n -c"), Request::Snapshot { conns: true });
    assert_eq!(action("-L --timeout"), Action::Timeouts { json: false });
    assert_eq!(request("-L --timeout"), Request::Snapshot { conns: false });
    assert_eq!(
        action("-L --conn-table --json"),
        Action::ConnTable { json: true }
    );
    assert_eq!(
        request("-L --conn-table"),
        Request::Snapshot { conns: false }
    );
    for args in [
        "-L --daemon",
        "-l --daemon",
        "-Ln --daemon",
        "--daemon -L -n",
    ] {
        assert_eq!(action(args), Action::Daemon { json: false }, "{args}");
    }
    assert_eq!(
        action("--list --daemon --json"),
        Action::Daemon { json: true }
    );
    assert_eq!(request("-L --daemon"), Request::Snapshot { conns: false });
}

#[test]
fn zero_save_which() {
    assert_eq!(request("-Z"), Request::Zero { service: None });
    assert_eq!(
        request("--zero -t 10.0.0.100:http"),
        Request::Zero {
            service: Some(tcp("10.0.0.100:80"))
        }
    );
    assert_eq!(action("-S"), Action::Save);
    assert_eq!(action("-S -n"), Action::Save);
    assert_eq!(request("--save"), Request::Save);
    assert_eq!(
        action("--which -t 10.0.0.100:5672 --client 192.168.7.21:51514"),
        Action::Which {
            service: tcp("10.0.0.100:5672"),
            client: "192.168.7.21:51514".parse().unwrap(),
            json: false
        }
    );
    assert_eq!(
        request("--which -t [2001:db8::100]:443 --client [2001:db8:1::5]:40000 --json"),
        Request::Which {
            service: tcp("[2001:db8::100]:443"),
            client: "[2001:db8:1::5]:40000".parse().unwrap(),
        }
    );
}

#[test]
fn service_edits() {
    let svc = tcp("10.0.0.100:5672");
    assert_eq!(
        request("-A -t 10.0.0.100:5672"),
        Request::Edit(Edit::AddService {
            key: svc,
            scheduler: None,
            persistence: None,
            flags: None,
        })
    );
    assert_eq!(
        request("-A -t 10.0.0.100:5672 -s wrr -p"),
        Request::Edit(Edit::AddService {
            key: svc,
            scheduler: Some("wrr".into()),
            persistence: Some(300),
            flags: None,
        })
    );
    assert_eq!(
        request("--add-service --tcp-service 10.0.0.100:amqp --scheduler WRR --persistent 60"),
        Request::Edit(Edit::AddService {
            key: svc,
            scheduler: Some("wrr".into()),
            persistence: Some(60),
            flags: None,
        })
    );
    assert_eq!(
        request("-A -t 10.0.0.100:5672 -p -s sh"),
        Request::Edit(Edit::AddService {
            key: svc,
            scheduler: Some("sh".into()),
            persistence: Some(300),
            flags: None,
        })
    );
    assert_eq!(
        request("-At 10.0.0.100:5672 -p600"),
        Request::Edit(Edit::AddService {
            key: svc,
            scheduler: None,
            persistence: Some(600),
            flags: None,
        })
    );
    assert_eq!(
        request("-u 10.0.0.53:53 -A -s rr"),
        Request::Edit(Edit::AddService {
            key: key("10.0.0.53:53", Protocol::Udp),
            scheduler: Some("rr".into()),
            persistence: None,
            flags: None,
        })
    );
    // -E replaces the persistence like ipvsadm (off without -p), keeps the scheduler.
    assert_eq!(
        request("-E -t 10.0.0.100:5672 -s mh"),
        Request::Edit(Edit::EditService {
            key: svc,
            scheduler: Some("mh".into()),
            persistence: Some(None),
            flags: None,
        })
    );
    assert_eq!(
        request("-E -t 10.0.0.100:5672 -p 120"),
        Request::Edit(Edit::EditService {
            key: svc,
            scheduler: None,
            persistence: Some(Some(120)),
            flags: None,
        })
    );
    assert_eq!(
        request("-D -t 10.0.0.100:5672"),
        Request::Edit(Edit::DeleteService { key: svc })
    );
    assert_eq!(
        request("-A -t [2001:db8::100]:443 -s sh -p 300"),
        Request::Edit(Edit::AddService {
            key: tcp("[2001:db8::100]:443"),
            scheduler: Some("sh".into()),
            persistence: Some(300),
            flags: None,
        })
    );
    assert_eq!(
        request("-E -t [2001:db8::100]:http -s wlc"),
        Request::Edit(Edit::EditService {
            key: tcp("[2001:db8::100]:80"),
            scheduler: Some("wlc".into()),
            persistence: Some(None),
            flags: None,
        })
    );
    assert_eq!(
        request("--delete-service -t [2001:db8::100]:443"),
        Request::Edit(Edit::DeleteService {
            key: tcp("[2001:db8::100]:443")
        })
    );
}

#[test]
fn real_edits() {
    let svc = tcp("10.0.0.100:5672");
    let r = real("10.0.0.11", 5672);
    assert_eq!(
        request("-a -t 10.0.0.100:5672 -r 10.0.0.11"),
        Request::Edit(Edit::AddReal {
            service: svc,
            real: r,
            weight: None,
            thresholds: None,
        })
    );
    assert_eq!(
        request("-a -t 10.0.0.100:5672 -r 10.0.0.11:5672 -g -w 0"),
        Request::Edit(Edit::AddReal {
            service: svc,
            real: r,
            weight: Some(0),
            thresholds: None,
        })
    );
    assert_eq!(
        request(
            "--add-server --tcp-service 10.0.0.100:5672 --real-server 10.0.0.11:amqp --gatewaying --weight 65535"
        ),
        Request::Edit(Edit::AddReal {
            service: svc,
            real: r,
            weight: Some(65535),
            thresholds: None,
        })
    );
    // -e without -w sets weight 1, as ipvsadm.
    assert_eq!(
        request("-e -t 10.0.0.100:5672 -r 10.0.0.11"),
        Request::Edit(Edit::EditReal {
            service: svc,
            real: r,
            weight: Some(1),
            thresholds: Some(Thresholds::default()),
        })
    );
    assert_eq!(
        request("-e -t 10.0.0.100:5672 -r 10.0.0.11 -w 0"),
        Request::Edit(Edit::EditReal {
            service: svc,
            real: r,
            weight: Some(0),
            thresholds: Some(Thresholds::default()),
        })
    );
    assert_eq!(
        request("-d -t 10.0.0.100:5672 -r 10.0.0.11"),
        Request::Edit(Edit::DeleteReal {
            service: svc,
            real: r
        })
    );
    assert_eq!(
        request("-a -t [2001:db8::100]:443 -r 2001:db8::11"),
        Request::Edit(Edit::AddReal {
            service: tcp("[2001:db8::100]:443"),
            real: real("2001:db8::11", 443),
            weight: None,
            thresholds: None,
        })
    );
    assert_eq!(
        request("-d -t [2001:db8::100]:443 -r [2001:db8::11]:443"),
        Request::Edit(Edit::DeleteReal {
            service: tcp("[2001:db8::100]:443"),
            real: real("2001:db8::11", 443),
        })
    );

    // IPv6 edits, UDP included: -e and -d with and without the real's port.
    let dns6 = ServiceKey {
        proto: Protocol::Udp,
        ..tcp("[2001:db8::53]:53")
    };
    assert_eq!(
        request("-e -u [2001:db8::53]:53 -r [2001:db8::11] -w 0"),
        Request::Edit(Edit::EditReal {
            service: dns6,
            real: real("2001:db8::11", 53),
            weight: Some(0),
            thresholds: Some(Thresholds::default()),
        })
    );
    assert_eq!(
        request("-a -u [2001:db8::53]:domain -r [2001:db8::12]:53 -g -w 2"),
        Request::Edit(Edit::AddReal {
            service: dns6,
            real: real("2001:db8::12", 53),
            weight: Some(2),
            thresholds: None,
        })
    );

    // A different real port is replaced by the service's, with a warning.
    let p = planned("-a -t 10.0.0.100:5672 -r 10.0.0.11:8080").unwrap();
    assert_eq!(
        p.action.request(),
        Some(Request::Edit(Edit::AddReal {
            service: svc,
            real: r,
            weight: None,
            thresholds: None,
        }))
    );
    assert_eq!(
        p.warnings,
        ["real server port 8080 ignored: direct routing uses the service port 5672"]
    );
}

#[test]
fn fo_and_ovf_are_schedulers() {
    for name in ["fo", "ovf"] {
        assert_eq!(
            request(&format!("-A -t 10.0.0.100:5672 -s {name}")),
            Request::Edit(Edit::AddService {
                key: tcp("10.0.0.100:5672"),
                scheduler: Some(name.into()),
                persistence: None,
                flags: None,
            })
        );
    }
}

#[test]
fn sched_flags_and_ops() {
    let key = tcp("10.0.0.100:5672");
    assert_eq!(
        request("-A -t 10.0.0.100:5672 -s sh -b sh-fallback,sh-port"),
        Request::Edit(Edit::AddService {
            key,
            scheduler: Some("sh".into()),
            persistence: None,
            flags: Some(vec!["sh-fallback".into(), "sh-port".into()]),
        })
    );
    assert_eq!(
        request("-E -t 10.0.0.100:5672 -s mh --sched-flags mh-port -o"),
        Request::Edit(Edit::EditService {
            key,
            scheduler: Some("mh".into()),
            persistence: Some(None),
            flags: Some(vec!["mh-port".into(), "ops".into()]),
        })
    );
    usage_error(
        "-A -t 10.0.0.100:5672 -s sh -b sh-port,flag-1",
        "unknown scheduler flag `flag-1` for -b",
    );
    usage_error(
        "-a -t 10.0.0.100:5672 -r 10.0.0.11 -o",
        "-o/--ops cannot be used with -a/--add-server",
    );
}

#[test]
fn real_thresholds() {
    let svc = tcp("10.0.0.100:5672");
    let r = real("10.0.0.11", 5672);
    let t = |upper, lower| Thresholds { upper, lower };
    assert_eq!(
        request("-a -t 10.0.0.100:5672 -r 10.0.0.11 -x 100 -y 40"),
        Request::Edit(Edit::AddReal {
            service: svc,
            real: r,
            weight: None,
            thresholds: Some(t(100, 40)),
        })
    );
    assert_eq!(
        request("-a -t 10.0.0.100:5672 -r 10.0.0.11 --u-threshold 100"),
        Request::Edit(Edit::AddReal {
            service: svc,
            real: r,
            weight: None,
            thresholds: Some(t(100, 0)),
        })
    );
    assert_eq!(
        request("-e -t 10.0.0.100:5672 -r 10.0.0.11 -w 2 -x 10 --l-threshold 5"),
        Request::Edit(Edit::EditReal {
            service: svc,
            real: r,
            weight: Some(2),
            thresholds: Some(t(10, 5)),
        })
    );
    usage_error(
        "-a -t 10.0.0.100:5672 -r 10.0.0.11 -x 2147483648",
        "illegal upper threshold `2147483648` for -x: must be an integer from 0 to 2147483647",
    );
    usage_error(
        "-a -t 10.0.0.100:5672 -r 10.0.0.11 -x 1 -y 1.5",
        "illegal lower threshold `1.5` for -y",
    );
    usage_error(
        "-a -t 10.0.0.100:5672 -r 10.0.0.11 -y 5",
        "lower threshold 5 (-y) needs an upper threshold (-x)",
    );
    usage_error(
        "-a -t 10.0.0.100:5672 -r 10.0.0.11 -x 5 -y 6",
        "lower threshold 6 (-y) is above the upper threshold 5 (-x)",
    );
    usage_error(
        "-A -t 10.0.0.100:5672 -x 5",
        "-x/--u-threshold cannot be used with -A/--add-service",
    );
}

#[test]
fn usage_errors() {
    for (args, want) in [
        ("-n", "no command given"),
        ("-L -Z", "cannot be used with"),
        ("-A -E -t 10.0.0.1:80", "cannot be used with"),
        (
            "-A",
            "-A/--add-service needs -t|--tcp-service VIP:PORT or -u|--udp-service VIP:PORT",
        ),
        ("-D", "-D/--delete-service needs -t|--tcp-service"),
        (
            "-a -t 10.0.0.1:80",
            "-a/--add-server needs -r|--real-server RIP[:PORT]",
        ),
        ("-d -t 10.0.0.1:80", "-d/--delete-server needs -r"),
        ("-e -r 10.0.0.11", "-e/--edit-server needs -t|--tcp-service"),
        ("--which -t 10.0.0.1:80", "--which needs --client IP:PORT"),
        (
            "-L -r 10.0.0.11",
            "-r/--real-server cannot be used with -L/--list",
        ),
        ("-L -w 1", "-w/--weight cannot be used with -L/--list"),
        (
            "-L --client 1.2.3.4:5",
            "--client cannot be used with -L/--list",
        ),
        (
            "-A -t 10.0.0.1:80 -g",
            "-g/--gatewaying cannot be used with -A/--add-service",
        ),
        (
            "-A -t 10.0.0.1:80 -w 1",
            "-w/--weight cannot be used with -A/--add-service",
        ),
        (
            "-A -t 10.0.0.1:80 -r 10.0.0.11",
            "-r/--real-server cannot be used with -A",
        ),
        (
            "-D -t 10.0.0.1:80 -s rr",
            "-s/--scheduler cannot be used with -D/--delete-service",
        ),
        (
            "-d -t 10.0.0.1:80 -r 10.0.0.11 -w 1",
            "-w/--weight cannot be used with -d",
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.11 -p",
            "-p/--persistent cannot be used with -a",
        ),
        ("-Z -n", "-n/--numeric cannot be used with -Z/--zero"),
        ("-S --json", "--json cannot be used with -S/--save"),
        ("-S -t 10.0.0.1:80", "cannot be used with -S/--save"),
        (
            "-L --stats --health",
            "--health cannot be used with --stats",
        ),
        ("-L --rate --health", "--health cannot be used with --rate"),
        (
            "-L -c --stats",
            "--stats cannot be used with -c/--connection",
        ),
        (
            "-L --timeout --rate",
            "--rate cannot be used with --timeout",
        ),
        (
            "-L -c --health",
            "--health cannot be used with -c/--connection",
        ),
        (
            "-L -c -t 10.0.0.1:80",
            "-t/-u cannot be used with -c/--connection",
        ),
        (
            "-L -c --timeout",
            "--timeout cannot be used with -c/--connection",
        ),
        (
            "-L -t 10.0.0.1:80 --timeout",
            "--timeout cannot be used with -t/-u",
        ),
        (
            "-L --timeout --conn-table",
            "--conn-table cannot be used with --timeout",
        ),
        (
            "-L --conn-table --stats",
            "--stats cannot be used with --conn-table",
        ),
        ("-Z --conn-table", "--conn-table"),
        (
            "-L -c --daemon",
            "--daemon cannot be used with -c/--connection in -L/--list",
        ),
        (
            "-L --daemon --timeout",
            "--daemon cannot be used with --timeout in -L/--list",
        ),
        (
            "-L --conn-table --daemon",
            "--daemon cannot be used with --conn-table in -L/--list",
        ),
        (
            "-L -t 10.0.0.1:80 --daemon",
            "--daemon cannot be used with -t/-u in -L/--list",
        ),
        (
            "-L --daemon --stats",
            "--stats cannot be used with --daemon in -L/--list",
        ),
        (
            "-L --daemon --rate",
            "--rate cannot be used with --daemon in -L/--list",
        ),
        (
            "-L --daemon --health",
            "--health cannot be used with --daemon in -L/--list",
        ),
        ("-Z --daemon", "--daemon cannot be used with -Z/--zero"),
        ("-S --daemon", "--daemon cannot be used with -S/--save"),
        ("--daemon", "no command given"),
        ("-L -t 10.0.0.1:80 -u 10.0.0.1:80", "cannot be used with"),
        (
            "-A -t 10.0.0.1",
            "illegal virtual service `10.0.0.1` for -t: the port is missing",
        ),
        ("-A -t 10.0.0.1:0", "port 0 is not allowed"),
        (
            "-A -t 10.0.0.1:65536",
            "not a number from 1 to 65535 or a service name",
        ),
        (
            "-A -t 10.0.0.1:nosuch",
            "not a number from 1 to 65535 or a service name",
        ),
        (
            "-A -u 10.0.0.1:http",
            "not a number from 1 to 65535 or a service name",
        ),
        (
            "-A -t 300.0.0.1:80",
            "illegal virtual service `300.0.0.1:80` for -t: not an IP address",
        ),
        ("-A -t 10.0.0:80", "not an IP address"),
        ("-A -t [2001:db8::1:80", "expected VIP:PORT"),
        ("-A -t [2001:db8::1]80", "expected VIP:PORT"),
        // Brackets are for IPv6 only.
        (
            "-A -t [10.0.0.1]:80",
            "illegal virtual service `[10.0.0.1]:80` for -t: expected VIP:PORT",
        ),
        ("-a -t 10.0.0.1:80 -r [10.0.0.2]:80", "[10.0.0.2]:80"),
        ("-A -t 2001:db8::1", "the port is missing"),
        ("-A -t 0.0.0.0:80", "unicast"),
        ("-A -t 224.0.0.1:80", "unicast"),
        (
            "-A -t 10.0.0.1:80 -s lblc",
            "illegal scheduler for -s: lb_algo lblc is not supported",
        ),
        (
            "-A -t 10.0.0.1:80 -s fancy",
            "illegal scheduler for -s: unknown scheduler `fancy`",
        ),
        (
            "-A -t 10.0.0.1:80 -p 0",
            "illegal persistence timeout `0` for -p: must be 1 to 2678400",
        ),
        (
            "-A -t 10.0.0.1:80 -p 2678401",
            "illegal persistence timeout",
        ),
        ("-A -t 10.0.0.1:80 -p x", "illegal persistence timeout `x`"),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.11 -w 65536",
            "illegal weight `65536` for -w: must be an integer from 0 to 65535",
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.11 -w 1.5",
            "illegal weight `1.5`",
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.11 -i",
            "-i/--ipip: tunneling is not supported",
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.11 --masquerading",
            "-m/--masquerading: NAT is not supported",
        ),
        (
            "-a -t 10.0.0.1:80 -r 2001:db8::11",
            "address family differs from the service's (10.0.0.1)",
        ),
        (
            "-a -t [2001:db8::1]:80 -r 10.0.0.11",
            "address family differs from the service's (2001:db8::1)",
        ),
        ("-A -t [ff02::1]:80", "the VIP must be a unicast address"),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.11:0",
            "illegal real server `10.0.0.11:0` for -r: port 0",
        ),
        (
            "-a -t 10.0.0.1:80 -r bad!host",
            "illegal real server `bad!host` for -r: not an IP address",
        ),
        (
            "--which -t 10.0.0.1:80 --client 1.2.3.4",
            "illegal client `1.2.3.4` for --client",
        ),
        (
            "--which -t 10.0.0.1:80 --client 1.2.3.4:0",
            "port 0 is not allowed",
        ),
        ("extra", "unrecognized subcommand 'extra'"),
        ("-L extra", "'extra' cannot be used with '--list'"),
        ("-X", "unexpected argument"),
    ] {
        usage_error(args, want);
    }
}

#[test]
fn socket_option() {
    let cli = Cli::try_parse_from(["lbadm", "--socket", "/tmp/other.sock", "-L"]).unwrap();
    assert_eq!(cli.socket, PathBuf::from("/tmp/other.sock"));
    if std::env::var_os("LBADM_SOCKET").is_none() {
        let cli = Cli::try_parse_from(["lbadm", "-L"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from(DEFAULT_SOCKET));
    }
}

#[test]
fn import_keepalived_converts_a_file() {
    let options = |interface: &str, config_id: Option<&str>| Options {
        interface: interface.to_owned(),
        config_id: config_id.map(str::to_owned),
        all_config: false,
    };
    let a = action("import-keepalived /etc/keepalived/keepalived.conf --interface eth1");
    assert_eq!(
        a,
        Action::ImportKeepalived(
            "/etc/keepalived/keepalived.conf".into(),
            options("eth1", None)
        )
    );
    assert_eq!(a.request(), None, "it never talks to the agent");
    assert_eq!(
        action("import-keepalived k.conf --config-id lb2"),
        Action::ImportKeepalived("k.conf".into(), options("", Some("lb2")))
    );
    assert_eq!(
        action("import-keepalived k.conf --all-config"),
        Action::ImportKeepalived(
            "k.conf".into(),
            Options {
                all_config: true,
                ..options("", None)
            }
        )
    );
    let f = run(
        &Action::ImportKeepalived("/nonexistent/keepalived.conf".into(), options("", None)),
        Path::new("/nonexistent"),
    )
    .unwrap_err();
    assert_eq!(f.code, 1);
    assert!(f.message.contains("/nonexistent/keepalived.conf"), "{f:?}");
    let guide = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rabbitmq-lvs-keepalived.conf"
    );
    run(
        &Action::ImportKeepalived(guide.into(), options("eth0", None)),
        Path::new("/nonexistent"),
    )
    .expect("the guide's file converts");
    usage_error("-L import-keepalived x", "cannot be used with");
}

#[test]
fn import_keepalived_follows_includes_and_names_their_lines() {
    let dir = std::env::temp_dir().join(format!("lbadm-include-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(dir.join("keepalived.conf"), "include conf.d/*.conf\n").unwrap();
    std::fs::write(
        dir.join("conf.d/web.conf"),
        "@lb2 virtual_server 10.0.0.1 80 {\n  real_server 10.0.0.2 80 {\n  }\n}\n}\n",
    )
    .unwrap();
    let main = dir.join("keepalived.conf");
    let f = run(
        &Action::ImportKeepalived(
            main.clone(),
            Options {
                interface: "eth0".into(),
                config_id: Some("lb2".into()),
                all_config: false,
            },
        ),
        Path::new("/nonexistent"),
    )
    .unwrap_err();
    // The extra `}` of line 5 of the included file.
    assert!(
        f.message.contains("conf.d/web.conf: line 5:"),
        "{}",
        f.message
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_and_version_are_not_errors() {
    for args in [["lbadm", "--help"], ["lbadm", "-h"], ["lbadm", "--version"]] {
        let e = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(e.exit_code(), 0, "{args:?}");
    }
    let e = Cli::try_parse_from(["lbadm", "-L", "-Z"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn white_space_around_a_scheduler_name_is_refused() {
    for name in ["wrr ", " wrr", "w rr"] {
        let cli = Cli::try_parse_from(["lbadm", "-A", "-t", "10.0.0.1:80", "-s", name]).unwrap();
        let err = plan(&cli, &services_db()).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(
            err.message.contains(&format!(
                "illegal scheduler for -s: unknown scheduler `{name}`"
            )),
            "{name:?}: {}",
            err.message
        );
    }
}

#[test]
fn the_scheduler_help_names_every_scheduler_that_s_accepts() {
    let help = <Cli as clap::CommandFactory>::command()
        .render_help()
        .to_string();
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("-s, --scheduler"))
        .unwrap_or_else(|| panic!("no -s line in\n{help}"));
    for algo in LbAlgo::ALL.iter().filter(|a| a.supported()) {
        let name = algo.name();
        assert!(
            line.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == name),
            "{name} missing: {line}"
        );
        let cli = Cli::try_parse_from(["lbadm", "-A", "-t", "10.0.0.1:80", "-s", name]);
        assert!(cli.is_ok(), "-s {name} refused");
    }
    assert!(line.contains("lc, wlc, sed, nq, fo, ovf or twos"), "{line}");
}

fn snapshot() -> Snapshot {
    let health = HealthInfo {
        checker: "tcp_check".into(),
        state: "down".into(),
        last_result: None,
        reason: Some("connect refused".into()),
        latency_ms: None,
        since_secs: Some(5),
    };
    Snapshot {
        conn_table_size: 4096,
        timeouts: Timeouts::default(),
        services: vec![ServiceInfo {
            key: tcp("10.0.0.100:5672"),
            scheduler: "wrr".into(),
            flags: Vec::new(),
            persistence: None,
            stats: Counters::default(),
            rate: Rates::default(),
            reals: vec![RealInfo {
                key: real("10.0.0.11", 5672),
                forward: Forward::Route,
                weight: 1,
                active_conns: 412,
                inactive_conns: 3,
                stats: Counters::default(),
                rate: Rates::default(),
                health,
                sorry_server: false,
            }],
            sorry_server_active: false,
            quorum_held: true,
        }],
        conns: Some(vec![]),
        global: GlobalInfo::default(),
        sync: None,
    }
}

#[test]
fn rendering_answers() {
    let snap = || Response::Snapshot(snapshot());
    // The only real is down: as with keepalived, which removes failed reals from IPVS, the
    // ipvsadm listing leaves it out; --health shows it.
    assert_eq!(
        render(&action("-Ln"), snap()).unwrap(),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  10.0.0.100:5672 wrr\n"
    );
    assert!(
        render(&action("-Ln --health"), snap()).unwrap().contains(
            "3          tcp_check  down     5s      -        -          connect refused\n"
        )
    );
    assert_eq!(
        render(&action("-L --timeout"), snap()).unwrap(),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    assert_eq!(
        render(&action("-L --timeout --json"), snap()).unwrap(),
        "{\n  \"tcp\": 900,\n  \"tcpfin\": 120,\n  \"udp\": 300\n}\n"
    );
    assert_eq!(render(&action("-Lnc --json"), snap()).unwrap(), "[]\n");
    let one: serde_json::Value =
        serde_json::from_str(&render(&action("-Ln -t 10.0.0.100:5672 --json"), snap()).unwrap())
            .unwrap();
    assert_eq!(one["reals"][0]["active_conns"], 412);

    let missing = render(&action("-Ln -t 10.0.0.100:80"), snap()).unwrap_err();
    assert_eq!(
        missing,
        Failure::agent("no such service: TCP 10.0.0.100:80")
    );
    assert_eq!(render(&action("-Z"), Response::Ok).unwrap(), "");
    assert_eq!(
        render(
            &action("-S"),
            Response::Saved {
                yaml: "interface: eth0".into()
            }
        )
        .unwrap(),
        "interface: eth0\n"
    );
    let wrong = render(&action("-Ln"), Response::Ok).unwrap_err();
    assert_eq!(
        wrong,
        Failure::agent("unexpected answer from lb-agent: expected a snapshot, got ok")
    );
}

#[test]
fn daemon_answers() {
    // Sync off: nothing, as ipvsadm when no daemon runs; JSON null.
    let off = || Response::Snapshot(snapshot());
    assert_eq!(render(&action("-Ln --daemon"), off()).unwrap(), "");
    assert_eq!(
        render(&action("-L --daemon --json"), off()).unwrap(),
        "null\n"
    );

    let sync = SyncInfo {
        id: 7,
        interface: "eth1".into(),
        port: 8848,
        ttl: 1,
        peers: vec!["10.0.0.2".parse().unwrap()],
        sender: 0xab,
        heard: vec![PeerInfo {
            addr: Some("10.0.0.2:8848".parse().unwrap()),
            sender: 0xcd,
            last_heard_secs: 2.0,
            records: 10,
        }],
        resync: "done".into(),
        ..SyncInfo::default()
    };
    let on = || {
        Response::Snapshot(Snapshot {
            sync: Some(Box::new(sync.clone())),
            ..snapshot()
        })
    };
    assert_eq!(
        render(&action("-Ln --daemon"), on()).unwrap(),
        "master sync daemon (mcast=eth1, syncid=7, maxlen=1452, port=8848, ttl=1)\n\
         backup sync daemon (mcast=eth1, syncid=7, maxlen=1452, port=8848, ttl=1)\n\
         peers: 10.0.0.2\n\
         peer 10.0.0.2:8848 sender 00000000000000cd last heard 2s ago, 10 records\n\
         sent: 0 datagrams, 0 records, 0 errors (not sent: real gone 0, overwritten unread 0)\n\
         received: 0 datagrams, 0 records (stored 0, refreshed 0, kept 0, unplaced 0, no room 0)\n\
         rejected: auth 0, replay 0, other group 0, malformed 0\n\
         lag: last 0.0 ms, max 0.0 ms\n\
         resync: done\n"
    );
    let text = render(&action("-L --daemon --json"), on()).unwrap();
    assert_eq!(serde_json::from_str::<SyncInfo>(&text).unwrap(), sync);
}

#[test]
fn which_answers() {
    let which = action("--which -t 10.0.0.100:5672 --client 192.168.7.21:51514");
    let answer = WhichAnswer {
        real: Some(real("10.0.0.11", 5672)),
        source: "persistence template".into(),
        detail: "template expires in 120 s".into(),
    };
    assert_eq!(
        render(&which, Response::Which(answer.clone())).unwrap(),
        "TCP 10.0.0.100:5672 client 192.168.7.21:51514 -> 10.0.0.11:5672 \
         (persistence template: template expires in 120 s)\n"
    );
    let dropped = WhichAnswer {
        real: None,
        source: "lookup table".into(),
        detail: String::new(),
    };
    assert_eq!(
        render(&which, Response::Which(dropped)).unwrap(),
        "TCP 10.0.0.100:5672 client 192.168.7.21:51514 -> no real server (dropped) (lookup table)\n"
    );
    let json = action("--which -t 10.0.0.100:5672 --client 192.168.7.21:51514 --json");
    let text = render(&json, Response::Which(answer.clone())).unwrap();
    assert_eq!(serde_json::from_str::<WhichAnswer>(&text).unwrap(), answer);
}

fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "lbadm-bin-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

#[test]
fn agent_errors_exit_1() {
    let missing = socket_path();
    let f = run(&action("-Ln"), &missing).unwrap_err();
    assert_eq!(f.code, 1);
    assert_eq!(
        f.message,
        format!(
            "cannot connect to {}: is lb-agent running? (No such file or directory)",
            missing.display()
        )
    );

    // A fake agent that refuses the request.
    let path = socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    let agent = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream)
            .write_all(b"{\"result\":\"error\",\"message\":\"Service not defined\"}\n")
            .unwrap();
        line
    });
    let f = run(&action("-d -t 10.0.0.100:5672 -r 10.0.0.11"), &path).unwrap_err();
    assert_eq!(f, Failure::agent("Service not defined"));
    let sent: Request = serde_json::from_str(&agent.join().unwrap()).unwrap();
    assert_eq!(
        sent,
        Request::Edit(Edit::DeleteReal {
            service: tcp("10.0.0.100:5672"),
            real: real("10.0.0.11", 5672)
        })
    );
    let _ = std::fs::remove_file(path);
}
