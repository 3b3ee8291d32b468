//! The data plane as the control plane drives it: loads the embedded XDP object, sizes its maps
//! from [`Limits`], executes planned map updates ([`Op`]), reads counters and tables back, and
//! attaches the program to an interface.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{Ordering, fence},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
    util::nr_cpus,
};
use lb_common::{
    Conn, Flow4Key, GlobalStats, LOOKUP_ROW, Persist4Key, PersistEntry, Real, Service, Settings,
    TrafficStats, Vip4Key, map_names as names,
};
use thiserror::Error;
use tracing::warn;

use crate::plan::{Limits, Op};

/// The XDP object, built by `cargo xtask build-ebpf` and embedded so that one binary deploys.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("LB_EBPF_OBJECT"));

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
    /// A map is missing from the object.
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    /// `mmap` of the lookup array failed.
    #[error("mmap of {map}: {source}")]
    Mmap {
        /// Map name.
        map: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// An index outside a map.
    #[error("{map}: index {index} is out of range")]
    OutOfRange {
        /// Map name.
        map: &'static str,
        /// Index.
        index: u32,
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

/// How to attach the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP.
    Driver,
    /// Generic (skb) XDP.
    Skb,
    /// Driver, else skb with a warning.
    Auto,
}

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
    settings: Array<MapData, Settings>,
    services4: HashMap<MapData, Vip4Key, Service>,
    lookup: MmapArray,
    reals: Array<MapData, Real>,
    conns4: HashMap<MapData, Flow4Key, Conn>,
    persist4: HashMap<MapData, Persist4Key, PersistEntry>,
    global_stats: PerCpuArray<MapData, GlobalStats>,
    service_stats: PerCpuArray<MapData, TrafficStats>,
    real_stats: PerCpuArray<MapData, TrafficStats>,
    link: Option<XdpLinkId>,
}

