//! An instance's pins on bpffs: where its maps and link live, and the `LAYOUT` record that
//! lets a restarted agent adopt them.

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use lb_common::map_names as names;

use super::{DataplaneError, Result};
use crate::model::{AttachMode, Limits};

/// The maps an instance pins, as `lb_common` names them.
pub use lb_common::map_names::PINNED as PINNED_MAPS;

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
pub(super) struct Layout {
    pub(super) version: u32,
    pub(super) ifindex: u32,
    pub(super) limits: Limits,
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

    pub(super) fn error(&self, reason: String) -> DataplaneError {
        DataplaneError::Pin {
            path: self.0.clone(),
            reason,
        }
    }

    pub(super) fn read_layout(&self) -> Result<Option<Layout>> {
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
        let version = get(f::VERSION)?;
        let ifindex = get(f::IFINDEX)?;
        let mut limits = Limits::default();
        for (i, field) in limit_fields(&mut limits) {
            *field = get(i)?;
        }
        Ok(Some(Layout {
            version,
            ifindex,
            limits,
        }))
    }

    pub(super) fn write_layout(&self, layout: &Layout) -> Result<()> {
        use lb_common::layout as f;
        let map = MapData::from_pin(self.map(names::LAYOUT))
            .map_err(|e| self.error(format!("opening the LAYOUT map: {e}")))?;
        let mut array: aya::maps::Array<MapData, u32> = aya::maps::Array::try_from(Map::Array(map))
            .map_err(|e| self.error(format!("the LAYOUT map is not an array of u32: {e}")))?;
        let mut limits = layout.limits;
        let limits = limit_fields(&mut limits).map(|(i, field)| (i, *field));
        // The version goes last: a LAYOUT map with version 0 marks an interrupted start.
        let fields = [(f::IFINDEX, layout.ifindex)]
            .into_iter()
            .chain(limits)
            .chain([(f::VERSION, layout.version)]);
        for (i, v) in fields {
            array
                .set(i, v, 0)
                .map_err(|e| self.error(format!("writing the LAYOUT map: {e}")))?;
        }
        Ok(())
    }
}

/// Each field of [`Limits`] with its index in the `LAYOUT` map, in index order: the one list
/// that both [`PinDir::read_layout`] and [`PinDir::write_layout`] go through.
fn limit_fields(limits: &mut Limits) -> [(u32, &mut u32); 7] {
    use lb_common::layout as f;
    // No `..`: a new field of `Limits` does not compile until it has its index here.
    let Limits {
        max_services,
        max_reals,
        max_table_size,
        conn_entries,
        persist_entries,
        conn_entries6,
        persist_entries6,
    } = limits;
    [
        (f::MAX_SERVICES, max_services),
        (f::MAX_REALS, max_reals),
        (f::MAX_TABLE_SIZE, max_table_size),
        (f::CONN_ENTRIES, conn_entries),
        (f::PERSIST_ENTRIES, persist_entries),
        (f::CONN_ENTRIES6, conn_entries6),
        (f::PERSIST_ENTRIES6, persist_entries6),
    ]
}
