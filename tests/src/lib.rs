//! Test support for the system and packet-level tests: a packet builder, a BPF_PROG_TEST_RUN
//! harness, network-namespace topologies, traffic generators and an `lb-agent` runner.

pub mod agent;
pub mod family;
pub mod ha;
pub mod lab;
pub mod netns;
pub mod packet;
pub mod rabbitmq;
pub mod rng;
pub mod topo;
pub mod traffic;
