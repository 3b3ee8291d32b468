//! The packet-level suites: real frames through the real XDP program in the kernel
//! (BPF_PROG_TEST_RUN), each asserting the action and every output byte. One test binary, so
//! the program's loader and the control-plane library are linked once. Needs root.
//!
//! - [`common`]: forwarding, parsing limits, fragments, the connection table, drain and down
//!   reals, scheduling and persistence, counters: written once over
//!   [`lb_tests::family::Family`], run for each family (`common::v4::…`, `common::v6::…`);
//! - [`ipv4`], [`ipv6`]: what is particular to each family (IPv4 options and header length,
//!   IPv6 extension headers and neighbour discovery, ICMP errors, dual stack);
//! - [`least_conn`]: the least-connection schedulers with known connection counts;
//! - [`by_weight`]: the weight-ordered schedulers `fo` and `ovf`;
//! - [`hashing`]: `dh`, `sh`/`mh` with their port and fallback flags, and `ops`;
//! - [`random_frames`]: random and mutated frames against an independent oracle;
//! - [`decisions`]: the program and the control plane's copy of its decisions agree;
//! - [`flood`]: a spoofed SYN flood breaks no established connection, under every scheduler;
//! - [`sync`]: director sync's announcements and the flows peers announce;
//! - [`thresholds`]: the reals' connection thresholds (overload) under every scheduler;
//! - [`twos`]: `twos`, the less loaded of two reals drawn by weight.

mod by_weight;
mod common;
mod decisions;
mod flood;
mod hashing;
mod ipv4;
mod ipv6;
mod least_conn;
mod random_frames;
mod sync;
mod thresholds;
mod twos;
