//! A swarm CA and the TLS calls the TLS suites make (`tests/tls.rs`,
//! `tests/tls_addresses.rs`): members' certificates written to a temporary
//! directory, TLS trackers, channels as a member, a stranger or in
//! plaintext.
#![allow(dead_code)]

use std::net::SocketAddr;

use hive::pb::{tracker as trk, tracker::tracker_client::TrackerClient, types::ChunkRange};
use hive_runtime::tls::{
    Tls,
    certs::{Ca, Validity},
};
use tempfile::TempDir;
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig},
};

use crate::common::{self, TestTracker, manifest};

/// A swarm CA whose members' files live in a temporary directory.
pub struct Swarm {
    pub ca: Ca,
    pub dir: TempDir,
}

impl Swarm {
    pub fn new() -> Self {
        Self {
            ca: Ca::new().expect("a CA"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Member `name`'s --tls-* flags, valid for a day.
    pub fn flags(&self, name: &str) -> Vec<String> {
        self.flags_with(name, &[], Validity::days(1))
    }

    pub fn flags_with(&self, name: &str, hosts: &[String], validity: Validity) -> Vec<String> {
        let member = self.ca.member(name, hosts, validity).expect("a member");
        let files = member
            .save(&self.dir.path().join(name), &self.ca)
            .expect("saved");
        [
            "--tls-cert",
            &files.cert.display().to_string(),
            "--tls-key",
            &files.key.display().to_string(),
            "--tls-ca",
            &files.ca.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// A member's client config, trusting this swarm's CA.
    pub fn client(&self, name: &str) -> ClientTlsConfig {
        self.client_with(name, Validity::days(1))
    }

    pub fn client_with(&self, name: &str, validity: Validity) -> ClientTlsConfig {
        let member = self.ca.member(name, &[], validity).expect("a member");
        Tls::from_pem(
            member.cert_pem.as_bytes(),
            member.key_pem.as_bytes(),
            self.ca.cert_pem().as_bytes(),
        )
        .expect("member TLS")
        .client()
    }

    /// Trusting this swarm's CA, with no certificate of one's own.
    pub fn stranger(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
    }
}

/// Whether a call failed in the transport (the handshake, or a connection
/// the server closed), not with a status a handler returned: tonic gives it
/// UNAVAILABLE, or CANCELLED / UNKNOWN when the connection closes after the
/// client's side of a TLS 1.3 handshake, always with the transport error
/// as its source. A handler's status has no source.
pub fn refused_in_transport(e: &tonic::Status) -> bool {
    let transport = std::error::Error::source(e)
        .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some());
    transport
        && matches!(
            e.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        )
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A TLS tracker of `swarm` (member "tracker"), with `extra` flags.
pub async fn tls_tracker(swarm: &Swarm, extra: &[&str]) -> TestTracker {
    let mut flags = swarm.flags("tracker");
    flags.extend(extra.iter().map(|s| s.to_string()));
    TestTracker::start_with(&strs(&flags)).await
}

pub fn https(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

/// A TLS channel to `addr` as `tls` says; the handshake's failure is the
/// first call's.
pub fn tls_channel(addr: SocketAddr, tls: ClientTlsConfig) -> Channel {
    hive_runtime::grpc::endpoint(&https(addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect_lazy()
}

pub fn plain_channel(addr: SocketAddr) -> Channel {
    hive_runtime::grpc::endpoint(&format!("http://{addr}"))
        .expect("uri")
        .connect_lazy()
}

pub fn list() -> trk::ListFilesRequest {
    trk::ListFilesRequest::default()
}

/// A new session's Register of one file, advertising `host` (if any).
pub fn register(name: &str, data: &[u8], host: &str) -> trk::RegisterRequest {
    let m = manifest(name, data);
    let chunks = common::digest_count(&m) as u32;
    trk::RegisterRequest {
        port: 4000,
        advertise_host: host.into(),
        files: vec![trk::SharedFile {
            manifest: Some(m),
            chunks: vec![ChunkRange {
                first: 1,
                last: chunks,
            }],
        }],
        ..Default::default()
    }
}

/// The names the tracker lists, asked by a member.
pub async fn names(tracker: SocketAddr, swarm: &Swarm) -> Vec<String> {
    let mut client = TrackerClient::new(tls_channel(tracker, swarm.client("auditor")));
    let files = client.list_files(list()).await.expect("list").into_inner();
    files.files.into_iter().map(|f| f.name).collect()
}
