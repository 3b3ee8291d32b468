//! The demo behind `cargo xtask demo` (the `lb-demo` binary) end to end, so that it cannot rot:
//! the built binary runs as the command runs it, with no standard input, and the test checks
//! its exit status, the key lines of its narration, and that it left nothing behind. Needs
//! root.

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{agent::bin_dir, netns::list_namespaces};

/// Past this the demo is stopped with SIGTERM (it then cleans up) and the test fails.
const LIMIT: Duration = Duration::from_secs(120);

/// `answered 300 of 300: real1=100 real2=100 real3=100` -> (300, {real1: 100, ...}).
fn parse_round(line: &str) -> (u64, BTreeMap<String, u64>) {
    let (head, counts) = line.split_once(':').expect("answered N of M: ...");
    let asked = head
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad round line {line:?}"));
    let counts = counts
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("realN=count");
            (k.to_owned(), v.parse().expect("a count"))
        })
        .collect();
    (asked, counts)
}

/// Runs `lb-demo` to its end (or SIGTERM at [`LIMIT`]); returns (exit status, stdout, stderr,
/// pid).
fn run_demo() -> (std::process::ExitStatus, String, String, u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-demo"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting lb-demo");
    let pid = child.id();
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let mut signalled = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for lb-demo") {
            break status;
        }
        if !signalled && started.elapsed() > LIMIT {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            signalled = true;
        }
        if started.elapsed() > LIMIT + Duration::from_secs(30) {
            let _ = child.kill();
        }
        thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().expect("stdout"), err.join().expect("stderr"));
    assert!(!signalled, "lb-demo ran past {LIMIT:?}:\n{out}\n{err}");
    (status, out, err, pid)
}

#[test]
fn the_demo_runs_and_cleans_up() {
    // lb-agent and lbadm, built as `cargo xtask demo` builds them before running the demo.
    bin_dir();
    let started = Instant::now();
    let (status, out, err, pid) = run_demo();
    let took = started.elapsed();
    println!("{out}");
    assert!(status.success(), "lb-demo failed ({status}):\n{err}");
    assert!(out.contains("every step behaved as described"), "{out}");

    // The configuration it runs, and the listing: the VIP and three reals.
    assert!(out.contains("lb_algo: wlc"), "{out}");
    assert!(out.contains("$ lbadm -L -n\n"), "{out}");
    assert!(out.contains("$ lbadm -L -n --stats\n"), "{out}");
    assert!(out.contains("$ lbadm -L -n -c\n"), "{out}");
    assert!(out.contains("$ lbadm -L -n --health\n"), "{out}");
    assert!(out.contains("TCP  10.1.0.100:80 wlc\n"), "{out}");
    for real in ["10.1.0.11", "10.1.0.12", "10.1.0.13"] {
        assert!(out.contains(&format!("  -> {real}:80 ")), "{real}: {out}");
    }

    // Every real served the first round; none of the second reached real2, which was down;
    // the third reached it again.
    let rounds: Vec<(u64, BTreeMap<String, u64>)> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("answered "))
        .map(parse_round)
        .collect();
    assert_eq!(rounds.len(), 3, "{out}");
    let count = |round: usize, real: &str| rounds[round].1.get(real).copied().unwrap_or(0);
    for (asked, counts) in &rounds {
        assert_eq!(counts.values().sum::<u64>(), *asked, "{out}");
    }
    for real in ["real1", "real2", "real3"] {
        assert!(count(0, real) > 0, "{real} served nothing: {out}");
    }
    assert_eq!(count(1, "real2"), 0, "{out}");
    assert!(count(2, "real2") > 0, "{out}");
    assert!(
        out.contains("of TCP 10.1.0.100:80 failed its check: connect refused"),
        "{out}"
    );
    assert!(
        out.contains("of TCP 10.1.0.100:80 passed its check"),
        "{out}"
    );
    assert!(out.contains("still answer, on the same real"), "{out}");
    assert!(out.contains("lb_real_up{"), "{out}");

    // Nothing left behind: namespaces, agent processes, pinned maps.
    let prefix = format!("lbt{pid}-");
    let namespaces: Vec<String> = list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(namespaces.is_empty(), "left behind: {namespaces:?}");
    let instance = format!("t{pid}-");
    let pins: Vec<String> = fs::read_dir("/sys/fs/bpf")
        .expect("/sys/fs/bpf")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("lb-xdp-test-{instance}")))
        .collect();
    assert!(pins.is_empty(), "pins left behind: {pins:?}");
    let agents: Vec<String> = fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("lb-agent") && c.contains(&format!("lb-agent-{instance}")))
        .collect();
    assert!(agents.is_empty(), "agents left running: {agents:?}");

    eprintln!("demo: {:.1} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(60), "the demo took {took:?}");
}
