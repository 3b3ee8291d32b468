//! An in-memory model of the maps the planner writes, for tests: the ops applied as the data
//! plane applies them, so that tests of the planner and of its readers (`--which`) check what
//! a packet would see without loading the program.

use std::collections::BTreeMap;

use lb_common::{Candidates, Real, VipBucket4, VipBucket6};

use super::{Op, ServiceParams};

/// The maps as planned ops leave them.
#[derive(Default)]
pub(crate) struct FakeMaps {
    /// The active IPv4 VIP table half.
    pub(crate) vips: Vec<VipBucket4>,
    /// The active IPv6 VIP table half.
    pub(crate) vips6: Vec<VipBucket6>,
    /// Service parameters by id.
    pub(crate) params: BTreeMap<u32, ServiceParams>,
    /// Published tables by service id: (base, size).
    pub(crate) tables: BTreeMap<u32, (u32, u32)>,
    /// Reals by index.
    pub(crate) reals: BTreeMap<u32, Real>,
    /// Lookup-table slots by flat index (absent = `NO_REAL`).
    pub(crate) lookup: BTreeMap<u32, u32>,
    /// Least-connection candidates by service id.
    pub(crate) candidates: BTreeMap<u32, Candidates>,
}

impl FakeMaps {
    /// Applies one op.
    pub(crate) fn apply_op(&mut self, op: &Op) {
        match op {
            Op::ResetServiceStats(_) | Op::ResetRealStats(_) => {}
            Op::SetReal { index, real } => {
                self.reals.insert(*index, *real);
            }
            Op::SetServiceParams { id, params } => {
                self.params.insert(*id, *params);
            }
            Op::WriteSlots { base, slots } => {
                for (off, v) in slots {
                    self.lookup.insert(base + off, *v);
                }
            }
            Op::PublishTable { id, base, size } => {
                self.tables.insert(*id, (*base, *size));
            }
            Op::SetVips { v4, v6 } => {
                // Both halves become active with one flip.
                self.vips = v4.clone();
                self.vips6 = v6.clone();
            }
            Op::SetCandidates { id, reals } => {
                self.candidates.insert(*id, *reals);
            }
        }
    }
}
