//! The data plane as the control plane drives it: loads the embedded XDP object, sizes its maps
//! from [`Limits`], maps its tables into memory, executes planned updates
//! ([`Op`](crate::reconcile::plan::Op)), reads counters and tables back, and attaches the
//! program to an interface.
//!
//! Loading, adopting and attaching live here; `pins` holds the pin directory and its `LAYOUT`
//! record, `mmap` the memory-mapped arrays, `write` the executor of planned updates and the
//! other writers, `read` the readers, `sync` the director-sync ring and the store of peers'
//! flows.

pub mod instance_lock;
mod mmap;
mod pins;
mod read;
mod sync;
mod write;

use std::{fs, io, path::PathBuf, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
    programs::{
        TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
    util::nr_cpus,
};
use lb_common::{
    Candidates, ConnSet4, ConnSet6, GlobalStats, LAYOUT_VERSION, LOOKUP_ROW, LookupRow,
    PersistSet4, PersistSet6, Real, RealLoad, SYNC_SLOTS, Service, Settings, SyncSlot,
    TrafficStats, VipBucket4, VipBucket6, map_names as names,
};
use thiserror::Error;
use tracing::warn;

pub use self::pins::{Attached, Origin, PIN_ROOT, PINNED_MAPS, PinDir};
pub use self::sync::{PeerStore, SyncDrain};
use self::{mmap::Mmap, pins::Layout};
use crate::model::{AttachMode, Limits};

/// The XDP object, built by `cargo xtask build-ebpf` and embedded so that one binary deploys.
#[cfg(not(lb_no_ebpf_object))]
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("LB_EBPF_OBJECT"));
/// Empty: this build was made without the XDP object (see `build.rs`); loading fails.
#[cfg(lb_no_ebpf_object)]
pub static EBPF_OBJECT: &[u8] = &[];

