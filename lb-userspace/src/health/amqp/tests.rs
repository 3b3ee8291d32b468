//! The frames byte for byte, their decoding, and the probe against a fake AMQP server on
//! 127.0.0.1 that plays one scripted exchange.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicU32, Ordering},
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::*;
use crate::{
    config::Config,
    health::{check_specs, probe::failed},
};

const LIMIT: Duration = Duration::from_secs(2);

// --- Frames.

#[test]
fn the_protocol_header_is_amqp_0_9_1() {
    assert_eq!(PROTOCOL_HEADER, &[b'A', b'M', b'Q', b'P', 0, 0, 9, 1]);
}

#[test]
fn close_is_framed_byte_for_byte() {
    let mut want = vec![1, 0, 0];
    let payload_len = 2 + 2 + 2 + 1 + CLOSE_TEXT.len() + 2 + 2;
    want.extend_from_slice(&(payload_len as u32).to_be_bytes());
    want.extend_from_slice(&[0, 10, 0, 50, 0, 200, CLOSE_TEXT.len() as u8]);
    want.extend_from_slice(CLOSE_TEXT.as_bytes());
    want.extend_from_slice(&[0, 0, 0, 0, 0xce]);
    assert_eq!(close(), want);
    assert_eq!(close_ok(), [1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xce]);
}

#[test]
fn start_ok_is_a_plain_login() {
    let bytes = start_ok("monitor", "s3cret");
    let (kind, channel, size) = frame_header(bytes[..7].try_into().unwrap(), FRAME_MAX).unwrap();
    assert_eq!((kind, channel, size as usize), (METHOD, 0, bytes.len() - 8));
    assert_eq!(bytes.last(), Some(&FRAME_END));
    let frame = Frame {
        kind,
        channel,
        payload: bytes[7..bytes.len() - 1].to_vec(),
    };
    let (id, _, args) = split_method(frame).unwrap();
    assert_eq!(id, START_OK);
    let mut f = Fields::new(&args);
    let properties = f.longstr().unwrap();
    for needle in [
        &b"product"[..],
        b"lb-agent amqp_check",
        b"capabilities",
        b"authentication_failure_close",
        b"connection.blocked",
    ] {
        assert!(
            properties.windows(needle.len()).any(|w| w == needle),
            "{:?} lacks {:?}",
            String::from_utf8_lossy(properties),
            String::from_utf8_lossy(needle)
        );
    }
    assert_eq!(f.shortstr().unwrap(), b"PLAIN");
    assert_eq!(f.longstr().unwrap(), b"\0monitor\0s3cret");
    assert_eq!(f.shortstr().unwrap(), b"en_US");
    assert!(f.rest.is_empty());
    // The longest login still fits in AMQP's smallest frame, the limit before connection.tune.
    let longest = start_ok(
        &"u".repeat(AmqpLogin::MAX_USER),
        &"p".repeat(AmqpLogin::MAX_PASSWORD),
    );
    assert!(
        longest.len() <= FRAME_MIN_SIZE as usize,
        "{}",
        longest.len()
    );
}

#[test]
fn tune_ok_open_channel_open_and_publish() {
    assert_eq!(
        tune_ok(2047, 131_072, 0),
        [
            1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 31, 0x07, 0xff, 0, 2, 0, 0, 0, 0, 0xce
        ]
    );
    assert_eq!(
        open("/"),
        [1, 0, 0, 0, 0, 0, 8, 0, 10, 0, 40, 1, b'/', 0, 0, 0xce]
    );
    assert_eq!(
        channel_open(1),
        [1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xce]
    );
    let bytes = publish(1);
    let method_len = 4 + 2 + 1 + 1 + ROUTING_KEY.len() + 1;
    let (method, header) = bytes.split_at(8 + method_len);
    let mut want = vec![1, 0, 1];
    want.extend_from_slice(&(method_len as u32).to_be_bytes());
    want.extend_from_slice(&[0, 60, 0, 40, 0, 0, 0, ROUTING_KEY.len() as u8]);
    want.extend_from_slice(ROUTING_KEY.as_bytes());
    want.extend_from_slice(&[0, 0xce]);
    assert_eq!(method, want, "exchange \"\", mandatory and immediate false");
    assert_eq!(
        header,
        [
            2, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xce
        ],
        "a content header of an empty body without properties"
    );
    assert!(ROUTING_KEY.starts_with("amq."), "a name no queue can have");
}

