//! The packet-level suites: real frames through the real XDP program in the kernel
//! (BPF_PROG_TEST_RUN), each asserting the action and every output byte. One test binary, so
//! the program's loader and the control-plane library are linked once. Needs root.
//!
//! - [`ipv4`], [`ipv6`]: forwarding, parsing limits, fragments, ICMP errors, the connection
//!   table, persistence, drain and down reals, counters, for each family;
//! - [`least_conn`]: the least-connection schedulers with known connection counts;
//! - [`random_frames`]: random and mutated frames against an independent oracle;
//! - [`decisions`]: the program and the control plane's copy of its decisions agree.

mod decisions;
mod ipv4;
mod ipv6;
mod least_conn;
mod random_frames;
