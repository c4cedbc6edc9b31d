//! The domain error, shared by the service center and the roaming system.
//! It knows nothing of gRPC: `transport::status` converts it at the edge.

/// What went wrong, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The error for a region that cannot be reached now.
    pub fn unreachable(region: &str) -> Self {
        Error::Unavailable(format!("region {region} is unreachable"))
    }

    /// Whether retrying later may succeed; the outboxes retry these.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Internal(_))
    }
}
