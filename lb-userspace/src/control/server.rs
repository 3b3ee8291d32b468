//! The agent's control socket: a Unix socket, mode 0600 in a root-only directory, where
//! `lbadm` sends one JSON request per line and reads one JSON response per line.
//!
//! Connections are served by their own tasks; each request is handed to the agent's loop (the
//! only owner of the data plane) and its answer written back. A peer that is not root is
//! refused. A malformed request gets an error response and never disturbs the agent.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use tokio::{
    io::BufReader,
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{debug, warn};

use crate::control::{ControlError, Request, Response, read_request, write_response};

/// A request waiting for the agent's answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// The listening socket; removed on drop.
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Binds `path` (creating its directory root-only if missing, replacing a stale socket)
    /// and serves it; requests arrive on the returned channel.
    pub fn start(path: &Path) -> io::Result<(Self, mpsc::Receiver<Pending>)> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        match fs::remove_file(path) {
            Ok(()) => debug!(socket = %path.display(), "removed a stale control socket"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(accept(listener, tx));
        Ok((
            Self {
                path: path.to_owned(),
                task,
            },
            rx,
        ))
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = fs::remove_file(&self.path);
    }
}

async fn accept(listener: UnixListener, agent: mpsc::Sender<Pending>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, agent.clone()));
            }
            Err(e) => {
                warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, agent: mpsc::Sender<Pending>) {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = stream.into_split();
    if uid != Some(0) {
        warn!(
            ?uid,
            "control socket: refused a connection from a non-root user"
        );
        let refusal = Response::error("permission denied: lbadm must run as root");
        let _ = write_response(&mut write, &refusal).await;
        return;
    }
    let mut read = BufReader::new(read);
    loop {
        let response = match read_request(&mut read).await {
            Ok(None) => return,
            Ok(Some(request)) => {
                let (tx, rx) = oneshot::channel();
                if agent.send((request, tx)).await.is_err() {
                    return;
                }
                match rx.await {
                    Ok(r) => r,
                    Err(_) => Response::error("the agent is shutting down"),
                }
            }
            Err(ControlError::BadRequest(why)) => {
                Response::error(format!("malformed request: {why}"))
            }
            Err(e) => {
                // Oversized or broken stream: answer if possible, then drop the connection.
                let _ = write_response(&mut write, &Response::error(e.to_string())).await;
                return;
            }
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}
