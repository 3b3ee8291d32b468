//! `file_check`, keepalived's `FILE_CHECK` with its `track_file`: a number read from a file every
//! `delay_loop` decides the checker's state and what it adds to its real's weight.
//!
//! keepalived's rules, for real servers:
//! - the file's first bytes are read as a C `strtol` with base 0 would (leading blanks, a sign,
//!   `0x` hex, `0` octal; text without digits is 0); a missing or empty file is 0; a number
//!   outside `-2^31..=2^31` is ignored (the last state stays);
//! - with weight 0 the checker is up while the number is 0, or with `reverse` while it is not,
//!   and adds nothing to the weight;
//! - otherwise the number times the weight (negated with `reverse`), clamped to 32 bits, is added
//!   to the real's weight, unless it is at or below -2^31 (keepalived's fault value): then the
//!   checker is down.
//!
//! `init_file` writes a value to the file when the agent starts ([`init_files`]).

use std::{io::Read as _, path::Path, time::Duration};

use tracing::{info, warn};

use super::machine::Outcome;
use crate::{config::Checker, config::Config, model::WeightEffect};

/// How many bytes of the file are read (keepalived reads at most 127).
const READ_LIMIT: u64 = 127;

/// What one reading of the file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// A number (0 for a missing or empty file).
    Value(i64),
    /// A number keepalived ignores: the last state stays.
    Ignored(String),
}

/// The number `text` holds, read as `strtol(text, NULL, 0)` does, and checked against
/// keepalived's bounds.
pub fn parse(text: &str) -> Reading {
    let s = text.trim_start();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(hex) = s.strip_prefix("0x").or(s.strip_prefix("0X"))
        && hex.starts_with(|c: char| c.is_ascii_hexdigit())
    {
        (16, hex)
    } else if s.starts_with('0') {
        (8, s)
    } else {
        (10, s)
    };
    let mut value: i128 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        value = value * i128::from(radix) + i128::from(d);
        if value > i128::from(i64::MAX) {
            return Reading::Ignored(format!("number out of range in {text:?}"));
        }
    }
    let value = if negative { -value } else { value };
    if !(i128::from(i32::MIN)..=i128::from(i32::MAX) + 1).contains(&value) {
        return Reading::Ignored(format!("number {value} out of range"));
    }
    Reading::Value(value as i64)
}

/// The checker's state and weight contribution for `value` read from the file.
pub fn judge(value: i64, weight: i32, reverse: bool) -> (Outcome, Option<WeightEffect>) {
    if weight == 0 {
        let up = (value == 0) != reverse;
        let detail = format!("file value {value}");
        return (Outcome { ok: up, detail }, None);
    }
    let sign = if reverse { -1 } else { 1 };
    let product = (i128::from(value) * i128::from(weight) * sign)
        .clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i64;
    if product <= i64::from(i32::MIN) {
        let detail = format!("file value {value}: weight {product} is the fault value");
        return (Outcome { ok: false, detail }, None);
    }
    let detail = format!("file value {value}: weight {product:+}");
    let effect = (product != 0).then_some(WeightEffect::Add(product));
    (Outcome { ok: true, detail }, effect)
}

/// Reads `path` within `limit`: `None` when the number is ignored (or the read took too long),
/// so the last state stays.
pub async fn check(
    path: &Path,
    weight: i32,
    reverse: bool,
    limit: Duration,
) -> Option<(Outcome, Option<WeightEffect>)> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || read_head(&owned));
    let text = match tokio::time::timeout(limit, read).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            warn!(file = %path.display(), "file_check read task failed: {e}");
            return None;
        }
        Err(_) => {
            warn!(file = %path.display(), "file_check read took over {limit:?}; ignored");
            return None;
        }
    };
    match parse(&text) {
        Reading::Value(v) => Some(judge(v, weight, reverse)),
        Reading::Ignored(why) => {
            warn!(file = %path.display(), "file_check: {why}; ignored");
            None
        }
    }
}