#[test]
fn frame_sizes_are_checked_before_anything_is_read() {
    let head = |size: u32| {
        let mut h = [METHOD, 0, 0, 0, 0, 0, 0];
        h[3..].copy_from_slice(&size.to_be_bytes());
        h
    };
    assert_eq!(frame_header(head(4088), 4096), Ok((METHOD, 0, 4088)));
    assert_eq!(
        frame_header(head(4089), 4096),
        Err("the server sent a frame of 4097 bytes; frame_max is 4096".into())
    );
    assert!(frame_header(head(u32::MAX), FRAME_MAX).is_err());
}

#[test]
fn methods_decode_and_truncation_is_an_error() {
    let mut start = Args(Vec::new());
    start
        .u8(0)
        .u8(9)
        .table(&[("product", Value::Str("RabbitMQ"))])
        .longstr(b"AMQPLAIN PLAIN")
        .longstr(b"en_US");
    assert_eq!(
        Start::decode(&start.0),
        Ok(Start {
            major: 0,
            minor: 9,
            mechanisms: "AMQPLAIN PLAIN".into()
        })
    );
    for cut in 0..start.0.len() {
        assert!(Start::decode(&start.0[..cut]).is_err(), "cut at {cut}");
    }
    let close = [0x01, 0x93, 3, b'N', b'O', b'\n', 0, 10, 0, 40];
    assert_eq!(
        Close::decode(&close),
        Ok(Close {
            code: 403,
            text: "NO?".into()
        }),
        "control characters of the server's text are replaced"
    );
    assert!(Close::decode(&close[..4]).is_err());
    assert_eq!(
        Tune::decode(&[0, 0, 0, 2, 0, 0, 0, 60]),
        Ok(Tune {
            channel_max: 0,
            frame_max: 131_072
        })
    );
    assert!(Tune::decode(&[0, 0, 0, 2, 0, 0]).is_err());
    assert_eq!(closed_reason(CLOSE, &close), "connection.close: 403 NO?");
    assert!(closed_reason(CHANNEL_CLOSE, &[1]).starts_with("malformed channel.close: "));
}

#[test]
fn random_bytes_never_panic_a_decoder() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = Start::decode(&bytes);
        let _ = Tune::decode(&bytes);
        let _ = Close::decode(&bytes);
        let _ = closed_reason(CLOSE, &bytes);
        let mut head = [0u8; 7];
        for (h, b) in head.iter_mut().zip(bytes.iter()) {
            *h = *b;
        }
        if let Ok((_, _, size)) = frame_header(head, FRAME_MAX) {
            assert!(size <= FRAME_MAX - FRAME_OVERHEAD);
        }
        let _ = split_method(Frame {
            kind: bytes.first().copied().unwrap_or(METHOD),
            channel: 0,
            payload: bytes.clone(),
        });
        let _ = shown_bytes(&bytes);
    }
}

#[test]
fn the_alarm_heartbeat_is_the_timeout_rounded_up() {
    assert_eq!(alarm_heartbeat(Duration::from_millis(1)), 1);
    assert_eq!(alarm_heartbeat(Duration::from_secs(1)), 1);
    assert_eq!(alarm_heartbeat(Duration::from_millis(2500)), 3);
    assert_eq!(alarm_heartbeat(Duration::from_secs(3600)), 3600);
}

#[test]
fn a_password_is_never_shown() {
    let login = Login {
        user: "monitor".into(),
        password: Password::Given("s3cret".into()),
        vhost: "/".into(),
        alarm: false,
    };
    let shown = format!("{login:?}");
    assert!(
        !shown.contains("s3cret") && shown.contains("<hidden>"),
        "{shown}"
    );
    let file = Password::File("/etc/pw".into(), Some("s3cret".into()));
    assert_eq!(format!("{file:?}"), "File(/etc/pw, read)");
}

// --- Password files.

static FILES: AtomicU32 = AtomicU32::new(0);

