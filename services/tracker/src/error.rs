//! The one place that decides the tracker's gRPC status codes (docs/ARCHITECTURE.md, "Status codes").

use hive::wire::WireError;
use tonic::Status;
use tracing::error;

use crate::{auth::IdentityError, registry::RegistryError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "that session token is not good over this connection (member {0}): a session \
         is bound to the certificate that registered it"
    )]
    NotYourSession(crate::auth::Member),
    #[error(
        "your certificate does not name host {0}, so you may not register it; \
         make one that does with `peerctl certs new NAME --ca DIR --host {0}`"
    )]
    NotYourHost(String),
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        use RegistryError as R;
        let msg = e.to_string();
        match e {
            ServiceError::Wire(_) | ServiceError::Invalid(_) => Status::invalid_argument(msg),
            ServiceError::NotYourSession(_) | ServiceError::NotYourHost(_) => {
                Status::permission_denied(msg)
            }
            ServiceError::Registry(r) => match r {
                R::Invalid(_) => Status::invalid_argument(msg),
                R::UnknownFile(_) | R::UnknownPeer(_) => Status::not_found(msg),
                R::Conflict { .. } => Status::already_exists(msg),
                R::Unauthenticated => Status::unauthenticated(msg),
                // Like NotYourHost: the caller's certificate is why, and
                // the same member may do it. A peer retries a Register
                // refused so (on its backoff), and gets in once the other
                // session is gone; ALREADY_EXISTS would read as a refused file.
                R::PermissionDenied(_) | R::AddressHeld { .. } => Status::permission_denied(msg),
                R::Quota(_) => Status::resource_exhausted(msg),
                R::Identity(i) => ServiceError::Identity(i).into(),
            },
            ServiceError::Identity(i) => match i {
                IdentityError::BadPeerId => Status::invalid_argument(msg),
                IdentityError::MissingToken | IdentityError::BadToken => {
                    Status::unauthenticated(msg)
                }
                IdentityError::Random(_) => {
                    error!(error = %msg, "cannot mint a session");
                    Status::internal("the tracker cannot create sessions right now")
                }
            },
            ServiceError::Store(_) => {
                error!(error = %msg, "storage failure");
                Status::unavailable("the tracker cannot store changes right now")
            }
        }
    }
}
