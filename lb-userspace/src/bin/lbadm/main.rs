//! `lbadm`: ipvsadm for the XDP load balancer. Same commands, options and output as ipvsadm,
//! answered by `lb-agent` over its control socket.
//!
//! Differences from ipvsadm, each deliberate:
//! - direct routing is the only forwarding method: `-g` is accepted, `-i`/`-m` are refused, and
//!   a real's port is always the service's (ipvsadm silently does the same for `-g`);
//! - `-S` prints the running configuration as the agent's YAML, not ipvsadm rules;
//! - `-E` without `-s` keeps the scheduler (ipvsadm resets it to its default, `wlc`, which
//!   surprises more than it helps); without `-p` it turns persistence off, and `-e` without `-w` sets weight
//!   1, both as ipvsadm;
//! - ours: `--json` on every listing, `--health` on `-L`, `--which -t|-u VIP:PORT --client
//!   IP:PORT` to ask where a client's flow goes.
//!
//! Exit status: 0 on success, 2 for a usage error (nothing was sent), 1 when the agent cannot
//! be reached or refuses the request.

use std::{
    io::{self, Write as _},
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr as _,
};

use clap::{ArgGroup, Parser, Subcommand};
use lb_userspace::{
    config::LbAlgo,
    control::{self, Edit, Request, Response, Snapshot, WhichAnswer},
    model::{Protocol, RealKey, ServiceKey},
    observe::ipvsadm::{self, Format, JsonView, Services},
};

/// Where `lb-agent` listens by default (instance `default`).
const DEFAULT_SOCKET: &str = "/run/lb-xdp/default.sock";
/// ipvsadm's persistence timeout when `-p` has no value.
const DEFAULT_PERSISTENCE: &str = "300";
/// ipvsadm's longest persistence timeout (31 days).
const MAX_PERSISTENCE: u32 = 86_400 * 31;