/// A file under the temporary directory holding `content`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(content: &[u8]) -> Self {
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lb-amqp-pw-{}-{n}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn specs_with_password_file(path: &Path) -> Vec<CheckSpec> {
    let yaml = format!(
        "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 5672\n    \
         lb_kind: dr\n    real_servers:\n      - ip: 192.168.0.2\n        amqp_check: {{ login: \
         true, user: monitor, password_file: {} }}\n      - ip: 192.168.0.3\n        \
         amqp_check: {{ login: true, user: monitor, password_file: {} }}\n      - ip: \
         192.168.0.4\n        amqp_check: {{ login: true, user: other, password: given }}\n",
        path.display(),
        path.display()
    );
    let config = Config::from_yaml(&yaml, Path::new("amqp.yaml")).unwrap();
    check_specs(&config).unwrap()
}

fn passwords(specs: &[CheckSpec]) -> Vec<Password> {
    specs
        .iter()
        .map(|s| match &s.probe {
            Probe::Amqp {
                login: Some(login), ..
            } => login.password.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn password_files_are_read_once_without_their_line_break() {
    let file = TempFile::new(b"s3cret\r\n");
    let mut specs = specs_with_password_file(&file.0);
    let unread = Password::File(file.0.clone(), None);
    assert_eq!(
        passwords(&specs),
        [
            unread.clone(),
            unread.clone(),
            Password::Given("given".into())
        ]
    );
    assert_eq!(
        unread.value(),
        Err(format!("password_file {} was not read", file.0.display()))
    );
    read_password_files(&mut specs).unwrap();
    let read = Password::File(file.0.clone(), Some("s3cret".into()));
    assert_eq!(
        passwords(&specs),
        [read.clone(), read, Password::Given("given".into())]
    );
}

#[test]
fn unusable_password_files_are_refused_with_their_name() {
    let cases: [(&[u8], &str); 5] = [
        (b"\n", "empty"),
        (b"", "empty"),
        (b"a\0b", "NUL"),
        (b"\xff\xfe", "not UTF-8"),
        (
            &[b'x'; AmqpLogin::MAX_PASSWORD + 3],
            "longer than 1024 bytes",
        ),
    ];
    for (content, why) in cases {
        let file = TempFile::new(content);
        let mut specs = specs_with_password_file(&file.0);
        let e = format!("{:#}", read_password_files(&mut specs).unwrap_err());
        assert!(
            e.starts_with(&format!(
                "amqp_check of real 192.168.0.2:5672 of TCP 192.168.0.10:5672: password_file {}: ",
                file.0.display()
            )) && e.contains(why),
            "{e}"
        );
    }
    let missing = std::env::temp_dir().join("lb-amqp-pw-does-not-exist");
    let mut specs = specs_with_password_file(&missing);
    let e = format!("{:#}", read_password_files(&mut specs).unwrap_err());
    assert!(e.contains("No such file"), "{e}");
    let mut specs = specs_with_password_file(&std::env::temp_dir());
    let e = format!("{:#}", read_password_files(&mut specs).unwrap_err());
    assert!(e.ends_with("not a regular file"), "{e}");
}

// --- The probe against a fake server.

/// A fake server's side of one connection.
struct Peer {
    stream: TcpStream,
}

impl Peer {
    /// Reads the client's protocol header.
    async fn header(&mut self) -> [u8; 8] {
        let mut h = [0u8; 8];
        self.stream.read_exact(&mut h).await.unwrap();
        h
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The client's next method: its id, channel and arguments.
    async fn method(&mut self) -> (MethodId, u16, Vec<u8>) {
        let frame = self.frame().await;
        split_method(frame).unwrap()
    }

    async fn frame(&mut self) -> Frame {
        let mut head = [0u8; 7];
        self.stream.read_exact(&mut head).await.unwrap();
        let (kind, channel, size) = frame_header(head, FRAME_MAX).unwrap();
        let mut payload = vec![0u8; size as usize + 1];
        self.stream.read_exact(&mut payload).await.unwrap();
        assert_eq!(payload.pop(), Some(FRAME_END));
        Frame {
            kind,
            channel,
            payload,
        }
    }

    /// Whether the client closes with FIN: EOF, not a reset, within a second.
    async fn sees_fin(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(1), self.stream.read(&mut buf)).await {
                Ok(Ok(0)) => return true,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    async fn start(&mut self) {
        assert_eq!(&self.header().await, PROTOCOL_HEADER);
        let mut args = Args::new(START);
        args.u8(0)
            .u8(9)
            .table(&[
                ("product", Value::Str("FakeMQ")),
                ("cluster_name", Value::Str("fake")),
            ])
            .longstr(b"PLAIN AMQPLAIN")
            .longstr(b"en_US");
        self.send(&args.frame(0)).await;
    }

    /// Start, the client's start-ok (checked), tune, the client's tune-ok and open (checked);
    /// returns the heartbeat the client asked for.
    async fn up_to_open(&mut self, vhost: &str) -> u16 {
        self.start().await;
        let (id, channel, args) = self.method().await;
        assert_eq!((id, channel), (START_OK, 0));
        let mut f = Fields::new(&args);
        f.table().unwrap();
        assert_eq!(f.shortstr().unwrap(), b"PLAIN");
        assert_eq!(f.longstr().unwrap(), b"\0monitor\0s3cret");
        let mut tune = Args::new(TUNE);
        tune.u16(2047).u32(131_072).u16(60);
        self.send(&tune.frame(0)).await;
        let (id, channel, args) = self.method().await;
        assert_eq!((id, channel), (TUNE_OK, 0));
        let mut f = Fields::new(&args);
        assert_eq!(f.u16().unwrap(), 2047, "channel_max echoed");
        assert_eq!(f.u32().unwrap(), 131_072, "frame_max echoed");
        let heartbeat = f.u16().unwrap();
        let (id, channel, args) = self.method().await;
        assert_eq!((id, channel), (OPEN, 0));
        assert_eq!(Fields::new(&args).shortstr().unwrap(), vhost.as_bytes());
        heartbeat
    }

    async fn close_with(&mut self, id: MethodId, channel: u16, code: u16, text: &str) {
        let mut close = Args::new(id);
        close.u16(code).shortstr(text).u16(0).u16(0);
        self.send(&close.frame(channel)).await;
    }
}

/// A fake server on 127.0.0.1 that plays `script` with the first client that connects.
async fn serve<F, T>(script: impl FnOnce(Peer) -> F + Send + 'static) -> (SocketAddr, JoinHandle<T>)
where
    F: Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        script(Peer { stream }).await
    });
    (addr, task)
}

fn login(alarm: bool) -> Login {
    Login {
        user: "monitor".into(),
        password: Password::Given("s3cret".into()),
        vhost: "/".into(),
        alarm,
    }
}

fn up(detail: &str) -> Outcome {
    Outcome {
        ok: true,
        detail: detail.into(),
    }
}

#[tokio::test]
async fn connection_start_is_up() {
    let (addr, server) = serve(|mut p| async move {
        p.start().await;
        p.sees_fin().await
    })
    .await;
    assert_eq!(check(addr, None, None, LIMIT).await, up("AMQP 0-9"));
    assert!(server.await.unwrap(), "closed with FIN");
}

#[tokio::test]
async fn garbage_is_down() {
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        p.send(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    })
    .await;
    assert_eq!(
        check(addr, None, None, LIMIT).await,
        failed("not AMQP 0-9-1: the server sent 48 54 54 50 2f 31 2e (\"HTTP/1.\")")
    );
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        p.send(b"no").await;
    })
    .await;
    assert_eq!(
        check(addr, None, None, LIMIT).await,
        failed("not AMQP 0-9-1: the server sent 6e 6f (\"no\") and closed the connection")
    );
}

