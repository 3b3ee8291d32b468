//! `lb-agent`: the load balancer daemon on a director.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, ValueEnum};
use lb_userspace::agent::{self, AgentOptions};
use tracing_subscriber::EnvFilter;

/// Loads the XDP data plane, fills it from a YAML file of keepalived-style virtual servers and
/// keeps it right: SIGHUP reloads, SIGTERM/SIGINT stop (and detach, unless the configuration
/// says `keep_forwarding_on_stop`). Restarting, even after `kill -9`, adopts the running data
/// plane without breaking a connection.
#[derive(Parser)]
#[command(name = "lb-agent", version)]
struct Args {
    /// Run with this configuration file.
    #[arg(long, value_name = "FILE", required_unless_present = "check_config")]
    config: Option<PathBuf>,

    /// Validate this configuration file and exit (touches nothing on the system).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,

    /// Log level of the XDP program's own logging (aya-log); off removes it from the packet path.
    #[arg(long, value_enum, default_value = "off")]
    ebpf_log_level: EbpfLogLevel,

    /// Directory holding the instances' pin directories on bpffs.
    #[arg(long, value_name = "DIR", default_value = lb_userspace::dataplane::PIN_ROOT)]
    pin_root: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum EbpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    if let Some(path) = args.check_config {
        return match agent::check_config(&path) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        };
    }

    let opts = AgentOptions {
        config_path: args.config.expect("clap requires --config"),
        ebpf_log_level: args.ebpf_log_level as u8,
        pin_root: Some(args.pin_root),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lb-agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(agent::run(opts));
    // A reload still reading its file must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
