use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixListener,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use super::{fixtures::*, *};

fn roundtrip_request(req: &Request) -> serde_json::Value {
    let text = serde_json::to_string(req).unwrap();
    assert!(!text.contains('\n'));
    let back: Request = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, req);
    serde_json::from_str(&text).unwrap()
}

#[test]
fn requests_on_the_wire() {
    let svc = tcp("10.0.0.100", 5672);
    let real = rk("10.0.0.11", 5672);
    let key = json!({"vip": "10.0.0.100", "port": 5672, "proto": "tcp"});
    let real_json = json!({"addr": "10.0.0.11", "port": 5672});
    let cases = [
        (
            Request::Snapshot { conns: true },
            json!({"op": "snapshot", "conns": true}),
        ),
        (
            Request::Zero { service: None },
            json!({"op": "zero", "service": null}),
        ),
        (
            Request::Zero { service: Some(svc) },
            json!({"op": "zero", "service": key}),
        ),
        (Request::Save, json!({"op": "save"})),
        (
            Request::Which {
                service: svc,
                client: sa("192.168.7.21:51514"),
            },
            json!({"op": "which", "service": key, "client": "192.168.7.21:51514"}),
        ),
        (
            Request::Edit(Edit::AddService {
                key: svc,
                scheduler: Some("wrr".into()),
                persistence: Some(300),
                flags: None,
            }),
            json!({"op": "edit", "edit": "add_service", "key": key, "scheduler": "wrr",
                   "persistence": 300}),
        ),
        (
            Request::Edit(Edit::EditService {
                key: svc,
                scheduler: None,
                persistence: None,
                flags: None,
            }),
            json!({"op": "edit", "edit": "edit_service", "key": key, "scheduler": null}),
        ),
        (
            Request::Edit(Edit::EditService {
                key: svc,
                scheduler: Some("sh".into()),
                persistence: Some(None),
                flags: None,
            }),
            json!({"op": "edit", "edit": "edit_service", "key": key, "scheduler": "sh",
                   "persistence": null}),
        ),
        (
            Request::Edit(Edit::EditService {
                key: svc,
                scheduler: None,
                persistence: Some(Some(60)),
                flags: None,
            }),
            json!({"op": "edit", "edit": "edit_service", "key": key, "scheduler": null,
                   "persistence": 60}),
        ),
        (
            Request::Edit(Edit::DeleteService { key: svc }),
            json!({"op": "edit", "edit": "delete_service", "key": key}),
        ),
        (
            Request::Edit(Edit::AddReal {
                service: svc,
                real,
                weight: Some(0),
                thresholds: None,
            }),
            json!({"op": "edit", "edit": "add_real", "service": key, "real": real_json,
                   "weight": 0}),
        ),
        (
            Request::Edit(Edit::EditReal {
                service: svc,
                real,
                weight: None,
                thresholds: None,
            }),
            json!({"op": "edit", "edit": "edit_real", "service": key, "real": real_json,
                   "weight": null}),
        ),
        (
            Request::Edit(Edit::DeleteReal { service: svc, real }),
            json!({"op": "edit", "edit": "delete_real", "service": key, "real": real_json}),
        ),
    ];
    for (req, wire) in cases {
        assert_eq!(roundtrip_request(&req), wire, "{req:?}");
    }
}

#[test]
fn responses_on_the_wire() {
    let cases = [
        Response::Ok,
        Response::error("Service not defined"),
        Response::Saved {
            yaml: "interface: eth0\n".into(),
        },
        Response::Which(WhichAnswer {
            real: Some(rk("10.0.0.11", 80)),
            source: "lookup table".into(),
            detail: "slot 123 of 65537".into(),
        }),
        Response::Which(WhichAnswer {
            real: None,
            source: "lookup table".into(),
            detail: "no real is up".into(),
        }),
        Response::Snapshot(reference()),
        Response::Snapshot(sample()),
    ];
    for resp in cases {
        let text = serde_json::to_string(&resp).unwrap();
        assert!(!text.contains('\n'));
        let back: Response = serde_json::from_str(&text).unwrap();
        assert_eq!(back, resp);
    }
    let wire: serde_json::Value = serde_json::to_value(Response::error("nope")).unwrap();
    assert_eq!(wire, json!({"result": "error", "message": "nope"}));
    let wire: serde_json::Value = serde_json::to_value(Response::Ok).unwrap();
    assert_eq!(wire, json!({"result": "ok"}));
    let wire = serde_json::to_value(Response::Snapshot(reference())).unwrap();
    assert_eq!(wire["result"], "snapshot");
    assert_eq!(
        wire["timeouts"],
        json!({"tcp": 900, "tcpfin": 120, "udp": 300})
    );
    assert_eq!(wire["services"][1]["persistence"]["timeout"], 300);
}