/// The first bytes of `path` as text; empty when it cannot be opened or read (keepalived's 0).
fn read_head(path: &Path) -> String {
    let mut buf = Vec::new();
    let Ok(f) = std::fs::File::open(path) else {
        return String::new();
    };
    if f.take(READ_LIMIT).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// keepalived's `init_file`: writes each `file_check`'s initial value to its file when the agent
/// starts (not on a reload), if the file is missing or `overwrite` is set. Failures are logged,
/// as keepalived does; the check then reads whatever is there.
pub fn init_files(config: &Config) {
    let inits = config
        .virtual_servers
        .iter()
        .flat_map(|vs| &vs.real_servers)
        .flat_map(|rs| &rs.checks)
        .filter_map(|c| match c {
            Checker::File(f) => f.init_file.map(|i| (&f.path, i)),
            _ => None,
        });
    for (path, init) in inits {
        match std::fs::symlink_metadata(path) {
            Ok(_) if !init.overwrite => continue,
            Ok(m) if !m.is_file() => {
                warn!(file = %path.display(), "file_check init_file: not a regular file");
                continue;
            }
            _ => {}
        }
        match std::fs::write(path, format!("{}\n", init.value)) {
            Ok(()) => {
                info!(file = %path.display(), value = init.value, "file_check file initialised")
            }
            Err(e) => warn!(file = %path.display(), "file_check init_file failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_strtol_with_base_0() {
        assert_eq!(parse("42\n"), Reading::Value(42));
        assert_eq!(parse("  -7 trailing"), Reading::Value(-7));
        assert_eq!(parse("0x1f"), Reading::Value(31));
        assert_eq!(parse("010"), Reading::Value(8));
        assert_eq!(parse(""), Reading::Value(0));
        assert_eq!(parse("abc"), Reading::Value(0));
        assert_eq!(parse("2147483648"), Reading::Value(2_147_483_648));
        assert!(matches!(parse("2147483649"), Reading::Ignored(_)));
        assert!(matches!(parse("-2147483649"), Reading::Ignored(_)));
        assert!(matches!(
            parse("99999999999999999999999"),
            Reading::Ignored(_)
        ));
    }

    #[test]
    fn weight_zero_is_up_or_down() {
        assert!(judge(0, 0, false).0.ok);
        assert!(!judge(3, 0, false).0.ok);
        assert!(!judge(0, 0, true).0.ok);
        assert!(judge(3, 0, true).0.ok);
        assert_eq!(judge(3, 0, true).1, None);
    }

    #[test]
    fn a_weight_multiplies_the_value() {
        assert_eq!(judge(5, 2, false).1, Some(WeightEffect::Add(10)));
        assert_eq!(judge(5, 2, true).1, Some(WeightEffect::Add(-10)));
        assert!(judge(-5, 2, false).0.ok, "negative is still up");
        assert_eq!(judge(0, 2, false), (judge(0, 2, false).0, None));
        // At or below -2^31: keepalived's fault value, down.
        let (o, e) = judge(i64::from(i32::MIN), 1, false);
        assert!(!o.ok && e.is_none(), "{o:?}");
        assert!(!judge(1 << 30, 4, true).0.ok, "clamped to the fault value");
        assert!(judge(1 << 30, 4, false).0.ok, "clamped to i32::MAX");
    }

    #[tokio::test]
    async fn a_real_file_is_read_each_time() {
        let dir = std::env::temp_dir().join(format!("lb-file-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weight");
        let limit = Duration::from_secs(2);
        // Missing: 0, up with weight 0.
        let (o, _) = check(&path, 0, false, limit).await.unwrap();
        assert!(o.ok, "{o:?}");
        std::fs::write(&path, "1\n").unwrap();
        assert!(!check(&path, 0, false, limit).await.unwrap().0.ok);
        std::fs::write(&path, "3\n").unwrap();
        let (o, e) = check(&path, 10, false, limit).await.unwrap();
        assert!(o.ok);
        assert_eq!(e, Some(WeightEffect::Add(30)));
        std::fs::write(&path, "9999999999\n").unwrap();
        assert_eq!(check(&path, 10, false, limit).await, None, "ignored");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_file_creates_or_overwrites_at_start() {
        let dir = std::env::temp_dir().join(format!("lb-file-init-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (missing, kept, replaced) = (dir.join("a"), dir.join("b"), dir.join("c"));
        std::fs::write(&kept, "9\n").unwrap();
        std::fs::write(&replaced, "9\n").unwrap();
        let check = |path: &Path, value, overwrite| {
            format!(
                "      - ip: 192.168.0.2\n        checks:\n          - file_check: {{ path: {}, \
                 init_file: {{ value: {value}, overwrite: {overwrite} }} }}\n",
                path.display()
            )
        };
        let yaml = format!(
            "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 80\n    \
             lb_kind: dr\n    real_servers:\n{}{}{}",
            check(&missing, 3, false),
            check(&kept, 4, false).replace("192.168.0.2", "192.168.0.3"),
            check(&replaced, -5, true).replace("192.168.0.2", "192.168.0.4"),
        );
        let config = Config::from_yaml(&yaml, Path::new("init.yaml")).unwrap();
        init_files(&config);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&missing), "3\n", "created");
        assert_eq!(read(&kept), "9\n", "left alone");
        assert_eq!(read(&replaced), "-5\n", "overwritten");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
