//! The command line: clap's `Cli` with ipvsadm's commands and options, and which options each
//! command requires or accepts.

use std::path::PathBuf;

use clap::{ArgGroup, Parser, Subcommand};

/// Where `lb-agent` listens by default (instance `default`).
pub(super) const DEFAULT_SOCKET: &str = "/run/lb-xdp/default.sock";
/// ipvsadm's persistence timeout when `-p` has no value.
const DEFAULT_PERSISTENCE: &str = "300";

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
// pub(crate): the fuzz crate compiles lbadm's folder as a module and drives `Cli` and `plan`.
pub(crate) struct Cli {
    /// Control socket of the lb-agent instance.
    #[arg(long, value_name = "PATH", env = "LBADM_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(super) socket: PathBuf,

    /// Add a virtual service (with -t|-u, optional -s, -p).
    #[arg(
        short = 'A',
        long = "add-service",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) add_service: bool,
    /// Edit a virtual service (with -t|-u, optional -s, -p; without -p persistence goes off).
    #[arg(
        short = 'E',
        long = "edit-service",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) edit_service: bool,
    /// Delete a virtual service (with -t|-u).
    #[arg(
        short = 'D',
        long = "delete-service",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) delete_service: bool,
    /// Add a real server (with -t|-u, -r, optional -w).
    #[arg(
        short = 'a',
        long = "add-server",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) add_server: bool,
    /// Edit a real server (with -t|-u, -r, optional -w; without -w the weight becomes 1).
    #[arg(
        short = 'e',
        long = "edit-server",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) edit_server: bool,
    /// Delete a real server (with -t|-u, -r).
    #[arg(
        short = 'd',
        long = "delete-server",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) delete_server: bool,
    /// List the table (-l also works).
    #[arg(
        short = 'L',
        long = "list",
        visible_short_alias = 'l',
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) list: bool,
    /// Zero the counters of one service (-t|-u) or of all.
    #[arg(
        short = 'Z',
        long = "zero",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) zero: bool,
    /// Print the running configuration (YAML).
    #[arg(
        short = 'S',
        long = "save",
        group = "command",
        help_heading = "Commands"
    )]
    pub(super) save: bool,
    /// Tell which real server a client reaches (with -t|-u and --client).
    #[arg(long, group = "command", help_heading = "Commands")]
    pub(super) which: bool,

    #[arg(
        short = 't',
        long = "tcp-service",
        value_name = "VIP:PORT",
        group = "service",
        help = "TCP service, VIP:PORT ([VIP]:PORT for IPv6; names allowed)"
    )]
    pub(super) tcp_service: Option<String>,
    /// UDP service, VIP:PORT.
    #[arg(
        short = 'u',
        long = "udp-service",
        value_name = "VIP:PORT",
        group = "service"
    )]
    pub(super) udp_service: Option<String>,
    // The help lists what the parser accepts (config::LbAlgo), so the two cannot drift.
    #[arg(short = 's', long, value_name = "SCHEDULER", help = scheduler_help())]
    pub(super) scheduler: Option<String>,
    /// Persistent service; TIMEOUT in seconds, 300 when not given.
    #[arg(
        short = 'p',
        long = "persistent",
        value_name = "TIMEOUT",
        num_args = 0..=1,
        default_missing_value = DEFAULT_PERSISTENCE
    )]
    pub(super) persistent: Option<String>,
    #[arg(
        short = 'r',
        long = "real-server",
        value_name = "RIP[:PORT]",
        help = "Real server, RIP[:PORT]; the port is always the service's (direct routing)"
    )]
    pub(super) real_server: Option<String>,
    /// Direct routing (the default, and the only method).
    #[arg(short = 'g', long)]
    pub(super) gatewaying: bool,
    /// IP-in-IP tunneling: not supported.
    #[arg(short = 'i', long)]
    pub(super) ipip: bool,
    /// Masquerading (NAT): not supported.
    #[arg(short = 'm', long)]
    pub(super) masquerading: bool,
    /// Scheduler flags, comma-separated: sh-fallback, sh-port (with -s sh), mh-fallback,
    /// mh-port (with -s mh).
    #[arg(short = 'b', long = "sched-flags", value_name = "SCHED-FLAGS")]
    pub(super) sched_flags: Option<String>,
    /// One-packet scheduling (UDP services): every datagram scheduled on its own.
    #[arg(short = 'o', long)]
    pub(super) ops: bool,
    /// Weight of the real server, 0 to 65535 (0 = quiesce).
    #[arg(short = 'w', long, value_name = "WEIGHT")]
    pub(super) weight: Option<String>,
    /// Upper connection threshold of the real server, 0 to 2147483647 (0 = none): with that
    /// many connections it gets no new ones.
    #[arg(short = 'x', long = "u-threshold", value_name = "UTHRESHOLD")]
    pub(super) u_threshold: Option<String>,
    /// Lower connection threshold, 0 to 2147483647: an overloaded real takes new connections
    /// again below it (below 3/4 of the upper one when 0).
    #[arg(short = 'y', long = "l-threshold", value_name = "LTHRESHOLD")]
    pub(super) l_threshold: Option<String>,
    /// Numeric addresses and ports.
    #[arg(short = 'n', long)]
    pub(super) numeric: bool,
    /// List the connection table.
    #[arg(short = 'c', long)]
    pub(super) connection: bool,
    /// List the timeouts (tcp tcpfin udp).
    #[arg(long)]
    pub(super) timeout: bool,
    /// List the connection table's fill and pressure (refused inserts, evictions).
    #[arg(long = "conn-table")]
    pub(super) conn_table: bool,
    /// List the sync daemons (director state sync) and their counters.
    #[arg(long)]
    pub(super) daemon: bool,
    /// List counters.
    #[arg(long)]
    pub(super) stats: bool,
    /// List rates.
    #[arg(long)]
    pub(super) rate: bool,
    /// Exact numbers (no K/M/G/T).
    #[arg(long)]
    pub(super) exact: bool,
    /// JSON output for listings and --which.
    #[arg(long)]
    pub(super) json: bool,
    /// Health-check columns on each real server (with -L).
    #[arg(long)]
    pub(super) health: bool,
    /// Client address for --which, IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    pub(super) client: Option<String>,

    #[command(subcommand)]
    pub(super) subcommand: Option<Sub>,
}

