//! TLS on every hive gRPC port, with a swarm CA: `--tls-cert`, `--tls-key`
//! and `--tls-ca` ([`TlsArgs`]), loaded into a [`Tls`] that gives a server
//! its config (a certificate signed by the swarm CA is required of every
//! client: mutual TLS) and a client its own (the server's certificate must
//! be signed by the swarm CA and name the host dialled).
//!
//! Only TLS 1.3 is offered: [`Tls`] installs, once per process, a rustls
//! provider whose cipher suites are ring's TLS 1.3 ones, which tonic's
//! server and client configs then use.
//!
//! [`certs`] makes a swarm CA and its members' certificates (`peerctl certs`).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Once},
};

pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::grpc::HANDSHAKE_TIMEOUT;

pub mod certs;

/// The TLS flags every daemon and `peerctl` take. All three or none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// This member's certificate (PEM), signed by the swarm CA; with
    /// --tls-key and --tls-ca every gRPC port is served and dialled over
    /// TLS 1.3 and only swarm members may connect. `peerctl certs new`
    /// makes one. Without the three flags hive speaks plaintext (a LAN).
    #[arg(long, env = "HIVE_TLS_CERT", value_name = "PEM", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "HIVE_TLS_KEY", value_name = "PEM", global = true)]
    pub tls_key: Option<PathBuf>,

    /// The swarm CA's certificate (PEM): servers and clients are accepted
    /// only with a certificate it signed.
    #[arg(long, env = "HIVE_TLS_CA", value_name = "PEM", global = true)]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "TLS needs all of --tls-cert, --tls-key and --tls-ca (missing {0}); \
         `peerctl certs new NAME --ca DIR` writes them"
    )]
    Incomplete(&'static str),
    #[error("{flag} {path}: {why}")]
    File {
        flag: &'static str,
        path: String,
        why: String,
    },
}

impl TlsArgs {
    /// The TLS these flags ask for; `None` for plaintext.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        let (cert, key, ca) = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            (None, _, _) => return Err(TlsError::Incomplete("--tls-cert")),
            (_, None, _) => return Err(TlsError::Incomplete("--tls-key")),
            (_, _, None) => return Err(TlsError::Incomplete("--tls-ca")),
        };
        Tls::from_pem(
            &read("--tls-cert", cert)?,
            &read("--tls-key", key)?,
            &read("--tls-ca", ca)?,
        )
        .map(Some)
        .map_err(|(flag, why)| TlsError::File {
            flag,
            path: match flag {
                "--tls-cert" => cert,
                "--tls-key" => key,
                _ => ca,
            }
            .display()
            .to_string(),
            why,
        })
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        flag,
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// A member's TLS material, checked: cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    ca: Certificate,
    fingerprint: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.inner.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// From PEM text; an error names the flag whose file is wrong.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, (&'static str, String)> {
        install_tls13_only();
        let certs = parse_certs(cert).map_err(|e| ("--tls-cert", e))?;
        parse_certs(ca).map_err(|e| ("--tls-ca", e))?;
        PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| ("--tls-key", format!("no private key in PEM ({e})")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                identity: Identity::from_pem(cert, key),
                ca: Certificate::from_pem(ca),
                fingerprint: fingerprint(&certs[0]),
            }),
        })
    }

    /// A server's config: this member's certificate, a client certificate
    /// signed by the swarm CA required, and the handshake bounded by
    /// [`HANDSHAKE_TIMEOUT`].
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.inner.identity.clone())
            .client_ca_root(self.inner.ca.clone())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// A client's config: trusts only the swarm CA, presents this member's
    /// certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.inner.ca.clone())
            .identity(self.inner.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The SHA-256 fingerprint of this member's certificate.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate ({e})"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

/// A certificate's SHA-256 fingerprint as `openssl x509 -fingerprint
/// -sha256` shows it, lower-case and without colons: 64 hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    sha256(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a certificate's DER: its fingerprint as bytes.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The certificate the client of `request` presented (its first, the
/// member's own): `None` on a plaintext connection.
pub fn client_cert<T>(request: &tonic::Request<T>) -> Option<CertificateDer<'static>> {
    request.peer_certs()?.first().cloned()
}

/// Whether the certificate `der` is valid for `host` (a DNS name or an IP
/// address, as its subject alternative names list them): what a client
/// checks when it dials that host.
pub fn names_host(der: &CertificateDer<'_>, host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(name) = rustls::pki_types::ServerName::try_from(bare) else {
        return false;
    };
    webpki::EndEntityCert::try_from(der)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Makes rustls's process-wide provider ring with its TLS 1.3 suites only,
/// so every config tonic builds negotiates TLS 1.3 or nothing. Once; a
/// provider installed before (by a test harness) is left alone.
pub fn install_tls13_only() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Deprecated as ring has no post-quantum key exchange in rustls
        // (aws-lc-rs has, at the price of a C and cmake build); tonic's
        // "tls-ring" default is this same provider.
        #[allow(deprecated)]
        let ring = rustls::crypto::ring::default_provider();
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: ring
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .collect(),
            ..ring
        };
        // Err: one is installed already; it stays.
        let _ = provider.install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_flags_or_none() {
        assert!(TlsArgs::default().load().unwrap().is_none());
        let only_cert = TlsArgs {
            tls_cert: Some("c.pem".into()),
            ..TlsArgs::default()
        };
        let e = only_cert.load().unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");
        let missing_file = TlsArgs {
            tls_cert: Some("/nonexistent/c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_ca: Some("ca.pem".into()),
        };
        let e = missing_file.load().unwrap_err().to_string();
        assert!(e.starts_with("--tls-cert /nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn files_are_checked_and_the_fingerprint_is_sha256_of_the_der() {
        let ca = certs::Ca::new().unwrap();
        let member = ca.member("m1", &[], certs::Validity::days(1)).unwrap();
        let tls = Tls::from_pem(
            member.cert_pem.as_bytes(),
            member.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(tls.fingerprint().len(), 64);
        assert_eq!(tls.fingerprint(), member.fingerprint);
        let swapped = Tls::from_pem(
            member.key_pem.as_bytes(),
            member.cert_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
        );
        assert_eq!(swapped.unwrap_err().0, "--tls-cert");
        let no_key = Tls::from_pem(member.cert_pem.as_bytes(), b"", ca.cert_pem().as_bytes());
        assert_eq!(no_key.unwrap_err().0, "--tls-key");
    }

    #[test]
    fn a_member_certificate_names_its_hosts_and_the_local_ones_only() {
        let ca = certs::Ca::new().unwrap();
        let hosts = ["peer1.example".to_owned(), "10.1.2.3".to_owned()];
        let member = ca
            .member("peer1", &hosts, certs::Validity::days(1))
            .unwrap();
        let der = CertificateDer::from_pem_slice(member.cert_pem.as_bytes()).unwrap();
        for host in [
            "peer1",
            "peer1.example",
            "10.1.2.3",
            "127.0.0.1",
            "[::1]",
            "localhost",
        ] {
            assert!(names_host(&der, host), "{host}");
        }
        for host in ["peer2", "10.1.2.4", "example", "", "::2"] {
            assert!(!names_host(&der, host), "{host}");
        }
    }
}
