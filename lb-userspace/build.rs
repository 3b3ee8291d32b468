//! Locates the XDP object built by `cargo xtask build-ebpf` so that `lb-agent` embeds it and a
//! single binary deploys.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");
    let path = match env::var_os("LB_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
            manifest.join("../target/bpfel-unknown-none/release/lb-ebpf")
        }
    };
    if !path.exists() {
        panic!(
            "the XDP object {} does not exist: run `cargo xtask build-ebpf` first \
             (or set LB_EBPF_OBJECT to a built object)",
            path.display()
        );
    }
    let path = path
        .canonicalize()
        .expect("canonical path of the XDP object");
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=LB_EBPF_OBJECT={}", path.display());
}
