//! What the node tells its operators about itself: metrics in the Prometheus
//! format, served at `/metrics`, and traces of each message's path,
//! exported over OTLP when configured (docs/ARCHITECTURE.md §9 names them).
//!
//! The domain holds only metric handles (cheap shared atomics) and bumps them
//! at its boundaries; registering them, reading the scrape-time gauges and
//! serving HTTP happen here, so the flows know nothing of how they are
//! watched.

pub mod http;
pub mod metrics;
pub mod traces;

pub use metrics::{CommitMetrics, ServiceCenterMetrics};
