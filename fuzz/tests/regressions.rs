//! Replays, on stable Rust, every input that ever crashed a fuzz target (`regressions/<target>/`,
//! one file each, named after what it found) and every seed (`seeds/<target>/`) through the
//! same checks the targets run.

use std::{fs, path::Path};

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in ["regressions", "seeds"] {
        let dir = root.join(dir).join(target);
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".keep") {
                continue;
            }
            let data = fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{target}: {} fails again", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "{target}: no seeds and no regressions");
}

#[test]
fn config_yaml() {
    replay("config_yaml", lb_fuzz::config_yaml);
}

#[test]
fn keepalived_import() {
    replay("keepalived_import", lb_fuzz::keepalived_import);
}

#[test]
fn control_protocol() {
    replay("control_protocol", lb_fuzz::control_protocol);
}

#[test]
fn sync_datagram() {
    replay("sync_datagram", lb_fuzz::sync_datagram);
}

#[test]
fn lbadm_args() {
    replay("lbadm_args", lb_fuzz::lbadm_args);
}
