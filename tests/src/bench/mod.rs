//! The parts of `meridian-bench`: a running system (spawned or given), the
//! users and groups of one run, the load generators and the report; the
//! PostgreSQL scenarios (failover, backends) and what they measure with;
//! the side-by-side scenario against NATS (peers); where a cross-region
//! delivery's time goes, from the nodes' spans (path).

pub mod ack;
pub mod backends;
pub mod closed_loop;
pub mod cpu;
pub mod deliver;
pub mod failover;
pub mod local;
pub mod manifest;
pub mod open_loop;
pub mod path;
pub mod peers;
pub mod pg;
pub mod report;
pub mod sessions;
pub mod setup;
pub mod subscriber;
pub mod throughput;
