//! `amqp_check`: whether a node serves AMQP 0-9-1, from the protocol header to, with `login`,
//! a logged-in connection that opens its vhost and, with `alarm`, publishes.
//!
//! # The exchange
//!
//! Without `login` the check sends the protocol header `AMQP 0 0 9 1` and waits for the
//! server's connection.start: a node that serves speaks first. A protocol header back (the
//! server speaks another version: "server speaks AMQP 1.0.0"), bytes that are not an AMQP
//! method frame, a closed connection: down, with what was seen. AMQP has no goodbye before a
//! login, so RabbitMQ logs each such check as a warning ("client unexpectedly closed TCP
//! connection"); with `login` the check ends the connection as a client should.
//!
//! With `login` it goes on as a client: connection.start-ok (mechanism PLAIN, locale en_US, the
//! client properties `product`, `version` and the capabilities `authentication_failure_close`
//! and `connection.blocked`), connection.tune-ok (the server's channel_max and frame_max, no
//! heartbeat but with `alarm`), connection.open of `vhost`, then connection.close (200 "health
//! check") and close-ok. A login the server refuses (403 ACCESS_REFUSED: RabbitMQ says so
//! instead of just closing because the check announces `authentication_failure_close`), a vhost
//! it refuses (530 NOT_ALLOWED) or any other connection.close of the server is down with its
//! code and text.
//!
//! # Resource alarms (`alarm`)
//!
//! A RabbitMQ node over its memory high watermark (or under its disk free limit) still accepts
//! connections, logins and vhosts, and answers every synchronous method (a passive declare
//! too): what it does is stop reading from a connection once that connection publishes
//! (`rabbit_reader`: the connection goes from `blocking` to `blocked` when a message arrives
//! while an alarm is in effect) and, to a client that announced the `connection.blocked`
//! capability, send connection.blocked with the reason. Nothing short of a publish shows the
//! alarm. So with `alarm` the check, once the vhost is open, opens channel 1 and publishes one
//! empty message to the default exchange with the routing key [`ROUTING_KEY`] and mandatory
//! false, followed by connection.close. No queue can have that name (queue names beginning with
//! `amq.` are reserved to the server), so the message is dropped unrouted (RabbitMQ's metrics
//! count it among the unroutable messages) and nothing else changes. Then:
//! - close-ok: the publish went through: up ("no alarm");
//! - connection.blocked: down, with RabbitMQ's reason ("blocked: low on memory").
//!
//! The user needs write permission on the default exchange, `amq.default`
//! (`rabbitmqctl set_permissions -p / <user> '^$' '^amq\.default$' '^$'`); that lets it publish
//! into any queue of the vhost by name, so keep its password as well as the applications'.
//!
//! A node does not read a blocked connection, so it sees neither the check's connection.close
//! nor its FIN until the alarm clears: each check would leave a connection (and its Erlang
//! processes) on a node that is short of memory, one more per check for as long as the alarm
//! lasts. RabbitMQ still sends heartbeats on a blocked connection and drops it when a send
//! fails, so in alarm mode the check asks for a heartbeat of `connect_timeout` rounded up to a
//! second: about one and a half heartbeats after the check closed its side, the node drops the
//! connection (RabbitMQ 3.10 logs a warning, "client unexpectedly closed TCP connection"; one
//! still blocked when the alarm clears ends with an error line, `{inet_error,closed}`).
//! `tests/tests/rabbitmq_system.rs` measures it: one check a second leaves one connection on the
//! node at a time, against seven after seven seconds without the heartbeat. Without `alarm`
//! the check never publishes, nothing blocks, and it asks for no heartbeat.
//!
//! In a RabbitMQ cluster an alarm is cluster-wide: one node over its watermark blocks publishers
//! on every node. With `alarm` every node of a cluster then fails at once and the service has no
//! real left, not even for the consumers that would work the alarm off. `alarm` is for nodes
//! that are not clustered with each other; for a cluster, `login` without `alarm`.
//!
//! # Bounds
//!
//! The whole exchange, connect included, is bounded by `connect_timeout`; a timeout names what
//! the check was waiting for. Every frame's size is checked before its payload is read: at most
//! 128 KiB ([`FRAME_MAX`]) until connection.tune, then the tuned frame_max if that is smaller;
//! a frame must end with AMQP's end octet. Whatever the outcome, the connection is then closed
//! as the other probes close theirs: FIN, then reading until the server closes (a short grace).

