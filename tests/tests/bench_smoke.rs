//! The benchmark harness (`cargo xtask bench`, binary `lb-bench`) in smoke mode: every case
//! runs with few iterations and tiny sizes and must produce a number, and the report renders,
//! so the harness cannot rot between benchmark runs. Needs root (XDP programs, namespaces) and
//! the reference object built by `cargo xtask build-ebpf`.

#[path = "../src/bench/mod.rs"]
mod bench;

use std::time::Instant;

use bench::{Options, Parts, report};

#[test]
fn every_benchmark_case_runs_and_produces_a_number() {
    let started = Instant::now();
    let mut opts = Options::new(true, "cargo test --test bench_smoke");
    opts.parts = Parts::parse("dataplane,scaling,sync,control,e2e").expect("parts");
    assert_eq!(opts.parts, Parts::ALL);
    assert!(
        opts.bench_ref.exists(),
        "{} is missing: run `cargo xtask build-ebpf`",
        opts.bench_ref.display()
    );
    let report = bench::run(&opts).unwrap_or_else(|e| panic!("smoke run failed: {e:#}"));

    let problems = bench::check_complete(&report);
    assert!(problems.is_empty(), "incomplete: {problems:#?}");
    assert!(report.dataplane.is_some() && report.scaling.is_some());
    assert!(report.sync.is_some());
    assert!(report.control.is_some() && report.e2e.is_some());

    // The JSON round trip xtask relies on, and the Markdown it writes.
    let json = serde_json::to_string(&report).expect("to JSON");
    let back: report::Report = serde_json::from_str(&json).expect("from JSON");
    let md = report::markdown(&back);
    for needle in [
        "## Targets",
        "## Data plane (BPF_PROG_TEST_RUN)",
        "| hit |",
        "| syn |",
        "| udp |",
        "| pass |",
        "| fragment |",
        "| icmp |",
        "| hit6 |",
        "| syn6 |",
        "| syn_wlc |",
        "A new connection under wlc",
        "IPv6 beside IPv4",
        "### services",
        "### reals",
        "### connection table",
        "## Director sync",
        "### New flows with sync on and off",
        "| syn | TCP SYN",
        "| syn_wlc | TCP SYN",
        "| first SYN |",
        "| confirming ACK |",
        "### Sync rate",
        "bytes per flow",
        "confirming packet (and SYN) with sync on <= 1.15x sync off",
        "### Maglev build",
        "### Reload with",
        "### Health checks",
        "## End to end in network namespaces",
        "(a) direct to the real",
        "(b) through our VIP",
        "Source: `cargo test --test bench_smoke`",
        "SMOKE MODE",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from:\n{md}");
    }
    // Every target has a verdict, and every miss an explanation.
    let verdicts = report::verdicts(&back);
    // 4 data plane, 3 scaling, 1 sync, 2 control plane, 2 end to end, 2 more with HAProxy.
    let haproxy = back
        .e2e
        .as_ref()
        .is_some_and(|e| e.scenarios.iter().any(|s| s.key == "c"));
    let expected = if haproxy { 14 } else { 12 };
    assert_eq!(verdicts.len(), expected, "{verdicts:#?}");
    for v in &verdicts {
        assert!(v.met || v.why.is_some(), "{v:#?}");
    }
    eprintln!("bench smoke run: {:.1} s", started.elapsed().as_secs_f64());
}
