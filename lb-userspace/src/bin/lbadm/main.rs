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
//! - `-L --daemon` prints both a master and a backup sync daemon line (every agent both sends
//!   and receives), then our lines: peers, counters, lag, the start-up resync, the last error;
//! - ours: `--json` on every listing, `--health` on `-L`, `--which -t|-u VIP:PORT --client
//!   IP:PORT` to ask where a client's flow goes.
//!
//! Exit status: 0 on success, 2 for a usage error (nothing was sent), 1 when the agent cannot
//! be reached or refuses the request.

mod cli;
mod parse;
mod plan;
mod render;

use std::{
    io::{self, Write as _},
    path::Path,
    process::ExitCode,
};

use clap::Parser;
use lb_userspace::{
    control::{self, Response},
    import::keepalived::{ImportError, Options},
    observe::ipvsadm::Services,
};

// pub(crate): the fuzz crate compiles this folder as a module and drives `Cli` and `plan`.
pub(crate) use cli::Cli;
use plan::Action;
pub(crate) use plan::{Failure, plan};
use render::render;

/// `import-keepalived`: the YAML on stdout, each warning on stderr as `FILE: line N: ...` (or
/// `FILE: line N of INCLUDED: ...`).
fn import_keepalived(file: &Path, options: &Options) -> Result<(), Failure> {
    // Each file is bounded as the agent's own configuration: a regular file of at most 8 MiB.
    let name = file.display().to_string();
    let import = match lb_userspace::import::keepalived::import_file(file, options) {
        Ok(import) => import,
        // It names the file already.
        Err(e @ ImportError::Read { .. }) => return Err(Failure::agent(e.to_string())),
        Err(e) => return Err(Failure::agent(format!("{name}: {e}"))),
    };
    for w in &import.warnings {
        eprintln!("{name}: {w}");
    }
    print!("{}", import.yaml);
    Ok(())
}

/// Sends the action's request and prints the answer.
fn run(action: &Action, socket: &Path) -> Result<(), Failure> {
    if let Action::ImportKeepalived(file, options) = action {
        return import_keepalived(file, options);
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
mod tests;