use std::{
    collections::BTreeMap,
    fmt,
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    time::{Instant, timeout_at},
};

use super::{
    CheckSpec, Probe,
    machine::Outcome,
    probe::{close_politely, failed, io_reason},
    stream::{self, Route, Stream},
};
use crate::config::{AmqpLogin, AmqpPassword};

/// The protocol header of AMQP 0-9-1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The routing key of the alarm check's message. Queue names beginning with `amq.` are reserved
/// to the server, so no queue can be bound to it on the default exchange: the message is always
/// dropped unrouted.
pub const ROUTING_KEY: &str = "amq.lb-agent.health-check";
/// The largest frame the check reads (RabbitMQ's default frame_max): before connection.tune,
/// and after it when the server's frame_max is larger or unlimited.
pub const FRAME_MAX: u32 = 131_072;
/// AMQP's frame-min-size: no peer may tune frame_max below it.
const FRAME_MIN_SIZE: u32 = 4096;
/// A frame's bytes besides its payload: type, channel, size, end octet.
const FRAME_OVERHEAD: u32 = 8;
/// Frame types.
const METHOD: u8 = 1;
const CONTENT_HEADER: u8 = 2;
const HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
const FRAME_END: u8 = 0xce;
/// The channel the alarm check publishes on.
const CHANNEL: u16 = 1;
/// The basic class, of basic.publish and its content header.
const BASIC: u16 = 60;
/// The reply code and text of the check's connection.close.
const CLOSE_CODE: u16 = 200;
const CLOSE_TEXT: &str = "health check";
/// Longest `password_file`: the longest password and a CR LF.
const MAX_PASSWORD_FILE: usize = AmqpLogin::MAX_PASSWORD + 2;

/// A method: (class id, method id).
type MethodId = (u16, u16);

const START: MethodId = (10, 10);
const START_OK: MethodId = (10, 11);
const SECURE: MethodId = (10, 20);
const TUNE: MethodId = (10, 30);
const TUNE_OK: MethodId = (10, 31);
const OPEN: MethodId = (10, 40);
const OPEN_OK: MethodId = (10, 41);
const CLOSE: MethodId = (10, 50);
const CLOSE_OK: MethodId = (10, 51);
const BLOCKED: MethodId = (10, 60);
const UNBLOCKED: MethodId = (10, 61);
const CHANNEL_OPEN: MethodId = (20, 10);
const CHANNEL_OPEN_OK: MethodId = (20, 11);
const CHANNEL_CLOSE: MethodId = (20, 40);
const CHANNEL_CLOSE_OK: MethodId = (20, 41);
const PUBLISH: MethodId = (BASIC, 40);

/// The spec's name of a method.
fn method_name(id: MethodId) -> String {
    let known = match id {
        START => "connection.start",
        START_OK => "connection.start-ok",
        SECURE => "connection.secure",
        (10, 21) => "connection.secure-ok",
        TUNE => "connection.tune",
        TUNE_OK => "connection.tune-ok",
        OPEN => "connection.open",
        OPEN_OK => "connection.open-ok",
        CLOSE => "connection.close",
        CLOSE_OK => "connection.close-ok",
        BLOCKED => "connection.blocked",
        UNBLOCKED => "connection.unblocked",
        CHANNEL_OPEN => "channel.open",
        CHANNEL_OPEN_OK => "channel.open-ok",
        (20, 20) => "channel.flow",
        CHANNEL_CLOSE => "channel.close",
        CHANNEL_CLOSE_OK => "channel.close-ok",
        PUBLISH => "basic.publish",
        (BASIC, 50) => "basic.return",
        (BASIC, 60) => "basic.deliver",
        _ => return format!("method {}.{}", id.0, id.1),
    };
    known.to_owned()
}

/// What an `amqp_check` logs in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: Password,
    /// The vhost opened after the login.
    pub vhost: String,
    /// Also publish, to see a resource alarm.
    pub alarm: bool,
}

