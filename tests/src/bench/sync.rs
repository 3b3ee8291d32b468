//! Director sync: what it costs the data plane's new flows ([`dataplane::sync_cost`]), and the
//! rate at which one agent's confirmed flows reach a peer's table.
//!
//! The rate is measured with the pieces the agent strings together
//! (`lb_userspace::agent::director_sync`), between two labs with the same services in one
//! process: the sender's program confirms a chunk of flows (SYN, then ACK, untimed), then
//! the clock runs while the sender drains its ring, translates the announcements
//! ([`outgoing`]), encodes and sends them over loopback UDP, and the receiver, on its own
//! thread, receives and checks each datagram, translates its records ([`incoming`]) and stores
//! them ([`Dataplane::store_peer_conn4`](lb_userspace::dataplane::Dataplane::store_peer_conn4)),
//! until the chunk's last flow is stored. The receiver's services were installed after
//! another one was removed, so its real indices differ from the sender's and only the
//! translation by address puts a flow on the same real. Afterwards every flow must be in the
//! receiver's table on the real it has on the sender.
//!
//! Sent as fast as the sender can, a burst can overflow the receiver's socket buffer (the
//! kernel drops the datagram). Then the attempt is repeated with fresh labs and the sender
//! paced: at most a window of datagrams sent but not yet stored, small enough for the buffer;
//! the kept figure is the first attempt that lost nothing.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_common::{ConnState, Flow4Key, proto};
use lb_tests::{
    lab::{Lab, XDP_TX, desired, spec, tcp},
    packet::{Frame, flags},
};
use lb_userspace::{
    model::RealKey,
    sync::{
        channel::{Channel, Endpoint, Inbound, key_of_secret},
        translate::{Directory, incoming, outgoing},
        wire::{Key, Kind, Record},
    },
};
use tokio::sync::watch;

use super::{
    OthersWatch, Params,
    dataplane::{self, VIP, basic_state, fitting_flows, flow, lab},
    progress,
    report::{SyncRate, SyncReport},
    thread_cpu,
};

/// The director group of both ends.
const INSTANCE: u64 = 7;
/// IPv4 and UDP headers: what a datagram adds on the wire besides its payload.
const IP_UDP_HEADERS: u64 = 28;
/// No datagram stored for this long: the rest of what was sent is lost.
const STALL: Duration = Duration::from_secs(1);
/// Paced attempts after a lossy one (each halves the window).
const PACED_ATTEMPTS: usize = 3;

/// Director sync's cost on new flows, then its rate.
pub fn run(params: &Params, bench_ref: &Path) -> Result<SyncReport> {
    progress("  new flows with sync off and on");
    let (syn, confirm) = dataplane::sync_cost(params, bench_ref)?;
    progress(&format!(
        "  sync rate: {} flows from one lab to another over loopback UDP",
        params.sync_rate_flows
    ));
    let mut rate = vec![transfer(params, None)?];
    let mut window = default_window();
    while rate.last().is_some_and(|r| r.lost > 0) {
        if rate.len() > PACED_ATTEMPTS {
            bail!(
                "sync rate: flows lost even with at most {} datagrams on the way",
                window * 2
            );
        }
        progress(&format!(
            "  sync rate: {} flows lost ({} datagrams dropped); again, with at most {window} \
             datagrams on the way",
            rate.last().map_or(0, |r| r.lost),
            rate.last().map_or(0, |r| r.dropped_datagrams)
        ));
        rate.push(transfer(params, Some(window))?);
        window = (window / 2).max(1);
    }
    Ok(SyncReport { syn, confirm, rate })
}

/// The receive buffer of a socket that sets none (`net.core.rmem_default`), bytes.
fn rcvbuf() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992)
}

/// Datagrams on the way the receiver's socket buffer surely holds: its size over 4 KiB, the
/// most a full datagram takes in it (payload, buffer overhead, rounding), so about half of
/// what it could hold.
fn default_window() -> usize {
    (rcvbuf() / 4096).max(4)
}

/// A UDP port free on this machine now (the kernel's choice), for a channel to bind.
fn free_port() -> Result<u16> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    Ok(socket.local_addr()?.port())
}

/// A channel's endpoint on loopback (its peers are given to each send).
fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        port,
        group: None,
        ifindex: 1,
        peers: vec![Ipv4Addr::LOCALHOST.into()],
        ttl: 1,
    }
}

/// The real each real index of `lab` stands for.
fn reals_of(lab: &Lab) -> HashMap<u32, RealKey> {
    lab.installed
        .services
        .values()
        .flat_map(|svc| svc.reals.iter().chain(&svc.retiring))
        .map(|(rkey, real)| (real.index, *rkey))
        .collect()
}

