//! One agent per instance: an exclusive `flock` on the instance's pin directory, held for the
//! life of the process. A second agent for the same instance is refused before it touches
//! the pins or the control socket, with the PID of the agent that holds the lock. The kernel
//! releases the lock when its holder dies, however it dies, so the restart of a `kill -9`ed
//! agent is never blocked by a stale lock.
//!
//! bpffs holds no regular files, so the lock is taken on the directory itself (flock works on
//! any inode); the holder is found in `/proc/locks`.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

/// Why the instance could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another lb-agent runs this instance (pins {}){}: stop it first, or give this one another \
         `instance`",
        path.display(),
        holder.map(|p| format!(", PID {p}")).unwrap_or_default()
    )]
    Held {
        /// The pin directory.
        path: PathBuf,
        /// The PID holding the lock, when `/proc/locks` tells it.
        holder: Option<u32>,
    },
    /// The directory could not be created, opened or locked.
    #[error("locking the instance's pin directory {}: {source}", path.display())]
    Io {
        /// The pin directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// The lock of one instance; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    _dir: File,
}

impl InstanceLock {
    /// Creates the pin directory `dir` if needed and locks it, without waiting.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let file = File::open(dir).map_err(io_err)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(InstanceLock { _dir: file });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(err));
        }
        let holder = file
            .metadata()
            .ok()
            .and_then(|m| std::fs::read_to_string("/proc/locks").ok().map(|t| (m, t)))
            .and_then(|(m, locks)| flock_holder(&locks, m.dev(), m.ino()));
        Err(LockError::Held {
            path: dir.to_path_buf(),
            holder,
        })
    }
}

/// The PID holding a granted `FLOCK` on the inode `(dev, ino)`, from `/proc/locks`, whose
/// lines read `1: FLOCK  ADVISORY  WRITE 4242 00:1f:12345 0 EOF` (waiters are marked `->`).
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let id = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, inode, ..] if *inode == id => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-lock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("instance")
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = scratch("second");
        let first = InstanceLock::acquire(&dir).unwrap();
        match InstanceLock::acquire(&dir) {
            Err(LockError::Held { path, holder }) => {
                assert_eq!(path, dir);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        let message = InstanceLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            message.contains(&format!("PID {}", std::process::id())),
            "{message}"
        );
        drop(first);
        InstanceLock::acquire(&dir).expect("free again once dropped");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_lock_of_a_killed_holder_does_not_block() {
        let dir = scratch("killed");
        std::fs::create_dir_all(&dir).unwrap();
        // util-linux's flock(1) takes the same kind of lock, in another process; --no-fork:
        // it becomes `sleep`, so the PID holding the lock is the child's.
        let mut child = Command::new("flock")
            .arg("--no-fork")
            .arg(&dir)
            .args(["sleep", "60"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let held = loop {
            match InstanceLock::acquire(&dir) {
                Err(LockError::Held { holder, .. }) => break holder,
                Ok(lock) => drop(lock), // flock(1) has not locked it yet
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(held, Some(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        InstanceLock::acquire(&dir).expect("a killed holder's lock is gone");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 10 00:1f:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:1f:12345 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4343 00:1f:12345 0 EOF\n";
        let dev = libc::makedev(0, 0x1f);
        assert_eq!(flock_holder(locks, dev, 12345), Some(4242));
        assert_eq!(flock_holder(locks, dev, 99), None);
        assert_eq!(flock_holder(locks, libc::makedev(8, 1), 12345), None);
    }
}