impl Dataplane {
    /// Loads the embedded object with maps sized from `opts.limits` and the program verified,
    /// not yet attached. Settings start with a zero MAC and IPVS's default timeouts.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        Self::load_object(EBPF_OBJECT, opts)
    }

    /// Loads a given object (tests and benchmarks use this for reference programs).
    pub fn load_object(object: &[u8], opts: &LoadOptions) -> Result<Self> {
        let l = &opts.limits;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::SERVICES4, l.max_services * 2)
            .map_max_entries(names::LOOKUP, l.lookup_slots() / LOOKUP_ROW)
            .map_max_entries(names::REALS, l.max_reals)
            .map_max_entries(names::CONNS4, l.conn_entries)
            .map_max_entries(names::PERSIST4, l.persist_entries)
            .map_max_entries(names::SERVICE_STATS, l.max_services)
            .map_max_entries(names::REAL_STATS, l.max_reals)
            .override_global("AYA_LOG_LEVEL", &opts.ebpf_log_level, false);
        let mut ebpf = loader.load(object)?;
        let program: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .ok_or(DataplaneError::MissingMap(names::PROGRAM))?
            .try_into()?;
        program.load()?;

        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name));
        let map_err = |map: &'static str| move |source| DataplaneError::Map { map, source };
        let mut dp = Self {
            settings: Array::try_from(take(names::SETTINGS)?).map_err(map_err(names::SETTINGS))?,
            services4: HashMap::try_from(take(names::SERVICES4)?)
                .map_err(map_err(names::SERVICES4))?,
            lookup: MmapArray::new(take(names::LOOKUP)?, names::LOOKUP, l.lookup_slots())?,
            reals: Array::try_from(take(names::REALS)?).map_err(map_err(names::REALS))?,
            conns4: HashMap::try_from(take(names::CONNS4)?).map_err(map_err(names::CONNS4))?,
            persist4: HashMap::try_from(take(names::PERSIST4)?)
                .map_err(map_err(names::PERSIST4))?,
            global_stats: PerCpuArray::try_from(take(names::GLOBAL_STATS)?)
                .map_err(map_err(names::GLOBAL_STATS))?,
            service_stats: PerCpuArray::try_from(take(names::SERVICE_STATS)?)
                .map_err(map_err(names::SERVICE_STATS))?,
            real_stats: PerCpuArray::try_from(take(names::REAL_STATS)?)
                .map_err(map_err(names::REAL_STATS))?,
            ebpf,
            limits: *l,
            link: None,
        };
        dp.set_settings(&Settings::new([0; 6]))?;
        for index in 0..l.max_reals {
            dp.reals
                .set(index, Real::EMPTY, 0)
                .map_err(map_err(names::REALS))?;
        }
        Ok(dp)
    }

    /// Map capacities.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Writes the director settings (source MAC, timeouts).
    pub fn set_settings(&mut self, settings: &Settings) -> Result<()> {
        self.settings
            .set(0, settings, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::SETTINGS,
                source,
            })
    }

    /// Reads the director settings.
    pub fn settings(&self) -> Result<Settings> {
        self.settings
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::SETTINGS,
                source,
            })
    }

    /// Executes planned updates in order.
    pub fn apply(&mut self, ops: &[Op]) -> Result<()> {
        for op in ops {
            self.apply_one(op)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, op: &Op) -> Result<()> {
        let map_err = |map: &'static str| move |source| DataplaneError::Map { map, source };
        match op {
            Op::ResetServiceStats(id) => {
                let zero = zero_traffic_per_cpu();
                self.service_stats
                    .set(*id, zero, 0)
                    .map_err(map_err(names::SERVICE_STATS))
            }
            Op::ResetRealStats(index) => {
                let zero = zero_traffic_per_cpu();
                self.real_stats
                    .set(*index, zero, 0)
                    .map_err(map_err(names::REAL_STATS))
            }
            Op::SetReal { index, real } => self
                .reals
                .set(*index, real, 0)
                .map_err(map_err(names::REALS)),
            Op::WriteSlots { base, slots } => {
                for &(offset, real) in slots {
                    self.lookup.write(base + offset, real)?;
                }
                // The slots must be visible before the service entry that publishes them.
                fence(Ordering::SeqCst);
                Ok(())
            }
            Op::SetService { key, service } => self
                .services4
                .insert(key, service, 0)
                .map_err(map_err(names::SERVICES4)),
            Op::RemoveService { key } => self
                .services4
                .remove(key)
                .map_err(map_err(names::SERVICES4)),
        }
    }

    /// Reads flat slot `index` of the lookup array.
    pub fn lookup_slot(&self, index: u32) -> Result<u32> {
        self.lookup.read(index)
    }

    /// Reads a service entry.
    pub fn service(&self, key: &Vip4Key) -> Option<Service> {
        self.services4.get(key, 0).ok()
    }

    /// All service entries (fragment entries included, with port 0).
    pub fn services(&self) -> Vec<(Vip4Key, Service)> {
        self.services4.iter().filter_map(|r| r.ok()).collect()
    }

    /// Reads `REALS[index]`.
    pub fn real(&self, index: u32) -> Result<Real> {
        self.reals
            .get(&index, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::REALS,
                source,
            })
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
        Ok(per_cpu
            .iter()
            .fold(GlobalStats::default(), |a, s| sum_global(&a, s)))
    }

    /// Counters of a service id, summed over CPUs.
    pub fn service_stats(&self, id: u32) -> Result<TrafficStats> {
        sum_traffic(&self.service_stats, id, names::SERVICE_STATS)
    }

    /// Counters of a real index, summed over CPUs.
    pub fn real_stats(&self, index: u32) -> Result<TrafficStats> {
        sum_traffic(&self.real_stats, index, names::REAL_STATS)
    }

    /// The IPv4 connection table.
    pub fn conns4(&self) -> Vec<(Flow4Key, Conn)> {
        self.conns4.iter().filter_map(|r| r.ok()).collect()
    }

    /// One IPv4 connection entry.
    pub fn conn4(&self, key: &Flow4Key) -> Option<Conn> {
        self.conns4.get(key, 0).ok()
    }

    /// Writes a connection entry (tests age entries this way; operators never need it).
    pub fn set_conn4(&mut self, key: &Flow4Key, conn: &Conn) -> Result<()> {
        self.conns4
            .insert(key, conn, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::CONNS4,
                source,
            })
    }

    /// The IPv4 persistence templates.
    pub fn persist4(&self) -> Vec<(Persist4Key, PersistEntry)> {
        self.persist4.iter().filter_map(|r| r.ok()).collect()
    }

    /// Writes a persistence template (tests age templates this way).
    pub fn set_persist4(&mut self, key: &Persist4Key, entry: &PersistEntry) -> Result<()> {
        self.persist4
            .insert(key, entry, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::PERSIST4,
                source,
            })
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
        let mut out = vec![0u8; frame.len() + 256];
        let result = self.program().test_run(TestRunOptions {
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
    Ok(per_cpu
        .iter()
        .fold(TrafficStats::default(), |a, s| TrafficStats {
            packets: a.packets + s.packets,
            bytes: a.bytes + s.bytes,
            conns: a.conns + s.conns,
        }))
}

fn sum_global(a: &GlobalStats, b: &GlobalStats) -> GlobalStats {
    GlobalStats {
        rx: a.rx + b.rx,
        passed: a.passed + b.passed,
        transmitted: a.transmitted + b.transmitted,
        drop_no_real: a.drop_no_real + b.drop_no_real,
        conn_hits: a.conn_hits + b.conn_hits,
        conn_misses: a.conn_misses + b.conn_misses,
        conn_rescheduled: a.conn_rescheduled + b.conn_rescheduled,
        conn_insert_failed: a.conn_insert_failed + b.conn_insert_failed,
        fragments: a.fragments + b.fragments,
        icmp_forwarded: a.icmp_forwarded + b.icmp_forwarded,
        persist_hits: a.persist_hits + b.persist_hits,
    }
}

/// The `BPF_F_MMAPABLE` lookup array mapped into our address space as one flat `u32` table
/// (its rows have no padding): tables of 65537 slots are written with plain stores instead of
/// one syscall per slot.
struct MmapArray {
    ptr: NonNull<u32>,
    entries: u32,
    len_bytes: usize,
    name: &'static str,
    _map: MapData,
}

// SAFETY: the mapping is owned by this struct and only accessed through `&self`/`&mut self`.
unsafe impl Send for MmapArray {}
// SAFETY: reads through `&self` are plain loads of `u32`s the kernel may change concurrently,
// which is the intended use of a shared array.
unsafe impl Sync for MmapArray {}

impl MmapArray {
    fn new(map: aya::maps::Map, name: &'static str, entries: u32) -> Result<Self> {
        let aya::maps::Map::Array(data) = map else {
            return Err(DataplaneError::MissingMap(name));
        };
        let len_bytes = entries as usize * size_of::<u32>();
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array fd shared and read-write is how the kernel exposes
        // BPF_F_MMAPABLE arrays; the length matches the map's value area.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                map: name,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned a non-null pointer"),
            entries,
            len_bytes,
            name,
            _map: data,
        })
    }

    fn write(&mut self, index: u32, value: u32) -> Result<()> {
        if index >= self.entries {
            return Err(DataplaneError::OutOfRange {
                map: self.name,
                index,
            });
        }
        // SAFETY: index is within the mapping.
        unsafe { self.ptr.as_ptr().add(index as usize).write_volatile(value) };
        Ok(())
    }

    fn read(&self, index: u32) -> Result<u32> {
        if index >= self.entries {
            return Err(DataplaneError::OutOfRange {
                map: self.name,
                index,
            });
        }
        // SAFETY: index is within the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(index as usize).read_volatile() })
    }
}

impl Drop for MmapArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len_bytes);
        }
    }
}