/// Administer the XDP load balancer the way ipvsadm administers IPVS: same commands, same
/// options, same output, answered by lb-agent over its control socket.
///
/// Without any argument, lists the table (like `ipvsadm`). Direct routing is the only
/// forwarding method. `-S` prints the running configuration as YAML.
#[derive(Debug, Parser)]
#[command(
    name = "lbadm",
    version,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    group(ArgGroup::new("command").multiple(false)),
    group(ArgGroup::new("service").multiple(false)),
)]
// pub(crate): the fuzz crate compiles this file as a module and drives `Cli` and `plan`.
pub(crate) struct Cli {
    /// Control socket of the lb-agent instance.
    #[arg(long, value_name = "PATH", env = "LBADM_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Add a virtual service (with -t|-u, optional -s, -p).
    #[arg(
        short = 'A',
        long = "add-service",
        group = "command",
        help_heading = "Commands"
    )]
    add_service: bool,
    /// Edit a virtual service (with -t|-u, optional -s, -p; without -p persistence goes off).
    #[arg(
        short = 'E',
        long = "edit-service",
        group = "command",
        help_heading = "Commands"
    )]
    edit_service: bool,
    /// Delete a virtual service (with -t|-u).
    #[arg(
        short = 'D',
        long = "delete-service",
        group = "command",
        help_heading = "Commands"
    )]
    delete_service: bool,
    /// Add a real server (with -t|-u, -r, optional -w).
    #[arg(
        short = 'a',
        long = "add-server",
        group = "command",
        help_heading = "Commands"
    )]
    add_server: bool,
    /// Edit a real server (with -t|-u, -r, optional -w; without -w the weight becomes 1).
    #[arg(
        short = 'e',
        long = "edit-server",
        group = "command",
        help_heading = "Commands"
    )]
    edit_server: bool,
    /// Delete a real server (with -t|-u, -r).
    #[arg(
        short = 'd',
        long = "delete-server",
        group = "command",
        help_heading = "Commands"
    )]
    delete_server: bool,
    /// List the table (-l also works).
    #[arg(
        short = 'L',
        long = "list",
        visible_short_alias = 'l',
        group = "command",
        help_heading = "Commands"
    )]
    list: bool,
    /// Zero the counters of one service (-t|-u) or of all.
    #[arg(
        short = 'Z',
        long = "zero",
        group = "command",
        help_heading = "Commands"
    )]
    zero: bool,
    /// Print the running configuration (YAML).
    #[arg(
        short = 'S',
        long = "save",
        group = "command",
        help_heading = "Commands"
    )]
    save: bool,
    /// Tell which real server a client reaches (with -t|-u and --client).
    #[arg(long, group = "command", help_heading = "Commands")]
    which: bool,

    #[arg(
        short = 't',
        long = "tcp-service",
        value_name = "VIP:PORT",
        group = "service",
        help = "TCP service, VIP:PORT ([VIP]:PORT for IPv6; names allowed)"
    )]
    tcp_service: Option<String>,
    /// UDP service, VIP:PORT.
    #[arg(
        short = 'u',
        long = "udp-service",
        value_name = "VIP:PORT",
        group = "service"
    )]
    udp_service: Option<String>,
    // The help lists what the parser accepts (config::LbAlgo), so the two cannot drift.
    #[arg(short = 's', long, value_name = "SCHEDULER", help = scheduler_help())]
    scheduler: Option<String>,
    /// Persistent service; TIMEOUT in seconds, 300 when not given.
    #[arg(
        short = 'p',
        long = "persistent",
        value_name = "TIMEOUT",
        num_args = 0..=1,
        default_missing_value = DEFAULT_PERSISTENCE
    )]
    persistent: Option<String>,
    #[arg(
        short = 'r',
        long = "real-server",
        value_name = "RIP[:PORT]",
        help = "Real server, RIP[:PORT]; the port is always the service's (direct routing)"
    )]
    real_server: Option<String>,
    /// Direct routing (the default, and the only method).
    #[arg(short = 'g', long)]
    gatewaying: bool,
    /// IP-in-IP tunneling: not supported.
    #[arg(short = 'i', long)]
    ipip: bool,
    /// Masquerading (NAT): not supported.
    #[arg(short = 'm', long)]
    masquerading: bool,
    /// Weight of the real server, 0 to 65535 (0 = quiesce).
    #[arg(short = 'w', long, value_name = "WEIGHT")]
    weight: Option<String>,
    /// Numeric addresses and ports.
    #[arg(short = 'n', long)]
    numeric: bool,
    /// List the connection table.
    #[arg(short = 'c', long)]
    connection: bool,
    /// List the timeouts (tcp tcpfin udp).
    #[arg(long)]
    timeout: bool,
    /// List counters.
    #[arg(long)]
    stats: bool,
    /// List rates.
    #[arg(long)]
    rate: bool,
    /// Exact numbers (no K/M/G/T).
    #[arg(long)]
    exact: bool,
    /// JSON output for listings and --which.
    #[arg(long)]
    json: bool,
    /// Health-check columns on each real server (with -L).
    #[arg(long)]
    health: bool,
    /// Client address for --which, IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    client: Option<String>,

    #[command(subcommand)]
    subcommand: Option<Sub>,
}

/// Commands that are not ipvsadm's.
#[derive(Debug, Subcommand)]
enum Sub {
    /// Convert the virtual_server blocks of a keepalived.conf into lb-agent YAML (on stdout;
    /// warnings on stderr name their lines).
    #[command(name = "import-keepalived")]
    ImportKeepalived {
        /// The keepalived configuration file.
        file: PathBuf,
        /// The director's interface (default: the interface of the file's vrrp_instance).
        #[arg(long, value_name = "IFACE", default_value = "")]
        interface: String,
    },
}

/// What one invocation does.
#[derive(Debug, PartialEq)]
enum Action {
    /// `-L` in any of its table layouts.
    List { format: Format, json: bool },
    /// `-L -c`.
    Connections { numeric: bool, json: bool },
    /// `-L --timeout`.
    Timeouts { json: bool },
    /// `-Z`, `-A`/`-E`/`-D`/`-a`/`-e`/`-d`: the agent answers Ok or an error.
    Change(Request),
    /// `-S`.
    Save,
    /// `--which`.
    Which {
        service: ServiceKey,
        client: SocketAddr,
        json: bool,
    },
    /// `import-keepalived FILE [--interface IFACE]`.
    ImportKeepalived(PathBuf, String),
}