#[tokio::test]
async fn a_protocol_header_back_names_the_servers_version() {
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        p.send(b"AMQP\x03\x01\x00\x00").await;
    })
    .await;
    assert_eq!(
        check(addr, None, None, LIMIT).await,
        failed("server speaks AMQP 1.0.0")
    );
}

#[tokio::test]
async fn a_close_before_start_and_bad_frames_are_down() {
    let (addr, _server) = serve(|mut p| async move { p.header().await }).await;
    assert_eq!(
        check(addr, None, None, LIMIT).await,
        failed("the server closed the connection before connection.start")
    );
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        p.send(&[METHOD, 0, 0, 0, 2, 0, 0]).await;
    })
    .await;
    assert_eq!(
        check(addr, None, None, LIMIT).await,
        failed("the server sent a frame of 131080 bytes; frame_max is 131072")
    );
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        let mut start = Args::new(START).frame(0);
        *start.last_mut().unwrap() = 0;
        p.send(&start).await;
    })
    .await;
    assert_eq!(
        check(addr, None, None, LIMIT).await,
        failed("a frame ends with 0x00, not AMQP's frame end 0xce")
    );
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        p.send(&tune_ok(0, 0, 0)).await;
    })
    .await;
    assert_eq!(
        check(addr, None, None, LIMIT).await,
        failed("expected connection.start on channel 0, got connection.tune-ok on channel 0")
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let t = std::time::Instant::now();
    assert_eq!(
        check(addr, None, None, Duration::from_millis(300)).await,
        failed("timeout waiting for connection.start")
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let closed = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        l.local_addr().unwrap()
    };
    assert_eq!(
        check(closed, None, None, LIMIT).await,
        failed("connect refused")
    );
}