/// Errors from the data plane.
#[derive(Debug, Error)]
pub enum DataplaneError {
    /// Loading the object or creating its maps failed.
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    /// The kernel rejected the program (the verifier log is included).
    #[error("loading the XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// Cause.
        source: aya::maps::MapError,
    },
    /// The library was built without the XDP object.
    #[error(
        "this build has no XDP object: run `cargo xtask build-ebpf`, then build lb-agent again"
    )]
    NoObject,
    /// A map or program is missing from the object, or has another type.
    #[error("{0} is missing from the XDP object or has an unexpected type")]
    Missing(&'static str),
    /// `mmap` of an array failed.
    #[error("mmap of {map}: {source}")]
    Mmap {
        /// Map name.
        map: &'static str,
        /// Cause.
        source: io::Error,
    },
    /// An index outside a map.
    #[error("{map}: index {index} is out of range")]
    OutOfRange {
        /// Map name.
        map: &'static str,
        /// Index.
        index: u32,
    },
    /// The program's log buffer cannot be read.
    #[error("reading the program's log: {0}")]
    EbpfLog(#[from] aya_log::Error),
    /// The pin directory holds something this version cannot adopt, or a pin operation failed.
    #[error("{path}: {reason}")]
    Pin {
        /// File or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Attaching failed in every allowed mode.
    #[error("attaching to {iface}: {source}")]
    Attach {
        /// Interface.
        iface: String,
        /// Cause.
        source: aya::programs::ProgramError,
    },
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// Options for loading the program.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Map capacities.
    pub limits: Limits,
    /// aya-log level inside the program (0 = off, the default: the verifier then removes the
    /// log calls from the packet path).
    pub ebpf_log_level: u8,
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// XDP action returned by the program (`XDP_PASS` = 2, `XDP_TX` = 3, `XDP_DROP` = 1).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Average run time per repetition, as measured by the kernel.
    pub duration_ns: u64,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    limits: Limits,
    settings: Mmap<Settings>,
    vips4: Mmap<VipBucket4>,
    vips6: Mmap<VipBucket6>,
    services: Mmap<Service>,
    lookup: Mmap<LookupRow>,
    reals: Mmap<Real>,
    conns4: Mmap<ConnSet4>,
    persist4: Mmap<PersistSet4>,
    conns6: Mmap<ConnSet6>,
    persist6: Mmap<PersistSet6>,
    real_load: Mmap<RealLoad>,
    candidates: Mmap<Candidates>,
    global_stats: PerCpuArray<MapData, GlobalStats>,
    service_stats: PerCpuArray<MapData, TrafficStats>,
    real_stats: PerCpuArray<MapData, TrafficStats>,
    sync_ring: Mmap<SyncSlot>,
    sync_head: PerCpuArray<MapData, u64>,
    /// Per CPU, the number of the next announcement to read from its ring.
    sync_next: Vec<u64>,
    link: Option<XdpLinkId>,
}

impl Dataplane {
    /// Loads the embedded object with maps sized from `opts.limits` and the program verified,
    /// not yet attached. Settings start with a zero MAC, IPVS's default timeouts and the clock
    /// at the current `CLOCK_MONOTONIC` second.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let mut dp = Self::load_with(opts.limits, opts.ebpf_log_level, None)?;
        dp.initialize()?;
        Ok(dp)
    }

    /// Loads the program with its maps pinned under `pin`: maps pinned by an earlier agent of
    /// this instance are adopted as they are (connections, tables and counters survive), new
    /// ones are created and pinned. The sizes of adopted maps are those they were created with,
    /// as their `LAYOUT` map records; `ifindex` is the interface the instance serves.
    pub fn open_pinned(opts: &LoadOptions, pin: &PinDir, ifindex: u32) -> Result<(Self, Origin)> {
        let recorded = pin.read_layout()?;
        let layout = match recorded {
            Some(l) if l.version == 0 && !pin.link().exists() => {
                // An earlier start stopped between creating the maps and recording them:
                // nothing was attached, so start over.
                warn!(pins = %pin.path().display(), "removing the pins of an interrupted start");
                Self::remove_pins(pin)?;
                None
            }
            Some(l) if l.version != LAYOUT_VERSION => {
                return Err(pin.error(format!(
                    "maps were created with layout version {} but this agent uses {}; \
                     stop the old instance cleanly (SIGTERM) before upgrading across versions",
                    l.version, LAYOUT_VERSION
                )));
            }
            Some(l) if l.ifindex != ifindex => {
                return Err(pin.error(format!(
                    "this instance is attached to interface index {}, not {ifindex}; \
                     stop it cleanly (SIGTERM) first",
                    l.ifindex
                )));
            }
            other => other,
        };
        let origin = match &layout {
            Some(l) => Origin::Adopted {
                limits_differ: l.limits != opts.limits,
            },
            None => Origin::Created,
        };
        let limits = layout.map(|l| l.limits).unwrap_or(opts.limits);
        fs::create_dir_all(pin.path()).map_err(|e| pin.error(format!("creating: {e}")))?;
        let mut dp = Self::load_with(limits, opts.ebpf_log_level, Some(pin))?;
        if origin == Origin::Created {
            dp.initialize()?;
            pin.write_layout(&Layout {
                version: LAYOUT_VERSION,
                ifindex,
                limits,
            })?;
        }
        Ok((dp, origin))
    }

    /// Attaches to `iface` through the link pinned under `pin`, atomically replacing the
    /// program of an adopted link (no packet misses a program), or attaching afresh and pinning
    /// the new link.
    pub fn attach_pinned(
        &mut self,
        iface: &str,
        mode: AttachMode,
        pin: &PinDir,
    ) -> Result<Attached> {
        let link_path = pin.link();
        if link_path.exists() {
            let pinned = PinnedLink::from_pin(&link_path)
                .map_err(|e| pin.error(format!("opening the pinned link: {e}")))?;
            let link = XdpLink::try_from(FdLink::from(pinned))
                .map_err(|e| pin.error(format!("the pinned link is not an XDP link: {e}")))?;
            self.program_mut().attach_to_link(link)?;
            return Ok(Attached::Adopted);
        }
        let used = self.attach(iface, mode)?;
        let id = self.link.take().expect("attach recorded the link");
        let link = self.program_mut().take_link(id)?;
        let fd_link = FdLink::try_from(link)
            .map_err(|e| pin.error(format!("the kernel gave no pinnable XDP link: {e}")))?;
        fd_link
            .pin(&link_path)
            .map_err(|e| pin.error(format!("pinning the link: {e}")))?;
        Ok(Attached::New(used))
    }

    /// Removes an instance's pins: the link (which detaches the program), the maps and the
    /// directory. What a clean stop does.
    pub fn remove_pins(pin: &PinDir) -> Result<()> {
        let link_path = pin.link();
        if link_path.exists() {
            let pinned = PinnedLink::from_pin(&link_path)
                .map_err(|e| pin.error(format!("opening the pinned link: {e}")))?;
            // Unpinning and dropping the last reference destroys the link: the program detaches.
            drop(
                pinned
                    .unpin()
                    .map_err(|e| pin.error(format!("unpinning the link: {e}")))?,
            );
        }
        for name in PINNED_MAPS {
            let p = pin.map(name);
            if p.exists() {
                fs::remove_file(&p)
                    .map_err(|e| pin.error(format!("removing {}: {e}", p.display())))?;
            }
        }
        if pin.path().exists() {
            fs::remove_dir(pin.path())
                .map_err(|e| pin.error(format!("removing the directory: {e}")))?;
        }
        Ok(())
    }

    /// First-time contents of freshly created maps.
    fn initialize(&mut self) -> Result<()> {
        let l = self.limits;
        let settings = Settings {
            vip_mask: l.vip_buckets() - 1,
            conn_mask: l.conn_sets() - 1,
            persist_mask: l.persist_sets() - 1,
            conn6_mask: l.conn6_sets() - 1,
            persist6_mask: l.persist6_sets() - 1,
            clock: monotonic_seconds(),
            ..Settings::new([0; 6])
        };
        self.settings.write(0, &settings)?;
        for index in 0..l.max_reals {
            self.reals.write(index, &Real::EMPTY)?;
        }
        Ok(())
    }

    fn load_with(limits: Limits, ebpf_log_level: u8, pin: Option<&PinDir>) -> Result<Self> {
        let l = &limits;
        let mut loader = EbpfLoader::new();
        if let Some(pin) = pin {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pin.map(name));
            }
        }
        let cpus = sync_cpus();
        loader
            .map_max_entries(names::SYNC_RING, cpus * SYNC_SLOTS)
            .map_max_entries(names::VIPS4, 2 * l.vip_buckets())
            .map_max_entries(names::VIPS6, 2 * l.vip_buckets())
            .map_max_entries(names::SERVICES, l.max_services)
            .map_max_entries(names::LOOKUP, l.lookup_slots() / LOOKUP_ROW)
            .map_max_entries(names::REALS, l.max_reals)
            .map_max_entries(names::CONNS4, l.conn_sets())
            .map_max_entries(names::PERSIST4, l.persist_sets())
            .map_max_entries(names::CONNS6, l.conn6_sets())
            .map_max_entries(names::PERSIST6, l.persist6_sets())
            .map_max_entries(names::REAL_LOAD, l.max_reals)
            .map_max_entries(names::LC_CANDIDATES, l.max_services)
            .map_max_entries(names::SERVICE_STATS, l.max_services)
            .map_max_entries(names::REAL_STATS, l.max_reals)
            .override_global("AYA_LOG_LEVEL", &ebpf_log_level, false);
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        let program: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .ok_or(DataplaneError::Missing(names::PROGRAM))?
            .try_into()?;
        program.load()?;

        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::Missing(name));
        let mut dp = Self {
            settings: Mmap::new(take(names::SETTINGS)?, names::SETTINGS, 1)?,
            vips4: Mmap::new(take(names::VIPS4)?, names::VIPS4, 2 * l.vip_buckets())?,
            vips6: Mmap::new(take(names::VIPS6)?, names::VIPS6, 2 * l.vip_buckets())?,
            services: Mmap::new(take(names::SERVICES)?, names::SERVICES, l.max_services)?,
            lookup: Mmap::new(
                take(names::LOOKUP)?,
                names::LOOKUP,
                l.lookup_slots() / LOOKUP_ROW,
            )?,
            reals: Mmap::new(take(names::REALS)?, names::REALS, l.max_reals)?,
            conns4: Mmap::new(take(names::CONNS4)?, names::CONNS4, l.conn_sets())?,
            persist4: Mmap::new(take(names::PERSIST4)?, names::PERSIST4, l.persist_sets())?,
            conns6: Mmap::new(take(names::CONNS6)?, names::CONNS6, l.conn6_sets())?,
            persist6: Mmap::new(take(names::PERSIST6)?, names::PERSIST6, l.persist6_sets())?,
            real_load: Mmap::new(take(names::REAL_LOAD)?, names::REAL_LOAD, l.max_reals)?,
            candidates: Mmap::new(
                take(names::LC_CANDIDATES)?,
                names::LC_CANDIDATES,
                l.max_services,
            )?,
            global_stats: per_cpu(take(names::GLOBAL_STATS)?, names::GLOBAL_STATS)?,
            service_stats: per_cpu(take(names::SERVICE_STATS)?, names::SERVICE_STATS)?,
            real_stats: per_cpu(take(names::REAL_STATS)?, names::REAL_STATS)?,
            sync_ring: Mmap::new(take(names::SYNC_RING)?, names::SYNC_RING, cpus * SYNC_SLOTS)?,
            sync_head: per_cpu(take(names::SYNC_HEAD)?, names::SYNC_HEAD)?,
            sync_next: Vec::new(),
            ebpf,
            limits: *l,
            link: None,
        };
        dp.start_sync_reader()?;
        Ok(dp)
    }

    /// Forwards the program's aya-log records to this process's logger (`tracing`, through
    /// the `log` bridge) from a task on the current tokio runtime. Only useful when the program
    /// was loaded with a log level above off.
    pub fn spawn_ebpf_logger(&mut self) -> Result<()> {
        let logger = aya_log::EbpfLogger::init(&mut self.ebpf)?;
        // SAFETY: the logger owns the ring buffer's fd for its whole life and always reports
        // the same one.
        let mut fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        }
        .map_err(|e| DataplaneError::Mmap {
            map: "AYA_LOGS",
            source: e.into(),
        })?;
        tokio::spawn(async move {
            loop {
                let Ok(mut guard) = fd.readable_mut().await else {
                    return;
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
        Ok(())
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(names::PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("the program was loaded as XDP")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(names::PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("the program was loaded as XDP")
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutcome> {
        self.test_run_repeat(frame, 1)
    }

    /// Runs the program `repeat` times on `frame`; `duration_ns` is the kernel's average.
    pub fn test_run_repeat(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome> {
        test_run(self.program(), frame, repeat)
    }

    /// Attaches to `iface` and returns the mode used.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<AttachMode> {
        let try_mode = |dp: &mut Self, m: XdpMode| dp.program_mut().attach(iface, m);
        let attach_err = |source| DataplaneError::Attach {
            iface: iface.to_owned(),
            source,
        };
        let (id, used) = match mode {
            AttachMode::Driver => (
                try_mode(self, XdpMode::Driver).map_err(attach_err)?,
                AttachMode::Driver,
            ),
            AttachMode::Skb => (
                try_mode(self, XdpMode::Skb).map_err(attach_err)?,
                AttachMode::Skb,
            ),
            AttachMode::Auto => match try_mode(self, XdpMode::Driver) {
                Ok(id) => (id, AttachMode::Driver),
                Err(e) => {
                    warn!(%iface, error = %e, "native XDP unavailable, falling back to skb mode");
                    (
                        try_mode(self, XdpMode::Skb).map_err(attach_err)?,
                        AttachMode::Skb,
                    )
                }
            },
        };
        self.link = Some(id);
        Ok(used)
    }

    /// Detaches from the interface (dropping the `Dataplane` detaches too).
    pub fn detach(&mut self) -> Result<()> {
        if let Some(id) = self.link.take() {
            self.program_mut().detach(id)?;
        }
        Ok(())
    }
}

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there; returns whether it mounted.
pub fn ensure_bpffs() -> io::Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, target, fstype) = (f.next(), f.next(), f.next());
        target == Some("/sys/fs/bpf") && fstype == Some("bpf")
    });
    if mounted {
        return Ok(false);
    }
    fs::create_dir_all("/sys/fs/bpf")?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, target, fstype) = (c("bpf"), c("/sys/fs/bpf"), c("bpf"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Runs an XDP program on `frame` `repeat` times (BPF_PROG_TEST_RUN).
pub fn test_run(program: &Xdp, frame: &[u8], repeat: u32) -> Result<TestRunOutcome> {
    let mut out = vec![0u8; frame.len() + 256];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..TestRunOptions::new()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutcome {
        action: result.return_value,
        frame: out,
        duration_ns: result.duration.as_nanos() as u64,
    })
}

/// Whole seconds of `CLOCK_MONOTONIC` (the data plane's time base).
pub fn monotonic_seconds() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, 0).as_secs() as u32
}

/// The CPUs the program may run on (the kernel's possible CPUs): one sync ring each.
fn sync_cpus() -> u32 {
    nr_cpus().map_or(1, |n| n.max(1) as u32)
}

fn per_cpu<T: aya::Pod>(map: Map, name: &'static str) -> Result<PerCpuArray<MapData, T>> {
    PerCpuArray::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
}

#[cfg(all(test, lb_no_ebpf_object))]
mod tests {
    use super::*;

    /// Built without the object (`LB_EBPF_OBJECT` pointing nowhere, as the test command does
    /// once), loading stops before any system call with an error that says what to do.
    #[test]
    fn without_the_object_loading_says_how_to_build_it() {
        let err = Dataplane::load_with(Limits::default(), 0, None)
            .err()
            .unwrap();
        assert!(matches!(err, DataplaneError::NoObject), "{err}");
        assert!(err.to_string().contains("cargo xtask build-ebpf"));
    }
}