/// What the sender did.
struct Sent {
    datagrams: u64,
    bytes: u64,
    dropped: u64,
    timed: Duration,
    cpu: Duration,
}

/// What the receiver did.
struct Received {
    records: u64,
    stored: u64,
    cpu: Duration,
}

/// One attempt: fresh labs, `params.sync_rate_flows` flows, the sender paced to `window`
/// datagrams on the way (or not at all).
fn transfer(params: &Params, window: Option<usize>) -> Result<SyncRate> {
    let state = basic_state();
    let mut sender = lab(params.limits, &state);
    sender.dp.set_sync(true)?;
    // The receiver had another service first: its reals' indices differ from the sender's.
    let mut receiver = Lab::with_limits(params.limits);
    let before: Vec<(Ipv4Addr, u32)> = (1..=7).map(|i| (Ipv4Addr::new(10, 9, 0, i), 1)).collect();
    receiver.apply(&desired(vec![(
        tcp(Ipv4Addr::new(10, 9, 9, 9), 80),
        spec(80, 251, &before),
    )]));
    receiver.apply(&state);
    let (sent_reals, stored_reals) = (reals_of(&sender), reals_of(&receiver));
    ensure!(
        sent_reals
            .iter()
            .any(|(index, rkey)| stored_reals.get(index) != Some(rkey)),
        "sync rate: the receiver's real indices are the sender's"
    );
    let flows = fitting_flows(&sender, params.sync_rate_flows)?;
    // A chunk is confirmed on one CPU between two reads: at most one ring's worth.
    let chunk = params
        .sync_rate_chunk
        .clamp(1, lb_common::SYNC_SLOTS as usize);
    let secret = key_of_secret(b"the benchmark's shared sync secret")?;
    let (from, to) = (free_port()?, free_port()?);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (stored_tx, stored_rx) = watch::channel(0u64);
    let (done_tx, done_rx) = watch::channel(false);
    let watch = OthersWatch::start(&[]);
    let (sent, received) = std::thread::scope(|s| -> Result<(Sent, Received)> {
        let receiving = s.spawn(|| {
            receive(
                &mut receiver,
                to,
                secret.clone(),
                ready_tx,
                stored_tx,
                done_rx,
            )
        });
        let sent = match ready_rx.recv() {
            Ok(()) => send(
                &mut sender,
                &flows,
                chunk,
                window,
                (from, (Ipv4Addr::LOCALHOST, to).into()),
                secret.clone(),
                stored_rx,
            ),
            Err(_) => Err(anyhow::anyhow!("the receiver did not start")),
        };
        let _ = done_tx.send(true);
        let received = receiving
            .join()
            .map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
        Ok((sent?, received))
    })?;
    let others = watch.pct();
    let established = ConnState::Established as u8;
    let lost = flows
        .iter()
        .filter(|&&(src, sport)| {
            let key: Flow4Key = flow(src, sport, VIP, 80, proto::TCP);
            let real = |lab: &Lab, reals: &HashMap<u32, RealKey>| {
                lab.dp
                    .conn4(&key)
                    .filter(|e| e.conn.state == established)
                    .and_then(|e| reals.get(&e.conn.real).copied())
            };
            let here = real(&sender, &sent_reals);
            here.is_none() || real(&receiver, &stored_reals) != here
        })
        .count() as u64;
    let n = flows.len() as f64;
    let secs = sent.timed.as_secs_f64();
    if lost == 0 {
        ensure!(
            received.stored == flows.len() as u64,
            "sync rate: {} flows stored for {} sent",
            received.stored,
            flows.len()
        );
    }
    Ok(SyncRate {
        flows: flows.len(),
        chunk,
        window,
        datagrams: sent.datagrams,
        bytes: sent.bytes,
        bytes_per_flow: sent.bytes as f64 / n,
        wire_bytes_per_flow: (sent.bytes + IP_UDP_HEADERS * sent.datagrams) as f64 / n,
        secs,
        flows_per_s: (n - lost as f64) / secs,
        sender_us_per_flow: sent.cpu.as_secs_f64() * 1e6 / n,
        receiver_us_per_flow: received.cpu.as_secs_f64() * 1e6 / received.records.max(1) as f64,
        rcvbuf_bytes: rcvbuf(),
        dropped_datagrams: sent.dropped,
        lost,
        others_pct: others,
    })
}

/// Waits until `ok` holds for the count of stored datagrams; `false` if none was stored for
/// [`STALL`].
async fn stored_until(stored: &mut watch::Receiver<u64>, ok: impl FnMut(&u64) -> bool) -> bool {
    match tokio::time::timeout(STALL, stored.wait_for(ok)).await {
        Ok(Ok(_)) => true,
        // The receiver ended: nothing more will be stored.
        Ok(Err(_)) | Err(_) => false,
    }
}

