//! Control plane of the XDP direct-routing load balancer: the library behind `lb-agent` and
//! `lbadm`.

pub mod agent;
pub mod config;
pub mod dataplane;
pub mod desired;
pub mod health;
pub mod maglev;
pub mod netlink;
pub mod plan;
pub mod state;
pub mod viptable;
