//! The monitoring files shipped in `configs/`: the Prometheus alert rules load in promtool and
//! pass their unit tests (`configs/prometheus/lb-xdp-alerts.test.yml`: each alert fires on the
//! series that should raise it, after its `for`, and not on the others). That the rules and the
//! Grafana dashboard name only metrics the agent exports is checked in `observe::metrics`.

use std::{path::Path, process::Command};

fn promtool(args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("running promtool (Debian package prometheus; the test command installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_load_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "lb-xdp-alerts.yml"]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "lb-xdp-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}