impl From<&AmqpLogin> for Login {
    /// The configuration's login; a `password_file` is still to be read
    /// ([`read_password_files`]).
    fn from(c: &AmqpLogin) -> Self {
        Self {
            user: c.user.clone(),
            password: match &c.password {
                AmqpPassword::Text(p) => Password::Given(p.clone()),
                AmqpPassword::File(path) => Password::File(path.clone(), None),
            },
            vhost: c.vhost.clone(),
            alarm: c.alarm,
        }
    }
}

/// The password of a login.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// `password`, from the configuration.
    Given(String),
    /// `password_file`, and what it held when [`read_password_files`] read it.
    File(PathBuf, Option<String>),
}

impl Password {
    /// The password; an unread file is an error (the agent reads them before it checks).
    fn value(&self) -> Result<&str, String> {
        match self {
            Password::Given(p) | Password::File(_, Some(p)) => Ok(p),
            Password::File(path, None) => {
                Err(format!("password_file {} was not read", path.display()))
            }
        }
    }
}

impl fmt::Debug for Password {
    /// The file's path, never a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Given(_) => f.write_str("Given(<hidden>)"),
            Password::File(path, read) => {
                let state = if read.is_some() { "read" } else { "not read" };
                write!(f, "File({}, {state})", path.display())
            }
        }
    }
}

/// Reads the `password_file` of every `amqp_check` in `specs`, each file once. The agent calls
/// it when it starts and at each reload, before anything changes: a file that cannot be read,
/// is empty or too long refuses the configuration. The password is the file's text without
/// its final line break.
pub fn read_password_files(specs: &mut [CheckSpec]) -> anyhow::Result<()> {
    let mut read: BTreeMap<PathBuf, String> = BTreeMap::new();
    for spec in specs {
        let (service, real, _) = spec.key;
        let Probe::Amqp {
            login: Some(login), ..
        } = &mut spec.probe
        else {
            continue;
        };
        let Password::File(path, value) = &mut login.password else {
            continue;
        };
        let password = match read.get(path) {
            Some(p) => p.clone(),
            None => {
                let p = read_password(path).with_context(|| {
                    format!(
                        "amqp_check of real {real} of {service}: password_file {}",
                        path.display()
                    )
                })?;
                read.insert(path.clone(), p.clone());
                p
            }
        };
        *value = Some(password);
    }
    Ok(())
}

/// One password file: a regular file of UTF-8 text, without NUL, at most
/// [`AmqpLogin::MAX_PASSWORD`] bytes once its final line break is removed.
fn read_password(path: &Path) -> anyhow::Result<String> {
    ensure!(std::fs::metadata(path)?.is_file(), "not a regular file");
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PASSWORD_FILE as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_PASSWORD_FILE {
        bail!(
            "longer than {} bytes, the longest password",
            AmqpLogin::MAX_PASSWORD
        );
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("not UTF-8 text"))?;
    let password = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    ensure!(!password.is_empty(), "empty");
    ensure!(
        !password.contains('\0'),
        "holds a NUL character, which a PLAIN login cannot carry"
    );
    ensure!(
        password.len() <= AmqpLogin::MAX_PASSWORD,
        "longer than {} bytes",
        AmqpLogin::MAX_PASSWORD
    );
    Ok(password.to_owned())
}

/// The heartbeat the alarm check asks for: `limit` rounded up to a second (see the module
/// docs: it lets the node drop a blocked check's connection).
fn alarm_heartbeat(limit: Duration) -> u16 {
    let secs = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
    secs.clamp(1, u64::from(u16::MAX)) as u16
}

/// `amqp_check`: up if the server answers the protocol header with connection.start and, with
/// `login`, if the check logs in, opens the vhost (publishes, with `alarm`) and closes. The
/// whole exchange, connect included, is bounded by `limit`; then the connection is closed with
/// FIN.
pub async fn check(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    login: Option<&Login>,
    limit: Duration,
) -> Outcome {
    check_on(&Route::Connect { target, bind }, login, limit).await
}

