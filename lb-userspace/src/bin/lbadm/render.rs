//! Answers as text: ipvsadm's listings (or their JSON), the saved YAML, and --which's line.

use std::net::SocketAddr;

use lb_userspace::{
    control::{Response, Snapshot, WhichAnswer},
    model::ServiceKey,
    observe::ipvsadm::{self, JsonView},
};

use super::plan::{Action, Failure};

/// The text an action prints for a (non-error) answer.
pub(super) fn render(action: &Action, resp: Response) -> Result<String, Failure> {
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
        Action::ConnTable { json } => {
            let snap = snapshot(resp)?;
            if *json {
                ipvsadm::json(&snap, JsonView::ConnTable)
            } else {
                ipvsadm::conn_table(&snap)
            }
        }
        Action::Daemon { json } => {
            let snap = snapshot(resp)?;
            if *json {
                ipvsadm::json(&snap, JsonView::Daemon)
            } else {
                ipvsadm::daemons(&snap)
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