impl Action {
    /// The request this action sends, if it sends one.
    fn request(&self) -> Option<Request> {
        match self {
            Action::List { .. } | Action::Timeouts { .. } => {
                Some(Request::Snapshot { conns: false })
            }
            Action::Connections { .. } => Some(Request::Snapshot { conns: true }),
            Action::Change(req) => Some(req.clone()),
            Action::Save => Some(Request::Save),
            Action::Which {
                service, client, ..
            } => Some(Request::Which {
                service: *service,
                client: *client,
            }),
            Action::ImportKeepalived(..) => None,
        }
    }
}

/// Why lbadm stops, and with which exit status.
#[derive(Debug, PartialEq)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// A usage error (exit 2): nothing was sent.
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The agent could not be reached or refused (exit 1).
    fn agent(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// The commands, as ipvsadm names them in its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    AddService,
    EditService,
    DeleteService,
    AddServer,
    EditServer,
    DeleteServer,
    List,
    Zero,
    Save,
    Which,
}

impl Command {
    fn flag(self) -> &'static str {
        match self {
            Command::AddService => "-A/--add-service",
            Command::EditService => "-E/--edit-service",
            Command::DeleteService => "-D/--delete-service",
            Command::AddServer => "-a/--add-server",
            Command::EditServer => "-e/--edit-server",
            Command::DeleteServer => "-d/--delete-server",
            Command::List => "-L/--list",
            Command::Zero => "-Z/--zero",
            Command::Save => "-S/--save",
            Command::Which => "--which",
        }
    }
}

/// The options, for the legality check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Real,
    Forward,
    Weight,
    Timeout,
    Stats,
    Rate,
    Exact,
    Json,
    Health,
    Client,
}

impl Opt {
    fn flag(self) -> &'static str {
        match self {
            Opt::Numeric => "-n/--numeric",
            Opt::Connection => "-c/--connection",
            Opt::Service => "-t/--tcp-service or -u/--udp-service",
            Opt::Scheduler => "-s/--scheduler",
            Opt::Persistent => "-p/--persistent",
            Opt::Real => "-r/--real-server",
            Opt::Forward => "-g/--gatewaying",
            Opt::Weight => "-w/--weight",
            Opt::Timeout => "--timeout",
            Opt::Stats => "--stats",
            Opt::Rate => "--rate",
            Opt::Exact => "--exact",
            Opt::Json => "--json",
            Opt::Health => "--health",
            Opt::Client => "--client",
        }
    }
}

/// Options a command requires and options it accepts (the rest are refused), as ipvsadm's
/// command/option table, plus ours.
fn rules(cmd: Command) -> (&'static [Opt], &'static [Opt]) {
    use Opt::*;
    match cmd {
        Command::AddService | Command::EditService => (&[Service], &[Scheduler, Persistent]),
        Command::DeleteService => (&[Service], &[]),
        Command::AddServer | Command::EditServer => (&[Service, Real], &[Forward, Weight]),
        Command::DeleteServer => (&[Service, Real], &[]),
        Command::List => (
            &[],
            &[
                Numeric, Connection, Service, Timeout, Stats, Rate, Exact, Json, Health,
            ],
        ),
        Command::Zero => (&[], &[Service]),
        Command::Save => (&[], &[Numeric]),
        Command::Which => (&[Service, Client], &[Numeric, Json]),
    }
}

impl Cli {
    fn command(&self) -> Option<Command> {
        [
            (self.add_service, Command::AddService),
            (self.edit_service, Command::EditService),
            (self.delete_service, Command::DeleteService),
            (self.add_server, Command::AddServer),
            (self.edit_server, Command::EditServer),
            (self.delete_server, Command::DeleteServer),
            (self.list, Command::List),
            (self.zero, Command::Zero),
            (self.save, Command::Save),
            (self.which, Command::Which),
        ]
        .into_iter()
        .find_map(|(set, cmd)| set.then_some(cmd))
    }