/// Commands that are not ipvsadm's.
#[derive(Debug, Subcommand)]
pub(super) enum Sub {
    /// Convert the virtual_server blocks of a keepalived.conf into lb-agent YAML (on stdout;
    /// warnings on stderr name their lines).
    #[command(name = "import-keepalived")]
    ImportKeepalived {
        /// The keepalived configuration file.
        file: PathBuf,
        /// The director's interface (default: the interface of the file's vrrp_instance).
        #[arg(long, value_name = "IFACE", default_value = "")]
        interface: String,
        /// keepalived's --config-id: the director whose `@ID` lines are imported (default:
        /// keepalived's, this host's name up to its first dot).
        #[arg(long, value_name = "ID")]
        config_id: Option<String>,
        /// keepalived's --all-config: a missing or unreadable include is an error (by default,
        /// as keepalived, a warning unless includer/includem/... or include_check asks).
        #[arg(long)]
        all_config: bool,
    },
}

/// The commands, as ipvsadm names them in its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Command {
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
    pub(super) fn flag(self) -> &'static str {
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
pub(super) enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Real,
    Forward,
    SchedFlags,
    Ops,
    Weight,
    UThreshold,
    LThreshold,
    Timeout,
    ConnTable,
    Daemon,
    Stats,
    Rate,
    Exact,
    Json,
    Health,
    Client,
}

impl Opt {
    pub(super) fn flag(self) -> &'static str {
        match self {
            Opt::Numeric => "-n/--numeric",
            Opt::Connection => "-c/--connection",
            Opt::Service => "-t/--tcp-service or -u/--udp-service",
            Opt::Scheduler => "-s/--scheduler",
            Opt::Persistent => "-p/--persistent",
            Opt::Real => "-r/--real-server",
            Opt::Forward => "-g/--gatewaying",
            Opt::SchedFlags => "-b/--sched-flags",
            Opt::Ops => "-o/--ops",
            Opt::Weight => "-w/--weight",
            Opt::UThreshold => "-x/--u-threshold",
            Opt::LThreshold => "-y/--l-threshold",
            Opt::Timeout => "--timeout",
            Opt::ConnTable => "--conn-table",
            Opt::Daemon => "--daemon",
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
pub(super) fn rules(cmd: Command) -> (&'static [Opt], &'static [Opt]) {
    use Opt::*;
    match cmd {
        Command::AddService | Command::EditService => {
            (&[Service], &[Scheduler, Persistent, SchedFlags, Ops])
        }
        Command::DeleteService => (&[Service], &[]),
        Command::AddServer | Command::EditServer => {
            (&[Service, Real], &[Forward, Weight, UThreshold, LThreshold])
        }
        Command::DeleteServer => (&[Service, Real], &[]),
        Command::List => (
            &[],
            &[
                Numeric, Connection, Service, Timeout, ConnTable, Daemon, Stats, Rate, Exact, Json,
                Health,
            ],
        ),
        Command::Zero => (&[], &[Service]),
        Command::Save => (&[], &[Numeric]),
        Command::Which => (&[Service, Client], &[Numeric, Json]),
    }
}

impl Cli {
    pub(super) fn command(&self) -> Option<Command> {
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

    pub(super) fn options(&self) -> Vec<Opt> {
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
            (self.sched_flags.is_some(), Opt::SchedFlags),
            (self.ops, Opt::Ops),
            (self.weight.is_some(), Opt::Weight),
            (self.u_threshold.is_some(), Opt::UThreshold),
            (self.l_threshold.is_some(), Opt::LThreshold),
            (self.timeout, Opt::Timeout),
            (self.conn_table, Opt::ConnTable),
            (self.daemon, Opt::Daemon),
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

/// `-s`'s help: every scheduler the agent serves.
fn scheduler_help() -> String {
    format!(
        "Scheduler: {} (wlc when -A is given none, as ipvsadm)",
        lb_userspace::config::served_schedulers()
    )
}
