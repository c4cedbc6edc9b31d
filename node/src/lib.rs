//! Meridian's node: a region's service center and its paired roaming system.
//!
//! The module names are the source design's words:
//! - [`service_center`] serves the region's clients; its
//!   [`service_center::data_center`] stores accounts, groups and communication
//!   records, and its [`service_center::business_center`] runs the flows.
//! - [`roaming`] carries traffic between regions: its
//!   [`roaming::data_service`] reaches other regions' data centers and its
//!   [`roaming::business`] carries messages to homes and recipient regions.
//! - [`mesh`] holds the peer-mesh configuration and the routes over it.
//!
//! A service center talks only to its own roaming system; roaming systems talk
//! to each other.

pub mod cli;
pub mod client;
pub mod error;
pub mod ids;
pub mod limits;
pub mod mesh;
pub mod proto;
pub mod reflection;
pub mod roaming;
pub mod server;
pub mod service_center;
pub mod tasks;
pub mod telemetry;
pub mod transport;
pub mod trust;

pub use error::Error;

/// Milliseconds since the Unix epoch, the timestamp unit on the wire and on disk.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