    fn options(&self) -> Vec<Opt> {
        [
            (self.numeric, Opt::Numeric),
            (self.connection, Opt::Connection),
            (
                self.tcp_service.is_some() || self.udp_service.is_some(),
                Opt::Service,
            ),
            (self.scheduler.is_some(), Opt::Scheduler),
            (self.persistent.is_some(), Opt::Persistent),
            (self.real_server.is_some(), Opt::Real),
            (self.gatewaying, Opt::Forward),
            (self.weight.is_some(), Opt::Weight),
            (self.timeout, Opt::Timeout),
            (self.stats, Opt::Stats),
            (self.rate, Opt::Rate),
            (self.exact, Opt::Exact),
            (self.json, Opt::Json),
            (self.health, Opt::Health),
            (self.client.is_some(), Opt::Client),
        ]
        .into_iter()
        .filter_map(|(set, opt)| set.then_some(opt))
        .collect()
    }
}

/// An action and the warnings found while planning it.
#[derive(Debug, PartialEq)]
pub(crate) struct Planned {
    action: Action,
    warnings: Vec<String>,
}

/// Turns parsed arguments into an action, validating everything that can be validated
/// without the agent.
pub(crate) fn plan(cli: &Cli, services: &Services) -> Result<Planned, Failure> {
    let mut warnings = Vec::new();
    let action = plan_action(cli, services, &mut warnings)?;
    Ok(Planned { action, warnings })
}

fn plan_action(
    cli: &Cli,
    services: &Services,
    warnings: &mut Vec<String>,
) -> Result<Action, Failure> {
    if let Some(Sub::ImportKeepalived { file, interface }) = &cli.subcommand {
        return Ok(Action::ImportKeepalived(file.clone(), interface.clone()));
    }
    if cli.ipip {
        return Err(Failure::usage(
            "-i/--ipip: tunneling is not supported; this load balancer does direct routing only (-g)",
        ));
    }
    if cli.masquerading {
        return Err(Failure::usage(
            "-m/--masquerading: NAT is not supported; this load balancer does direct routing only (-g)",
        ));
    }
    let options = cli.options();
    let Some(cmd) = cli.command() else {
        if options.is_empty() {
            // Like a bare `ipvsadm`: list the table, with names.
            return Ok(Action::List {
                format: Format::default(),
                json: false,
            });
        }
        return Err(Failure::usage(
            "no command given: use one of -A, -E, -D, -a, -e, -d, -L, -Z, -S or --which (see --help)",
        ));
    };
    let (required, allowed) = rules(cmd);
    for opt in &options {
        if !required.contains(opt) && !allowed.contains(opt) {
            return Err(Failure::usage(format!(
                "{} cannot be used with {}",
                opt.flag(),
                cmd.flag()
            )));
        }
    }
    for opt in required {
        if !options.contains(opt) {
            let what = match opt {
                Opt::Service => "-t|--tcp-service VIP:PORT or -u|--udp-service VIP:PORT",
                Opt::Real => "-r|--real-server RIP[:PORT]",
                _ => "--client IP:PORT",
            };
            return Err(Failure::usage(format!("{} needs {what}", cmd.flag())));
        }
    }

    let service = match (&cli.tcp_service, &cli.udp_service) {
        (Some(s), _) => Some(parse_service(s, Protocol::Tcp, services)?),
        (_, Some(s)) => Some(parse_service(s, Protocol::Udp, services)?),
        _ => None,
    };
    let scheduler = cli.scheduler.as_deref().map(parse_scheduler).transpose()?;
    let persistence = cli
        .persistent
        .as_deref()
        .map(parse_persistence)
        .transpose()?;
    let weight = cli.weight.as_deref().map(parse_weight).transpose()?;
    // Required options were checked above; these are present whenever the command needs them.
    let svc = || service.ok_or_else(|| Failure::usage("missing service"));
    let mut real = || -> Result<RealKey, Failure> {
        let text = cli
            .real_server
            .as_deref()
            .ok_or_else(|| Failure::usage("missing real server"))?;
        let (real, warning) = parse_real(text, &svc()?, services)?;
        warnings.extend(warning);
        Ok(real)
    };

    Ok(match cmd {
        Command::List => list_action(cli, service)?,
        Command::Zero => Action::Change(Request::Zero { service }),
        Command::Save => Action::Save,
        Command::AddService => Action::Change(Request::Edit(Edit::AddService {
            key: svc()?,
            scheduler,
            persistence,
        })),
        Command::EditService => Action::Change(Request::Edit(Edit::EditService {
            key: svc()?,
            scheduler,
            persistence: Some(persistence),
        })),
        Command::DeleteService => {
            Action::Change(Request::Edit(Edit::DeleteService { key: svc()? }))
        }
        Command::AddServer => Action::Change(Request::Edit(Edit::AddReal {
            service: svc()?,
            real: real()?,
            weight,
        })),
        Command::EditServer => Action::Change(Request::Edit(Edit::EditReal {
            service: svc()?,
            real: real()?,
            weight: Some(weight.unwrap_or(1)),
        })),
        Command::DeleteServer => Action::Change(Request::Edit(Edit::DeleteReal {
            service: svc()?,
            real: real()?,
        })),
        Command::Which => {
            let text = cli.client.as_deref().unwrap_or_default();
            Action::Which {
                service: svc()?,
                client: parse_client(text)?,
                json: cli.json,
            }
        }
    })
}