/// [`check`] along `route`: a kernel connection, or the agent's own through the VIP.
pub async fn check_on(route: &Route, login: Option<&Login>, limit: Duration) -> Outcome {
    let deadline = Instant::now() + limit;
    let mut stream = match timeout_at(deadline, stream::open(route, limit)).await {
        Ok(Ok((s, _))) => s,
        Ok(Err(reason)) => return failed(reason),
        Err(_) => return failed("timeout"),
    };
    let mut progress = Progress {
        waiting: method_name(START),
        failure: None,
    };
    let heartbeat = login
        .filter(|l| l.alarm)
        .map_or(0, |_| alarm_heartbeat(limit));
    let session = Session {
        stream: &mut stream,
        progress: &mut progress,
        frame_max: FRAME_MAX,
    };
    let verdict = timeout_at(deadline, session.run(login, heartbeat)).await;
    close_politely(stream).await;
    match verdict {
        Ok(Ok(detail)) => Outcome { ok: true, detail },
        Ok(Err(reason)) => failed(reason),
        Err(_) => failed(
            progress
                .failure
                .unwrap_or_else(|| format!("timeout waiting for {}", progress.waiting)),
        ),
    }
}

/// How far the exchange got: read after a timeout.
struct Progress {
    /// What the check waits for.
    waiting: String,
    /// A failure already seen while the check waits for the end of the exchange.
    failure: Option<String>,
}

/// One check's connection.
struct Session<'a> {
    stream: &'a mut Stream,
    progress: &'a mut Progress,
    /// The largest frame accepted.
    frame_max: u32,
}

