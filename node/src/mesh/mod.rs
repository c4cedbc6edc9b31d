//! The peer mesh: its configuration, and the routes over its links.

pub mod config;
pub mod routes;

pub use config::{MeshConfig, Peer};
pub use routes::{Route, next_hop};
