//! Control plane of the XDP direct-routing load balancer: the library behind `lb-agent` and
//! `lbadm`.

pub mod dataplane;
pub mod maglev;
pub mod plan;
pub mod state;
pub mod viptable;
