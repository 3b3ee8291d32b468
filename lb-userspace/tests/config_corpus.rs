//! The configuration corpus: every file in `tests/config-corpus/` is a configuration with one
//! mistake, and its first line says which error it must produce:
//!
//! ```yaml
//! # expect: virtual_servers[0].real_servers[1].port: must equal the virtual server's port
//! ```
//!
//! that is, the exact path (empty for the whole document) and a fragment of the message. The
//! shipped examples in `configs/` must all be valid.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_userspace::{
    config::{
        AmqpLogin, AmqpPassword, Checker, Config, HttpAuth, LbAlgo, Password, StatusCodes, UrlCheck,
    },
    model::{Protocol, ServiceKey},
};

/// The `.yaml` files of `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// `(path, fragment)` from the `# expect: <path>: <fragment>` first line of `file`.
fn expectation(file: &Path) -> (String, String) {
    let text = fs::read_to_string(file).expect("readable corpus file");
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("# expect: ").unwrap_or_else(|| {
        panic!(
            "{}: first line must be `# expect: <path>: <message>`",
            file.display()
        )
    });
    let (path, fragment) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("{}: expected `<path>: <message>`", file.display()));
    (path.to_owned(), fragment.to_owned())
}

/// What is wrong with how `file` was rejected, if anything.
fn check_corpus_file(file: &Path) -> Option<String> {
    let (path, fragment) = expectation(file);
    let err = match Config::from_file(file) {
        Ok(_) => return Some("accepted, but it is invalid".to_owned()),
        Err(e) => e,
    };
    let shown = err.to_string();
    if !shown.starts_with(&file.display().to_string()) {
        return Some(format!(
            "the message does not start with the file name:\n{shown}"
        ));
    }
    // Every line the operator sees names the file, is one line of readable length, and
    // carries no control character from the input.
    for line in shown.lines() {
        if !line.starts_with(&file.display().to_string())
            || line.chars().count() > 400
            || line.chars().any(char::is_control)
        {
            return Some(format!("a line is not a short, clean message:\n{line:?}"));
        }
    }
    // The fragment is matched against the message as shown (excerpts cut, escaped).
    if !err
        .errors
        .iter()
        .any(|e| e.path == path && e.to_string().contains(&fragment))
    {
        return Some(format!(
            "no error at `{path}` containing {fragment:?}; got:\n{shown}"
        ));
    }
    if err.errors.len() != 1 {
        return Some(format!("one mistake should give one error; got:\n{shown}"));
    }
    None
}

#[test]
fn every_corpus_file_is_rejected_where_it_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config-corpus");
    let files = yaml_files(&dir);
    assert!(
        files.len() >= 30,
        "the corpus has only {} files",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| check_corpus_file(f).map(|why| format!("{}: {why}", f.display())))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// `configs/` at the top of the workspace.
fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn shipped_configs_are_valid_and_round_trip() {
    let files = yaml_files(&configs_dir());
    assert!(files.len() >= 2, "configs/ has only {} files", files.len());
    for file in files {
        let config = Config::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
        let again = Config::from_yaml(&config.to_yaml(), &file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, config, "{}", file.display());
    }
}

#[test]
fn rabbitmq_config_follows_the_production_guide() {
    let config =
        Config::from_file(&configs_dir().join("rabbitmq.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let vip: IpAddr = "192.168.0.10".parse().unwrap();
    for port in [5672, 15672] {
        let key = ServiceKey {
            vip,
            port,
            proto: Protocol::Tcp,
        };
        let vs = config
            .virtual_server(&key)
            .unwrap_or_else(|| panic!("no service {key}"));
        assert_eq!(vs.lb_algo, LbAlgo::Wrr);
        assert_eq!(vs.persistence.map(|p| p.timeout), Some(50));
        assert_eq!(vs.delay_loop, Duration::from_secs(6));
        let reals: Vec<String> = vs
            .real_servers
            .iter()
            .map(|r| r.key.addr.to_string())
            .collect();
        assert_eq!(reals, ["192.168.0.2", "192.168.0.3", "192.168.0.4"]);
        for r in &vs.real_servers {
            assert_eq!((r.key.port, r.weight), (port, 1));
            // The guide's TCP_CHECK, and on 5672 an amqp_check that logs in, with its timing.
            let (connect_port, timing) = match r.checks.first() {
                Some(Checker::Tcp(check)) if port == 15672 => (check.connect_port, check.timing),
                Some(Checker::Amqp(check)) if port == 5672 => {
                    assert_eq!(
                        check.login,
                        Some(AmqpLogin {
                            user: "lb-health".into(),
                            password: AmqpPassword::File(
                                "/etc/lb-xdp/rabbitmq-health.password".into()
                            ),
                            vhost: "/".into(),
                            alarm: false,
                        }),
                        "a login; no alarm check, which would fail every node of a cluster"
                    );
                    (check.connect_port, check.timing)
                }
                other => panic!("{key}: real {} has {other:?}", r.key),
            };
            assert_eq!(connect_port, Some(port));
            assert_eq!(timing.connect_timeout, Duration::from_secs(3));
            assert_eq!(timing.retry, 3);
            assert_eq!(timing.delay_before_retry, Duration::from_secs(3));
        }
    }
}

#[test]
fn rabbitmq_http_get_alternative_is_valid() {
    let text = fs::read_to_string(configs_dir().join("rabbitmq.yaml")).expect("rabbitmq.yaml");
    // The commented alternative runs from its first `#  - vip:` line to the end of the file,
    // and replaces both services.
    let alternative: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("#  - vip:"))
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .collect();
    assert!(!alternative.is_empty(), "no commented alternative found");
    let cut = text.find("virtual_servers:\n").expect("the services") + "virtual_servers:\n".len();
    let variant = format!("{}{}\n", &text[..cut], alternative.join("\n"));
    let config = Config::from_yaml(&variant, Path::new("rabbitmq-http_get.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n--- from:\n{variant}"));
    let password_file = Password::File("/etc/lb-xdp/rabbitmq-check.password".into());
    let local_alarms = UrlCheck {
        path: "/api/health/checks/local-alarms".into(),
        status_code: StatusCodes::any_2xx(),
        digest: None,
        virtualhost: None,
    };
    for (port, urls) in [
        (
            5672,
            vec![
                UrlCheck {
                    path: "/api/health/checks/port-listener/5672".into(),
                    ..local_alarms.clone()
                },
                local_alarms.clone(),
            ],
        ),
        (15672, vec![local_alarms.clone()]),
    ] {
        let key = ServiceKey {
            vip: "192.168.0.10".parse().unwrap(),
            port,
            proto: Protocol::Tcp,
        };
        let vs = config
            .virtual_server(&key)
            .unwrap_or_else(|| panic!("no service {key}"));
        assert_eq!(vs.persistence.map(|p| p.timeout), Some(50));
        assert_eq!(vs.real_servers.len(), 3);
        for r in &vs.real_servers {
            let Some(Checker::Http(check)) = r.checks.first() else {
                panic!("real {} of {key} has no http_get", r.key);
            };
            assert_eq!(check.urls, urls);
            assert_eq!(
                check.auth,
                Some(HttpAuth {
                    user: "lbcheck".into(),
                    password: password_file.clone(),
                })
            );
            // Both ask the management API.
            assert_eq!(check.connect_port, Some(15672));
            assert_eq!(check.timing.retry, 3);
        }
    }
}