/// `-L` with its options, checked for the combinations ipvsadm refuses.
fn list_action(cli: &Cli, service: Option<ServiceKey>) -> Result<Action, Failure> {
    let views = [
        (cli.connection, "-c/--connection"),
        (service.is_some(), "-t/-u"),
        (cli.timeout, "--timeout"),
    ];
    let chosen: Vec<&str> = views
        .iter()
        .filter_map(|(set, name)| set.then_some(*name))
        .collect();
    if let [first, second, ..] = chosen[..] {
        return Err(Failure::usage(format!(
            "{second} cannot be used with {first} in -L/--list"
        )));
    }
    if cli.connection || cli.timeout {
        let view = if cli.connection {
            "-c/--connection"
        } else {
            "--timeout"
        };
        for (set, name) in [
            (cli.stats, "--stats"),
            (cli.rate, "--rate"),
            (cli.health, "--health"),
        ] {
            if set {
                return Err(Failure::usage(format!(
                    "{name} cannot be used with {view} in -L/--list"
                )));
            }
        }
    }
    if cli.health && (cli.stats || cli.rate) {
        let other = if cli.stats { "--stats" } else { "--rate" };
        return Err(Failure::usage(format!(
            "--health cannot be used with {other}: it adds columns to the default listing"
        )));
    }
    Ok(if cli.connection {
        Action::Connections {
            numeric: cli.numeric,
            json: cli.json,
        }
    } else if cli.timeout {
        Action::Timeouts { json: cli.json }
    } else {
        Action::List {
            format: Format {
                numeric: cli.numeric,
                exact: cli.exact,
                stats: cli.stats,
                rate: cli.rate,
                health: cli.health,
                only: service,
            },
            json: cli.json,
        }
    })
}

/// Splits `host[:port]` / `[v6][:port]` / bare IPv6 into host and optional port text.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        // Brackets are for IPv6 only, as with ipvsadm.
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

/// An address: a literal, else a host name (first address, IPv4 preferred, as ipvsadm).
fn resolve_host(host: &str) -> Option<IpAddr> {
    if host.is_empty() {
        return None;
    }
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    // Only plausible host names go to the resolver: not mistyped addresses.
    let name_like = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let numeric_like = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !name_like || numeric_like {
        return None;
    }
    let addrs: Vec<IpAddr> = (host, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

/// A port: a number, or a service name from /etc/services for `proto`.
fn parse_port(text: &str, proto: Protocol, services: &Services) -> Option<u16> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    services.port(text, proto)
}

/// `-t/-u VIP:PORT`.
fn parse_service(text: &str, proto: Protocol, services: &Services) -> Result<ServiceKey, Failure> {
    let flag = match proto {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    };
    let bad = |why: &str| {
        Failure::usage(format!(
            "illegal virtual service `{text}` for {flag}: {why}"
        ))
    };
    let (host, port) =
        split_host_port(text).ok_or_else(|| bad("expected VIP:PORT, [VIP6]:PORT for IPv6"))?;
    let vip = resolve_host(host).ok_or_else(|| bad("not an IP address or a known host name"))?;
    let port = port.ok_or_else(|| bad("the port is missing (VIP:PORT)"))?;
    let port = parse_port(port, proto, services)
        .ok_or_else(|| bad("the port is not a number from 1 to 65535 or a service name"))?;
    if port == 0 {
        return Err(bad("port 0 is not allowed"));
    }
    if vip.is_unspecified() || vip.is_multicast() {
        return Err(bad("the VIP must be a unicast address"));
    }
    Ok(ServiceKey { vip, port, proto })
}

/// `-r RIP[:PORT]`: the port defaults to the service's, and is the service's in any case
/// (direct routing cannot change ports; ipvsadm silently does the same). A different port
/// gives a warning.
fn parse_real(
    text: &str,
    service: &ServiceKey,
    services: &Services,
) -> Result<(RealKey, Option<String>), Failure> {
    let bad = |why: &str| Failure::usage(format!("illegal real server `{text}` for -r: {why}"));
    let (host, port) = split_host_port(text).ok_or_else(|| bad("expected RIP[:PORT]"))?;
    let addr = resolve_host(host).ok_or_else(|| bad("not an IP address or a known host name"))?;
    if addr.is_ipv4() != service.vip.is_ipv4() {
        return Err(bad(&format!(
            "its address family differs from the service's ({})",
            service.vip
        )));
    }
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(bad("the address must be unicast"));
    }
    let mut warning = None;
    if let Some(port) = port {
        let port = parse_port(port, service.proto, services)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535 or a service name"))?;
        if port == 0 {
            return Err(bad("port 0 is not allowed"));
        }
        if port != service.port {
            warning = Some(format!(
                "real server port {port} ignored: direct routing uses the service port {}",
                service.port
            ));
        }
    }
    let real = RealKey {
        addr,
        port: service.port,
    };
    Ok((real, warning))
}

