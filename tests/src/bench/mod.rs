//! The parts of `meridian-bench`: a running system (spawned or given), the
//! users and groups of one run, the load generators and the report; the
//! failover scenario on PostgreSQL.

pub mod ack;
pub mod cpu;
pub mod deliver;
pub mod failover;
pub mod local;
pub mod manifest;
pub mod open_loop;
pub mod report;
pub mod setup;
pub mod subscriber;
pub mod throughput;
