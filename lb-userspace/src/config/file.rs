//! Reading a configuration file with bounds: only a regular file (a FIFO or a device at the
//! path would block the reader or never end), at most [`MAX_CONFIG_BYTES`], UTF-8.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

/// The largest configuration file read. It holds about 300,000 real servers written one per
/// line in flow style; parsing one this size peaks at about 500 MB.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Opening or reading failed.
    #[error("cannot read the file: {0}")]
    Io(#[from] io::Error),
    /// The path is not a regular file (a FIFO, a device, a socket, a directory).
    #[error("cannot read the file: it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "the file has {0} bytes or more; a configuration may have at most {MAX_CONFIG_BYTES} \
         (8 MiB)"
    )]
    TooLarge(u64),
    /// The file is not UTF-8; where the first invalid byte is.
    #[error("not UTF-8 text: invalid byte at line {line} column {column} (offset {offset})")]
    NotUtf8 {
        /// Line of the byte, from 1.
        line: usize,
        /// Column of the byte, from 1.
        column: usize,
        /// Byte offset in the file.
        offset: usize,
    },
}

/// Reads the text of the configuration file at `path` (also a keepalived.conf to import), or
/// says why not.
pub fn read(path: &Path) -> Result<String, FileError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let not_regular = if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a directory")
    } else {
        None
    };
    if let Some(what) = not_regular {
        return Err(FileError::NotRegular(what));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(FileError::TooLarge(meta.len()));
    }
    read_bounded(file)
}

/// Reads at most [`MAX_CONFIG_BYTES`] (the file may grow while it is read).
fn read_bounded(file: File) -> Result<String, FileError> {
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(FileError::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let text = &e.as_bytes()[..offset];
        FileError::NotUtf8 {
            line: text.iter().filter(|&&b| b == b'\n').count() + 1,
            column: text.iter().rev().take_while(|&&b| b != b'\n').count() + 1,
            offset,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::{
        ffi::CString,
        os::unix::ffi::OsStrExt as _,
        path::PathBuf,
        time::{Duration, Instant},
    };

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_fifo_is_refused_at_once_without_a_writer() {
        let path = scratch("fifo.yaml");
        let _ = std::fs::remove_file(&path);
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let start = Instant::now();
        let err = read(&path).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(
            err,
            "cannot read the file: it is a FIFO, not a regular file"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn devices_and_directories_are_refused() {
        assert_eq!(
            read(Path::new("/dev/zero")).unwrap_err().to_string(),
            "cannot read the file: it is a character device, not a regular file"
        );
        assert_eq!(
            read(&std::env::temp_dir()).unwrap_err().to_string(),
            "cannot read the file: it is a directory, not a regular file"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused_with_its_size() {
        let path = scratch("big.yaml");
        let f = File::create(&path).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        assert_eq!(
            read(&path).unwrap_err().to_string(),
            "the file has 8388609 bytes or more; a configuration may have at most 8388608 (8 MiB)"
        );
        f.set_len(MAX_CONFIG_BYTES).unwrap();
        assert_eq!(read(&path).unwrap().len() as u64, MAX_CONFIG_BYTES);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn invalid_utf8_is_located() {
        let path = scratch("latin1.yaml");
        std::fs::write(&path, b"interface: eth0\nname: caf\xe9\n").unwrap();
        assert_eq!(
            read(&path).unwrap_err().to_string(),
            "not UTF-8 text: invalid byte at line 2 column 10 (offset 25)"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