/// `--client IP:PORT`.
fn parse_client(text: &str) -> Result<SocketAddr, Failure> {
    let client: SocketAddr = text.parse().map_err(|_| {
        Failure::usage(format!(
            "illegal client `{text}` for --client: expected IP:PORT, [IP6]:PORT for IPv6"
        ))
    })?;
    if client.port() == 0 {
        return Err(Failure::usage(format!(
            "illegal client `{text}` for --client: port 0 is not allowed"
        )));
    }
    Ok(client)
}

/// `-s`: a scheduler this balancer serves, by its IPVS name.
fn parse_scheduler(text: &str) -> Result<String, Failure> {
    let algo = LbAlgo::from_str(text)
        .map_err(|e| Failure::usage(format!("illegal scheduler for -s: {e}")))?;
    if !algo.supported() {
        let served: Vec<&str> = LbAlgo::ALL
            .iter()
            .filter(|a| a.supported())
            .map(|a| a.name())
            .collect();
        return Err(Failure::usage(format!(
            "illegal scheduler for -s: {} is not supported; use {}",
            algo.name(),
            served.join(", ")
        )));
    }
    Ok(algo.name().to_owned())
}

/// `-p [TIMEOUT]`: 1 second to 31 days.
fn parse_persistence(text: &str) -> Result<u32, Failure> {
    text.parse::<u32>()
        .ok()
        .filter(|t| (1..=MAX_PERSISTENCE).contains(t))
        .ok_or_else(|| {
            Failure::usage(format!(
                "illegal persistence timeout `{text}` for -p: must be 1 to {MAX_PERSISTENCE} seconds"
            ))
        })
}

/// `-w WEIGHT`: 0 to 65535.
fn parse_weight(text: &str) -> Result<u32, Failure> {
    text.parse::<u32>()
        .ok()
        .filter(|w| *w <= 65_535)
        .ok_or_else(|| {
            Failure::usage(format!(
                "illegal weight `{text}` for -w: must be an integer from 0 to 65535"
            ))
        })
}

/// `import-keepalived`: the YAML on stdout, each warning on stderr as `FILE: line N: ...`.
fn import_keepalived(file: &Path, interface: &str) -> Result<(), Failure> {
    // Bounded as the agent's own configuration: a regular file of at most 8 MiB.
    let text = lb_userspace::config::read_text(file)
        .map_err(|m| Failure::agent(format!("{}: {m}", file.display())))?;
    let name = file.display().to_string();
    let import = lb_userspace::import::keepalived::import_named(&text, interface, &name)
        .map_err(|e| Failure::agent(format!("{name}: {e}")))?;
    for w in &import.warnings {
        eprintln!("{name}: {w}");
    }
    print!("{}", import.yaml);
    Ok(())
}

