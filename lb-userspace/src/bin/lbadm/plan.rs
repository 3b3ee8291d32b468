//! From parsed arguments to what lbadm does: a request for the agent, or a local job; and
//! why it stops when it cannot.

use std::{net::SocketAddr, path::PathBuf};

use lb_userspace::{
    control::{Edit, Request},
    import::keepalived::Options,
    model::{Protocol, RealKey, ServiceKey},
    observe::ipvsadm::{Format, Services},
};

use super::{
    cli::{Cli, Command, Opt, Sub, rules},
    parse::{
        parse_client, parse_persistence, parse_real, parse_sched_flags, parse_scheduler,
        parse_service, parse_thresholds, parse_weight,
    },
};

/// What one invocation does.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    /// `-L` in any of its table layouts.
    List { format: Format, json: bool },
    /// `-L -c`.
    Connections { numeric: bool, json: bool },
    /// `-L --timeout`.
    Timeouts { json: bool },
    /// `-L --conn-table`.
    ConnTable { json: bool },
    /// `-L --daemon`.
    Daemon { json: bool },
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
    /// `import-keepalived FILE [--interface IFACE] [--config-id ID] [--all-config]`.
    ImportKeepalived(PathBuf, Options),
}

impl Action {
    /// The request this action sends, if it sends one.
    pub(super) fn request(&self) -> Option<Request> {
        match self {
            Action::List { .. }
            | Action::Timeouts { .. }
            | Action::ConnTable { .. }
            | Action::Daemon { .. } => Some(Request::Snapshot { conns: false }),
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
    pub(super) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The agent could not be reached or refused (exit 1).
    pub(super) fn agent(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// An action and the warnings found while planning it.
#[derive(Debug, PartialEq)]
pub(crate) struct Planned {
    pub(super) action: Action,
    pub(super) warnings: Vec<String>,
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
    if let Some(Sub::ImportKeepalived {
        file,
        interface,
        config_id,
        all_config,
    }) = &cli.subcommand
    {
        let options = Options {
            interface: interface.clone(),
            config_id: config_id.clone(),
            all_config: *all_config,
        };
        return Ok(Action::ImportKeepalived(file.clone(), options));
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
    let (upper, lower) = (cli.u_threshold.as_deref(), cli.l_threshold.as_deref());
    let thresholds = parse_thresholds(upper, lower)?;
    let thresholds_given = upper.is_some() || lower.is_some();
    let flags = (cli.sched_flags.is_some() || cli.ops)
        .then(|| parse_sched_flags(cli.sched_flags.as_deref(), cli.ops))
        .transpose()?;
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
            flags,
        })),
        Command::EditService => Action::Change(Request::Edit(Edit::EditService {
            key: svc()?,
            scheduler,
            persistence: Some(persistence),
            flags,
        })),
        Command::DeleteService => {
            Action::Change(Request::Edit(Edit::DeleteService { key: svc()? }))
        }
        Command::AddServer => Action::Change(Request::Edit(Edit::AddReal {
            service: svc()?,
            real: real()?,
            weight,
            thresholds: thresholds_given.then_some(thresholds),
        })),
        Command::EditServer => Action::Change(Request::Edit(Edit::EditReal {
            service: svc()?,
            real: real()?,
            // ipvsadm -e sets every field of the real: without -x/-y the thresholds go.
            weight: Some(weight.unwrap_or(1)),
            thresholds: Some(thresholds),
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
        (cli.conn_table, "--conn-table"),
        (cli.daemon, "--daemon"),
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
    if cli.connection || cli.timeout || cli.conn_table || cli.daemon {
        let view = if cli.connection {
            "-c/--connection"
        } else if cli.timeout {
            "--timeout"
        } else if cli.conn_table {
            "--conn-table"
        } else {
            "--daemon"
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
    } else if cli.conn_table {
        Action::ConnTable { json: cli.json }
    } else if cli.daemon {
        Action::Daemon { json: cli.json }
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
