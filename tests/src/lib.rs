//! Test support for the system and packet-level tests: a packet builder, a BPF_PROG_TEST_RUN
//! harness and network-namespace topologies.

pub mod lab;
pub mod netns;
pub mod packet;
