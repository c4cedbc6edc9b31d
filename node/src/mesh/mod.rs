//! The peer mesh: its configuration, the health of its links, the link state
//! shared across it, and the routes over it.

pub mod config;
pub mod health;
pub mod routes;
pub mod topology;

pub use config::{MeshConfig, Peer};
pub use routes::{Route, next_hop};