/// The sender, on this thread: chunk by chunk, the program confirms the flows (untimed), then
/// the ring is drained, translated, encoded and sent, timed until the receiver has stored the
/// chunk's last datagram.
fn send(
    lab: &mut Lab,
    flows: &[(Ipv4Addr, u16)],
    chunk: usize,
    window: Option<usize>,
    (port, to): (u16, SocketAddr),
    key: Key,
    mut stored: watch::Receiver<u64>,
) -> Result<Sent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut channel = Channel::open(&endpoint(port), key, INSTANCE, 1)
            .with_context(|| format!("opening the sending channel on port {port}"))?;
        let directory = Directory::of(&lab.installed);
        let mut out = Sent {
            datagrams: 0,
            bytes: 0,
            dropped: 0,
            timed: Duration::ZERO,
            cpu: Duration::ZERO,
        };
        for part in flows.chunks(chunk) {
            for tcp_flags in [flags::SYN, flags::ACK] {
                for &(src, sport) in part {
                    let frame = Frame::tcp(src, sport, VIP, 80, tcp_flags).build();
                    ensure!(
                        lab.dp.test_run(&frame)?.action == XDP_TX,
                        "sync rate: a flow was not forwarded"
                    );
                }
            }
            let (started, cpu) = (Instant::now(), thread_cpu());
            let mut stalled = Duration::ZERO;
            let drain = lab.dp.drain_sync_ring(usize::MAX)?;
            ensure!(
                drain.lost == 0,
                "sync rate: {} announcements overwritten before they were read",
                drain.lost
            );
            let events = drain.events;
            ensure!(
                events.len() == part.len(),
                "sync rate: {} announcements for {} confirmed flows",
                events.len(),
                part.len()
            );
            let records: Vec<Record> = events
                .iter()
                .filter_map(|e| outgoing(e, 0, &directory))
                .collect();
            ensure!(
                records.len() == part.len(),
                "sync rate: an announced flow has no record"
            );
            for datagram in channel.encode(Kind::Records, &records) {
                if let Some(w) = window {
                    let (sent, dropped) = (out.datagrams, out.dropped);
                    let waited = Instant::now();
                    if !stored_until(&mut stored, |&n| sent < n + dropped + w as u64).await {
                        stalled += waited.elapsed();
                        out.dropped = out.datagrams - (*stored.borrow()).min(out.datagrams);
                    }
                }
                channel
                    .send_to(&datagram, to)
                    .await
                    .context("sending a sync datagram")?;
                out.datagrams += 1;
                out.bytes += datagram.len() as u64;
            }
            let (sent, dropped) = (out.datagrams, out.dropped);
            let waited = Instant::now();
            if !stored_until(&mut stored, |&n| n + dropped >= sent).await {
                stalled += waited.elapsed();
                out.dropped = out.datagrams - (*stored.borrow()).min(out.datagrams);
            }
            out.timed += started.elapsed().saturating_sub(stalled);
            out.cpu += thread_cpu() - cpu;
        }
        Ok(out)
    })
}

/// The receiver, on its own thread: every datagram is received, checked, translated and its
/// flows stored; the count of stored datagrams goes to the sender after each. Ends when
/// `done` changes.
fn receive(
    lab: &mut Lab,
    port: u16,
    key: Key,
    ready: mpsc::Sender<()>,
    stored: watch::Sender<u64>,
    mut done: watch::Receiver<bool>,
) -> Result<Received> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut channel = Channel::open(&endpoint(port), key, INSTANCE, 2)
            .with_context(|| format!("opening the receiving channel on port {port}"))?;
        let _ = ready.send(());
        let directory = Directory::of(&lab.installed);
        let cpu = thread_cpu();
        let (mut datagrams, mut records, mut flows) = (0u64, 0u64, 0u64);
        loop {
            let inbound = tokio::select! {
                inbound = channel.recv() => inbound.context("receiving a sync datagram")?,
                _ = done.changed() => break,
            };
            let Inbound::Accepted(_, d) = inbound else {
                bail!("sync rate: a datagram was not accepted: {inbound:?}");
            };
            let now = lab.dp.clock();
            for record in &d.records {
                let Record::Conn(conn) = record else {
                    bail!("sync rate: a template record");
                };
                let placed = incoming(conn, &directory)?;
                let stamp = now.saturating_sub(u32::from(conn.idle));
                if lab
                    .dp
                    .store_peer_conn(&placed.flow, &placed.conn, stamp, placed.service_id)?
                    == lb_userspace::dataplane::PeerStore::Stored
                {
                    flows += 1;
                }
            }
            datagrams += 1;
            records += d.records.len() as u64;
            stored.send_replace(datagrams);
        }
        Ok(Received {
            records,
            stored: flows,
            cpu: thread_cpu() - cpu,
        })
    })
}