impl Session<'_> {
    /// The whole exchange: `Ok` with what an up check shows, `Err` with why it is down.
    async fn run(mut self, login: Option<&Login>, heartbeat: u16) -> Result<String, String> {
        self.send(PROTOCOL_HEADER).await?;
        let first = self.first_frame().await?;
        let args = self.expected(first, START, 0).await?;
        let start = Start::decode(&args).map_err(|e| malformed(START, &e))?;
        let Some(login) = login else {
            return Ok(format!("AMQP {}-{}", start.major, start.minor));
        };
        if !start.mechanisms.split(' ').any(|m| m == "PLAIN") {
            return Err(format!(
                "the server offers no PLAIN login (mechanisms: {})",
                start.mechanisms
            ));
        }
        let password = login.password.value()?;
        self.send(&start_ok(&login.user, password)).await?;
        let args = self.expect(TUNE, 0).await?;
        let tune = Tune::decode(&args).map_err(|e| malformed(TUNE, &e))?;
        let frame_max = match tune.frame_max {
            0 => FRAME_MAX,
            n if n < FRAME_MIN_SIZE => {
                return Err(format!(
                    "the server tunes frame_max to {n}, below AMQP's minimum of {FRAME_MIN_SIZE}"
                ));
            }
            n => n.min(FRAME_MAX),
        };
        self.frame_max = frame_max;
        let mut out = tune_ok(tune.channel_max, frame_max, heartbeat);
        out.extend(open(&login.vhost));
        self.send(&out).await?;
        self.expect(OPEN_OK, 0).await?;
        if !login.alarm {
            self.send(&close()).await?;
            self.closing().await?;
            return Ok("logged in".into());
        }
        self.send(&channel_open(CHANNEL)).await?;
        self.expect(CHANNEL_OPEN_OK, CHANNEL).await?;
        let mut out = publish(CHANNEL);
        out.extend(close());
        self.send(&out).await?;
        self.closing().await?;
        Ok("no alarm".into())
    }

    /// After the check's connection.close: waits for close-ok. On the way, connection.blocked
    /// ends the wait (the node no longer reads this connection) and a channel.close is
    /// remembered: either is the check's failure.
    async fn closing(&mut self) -> Result<(), String> {
        self.progress.waiting = method_name(CLOSE_OK);
        loop {
            let (id, channel, args) = self.method().await?;
            match id {
                CLOSE_OK if channel == 0 => break,
                BLOCKED if channel == 0 => {
                    let reason = Fields::new(&args)
                        .shortstr()
                        .map_err(|e| malformed(BLOCKED, &e))?;
                    return Err(format!("blocked: {}", shown(reason)));
                }
                CLOSE if channel == 0 => return Err(self.closed_by_server(&args).await),
                CHANNEL_CLOSE => {
                    let why = closed_reason(CHANNEL_CLOSE, &args);
                    self.progress.failure.get_or_insert(why);
                }
                // After connection.close everything else is discarded (AMQP 0-9-1, 2.2.4).
                _ => {}
            }
        }
        match self.progress.failure.take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).await.map_err(|e| {
            format!(
                "{} while sending (waiting for {})",
                io_reason(&e),
                self.progress.waiting
            )
        })
    }

    /// Why reading stopped short: the server closed, or the socket failed.
    fn cut(&self, e: &std::io::Error) -> String {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!(
                "the server closed the connection before {}",
                self.progress.waiting
            )
        } else {
            format!("{} waiting for {}", io_reason(e), self.progress.waiting)
        }
    }

    /// The server's first frame. A protocol header instead means the server speaks another
    /// version; anything that does not start a method frame on channel 0 is not AMQP 0-9-1.
    async fn first_frame(&mut self) -> Result<Frame, String> {
        let mut head = [0u8; 7];
        let n = read_up_to(self.stream, &mut head)
            .await
            .map_err(|e| self.cut(&e))?;
        if n == 0 {
            return Err(self.cut(&std::io::ErrorKind::UnexpectedEof.into()));
        }
        if n == head.len() && head.starts_with(b"AMQP") {
            let mut last = [0u8; 1];
            let got = read_up_to(self.stream, &mut last)
                .await
                .map_err(|e| self.cut(&e))?;
            let revision = if got == 1 {
                last[0].to_string()
            } else {
                "?".into()
            };
            return Err(format!(
                "server speaks AMQP {}.{}.{}",
                head[5], head[6], revision
            ));
        }
        if n < head.len() || head[0] != METHOD || head[1..3] != [0, 0] {
            let end = if n < head.len() {
                " and closed the connection"
            } else {
                ""
            };
            return Err(format!(
                "not AMQP 0-9-1: the server sent {}{end}",
                shown_bytes(&head[..n])
            ));
        }
        self.rest_of_frame(head).await
    }

    /// The frame whose 7 header bytes are `head`: its size checked, then its payload and end
    /// octet read.
    async fn rest_of_frame(&mut self, head: [u8; 7]) -> Result<Frame, String> {
        let (kind, channel, size) = frame_header(head, self.frame_max)?;
        let mut payload = vec![0u8; size as usize + 1];
        self.stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| self.cut(&e))?;
        let end = payload.pop();
        if end != Some(FRAME_END) {
            return Err(format!(
                "a frame ends with {:#04x}, not AMQP's frame end 0xce",
                end.unwrap_or_default()
            ));
        }
        Ok(Frame {
            kind,
            channel,
            payload,
        })
    }

    /// The next method frame; heartbeats are skipped, other frames are an error.
    async fn method(&mut self) -> Result<(MethodId, u16, Vec<u8>), String> {
        loop {
            let mut head = [0u8; 7];
            self.stream
                .read_exact(&mut head)
                .await
                .map_err(|e| self.cut(&e))?;
            let frame = self.rest_of_frame(head).await?;
            if frame.kind == HEARTBEAT {
                continue;
            }
            return split_method(frame);
        }
    }

    /// The arguments of method `want` on `channel`, the next method to come.
    async fn expect(&mut self, want: MethodId, channel: u16) -> Result<Vec<u8>, String> {
        self.progress.waiting = method_name(want);
        let (id, on, args) = self.method().await?;
        self.judge(id, on, args, want, channel).await
    }

    /// `first` as method `want` on `channel`.
    async fn expected(
        &mut self,
        first: Frame,
        want: MethodId,
        channel: u16,
    ) -> Result<Vec<u8>, String> {
        let (id, on, args) = split_method(first)?;
        self.judge(id, on, args, want, channel).await
    }

    /// The arguments if the method is `want` on `channel`; the server's close or anything else
    /// is why the check fails.
    async fn judge(
        &mut self,
        id: MethodId,
        on: u16,
        args: Vec<u8>,
        want: MethodId,
        channel: u16,
    ) -> Result<Vec<u8>, String> {
        match id {
            _ if id == want && on == channel => Ok(args),
            CLOSE if on == 0 => Err(self.closed_by_server(&args).await),
            CHANNEL_CLOSE => Err(closed_reason(CHANNEL_CLOSE, &args)),
            SECURE => {
                Err("the server asks for a SASL challenge (connection.secure) after PLAIN".into())
            }
            _ => Err(format!(
                "expected {} on channel {channel}, got {} on channel {on}",
                method_name(want),
                method_name(id)
            )),
        }
    }

    /// The reason of the server's connection.close, after answering it with close-ok (best
    /// effort: the server closes the socket next).
    async fn closed_by_server(&mut self, args: &[u8]) -> String {
        let _ = self.stream.write_all(&close_ok()).await;
        closed_reason(CLOSE, args)
    }
}

