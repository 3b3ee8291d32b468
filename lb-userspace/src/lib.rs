//! Control plane of the XDP direct-routing load balancer: the library behind `lb-agent` and
//! `lbadm`. ARCHITECTURE.md at the repository root maps its layers; each module below says
//! what it owns. From the bottom: `model` (the shared vocabulary), `schedule`, `config`,
//! `import`, `control` (the lbadm <-> agent protocol), `reconcile`, then the edges that do I/O
//! (`dataplane`, `netlink`, `health`, `sync`), `observe`, and `agent` on top.

pub mod agent;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod health;
pub mod import;
pub mod model;
pub mod netlink;
pub mod observe;
pub mod reconcile;
pub mod schedule;
pub mod sync;
