//! The controller's errors, one variant per step, each with a metric label.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read the Regions and RegionLinks of namespace {namespace}: their watches stopped"
    )]
    Fetch { namespace: String },
    #[error("the Region is invalid: {0}")]
    Invalid(String),
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply cert-manager Certificate {name}: {message}")]
    Certificate { name: String, message: String },
    #[error("cannot read {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write the status of {kind} {name}: {source}")]
    Status {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The `error` label of the reconcile error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Fetch { .. } => "fetch",
            Error::Invalid(_) => "invalid",
            Error::Apply { .. } | Error::Delete { .. } | Error::Certificate { .. } => "apply",
            Error::Read { .. } => "read",
            Error::Status { .. } => "status",
        }
    }
}