/// Reads into `buf` until it is full or the peer closes; how many bytes came.
async fn read_up_to(stream: &mut Stream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// A frame as read.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    kind: u8,
    channel: u16,
    payload: Vec<u8>,
}

/// A frame's type, channel and payload size, from its 7 header bytes; a frame larger than
/// `frame_max` is an error.
fn frame_header(head: [u8; 7], frame_max: u32) -> Result<(u8, u16, u32), String> {
    let kind = head[0];
    let channel = u16::from_be_bytes([head[1], head[2]]);
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
    if size > frame_max - FRAME_OVERHEAD {
        return Err(format!(
            "the server sent a frame of {} bytes; frame_max is {frame_max}",
            u64::from(size) + u64::from(FRAME_OVERHEAD)
        ));
    }
    Ok((kind, channel, size))
}

/// A method frame's id, channel and arguments.
fn split_method(frame: Frame) -> Result<(MethodId, u16, Vec<u8>), String> {
    if frame.kind != METHOD {
        return Err(format!(
            "expected a method frame, got a frame of type {} on channel {}",
            frame.kind, frame.channel
        ));
    }
    let mut f = Fields::new(&frame.payload);
    let class = f
        .u16()
        .map_err(|e| format!("malformed method frame: {e}"))?;
    let method = f
        .u16()
        .map_err(|e| format!("malformed method frame: {e}"))?;
    Ok(((class, method), frame.channel, f.rest.to_vec()))
}

fn malformed(id: MethodId, e: &str) -> String {
    format!("malformed {}: {e}", method_name(id))
}

/// The reason of a connection.close or channel.close: `connection.close: 403 ACCESS_REFUSED
/// - Login was refused ...`.
fn closed_reason(id: MethodId, args: &[u8]) -> String {
    match Close::decode(args) {
        Ok(c) => format!("{}: {} {}", method_name(id), c.code, c.text),
        Err(e) => malformed(id, &e),
    }
}

/// Server text for a log line or a listing: control characters replaced.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Bytes as hex, and as text where printable: `48 54 54 50 ("HTTP")`.
fn shown_bytes(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{} (\"{text}\")", hex.join(" "))
}

/// Reading a payload field by field; running past its end is an error.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "a field of {n} bytes runs past the end (only {} left)",
                self.rest.len()
            ));
        }
        let (field, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(field)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn shortstr(&mut self) -> Result<&'a [u8], String> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    fn longstr(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    /// A field table, skipped whole (the check reads none of its fields).
    fn table(&mut self) -> Result<(), String> {
        self.longstr().map(drop)
    }
}

/// connection.start.
#[derive(Debug, PartialEq, Eq)]
struct Start {
    major: u8,
    minor: u8,
    /// The SASL mechanisms, space-separated.
    mechanisms: String,
}

impl Start {
    fn decode(args: &[u8]) -> Result<Self, String> {
        let mut f = Fields::new(args);
        let major = f.u8()?;
        let minor = f.u8()?;
        f.table()?;
        let mechanisms = shown(f.longstr()?);
        f.longstr()?;
        Ok(Self {
            major,
            minor,
            mechanisms,
        })
    }
}

/// connection.tune (its heartbeat is read and not used: the check chooses its own).
#[derive(Debug, PartialEq, Eq)]
struct Tune {
    channel_max: u16,
    frame_max: u32,
}

impl Tune {
    fn decode(args: &[u8]) -> Result<Self, String> {
        let mut f = Fields::new(args);
        let tune = Self {
            channel_max: f.u16()?,
            frame_max: f.u32()?,
        };
        f.u16()?;
        Ok(tune)
    }
}

/// connection.close and channel.close.
#[derive(Debug, PartialEq, Eq)]
struct Close {
    code: u16,
    text: String,
}