#[test]
fn counters_tolerate_missing_fields() {
    // An older agent may not know every counter: missing ones read as 0.
    let g: GlobalInfo = serde_json::from_str(r#"{"rx": 5}"#).unwrap();
    assert_eq!(g.dataplane.rx, 5);
    assert_eq!(g.reloads_failed, 0);
}

async fn read_all(input: &[u8]) -> Vec<Result<Option<Request>, String>> {
    let mut r = tokio::io::BufReader::new(input);
    let mut out = Vec::new();
    loop {
        let got = read_request(&mut r).await;
        let more = matches!(got, Ok(Some(_)) | Err(ControlError::BadRequest(_)));
        out.push(got.map_err(|e| e.to_string()));
        if !more {
            return out;
        }
    }
}

#[tokio::test]
async fn read_request_lines() {
    let input = b"{\"op\":\"save\"}\n\n  \r\n{\"op\":\"bogus\"}\nnot json\n{\"op\":\"snapshot\",\"conns\":false}";
    let got = read_all(input).await;
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0], Ok(Some(Request::Save)));
    assert!(
        got[1]
            .as_ref()
            .unwrap_err()
            .starts_with("invalid request: unknown variant `bogus`"),
        "{got:?}"
    );
    assert!(
        got[2]
            .as_ref()
            .unwrap_err()
            .starts_with("invalid request: ")
    );
    // The last line has no newline: still a request.
    assert_eq!(got[3], Ok(Some(Request::Snapshot { conns: false })));
    assert_eq!(got[4], Ok(None));
}

#[tokio::test]
async fn read_request_bounds_the_line() {
    let mut input = vec![b' '; MAX_MESSAGE + 1];
    input.push(b'\n');
    let mut r = tokio::io::BufReader::new(&input[..]);
    let err = read_request(&mut r).await.unwrap_err();
    assert!(
        matches!(err, ControlError::TooLarge { limit: MAX_MESSAGE }),
        "{err}"
    );

    // Exactly MAX_MESSAGE bytes before the newline is fine.
    let body = br#"{"op":"save"}"#;
    let mut input = body.to_vec();
    input.resize(MAX_MESSAGE, b' ');
    input.push(b'\n');
    let mut r = tokio::io::BufReader::new(&input[..]);
    assert_eq!(read_request(&mut r).await.unwrap(), Some(Request::Save));
}

#[tokio::test]
async fn write_response_is_one_line() {
    let mut out = Vec::new();
    write_response(&mut out, &Response::Snapshot(sample()))
        .await
        .unwrap();
    write_response(&mut out, &Response::Ok).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        serde_json::from_str::<Response>(lines[0]).unwrap(),
        Response::Snapshot(sample())
    );
    assert_eq!(lines[1], r#"{"result":"ok"}"#);
}

/// A fresh socket path in the temporary directory.
fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "lbadm-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// Serves one connection on a thread with `answer(request line)`.
fn one_shot_server(answer: impl FnOnce(String) -> Option<String> + Send + 'static) -> PathBuf {
    let path = socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(reply) = answer(line) {
            (&stream).write_all(reply.as_bytes()).unwrap();
        }
    });
    path
}

#[test]
fn client_sends_one_line_and_reads_one() {
    let path = one_shot_server(|line| {
        assert_eq!(line, "{\"op\":\"snapshot\",\"conns\":true}\n");
        Some("{\"result\":\"saved\",\"yaml\":\"a: 1\\n\"}\n".into())
    });
    let resp = request(&path, &Request::Snapshot { conns: true }).unwrap();
    assert_eq!(
        resp,
        Response::Saved {
            yaml: "a: 1\n".into()
        }
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn client_errors_are_clear() {
    let missing = socket_path();
    let err = request(&missing, &Request::Save).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to {}: is lb-agent running? (No such file or directory)",
            missing.display()
        )
    );

    let path = one_shot_server(|_| None);
    let err = request(&path, &Request::Save).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "lb-agent on {} closed the connection without answering",
            path.display()
        )
    );
    let _ = std::fs::remove_file(path);

    let path = one_shot_server(|_| Some("{\"result\":\"maybe\"}\n".into()));
    let err = request(&path, &Request::Save).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid answer from lb-agent: unknown variant `maybe`"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);
}

/// The client against a tokio server built from the framing helpers, as the agent does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_helpers_agree() {
    let path = socket_path();
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut read = tokio::io::BufReader::new(read);
            loop {
                let resp = match read_request(&mut read).await {
                    Ok(None) => break,
                    Ok(Some(Request::Snapshot { .. })) => Response::Snapshot(sample()),
                    Ok(Some(_)) => Response::error("Service not defined"),
                    Err(e) => Response::error(e.to_string()),
                };
                write_response(&mut write, &resp).await.unwrap();
            }
            write.shutdown().await.unwrap();
        }
    });
    let p = path.clone();
    let answers = tokio::task::spawn_blocking(move || {
        (
            request(&p, &Request::Snapshot { conns: true }).unwrap(),
            request(&p, &Request::Save).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(answers.0, Response::Snapshot(sample()));
    assert_eq!(answers.1, Response::error("Service not defined"));
    server.await.unwrap();
    let _ = std::fs::remove_file(path);
}

#[test]
fn os_reason_drops_the_code() {
    let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
    assert_eq!(os_reason(&e), "Connection refused");
    let e = io::Error::other("plain");
    assert_eq!(os_reason(&e), "plain");
}
