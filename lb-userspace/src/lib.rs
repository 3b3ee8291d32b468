//! Control plane of the XDP direct-routing load balancer: the library behind `lb-agent` and
//! `lbadm`.

pub mod agent;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod desired;
pub mod edit;
pub mod health;
pub mod instance_lock;
pub mod ipvsadm;
pub mod keepalived;
pub mod load;
pub mod maglev;
pub mod metrics;
pub mod netlink;
pub mod plan;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod viptable;
