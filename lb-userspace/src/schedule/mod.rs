//! How new flows are placed, as the control plane computes it: Maglev lookup tables, the VIP
//! table's layout, and least-connection counts and candidates. Pure functions over
//! `lb-common`'s types and the model: no I/O, no state over time. The per-packet decisions
//! themselves are `lb_common::decide`'s, shared with the XDP program.

pub mod load;
pub mod maglev;
pub mod viptable;
