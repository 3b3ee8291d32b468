//! What each fuzz target checks, for any input. A target panics (and libFuzzer reports a
//! crash) when a parser panics or a property below fails; `tests/regressions.rs` replays every
//! input saved under `regressions/<target>/` through the same functions on stable Rust.

use std::{path::Path, sync::OnceLock};

use lb_userspace::{
    config::{Config, MAX_CONFIG_BYTES},
    control::{self, Request},
    health::{
        frame::{self, Path as FramePath},
        tcp_session::{ACK, FIN, RST, SYN, Segment, Session, State},
    },
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

/// What a real sends back to a check that goes through the VIP, as the agent reads it: any
/// frame parses to a TCP segment or to nothing, never a panic, and a parsed segment rebuilt
/// along its path parses back to itself. The bytes also drive the check's connection as a
/// sequence of segments (10 bytes each: sequence, acknowledgement, flags, data length, then
/// the data), interleaved with the check's own writes, reads and close: never a panic, and it
/// never reads more than the server sent.
pub fn tcp_segments(data: &[u8]) {
    if let Some((from, to, seg)) = frame::parse_tcp(data) {
        let path = FramePath {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: from,
            dst: to,
        };
        let again = frame::tcp_frame(&path, &seg);
        assert_eq!(frame::parse_tcp(&again), Some((from, to, seg)));
    }
    let mut session = Session::new(1000);
    // The server's answer to the SYN, so that the rest reaches the established state.
    let _ = session.receive(&Segment {
        seq: 5000,
        ack: 1001,
        flags: SYN | ACK,
        payload: Vec::new(),
    });
    let mut rest = data;
    let (mut read, mut sent) = (0usize, 0usize);
    while rest.len() >= 10 {
        let seq = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let ack = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let flags = rest[8];
        let len = usize::from(rest[9]).min(rest.len() - 10);
        let seg = Segment {
            seq: 5001u32.wrapping_add(seq % 4096),
            ack,
            flags: flags & (FIN | SYN | RST | ACK),
            payload: rest[10..10 + len].to_vec(),
        };
        rest = &rest[10 + len..];
        sent += len;
        let _ = session.receive(&seg);
        // The high bits of the flags byte stand for what the check does next.
        if flags & 0x20 != 0 {
            let _ = session.send(&seg.payload);
        }
        if flags & 0x40 != 0 {
            let mut buf = [0u8; 64];
            read += session.read(&mut buf);
        }
        if flags & 0x80 != 0 {
            let _ = session.close();
        }
        let _ = session.resend();
    }
    let mut buf = vec![0u8; 1 << 16];
    read += session.read(&mut buf);
    assert!(read <= sent, "read {read} bytes of the {sent} sent");
    if session.state() != State::Established {
        assert!(!session.outstanding());
    }
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
