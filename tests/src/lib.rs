//! Harnesses shared by Meridian's cross-crate tests and the benchmark.

pub mod faults;
pub mod in_process;
pub mod local_mode;
