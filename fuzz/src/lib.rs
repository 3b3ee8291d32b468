//! What each fuzz target checks, for any input. A target panics (and libFuzzer reports a
//! crash) when a parser panics or a property below fails; `tests/regressions.rs` replays every
//! input saved under `regressions/<target>/` through the same functions on stable Rust.

use std::{path::Path, sync::OnceLock};

use lb_userspace::{
    config::{Config, MAX_CONFIG_BYTES},
    control::{self, Request},
    import::keepalived,
    reconcile::edit,
    sync::wire,
};

// lbadm's argument parsing lives in its binary: the fuzz crate compiles its folder as a module.
#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../lb-userspace/src/bin/lbadm/main.rs"]
mod lbadm;

/// A configuration the edits of the control target apply to.
const BASE_CONFIG: &str = "interface: eth0\nvirtual_servers:\n  - vip: 10.0.0.100\n    port: 80\n    \
     lb_kind: dr\n    real_servers:\n      - ip: 10.0.0.11\n      - ip: 10.0.0.12\n";

/// The YAML reader and validation: never a panic; an accepted configuration round-trips
/// through its canonical YAML; every error line names the file and holds no control
/// character.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return;
    }
    let file = Path::new("fuzz.yaml");
    match Config::from_yaml(text, file) {
        Ok(config) => {
            let again = Config::from_yaml(&config.to_yaml(), file).unwrap_or_else(|e| {
                panic!("the canonical YAML of an accepted file is refused: {e}")
            });
            assert_eq!(again, config, "the canonical YAML reads back differently");
        }
        Err(e) => {
            for line in e.to_string().lines() {
                assert!(line.starts_with("fuzz.yaml: "), "{line:?}");
                assert!(!line.chars().any(char::is_control), "{line:?}");
            }
        }
    }
}

/// The keepalived importer: never a panic (nor a stack overflow); what it writes reads as
/// YAML, and its warnings hold no control character.
pub fn keepalived_import(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(import) = keepalived::import_named(text, "eth0", "fuzz.conf") else {
        return;
    };
    serde_yaml::from_str::<serde_yaml::Value>(&import.yaml)
        .unwrap_or_else(|e| panic!("the importer wrote YAML that does not parse: {e}"));
    for w in &import.warnings {
        let shown = w.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }
}

/// A director-sync datagram as a receiver reads it. The input is a datagram without its tag;
/// the harness signs it with the fuzzing key, so the fuzzer reaches the record parser behind
/// the authentication. Any bytes decode or are rejected, never a panic, and a datagram that
/// decodes re-encodes to exactly its bytes (one encoding per meaning).
pub fn sync_datagram(data: &[u8]) {
    const INSTANCE: u64 = 0x5eed;
    let key = wire::Key::new([0x5a; wire::KEY_LEN]);
    let signed = &data[..data.len().min(wire::MAX_DATAGRAM - wire::TAG_LEN)];
    let mut bytes = signed.to_vec();
    bytes.extend_from_slice(&wire::tag(&key, signed));
    if let Ok(d) = wire::decode(&bytes, &key, INSTANCE) {
        assert_eq!(wire::encode(d.header, &d.records, &key), vec![bytes]);
    }
    // Unsigned, the same bytes are only ever refused.
    let _ = wire::decode(data, &key, INSTANCE);
}

/// The control-socket protocol as the agent reads it: any byte stream gives requests or
/// errors, never a panic; a request decoded re-encodes to itself; an edit applied to a running
/// configuration gives a configuration that validates, or an error.
pub fn control_protocol(data: &[u8]) {
    static BASE: OnceLock<Config> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        Config::from_yaml(BASE_CONFIG, Path::new("base.yaml")).expect("base config")
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut stream = data;
    runtime.block_on(async {
        loop {
            match control::read_request(&mut stream).await {
                Ok(Some(request)) => check_request(base, &request),
                Ok(None) => break,
                Err(control::ControlError::BadRequest(_)) => continue,
                Err(_) => break,
            }
        }
    });
}

fn check_request(base: &Config, request: &Request) {
    let line = serde_json::to_vec(request).expect("a request encodes");
    let again: Request = serde_json::from_slice(&line).expect("an encoded request decodes");
    assert_eq!(&again, request, "a request does not round-trip");
    if let Request::Edit(change) = request
        && let Ok(edited) = edit::apply(base, change)
    {
        Config::from_yaml(&edited.to_yaml(), Path::new("edited.yaml"))
            .unwrap_or_else(|e| panic!("an accepted edit gives an invalid configuration: {e}"));
    }
}

/// lbadm's command line: the input's lines are its arguments. Never a panic; a usage error
/// exits 2 with a message of one line; nothing is sent for it.
pub fn lbadm_args(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args = std::iter::once("lbadm").chain(text.lines());
    let Ok(cli) = <lbadm::Cli as clap::Parser>::try_parse_from(args) else {
        return;
    };
    let services =
        lb_userspace::observe::ipvsadm::Services::parse("http 80/tcp www\ndomain 53/udp\n");
    if let Err(failure) = lbadm::plan(&cli, &services) {
        assert_eq!(failure.code, 2, "{failure:?}");
        assert!(!failure.message.contains('\n'), "{failure:?}");
    }
}
