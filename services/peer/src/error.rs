//! The one place that decides the peer daemon's gRPC status codes (docs/ARCHITECTURE.md, "Status codes").
//! Errors carry text, not sources, so a download's outcome can be shared
//! with every caller following it.

use std::io;

use hive::wire::WireError;
use tonic::{Code, Status};
use tracing::error;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    /// Outside what the daemon may touch (a path out of the share roots).
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Unavailable(String),
    /// The operation does not apply in the current state (a transfer that
    /// has ended cannot be paused).
    #[error("{0}")]
    Precondition(String),
    #[error("cancelled")]
    Cancelled,
    /// The tracker refused; its code is passed on.
    #[error("tracker: {message}")]
    Tracker { code: Code, message: String },
    #[error("{0}")]
    Internal(String),
}

impl PeerError {
    /// An I/O failure on the local disk; running out of space is its own case.
    pub fn io(context: impl std::fmt::Display, e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Self::NoSpace(format!("no space left on device: {context}"))
            }
            io::ErrorKind::NotFound => Self::NotFound(format!("{context}: {e}")),
            _ => Self::Internal(format!("{context}: {e}")),
        }
    }

    /// A failed call to the tracker.
    pub fn tracker(status: &Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                Self::Unavailable(format!("tracker unreachable: {}", status.message()))
            }
            // Whatever answers there serves no Tracker service.
            Code::Unimplemented => Self::Tracker {
                code: Code::Unimplemented,
                message: "the address given as --tracker is not a hive tracker (it is a peer?)"
                    .into(),
            },
            code => Self::Tracker {
                code,
                message: match status.message() {
                    "" => format!(
                        "refused with {} and no reason",
                        hive_runtime::grpc::code_name(code)
                    ),
                    m => m.to_owned(),
                },
            },
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::Exists(_) => Code::AlreadyExists,
            Self::Denied(_) => Code::PermissionDenied,
            Self::NoSpace(_) | Self::Busy(_) => Code::ResourceExhausted,
            Self::DataLoss(_) => Code::DataLoss,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Precondition(_) => Code::FailedPrecondition,
            Self::Cancelled => Code::Cancelled,
            Self::Tracker { code, .. } => *code,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<WireError> for PeerError {
    fn from(e: WireError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<PeerError> for Status {
    fn from(e: PeerError) -> Status {
        if let PeerError::Internal(detail) = &e {
            error!(%detail, "internal error");
        }
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::PeerError;

    #[test]
    fn a_tracker_refusal_always_says_something() {
        let e = PeerError::tracker(&Status::new(Code::Unimplemented, ""));
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(e.to_string().contains("--tracker"), "{e}");
        let e = PeerError::tracker(&Status::new(Code::PermissionDenied, ""));
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.to_string().contains("PERMISSION_DENIED"), "{e}");
    }
}
