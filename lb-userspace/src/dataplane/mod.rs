//! The data plane as the control plane drives it: loads the embedded XDP object, sizes its maps
//! from [`Limits`], maps its tables into memory, executes planned updates ([`Op`]), reads
//! counters and tables back, and attaches the program to an interface.

pub mod instance_lock;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    marker::PhantomData,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering, fence},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
    util::nr_cpus,
};
use lb_common::{
    Candidates, Conn, ConnSet4, ConnSet6, Flow4Key, Flow6Key, GlobalStats, LAYOUT_VERSION,
    LOOKUP_ROW, LookupRow, Persist4Key, Persist6Key, PersistSet4, PersistSet6, REAL_UP, Real,
    RealLoad, Service, Set, Settings, SlotData, Template, TrafficStats, VipBucket4, VipBucket6,
    map_names as names,
    set::{Found, Inserted},
};
use thiserror::Error;
use tracing::warn;

use crate::{
    model::{AttachMode, Conn6Entry, ConnEntry, Limits, Template6Entry, TemplateEntry},
    reconcile::plan::{Installed, Op},
    schedule::load::{self, Counts},
};

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
        loader
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
        Ok(Self {
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
            ebpf,
            limits: *l,
            link: None,
        })
    }

    /// Map capacities.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reads the director settings.
    pub fn settings(&self) -> Settings {
        self.settings.read(0).expect("settings has one element")
    }

    /// Sets the director's MAC (the source MAC of forwarded frames).
    pub fn set_mac(&mut self, mac: [u8; 6]) {
        let mut s = self.settings();
        s.mac = mac;
        // Written once before traffic flows; the clock and table fields are unchanged.
        self.settings
            .write(0, &s)
            .expect("settings has one element");
    }

    /// Sets the idle timeouts in seconds, indexed by connection state.
    pub fn set_timeouts(&mut self, timeouts: [u32; lb_common::ConnState::COUNT]) {
        let base = self.settings.ptr(0).expect("settings has one element");
        for (i, t) in timeouts.iter().enumerate() {
            // SAFETY: `base` points at the mapped settings; each timeout is an aligned u32.
            unsafe { store_u32(&raw mut (*base).timeouts[i], *t) };
        }
    }

    /// Sets the data plane's clock (seconds).
    pub fn set_clock(&mut self, seconds: u32) {
        let base = self.settings.ptr(0).expect("settings has one element");
        // SAFETY: `base` points at the mapped settings; the clock is an aligned u32.
        unsafe { store_u32(&raw mut (*base).clock, seconds) };
    }

    /// Advances the clock to the current `CLOCK_MONOTONIC` second; the agent calls this
    /// several times a second.
    pub fn tick(&mut self) {
        self.set_clock(monotonic_seconds());
    }

    /// The data plane's clock.
    pub fn clock(&self) -> u32 {
        self.settings().clock
    }

    /// Executes planned updates in order.
    pub fn apply(&mut self, ops: &[Op]) -> Result<()> {
        for op in ops {
            self.apply_one(op)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::ResetServiceStats(id) => self
                .service_stats
                .set(*id, zero_traffic_per_cpu(), 0)
                .map_err(|source| DataplaneError::Map {
                    map: names::SERVICE_STATS,
                    source,
                }),
            Op::ResetRealStats(index) => {
                // A new user of the index: the entries an earlier user left in the table stay
                // counted (the counts always match the table) but are stale from now on.
                let load = self.real_load.ptr(*index)?;
                // SAFETY: `load` points at a mapped element; only the control plane writes
                // `up_since`.
                unsafe { store_u32(&raw mut (*load).up_since, self.clock()) };
                self.real_stats
                    .set(*index, zero_traffic_per_cpu(), 0)
                    .map_err(|source| DataplaneError::Map {
                        map: names::REAL_STATS,
                        source,
                    })
            }
            Op::SetReal { index, real } => {
                let p = self.reals.ptr(*index)?;
                // SAFETY: `p` points at a mapped element.
                let was_up = unsafe { std::ptr::read_volatile(&raw const (*p).state) } == REAL_UP;
                if real.state == REAL_UP && !was_up {
                    let load = self.real_load.ptr(*index)?;
                    // SAFETY: `load` points at a mapped element; only the control plane
                    // writes `up_since`.
                    unsafe { store_u32(&raw mut (*load).up_since, self.clock()) };
                }
                // SAFETY: `p` points at a mapped element. Identity fields and weight first,
                // then MAC, state and family together in one 8-byte store.
                unsafe {
                    std::ptr::write_volatile(&raw mut (*p).service_id, real.service_id);
                    std::ptr::write_volatile(&raw mut (*p).weight, real.weight);
                    std::ptr::write_volatile(&raw mut (*p).addr, real.addr);
                    fence(Ordering::SeqCst);
                    store_u64(p.cast::<u64>(), real.head_word());
                }
                Ok(())
            }
            Op::SetServiceParams { id, params } => {
                let p = self.services.ptr(*id)?;
                // SAFETY: `p` points at a mapped element; each field is an aligned u32.
                unsafe {
                    store_u32(&raw mut (*p).flags, params.flags);
                    store_u32(&raw mut (*p).persist_timeout, params.persist_timeout);
                    store_u32(&raw mut (*p).persist_mask4, params.persist_mask4);
                    store_u32(&raw mut (*p).sched, params.sched);
                    // Word by word: a packet racing a change of granularity may mask with a
                    // mix of the old and new prefix, which places at most that packet's new
                    // flow as under a prefix in between.
                    for (i, word) in params.persist_mask6.iter().enumerate() {
                        store_u32(&raw mut (*p).persist_mask6[i], *word);
                    }
                }
                Ok(())
            }
            Op::SetCandidates { id, reals } => self.set_candidates(*id, reals),
            Op::WriteSlots { base, slots } => {
                for &(offset, real) in slots {
                    let p = self.lookup_slot_ptr(base + offset)?;
                    // SAFETY: `p` points at a slot inside a mapped row.
                    unsafe { p.write_volatile(real) };
                }
                Ok(())
            }
            Op::PublishTable { id, base, size } => {
                let p = self.services.ptr(*id)?;
                // The slots are written before the table that points at them is published.
                fence(Ordering::SeqCst);
                // SAFETY: `p` points at a mapped element; `table` is an aligned u64.
                unsafe { store_u64(&raw mut (*p).table, Service::pack_table(*base, *size)) };
                Ok(())
            }
            Op::SetVips { v4, v6 } => {
                let half = self.limits.vip_buckets();
                let active = self.settings().vip_base;
                let inactive = if active == 0 { half } else { 0 };
                // Both inactive halves are written before the one flip that publishes them.
                for (i, b) in v4.iter().enumerate() {
                    self.vips4.write(inactive + i as u32, b)?;
                }
                for (i, b) in v6.iter().enumerate() {
                    self.vips6.write(inactive + i as u32, b)?;
                }
                fence(Ordering::SeqCst);
                let s = self.settings.ptr(0)?;
                // SAFETY: `s` points at the mapped settings; vip_base is an aligned u32.
                unsafe { store_u32(&raw mut (*s).vip_base, inactive) };
                Ok(())
            }
        }
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

    /// The planner's view of what these maps hold (after adopting pinned maps), and the
    /// indices of reals left behind by an interrupted change.
    pub fn installed(&self) -> Result<(Installed, Vec<u32>)> {
        let l = self.limits;
        let vips = self.vip_table()?;
        let vips6 = self.vip_table6()?;
        let services = (0..l.max_services)
            .map(|i| self.services.read(i))
            .collect::<Result<Vec<_>>>()?;
        let reals = (0..l.max_reals)
            .map(|i| self.reals.read(i))
            .collect::<Result<Vec<_>>>()?;
        let candidates = (0..l.max_services)
            .map(|i| self.candidates.read(i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Installed::reconstruct(
            l,
            &vips,
            &vips6,
            &services,
            &candidates,
            &reals,
            |slot| self.lookup_slot(slot).unwrap_or(0),
        ))
    }

    /// Reads flat slot `index` of the lookup array.
    pub fn lookup_slot(&self, index: u32) -> Result<u32> {
        let p = self.lookup_slot_ptr(index)?;
        // SAFETY: `p` points at a slot inside a mapped row.
        Ok(unsafe { p.read_volatile() })
    }

    fn lookup_slot_ptr(&self, index: u32) -> Result<*mut u32> {
        let row = self.lookup.ptr(index / LOOKUP_ROW)?;
        // SAFETY: a row is LOOKUP_ROW consecutive u32 slots.
        Ok(unsafe { row.cast::<u32>().add((index % LOOKUP_ROW) as usize) })
    }

    /// The active half of the IPv4 VIP table.
    pub fn vip_table(&self) -> Result<Vec<VipBucket4>> {
        let base = self.settings().vip_base;
        (0..self.limits.vip_buckets())
            .map(|i| self.vips4.read(base + i))
            .collect()
    }

    /// The active half of the IPv6 VIP table.
    pub fn vip_table6(&self) -> Result<Vec<VipBucket6>> {
        let base = self.settings().vip_base;
        (0..self.limits.vip_buckets())
            .map(|i| self.vips6.read(base + i))
            .collect()
    }

    /// Reads a service's entry.
    pub fn service(&self, id: u32) -> Result<Service> {
        self.services.read(id)
    }

    /// Reads `REALS[index]`.
    pub fn real(&self, index: u32) -> Result<Real> {
        self.reals.read(index)
    }

    /// A real's connection counts as the data plane keeps them (see [`RealLoad`]).
    pub fn real_load(&self, index: u32) -> Result<RealLoad> {
        let p = self.real_load.ptr(index)?;
        // SAFETY: `p` points at a mapped element; the counts are aligned i64s that the data
        // plane changes only with atomic adds.
        unsafe {
            Ok(RealLoad {
                active: AtomicI64::from_ptr(&raw mut (*p).active).load(Ordering::Relaxed),
                inactive: AtomicI64::from_ptr(&raw mut (*p).inactive).load(Ordering::Relaxed),
                stale_active: std::ptr::read_volatile(&raw const (*p).stale_active),
                stale_inactive: std::ptr::read_volatile(&raw const (*p).stale_inactive),
                up_since: std::ptr::read_volatile(&raw const (*p).up_since),
                _pad: 0,
            })
        }
    }

    /// Writes a real's stale counts (see [`RealLoad`]), one aligned 8-byte store each.
    pub fn set_stale(&mut self, index: u32, active: u64, inactive: u64) -> Result<()> {
        let p = self.real_load.ptr(index)?;
        // SAFETY: `p` points at a mapped element; only the control plane writes these fields.
        unsafe {
            store_u64((&raw mut (*p).stale_active).cast(), active);
            store_u64((&raw mut (*p).stale_inactive).cast(), inactive);
        }
        Ok(())
    }

    /// Counts the stale entries of `reals` (indices) in both connection tables and writes the
    /// counts that changed beside the data plane's (see [`load`]). Returns the reals whose
    /// stale counts changed, with the new counts, for logging and tests.
    pub fn reconcile_loads(&mut self, reals: &[u32]) -> Result<Vec<(u32, Counts)>> {
        let loads = reals
            .iter()
            .map(|&i| Ok((i, self.real_load(i)?)))
            .collect::<Result<BTreeMap<u32, RealLoad>>>()?;
        let settings = self.settings();
        let up_since = |i| loads.get(&i).map(|l: &RealLoad| l.up_since);
        let mut found = load::stale(self.conns4(), &settings, up_since);
        load::stale_into(&mut found, self.conns6(), &settings, up_since);
        let mut changed = Vec::new();
        for (&index, real) in &loads {
            let now = found.get(&index).copied().unwrap_or_default();
            let before = Counts {
                active: real.stale_active.max(0) as u64,
                inactive: real.stale_inactive.max(0) as u64,
            };
            if now != before {
                self.set_stale(index, now.active, now.inactive)?;
                changed.push((index, now));
            }
        }
        Ok(changed)
    }

    /// Adds `delta`'s `active` and `inactive` to a real's counts, atomically with respect to
    /// the data plane's own updates; the other fields of `delta` are ignored. For tests and
    /// simulations that need a real to look loaded without building its connections.
    pub fn adjust_real_load(&mut self, index: u32, delta: RealLoad) -> Result<()> {
        let p = self.real_load.ptr(index)?;
        // SAFETY: `p` points at a mapped element; both fields are aligned i64s.
        unsafe {
            lb_common::atomic_add(&raw mut (*p).active, delta.active);
            lb_common::atomic_add(&raw mut (*p).inactive, delta.inactive);
        }
        Ok(())
    }

    /// A least-connection service's candidates.
    pub fn candidates(&self, id: u32) -> Result<Candidates> {
        self.candidates.read(id)
    }

    /// Writes a least-connection service's candidates, one aligned 4-byte store per slot (a
    /// packet may see a mix of old and new candidates, every one of them a real index the data
    /// plane checks before use).
    pub fn set_candidates(&mut self, id: u32, reals: &Candidates) -> Result<()> {
        let p = self.candidates.ptr(id)?.cast::<u32>();
        for (i, &r) in reals.iter().enumerate() {
            // SAFETY: `p` points at LC_CANDIDATES consecutive mapped u32s.
            unsafe { store_u32(p.add(i), r) };
        }
        Ok(())
    }

    /// Director-wide counters, summed over CPUs.
    pub fn global_stats(&self) -> Result<GlobalStats> {
        let per_cpu = self
            .global_stats
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::GLOBAL_STATS,
                source,
            })?;
        Ok(per_cpu.iter().fold(GlobalStats::default(), |mut sum, s| {
            sum.add(s);
            sum
        }))
    }

    /// Zeroes the director-wide counters (`ipvsadm -Z` of everything).
    pub fn reset_global_stats(&mut self) -> Result<()> {
        let cpus = nr_cpus().map(|n| n.max(1)).unwrap_or(1);
        let zero = PerCpuValues::try_from(vec![GlobalStats::default(); cpus])
            .expect("one value per possible CPU");
        self.global_stats
            .set(0, zero, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::GLOBAL_STATS,
                source,
            })
    }

    /// Counters of a service id, summed over CPUs.
    pub fn service_stats(&self, id: u32) -> Result<TrafficStats> {
        sum_traffic(&self.service_stats, id, names::SERVICE_STATS)
    }

    /// Counters of a real index, summed over CPUs.
    pub fn real_stats(&self, index: u32) -> Result<TrafficStats> {
        sum_traffic(&self.real_stats, index, names::REAL_STATS)
    }

    /// Every used slot of the IPv4 connection table (expired ones included).
    pub fn conns4(&self) -> Vec<ConnEntry> {
        scan(&self.conns4, self.limits.conn_sets())
            .into_iter()
            .map(conn_entry)
            .collect()
    }

    /// Every used slot of the IPv6 connection table (expired ones included).
    pub fn conns6(&self) -> Vec<Conn6Entry> {
        scan(&self.conns6, self.limits.conn6_sets())
            .into_iter()
            .map(conn_entry)
            .collect()
    }

    /// Real indices that a live (unexpired) entry of either connection table points at.
    pub fn reals_in_use(&self) -> BTreeSet<u32> {
        let s = self.settings();
        let live = |stamp: u32, conn: &Conn| s.conn_live(conn.state, stamp);
        let v4 = self.conns4().into_iter().filter(|e| live(e.stamp, &e.conn));
        let v6 = self.conns6().into_iter().filter(|e| live(e.stamp, &e.conn));
        v4.map(|e| e.conn.real)
            .chain(v6.map(|e| e.conn.real))
            .collect()
    }

    /// The IPv4 connection-table entry of one flow.
    pub fn conn4(&self, key: &Flow4Key) -> Option<ConnEntry> {
        find(&self.conns4, self.limits.conn_sets(), key, key.hash()).map(conn_entry)
    }

    /// The IPv6 connection-table entry of one flow.
    pub fn conn6(&self, key: &Flow6Key) -> Option<Conn6Entry> {
        find(&self.conns6, self.limits.conn6_sets(), key, key.hash()).map(conn_entry)
    }

    /// Stores an IPv4 connection entry the way the data plane does, stamped with the current
    /// clock (tests and simulations; the connection counts are left alone); false if the set
    /// was being written.
    pub fn insert_conn4(&mut self, key: &Flow4Key, conn: &Conn) -> bool {
        let now = self.clock();
        insert(
            &self.conns4,
            self.limits.conn_sets(),
            key,
            key.hash(),
            conn,
            now,
        )
    }

    /// [`Dataplane::insert_conn4`] for the IPv6 connection table.
    pub fn insert_conn6(&mut self, key: &Flow6Key, conn: &Conn) -> bool {
        let now = self.clock();
        insert(
            &self.conns6,
            self.limits.conn6_sets(),
            key,
            key.hash(),
            conn,
            now,
        )
    }

    /// Every used slot of the IPv4 persistence table.
    pub fn persist4(&self) -> Vec<TemplateEntry> {
        scan(&self.persist4, self.limits.persist_sets())
            .into_iter()
            .map(template_entry)
            .collect()
    }

    /// Every used slot of the IPv6 persistence table.
    pub fn persist6(&self) -> Vec<Template6Entry> {
        scan(&self.persist6, self.limits.persist6_sets())
            .into_iter()
            .map(template_entry)
            .collect()
    }

    /// The IPv4 persistence template of one client network.
    pub fn template4(&self, key: &Persist4Key) -> Option<TemplateEntry> {
        find(&self.persist4, self.limits.persist_sets(), key, key.hash()).map(template_entry)
    }

    /// The IPv6 persistence template of one client network.
    pub fn template6(&self, key: &Persist6Key) -> Option<Template6Entry> {
        find(&self.persist6, self.limits.persist6_sets(), key, key.hash()).map(template_entry)
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

/// The maps an instance pins (the log ring buffer and the program's read-only data are not).
pub const PINNED_MAPS: [&str; 16] = [
    names::LAYOUT,
    names::SETTINGS,
    names::VIPS4,
    names::VIPS6,
    names::SERVICES,
    names::LOOKUP,
    names::REALS,
    names::CONNS4,
    names::PERSIST4,
    names::CONNS6,
    names::PERSIST6,
    names::REAL_LOAD,
    names::LC_CANDIDATES,
    names::GLOBAL_STATS,
    names::SERVICE_STATS,
    names::REAL_STATS,
];

/// Where pin directories live.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lb-xdp";

/// How the maps came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Created now.
    Created,
    /// Adopted from a previous agent of the same instance.
    Adopted {
        /// The configuration asks for other sizes than the adopted maps have.
        limits_differ: bool,
    },
}