impl Close {
    fn decode(args: &[u8]) -> Result<Self, String> {
        let mut f = Fields::new(args);
        let code = f.u16()?;
        let text = shown(f.shortstr()?);
        Ok(Self { code, text })
    }
}

/// A method's arguments under construction.
struct Args(Vec<u8>);

impl Args {
    fn new(id: MethodId) -> Self {
        let mut a = Args(Vec::new());
        a.u16(id.0).u16(id.1);
        a
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A short string; validation keeps every one the check sends within 255 bytes.
    fn shortstr(&mut self, s: &str) -> &mut Self {
        let len = s.len().min(255);
        self.0.push(len as u8);
        self.0.extend_from_slice(&s.as_bytes()[..len]);
        self
    }

    fn longstr(&mut self, s: &[u8]) -> &mut Self {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s);
        self
    }

    /// A field table of booleans, strings and tables.
    fn table(&mut self, fields: &[(&str, Value<'_>)]) -> &mut Self {
        let mut t = Args(Vec::new());
        for (name, value) in fields {
            t.shortstr(name);
            match value {
                Value::Bool(b) => t.u8(b't').u8(u8::from(*b)),
                Value::Str(s) => t.u8(b'S').longstr(s.as_bytes()),
                Value::Table(inner) => t.u8(b'F').table(inner),
            };
        }
        self.longstr(&t.0)
    }

    /// The method as a frame on `channel`.
    fn frame(&self, channel: u16) -> Vec<u8> {
        frame(METHOD, channel, &self.0)
    }
}

/// A value in a field table.
enum Value<'a> {
    Bool(bool),
    Str(&'a str),
    Table(&'a [(&'a str, Value<'a>)]),
}

/// A frame: type, channel, size, payload, end octet.
fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + FRAME_OVERHEAD as usize);
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

/// connection.start-ok: a PLAIN login with the check's client properties.
fn start_ok(user: &str, password: &str) -> Vec<u8> {
    let capabilities = [
        ("authentication_failure_close", Value::Bool(true)),
        ("connection.blocked", Value::Bool(true)),
    ];
    let properties = [
        ("product", Value::Str("lb-agent amqp_check")),
        ("version", Value::Str(env!("CARGO_PKG_VERSION"))),
        ("capabilities", Value::Table(&capabilities)),
    ];
    let mut response = Vec::with_capacity(user.len() + password.len() + 2);
    response.push(0);
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    Args::new(START_OK)
        .table(&properties)
        .shortstr("PLAIN")
        .longstr(&response)
        .shortstr("en_US")
        .frame(0)
}

/// connection.tune-ok.
fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<u8> {
    Args::new(TUNE_OK)
        .u16(channel_max)
        .u32(frame_max)
        .u16(heartbeat)
        .frame(0)
}

/// connection.open of `vhost`.
fn open(vhost: &str) -> Vec<u8> {
    Args::new(OPEN).shortstr(vhost).shortstr("").u8(0).frame(0)
}

/// The check's connection.close: 200 "health check", not caused by a method.
fn close() -> Vec<u8> {
    Args::new(CLOSE)
        .u16(CLOSE_CODE)
        .shortstr(CLOSE_TEXT)
        .u16(0)
        .u16(0)
        .frame(0)
}

/// connection.close-ok.
fn close_ok() -> Vec<u8> {
    Args::new(CLOSE_OK).frame(0)
}

/// channel.open.
fn channel_open(channel: u16) -> Vec<u8> {
    Args::new(CHANNEL_OPEN).shortstr("").frame(channel)
}

/// basic.publish of one empty message, no properties, to the default exchange with
/// [`ROUTING_KEY`], mandatory and immediate false: the method frame and the content header
/// (a body of 0 bytes has no body frame).
fn publish(channel: u16) -> Vec<u8> {
    let mut out = Args::new(PUBLISH)
        .u16(0)
        .shortstr("")
        .shortstr(ROUTING_KEY)
        .u8(0)
        .frame(channel);
    let mut header = Args(Vec::new());
    header.u16(BASIC).u16(0).u64(0).u16(0);
    out.extend(frame(CONTENT_HEADER, channel, &header.0));
    out
}

#[cfg(test)]
mod tests;