#[tokio::test]
async fn a_login_opens_the_vhost_and_closes() {
    let (addr, server) = serve(|mut p| async move {
        let heartbeat = p.up_to_open("/").await;
        p.send(&Args::new(OPEN_OK).shortstr("").frame(0)).await;
        // A heartbeat on the way is skipped.
        p.send(&frame(HEARTBEAT, 0, &[])).await;
        let (id, channel, args) = p.method().await;
        assert_eq!((id, channel), (CLOSE, 0));
        assert_eq!(
            Close::decode(&args).unwrap(),
            Close {
                code: 200,
                text: "health check".into()
            }
        );
        p.send(&close_ok()).await;
        (heartbeat, p.sees_fin().await)
    })
    .await;
    assert_eq!(
        check(addr, None, Some(&login(false)), LIMIT).await,
        up("logged in")
    );
    assert_eq!(server.await.unwrap(), (0, true), "no heartbeat; FIN");
}

#[tokio::test]
async fn a_refused_login_is_down_with_the_servers_reason() {
    let (addr, server) = serve(|mut p| async move {
        p.start().await;
        let (id, _, _) = p.method().await;
        assert_eq!(id, START_OK);
        p.close_with(
            CLOSE,
            0,
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For \
             details see the broker logfile.",
        )
        .await;
        let (id, channel, _) = p.method().await;
        ((id, channel) == (CLOSE_OK, 0), p.sees_fin().await)
    })
    .await;
    assert_eq!(
        check(addr, None, Some(&login(false)), LIMIT).await,
        failed(
            "connection.close: 403 ACCESS_REFUSED - Login was refused using authentication \
             mechanism PLAIN. For details see the broker logfile."
        )
    );
    assert_eq!(server.await.unwrap(), (true, true), "close-ok, then FIN");
}

#[tokio::test]
async fn a_refused_vhost_is_down_with_the_servers_reason() {
    let (addr, _server) = serve(|mut p| async move {
        p.up_to_open("/shop").await;
        p.close_with(
            CLOSE,
            0,
            530,
            "NOT_ALLOWED - access to vhost '/shop' refused for user 'monitor'",
        )
        .await;
        p.sees_fin().await
    })
    .await;
    let mut shop = login(false);
    shop.vhost = "/shop".into();
    assert_eq!(
        check(addr, None, Some(&shop), LIMIT).await,
        failed(
            "connection.close: 530 NOT_ALLOWED - access to vhost '/shop' refused for user \
             'monitor'"
        )
    );
}

#[tokio::test]
async fn a_login_needs_plain() {
    let (addr, _server) = serve(|mut p| async move {
        p.header().await;
        let mut args = Args::new(START);
        args.u8(0)
            .u8(9)
            .table(&[])
            .longstr(b"EXTERNAL")
            .longstr(b"en_US");
        p.send(&args.frame(0)).await;
        p.sees_fin().await
    })
    .await;
    assert_eq!(
        check(addr, None, Some(&login(false)), LIMIT).await,
        failed("the server offers no PLAIN login (mechanisms: EXTERNAL)")
    );
}

