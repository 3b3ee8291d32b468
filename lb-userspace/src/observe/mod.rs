//! What operators see: snapshots of the running state read from the maps and the agent
//! ([`snapshot`]), rendered as ipvsadm's listings ([`ipvsadm`]) and as Prometheus metrics
//! ([`metrics`]).

pub mod ipvsadm;
pub mod metrics;
pub mod snapshot;
