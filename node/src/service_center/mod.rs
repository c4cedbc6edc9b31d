//! The service center: serves the region's clients. Its data center stores
//! the region's records; its business center runs the flows; it reaches other
//! regions only through its own roaming system.

pub mod business_center;
pub mod data_center;
pub mod departed;
pub mod grpc;
pub mod grpc_subscribe;
pub mod hub;
pub mod outbox;
pub mod replicas;
pub mod retention;
pub mod roaming_client;
pub mod verdicts;

pub use business_center::{BusinessCenter, Limits};
