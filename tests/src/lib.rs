//! Harnesses shared by Meridian's cross-crate tests and the benchmark.

pub mod cert_manager;
pub mod conformance;
pub mod control_plane;
pub mod faults;
pub mod in_process;
pub mod local_mode;
pub mod node_process;
pub mod operator;
pub mod postgres;
pub mod prometheus;
