//! The gRPC stubs generated from `proto/` by `build.rs`. Only this module
//! includes generated code; everything else converts through [`crate::wire`].
//!
//! The stubs are generated without tonic's transport: a client is
//! `XClient::new(channel)` over a channel the caller dials (the daemons use
//! `hive_runtime::grpc::endpoint`).
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Mirrors the proto packages so that cross-package references resolve.
pub mod hive {
    pub mod types {
        pub mod v1 {
            tonic::include_proto!("hive.types.v1");
        }
    }
    pub mod tracker {
        pub mod v1 {
            tonic::include_proto!("hive.tracker.v1");
        }
    }
    pub mod peer {
        pub mod v1 {
            tonic::include_proto!("hive.peer.v1");
        }
    }
    pub mod control {
        pub mod v1 {
            tonic::include_proto!("hive.control.v1");
        }
    }
}

pub use hive::control::v1 as control;
pub use hive::peer::v1 as peer;
pub use hive::tracker::v1 as tracker;
pub use hive::types::v1 as types;

/// The encoded descriptor set of every hive proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