/// Sends the action's request and prints the answer.
fn run(action: &Action, socket: &Path) -> Result<(), Failure> {
    if let Action::ImportKeepalived(file, interface) = action {
        return import_keepalived(file, interface);
    }
    let Some(req) = action.request() else {
        return Ok(());
    };
    let resp = control::request(socket, &req).map_err(|e| Failure::agent(e.to_string()))?;
    if let Response::Error { message } = resp {
        return Err(Failure::agent(message));
    }
    let text = render(action, resp)?;
    emit(&text)
}

/// The text an action prints for a (non-error) answer.
fn render(action: &Action, resp: Response) -> Result<String, Failure> {
    let unexpected = |want: &str, got: &Response| {
        let got = match got {
            Response::Snapshot(_) => "a snapshot",
            Response::Ok => "ok",
            Response::Saved { .. } => "a configuration",
            Response::Which(_) => "a which answer",
            Response::Error { .. } => "an error",
        };
        Failure::agent(format!(
            "unexpected answer from lb-agent: expected {want}, got {got}"
        ))
    };
    let snapshot = |resp: Response| -> Result<Snapshot, Failure> {
        match resp {
            Response::Snapshot(s) => Ok(s),
            other => Err(unexpected("a snapshot", &other)),
        }
    };
    Ok(match action {
        Action::List { format, json } => {
            let snap = snapshot(resp)?;
            if let Some(key) = format.only
                && !snap.services.iter().any(|s| s.key == key)
            {
                return Err(Failure::agent(format!("no such service: {key}")));
            }
            if *json {
                ipvsadm::json(&snap, JsonView::Services { only: format.only })
            } else {
                ipvsadm::list(&snap, format)
            }
        }
        Action::Connections { numeric, json } => {
            let snap = snapshot(resp)?;
            if *json {
                ipvsadm::json(&snap, JsonView::Connections)
            } else {
                ipvsadm::connections(&snap, *numeric)
            }
        }
        Action::Timeouts { json } => {
            let snap = snapshot(resp)?;
            if *json {
                ipvsadm::json(&snap, JsonView::Timeouts)
            } else {
                ipvsadm::timeouts(&snap)
            }
        }
        Action::Change(_) => match resp {
            Response::Ok => String::new(),
            other => return Err(unexpected("ok", &other)),
        },
        Action::Save => match resp {
            Response::Saved { mut yaml } => {
                if !yaml.is_empty() && !yaml.ends_with('\n') {
                    yaml.push('\n');
                }
                yaml
            }
            other => return Err(unexpected("a configuration", &other)),
        },
        Action::Which {
            service,
            client,
            json,
        } => match resp {
            Response::Which(answer) if *json => {
                let mut text = serde_json::to_string_pretty(&answer).unwrap_or_default();
                text.push('\n');
                text
            }
            Response::Which(answer) => which_text(service, *client, &answer),
            other => return Err(unexpected("a which answer", &other)),
        },
        Action::ImportKeepalived(..) => String::new(),
    })
}

/// `TCP 10.0.0.100:5672 client 192.168.7.21:51514 -> 10.0.0.11:5672 (lookup table: ...)`.
fn which_text(service: &ServiceKey, client: SocketAddr, answer: &WhichAnswer) -> String {
    let target = answer
        .real
        .map_or_else(|| "no real server (dropped)".to_owned(), |r| r.to_string());
    let mut text = format!("{service} client {client} -> {target} ({}", answer.source);
    if !answer.detail.is_empty() {
        text.push_str(": ");
        text.push_str(&answer.detail);
    }
    text.push_str(")\n");
    text
}

/// Writes to stdout; a closed pipe (`lbadm -L | head`) is not an error.
fn emit(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Failure::agent(format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}

/// `-s`'s help: every scheduler the agent serves.
fn scheduler_help() -> String {
    format!(
        "Scheduler: {} (wlc when -A is given none, as ipvsadm)",
        lb_userspace::config::served_schedulers()
    )
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0, usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let services = Services::load(Path::new("/etc/services"));
    let result = plan(&cli, &services).and_then(|planned| {
        for w in &planned.warnings {
            eprintln!("lbadm: warning: {w}");
        }
        run(&planned.action, &cli.socket)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("lbadm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
#[path = "lbadm/tests.rs"]
mod tests;