/// How the program got attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Attached now, in this mode, and the link pinned.
    New(AttachMode),
    /// The pinned link of a previous agent now runs this program (replaced atomically).
    Adopted,
}

/// What an instance records in its `LAYOUT` map (see `lb_common::layout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    version: u32,
    ifindex: u32,
    limits: Limits,
}

/// An instance's pin directory on bpffs: `<PIN_ROOT>/<instance>` holding the link, the maps
/// and the layout record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir(PathBuf);

impl PinDir {
    /// The directory of a named instance.
    pub fn for_instance(instance: &str) -> Self {
        Self(Path::new(PIN_ROOT).join(instance))
    }

    /// A directory elsewhere (tests).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The pinned link.
    pub fn link(&self) -> PathBuf {
        self.0.join("link")
    }

    /// A pinned map.
    pub fn map(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Whether an instance has pinned anything here.
    pub fn exists(&self) -> bool {
        self.map(names::LAYOUT).exists() || self.link().exists()
    }

    fn error(&self, reason: String) -> DataplaneError {
        DataplaneError::Pin {
            path: self.0.clone(),
            reason,
        }
    }

    fn read_layout(&self) -> Result<Option<Layout>> {
        use lb_common::layout as f;
        let path = self.map(names::LAYOUT);
        if !path.exists() {
            if self.link().exists() {
                return Err(self.error("a pinned link without a LAYOUT map: not ours".into()));
            }
            return Ok(None);
        }
        let map = MapData::from_pin(&path)
            .map_err(|e| self.error(format!("opening the LAYOUT map: {e}")))?;
        let array: aya::maps::Array<MapData, u32> = aya::maps::Array::try_from(Map::Array(map))
            .map_err(|e| self.error(format!("the LAYOUT map is not an array of u32: {e}")))?;
        let get = |i: u32| {
            array
                .get(&i, 0)
                .map_err(|e| self.error(format!("reading the LAYOUT map: {e}")))
        };
        Ok(Some(Layout {
            version: get(f::VERSION)?,
            ifindex: get(f::IFINDEX)?,
            limits: Limits {
                max_services: get(f::MAX_SERVICES)?,
                max_reals: get(f::MAX_REALS)?,
                max_table_size: get(f::MAX_TABLE_SIZE)?,
                conn_entries: get(f::CONN_ENTRIES)?,
                persist_entries: get(f::PERSIST_ENTRIES)?,
                conn_entries6: get(f::CONN_ENTRIES6)?,
                persist_entries6: get(f::PERSIST_ENTRIES6)?,
            },
        }))
    }

    fn write_layout(&self, layout: &Layout) -> Result<()> {
        use lb_common::layout as f;
        let map = MapData::from_pin(self.map(names::LAYOUT))
            .map_err(|e| self.error(format!("opening the LAYOUT map: {e}")))?;
        let mut array: aya::maps::Array<MapData, u32> = aya::maps::Array::try_from(Map::Array(map))
            .map_err(|e| self.error(format!("the LAYOUT map is not an array of u32: {e}")))?;
        let l = &layout.limits;
        // The version goes last: a LAYOUT map with version 0 marks an interrupted start.
        for (i, v) in [
            (f::IFINDEX, layout.ifindex),
            (f::MAX_SERVICES, l.max_services),
            (f::MAX_REALS, l.max_reals),
            (f::MAX_TABLE_SIZE, l.max_table_size),
            (f::CONN_ENTRIES, l.conn_entries),
            (f::PERSIST_ENTRIES, l.persist_entries),
            (f::CONN_ENTRIES6, l.conn_entries6),
            (f::PERSIST_ENTRIES6, l.persist_entries6),
            (f::VERSION, layout.version),
        ] {
            array
                .set(i, v, 0)
                .map_err(|e| self.error(format!("writing the LAYOUT map: {e}")))?;
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

/// Every used slot of a set-associative table of `sets` sets.
fn scan<K: SlotData, V: SlotData, const W: usize>(
    map: &Mmap<Set<K, V, W>>,
    sets: u32,
) -> Vec<Found<K, V>> {
    let mut out = Vec::new();
    for s in 0..sets {
        let set = map.ptr(s).expect("set index in range");
        for way in 0..W {
            // SAFETY: `set` points at a mapped set and `way < W`.
            if let Some(f) = unsafe { Set::<K, V, W>::read_slot(set, way) } {
                out.push(f);
            }
        }
    }
    out
}

/// The slot of `key` (whose hash is `hash`) in a table of `sets` sets, as the data plane finds
/// it: set `hash & (sets - 1)`, tag `hash | 1`.
fn find<K: SlotData, V: SlotData, const W: usize>(
    map: &Mmap<Set<K, V, W>>,
    sets: u32,
    key: &K,
    hash: u32,
) -> Option<Found<K, V>> {
    let set = map.ptr(hash & (sets - 1)).ok()?;
    // SAFETY: `set` points at a mapped set.
    unsafe { Set::<K, V, W>::find(set, key, hash | 1) }
}

/// Stores `key` -> `value` stamped `now` the way the data plane does; false if the set was
/// being written.
fn insert<K: SlotData, V: SlotData, const W: usize>(
    map: &Mmap<Set<K, V, W>>,
    sets: u32,
    key: &K,
    hash: u32,
    value: &V,
    now: u32,
) -> bool {
    let Ok(set) = map.ptr(hash & (sets - 1)) else {
        return false;
    };
    // SAFETY: `set` points at a mapped set.
    let stored = unsafe { Set::<K, V, W>::insert(set, key, hash | 1, value, now, |_, _| false) };
    matches!(stored, Inserted::Stored { .. })
}

fn conn_entry<K>(f: Found<K, Conn>) -> ConnEntry<K> {
    ConnEntry {
        key: f.key,
        conn: f.value,
        stamp: f.stamp,
    }
}

fn template_entry<K>(f: Found<K, Template>) -> TemplateEntry<K> {
    TemplateEntry {
        key: f.key,
        template: f.value,
        stamp: f.stamp,
    }
}

/// Stores an aligned u32 in one instruction (the data plane reads it concurrently).
///
/// # Safety
/// `p` must be valid and 4-byte aligned.
unsafe fn store_u32(p: *mut u32, v: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU32::from_ptr(p) }.store(v, Ordering::Release);
}

/// Stores an aligned u64 in one instruction (the data plane reads it concurrently).
///
/// # Safety
/// `p` must be valid and 8-byte aligned.
unsafe fn store_u64(p: *mut u64, v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU64::from_ptr(p) }.store(v, Ordering::Release);
}

fn per_cpu<T: aya::Pod>(map: Map, name: &'static str) -> Result<PerCpuArray<MapData, T>> {
    PerCpuArray::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
}

fn zero_traffic_per_cpu() -> PerCpuValues<TrafficStats> {
    let cpus = nr_cpus().map(|n| n.max(1)).unwrap_or(1);
    PerCpuValues::try_from(vec![TrafficStats::default(); cpus]).expect("one value per possible CPU")
}

fn sum_traffic(
    map: &PerCpuArray<MapData, TrafficStats>,
    index: u32,
    name: &'static str,
) -> Result<TrafficStats> {
    let per_cpu = map
        .get(&index, 0)
        .map_err(|source| DataplaneError::Map { map: name, source })?;
    Ok(per_cpu.iter().fold(TrafficStats::default(), |mut sum, s| {
        sum.add(s);
        sum
    }))
}

/// A `BPF_F_MMAPABLE` array mapped into our address space as `len` elements of `T`. `T`'s size
/// must be a multiple of 8 (the kernel's element stride), so element `i` is at `i * size`.
struct Mmap<T> {
    ptr: NonNull<T>,
    len: u32,
    bytes: usize,
    name: &'static str,
    _map: MapData,
    _t: PhantomData<T>,
}

// SAFETY: the mapping is owned by this struct and only accessed through `&self`/`&mut self`;
// `T` is plain data.
unsafe impl<T: Send> Send for Mmap<T> {}
// SAFETY: as above; concurrent readers see plain loads of memory the kernel also reads.
unsafe impl<T: Sync> Sync for Mmap<T> {}

impl<T: Copy> Mmap<T> {
    fn new(map: Map, name: &'static str, len: u32) -> Result<Self> {
        assert_eq!(
            size_of::<T>() % 8,
            0,
            "{name}: element size must be a multiple of 8"
        );
        let Map::Array(data) = map else {
            return Err(DataplaneError::Missing(name));
        };
        let bytes = len as usize * size_of::<T>();
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array fd shared and read-write is how the kernel exposes
        // BPF_F_MMAPABLE arrays; the length matches the map's value area.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                map: name,
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned a non-null pointer"),
            len,
            bytes,
            name,
            _map: data,
            _t: PhantomData,
        })
    }

    fn ptr(&self, index: u32) -> Result<*mut T> {
        if index >= self.len {
            return Err(DataplaneError::OutOfRange {
                map: self.name,
                index,
            });
        }
        // SAFETY: index is within the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(index as usize) })
    }

    fn write(&mut self, index: u32, value: &T) -> Result<()> {
        let p = self.ptr(index)?;
        // SAFETY: `p` is within the mapping.
        unsafe { p.write_volatile(*value) };
        Ok(())
    }

    fn read(&self, index: u32) -> Result<T> {
        let p = self.ptr(index)?;
        // SAFETY: `p` is within the mapping.
        Ok(unsafe { p.read_volatile() })
    }
}

impl<T> Drop for Mmap<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
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