/// The alarm check's channel.open and publish, as the fake server sees them.
async fn open_channel_and_take_the_publish(p: &mut Peer) {
    p.send(&Args::new(OPEN_OK).shortstr("").frame(0)).await;
    let (id, channel, _) = p.method().await;
    assert_eq!((id, channel), (CHANNEL_OPEN, CHANNEL));
    p.send(&Args::new(CHANNEL_OPEN_OK).longstr(b"").frame(CHANNEL))
        .await;
    let (id, channel, args) = p.method().await;
    assert_eq!((id, channel), (PUBLISH, CHANNEL));
    let mut f = Fields::new(&args);
    f.u16().unwrap();
    assert_eq!(f.shortstr().unwrap(), b"", "the default exchange");
    assert_eq!(f.shortstr().unwrap(), ROUTING_KEY.as_bytes());
    assert_eq!(f.u8().unwrap(), 0, "neither mandatory nor immediate");
    let header = p.frame().await;
    assert_eq!((header.kind, header.channel), (CONTENT_HEADER, CHANNEL));
    let mut f = Fields::new(&header.payload);
    assert_eq!(f.u16().unwrap(), BASIC);
    f.u16().unwrap();
    assert_eq!(f.take(8).unwrap(), [0; 8], "an empty body");
}

#[tokio::test]
async fn the_alarm_check_publishes_and_passes_without_an_alarm() {
    let (addr, server) = serve(|mut p| async move {
        let heartbeat = p.up_to_open("/").await;
        open_channel_and_take_the_publish(&mut p).await;
        let (id, channel, _) = p.method().await;
        assert_eq!((id, channel), (CLOSE, 0));
        p.send(&close_ok()).await;
        (heartbeat, p.sees_fin().await)
    })
    .await;
    assert_eq!(
        check(addr, None, Some(&login(true)), Duration::from_millis(1500)).await,
        up("no alarm")
    );
    assert_eq!(
        server.await.unwrap(),
        (2, true),
        "a heartbeat of the timeout rounded up, so that a blocked node drops the connection"
    );
}

#[tokio::test]
async fn the_alarm_check_fails_when_the_node_blocks_publishers() {
    let (addr, server) = serve(|mut p| async move {
        p.up_to_open("/").await;
        open_channel_and_take_the_publish(&mut p).await;
        p.send(&Args::new(BLOCKED).shortstr("low on memory").frame(0))
            .await;
        // A blocked node reads nothing more: the close stays unanswered.
        let (id, _, _) = p.method().await;
        assert_eq!(id, CLOSE);
        p.sees_fin().await
    })
    .await;
    let t = std::time::Instant::now();
    assert_eq!(
        check(addr, None, Some(&login(true)), LIMIT).await,
        failed("blocked: low on memory")
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(server.await.unwrap(), "FIN after connection.blocked");
}

#[tokio::test]
async fn the_alarm_check_fails_when_the_publish_is_refused() {
    let (addr, _server) = serve(|mut p| async move {
        p.up_to_open("/").await;
        open_channel_and_take_the_publish(&mut p).await;
        p.close_with(
            CHANNEL_CLOSE,
            CHANNEL,
            403,
            "ACCESS_REFUSED - write access to exchange 'amq.default' in vhost '/' refused \
             for user 'monitor'",
        )
        .await;
        let (id, _, _) = p.method().await;
        assert_eq!(id, CLOSE);
        p.send(&close_ok()).await;
        p.sees_fin().await
    })
    .await;
    assert_eq!(
        check(addr, None, Some(&login(true)), LIMIT).await,
        failed(
            "channel.close: 403 ACCESS_REFUSED - write access to exchange 'amq.default' in \
             vhost '/' refused for user 'monitor'"
        )
    );
}

#[tokio::test]
async fn an_unread_password_file_fails_the_check_without_sending_it() {
    let (addr, _server) = serve(|mut p| async move {
        p.start().await;
        p.sees_fin().await
    })
    .await;
    let mut unread = login(false);
    unread.password = Password::File("/etc/lb-xdp/amqp.password".into(), None);
    assert_eq!(
        check(addr, None, Some(&unread), LIMIT).await,
        failed("password_file /etc/lb-xdp/amqp.password was not read")
    );
}
