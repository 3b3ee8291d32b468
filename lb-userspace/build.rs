//! Locates the XDP object built by `cargo xtask build-ebpf` so that `lb-agent` embeds it and a
//! single binary deploys.
//!
//! Without the object the library still builds (cfg `lb_no_ebpf_object`), so that the control
//! plane's pure modules build and unit-test on stable alone; loading the data plane then fails
//! with an error that says how to build the object, and cargo prints a warning.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lb_no_ebpf_object)");
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");
    let path = match env::var_os("LB_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
            manifest.join("../target/bpfel-unknown-none/release/lb-ebpf")
        }
    };
    let Ok(path) = path.canonicalize() else {
        println!(
            "cargo:warning=the XDP object {} does not exist: this build cannot load the data \
             plane (run `cargo xtask build-ebpf` first, or set LB_EBPF_OBJECT)",
            path.display()
        );
        // A missing path makes cargo rerun this script on every build, until the object
        // exists (a watch of target/ instead would make cargo scan the whole build tree).
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-cfg=lb_no_ebpf_object");
        return;
    };
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=LB_EBPF_OBJECT={}", path.display());
}
