//! Traffic for system tests: long-lived connections that keep exchanging lines with the reals'
//! echo servers (so a broken or moved connection is noticed), and a steady stream of new short
//! connections. Both run in background threads inside the client's namespace.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::netns::{Netns, TcpLineClient, tcp_request};

/// The tag an echo server prefixes its replies with: which real answered.
fn tag_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What happened to one long-lived connection.
#[derive(Clone, Debug, Default)]
pub struct ConnReport {
    /// The real it was established on.
    pub real: String,
    /// Exchanges that succeeded.
    pub exchanges: u64,
    /// Why it broke, if it did (an error, or a reply from another real).
    pub broken: Option<String>,
}

/// Long-lived connections exchanging a line every `period` until stopped.
pub struct LongLived {
    stop: Arc<AtomicBool>,
    reports: Arc<Mutex<Vec<ConnReport>>>,
    thread: Option<JoinHandle<()>>,
}

impl LongLived {
    /// Opens `n` connections from `ns` to `to` and starts exchanging.
    pub fn start(ns: &Netns, to: SocketAddr, n: usize, period: Duration) -> Result<Self> {
        let mut conns = Vec::with_capacity(n);
        let mut reports = Vec::with_capacity(n);
        for i in 0..n {
            let mut c = TcpLineClient::connect(ns, to, Duration::from_secs(3))?;
            let reply = c.request(&format!("hello {i}"))?;
            reports.push(ConnReport {
                real: tag_of(&reply),
                exchanges: 1,
                broken: None,
            });
            conns.push(Some(c));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reports = Arc::new(Mutex::new(reports));
        let (flag, shared) = (stop.clone(), reports.clone());
        let thread = thread::spawn(move || {
            let mut round = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                for (i, slot) in conns.iter_mut().enumerate() {
                    let Some(conn) = slot else { continue };
                    let result = conn.request(&format!("ping {i} {round}"));
                    let mut reports = shared.lock().expect("reports");
                    let report = &mut reports[i];
                    match result {
                        Ok(reply) if tag_of(&reply) == report.real => report.exchanges += 1,
                        Ok(reply) => {
                            report.broken = Some(format!("moved to another real: {reply}"));
                            *slot = None;
                        }
                        Err(e) => {
                            report.broken = Some(format!("{e:#}"));
                            *slot = None;
                        }
                    }
                }
                round += 1;
                thread::sleep(period.saturating_sub(started.elapsed()));
            }
        });
        Ok(Self {
            stop,
            reports,
            thread: Some(thread),
        })
    }

    /// Stops exchanging and returns every connection's report.
    pub fn finish(mut self) -> Vec<ConnReport> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("long-lived connections thread");
        }
        self.reports.lock().expect("reports").clone()
    }

    /// A snapshot of the reports so far.
    pub fn reports(&self) -> Vec<ConnReport> {
        self.reports.lock().expect("reports").clone()
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the stream of new connections saw.
#[derive(Clone, Debug, Default)]
pub struct NewConnReport {
    /// Completed request/reply exchanges per real.
    pub per_real: BTreeMap<String, u64>,
    /// Failures, with the time since the start and the error.
    pub failures: Vec<(Duration, String)>,
}

impl NewConnReport {
    /// Completed connections.
    pub fn ok(&self) -> u64 {
        self.per_real.values().sum()
    }
}

/// New connections opened back to back (each: connect, one request, close) until stopped.
pub struct NewConns {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<NewConnReport>>,
    thread: Option<JoinHandle<()>>,
}

impl NewConns {
    /// Starts opening connections from `ns` to `to`, one every `period` at most, each given
    /// 3 seconds.
    pub fn start(ns: &Netns, to: SocketAddr, period: Duration) -> Result<Self> {
        Self::start_with_timeout(ns, to, period, Duration::from_secs(3))
    }

    /// [`NewConns::start`] with `timeout` for each connection (connect and exchange): long
    /// enough, a connection whose SYN is lost retransmits it until a takeover completes.
    pub fn start_with_timeout(
        ns: &Netns,
        to: SocketAddr,
        period: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(NewConnReport::default()));
        let (flag, shared) = (stop.clone(), report.clone());
        let ns = ns.clone_handle()?;
        let thread = thread::spawn(move || {
            let start = Instant::now();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let result = tcp_request(&ns, to, &format!("new {n}"), timeout);
                let mut r = shared.lock().expect("report");
                match result {
                    Ok(reply) => *r.per_real.entry(tag_of(&reply)).or_default() += 1,
                    Err(e) => r.failures.push((start.elapsed(), format!("{e:#}"))),
                }
                drop(r);
                n += 1;
                thread::sleep(period.saturating_sub(t.elapsed()));
            }
        });
        Ok(Self {
            stop,
            report,
            thread: Some(thread),
        })
    }

    /// A snapshot of the report so far.
    pub fn report(&self) -> NewConnReport {
        self.report.lock().expect("report").clone()
    }

    /// Stops and returns the report.
    pub fn finish(mut self) -> NewConnReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("new connections thread");
        }
        self.report()
    }
}

impl Drop for NewConns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
